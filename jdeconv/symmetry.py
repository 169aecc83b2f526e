"""The rotations and flips that leave a PSF unchanged: training augmentation and TTA use
only those.

Augmenting a training patch, or averaging test-time copies, with a rotation or flip
``T`` assumes the blur commutes with it: ``h * T(x) = T(h * x)``, which holds when
``T(h) = h``. In-focus model PSFs (Gaussian, Airy, the SSI ring) have every symmetry of
the square; a 3D widefield PSF with spherical aberration (the Gibson-Lanni PSFs of
``../shared/data/psf``) is not symmetric along Z (its mass differs by 29-34 % from its Z
mirror image), so flipping Z shows the network data the forward model cannot explain,
and a flipped copy of an anchored network deconvolves with the wrong PSF.

A transform is ``(k, flips)``: ``rot90`` by ``k`` quarter turns in the YX plane (the
last two axes), then a flip of the axes in ``flips``. The candidates are the 8
symmetries of the square in 2D and those times a Z flip in 3D (16).

Example:
  >>> import numpy as np
  >>> len(psf_symmetries(np.ones((3, 5, 5)) / 75))
  16
  >>> tilted = np.zeros((3, 5, 5)); tilted[0, 2, 2], tilted[1, 2, 2] = 0.3, 0.7
  >>> sorted({flips for _, flips in psf_symmetries(tilted)})  # no Z flip
  [(), (1,)]
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Transform", "candidate_transforms", "psf_symmetries", "transform", "untransform"]

Transform = tuple[int, tuple[int, ...]]

#: A transform is a symmetry of the PSF when it moves at most this fraction of the PSF's
#: mass (L1 distance to the transformed PSF over the L1 norm). Model PSFs are symmetric
#: to rounding (0); a measured bead PSF is symmetric only up to its noise, which this
#: allows for; the Gibson-Lanni PSFs' Z asymmetry (0.29-0.34) is far above it.
SYMMETRY_TOLERANCE = 0.05


def candidate_transforms(ndim: int) -> tuple[Transform, ...]:
    """The 8 (2D) or 16 (3D) rotations/flips training and TTA draw from.

    Example:
      >>> candidate_transforms(2)[:3]
      ((0, ()), (0, (0,)), (1, ()))
    """
    flip_sets = [(), (0,)] if ndim == 2 else [(), (0,), (1,), (0, 1)]
    return tuple(itertools.product(range(4), flip_sets))


def transform(x, k: int, flips: tuple[int, ...]):
    """``rot90`` by ``k`` in the last two axes, then flip ``flips``; a NumPy array stays
    one (the PSF check on the host), a JAX array or tracer uses ``jax.numpy``."""
    xp = jnp if isinstance(x, jax.Array) else np
    y = xp.rot90(x, k, axes=(-2, -1))
    return xp.flip(y, flips) if flips else y


def untransform(y, k: int, flips: tuple[int, ...]):
    """The inverse of :func:`transform`."""
    y = jnp.flip(y, flips) if flips else y
    return jnp.rot90(y, -k, axes=(-2, -1))


def psf_symmetries(psf, *, tolerance: float = SYMMETRY_TOLERANCE) -> tuple[Transform, ...]:
    """The candidate transforms that leave ``psf`` unchanged (within ``tolerance``).

    Always contains the identity. Quarter turns need a square YX crop of the PSF.
    """
    h = np.asarray(psf, np.float64)
    norm = np.abs(h).sum()
    kept = []
    for k, flips in candidate_transforms(h.ndim):
        moved = transform(h, k, flips)
        if moved.shape == h.shape and np.abs(moved - h).sum() <= tolerance * norm:
            kept.append((k, flips))
    return tuple(kept)
