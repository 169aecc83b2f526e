"""The user-facing calls: ``fit`` and ``deconvolve`` (and the model files, re-exported).

``fit`` runs the three stages of :mod:`jdeconv.stages` (prepare → train → infer) and
returns a frozen :class:`FitResult`; ``deconvolve`` applies a :class:`FittedModel` to an
image; ``save_model``/``load_model`` live in :mod:`jdeconv.model`.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from . import stages
from ._checks import image_statistics, is_dask_array
from .config import Config
from .model import FittedModel, load_model, save_model
from .stages import validate_image

__all__ = [
    "FitResult",
    "FittedModel",
    "fit",
    "deconvolve",
    "save_model",
    "load_model",
    "validate_image",
]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      deconvolved: float32 array of the input's shape, in the input's intensity scale.
      reconvolved: the deconvolved image blurred again by the PSF (should match the input
        minus noise).
      model: the :class:`FittedModel` (use with :func:`deconvolve` and :func:`save_model`).
      history: every step's ``"loss"`` and loss terms (``{"step": [1, 2, ...], "loss":
        [...], <term>: [...]}``) and the held-out blind-spot loss (``"val_step"``,
        ``"val_loss"``).
      best_step: the step whose parameters were kept (by validation loss), or the last.
      timings: seconds for ``compile``, ``train``, ``inference``, ``total``; ``steps``
        run; ``devices`` that trained (data parallel when more than one);
        ``voxels_per_second`` of the inference (the image's voxels over ``inference``
        seconds, which include compiling the predictor for this shape and the TTA).

    Example:
      >>> import numpy as np, jdeconv
      >>> cfg = jdeconv.Config(steps=2, batch_size=2, patch_size=16, depth=2)
      >>> r = jdeconv.fit(np.random.default_rng(0).random((32, 32)),
      ...                 jdeconv.psf.gaussian_psf((3, 3), 1.0), cfg, verbose=False)
      >>> r.deconvolved.shape, r.timings["steps"]
      ((32, 32), 2)
    """

    deconvolved: np.ndarray
    reconvolved: np.ndarray
    model: FittedModel
    history: dict
    best_step: int
    timings: dict


def fit(
    image,
    psf,
    cfg: Config | None = None,
    *,
    verbose: bool = True,
    normalize_psf: bool = False,
    callback=None,
    sampling=None,
    max_memory=None,
) -> FitResult:
    """Learn a deconvolution of one noisy image with its known PSF, self-supervised.

    Args:
      image: 2D (YX) or 3D (ZYX) array, any real dtype.
      psf: PSF of the same rank, odd-sized and centred; it must sum to 1 unless
        ``normalize_psf``.
      cfg: a :class:`Config`; None uses ``Config.default(image.ndim)``.
      verbose: show a progress bar with the loss and validation loss.
      normalize_psf: divide the PSF by its sum instead of raising.
      callback: optional ``callback(step, val_loss, deconvolve_fn)`` called after every
        validation; ``deconvolve_fn()`` returns the current deconvolved image (numpy, input
        scale). Return ``True`` to stop training. For research and benchmarks.
      sampling: where training patches come from: "whole" (the whole standardised image
        in memory), "regions" or a :class:`jdeconv.sampling.RegionSampling` (a bounded
        set of regions read from the image, refreshed as training goes, see
        :mod:`jdeconv.sampling`), or None: regions for a lazy image (dask, Zarr) or one
        above :data:`jdeconv.sampling.BOUNDED_TRAINING_VOXELS` voxels, else whole.
      max_memory: working memory of one inference tile, bytes or e.g. ``"2GB"`` (as
        :func:`deconvolve`); None: a share of the free memory.

    Returns:
      A :class:`FitResult`. For a dask image its ``deconvolved`` and ``reconvolved`` are
      lazy dask arrays (computing ``reconvolved`` runs the network again) and
      ``timings["voxels_per_second"]`` is None.

    Raises:
      ValueError: for bad images, PSFs or configs, before any compilation.

    Example:
      >>> import numpy as np, jdeconv
      >>> rng = np.random.default_rng(0)
      >>> noisy = rng.random((32, 32)).astype(np.float32)
      >>> psf = jdeconv.psf.gaussian_psf((5, 5), 1.0)
      >>> cfg = jdeconv.Config.preset("noise2self", steps=2, batch_size=2, patch_size=16)
      >>> jdeconv.fit(noisy, psf, cfg, verbose=False).deconvolved.shape
      (32, 32)
    """
    t_start = time.perf_counter()
    prepared = stages.prepare(image, psf, cfg, normalize_psf=normalize_psf, sampling=sampling)
    trained = stages.train(prepared, verbose=verbose, callback=callback)
    model = FittedModel(trained.params, prepared.cfg, prepared.ndim, prepared.psf)
    stages.release_memory()
    deconvolved, reconvolved, infer_s = stages.infer(prepared, model, max_memory=max_memory)
    lazy = is_dask_array(deconvolved)
    timings = {
        **trained.timings,
        "inference": infer_s,
        "voxels_per_second": None if lazy else math.prod(prepared.shape) / max(infer_s, 1e-12),
        "total": time.perf_counter() - t_start,
    }
    return FitResult(deconvolved, reconvolved, model, trained.history, trained.best_step, timings)


