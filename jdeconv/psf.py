"""Point-spread functions: validation, normalisation and models.

A PSF in jdeconv is a real array with an odd size on every axis, its centre in the
middle pixel, non-negative, finite and summing to one. :func:`validate_psf` checks all of
that and says how to fix what is wrong; models (:func:`gaussian_psf`,
:func:`gibson_lanni_psf`) return PSFs that already satisfy it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "validate_psf",
    "gaussian_psf",
]

# Relative tolerance on the sum of a PSF before we call it "not normalised".
_SUM_RTOL = 1e-3


def validate_psf(psf, *, ndim: int | None = None, normalize: bool = False) -> np.ndarray:
    """Check a PSF and return it as a float32 numpy array.

    Args:
      psf: array-like, 2D or 3D, odd size on every axis, centre in the middle.
      ndim: the rank the PSF must have (the image's rank), or None to accept 2 or 3.
      normalize: divide by the sum instead of raising when the sum is not 1.

    Returns:
      The PSF as float32, summing to 1.

    Raises:
      ValueError: naming the problem and the fix, for a wrong rank, even size, NaN/Inf,
        negative values, a zero or non-unit sum (without ``normalize``), or a
        non-numeric dtype.

    Example:
      >>> psf = validate_psf(np.ones((3, 3)), normalize=True)
      >>> float(psf.sum())
      1.0
    """
    arr = np.asarray(psf)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(
            f"PSF has unsupported dtype {arr.dtype}; pass a real-valued (float or integer) "
            "array."
        )
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"PSF must be 2D or 3D, got {arr.ndim}D with shape {arr.shape}; squeeze "
            "singleton axes or pick the plane/stack you mean."
        )
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"PSF rank {arr.ndim} (shape {arr.shape}) does not match the image rank {ndim}; "
            f"use a {ndim}D PSF (for a 2D image of a 3D PSF, take its in-focus plane)."
        )
    if any(s % 2 == 0 for s in arr.shape):
        raise ValueError(
            f"PSF shape {arr.shape} has an even size; every axis must be odd with the centre "
            "in the middle pixel. Crop or pad it by one pixel (jdeconv.psf.center_psf does "
            "this)."
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("PSF contains NaN or Inf values; replace them (e.g. np.nan_to_num).")
    if np.any(arr < 0):
        raise ValueError(
            f"PSF has negative values (min {arr.min():.3g}); clip them to 0 "
            "(np.clip(psf, 0, None)) and renormalise."
        )
    total = arr.sum()
    if total <= 0:
        raise ValueError("PSF sums to zero; it must have positive mass.")
    if abs(total - 1.0) > _SUM_RTOL:
        if not normalize:
            raise ValueError(
                f"PSF sums to {total:.6g}, not 1; divide it by its sum or pass "
                "normalize=True."
            )
    return (arr / total).astype(np.float32)


def center_psf(psf) -> np.ndarray:
    """Return a copy of ``psf`` cropped/padded to odd sizes with its peak in the middle.

    Useful for measured PSFs (beads) whose maximum is off-centre or whose size is even.
    The result is not normalised; pass it to :func:`validate_psf` with ``normalize=True``.
    """
    arr = np.asarray(psf, dtype=np.float64)
    peak = np.unravel_index(np.argmax(arr), arr.shape)
    half = [min(p, s - 1 - p) for p, s in zip(peak, arr.shape, strict=True)]
    slices = tuple(slice(p - h, p + h + 1) for p, h in zip(peak, half, strict=True))
    return arr[slices].copy()


def gaussian_psf(shape, sigma) -> np.ndarray:
    """A normalised, centred Gaussian PSF.

    Args:
      shape: odd size per axis, e.g. ``(17, 17)`` or ``(17, 17, 17)``.
      sigma: standard deviation in pixels, a scalar or one per axis.

    Returns:
      float32 array of ``shape`` summing to 1.

    Example:
      >>> gaussian_psf((9, 9), 1.5).shape
      (9, 9)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 or s % 2 == 0 for s in shape):
        raise ValueError(f"Gaussian PSF shape must be 2 or 3 odd sizes, got {shape}.")
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(shape),))
    if np.any(~np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"sigma must be positive and finite, got {sigma}.")
    grids = np.meshgrid(
        *[np.arange(s) - s // 2 for s in shape], indexing="ij", sparse=True
    )
    r2 = sum((g / s) ** 2 for g, s in zip(grids, sig, strict=True))
    psf = np.exp(-0.5 * r2)
    return (psf / psf.sum()).astype(np.float32)
