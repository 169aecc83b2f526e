"""Forward model: FFT and direct paths vs float64 SciPy references, adjoint, jit/vmap, pytree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from jdeconv import ForwardModel, make_forward
from jdeconv.forward import auto_method, check_adjoint

CASES = [
    ((32, 32), (5, 5)),  # even image
    ((31, 45), (7, 3)),  # odd, awkward sizes, anisotropic PSF
    ((64, 64), (17, 17)),
    ((16, 20, 18), (3, 5, 7)),  # 3D, even
    ((17, 15, 13), (5, 5, 5)),  # 3D, odd
]


def _reference(x, psf, padding):
    # Independent float64 references; all use the centre convention out[i] = sum_j k[j] x[i+c-j].
    if padding == "zero":
        return scipy.signal.convolve(x, psf, mode="same")
    mode = {"reflect": "reflect", "periodic": "wrap"}[padding]
    return scipy.ndimage.convolve(x, psf, mode=mode)


def _random_case(shape, kshape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    psf = rng.random(kshape)
    return x, psf / psf.sum()


def _random_psf(kshape, seed=0):
    return _random_case(kshape, kshape, seed=seed)[1]


@pytest.mark.parametrize("shape,kshape", CASES)
@pytest.mark.parametrize("padding", ["zero", "reflect", "periodic"])
@pytest.mark.parametrize("method", ["fft", "direct"])
def test_matches_scipy(shape, kshape, padding, method):
    x, psf = _random_case(shape, kshape)
    g = make_forward(psf, shape, method=method, padding=padding)
    out = np.asarray(jax.jit(g)(jnp.asarray(x, jnp.float32)), np.float64)
    ref = _reference(x, psf, padding)
    assert out.shape == shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("shape,kshape", CASES)
@pytest.mark.parametrize("padding", ["zero", "reflect", "periodic"])
def test_fft_equals_direct_and_adjoint_identity(shape, kshape, padding):
    x, psf = _random_case(shape, kshape, seed=1)
    y = np.random.default_rng(2).random(shape)
    fft = make_forward(psf, shape, method="fft", padding=padding)
    direct = make_forward(psf, shape, method="direct", padding=padding)
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    np.testing.assert_allclose(fft(xj), direct(xj), rtol=1e-5, atol=1e-6)
    for g in (fft, direct):
        lhs = np.vdot(np.asarray(g(xj), np.float64), y)
        rhs = np.vdot(x, np.asarray(g.adjoint(yj), np.float64))
        assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


def test_adjoint_is_correlation_for_zero_padding():
    # With zero fill, the transpose of 'same' convolution is 'same' correlation (flipped PSF).
    x, psf = _random_case((24, 30), (5, 7), seed=3)
    g = make_forward(psf, x.shape, padding="zero")
    ref = scipy.signal.correlate(x, psf, mode="same")
    np.testing.assert_allclose(g.adjoint(jnp.asarray(x, jnp.float32)), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_plain_jit_vmap_agree(method):
    shape = (20, 24)
    x, psf = _random_case((3, *shape), (5, 5), seed=4)
    g = make_forward(psf, shape, method=method)
    xs = jnp.asarray(x, jnp.float32)
    plain = np.stack([np.asarray(g(xi)) for xi in xs])
    np.testing.assert_allclose(jax.jit(jax.vmap(g))(xs), plain, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(g.adjoint)(xs)[1], g.adjoint(xs[1]), rtol=1e-6, atol=1e-6)


def test_gradient_is_adjoint():
    x, psf = _random_case((16, 16), (3, 3), seed=5)
    g = make_forward(psf, x.shape)
    w = jnp.asarray(np.random.default_rng(6).random(x.shape), jnp.float32)
    grad = jax.grad(lambda z: jnp.sum(g(z) * w))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(grad, g.adjoint(w), rtol=1e-5, atol=1e-6)


def test_preserves_constant_and_mass():
    psf = np.random.default_rng(7).random((5, 5))
    psf /= psf.sum()
    g = make_forward(psf, (16, 16), padding="reflect")
    np.testing.assert_allclose(g(jnp.full((16, 16), 3.0)), 3.0, rtol=1e-5)
    gp = make_forward(psf, (16, 16), padding="periodic")
    x = jnp.asarray(np.random.default_rng(8).random((16, 16)), jnp.float32)
    np.testing.assert_allclose(gp(x).sum(), x.sum(), rtol=1e-5)


def test_auto_resolves_to_a_method():
    g = make_forward(np.full((3, 3), 1 / 9), (16, 16), method="auto")
    assert g.method == auto_method((3, 3), (16, 16))
    assert g.method in ("fft", "direct")


@pytest.mark.parametrize(
    "psf,shape,match",
    [
        (np.ones((3, 3, 3)) / 27, (16, 16), "rank"),
        (np.ones((3, 3)) / 9, (16, 16, 16), "rank"),
        (np.ones((9, 9)) / 81, (8, 16), "larger than the image"),
        (np.ones((3, 3)) / 9, (16,), "2D"),
        (np.ones((3, 3)) / 9, (2, 8, 8, 8), "2D"),
        (np.full((3, 3), np.nan), (16, 16), "NaN"),
        (np.full((3, 3), np.inf), (16, 16), "NaN or Inf"),
        (-np.ones((3, 3)), (16, 16), "negative"),
        (np.zeros((3, 3)), (16, 16), "sums to zero"),
        (np.ones((3, 3)), (16, 16), "normalize=True"),
        (np.ones((4, 4)) / 16, (16, 16), "even"),
        (np.ones((3, 3), dtype=bool), (16, 16), "dtype"),
        (np.ones((3, 3), dtype=complex) / 9, (16, 16), "dtype"),
    ],
)
def test_bad_input_raises_clear_error(psf, shape, match):
    with pytest.raises(ValueError, match=match):
        make_forward(psf, shape)


def test_bad_method_padding_and_call_shape():
    psf = np.full((3, 3), 1 / 9)
    with pytest.raises(ValueError, match="method"):
        make_forward(psf, (8, 8), method="winograd")
    with pytest.raises(ValueError, match="padding"):
        make_forward(psf, (8, 8), padding="edge")
    g = make_forward(psf, (8, 8))
    with pytest.raises(ValueError, match="built for shape"):
        g(jnp.zeros((9, 9)))
    with pytest.raises(ValueError, match="built for shape"):
        g.adjoint(jnp.zeros((9, 9)))


# ------------------------------------------------------------------ adjoint and normal


@pytest.mark.parametrize("shape,kshape", [((24, 19), (5, 7)), ((10, 13, 12), (3, 5, 3))])
@pytest.mark.parametrize("padding", ["reflect", "zero", "periodic"])
@pytest.mark.parametrize("method", ["fft", "direct"])
def test_check_adjoint_passes_for_every_operator(shape, kshape, padding, method):
    _, psf = _random_case(shape, kshape, seed=9)
    g = make_forward(psf, shape, method=method, padding=padding)
    assert check_adjoint(g, jax.random.key(0)) <= 1e-4


class _Unflipped:
    """A wrong transpose: the blur itself, i.e. convolution instead of correlation."""

    def __init__(self, g):
        self.g = g
        self.shape = g.shape

    def __call__(self, x):
        return self.g(x)

    def adjoint(self, y):
        return self.g(y)


def test_check_adjoint_rejects_a_wrong_transpose():
    psf = np.zeros((5, 5))
    psf[1, 3] = psf[2, 2] = 0.5  # asymmetric, so the blur is not its own transpose
    g = make_forward(psf, (32, 32), padding="zero")
    with pytest.raises(ValueError, match="adjoint identity"):
        check_adjoint(_Unflipped(g), jax.random.key(0))
    with pytest.raises(ValueError, match="rtol"):
        check_adjoint(g, jax.random.key(0), rtol=0.0)


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_normal_is_adjoint_of_forward(method):
    x, psf = _random_case((18, 21), (5, 3), seed=10)
    g = make_forward(psf, x.shape, method=method, padding="reflect")
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(g.normal(xj), g.adjoint(g(xj)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jax.jit(g.normal)(xj), g.adjoint(g(xj)), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the model as a pytree


def test_forward_model_is_a_pytree_with_arrays_as_leaves():
    psf = _random_psf((5, 5))
    fft = make_forward(psf, (16, 20), method="fft")
    direct = make_forward(psf, (16, 20), method="direct")
    leaves = jax.tree_util.tree_leaves(fft)
    assert [leaf.dtype for leaf in leaves] == [jnp.float32, jnp.complex64]
    assert fft.otf.shape == (*fft.fft_shape[:-1], fft.fft_shape[-1] // 2 + 1)
    assert fft.fft_shape == (20, 24)  # next_fast_len of 16 + 4 and 20 + 4
    assert [leaf.dtype for leaf in jax.tree_util.tree_leaves(direct)] == [jnp.float32]
    assert direct.otf is None and direct.fft_shape is None
    # Flatten/unflatten keeps the static fields; a tree_map makes a working model.
    leaves, treedef = jax.tree_util.tree_flatten(fft)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(rebuilt, ForwardModel)
    assert (rebuilt.shape, rebuilt.method, rebuilt.padding) == ((16, 20), "fft", "reflect")
    x = jnp.ones((16, 20))
    np.testing.assert_array_equal(jax.tree_util.tree_map(lambda a: a, fft)(x), fft(x))


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_new_psf_of_the_same_shape_does_not_retrace(method):
    traces = []

    @jax.jit
    def blur_and_transpose(g, x):
        traces.append(g.shape)  # runs only while tracing
        return g(x), g.adjoint(x)

    x = jnp.asarray(np.random.default_rng(11).random((20, 22)), jnp.float32)
    for seed in (1, 2):
        g = make_forward(_random_psf((5, 3), seed=seed), x.shape, method=method)
        out, adj = blur_and_transpose(g, x)
        # The second PSF is used, not a constant baked into the first compilation.
        np.testing.assert_allclose(out, g(x), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(adj, g.adjoint(x), rtol=1e-6, atol=1e-6)
    assert len(traces) == 1
    # A new shape is a new static field: it does retrace (the counter works).
    y = jnp.ones((20, 23))
    blur_and_transpose(make_forward(_random_psf((5, 3)), y.shape, method=method), y)
    assert len(traces) == 2


def test_vmap_over_a_stack_of_models():
    # Models of one shape stack leaf-wise, so a batch of PSFs is one vmapped call.
    x = jnp.asarray(np.random.default_rng(12).random((16, 16)), jnp.float32)
    models = [make_forward(_random_psf((3, 5), seed=s), x.shape) for s in (3, 4)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *models)
    out = jax.vmap(lambda g: g(x))(stacked)
    for got, g in zip(out, models, strict=True):
        np.testing.assert_allclose(got, g(x), rtol=1e-6, atol=1e-6)
