"""Tests for jdeconv.metrics against skimage.metrics (the independent reference)."""

import math

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jdeconv import metrics


def _pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    reference = scipy.ndimage.gaussian_filter(rng.random(shape), 2.0)
    reference = (reference - reference.min()) / np.ptp(reference)
    image = reference + noise * rng.standard_normal(shape)
    return reference, image


SHAPES = [(48, 37), (64, 64), (16, 24, 21), (12, 12, 12)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("data_range", [1.0, 2.5])
def test_psnr_matches_skimage(shape, data_range):
    reference, image = _pair(shape)
    expected = peak_signal_noise_ratio(reference, image, data_range=data_range)
    got = metrics.psnr(reference, image, data_range=data_range)
    assert got == pytest.approx(expected, rel=1e-12)


def test_psnr_identical_is_inf_and_hand_value():
    x = np.zeros((8, 8))
    assert metrics.psnr(x, x, data_range=1.0) == math.inf
    # MSE 0.01 with range 1 -> 20 dB.
    assert metrics.psnr(x, x + 0.1, data_range=1.0) == pytest.approx(20.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("noise", [0.02, 0.3])
def test_ssim_matches_skimage(shape, noise):
    # skimage with the options the papers' definition implies (Wang et al. 2004).
    reference, image = _pair(shape, noise=noise)
    expected = structural_similarity(
        reference,
        image,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    got = metrics.ssim(reference, image, data_range=1.0)
    assert got == pytest.approx(expected, abs=1e-10)


def test_ssim_float32_input_and_properties():
    reference, image = _pair((40, 40))
    ref32, img32 = reference.astype(np.float32), image.astype(np.float32)
    expected = structural_similarity(
        ref32, img32, data_range=1.0, gaussian_weights=True, use_sample_covariance=False
    )
    assert metrics.ssim(ref32, img32, data_range=1.0) == pytest.approx(expected, abs=1e-5)
    assert metrics.ssim(reference, reference, data_range=1.0) == pytest.approx(1.0)
    # Symmetric, and a larger data_range (as SSI used by accident) inflates the score.
    assert metrics.ssim(reference, image, data_range=1.0) == pytest.approx(
        metrics.ssim(image, reference, data_range=1.0)
    )
    assert metrics.ssim(reference, image, data_range=2.0) > metrics.ssim(
        reference, image, data_range=1.0
    )


def test_rmse_hand_value():
    a = np.zeros((4, 5))
    b = np.zeros((4, 5))
    b[0, 0] = 2.0  # one pixel off by 2 in 20 -> sqrt(4/20)
    assert metrics.rmse(a, b) == pytest.approx(math.sqrt(0.2))
    assert metrics.rmse(a, a) == 0.0


@pytest.mark.parametrize("fn", [metrics.mutual_information, metrics.spectral_mutual_information])
@pytest.mark.parametrize("shape", [(64, 64), (16, 32, 32)])
def test_mi_identical_is_one_and_symmetric(fn, shape):
    a, b = _pair(shape, noise=0.2)
    assert fn(a, a) == pytest.approx(1.0, abs=1e-12)
    assert fn(a, b) == pytest.approx(fn(b, a), abs=1e-12)
    assert 0.0 < fn(a, b) < 1.0


@pytest.mark.parametrize("fn", [metrics.mutual_information, metrics.spectral_mutual_information])
def test_mi_independent_noise_is_near_zero(fn):
    rng = np.random.default_rng(1)
    # Zero-mean noise: with a large mean the DCT's DC coefficient alone would stretch the
    # histogram range and squeeze all other coefficients into a few bins.
    a = rng.standard_normal((512, 512))
    b = rng.standard_normal((512, 512))
    # The plug-in estimate has a positive bias of about (bins - 1)² / (2 N) nats that
    # shrinks with N (measured here: 0.0067 with 256 bins, 0.0003 with 32), so check both
    # the papers' 256 bins and a tight bound with fewer bins.
    assert fn(a, b) < 0.02
    assert fn(a, b, bins=32) < 0.002
    # Shared structure raises it well above that floor (measured ~0.096 and ~0.32).
    assert fn(a, a + 0.5 * b) > 0.05
    assert fn(a, a + 0.1 * b) > 0.2


def test_mi_hand_checked_cases():
    # Two-level images: a determines b exactly (b = 1 - a) -> 1.
    a = np.zeros((8, 8))
    a[:, :4] = 1.0
    assert metrics.mutual_information(a, 1.0 - a, bins=2) == pytest.approx(1.0)
    # Independent halves: a splits columns, b splits rows -> joint uniform over 4 cells,
    # H(a) = H(b) = ln 2, H(a, b) = ln 4, MI = 0.
    b = np.zeros((8, 8))
    b[:4, :] = 1.0
    assert metrics.mutual_information(a, b, bins=2) == pytest.approx(0.0, abs=1e-12)
    # c = 1 on the quarter where a = 1 and y < 4: joint cells p = (1/2, 1/4, 1/4), so in
    # bits H(a) = 1, H(c) = H(1/4) = 2 - 0.75 log2(3), H(a, c) = 1.5.
    c = np.zeros((8, 8))
    c[:4, :4] = 1.0
    h_c = 2 - 0.75 * math.log2(3)
    assert metrics.mutual_information(a, c, bins=2) == pytest.approx((1 + h_c - 1.5) / 1.5)
    # Increasing affine maps do not change it; constant images give 1 by convention.
    x, y = _pair((32, 32), noise=0.2)
    assert metrics.mutual_information(3 * x + 1, y) == pytest.approx(
        metrics.mutual_information(x, y), abs=1e-9
    )
    assert metrics.mutual_information(np.ones((8, 8)), np.ones((8, 8))) == 1.0


def test_smi_uses_dct_of_l2_normalised_images():
    # SMI is scale invariant (L2 normalisation) and equals MI of the 2D DCT-II spectra.
    a, b = _pair((48, 40), noise=0.3)
    smi = metrics.spectral_mutual_information(a, b)
    assert metrics.spectral_mutual_information(5.0 * a, b) == pytest.approx(smi, abs=1e-12)
    spec_a = scipy.fft.dctn(a / np.linalg.norm(a), type=2)
    spec_b = scipy.fft.dctn(b / np.linalg.norm(b), type=2)
    assert metrics.mutual_information(spec_a, spec_b) == pytest.approx(smi, abs=1e-12)
    # A blurred copy keeps most low frequencies: clearly related spectra.
    blurred = scipy.ndimage.gaussian_filter(a, 1.0)
    assert metrics.spectral_mutual_information(a, blurred) > 0.2


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: metrics.psnr(a, b, data_range=1.0),
        lambda a, b: metrics.ssim(a, b, data_range=1.0),
        metrics.rmse,
        metrics.mutual_information,
        metrics.spectral_mutual_information,
    ],
)
def test_shape_mismatch_raises(call):
    with pytest.raises(ValueError, match="shape"):
        call(np.zeros((16, 16)), np.zeros((16, 17)))


def test_bad_inputs_raise():
    x = np.zeros((16, 16))
    with pytest.raises(TypeError):
        metrics.psnr(x, x, 1.0)  # data_range is keyword-only
    with pytest.raises(TypeError):
        metrics.ssim(x, x)  # and required
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(x, x + 1, data_range=0.0)
    with pytest.raises(ValueError, match="window"):
        metrics.ssim(np.zeros((8, 32)), np.zeros((8, 32)), data_range=1.0)
    with pytest.raises(ValueError, match="2D"):
        metrics.rmse(np.zeros(16), np.zeros(16))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.rmse(x, bad)
    with pytest.raises(ValueError, match="bins"):
        metrics.mutual_information(x, x, bins=1)
