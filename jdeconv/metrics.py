"""Image-quality metrics for deconvolution benchmarks: PSNR, SSIM, RMSE, MI and SMI.

All metrics take the reference (ground truth) first, work on 2D (YX) and 3D (ZYX) arrays
of the same shape, compute in float64 with numpy, and return a Python ``float``. PSNR and
SSIM need an explicit, keyword-only ``data_range``: guessing it from the dtype or from the
data is how published SSIM numbers get inflated (SSI used 2 for images in [0, 1]).

Definitions follow the papers our benchmarks reproduce (Kobayashi et al. 2020,
arXiv 2006.06156; Papkov et al. 2023, arXiv 2308.09426):

- :func:`psnr` ``= 10 log10(data_range² / MSE)``.
- :func:`ssim` is the mean SSIM of Wang et al. 2004 (IEEE TIP 13(4):600-612, eq. 13) with
  a Gaussian window (sigma 1.5, truncated at 3.5 sigma, i.e. 11 taps), K1 = 0.01,
  K2 = 0.03 and population (biased) local covariances, averaged over the pixels whose
  window lies inside the image. This is ``skimage.metrics.structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False``.
- :func:`mutual_information` is the mutual information of a joint histogram divided by
  the joint entropy, ``I(a; b) / H(a, b)`` (1 for identical images, about 0 for
  independent ones).
- :func:`spectral_mutual_information` (SMI) is that quantity on the DCT-II spectra of the
  L2-normalised images.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from ._checks import check_image

__all__ = [
    "psnr",
    "ssim",
    "rmse",
    "mutual_information",
    "spectral_mutual_information",
]

# SSIM constants of Wang et al. 2004 and the Gaussian window used with them.
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # Same truncation as skimage, so the window has 11 taps.


def _pair(reference, image, name: str) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference)
    img = np.asarray(image)
    if ref.shape != img.shape:
        raise ValueError(
            f"{name}: reference shape {ref.shape} differs from image shape {img.shape}; "
            "compare arrays of the same shape (crop or resample one of them)."
        )
    return check_image(ref, name=f"{name}: reference"), check_image(img, name=f"{name}: image")


def _check_data_range(data_range, name: str) -> float:
    value = float(data_range)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name}: data_range must be a positive finite number (1.0 for images in "
            f"[0, 1]), got {data_range!r}."
        )
    return value


def rmse(reference, image) -> float:
    """Root-mean-square error between two images.

    Args:
      reference: ground truth, 2D or 3D.
      image: the image to score, same shape.

    Returns:
      ``sqrt(mean((reference - image)²))`` as a float.

    Raises:
      ValueError: for a shape mismatch, a rank other than 2/3, or NaN/Inf.

    Example:
      >>> rmse(np.zeros((4, 4)), np.ones((4, 4)))
      1.0
    """
    ref, img = _pair(reference, image, "rmse")
    return float(np.sqrt(np.mean((ref - img) ** 2)))


def psnr(reference, image, *, data_range) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range² / MSE)``.

    Args:
      reference: ground truth, 2D or 3D.
      image: the image to score, same shape.
      data_range: the intensity range of the reference scale (1.0 for [0, 1] images).

    Returns:
      PSNR in dB; ``inf`` for identical images.

    Raises:
      ValueError: for a shape mismatch, a bad rank, NaN/Inf, or a non-positive
        ``data_range``.

    Example:
      >>> round(psnr(np.zeros((4, 4)), np.full((4, 4), 0.1), data_range=1.0), 6)
      20.0
    """
    ref, img = _pair(reference, image, "psnr")
    data_range = _check_data_range(data_range, "psnr")
    mse = np.mean((ref - img) ** 2)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / mse))


