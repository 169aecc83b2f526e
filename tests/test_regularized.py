"""Tests for jdeconv.regularized: Wiener/Tikhonov deconvolution and its parameter rules.

The reference is ``skimage.restoration.wiener`` (scikit-image 0.26): with
``padding="periodic"`` our solve is its formula on the same grid. What we matched:
skimage builds the transfer functions with ``uft.ir2tf`` (the kernel zero-padded to the
image shape and rolled by ``-floor(size/2)`` per axis, so the centre pixel of an odd PSF
is at index 0: convolution, no phase shift — as we do), its default ``reg`` is
``uft.laplacian`` (2·ndim at the centre, −1 at the 2·ndim face neighbours, whose
transfer function is ``Σ_d (2 − 2 cos ω_d)``, our ``|L|`` up to its sign, which the
squared modulus removes), and the identity is ``reg=np.ones((1,) * ndim)`` (transfer
function 1). Its unitary forward and inverse FFTs cancel, so no scale factor differs.
Agreement: max |difference| below 1e-6 of the output's range (float64 inside, float32
out) for 2D odd and even, awkward and 3D shapes, with an asymmetric PSF.
"""

import math

import jax
import numpy as np
import pytest
import skimage.restoration

from jdeconv import classic, regularized, simulate
from jdeconv.metrics import psnr
from jdeconv.psf import gaussian_psf


def _asymmetric_psf(ndim):
    shape = (7, 5, 5) if ndim == 3 else (9, 9)
    psf = gaussian_psf(shape, 1.2).astype(np.float64)
    psf[(1,) * ndim] += 0.04  # off-centre mass: a wrong centring or flip would show
    return psf / psf.sum()


@pytest.mark.parametrize("regularizer", ["laplacian", "identity"])
@pytest.mark.parametrize("shape", [(32, 32), (33, 40), (47, 29), (10, 12, 14)])
def test_periodic_matches_skimage_wiener(shape, regularizer):
    rng = np.random.default_rng(0)
    image = rng.random(shape)
    psf = _asymmetric_psf(len(shape))
    reg = None if regularizer == "laplacian" else np.ones((1,) * len(shape))
    for balance in (1e-3, 0.05, 2.0):
        expected = skimage.restoration.wiener(
            image, psf, balance, reg=reg, is_real=True, clip=False
        )
        ours = regularized.tikhonov(
            image, psf, weight=balance, regularizer=regularizer, padding="periodic"
        )
        assert ours.dtype == np.float32 and ours.shape == shape
        span = float(np.ptp(expected))
        np.testing.assert_allclose(ours, expected, atol=1e-6 * span + 1e-7)


def test_wiener_is_tikhonov_with_skimage_naming():
    image = np.random.default_rng(1).random((24, 30))
    psf = gaussian_psf((5, 5), 1.0)
    np.testing.assert_array_equal(
        regularized.wiener(image, psf, balance=0.01, regularizer="identity"),
        regularized.tikhonov(image, psf, weight=0.01, regularizer="identity"),
    )
    np.testing.assert_array_equal(regularized.wiener(image, psf), regularized.tikhonov(image, psf))


def test_classic_reexports():
    for name in ("wiener", "tikhonov", "tikhonov_path", "choose_weight", "choose_rl_iterations"):
        assert getattr(classic, name) is getattr(regularized, name)


@pytest.mark.parametrize("padding", ["reflect", "zero", "periodic"])
def test_path_equals_single_solves(padding):
    image = np.random.default_rng(2).random((20, 26))
    psf = gaussian_psf((7, 5), 1.0)
    weights = [0.3, 0.0, 1e-3]
    path = regularized.tikhonov_path(image, psf, weights, padding=padding)
    assert path.shape == (3, 20, 26) and path.dtype == np.float32
    for w, estimate in zip(weights, path, strict=True):
        np.testing.assert_array_equal(
            estimate, regularized.tikhonov(image, psf, weight=w, padding=padding)
        )


