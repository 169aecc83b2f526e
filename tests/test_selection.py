"""Held-out pixels never reach training; the masked pass is J-invariant."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jdeconv.masks import mask_and_replace, replace_masked
from jdeconv.selection import hold_out
from jdeconv.unet import UNetConfig, apply_network, init_unet


def _grad_wrt_input(fn, x):
    # d(sum of w * fn(x)) / dx for a fixed random weighting w: zero at a pixel iff no
    # output depends on it.
    w = jax.random.normal(jax.random.key(99), fn(x).shape)
    return np.asarray(jax.grad(lambda a: jnp.sum(w * fn(a)))(x))


def test_held_out_pixels_do_not_reach_the_training_image():
    x = jax.random.normal(jax.random.key(0), (40, 40))
    # A dense hold-out, so that held-out pixels often neighbour each other (the old
    # local mean averaged them into each other's replacement).
    _, held = hold_out(jax.random.key(1), x, fraction=0.3)
    grad = _grad_wrt_input(lambda a: hold_out(jax.random.key(1), a, fraction=0.3)[0], x)
    held = np.asarray(held)
    assert held.sum() > 300
    assert np.all(grad[held] == 0.0)
    assert np.all(grad[~held] != 0.0)  # every kept pixel is used


def test_local_mean_uses_only_unmasked_neighbours_in_3d():
    x = jax.random.normal(jax.random.key(2), (6, 10, 10))
    mask = jax.random.bernoulli(jax.random.key(3), 0.4, x.shape)
    grad = _grad_wrt_input(lambda a: replace_masked(None, a, mask, replacement="local_mean"), x)
    assert np.all(grad[np.asarray(mask)] == 0.0)
    # An isolated masked pixel gets the plain mean of its 26 neighbours.
    one = jnp.zeros(x.shape, bool).at[3, 5, 5].set(True)
    out = replace_masked(None, x, one, replacement="local_mean")
    expected = (jnp.sum(x[2:5, 4:7, 4:7]) - x[3, 5, 5]) / 26
    np.testing.assert_allclose(out[3, 5, 5], expected, rtol=1e-5)


_NET = UNetConfig(ndim=2, depth=2, base_channels=4, norm="none")
_GRAPHDEF, _PARAMS = init_unet(0, _NET)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    replacement=st.sampled_from(["noise", "zero", "local_mean"]),
    kind=st.sampled_from(["stratified", "bernoulli"]),
    fraction=st.sampled_from([0.02, 0.05, 0.2]),
)
def test_masked_pass_is_j_invariant(seed, replacement, kind, fraction):
    # The masked pass never reads the masked pixels: giving them any other values leaves
    # the masked input, and so the network's output everywhere (at J too), unchanged.
    # 32²: a Bernoulli mask at 2 % leaves 16² empty with probability 0.6 %, 32² 1e-9.
    x = jax.random.normal(jax.random.key(seed), (32, 32))
    key = jax.random.key(seed + 1)
    masked, mask = mask_and_replace(key, x, kind=kind, fraction=fraction, replacement=replacement)
    other = jnp.where(mask, 100.0 * jax.random.normal(jax.random.key(seed + 2), x.shape), x)
    masked_other, mask_other = mask_and_replace(
        key, other, kind=kind, fraction=fraction, replacement=replacement
    )
    assert bool(jnp.any(mask)) and bool(jnp.all(mask == mask_other))
    np.testing.assert_array_equal(np.asarray(masked), np.asarray(masked_other))
    out = apply_network(_GRAPHDEF, _PARAMS, jnp.stack([masked, masked_other]))
    np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(out[1]))
    # ...while the unmasked pass does depend on them (the property is not vacuous).
    plain = apply_network(_GRAPHDEF, _PARAMS, jnp.stack([x, other]))
    assert not np.array_equal(np.asarray(plain[0]), np.asarray(plain[1]))


def test_validation_with_the_anchor_prior_adds_its_penalties_at_held_out_pixels():
    import scipy.ndimage as ndi

    import jdeconv
    from jdeconv.selection import make_validation_fn

    graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
    rng = np.random.default_rng(0)
    image = rng.random((16, 16)).astype(np.float32)
    index = (np.array([0, 3, 7, 15]), np.array([2, 15, 7, 0]))  # borders included
    g = jdeconv.make_forward(jdeconv.psf.gaussian_psf((3, 3), 1.0), image.shape)
    plain = make_validation_fn(graphdef, index)(params, image, image, g)
    weight, sparsity, lower = 0.3, 0.05, -0.2
    scored = make_validation_fn(graphdef, index, prior=(weight, sparsity, lower))
    got = np.asarray(scored(params, image, image, g))
    x = np.asarray(apply_network(graphdef, params, jnp.asarray(image)[None])[0], np.float64)
    laplacian = -ndi.laplace(x, mode="reflect")  # 4 x[i] − its neighbours, mirror boundary
    want = np.asarray(plain) + (weight * laplacian**2 + 2 * sparsity * (x - lower))[index]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(got, plain)
