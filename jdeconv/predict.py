"""Inference: whole-image or tiled application of a trained network, with optional TTA.

Tiled inference cuts windows that start on the network's pooling grid, each a core plus
``halo`` pixels of context on every side; neighbouring cores overlap by ``blend`` pixels
and are blended with linear ramps (weights summing to one), so with a halo that covers the
receptive field the result equals the whole-image one to float rounding. The network sees
each window mirror-padded to its size multiple, exactly as for a whole image.
Test-time augmentation (TTA) averages the prediction over the rotations/flips used in
training (8 in 2D; 16 in 3D: rot90 in YX × flip Z × flip Y).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .unet import apply_network

__all__ = ["make_predictor", "predict"]


@functools.partial(jax.jit, static_argnums=0)
def _apply_one(graphdef, params, x):
    return apply_network(graphdef, params, x[None])[0]


def make_predictor(graphdef) -> Callable:
    """A jitted ``net(params, x)`` on one unbatched standardised array (any shape).

    One compilation per network shape and input shape, shared by every predictor of the
    same network (the graph definition is a static argument of one jitted function).

    Example:
      >>> from jdeconv.unet import UNetConfig, init_unet
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> make_predictor(graphdef)(params, jnp.zeros((8, 8))).shape
      (8, 8)
    """
    return functools.partial(_apply_one, graphdef)


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


def _windows(n: int, multiple: int, window: int, halo: int, blend: int):
    """Per-axis tiling: ``[(window_start, core_start, core_stop, weights)]``.

    Cores tile ``[0, n)`` and overlap their neighbours by ``blend``; each window is the
    core plus ``halo`` of context on each side, ``window`` long, started on a multiple of
    ``multiple`` so the network's pooling grid matches the whole-image one. ``weights``
    (one per core pixel, > 0) ramp linearly over the overlaps with neighbouring cores.
    """
    core = window - 2 * halo
    stride = core - blend
    starts = list(range(0, max(n - core, 0) + 1, stride))
    if starts[-1] + core < n:
        starts.append(n - core)
    out = []
    for i, c0 in enumerate(starts):
        c1 = min(c0 + core, n)
        w0 = min(max(0, (c0 - halo) // multiple * multiple), max(n - window, 0))
        weights = np.ones(c1 - c0)
        if i > 0 and (k := starts[i - 1] + core - c0) > 0:  # overlap with the previous core
            weights[:k] = (np.arange(k) + 0.5) / k
        if i + 1 < len(starts) and (k := c1 - starts[i + 1]) > 0:
            weights[-k:] = np.minimum(weights[-k:], 1 - (np.arange(k) + 0.5) / k)
        out.append((w0, c0, c1, weights))
    return out


def predict(
    net: Callable,
    params,
    x: np.ndarray,
    *,
    multiple: int = 1,
    tile_size: int | None = None,
    halo: int = 64,
    blend: int = 16,
    tta: bool = False,
) -> np.ndarray:
    """Apply ``net`` to a standardised ``(*spatial)`` array, whole or in tiles.

    Tiled inference is exact (equal to the whole-image result up to float rounding) when
    ``halo`` covers the network's receptive field and the network has no per-input
    statistics (``norm="none"``): every tile is predicted with ``halo`` pixels of context,
    cut on the pooling grid, and neighbouring tiles are blended linearly over ``blend``
    pixels.

    Args:
      net: from :func:`make_predictor`.
      params: network parameters.
      x: standardised image.
      multiple: the network's size multiple (``2**depth``).
      tile_size: tile (window) side per axis; None for the whole image.
      halo: context on each side of a tile's core (rounded up to ``multiple``).
      blend: width of the linear blend between neighbouring cores.
      tta: average over rotations/flips.

    Returns:
      float32 numpy array of ``x.shape``.

    Example:
      >>> from jdeconv.unet import UNetConfig, init_unet
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> predict(make_predictor(graphdef), params, np.zeros((8, 8)), multiple=2).shape
      (8, 8)
    """
    run = (lambda a: _with_tta(net, params, a)) if tta else (lambda a: net(params, a))
    if tile_size is None or all(tile_size >= n for n in x.shape):
        return np.asarray(run(jnp.asarray(x, jnp.float32)), dtype=np.float32)
    halo = -(-halo // multiple) * multiple
    window = max(tile_size // multiple * multiple, 2 * halo + blend + multiple)
    # Mirror-pad the end to the size multiple, as whole-image inference does, so every
    # window starts on the pooling grid.
    padded = np.pad(x, [(0, (-n) % multiple) for n in x.shape], mode="symmetric")
    per_axis = [_windows(n, multiple, window, halo, blend) for n in padded.shape]
    out = np.zeros(padded.shape, dtype=np.float64)
    total = np.zeros(padded.shape, dtype=np.float64)
    for tiles in itertools.product(*per_axis):
        win = tuple(
            slice(w0, w0 + min(window, n)) for (w0, *_), n in zip(tiles, padded.shape, strict=True)
        )
        pred = np.asarray(run(jnp.asarray(padded[win], jnp.float32)), dtype=np.float64)
        core = tuple(slice(c0 - w0, c1 - w0) for w0, c0, c1, _ in tiles)
        weight = np.ones([c1 - c0 for _, c0, c1, _ in tiles])
        for axis, (*_, w) in enumerate(tiles):
            shape = [1] * x.ndim
            shape[axis] = len(w)
            weight = weight * w.reshape(shape)
        target = tuple(slice(c0, c1) for _, c0, c1, _ in tiles)
        out[target] += weight * pred[core]
        total[target] += weight
    return (out / total)[tuple(slice(0, n) for n in x.shape)].astype(np.float32)
