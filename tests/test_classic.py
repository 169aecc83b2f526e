"""Tests for jdeconv.classic (Richardson-Lucy) against skimage.restoration.richardson_lucy."""

import jax
import numpy as np
import pytest
import scipy.signal
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

from jdeconv import classic, metrics
from jdeconv.forward import ForwardModel
from jdeconv.psf import gaussian_psf


def _blurred(shape, psf, seed=0, noise=0.02):
    """A positive blurred, noisy test image (zero-fill blur, as the papers degrade)."""
    rng = np.random.default_rng(seed)
    clean = np.zeros(shape)
    clean[tuple(rng.integers(0, s, 40) for s in shape)] = 1.0  # point sources
    clean += 0.1
    blurred = scipy.signal.convolve(clean, psf.astype(np.float64), mode="same")
    return np.clip(blurred + noise * rng.standard_normal(shape), 0, None).astype(np.float32)


def _ring_psf_2d():
    # An asymmetric, ring-like kernel checks that the adjoint uses the flipped PSF.
    psf = gaussian_psf((9, 9), 2.0).astype(np.float64)
    psf[2, 6] += 0.05
    psf[6, 1] += 0.02
    return (psf / psf.sum()).astype(np.float32)


def _psf_3d():
    psf = gaussian_psf((7, 5, 5), (1.5, 1.0, 1.0)).astype(np.float64)
    psf[1, 3, 4] += 0.03
    return (psf / psf.sum()).astype(np.float32)


CASES = {
    "2d": ((48, 41), _ring_psf_2d),
    "3d": ((14, 24, 21), _psf_3d),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("iterations", [1, 5, 20])
def test_matches_skimage(case, iterations):
    # skimage blurs with scipy.signal.convolve(mode="same") (zero fill) and applies the
    # adjoint as a convolution with the flipped PSF, also zero-filled: for an odd PSF that
    # is exactly our padding="zero" adjoint, so there is no boundary difference and only
    # float32 (ours) vs float64 (skimage) rounding remains. skimage starts from a 0.5
    # constant and zeroes the ratio where the reblurred estimate is below filter_epsilon.
    shape, make_psf = CASES[case]
    psf = make_psf()
    image = _blurred(shape, psf)
    expected = skimage_richardson_lucy(
        image.astype(np.float64),
        psf.astype(np.float64),
        num_iter=iterations,
        clip=False,
        filter_epsilon=1e-12,
    )
    got = classic.richardson_lucy(image, psf, iterations=iterations, init=0.5)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.max())
    # The default start (the image mean) gives the same iterates: RL cancels a constant.
    default = classic.richardson_lucy(image, psf, iterations=iterations)
    np.testing.assert_allclose(default, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_matches_skimage_clip_and_direct_method():
    psf = _ring_psf_2d()
    image = _blurred((40, 40), psf) * 4.0  # the estimate exceeds 1 at the sources
    expected = skimage_richardson_lucy(image, psf, num_iter=8, clip=True, filter_epsilon=1e-12)
    assert expected.max() == 1.0
    for method in ("fft", "direct"):
        got = classic.richardson_lucy(image, psf, iterations=8, init=0.5, clip=True, method=method)
        assert got.max() == 1.0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_jit_and_eager_agree():
    # 2D only: eager mode compiles every primitive separately (~2 s per shape on CPU).
    shape, make_psf = CASES["2d"]
    psf = make_psf()
    image = _blurred(shape, psf)
    jitted = classic.richardson_lucy(image, psf, iterations=2, tv_weight=0.01)
    with jax.disable_jit():
        eager = classic.richardson_lucy(image, psf, iterations=2, tv_weight=0.01)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


def test_path_matches_single_runs():
    psf = _ring_psf_2d()
    image = _blurred((40, 36), psf)
    path = classic.richardson_lucy_path(image, psf, iterations=[10, 0, 3])
    assert list(path) == [0, 3, 10]
    np.testing.assert_allclose(path[0], image.mean())
    for n, estimate in path.items():
        np.testing.assert_allclose(
            estimate, classic.richardson_lucy(image, psf, iterations=n), rtol=1e-6, atol=1e-7
        )


def _total_variation(x):
    return sum(np.abs(np.diff(x, axis=a)).sum() for a in range(x.ndim))


@pytest.mark.parametrize("case", sorted(CASES))
def test_tv_regularisation_reduces_total_variation(case):
    shape, make_psf = CASES[case]
    psf = make_psf()
    image = _blurred(shape, psf, noise=0.05)
    plain = classic.richardson_lucy(image, psf, iterations=20)
    weak = classic.richardson_lucy(image, psf, iterations=20, tv_weight=0.005)
    strong = classic.richardson_lucy(image, psf, iterations=20, tv_weight=0.05)
    assert _total_variation(strong) < _total_variation(weak) < _total_variation(plain)
    assert strong.min() >= 0 and np.all(np.isfinite(strong))


def test_tv_update_matches_dey_formula():
    # One step from a non-constant start, against a NumPy transcription of Dey et al.
    # 2006 eq. 6 with forward-difference gradients and the matching backward divergence.
    psf = _ring_psf_2d()
    image = _blurred((32, 30), psf).astype(np.float64)
    start = _blurred((32, 30), psf, seed=1).astype(np.float64) + 0.05
    lam = 0.02
    conv = scipy.signal.convolve(start, psf, mode="same")
    correction = scipy.signal.convolve(image / conv, psf[::-1, ::-1], mode="same")
    grads = [np.diff(start, axis=a, append=np.take(start, [-1], axis=a)) for a in (0, 1)]
    norm = np.sqrt(grads[0] ** 2 + grads[1] ** 2 + (1e-6 * image.max()) ** 2)
    div = sum(
        np.diff(g / norm, axis=a, prepend=0.0) for a, g in enumerate(grads)
    )  # p[i] - p[i-1], p[-1] = 0
    expected = start / (1 - lam * div) * correction
    got = classic.richardson_lucy(image, psf, iterations=1, tv_weight=lam, init=start)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)