def _gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable correlation with ``taps`` on every axis, keeping only the 'valid' part.

    SSIM is averaged only where the whole window lies inside the image, so no boundary
    extension is ever needed (skimage pads and then crops the same border away).
    """
    width = taps.size
    for axis in range(x.ndim):
        n = x.shape[axis] - width + 1
        acc = np.zeros(x.shape[:axis] + (n,) + x.shape[axis + 1 :], dtype=np.float64)
        for j, w in enumerate(taps):
            acc += w * np.take(x, np.arange(j, j + n), axis=axis)
        x = acc
    return x


def ssim(reference, image, *, data_range) -> float:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window, 2D or 3D.

    Local means, variances and covariance are Gaussian-weighted (sigma 1.5, 11 taps per
    axis) population statistics; ``C1 = (0.01 R)²``, ``C2 = (0.03 R)²`` with
    ``R = data_range``; the SSIM map is averaged over the pixels at least 5 pixels from
    every border. Equal to ``skimage.metrics.structural_similarity(reference, image,
    data_range=R, gaussian_weights=True, use_sample_covariance=False)``.

    Args:
      reference: ground truth, 2D or 3D, at least 11 pixels along every axis.
      image: the image to score, same shape.
      data_range: the intensity range (1.0 for [0, 1] images; do not use 2).

    Returns:
      Mean SSIM, at most 1 (for identical images).

    Raises:
      ValueError: for a shape mismatch, a bad rank, NaN/Inf, an image smaller than the
        11-pixel window, or a non-positive ``data_range``.

    Example:
      >>> x = np.random.default_rng(0).random((32, 32))
      >>> ssim(x, x, data_range=1.0)
      1.0
    """
    ref, img = _pair(reference, image, "ssim")
    data_range = _check_data_range(data_range, "ssim")
    taps = _gaussian_taps(_SSIM_SIGMA, _SSIM_TRUNCATE)
    if min(ref.shape) < taps.size:
        raise ValueError(
            f"ssim: image shape {ref.shape} is smaller than the {taps.size}-pixel Gaussian "
            f"window on some axis; use images at least {taps.size} pixels on every axis."
        )
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    mu_r = _filter_valid(ref, taps)
    mu_i = _filter_valid(img, taps)
    var_r = _filter_valid(ref * ref, taps) - mu_r * mu_r
    var_i = _filter_valid(img * img, taps) - mu_i * mu_i
    cov = _filter_valid(ref * img, taps) - mu_r * mu_i
    numerator = (2 * mu_r * mu_i + c1) * (2 * cov + c2)
    denominator = (mu_r**2 + mu_i**2 + c1) * (var_r + var_i + c2)
    return float(np.mean(numerator / denominator))


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _normalized_mi(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    # Each axis of the joint histogram spans its own image's [min, max] in equal bins.
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins)
    p = joint / joint.sum()
    h_joint = _entropy(p)
    if h_joint == 0.0:
        # Both images constant: each predicts the other perfectly.
        return 1.0
    mi = _entropy(p.sum(axis=1)) + _entropy(p.sum(axis=0)) - h_joint
    return float(mi / h_joint)


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}.")
    return int(bins)


def mutual_information(a, b, *, bins: int = 256) -> float:
    """Normalised mutual information ``I(a; b) / H(a, b)`` of a joint intensity histogram.

    The joint histogram has ``bins`` equal-width bins per image, each spanning that image's
    own [min, max]; entropies use natural logarithms (the ratio does not depend on the
    base). The value lies in [0, 1]: 1 when each image's bin determines the other's
    (identical images, or one an increasing affine function of the other), near 0 for
    independent images. It is symmetric in ``a`` and ``b``. Two constant images
    give 1 by convention.

    Args:
      a: first image, 2D or 3D.
      b: second image, same shape.
      bins: histogram bins per image (256 as in the papers).

    Returns:
      The normalised mutual information as a float.

    Raises:
      ValueError: for a shape mismatch, a bad rank, NaN/Inf, or ``bins < 2``.

    Example:
      >>> x = np.random.default_rng(0).random((32, 32))
      >>> mutual_information(x, x)
      1.0
    """
    a, b = _pair(a, b, "mutual_information")
    return _normalized_mi(a, b, _check_bins(bins))


def _dct_spectrum(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x.ravel())
    if norm > 0:
        x = x / norm
    for axis in range(x.ndim):
        # Unnormalised DCT-II (scipy's norm=None), as in the SSI/aydin metric code; the
        # choice only rescales the DC row/column relative to the rest of the spectrum.
        x = scipy.fft.dct(x, type=2, axis=axis, norm=None)
    return x


def spectral_mutual_information(a, b, *, bins: int = 256) -> float:
    """Spectral mutual information (SMI): :func:`mutual_information` of DCT spectra.

    Each image is divided by its L2 norm, transformed by an unnormalised DCT-II
    (``scipy.fft.dct(type=2, norm=None)``) along axis 0, then axis 1 (then axis 2 for
    3D), and the normalised mutual information of the two spectra is returned. As in
    Papkov et al. 2023, it rewards restoring the right frequencies rather than matching
    intensities pixel by pixel. The 3D extension (DCT along all three axes) is ours; the
    papers only report SMI in 2D. The histogram spans each spectrum's full range, so for
    images with a large mean the DC coefficient stretches it and the remaining
    coefficients share few bins; compare SMI values only at equal ``bins``.

    Args:
      a: first image, 2D or 3D.
      b: second image, same shape.
      bins: histogram bins per spectrum.

    Returns:
      SMI in [0, 1]; 1 for identical images.

    Raises:
      ValueError: for a shape mismatch, a bad rank, NaN/Inf, or ``bins < 2``.

    Example:
      >>> x = np.random.default_rng(0).random((32, 32))
      >>> spectral_mutual_information(x, x)
      1.0
    """
    a, b = _pair(a, b, "spectral_mutual_information")
    bins = _check_bins(bins)
    return _normalized_mi(_dct_spectrum(a), _dct_spectrum(b), bins)
