"""Training on large images with bounded memory: patches from a few lazily read regions.

Whole-array training standardises the image, copies it to the device and cuts random
patches from it, so its memory grows with the image. Above
:data:`BOUNDED_TRAINING_VOXELS` voxels, and always for a lazy (dask/Zarr) input,
:func:`jdeconv.fit` trains from a :class:`RegionSampler` instead:

1. **Statistics** (mean/std, or percentiles, and the range) are computed in one pass that
   reads the image a block at a time (:func:`jdeconv._checks.image_statistics`).
2. **Regions.** ``regions`` blocks of ``region_factor`` × the patch shape per axis
   (clipped to the image) are read from the image at corners drawn uniformly at random,
   standardised to float32 and stacked into one ``(K, *region)`` array: the only image
   data training holds. Every ``refresh_every`` steps a new set is read (refresh ``r``
   draws its corners from ``fold_in(key, r)``), in a background thread while the
   current set trains, so at most two sets are in memory.
3. **Patches.** The jitted train step draws each patch's region uniformly
   (:func:`sample_region_patch`), then a uniform crop inside it and the usual
   rotation/flip, exactly as whole-array training crops the image.
4. **Held-out pixels.** Model selection evaluates held-out pixels of a centre window of
   at most :data:`jdeconv.selection.VALIDATION_REGION` (as whole-array training does).
   That window is read once and its pixels held out there only; every region that
   overlaps the window takes the window's hidden values over the overlap, so no held-out
   value ever reaches training.

Memory is then ``2 × K × prod(region)`` float32 values plus the validation window,
whatever the image's size (4 MiB of regions in 2D and 16 MiB in 3D with the default
sizes). A patch position is a uniform region corner plus a uniform offset inside the
region, so pixels within a region side of the image's edge are drawn a little less
often than in whole-array training; everything else (network, masks, losses, keys of
the masks and augmentations) is the same, and benchmarks/scale.py compares the two.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .selection import VALIDATION_REGION, hold_out

__all__ = [
    "BOUNDED_TRAINING_VOXELS",
    "RegionSampling",
    "RegionSampler",
    "sample_region_patch",
    "use_regions",
]

#: ``fit`` trains from regions (not the whole array) above this many voxels (8.4 M, e.g.
#: 32×512×512 or 2896²); lazy inputs always use regions.
BOUNDED_TRAINING_VOXELS = 2**23


@dataclasses.dataclass(frozen=True)
class RegionSampling:
    """How :class:`RegionSampler` reads a large image for training (module docstring).

    Attributes:
      regions: how many regions are held at a time (K); None: as many as fit in
        ``max_voxels``, between 2 and 64.
      region_factor: region side per axis as a multiple of the patch side (clipped to
        the image).
      refresh_every: steps between two reads of a new set of regions.
      max_voxels: voxels of one set of regions when ``regions`` is None.

    Example:
      >>> RegionSampling(refresh_every=5).region_shape((64, 64), (2048, 2048))
      (128, 128)
    """

    regions: int | None = None
    region_factor: int = 2
    refresh_every: int = 10
    max_voxels: int = 2**20

    def __post_init__(self):
        for name, minimum in (("region_factor", 1), ("refresh_every", 1), ("max_voxels", 1)):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Integral)
                or value < minimum
            ):
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        if self.regions is not None and (
            isinstance(self.regions, bool)
            or not isinstance(self.regions, numbers.Integral)
            or self.regions < 1
        ):
            raise ValueError(f"regions must be a positive integer or None, got {self.regions!r}.")

    def region_shape(self, patch_shape, image_shape) -> tuple[int, ...]:
        """The region shape for patches of ``patch_shape`` in an image of ``image_shape``."""
        return tuple(
            min(n, self.region_factor * p) for p, n in zip(patch_shape, image_shape, strict=True)
        )

    def count(self, region_shape) -> int:
        """K: the number of regions held at a time."""
        if self.regions is not None:
            return self.regions
        return int(min(64, max(2, self.max_voxels // math.prod(region_shape))))


def use_regions(image, sampling) -> bool:
    """Whether ``fit`` trains from regions: ``sampling`` says so, or (None) the image is
    lazy or larger than :data:`BOUNDED_TRAINING_VOXELS`.

    Example:
      >>> use_regions(np.zeros((64, 64)), None), use_regions(np.zeros((64, 64)), "regions")
      (False, True)
    """
    if sampling is None:
        return _is_lazy(image) or math.prod(np.shape(image)) > BOUNDED_TRAINING_VOXELS
    if sampling == "whole":
        return False
    if sampling == "regions" or isinstance(sampling, RegionSampling):
        return True
    raise ValueError(
        f"sampling must be None, 'whole', 'regions' or a RegionSampling, got {sampling!r}."
    )


def _is_lazy(image) -> bool:
    # dask arrays, zarr arrays and the like: anything that is not already in memory.
    return not isinstance(image, (np.ndarray, jax.Array, list, tuple, numbers.Number))


def sample_region_patch(key: jax.Array, regions: jax.Array, patch_shape, *, augment: bool = True):
    """One random patch from a stack of regions ``(K, *spatial)``: a uniform region, then
    a uniform crop and rotation/flip as :func:`jdeconv.train.sample_patch`.

    Example:
      >>> sample_region_patch(jax.random.key(0), jnp.zeros((3, 20, 24)), (8, 8)).shape
      (8, 8)
    """
    from .train import sample_patch

    pick_key, patch_key = jax.random.split(key)
    k = jax.random.randint(pick_key, (), 0, regions.shape[0])
    region = lax.dynamic_index_in_dim(regions, k, keepdims=False)
    return sample_patch(patch_key, region, patch_shape, augment=augment)


class RegionSampler:
    """Reads the training data of a large image: sets of regions and a validation window.

    Only :meth:`regions` and :meth:`validation` read pixels, each a bounded slice of
    ``image`` (``image[slices]`` converted to NumPy), standardised as
    ``(image - offset) / scale`` in float64 and stored as float32.

    Args:
      image: a 2D/3D array that slices to NumPy (NumPy, memory map, dask, Zarr).
      patch_shape: the training patch shape.
      offset, scale: the standardisation.
      key: the sampler's ``jax.random`` key (region corners).
      validation_key: the key of the held-out pixels (None: none held out).
      validation_fraction: the fraction held out in the validation window.
      settings: a :class:`RegionSampling`.

    Example:
      >>> image = np.random.default_rng(0).random((300, 200))
      >>> s = RegionSampler(image, (32, 32), offset=0.5, scale=0.3, key=jax.random.key(0),
      ...                   settings=RegionSampling(regions=4))
      >>> s.regions(0).shape
      (4, 64, 64)
    """

    def __init__(
        self,
        image,
        patch_shape,
        *,
        offset: float,
        scale: float,
        key: jax.Array,
        validation_key: jax.Array | None = None,
        validation_fraction: float = 0.0,
        settings: RegionSampling | None = None,
    ):
        self.image = image
        self.shape = tuple(int(n) for n in image.shape)
        self.settings = settings or RegionSampling()
        self.offset, self.scale = float(offset), float(scale)
        self.region_shape = self.settings.region_shape(patch_shape, self.shape)
        self.count = self.settings.count(self.region_shape)
        self.key = key
        self.refresh_every = self.settings.refresh_every
        self.window = tuple(
            slice((n - min(n, lim)) // 2, (n - min(n, lim)) // 2 + min(n, lim))
            for n, lim in zip(self.shape, VALIDATION_REGION[len(self.shape)], strict=True)
        )
        self._val = None
        if validation_key is not None and validation_fraction > 0:
            x = self._read(self.window)
            x_train, held_out = hold_out(
                validation_key, jnp.asarray(x), fraction=validation_fraction
            )
            self._val = (np.asarray(x_train), x, np.asarray(held_out))
        self._pool = None

    @property
    def voxels(self) -> int:
        """Voxels of one set of regions."""
        return self.count * math.prod(self.region_shape)

    def _read(self, slices) -> np.ndarray:
        block = np.array(self.image[tuple(slices)], dtype=np.float64)
        block -= self.offset
        block /= self.scale
        return block.astype(np.float32)

    def corners(self, refresh: int) -> np.ndarray:
        """The ``(K, ndim)`` region corners of set ``refresh`` (uniform over the image)."""
        highs = jnp.array([n - r + 1 for n, r in zip(self.shape, self.region_shape, strict=True)])
        keys = jax.random.split(jax.random.fold_in(self.key, refresh), self.count)
        starts = jax.vmap(lambda k: jax.random.randint(k, (len(self.shape),), 0, highs))(keys)
        return np.asarray(starts, dtype=np.int64)

    def regions(self, refresh: int) -> np.ndarray:
        """Set ``refresh`` of regions, ``(K, *region_shape)`` float32, held-out pixels hidden."""
        out = np.empty((self.count, *self.region_shape), np.float32)
        for i, corner in enumerate(self.corners(refresh)):
            slices = tuple(
                slice(int(c), int(c) + r) for c, r in zip(corner, self.region_shape, strict=True)
            )
            out[i] = self._read(slices)
            if self._val is not None:
                self._hide_held_out(out[i], slices)
        return out

    def _hide_held_out(self, region: np.ndarray, slices) -> None:
        # The overlap with the validation window takes the window's training values.
        overlap = [
            (max(s.start, w.start), min(s.stop, w.stop))
            for s, w in zip(slices, self.window, strict=True)
        ]
        if any(lo >= hi for lo, hi in overlap):
            return
        in_region = tuple(
            slice(lo - s.start, hi - s.start) for (lo, hi), s in zip(overlap, slices, strict=True)
        )
        in_window = tuple(
            slice(lo - w.start, hi - w.start)
            for (lo, hi), w in zip(overlap, self.window, strict=True)
        )
        region[in_region] = self._val[0][in_window]

    def validation(self):
        """``(x_train, x, held_out)`` of the validation window, or None without held-out
        pixels: the window with held-out pixels hidden, as read, and their mask."""
        return self._val

    def prefetch(self, refresh: int) -> concurrent.futures.Future:
        """Start reading set ``refresh`` in a background thread; ``.result()`` gives it."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="jdeconv-regions"
            )
        return self._pool.submit(self.regions, refresh)

    def close(self) -> None:
        """Stop the background reader (pending reads finish first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
