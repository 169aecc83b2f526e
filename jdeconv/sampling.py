"""Training on large images with bounded memory: the next steps' patches, read ahead.

Whole-array training standardises the image, copies it to the device and cuts random
patches from it, so its memory grows with the image. Above
:data:`BOUNDED_TRAINING_VOXELS` voxels, and always for a lazy (dask/Zarr) input,
:func:`jdeconv.fit` trains from a :class:`RegionSampler` instead. The regions it reads
are exactly the patches training will use:

1. **Statistics** (mean/std, or percentiles, and the range) are computed in one pass that
   reads the image a block at a time (:func:`jdeconv._checks.image_statistics`).
2. **Regions.** Where the patches of step ``t`` lie depends only on the run's key, the
   step and the shapes (``fold_in(key, t)``, then the per-patch keys of
   :func:`jdeconv.train.sample_patch`). So the sampler computes, on the host, the
   corners of every patch of the next ``refresh_every`` steps, reads those
   ``refresh_every × batch_size`` crops from the image (one ``dask.compute`` for a dask
   image, so a chunk is loaded once per read), standardises them to float32 and stacks
   them. The set for the steps after is read in a background thread while these train,
   so at most two sets are in memory.
3. **Patches.** The jitted train step takes its step's crops from the stack and applies
   :func:`jdeconv.train.sample_patch` to each with the patch's own key: on a crop of the
   patch's size the crop offset is 0 and the rotation/flip are those of whole-array
   training. Patches, masks, augmentations and held-out pixels are therefore the same as
   whole-array training with the same seed, and so are the losses up to float rounding of
   the statistics (``tests/test_scale.py`` checks it).
4. **Held-out pixels.** Model selection evaluates held-out pixels of a centre window of
   at most :data:`jdeconv.selection.VALIDATION_REGION` (where whole-array training
   evaluates them too). That window is read once and its pixels held out there only;
   every crop that overlaps the window takes the window's hidden values, so no held-out
   value reaches training. Whole-array training holds out the same pixels of the same
   window (:func:`jdeconv.stages.prepare`).

Memory is ``2 × refresh_every × batch_size × prod(patch)`` float32 values plus the
validation window, whatever the image's size: 5 MiB in 2D and 12 MiB in 3D with the
CPU defaults.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import is_dask_array
from .selection import VALIDATION_REGION, hold_out

__all__ = [
    "BOUNDED_TRAINING_VOXELS",
    "RegionSampling",
    "RegionSampler",
    "patch_corners",
    "use_regions",
]

#: ``fit`` trains from regions (not the whole array) above this many voxels (8.4 M, e.g.
#: 32×512×512 or 2896²); lazy inputs always use regions.
BOUNDED_TRAINING_VOXELS = 2**23


@dataclasses.dataclass(frozen=True)
class RegionSampling:
    """How :class:`RegionSampler` reads a large image for training (module docstring).

    Attributes:
      refresh_every: steps whose patches are read at once (the next set is read while
        they train); memory grows with it, the number of reads shrinks.

    Example:
      >>> RegionSampling(refresh_every=5).refresh_every
      5
    """

    refresh_every: int = 10

    def __post_init__(self):
        value = self.refresh_every
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"refresh_every must be an integer >= 1, got {value!r}.")


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


def patch_corners(key: jax.Array, steps, image_shape, patch_shape, *, batch_size: int):
    """The corners of the patches that the train step draws at ``steps``.

    The same draws as :func:`jdeconv.train.make_train_step` makes inside the step for an
    image of ``image_shape``: ``fold_in(key, step)``, the first ``batch_size`` of its
    ``2 * batch_size`` keys, and the crop key of :func:`jdeconv.train.sample_patch`.

    Returns:
      int array ``(len(steps), batch_size, ndim)``.

    Example:
      >>> patch_corners(jax.random.key(0), [0, 1], (40, 30), (8, 8), batch_size=3).shape
      (2, 3, 2)
    """
    highs = jnp.array([n - p + 1 for n, p in zip(image_shape, patch_shape, strict=True)])

    def one_step(step):
        step_key = jax.random.fold_in(key, step)
        patch_keys = jnp.split(jax.random.split(step_key, 2 * batch_size), 2)[0]
        crop_keys = jax.vmap(lambda k: jax.random.split(k, 3)[0])(patch_keys)
        return jax.vmap(lambda k: jax.random.randint(k, (len(image_shape),), 0, highs))(crop_keys)

    return np.asarray(jax.vmap(one_step)(jnp.asarray(steps, jnp.uint32)), dtype=np.int64)


class RegionSampler:
    """Reads the training data of a large image: the crops of the next steps' patches
    and a validation window (module docstring).

    Only :meth:`regions` and the constructor read pixels, each a patch-sized (or the
    validation window's) slice of ``image`` converted to NumPy and standardised as
    ``(image - offset) / scale`` in float64, stored as float32.

    Args:
      image: a 2D/3D array that slices to NumPy (NumPy, memory map, dask, Zarr).
      patch_shape: the training patch shape.
      offset, scale: the standardisation.
      key: the train step's key (``Prepared.train_key``).
      batch_size: patches per step.
      validation_key: the key of the held-out pixels (None: none held out).
      validation_fraction: the fraction held out in the validation window.
      settings: a :class:`RegionSampling`.

    Example:
      >>> image = np.random.default_rng(0).random((300, 200))
      >>> s = RegionSampler(image, (32, 32), offset=0.5, scale=0.3, key=jax.random.key(0),
      ...                   batch_size=4, settings=RegionSampling(refresh_every=5))
      >>> s.regions(0).shape
      (20, 32, 32)
    """

    def __init__(
        self,
        image,
        patch_shape,
        *,
        offset: float,
        scale: float,
        key: jax.Array,
        batch_size: int,
        validation_key: jax.Array | None = None,
        validation_fraction: float = 0.0,
        settings: RegionSampling | None = None,
    ):
        self.image = image
        self.shape = tuple(int(n) for n in image.shape)
        self.patch_shape = tuple(int(p) for p in patch_shape)
        self.settings = settings or RegionSampling()
        self.refresh_every = self.settings.refresh_every
        self.batch_size = int(batch_size)
        self.offset, self.scale = float(offset), float(scale)
        self.key = key
        self.window = tuple(
            slice((n - min(n, lim)) // 2, (n - min(n, lim)) // 2 + min(n, lim))
            for n, lim in zip(self.shape, VALIDATION_REGION[len(self.shape)], strict=True)
        )
        self._val = None
        if validation_key is not None and validation_fraction > 0:
            (x,) = self._read([self.window])
            x_train, held = hold_out(validation_key, jnp.asarray(x), fraction=validation_fraction)
            self._val = (np.asarray(x_train), x, np.asarray(held))
        self._pool = None

    @property
    def voxels(self) -> int:
        """Voxels of one set of crops (``refresh_every × batch_size`` patches)."""
        return self.refresh_every * self.batch_size * math.prod(self.patch_shape)

    def _read(self, slices_list) -> list[np.ndarray]:
        blocks = [self.image[tuple(s)] for s in slices_list]
        if is_dask_array(self.image):
            import dask

            blocks = dask.compute(*blocks)  # one graph: each chunk loaded once
        out = []
        for block in blocks:
            block = np.array(block, dtype=np.float64)
            block -= self.offset
            block /= self.scale
            out.append(block.astype(np.float32))
        return out

    def corners(self, refresh: int) -> np.ndarray:
        """``(refresh_every * batch_size, ndim)``: the patch corners of set ``refresh``,
        step by step (the steps ``refresh * refresh_every`` onwards)."""
        first = refresh * self.refresh_every
        steps = np.arange(first, first + self.refresh_every)
        corners = patch_corners(
            self.key, steps, self.shape, self.patch_shape, batch_size=self.batch_size
        )
        return corners.reshape(-1, len(self.shape))

    def regions(self, refresh: int) -> np.ndarray:
        """Set ``refresh``: the crops ``(refresh_every * batch_size, *patch_shape)`` in
        float32, held-out pixels hidden."""
        slices = [
            tuple(slice(int(c), int(c) + p) for c, p in zip(corner, self.patch_shape, strict=True))
            for corner in self.corners(refresh)
        ]
        crops = np.stack(self._read(slices))
        if self._val is not None:
            for crop, where in zip(crops, slices, strict=True):
                self._hide_held_out(crop, where)
        return crops

    def _hide_held_out(self, crop: np.ndarray, slices) -> None:
        # The overlap with the validation window takes the window's training values.
        overlap = [
            (max(s.start, w.start), min(s.stop, w.stop))
            for s, w in zip(slices, self.window, strict=True)
        ]
        if any(lo >= hi for lo, hi in overlap):
            return
        in_crop = tuple(
            slice(lo - s.start, hi - s.start) for (lo, hi), s in zip(overlap, slices, strict=True)
        )
        in_window = tuple(
            slice(lo - w.start, hi - w.start)
            for (lo, hi), w in zip(overlap, self.window, strict=True)
        )
        crop[in_crop] = self._val[0][in_window]

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
        """Stop the background reader (a read in progress finishes first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
