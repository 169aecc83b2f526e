"""Inference: whole-image or tiled application of a trained network, with optional TTA.

Tiles overlap by ``overlap`` pixels and are blended with a raised-cosine weight that
falls to zero inside the overlap (but not at the image border), so seams vanish; the
network sees each tile mirror-padded to its size multiple, exactly as for a whole image.
Test-time augmentation (TTA) averages the prediction over the rotations/flips used in
training (8 in 2D; 16 in 3D: rot90 in YX × flip Z × flip Y).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .train import apply_network

__all__ = ["make_predictor", "predict", "tile_starts", "blend_window"]


def make_predictor(graphdef) -> Callable:
    """A jitted ``net(params, x)`` on one unbatched standardised array (any shape)."""
    return jax.jit(lambda params, x: apply_network(graphdef, params, x[None])[0])


def _transforms(ndim: int):
    flip_sets = [(), (0,)] if ndim == 2 else [(), (0,), (1,), (0, 1)]
    return list(itertools.product(range(4), flip_sets))


def _with_tta(net: Callable, params, x: jax.Array) -> jax.Array:
    total = jnp.zeros_like(x)
    transforms = _transforms(x.ndim)
    for k, flips in transforms:
        y = jnp.rot90(x, k, axes=(-2, -1))
        y = jnp.flip(y, flips) if flips else y
        out = net(params, y)
        out = jnp.flip(out, flips) if flips else out
        total = total + jnp.rot90(out, -k, axes=(-2, -1))
    return total / len(transforms)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``[0, n)`` with at least ``overlap``."""
    if tile >= n:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return starts


def blend_window(tile: int, overlap: int, *, at_start: bool, at_end: bool) -> np.ndarray:
    """1D blending weights: raised-cosine ramps over ``overlap`` except at image borders."""
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[-overlap:] = ramp[::-1]
    return w


def predict(
    net: Callable,
    params,
    x: np.ndarray,
    *,
    tile_size: int | None = None,
    overlap: int = 32,
    tta: bool = False,
) -> np.ndarray:
    """Apply ``net`` to a standardised ``(*spatial)`` array, whole or in tiles.

    Args:
      net: from :func:`make_predictor`.
      params: network parameters.
      x: standardised image.
      tile_size: tile side (per axis, clipped to the image); None for the whole image.
      overlap: overlap between neighbouring tiles.
      tta: average over rotations/flips.

    Returns:
      float32 numpy array of ``x.shape``.
    """
    run = (lambda a: _with_tta(net, params, a)) if tta else (lambda a: net(params, a))
    if tile_size is None or all(tile_size >= n for n in x.shape):
        return np.asarray(run(jnp.asarray(x, jnp.float32)), dtype=np.float32)
    tiles = [min(tile_size, n) for n in x.shape]
    overlaps = [min(overlap, t // 2) for t in tiles]
    per_axis = [tile_starts(n, t, o) for n, t, o in zip(x.shape, tiles, overlaps, strict=True)]
    acc = np.zeros(x.shape, dtype=np.float64)
    weight = np.zeros(x.shape, dtype=np.float64)
    for starts in itertools.product(*per_axis):
        window = tuple(slice(s, s + t) for s, t in zip(starts, tiles, strict=True))
        out = np.asarray(run(jnp.asarray(x[window], jnp.float32)), dtype=np.float64)
        w = np.ones(tiles)
        for axis, (s, t, o, n) in enumerate(zip(starts, tiles, overlaps, x.shape, strict=True)):
            shape = [1] * x.ndim
            shape[axis] = t
            w = w * blend_window(t, o, at_start=s == 0, at_end=s + t == n).reshape(shape)
        acc[window] += w * out
        weight[window] += w
    return (acc / weight).astype(np.float32)
