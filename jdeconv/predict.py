"""Inference: whole-image or tiled application of a trained network, with optional TTA.

Tiled inference cuts windows that start on the network's pooling grid, each a core plus
``halo`` pixels of context on every side; neighbouring cores overlap by ``blend`` pixels
and are blended with linear ramps (weights summing to one), so with a halo that covers the
receptive field the result equals the whole-image one to float rounding. The network sees
each window mirror-padded to its size multiple, exactly as for a whole image.
Test-time augmentation (TTA) averages the prediction over the rotations/flips used in
training (8 in 2D; 16 in 3D: rot90 in YX × flip Z × flip Y). The transformed copies go
through the network as batches, as many per call as ``max_batch`` (or a memory budget)
allows; when Y ≠ X the odd rotations swap the axes, so they form a batch of their own.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .unet import apply_network

__all__ = ["make_predictor", "predict"]

#: Test-time augmentation puts at most this many voxels in one network call unless
#: ``predict(max_batch=)`` says otherwise. The default network's float32 activations
#: take about 256 bytes per voxel in 2D and 780 in 3D (XLA's buffer assignment), so
#: 2**22 voxels is about 1 GiB (2D: all 8 copies of a 512² image at once) or 3 GiB (3D:
#: 32×128×128 in two calls of 8); larger images fall back to smaller groups, down to one
#: copy per call.
TTA_BATCH_VOXELS = 2**22


@functools.partial(jax.jit, static_argnums=0)
def _apply_one(graphdef, params, x):
    return apply_network(graphdef, params, x[None])[0]


@functools.partial(jax.jit, static_argnums=0)
def _apply_batch(graphdef, params, xs):
    return apply_network(graphdef, params, xs)


@dataclasses.dataclass(frozen=True)
class _Predictor:
    graphdef: object

    def __call__(self, params, x):
        return _apply_one(self.graphdef, params, x)

    def batch(self, params, xs):
        return _apply_batch(self.graphdef, params, xs)


def make_predictor(graphdef) -> Callable:
    """A jitted ``net(params, x)`` on one unbatched standardised array (any shape).

    ``net.batch(params, xs)`` runs a stack ``(B, *spatial)`` in one network call (what
    test-time augmentation uses). One compilation per network shape and input shape,
    shared by every predictor of the same network (the graph definition is a static
    argument of one jitted function).

    Example:
      >>> from jdeconv.unet import UNetConfig, init_unet
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> make_predictor(graphdef)(params, jnp.zeros((8, 8))).shape
      (8, 8)
    """
    return _Predictor(graphdef)


def _transforms(ndim: int):
    flip_sets = [(), (0,)] if ndim == 2 else [(), (0,), (1,), (0, 1)]
    return list(itertools.product(range(4), flip_sets))


def _forward(x, k, flips):
    y = jnp.rot90(x, k, axes=(-2, -1))
    return jnp.flip(y, flips) if flips else y


def _inverse(y, k, flips):
    y = jnp.flip(y, flips) if flips else y
    return jnp.rot90(y, -k, axes=(-2, -1))


@functools.partial(jax.jit, static_argnums=0)
def _transformed(transforms, x):
    return jnp.stack([_forward(x, k, flips) for k, flips in transforms])


@functools.partial(jax.jit, static_argnums=0)
def _inverse_sum(transforms, ys):
    return sum(_inverse(y, k, flips) for y, (k, flips) in zip(ys, transforms, strict=True))


def _tta_batch(n: int, size: int, max_batch: int | None) -> int:
    """Copies per network call: at most ``max_batch`` (default: the voxel budget), rounded
    down to a power of two so that every call of a group has one shape (one compilation)."""
    limit = max(1, TTA_BATCH_VOXELS // max(size, 1)) if max_batch is None else max_batch
    limit = max(1, min(n, limit))
    return 1 << (limit.bit_length() - 1)


def _with_tta(net: Callable, params, x: jax.Array, *, max_batch: int | None = None):
    transforms = _transforms(x.ndim)
    batch = _tta_batch(len(transforms), x.size, max_batch)
    total = jnp.zeros_like(x)
    if batch == 1 or not hasattr(net, "batch"):  # one call per copy
        for k, flips in transforms:
            total = total + _inverse(net(params, _forward(x, k, flips)), k, flips)
        return total / len(transforms)
    # Even and odd rotations give (…, Y, X) and (…, X, Y): one batch shape each.
    for parity in (0, 1):
        group = [t for t in transforms if t[0] % 2 == parity]
        for i in range(0, len(group), batch):
            chunk = tuple(group[i : i + batch])
            total = total + _inverse_sum(chunk, net.batch(params, _transformed(chunk, x)))
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
    max_batch: int | None = None,
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
      max_batch: with ``tta``, at most this many transformed copies per network call
        (rounded down to a power of two; 1: one call per copy); None: as many as fit in
        ``TTA_BATCH_VOXELS`` voxels. The result does not depend on it beyond float
        rounding.

    Returns:
      float32 numpy array of ``x.shape``.

    Example:
      >>> from jdeconv.unet import UNetConfig, init_unet
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> predict(make_predictor(graphdef), params, np.zeros((8, 8)), multiple=2).shape
      (8, 8)
    """
    if max_batch is not None and (
        isinstance(max_batch, bool) or not isinstance(max_batch, numbers.Integral) or max_batch < 1
    ):
        raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}.")
    if tta:
        run = functools.partial(_with_tta, net, params, max_batch=max_batch)
    else:
        run = functools.partial(net, params)
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
