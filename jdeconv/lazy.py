"""Lazy inference on dask arrays: larger-than-memory images, many workers, clusters.

:func:`deconvolve_dask` returns a lazy float32 dask array. Each block is extended by
the network's receptive field (the tile halo, ``Config.tile_context()`` rounded up to the size
multiple) with ``dask.array.map_overlap`` (``boundary="none"``: a block at the image's
edge sees the edge, as the whole image does), predicted by
:func:`jdeconv.predict.predict` with the same per-tile standardisation as the in-memory
path, and trimmed back. The blocks do not follow the storage chunks (OME-Zarr's 64×128²
would spend most of the work on halos): each extended block is one inference window,
of ``tile_size`` or the largest that fits the memory budget of one task
(:func:`block_budget`: the budget shared by the tasks that run at once), with cores a
multiple of ``2**depth`` and at least the halo (:func:`block_chunks`), so every extended
block starts on the network's pooling grid and equals the in-memory result to float
rounding.

The model (parameters as NumPy, config, PSF) enters the graph once, as one
``dask.delayed`` object that every block task depends on: a distributed scheduler sends
it to each worker once, not with every task. Workers compile the network once per
distinct block shape (a handful: interior and edge blocks).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from . import stages
from ._checks import image_statistics, is_dask_array
from .model import FittedModel
from .predict import (
    choose_tile_size,
    fft_extension,
    memory_budget,
    parse_bytes,
    tile_bytes_per_pixel,
)

__all__ = [
    "deconvolve_dask",
    "predict_dask",
    "blur_dask",
    "block_budget",
    "block_chunks",
    "inference_chunks",
]


def inference_chunks(shape, chunks, *, multiple: int, depth: int) -> tuple[tuple[int, ...], ...]:
    """Chunks on which blockwise inference is exact: aligned to ``multiple``, >= ``depth``.

    Each axis gets regular chunks of the requested size rounded up to a multiple of
    ``multiple`` and to at least ``depth`` (so an overlap reaches only the neighbouring
    block); a last chunk shorter than ``depth`` is merged into the one before it.

    Args:
      shape: the image's shape.
      chunks: a chunk size per axis (e.g. a dask array's ``chunksize``).
      multiple: the network's size multiple (``2**depth`` of the U-Net).
      depth: the overlap, a multiple of ``multiple``.

    Example:
      >>> inference_chunks((100, 70), (30, 64), multiple=8, depth=16)
      ((32, 32, 36), (70,))
    """
    out = []
    for n, c in zip(shape, chunks, strict=True):
        c = max(-(-int(c) // multiple) * multiple, depth, multiple)
        sizes = [c] * (n // c)
        if n % c:
            sizes.append(n % c)
        if len(sizes) > 1 and sizes[-1] < depth:
            last = sizes.pop()
            sizes[-1] += last
        out.append(tuple(sizes))
    return tuple(out)


def deconvolve_dask(image, model: FittedModel, *, tile_size=None, max_memory=None):
    """Deconvolve a dask array lazily (see the module's notes); statistics are computed now.

    The image's normalisation statistics (mean and std, or dask's per-chunk estimate of
    the percentiles) are computed when this is called, one pass over the input; the
    blocks when the result is. Each block is one inference window: ``tile_size`` (or the
    config's ``tile_size``) is the window side as for in-memory tiling, else the largest
    window that fits the memory budget of one task (:func:`block_budget`).

    Args:
      image: a 2D/3D ``dask.array.Array`` of the model's dimensionality, any real dtype.
      model: a :class:`jdeconv.FittedModel`.
      tile_size: window side of a block, halo included (None: the config's, else from
        the budget).
      max_memory: bytes (or e.g. ``"2GB"``) one block's inference may use.

    Returns:
      A lazy float32 dask array of the image's shape, in its intensity scale.

    Example:
      >>> import dask.array as da, jdeconv
      >>> from jdeconv.unet import init_unet
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8, tta=False, tile_halo=4)
      >>> m = jdeconv.FittedModel(init_unet(0, cfg.unet(2))[1], cfg, 2,
      ...                         jdeconv.psf.gaussian_psf((3, 3), 1.0))
      >>> image = da.random.default_rng(0).random((24, 24), chunks=8)
      >>> deconvolve_dask(image, m).compute().shape
      (24, 24)
    """
    if not is_dask_array(image):
        raise ValueError(f"image must be a dask array, got {type(image).__name__}.")
    cfg = model.config
    percentiles = cfg.data.percentiles if cfg.data.normalization == "percentile" else None
    stats = image_statistics(image, percentiles=percentiles)
    if image.ndim != model.ndim:
        raise ValueError(
            f"model is {model.ndim}D but the image is {image.ndim}D (shape {image.shape})."
        )
    offset, scale = stages.normalization_from_statistics(stats, cfg)
    clip = cfg.inference.clip_range(stats["min"], stats["max"])
    return predict_dask(
        image,
        model,
        offset=offset,
        scale=scale,
        clip_range=clip,
        tile_size=tile_size,
        max_memory=max_memory,
    )


def block_budget(*, max_memory=None) -> int:
    """Bytes one block's inference may use when blocks run in parallel.

    ``max_memory`` if given; else :func:`jdeconv.predict.memory_budget` shared by the
    tasks that run at once on this machine (the threads of the workers of the current
    ``dask.distributed`` client, or of the local threaded scheduler: dask's
    ``num_workers`` setting, else the CPU count), less a third for what the scheduler
    holds between blocks.

    Example:
      >>> block_budget(max_memory="1GB")
      1073741824
    """
    if max_memory is not None:
        return parse_bytes(max_memory)
    return max(int(memory_budget() / _parallel_tasks() / _SCHEDULER_OVERHEAD), 1)


# Besides the windows being predicted, the scheduler holds input pieces and finished
# blocks until they are written: on 64×1024² (2 threads, blocks of ~1 GB, OME-Zarr out)
# the process peaked 0.7 GB above its base plus two blocks. The default per-block budget
# leaves that room.
_SCHEDULER_OVERHEAD = 1.5


def _parallel_tasks() -> int:
    import dask

    client = _current_client()
    if client is not None:
        try:
            workers = client.scheduler_info()["workers"].values()
            return max(1, sum(int(w.get("nthreads", 1)) for w in workers))
        except Exception:  # a client that cannot answer: assume one task per core
            return os.cpu_count() or 1
    if dask.config.get("scheduler", None) in ("sync", "synchronous", "single-threaded"):
        return 1
    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _current_client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client
        return None


def _block_halo(model: FittedModel) -> int:
    """The overlap of neighbouring blocks: the model's tile context, rounded up to the
    network's size multiple (as :func:`jdeconv.predict.predict` rounds its halo)."""
    multiple = model.multiple
    return -(-model.tile_context() // multiple) * multiple


def block_chunks(shape, model: FittedModel, *, tile_size=None, max_memory=None):
    """The blocks of lazy inference: one inference window each (halo included).

    Example:
      >>> import jdeconv
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8, tile_halo=8)
      >>> m = jdeconv.FittedModel(None, cfg, 2, jdeconv.psf.gaussian_psf((3, 3), 1.0))
      >>> block_chunks((100, 70), m, tile_size=40)
      ((24, 24, 24, 28), (24, 24, 22))
    """
    cfg = model.config
    multiple = model.multiple
    halo = _block_halo(model)
    if tile_size is None:
        tile_size = cfg.inference.tile_size
    if tile_size is None:
        network = model.network
        tile_size = choose_tile_size(
            shape,
            multiple=multiple,
            halo=halo,
            blend=0,
            budget=block_budget(max_memory=max_memory),
            bytes_per_pixel=tile_bytes_per_pixel(network),
            fft_extension=fft_extension(network),
        )
    if tile_size is None:  # the whole image is one window
        return tuple((int(n),) for n in shape)
    core = max(tile_size - 2 * halo, halo, multiple)
    return inference_chunks(shape, (core,) * len(shape), multiple=multiple, depth=halo)


def predict_dask(
    image,
    model: FittedModel,
    *,
    offset: float,
    scale: float,
    clip_range=None,
    destandardise: bool = True,
    tile_size=None,
    max_memory=None,
):
    """The lazy blockwise prediction of ``model`` on ``(image - offset) / scale``.

    What :func:`deconvolve_dask` returns once it has the statistics; ``fit`` calls it
    with the statistics it trained with. ``destandardise=False`` keeps the network's
    standardised output (and ignores ``clip_range``).

    Example:
      >>> import dask.array as da, jdeconv
      >>> from jdeconv.unet import init_unet
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8, tta=False, tile_halo=4)
      >>> m = jdeconv.FittedModel(init_unet(0, cfg.unet(2))[1], cfg, 2,
      ...                         jdeconv.psf.gaussian_psf((3, 3), 1.0))
      >>> predict_dask(da.zeros((24, 24)), m, offset=0.0, scale=1.0).shape
      (24, 24)
    """
    import dask
    import dask.array as da

    halo = _block_halo(model)
    chunks = block_chunks(image.shape, model, tile_size=tile_size, max_memory=max_memory)
    x = image.rechunk(chunks)
    depth = {axis: (halo if len(c) > 1 else 0) for axis, c in enumerate(chunks)}
    # NumPy parameters: the delayed model pickles the same on every scheduler.
    shipped = dataclasses.replace(model, params=jax.device_get(model.params))
    model_d = dask.delayed(shipped, pure=True, traverse=False)
    return da.map_overlap(
        _deconvolve_block,
        x,
        depth=depth,
        boundary="none",
        trim=True,
        dtype=np.float32,
        meta=np.empty((0,) * x.ndim, np.float32),
        model=model_d,
        options=dict(
            offset=offset,
            scale=scale,
            max_memory=block_budget(max_memory=max_memory),
            clip=clip_range,
            destandardise=destandardise,
        ),
    )


def _deconvolve_block(block, *, model: FittedModel, options: dict) -> np.ndarray:
    # The block is one window: predict tiles it only if it is larger than the budget.
    y = stages.predict_standardised(
        model,
        block,
        offset=options["offset"],
        scale=options["scale"],
        max_memory=options["max_memory"],
    )
    stages.release_memory()
    if not options["destandardise"]:
        return y
    return stages.destandardise(
        y, options["offset"], options["scale"], clip_range=options["clip"], out=y
    )


def blur_dask(image, psf, *, method: str = "fft", padding: str = "reflect"):
    """The PSF blur of a dask array, lazily and blockwise, equal to the whole-image blur.

    Each block is extended by half the PSF on every side (``map_overlap``, no extension
    past the image's edge, where the forward model pads as for the whole image), blurred
    with :func:`jdeconv.forward.make_forward` and trimmed: only real neighbours enter
    every kept pixel, so the result equals the whole-image blur to float rounding.

    Example:
      >>> import dask.array as da, jdeconv
      >>> x = da.random.default_rng(0).random((40, 30), chunks=16)
      >>> blur_dask(x, jdeconv.psf.gaussian_psf((5, 5), 1.0)).compute().shape
      (40, 30)
    """
    import dask.array as da

    psf = np.asarray(psf, np.float32)
    depth = {
        axis: (k // 2 if len(c) > 1 else 0)
        for axis, (k, c) in enumerate(zip(psf.shape, image.chunks, strict=True))
    }
    # Blocks must be at least the overlap: merge chunks smaller than half the PSF.
    chunks = tuple(
        c
        if len(c) == 1
        else inference_chunks((sum(c),), (max(c),), multiple=1, depth=max(k // 2, 1))[0]
        for k, c in zip(psf.shape, image.chunks, strict=True)
    )
    return da.map_overlap(
        _blur_block,
        image.rechunk(chunks).astype(np.float32),
        depth=depth,
        boundary="none",
        trim=True,
        dtype=np.float32,
        meta=np.empty((0,) * image.ndim, np.float32),
        psf=psf,
        method=method,
        padding=padding,
    )


def _blur_block(block, *, psf, method, padding):
    from .forward import make_forward

    g = make_forward(psf, block.shape, method=method, padding=padding)
    return np.asarray(stages._blur(g, jax.numpy.asarray(block, np.float32)), np.float32)
