"""Lazy inference on dask arrays: larger-than-memory images, many workers, clusters.

:func:`deconvolve_dask` returns a lazy float32 dask array. Each block is extended by
the network's receptive field (the tile halo, ``Config.tile_halo`` rounded up to the size
multiple) with ``dask.array.map_overlap`` (``boundary="none"``: a block at the image's
edge sees the edge, as the whole image does), predicted by
:func:`jdeconv.predict.predict` with the same per-tile standardisation, tiling and
blending as the in-memory path, and trimmed back. The blocks are first rechunked so
every extended block starts on the network's pooling grid (chunks a multiple of
``2**depth`` and at least the halo); then each block equals the in-memory result to float
rounding.

The model (parameters as NumPy, config, PSF) enters the graph once, as one
``dask.delayed`` object that every block task depends on: a distributed scheduler sends
it to each worker once, not with every task. Workers compile the network once per
distinct block shape (a handful: interior and edge blocks).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from . import stages
from ._checks import image_statistics, is_dask_array
from .model import FittedModel

__all__ = ["deconvolve_dask", "inference_chunks"]


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
    blocks when the result is. Within a block, the tile size follows ``tile_size``, the
    config, or the memory budget ``max_memory`` of each worker.

    Args:
      image: a 2D/3D ``dask.array.Array`` of the model's dimensionality, any real dtype.
      model: a :class:`jdeconv.FittedModel`.
      tile_size: tile side within a block (None: the config's, else from the budget).
      max_memory: bytes (or e.g. ``"2GB"``) a worker's tile may use.

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
    import dask
    import dask.array as da

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

    multiple = cfg.network.multiple
    halo = -(-cfg.inference.tile_halo // multiple) * multiple
    chunks = inference_chunks(image.shape, image.chunksize, multiple=multiple, depth=halo)
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
            offset=offset, scale=scale, tile_size=tile_size, max_memory=max_memory, clip=clip
        ),
    )


def _deconvolve_block(block, *, model: FittedModel, options: dict) -> np.ndarray:
    y = stages.predict_standardised(
        model,
        block,
        tile_size=options["tile_size"],
        offset=options["offset"],
        scale=options["scale"],
        max_memory=options["max_memory"],
    )
    return stages.destandardise(
        y, options["offset"], options["scale"], clip_range=options["clip"], out=y
    )
