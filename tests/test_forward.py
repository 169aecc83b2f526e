"""Forward model: FFT and direct paths vs float64 SciPy references, adjoint, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from jdeconv import make_forward
from jdeconv.forward import auto_method

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
