"""Blind-spot masks and the replacement of masked pixels.

A mask is a boolean ``(*spatial)`` array marking the set ``J`` of pixels the network must
predict without seeing. Every function takes a ``jax.random`` key first, is pure and
works on one unbatched array; vmap it over keys for a batch of patches.

Defaults follow Noise2Same/Papkov et al. 2023 (DESIGN.md §3): a stratified mask with one
random pixel per box of side ``round((1/fraction)^(1/ndim))`` (fraction 0.5 % gives 14
in 2D and 6 in 3D), and masked pixels replaced by N(0, 0.2) in standardised units.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

__all__ = [
    "box_size",
    "stratified_mask",
    "bernoulli_mask",
    "replace_masked",
    "mask_and_replace",
    "MASK_KINDS",
    "REPLACEMENTS",
]

MASK_KINDS = ("stratified", "bernoulli")
REPLACEMENTS = ("noise", "zero", "local_mean")


def _check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"mask fraction must be in (0, 1), got {fraction}.")
    return fraction


def box_size(fraction: float, ndim: int) -> int:
    """Side of the box holding one masked pixel, so that about ``fraction`` are masked.

    Example:
      >>> box_size(0.005, 2), box_size(0.005, 3)
      (14, 6)
    """
    return max(1, round((1.0 / _check_fraction(fraction)) ** (1.0 / ndim)))


def stratified_mask(key: jax.Array, shape, *, fraction: float = 0.005) -> jax.Array:
    """One masked pixel at a uniformly random position inside each box of a regular grid.

    Boxes have side :func:`box_size`; boxes cut by the array border draw their position
    inside the part that lies in the array, so every box contributes exactly one pixel.

    Args:
      key: a ``jax.random`` key.
      shape: spatial shape (2 or 3 axes).
      fraction: target fraction of masked pixels.

    Returns:
      bool array of ``shape``.

    Example:
      >>> int(stratified_mask(jax.random.key(0), (28, 28), fraction=0.005).sum())
      4
    """
    shape = tuple(int(s) for s in shape)
    side = box_size(fraction, len(shape))
    counts = tuple(math.ceil(n / side) for n in shape)
    origins = jnp.meshgrid(*[jnp.arange(c) * side for c in counts], indexing="ij")
    keys = jax.random.split(key, len(shape))
    coords = []
    for axis_key, origin, n in zip(keys, origins, shape, strict=True):
        extent = jnp.minimum(side, n - origin)  # the part of the box inside the array
        offset = jax.random.randint(axis_key, origin.shape, 0, extent)
        coords.append((origin + offset).ravel())
    return jnp.zeros(shape, dtype=bool).at[tuple(coords)].set(True)


def bernoulli_mask(key: jax.Array, shape, *, fraction: float = 0.005) -> jax.Array:
    """Each pixel masked independently with probability ``fraction`` (as in SSI).

    Example:
      >>> bernoulli_mask(jax.random.key(0), (64, 64), fraction=0.1).dtype
      dtype('bool')
    """
    return jax.random.bernoulli(key, _check_fraction(fraction), tuple(shape))


def _local_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    # Mean of the unmasked pixels among the 3^ndim - 1 neighbours, the image mirrored at
    # its border. Masked neighbours are left out so that no masked value reaches the
    # replacement (otherwise a held-out pixel leaks into its neighbour's fill); a pixel
    # whose neighbours are all masked gets 0, the standardised mean.
    keep = (~mask).astype(x.dtype)
    values = jnp.pad(x * keep, 1, mode="symmetric")
    weights = jnp.pad(keep, 1, mode="symmetric")
    total = jnp.zeros_like(x)
    count = jnp.zeros_like(x)
    centre = (1,) * x.ndim
    for shift in itertools.product(range(3), repeat=x.ndim):
        if shift != centre:
            window = tuple(slice(s, s + n) for s, n in zip(shift, x.shape, strict=True))
            total = total + values[window]
            count = count + weights[window]
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def replace_masked(
    key: jax.Array,
    x: jax.Array,
    mask: jax.Array,
    *,
    replacement: str = "noise",
    noise_std: float = 0.2,
) -> jax.Array:
    """Return ``x`` with the pixels in ``mask`` replaced.

    Args:
      key: a ``jax.random`` key (used by ``"noise"`` only).
      x: standardised image, ``(*spatial)``.
      mask: bool array of the same shape.
      replacement: ``"noise"`` (N(0, noise_std), Noise2Same), ``"zero"`` (SSI), or
        ``"local_mean"`` (mean of the unmasked pixels among the 3^ndim - 1
        neighbours: no masked value reaches any replacement).
      noise_std: standard deviation for ``"noise"``, in standardised units.

    Example:
      >>> x = jnp.ones((4, 4))
      >>> mask = jnp.zeros((4, 4), bool).at[1, 1].set(True)
      >>> float(replace_masked(None, x, mask, replacement="zero")[1, 1])
      0.0
    """
    if replacement == "noise":
        fill = noise_std * jax.random.normal(key, x.shape, x.dtype)
    elif replacement == "zero":
        fill = jnp.zeros_like(x)
    elif replacement == "local_mean":
        fill = _local_mean(x, mask)
    else:
        raise ValueError(f"replacement must be one of {REPLACEMENTS}, got {replacement!r}.")
    return jnp.where(mask, fill, x)


def mask_and_replace(
    key: jax.Array,
    x: jax.Array,
    *,
    kind: str = "stratified",
    fraction: float = 0.005,
    replacement: str = "noise",
    noise_std: float = 0.2,
) -> tuple[jax.Array, jax.Array]:
    """Draw a mask for ``x`` and replace its pixels: returns ``(x_masked, mask)``.

    Example:
      >>> x = jnp.zeros((28, 28))
      >>> masked, mask = mask_and_replace(jax.random.key(0), x, fraction=0.005)
      >>> int(mask.sum())
      4
    """
    mask_key, fill_key = jax.random.split(key)
    if kind == "stratified":
        mask = stratified_mask(mask_key, x.shape, fraction=fraction)
    elif kind == "bernoulli":
        mask = bernoulli_mask(mask_key, x.shape, fraction=fraction)
    else:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}.")
    masked = replace_masked(fill_key, x, mask, replacement=replacement, noise_std=noise_std)
    return masked, mask