def deconvolve(
    image,
    model: FittedModel,
    *,
    tile_size: int | None = None,
    tta: bool | None = None,
    max_memory=None,
    return_timings: bool = False,
):
    """Deconvolve an image with a fitted model (trained on this or a similar image).

    The image is normalised with its own statistics, in the way the model's config says,
    and standardised a tile at a time: memory stays at the float32 result plus one tile
    (chosen to fit ``max_memory``), whatever the input's size and dtype (percentile
    normalisation adds one sorted copy of the image in its own dtype). A
    ``dask.array.Array`` gives a lazy result (see :func:`jdeconv.lazy.deconvolve_dask`):
    its statistics are computed now, its blocks when the result is.

    Args:
      image: 2D/3D array of the model's dimensionality, any real dtype: NumPy (a memory
        map is read a tile at a time) or dask.
      model: a :class:`FittedModel` (``fit(...).model`` or :func:`load_model`).
      tile_size: tiled inference with this tile side (None: the model config's setting,
        else the largest tile that fits the memory budget).
      tta: override the config's test-time augmentation.
      max_memory: working memory for one tile, bytes or a string like ``"2GB"``; None: a
        share of the free memory (:func:`jdeconv.predict.memory_budget`).

      return_timings: also return ``{"seconds": ..., "voxels_per_second": ...}`` of the
        prediction (the first call for a new image shape includes compilation).

    Returns:
      float32 array of the image's shape, in its intensity scale; with
      ``return_timings``, the pair ``(array, timings)``.

    Example:
      >>> import jdeconv
      >>> from jdeconv.unet import init_unet
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8, tta=False)
      >>> _, params = init_unet(0, cfg.unet(2))
      >>> m = FittedModel(params, cfg, 2, jdeconv.psf.gaussian_psf((3, 3), 1.0))
      >>> deconvolve(np.random.default_rng(0).random((16, 16)), m).shape
      (16, 16)
      >>> _, t = deconvolve(np.zeros((16, 16)) + np.eye(16), m, return_timings=True)
      >>> t["voxels_per_second"] > 0
      True
    """
    cfg = model.config if tta is None else model.config.replace(tta=tta)
    model = dataclasses.replace(model, config=cfg)
    if is_dask_array(image):
        from .lazy import deconvolve_dask

        return deconvolve_dask(image, model, tile_size=tile_size, max_memory=max_memory)
    arr = np.asarray(image)
    stats = image_statistics(arr, percentiles=_percentiles(cfg))
    if arr.ndim != model.ndim:
        raise ValueError(
            f"model is {model.ndim}D but the image is {arr.ndim}D (shape {arr.shape})."
        )
    offset, scale = stages.normalization_from_statistics(stats, cfg)
    t0 = time.perf_counter()
    y = stages.predict_standardised(
        model, arr, tile_size=tile_size, offset=offset, scale=scale, max_memory=max_memory
    )
    seconds = time.perf_counter() - t0
    clip = cfg.inference.clip_range(stats["min"], stats["max"])
    out = stages.destandardise(y, offset, scale, clip_range=clip, out=y)
    if return_timings:
        return out, {"seconds": seconds, "voxels_per_second": y.size / max(seconds, 1e-12)}
    return out


def _percentiles(cfg: Config):
    return cfg.data.percentiles if cfg.data.normalization == "percentile" else None
