"""Inference: whole-image or tiled application of a trained network, with optional TTA.

Tiled inference cuts windows that start on the network's pooling grid, each a core plus
``halo`` pixels of context on every side; neighbouring cores overlap by ``blend`` pixels
and are blended with linear ramps (weights summing to one), so with a halo that covers the
receptive field the result equals the whole-image one to float rounding. The network sees
each window mirror-padded to its size multiple, exactly as for a whole image.
Test-time augmentation (TTA) averages the prediction over the rotations/flips used in
training (at most 8 in 2D; 16 in 3D: rot90 in YX × flip Z × flip Y; a fitted model uses
only those that leave its PSF unchanged, :mod:`jdeconv.symmetry`). The transformed copies go
through the network as batches, as many per call as ``max_batch`` (or a memory budget)
allows; when Y ≠ X the odd rotations swap the axes, so they form a batch of their own.

Memory: the tile is chosen by :func:`choose_tile_size` from :func:`memory_budget` (a
share of the free accelerator memory or available RAM, or ``max_memory``) and an
estimate of the working memory per window pixel (:func:`tile_bytes_per_pixel`). Each
window is standardised on its own (float64, then float32), and because the per-axis
blend weights are normalised to sum to one, every tile's weighted core is added straight
into the float32 result: nothing full-size but the result is ever allocated.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .symmetry import candidate_transforms, transform, untransform
from .unet import apply_network, for_inference

__all__ = [
    "make_predictor",
    "predict",
    "memory_budget",
    "parse_bytes",
    "choose_tile_size",
    "tile_bytes_per_pixel",
    "fft_extension",
]

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


@functools.partial(jax.jit, static_argnums=0)
def _transformed(transforms, x):
    return jnp.stack([transform(x, k, flips) for k, flips in transforms])


@functools.partial(jax.jit, static_argnums=0)
def _inverse_sum(transforms, ys):
    return sum(untransform(y, k, flips) for y, (k, flips) in zip(ys, transforms, strict=True))


def _tta_batch(n: int, size: int, max_batch: int | None) -> int:
    """Copies per network call: at most ``max_batch`` (default: the voxel budget), rounded
    down to a power of two so that every call of a group has one shape (one compilation)."""
    limit = max(1, TTA_BATCH_VOXELS // max(size, 1)) if max_batch is None else max_batch
    limit = max(1, min(n, limit))
    return 1 << (limit.bit_length() - 1)


def _with_tta(net: Callable, params, x: jax.Array, *, transforms, max_batch: int | None = None):
    batch = _tta_batch(len(transforms), x.size, max_batch)
    total = jnp.zeros_like(x)
    if batch == 1 or not hasattr(net, "batch"):  # one call per copy
        for k, flips in transforms:
            total = total + untransform(net(params, transform(x, k, flips)), k, flips)
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
    (one per core pixel, > 0) ramp linearly over the overlaps with neighbouring cores and
    are normalised to sum to one at every position of the axis: the product of the
    per-axis weights of all the tiles covering a pixel then sums to one too, so weighted
    predictions can be added straight into the output, with no array of weight totals.
    """
    core = window - 2 * halo
    stride = core - blend
    starts = list(range(0, max(n - core, 0) + 1, stride))
    if starts[-1] + core < n:
        starts.append(n - core)
    out = []
    total = np.zeros(n)
    for i, c0 in enumerate(starts):
        c1 = min(c0 + core, n)
        w0 = min(max(0, (c0 - halo) // multiple * multiple), max(n - window, 0))
        weights = np.ones(c1 - c0)
        if i > 0 and (k := starts[i - 1] + core - c0) > 0:  # overlap with the previous core
            weights[:k] = (np.arange(k) + 0.5) / k
        if i + 1 < len(starts) and (k := c1 - starts[i + 1]) > 0:
            weights[-k:] = np.minimum(weights[-k:], 1 - (np.arange(k) + 0.5) / k)
        total[c0:c1] += weights
        out.append((w0, c0, c1, weights))
    return [(w0, c0, c1, w / total[c0:c1]) for w0, c0, c1, w in out]


def _read_window(x, window, offset: float, scale: float) -> np.ndarray:
    """``(x[window] - offset) / scale`` as float32, mirror-padded past the end of ``x``.

    ``window`` holds per-axis ``(start, stop)`` on ``x`` padded at the end to the size
    multiple; only this window is ever converted, in float64 as the whole-image
    standardisation was, so tiles and whole images see the same values.
    """
    inside = tuple(slice(w0, min(w1, n)) for (w0, w1), n in zip(window, x.shape, strict=True))
    tile = np.array(x[inside], dtype=np.float64)
    tile -= offset
    tile /= scale
    tile = tile.astype(np.float32)
    beyond = [(0, w1 - min(w1, n)) for (_, w1), n in zip(window, x.shape, strict=True)]
    return np.pad(tile, beyond, mode="symmetric") if any(b for _, b in beyond) else tile


def predict(
    net: Callable,
    params,
    x,
    *,
    multiple: int = 1,
    tile_size: int | None = None,
    halo: int = 64,
    blend: int = 16,
    tta=False,
    offset: float = 0.0,
    scale: float = 1.0,
    max_memory=None,
    bytes_per_pixel: int | None = None,
    max_batch: int | None = None,
    fft_extension=0,
) -> np.ndarray:
    """Apply ``net`` to ``(x - offset) / scale``, a ``(*spatial)`` array, whole or in tiles.

    Tiled inference is exact (equal to the whole-image result up to float rounding) when
    ``halo`` covers the network's receptive field and the network has no per-input
    statistics (``norm="none"``): every tile is predicted with ``halo`` pixels of context,
    cut on the pooling grid, and neighbouring tiles are blended linearly over ``blend``
    pixels.

    Memory: without ``tile_size`` the tile is the largest whose working memory
    (``bytes_per_pixel`` per window pixel) fits :func:`memory_budget` (``max_memory``),
    and the whole image when it fits. Only one window at a time is standardised (in
    float64, then float32); its blended core is added, weighted, into the float32 result
    (the per-axis blend weights sum to one, so nothing is divided at the end). Besides
    the result, memory stays O(one window) whatever the image size, and ``x`` may be any
    array that slices to NumPy (a memory map, a ``zarr.Array``).

    Args:
      net: from :func:`make_predictor`.
      params: network parameters.
      x: the image, in any real dtype (standardised here, a window at a time).
      multiple: the network's size multiple (``2**depth``).
      tile_size: tile (window) side per axis; None chooses it from the memory budget.
      halo: context on each side of a tile's core (rounded up to ``multiple``).
      blend: width of the linear blend between neighbouring cores.
      tta: average over rotations/flips: True for all of
        :func:`jdeconv.symmetry.candidate_transforms`, or a sequence of ``(k, flips)``
        transforms (:func:`jdeconv.symmetry.psf_symmetries` of the PSF: the ones that
        leave it unchanged), False for none.
      offset, scale: the standardisation, ``(x - offset) / scale``.
      max_memory: bytes (or a string like ``"2GB"``) one tile may use; None: a share of
        the free memory (:func:`memory_budget`).
      bytes_per_pixel: working memory per window pixel (:func:`tile_bytes_per_pixel`);
        None: an estimate for the default 3D network.
      fft_extension: what the network's anchor adds to a window before its FFTs
        (:func:`fft_extension`): the chosen tile prefers FFT-friendly sizes.
      max_batch: with ``tta``, at most this many transformed copies per network call
        (rounded down to a power of two; 1: one call per copy); None: as many as fit in
        ``TTA_BATCH_VOXELS`` voxels. The result does not depend on it beyond float
        rounding.

    Returns:
      float32 numpy array of ``x.shape``, in the standardised frame.

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
        transforms = candidate_transforms(x.ndim) if tta is True else tuple(tta)
        run = functools.partial(_with_tta, net, params, transforms=transforms, max_batch=max_batch)
    else:
        run = functools.partial(net, params)
    if tile_size is None:
        tile_size = choose_tile_size(
            x.shape,
            multiple=multiple,
            halo=halo,
            blend=blend,
            budget=memory_budget(max_memory=max_memory),
            bytes_per_pixel=bytes_per_pixel or _DEFAULT_BYTES_PER_PIXEL,
            fft_extension=fft_extension,
        )
    if tile_size is None or all(tile_size >= n for n in x.shape):
        whole = _read_window(x, [(0, n) for n in x.shape], offset, scale)
        return np.array(run(jnp.asarray(whole)), dtype=np.float32)  # writable, on the host
    halo = -(-halo // multiple) * multiple
    window = max(tile_size // multiple * multiple, 2 * halo + blend + multiple)
    # Windows are cut from x mirror-padded at the end to the size multiple, as the
    # whole-image inference pads it, so every window starts on the pooling grid.
    padded = [n + (-n) % multiple for n in x.shape]
    per_axis = [_windows(n, multiple, window, halo, blend) for n in padded]
    out = np.zeros(x.shape, dtype=np.float32)
    for tiles in itertools.product(*per_axis):
        spans = [(w0, w0 + min(window, n)) for (w0, *_), n in zip(tiles, padded, strict=True)]
        pred = np.asarray(run(jnp.asarray(_read_window(x, spans, offset, scale))), np.float32)
        # The part of the core inside x (the padding past its end is dropped).
        stops = [min(c1, n) for (_, _, c1, _), n in zip(tiles, x.shape, strict=True)]
        core = tuple(slice(c0 - w0, c1 - w0) for (w0, c0, *_), c1 in zip(tiles, stops, strict=True))
        contribution = np.array(pred[core])  # a writable copy of the core
        for axis, ((_, c0, *_, w), c1) in enumerate(zip(tiles, stops, strict=True)):
            shape = [1] * x.ndim
            shape[axis] = c1 - c0
            contribution *= w[: c1 - c0].astype(np.float32).reshape(shape)
        out[tuple(slice(c0, c1) for (_, c0, *_), c1 in zip(tiles, stops, strict=True))] += (
            contribution
        )
    return out


# ----------------------------------------------------------------------------- memory budget

# Working memory per window pixel of the U-Net's forward pass, in float32 values per base
# channel: XLA's ``memory_analysis()`` of the compiled predictor reports 4 (2D) and, in 3D,
# 12.3 (the "stacked" 3×3×3 convolution), 8.5 ("shifted", what inference uses) and 4.2
# ("native") on the CPU; 1.5x that leaves room for other backends.
_NETWORK_FLOATS_PER_CHANNEL = {"2d": 6, "stacked": 18, "shifted": 13, "native": 7}
# The anchor alone (UNetConfig.anchor_only): XLA reports about 32 bytes per pixel of the
# grid its FISTA runs on (the window extended by twice the PSF; 36 bytes per window pixel
# at 512² in 2D, 68 at 64×192² and 106 at 32×128² in 3D, where the extension is a larger
# share); 96 covers windows of 2× extension. With the host buffers below, one block's
# process peak was 95 bytes per voxel at 64×416² and 112–115 at 64×336² (3D, 17³ PSF).
_ANCHOR_BYTES_PER_PIXEL = 96
# Host-side buffers per window pixel: the raw tile as float64 while it is standardised,
# the float32 network input and prediction, and the weighted core.
_HOST_BYTES_PER_PIXEL = 24
_DEFAULT_BYTES_PER_PIXEL = 4 * 16 * 13 + _HOST_BYTES_PER_PIXEL  # base_channels=16, 3D
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_HOST_FRACTION = 0.125  # of the RAM available now
_DEVICE_FRACTION = 0.5  # of the accelerator memory free now


def parse_bytes(value) -> int:
    """Bytes from an int or a string such as ``"512MB"``, ``"2 GiB"`` or ``"1.5G"``.

    Units are binary (``"1GB"`` = ``2**30`` bytes), as memory is counted.

    Raises:
      ValueError: for a value that is not a positive size.

    Example:
      >>> parse_bytes("2GB"), parse_bytes(1024)
      (2147483648, 1024)
    """
    if isinstance(value, str):
        text = value.strip().upper().replace(" ", "").removesuffix("IB").removesuffix("B")
        number, unit = (text[:-1], text[-1]) if text[-1:].isalpha() else (text, "")
        try:
            size = float(number) * _UNITS[unit]
        except (KeyError, ValueError):
            raise ValueError(
                f"cannot read {value!r} as a memory size; write e.g. '512MB' or '2GB'."
            ) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        size = float(value)
    else:
        raise ValueError(f"a memory size must be bytes or a string like '2GB', got {value!r}.")
    if not np.isfinite(size) or size <= 0:
        raise ValueError(f"a memory size must be positive, got {value!r}.")
    return int(size)


def _available_host_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _free_device_memory() -> int | None:
    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # not every backend reports memory
        return None
    limit = stats.get("bytes_limit")
    return None if limit is None else int(limit) - int(stats.get("bytes_in_use", 0))


def memory_budget(*, max_memory=None) -> int:
    """Bytes that one tile of inference may use: ``max_memory``, or a share of what is free.

    Without ``max_memory``: half the free memory of the first accelerator (from
    ``jax.devices()[0].memory_stats()``), or on a CPU an eighth of the RAM available now
    (psutil when installed, else ``os.sysconf``), rounded down to a power of two, so
    that the tiles (and, with an anchor, whose iterations reach beyond any overlap, the
    last digits of the result: at most a few 1e-3 of the range) do not change with small
    changes of the free memory; 1 GiB if neither can be read. The
    budget bounds the working memory of one tile (network activations and tile buffers);
    the result array is extra (4 bytes per pixel).

    Example:
      >>> memory_budget(max_memory="64MB")
      67108864
    """
    if max_memory is not None:
        return parse_bytes(max_memory)
    free = _free_device_memory()
    if free is not None:
        return _power_of_two_below(free * _DEVICE_FRACTION)
    available = _available_host_memory()
    return _power_of_two_below(available * _HOST_FRACTION) if available else 2**30


def _power_of_two_below(size: float) -> int:
    """The largest power of two <= ``size`` (at least 1): a default budget that does not
    follow every change of the free memory, so neither do the tiles nor, with an anchor,
    the last digits of the result (2 GiB from an eighth of anything between 17.2 and
    34.3 GB free)."""
    return 1 << (max(int(size), 1).bit_length() - 1)


def tile_bytes_per_pixel(unet_cfg) -> int:
    """Estimated working memory of tiled inference per window pixel, in bytes, for the
    network as inference runs it (:func:`jdeconv.unet.for_inference`).

    Example:
      >>> from jdeconv.unet import UNetConfig
      >>> tile_bytes_per_pixel(UNetConfig(ndim=2, depth=2, base_channels=8))
      216
      >>> tile_bytes_per_pixel(UNetConfig(ndim=3, base_channels=16))
      856
      >>> tile_bytes_per_pixel(UNetConfig(ndim=3, anchor_shape=(9, 9, 9), anchor_only=True))
      120
    """
    unet_cfg = for_inference(unet_cfg)
    if unet_cfg.anchor_only:
        return _ANCHOR_BYTES_PER_PIXEL + _HOST_BYTES_PER_PIXEL
    layout = "2d" if unet_cfg.ndim == 2 else unet_cfg.conv3d
    floats = _NETWORK_FLOATS_PER_CHANNEL[layout] * unet_cfg.base_channels
    return 4 * floats + _HOST_BYTES_PER_PIXEL


def choose_tile_size(
    shape,
    *,
    multiple: int = 1,
    halo: int = 64,
    blend: int = 16,
    budget,
    bytes_per_pixel,
    fft_extension=0,
) -> int | None:
    """The largest tile (window side) whose working memory fits ``budget`` bytes.

    A window is clipped to the image on each axis (a 32-plane stack is tiled in YX only),
    so the search counts the pixels a window really holds. Returns None when the whole
    image fits (no tiling), and the smallest window tiling allows
    (``2 * halo + blend + multiple``) when even that does not fit.

    With ``fft_extension`` (per axis, or one number: the pixels the network's anchor adds
    to a window before its FFTs, :func:`fft_extension`), the window is the largest that
    fits and whose FFT grid has no prime factor above 7 on the tiled axes, if one is at
    least 3/4 of the largest that fits: FFTs of such sizes are several times faster
    (a 30×482×482 FFT took 3.3× as long as 30×480×480 here). The tile size changes the
    result only as tiling does: the network's part not at all beyond float rounding, a
    global anchor's slightly (16×1024², tiles of 448 vs 416: at most 2.2e-3 of the range).

    Example:
      >>> choose_tile_size((32, 1024, 1024), multiple=8, budget=2**30, bytes_per_pixel=1000)
      176
      >>> choose_tile_size((64, 64), multiple=8, budget=2**30, bytes_per_pixel=1000) is None
      True
    """
    padded = [n + (-n) % multiple for n in shape]
    if math.prod(padded) * bytes_per_pixel <= budget:
        return None
    halo = -(-halo // multiple) * multiple
    smallest = -(-(2 * halo + blend + multiple) // multiple) * multiple
    fitting = [smallest]
    for window in range(smallest + multiple, max(padded) + 1, multiple):
        if math.prod(min(window, n) for n in padded) * bytes_per_pixel > budget:
            break
        fitting.append(window)
    extension = np.broadcast_to(np.asarray(fft_extension, int), (len(padded),))
    if not extension.any():
        return fitting[-1]
    for window in reversed(fitting):
        if window < 0.75 * fitting[-1]:
            break
        if all(
            _fft_friendly(window + e) for n, e in zip(padded, extension, strict=True) if window < n
        ):
            return window
    return fitting[-1]


def _fft_friendly(n: int) -> bool:
    """Whether ``n`` has no prime factor above 7."""
    for p in (2, 3, 5, 7):
        while n % p == 0:
            n //= p
    return n == 1


def fft_extension(unet_cfg) -> tuple[int, ...]:
    """Pixels per axis that the network's anchor adds to its input before its FFTs: twice
    the PSF for a non-negative anchor (``project_tikhonov``'s grid), the filter's size
    less one for a linear one, none without an anchor.

    Example:
      >>> from jdeconv.unet import UNetConfig
      >>> fft_extension(UNetConfig(ndim=2, anchor_shape=(9, 9)))
      (8, 8)
      >>> fft_extension(UNetConfig(ndim=2))
      (0, 0)
    """
    if unet_cfg.anchor_psf_shape:
        return tuple(2 * k for k in unet_cfg.anchor_psf_shape)
    if unet_cfg.anchor_shape:
        return tuple(k - 1 for k in unet_cfg.anchor_shape)
    return (0,) * unet_cfg.ndim
