"""Input checks shared by fit, Richardson-Lucy, the degradation model, PSFs and metrics.

Each check lives here once; the modules that need it call it with their own ``name`` so
the error names the argument the user passed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_RANK_NAMES = {2: "2D (YX)", 3: "3D (ZYX)"}


def check_real_dtype(arr: np.ndarray, name: str) -> None:
    """Raise ValueError unless ``arr`` has an integer or floating dtype (not bool/complex)."""
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(
            f"{name} has unsupported dtype {arr.dtype}; pass a real-valued (integer or float) "
            "array."
        )


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ValueError if ``arr`` holds NaN or Inf, saying how many."""
    bad = ~np.isfinite(arr)
    if np.any(bad):
        raise ValueError(
            f"{name} contains {int(np.sum(bad))} NaN or Inf values; replace them (e.g. "
            "np.nan_to_num) or crop them away."
        )


def check_image(
    image,
    *,
    name: str = "image",
    ndim: int | Sequence[int] | None = None,
    allow_constant: bool = True,
    allow_negative: bool = True,
    dtype=np.float64,
) -> np.ndarray:
    """A real, finite, non-empty 2D (YX) or 3D (ZYX) image as ``dtype``, or a ValueError.

    Integers (including uint32/int64, whose arithmetic could overflow) are converted to
    float64 before anything else is computed; the result is cast to ``dtype`` last.

    Args:
      image: array-like.
      name: what the error messages call it ("image", "clean image", "psnr: reference").
      ndim: the allowed rank(s): an int, a sequence of ints, or None for 2 or 3.
      allow_constant: accept an image with a single value everywhere.
      allow_negative: accept negative values.
      dtype: the returned array's dtype, ``np.float64`` or ``np.float32``.

    Returns:
      The checked image as a numpy array of ``dtype``.

    Raises:
      ValueError: for a bool/complex/object dtype, a rank not allowed, an empty array,
        NaN or Inf, and (when not allowed) a constant image or negative values.
    """
    arr = np.asarray(image)
    check_real_dtype(arr, name)
    ranks = (2, 3) if ndim is None else (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in ranks:
        allowed = " or ".join(_RANK_NAMES.get(r, f"{r}D") for r in ranks)
        raise ValueError(
            f"{name} must be {allowed}, got {arr.ndim}D with shape {arr.shape}; "
            "select one channel/time point or squeeze singleton axes."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    arr = arr.astype(np.float64)
    check_finite(arr, name)
    if not allow_constant and np.ptp(arr) == 0:
        raise ValueError(
            f"{name} is constant (all {arr.flat[0]:g}); there is nothing to deconvolve."
        )
    arr = arr.astype(dtype, copy=False)
    if not allow_negative and arr.min() < 0:
        raise ValueError(
            f"{name} has negative values (min {arr.min():.3g}); this method assumes "
            "non-negative intensities (Poisson counts): clip them (np.clip(x, 0, None)) or "
            "add an offset."
        )
    return arr


def check_psf_fits(psf_shape, image_shape) -> None:
    """Raise ValueError if the PSF is larger than the image on some axis.

    Both shapes must have the same rank (check that first).
    """
    psf_shape = tuple(int(k) for k in psf_shape)
    image_shape = tuple(int(n) for n in image_shape)
    if any(k > n for k, n in zip(psf_shape, image_shape, strict=True)):
        raise ValueError(
            f"PSF shape {psf_shape} is larger than the image {image_shape} on some axis; "
            "crop the PSF (its tails usually carry little mass) or use a larger image."
        )