def test_reflect_padding_removes_border_ringing():
    # A ramp is far from periodic: the periodic solve rings at the wrap-around jump,
    # the mirror extension does not. Blurred with a mirror boundary and noise-free, so
    # the reflect solve is nearly exact.
    ramp = np.add.outer(np.linspace(0, 1, 48), np.linspace(0, 0.5, 40))
    psf = gaussian_psf((9, 9), 1.5)
    import jax.numpy as jnp

    from jdeconv.forward import make_forward

    blurred = np.asarray(make_forward(psf, ramp.shape, padding="reflect")(jnp.asarray(ramp)))
    err, inner = {}, {}
    for padding in ("reflect", "periodic"):
        diff = np.abs(regularized.tikhonov(blurred, psf, weight=1e-3, padding=padding) - ramp)
        err[padding], inner[padding] = diff.max(), diff[8:-8, 8:-8].max()
    # Measured: max error 0.053 (reflect; at a corner, the mirror's kink) vs 1.66
    # (periodic); 8 px inside the border 0.0033 vs 0.107.
    assert err["reflect"] < 0.1 < 1.0 < err["periodic"], err
    assert inner["reflect"] < 0.01 < 0.05 < inner["periodic"], inner


def test_3d_deconvolution_sharpens():
    clean = simulate.filaments_3d(jax.random.key(0), (16, 32, 32), count=6)
    psf = gaussian_psf((7, 7, 7), (1.5, 1.0, 1.0))
    noisy = simulate.degrade(
        jax.random.key(1),
        clean,
        psf,
        normalize=False,
        alpha=0.0,
        sigma=0.01,
        salt_pepper=0.0,
        bits=None,
    )
    before = psnr(clean, noisy, data_range=1)  # 25.7 dB
    # Measured: 29.35 (Laplacian) and 29.30 dB (identity) at weight 0.01; GCV 28.1 dB.
    for regularizer in ("laplacian", "identity"):
        out = regularized.tikhonov(noisy, psf, weight=1e-2, regularizer=regularizer)
        assert out.shape == clean.shape and out.dtype == np.float32
        assert psnr(clean, out, data_range=1) > before + 3
    assert psnr(clean, regularized.tikhonov(noisy, psf), data_range=1) > before + 2


def _case(sigma):
    """A fixed small case: textured blobs, Gaussian PSF, zero-fill blur, clipped
    Poisson-Gaussian noise (jdeconv.simulate.degrade)."""
    clean = simulate.nuclei_2d(jax.random.key(3), (64, 64), count=4, radius_range=(6, 14))
    psf = gaussian_psf((9, 9), 1.5)
    noisy = simulate.degrade(
        jax.random.key(1),
        clean,
        psf,
        normalize=False,
        alpha=0.001,
        sigma=sigma,
        salt_pepper=0.0,
        bits=None,
    )
    return clean, psf, noisy


def test_gcv_weight_near_oracle():
    clean, psf, noisy = _case(0.05)
    weights = np.logspace(-5, 1, 61)
    scores = [psnr(clean, x, data_range=1) for x in regularized.tikhonov_path(noisy, psf, weights)]
    best = int(np.argmax(scores))
    chosen = regularized.choose_weight(noisy, psf)
    gcv_psnr = psnr(clean, regularized.tikhonov(noisy, psf, weight=chosen), data_range=1)
    # Measured: oracle 26.12 dB at 0.10, GCV 25.97 dB at 0.055 (ratio 0.55).
    assert 1 / 3 < chosen / weights[best] < 3
    assert gcv_psnr > scores[best] - 0.5
    # The test can fail: weights 30× off the oracle's lose more than the 0.5 dB allowed.
    for off in (weights[best] / 30, weights[best] * 30):
        off_psnr = psnr(clean, regularized.tikhonov(noisy, psf, weight=off), data_range=1)
        assert off_psnr < scores[best] - 0.5


def test_discrepancy_weight_fits_the_noise_level():
    clean, psf, noisy = _case(0.05)
    for regularizer in ("laplacian", "identity"):
        chosen = regularized.choose_weight(
            noisy, psf, regularizer=regularizer, rule="discrepancy", noise_std=0.03
        )
        problem = regularized._problem(
            noisy.astype(np.float64),
            psf.astype(np.float64),
            regularizer=regularizer,
            padding="reflect",
        )
        assert math.isclose(regularized._residual_power(problem, chosen), 0.03**2, rel_tol=1e-3)
    # A larger noise level allows a larger residual: a larger weight.
    small = regularized.choose_weight(noisy, psf, rule="discrepancy", noise_std=0.02)
    large = regularized.choose_weight(noisy, psf, rule="discrepancy", noise_std=0.04)
    assert small < large


