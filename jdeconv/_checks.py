"""Input checks shared by fit, Richardson-Lucy and the degradation model."""

from __future__ import annotations

import numpy as np


def check_image(image, *, name: str = "image") -> np.ndarray:
    """A real, finite, non-empty 2D (YX) or 3D (ZYX) image as float64, or a ValueError.

    Integers (including uint32/int64, whose arithmetic could overflow) are converted to
    float before anything else is computed.
    """
    arr = np.asarray(image)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(
            f"{name} has unsupported dtype {arr.dtype}; pass a real-valued (integer or float) "
            "array."
        )
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be 2D (YX) or 3D (ZYX), got {arr.ndim}D with shape {arr.shape}; "
            "select one channel/time point or squeeze singleton axes."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} contains {int(np.sum(~np.isfinite(arr)))} NaN or Inf values; replace "
            "them (e.g. np.nan_to_num) or crop them away."
        )
    return arr
