"""Input checks shared by fit, Richardson-Lucy, the degradation model, PSFs and metrics.

Each check lives here once; the modules that need it call it with their own ``name`` so
the error names the argument the user passed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_RANK_NAMES = {2: "2D (YX)", 3: "3D (ZYX)"}

# Training patches keep at least this many voxels per axis of interior, the part where the
# blur sees no padding and the loss is computed (``crop_border``): ``fit`` grows a patch
# the PSF leaves less (``stages._adapt_patch``) and ``files.config_for_voxels`` never cuts
# a patch's depth below it.
MIN_LOSS_INTERIOR = 8


def loss_patch_floor(psf_size: int, multiple: int) -> int:
    """The smallest patch side, a multiple of ``multiple``, that leaves the loss
    ``MIN_LOSS_INTERIOR`` voxels of interior beside a PSF of ``psf_size`` on that axis.

    Example:
      >>> loss_patch_floor(31, 8), loss_patch_floor(17, 8)
      (40, 24)
    """
    return -(-(2 * (psf_size // 2) + MIN_LOSS_INTERIOR) // multiple) * multiple


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


def _check_layout(arr, name: str, ndim) -> None:
    """dtype, rank and size: what can be checked without reading the pixels."""
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


def _constant_error(name: str, value: float) -> ValueError:
    return ValueError(f"{name} is constant (all {value:g}); there is nothing to deconvolve.")


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
    _check_layout(arr, name, ndim)
    arr = arr.astype(np.float64)
    check_finite(arr, name)
    if not allow_constant and np.ptp(arr) == 0:
        raise _constant_error(name, arr.flat[0])
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


def image_statistics(
    image,
    *,
    name: str = "image",
    ndim: int | Sequence[int] | None = None,
    percentiles: Sequence[float] | None = None,
    block_bytes: int = 2**20,
) -> dict[str, float]:
    """Check an image as :func:`check_image` does, without a full-size float copy.

    The image is read a block of planes at a time (each converted to float64, at most
    about ``block_bytes``); a dask array is reduced by dask instead (one pass over it).
    Percentiles need the whole image: NumPy sorts a copy in the image's own dtype, and a
    dask array gets dask's merged per-chunk estimate.

    Returns:
      ``{"min", "max", "mean", "std"}`` in float64 (the std divides by ``n``, as
      ``np.std``), plus ``"percentiles"`` (a tuple) when asked.

    Raises:
      ValueError: as :func:`check_image` with ``allow_constant=False``.
    """
    arr = image if is_dask_array(image) else np.asarray(image)
    _check_layout(arr, name, ndim)
    if is_dask_array(arr):
        stats = _dask_statistics(arr, percentiles)
    else:
        stats = _numpy_statistics(arr, block_bytes)
        if percentiles is not None and stats["bad"] == 0:
            stats["percentiles"] = tuple(float(v) for v in np.percentile(arr, percentiles))
    if stats.pop("bad"):
        raise ValueError(
            f"{name} contains NaN or Inf values; replace them (e.g. np.nan_to_num) or crop "
            "them away."
        )
    if stats["min"] == stats["max"]:
        raise _constant_error(name, stats["min"])
    return stats


def is_dask_array(arr) -> bool:
    """Whether ``arr`` is a dask array (checked without importing dask)."""
    return type(arr).__module__.startswith("dask.")


def _blocks(arr: np.ndarray, block_bytes: int):
    step = max(1, block_bytes // (8 * max(1, arr[:1].size)))
    for i in range(0, arr.shape[0], step):
        yield arr[i : i + step].astype(np.float64)


def _numpy_statistics(arr: np.ndarray, block_bytes: int) -> dict:
    lo, hi, total, bad = np.inf, -np.inf, 0.0, 0
    for block in _blocks(arr, block_bytes):
        finite = np.isfinite(block)
        bad += int(block.size - np.count_nonzero(finite))
        if bad:
            return {"bad": bad, "min": 0.0, "max": 0.0}
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        total += float(block.sum())
        del block, finite  # before the next block is converted
    mean = total / arr.size
    squares = 0.0
    for block in _blocks(arr, block_bytes):
        block -= mean
        squares += float(np.dot(block.ravel(), block.ravel()))
        del block
    return {"bad": 0, "min": lo, "max": hi, "mean": mean, "std": (squares / arr.size) ** 0.5}


def _dask_statistics(arr, percentiles) -> dict:
    import dask
    import dask.array as da

    x = arr.astype(np.float64)
    lazy = {
        "bad": (~da.isfinite(x)).sum(),
        "min": x.min(),
        "max": x.max(),
        "mean": x.mean(),
        "std": x.std(),
    }
    if percentiles is not None:
        lazy["percentiles"] = da.percentile(x.ravel(), list(percentiles))
    (values,) = dask.compute(lazy)
    stats = {k: float(v) for k, v in values.items() if k != "percentiles"}
    stats["bad"] = int(stats["bad"])
    if percentiles is not None:
        stats["percentiles"] = tuple(float(v) for v in values["percentiles"])
    return stats