def test_noise_estimate():
    rng = np.random.default_rng(0)
    psf = gaussian_psf((9, 9), 2.0)
    clean = simulate.nuclei_2d(jax.random.key(0), (96, 96), count=6, radius_range=(8, 16))
    import scipy.signal

    blurred = scipy.signal.convolve(clean, psf, mode="same")
    for std in (0.01, 0.05, 0.2):
        noisy = blurred + std * rng.standard_normal(blurred.shape)
        assert regularized.estimate_noise_std(noisy, psf) == pytest.approx(std, rel=0.1)
        assert regularized.estimate_noise_std(noisy, method="mad") == pytest.approx(std, rel=0.15)


def test_rl_discrepancy_iterations_near_oracle():
    clean = simulate.edges_2d(jax.random.key(3), (64, 64), count=5)
    psf = gaussian_psf((9, 9), 1.5)
    noisy = simulate.degrade(
        jax.random.key(1),
        clean,
        psf,
        normalize=False,
        alpha=0.001,
        sigma=0.05,
        salt_pepper=0.0,
        bits=None,
    )
    path = classic.richardson_lucy_path(noisy, psf, iterations=range(1, 41))
    scores = [psnr(clean, x, data_range=1) for x in path.values()]
    oracle = int(np.argmax(scores)) + 1
    chosen = regularized.choose_rl_iterations(noisy, psf, max_iterations=40)
    # Measured: oracle 7 iterations (19.74 dB), discrepancy 6 (19.72 dB).
    assert oracle >= 4  # not the trivial "stop at once" case
    assert abs(chosen - oracle) <= 2
    assert scores[chosen - 1] > max(scores) - 0.3
    # A smaller noise level (a stricter fit) stops later; a TV-regularised run works too.
    assert regularized.choose_rl_iterations(noisy, psf, noise_std=0.03, max_iterations=40) > chosen
    with_tv = regularized.choose_rl_iterations(noisy, psf, tv_weight=0.002, max_iterations=40)
    assert 1 <= with_tv <= 40


def test_rl_discrepancy_gives_up_at_max_iterations():
    clean, psf, noisy = _case(0.05)
    assert regularized.choose_rl_iterations(noisy, psf, noise_std=1e-4, max_iterations=12) == 12


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_weights_raise(bad):
    image, psf = np.ones((16, 16)), gaussian_psf((5, 5), 1.0)
    with pytest.raises(ValueError, match="weight"):
        regularized.tikhonov(image, psf, weight=bad)
    with pytest.raises(ValueError, match="balance"):
        regularized.wiener(image, psf, balance=bad)
    with pytest.raises(ValueError, match="weights"):
        regularized.tikhonov_path(image, psf, [0.1, bad])


def test_bad_inputs_raise():
    psf = gaussian_psf((5, 5), 1.0)
    image = np.random.default_rng(0).random((16, 16))
    with pytest.raises(ValueError, match="2D"):
        regularized.tikhonov(np.ones(16), psf, weight=0.1)
    with pytest.raises(ValueError, match="2D"):
        regularized.tikhonov(np.ones((2, 4, 16, 16)), psf, weight=0.1)
    with pytest.raises(ValueError, match="rank"):
        regularized.tikhonov(np.ones((8, 16, 16)), psf, weight=0.1)
    with pytest.raises(ValueError, match="NaN"):
        regularized.tikhonov(np.full((16, 16), np.nan), psf, weight=0.1)
    with pytest.raises(ValueError, match="larger than the image"):
        regularized.tikhonov(np.ones((4, 16)), psf, weight=0.1)
    with pytest.raises(ValueError, match="regularizer"):
        regularized.tikhonov(image, psf, weight=0.1, regularizer="tv")
    with pytest.raises(ValueError, match="padding"):
        regularized.tikhonov(image, psf, weight=0.1, padding="mirror")
    with pytest.raises(ValueError, match="rule"):
        regularized.choose_weight(image, psf, rule="lcurve")
    with pytest.raises(ValueError, match="rule"):
        regularized.tikhonov(image, psf, rule="lcurve")
    with pytest.raises(ValueError, match="empty"):
        regularized.tikhonov_path(image, psf, [])
    for noise_std in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="noise_std"):
            regularized.choose_weight(image, psf, rule="discrepancy", noise_std=noise_std)
    with pytest.raises(ValueError, match="max_iterations"):
        regularized.choose_rl_iterations(image, psf, max_iterations=0)
    with pytest.raises(ValueError, match="rule"):
        regularized.choose_rl_iterations(image, psf, rule="gcv")
    with pytest.raises(ValueError, match="needs the PSF"):
        regularized.estimate_noise_std(image)
    with pytest.raises(ValueError, match="method"):
        regularized.estimate_noise_std(image, psf, method="wavelet")