def test_periodic_rl_conserves_flux_and_boundary_correction_keeps_flat_image():
    psf = gaussian_psf((7, 7), 1.5)
    image = _blurred((32, 32), psf)
    # With periodic boundaries gᵀ1 = 1 and every RL iterate has the data's total flux.
    periodic = classic.richardson_lucy(image, psf, iterations=6, padding="periodic")
    assert periodic.sum() == pytest.approx(image.sum(), rel=1e-4)
    # A flat object blurred with zero fill: plain RL darkens the border further (gᵀ1 < 1
    # there), the sensitivity-corrected EM update keeps the flat object flat.
    flat = scipy.signal.convolve(np.ones((32, 32)), psf, mode="same").astype(np.float32)
    plain = classic.richardson_lucy(flat, psf, iterations=30)
    corrected = classic.richardson_lucy(flat, psf, iterations=30, boundary_correction=True)
    np.testing.assert_allclose(corrected, 1.0, atol=2e-3)
    # (measured: the corner falls to ~1e-6 after 30 iterations, the centre to 0.989).
    assert plain[0, 0] < 0.1 and plain[16, 16] == pytest.approx(1.0, abs=0.03)


def test_deconvolution_restores_point_sources():
    # Quality check on a noise-free case: RL sharpens blurred points (measured: PSNR
    # 23.9 -> 25.6 dB, SSIM 0.68 -> 0.82 after 100 iterations).
    psf = gaussian_psf((11, 11), 2.0)
    rng = np.random.default_rng(0)
    clean = np.full((48, 48), 0.001, np.float32)
    clean[tuple(rng.integers(6, 42, (2, 10)))] = 1.0
    blurred = scipy.signal.convolve(clean, psf, mode="same").astype(np.float32)
    restored = classic.richardson_lucy(blurred, psf, iterations=100)
    gain = metrics.psnr(clean, restored, data_range=1.0) - metrics.psnr(
        clean, blurred, data_range=1.0
    )
    assert gain > 1.0
    assert (
        metrics.ssim(clean, restored, data_range=1.0)
        > metrics.ssim(clean, blurred, data_range=1.0) + 0.1
    )


def test_zero_regions_give_no_nan():
    psf = gaussian_psf((5, 5), 1.0)
    image = np.zeros((24, 24), np.float32)
    image[8:12, 8:12] = 1.0  # zero elsewhere: the estimate decays to exact zeros there
    out = classic.richardson_lucy(image, psf, iterations=30, tv_weight=0.01)
    assert np.all(np.isfinite(out)) and out.min() >= 0
    for tv_weight in (0.0, 0.01):
        zeros = classic.richardson_lucy(np.zeros((16, 16)), psf, iterations=3, tv_weight=tv_weight)
        assert np.all(zeros == 0)


def test_bad_inputs_raise_with_fix():
    psf = gaussian_psf((5, 5), 1.0)
    image = np.ones((16, 16), np.float32)
    rl = classic.richardson_lucy
    with pytest.raises(ValueError, match="2D"):
        rl(np.ones(16), psf)
    with pytest.raises(ValueError, match="2D"):
        rl(np.ones((2, 16, 16, 16)), psf)
    bad = image.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        rl(bad, psf)
    with pytest.raises(ValueError, match="negative"):
        rl(image - 2, psf)
    with pytest.raises(ValueError, match="rank"):
        rl(np.ones((8, 16, 16)), psf)
    with pytest.raises(ValueError, match="even"):
        rl(image, np.ones((4, 4)))
    with pytest.raises(ValueError, match="larger than the image"):
        rl(np.ones((4, 4)), psf)
    with pytest.raises(ValueError, match="iterations"):
        rl(image, psf, iterations=-1)
    with pytest.raises(ValueError, match="iterations"):
        rl(image, psf, iterations=2.5)
    with pytest.raises(ValueError, match="tv_weight"):
        rl(image, psf, tv_weight=0.5)
    with pytest.raises(ValueError, match="init"):
        rl(image, psf, init=np.ones((8, 8)))
    with pytest.raises(ValueError, match="init"):
        rl(image, psf, init=-1.0)
    with pytest.raises(ValueError, match="padding"):
        rl(image, psf, padding="mirror")
    with pytest.raises(ValueError, match="empty"):
        classic.richardson_lucy_path(image, psf, iterations=[])
    with pytest.raises(TypeError):
        rl(image, psf, 10)  # iterations is keyword-only


def test_unnormalised_psf_is_normalised():
    psf = gaussian_psf((5, 5), 1.0)
    image = _blurred((20, 20), psf)
    np.testing.assert_allclose(
        classic.richardson_lucy(image, 3 * psf, iterations=3),
        classic.richardson_lucy(image, psf, iterations=3),
        rtol=1e-5,
    )


def test_matches_skimage_with_the_ssi_psf(shared_data):
    # The papers' 2D kernel (a defocus ring, 17x17) on the papers' degradation.
    from jdeconv.simulate import degrade, filaments_2d

    psf = np.load(shared_data / "psf" / "ssi_2d_17.npy")
    image = degrade(jax.random.key(1), filaments_2d(jax.random.key(0), (64, 64), count=6), psf)
    expected = skimage_richardson_lucy(
        image.astype(np.float64), psf.astype(np.float64), num_iter=5, clip=False
    )
    got = classic.richardson_lucy(image, psf, iterations=5, init=0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_new_psf_of_the_same_shape_reuses_the_compiled_loop(monkeypatch):
    # The loop takes the forward model as an argument, so only the first PSF traces it.
    # Tracing calls ForwardModel.__call__ (a compiled call does not): count those calls.
    calls = []
    blur = ForwardModel.__call__

    def counted(self, z):
        calls.append(self.shape)
        return blur(self, z)

    monkeypatch.setattr(ForwardModel, "__call__", counted)
    image = _blurred((23, 29), gaussian_psf((5, 5), 1.0))  # a shape no other test uses
    first = classic.richardson_lucy(image, gaussian_psf((5, 5), 1.0), iterations=3)
    traced = len(calls)
    assert traced >= 1
    second = classic.richardson_lucy(image, gaussian_psf((5, 5), 1.5), iterations=4)
    assert len(calls) == traced
    assert not np.allclose(first, second)  # the second PSF was used
