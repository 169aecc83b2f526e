"""Synthetic data: the papers' degradation model and a filament ("microtubules") phantom.

:func:`degrade` reproduces the benchmark degradation of Kobayashi et al. 2020 (SSI,
arXiv 2006.06156) and Papkov et al. 2023 (arXiv 2308.09426), in this order:

1. min-max normalise the clean image to [0, 1] (:func:`normalize_minmax`);
2. blur with the PSF, 'same' size, zero fill outside the image
   (``make_forward(psf, shape, padding="zero")``, equal to
   ``scipy.signal.convolve(x, psf, mode="same")``);
3. Poisson-Gaussian noise ``x + sqrt(alpha x + sigma²) N(0, 1)`` (alpha = 0.001,
   sigma = 0.1);
4. salt-and-pepper: each pixel independently, with probability ``salt_pepper`` (0.01),
   is replaced by a Uniform(0, 1) value;
5. quantise to ``bits`` bits (10): ``round(x (2^bits - 1)) / (2^bits - 1)``;
6. clip to [0, 1].

Steps 3-6 are :func:`add_noise`, a pure ``jnp`` function of a key and an array that can be
jitted and vmapped. Papkov et al. use the same noise without salt-and-pepper in 3D
(``salt_pepper=0``).

:func:`filaments_3d` (and :func:`filaments_2d`) draw a sparse phantom of smooth random
curves rendered as thin tubes with a Gaussian cross-section, like the synthetic
microtubules Papkov et al. deconvolve in 3D.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from ._checks import check_image
from .forward import ForwardModel, make_forward
from .psf import validate_psf

__all__ = [
    "normalize_minmax",
    "add_noise",
    "degrade",
    "filaments_3d",
    "filaments_2d",
]

# Arc length (pixels) over which filament turning is smoothed, see _filament_points.
_TURN_SMOOTHING = 4.0

# Largest bit depth whose levels float32 represents exactly (24-bit mantissa).
_MAX_BITS = 24


@jax.jit
def normalize_minmax(x) -> jax.Array:
    """Rescale an array linearly to [0, 1]: ``(x - min) / (max - min)``, as float32.

    Pure and jit-friendly; a constant array maps to zeros (there is no range to
    normalise by). :func:`degrade` rejects constant images instead.

    Example:
      >>> normalize_minmax(jnp.array([2.0, 3.0, 4.0])).tolist()
      [0.0, 0.5, 1.0]
    """
    x = jnp.asarray(x, dtype=jnp.float32)
    lo = jnp.min(x)
    hi = jnp.max(x)
    span = jnp.where(hi > lo, hi - lo, 1.0)
    return (x - lo) / span


def _is_concrete_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_noise_args(alpha, sigma, salt_pepper, bits) -> None:
    # Only Python numbers are checked, so add_noise still traces with array arguments.
    for name, v in (("alpha", alpha), ("sigma", sigma)):
        if _is_concrete_number(v) and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite and >= 0 (0 switches it off), got {v}.")
    if _is_concrete_number(salt_pepper) and not (0 <= salt_pepper <= 1):
        raise ValueError(
            f"salt_pepper is a fraction of pixels in [0, 1] (0 switches it off), got {salt_pepper}."
        )
    if bits is not None and (
        isinstance(bits, bool)
        or not isinstance(bits, numbers.Integral)
        or not 1 <= bits <= _MAX_BITS
    ):
        raise ValueError(
            f"bits must be an integer in [1, {_MAX_BITS}] or None (no quantisation), got {bits!r}."
        )


def add_noise(
    key,
    x,
    *,
    alpha=0.001,
    sigma=0.1,
    salt_pepper=0.01,
    bits: int | None = 10,
    clip: bool = True,
) -> jax.Array:
    """Poisson-Gaussian noise, salt-and-pepper, quantisation and clipping (steps 3-6).

    ``y = x + sqrt(max(alpha x + sigma², 0)) n`` with ``n ~ N(0, 1)`` per pixel (the
    variance is clipped at 0 so negative intensities do not give NaN); then each pixel,
    independently with probability ``salt_pepper``, is replaced by a Uniform(0, 1) value;
    then ``round(y (2^bits - 1)) / (2^bits - 1)``; then clip to [0, 1].

    A pure function: jit it with ``static_argnames=("bits",)``; ``alpha``, ``sigma``,
    ``salt_pepper`` and ``clip`` may be traced. Every step can be switched off (alpha =
    sigma = 0, salt_pepper = 0, bits = None, clip = False).

    Args:
      key: a ``jax.random`` key.
      x: the (blurred) image, any shape, intensities in [0, 1].
      alpha: Poisson (signal-dependent) variance factor.
      sigma: Gaussian read-noise standard deviation.
      salt_pepper: probability that a pixel is replaced by Uniform(0, 1).
      bits: quantisation bit depth, or None for none.
      clip: clip the result to [0, 1].

    Returns:
      A float32 array of ``x``'s shape.

    Example:
      >>> y = add_noise(jax.random.key(0), jnp.full((4, 4), 0.5))
      >>> y.shape, y.dtype
      ((4, 4), dtype('float32'))
    """
    _check_noise_args(alpha, sigma, salt_pepper, bits)
    return _noise_core(
        key,
        jnp.asarray(x, dtype=jnp.float32),
        alpha,
        sigma,
        salt_pepper,
        # Quantisation levels and clipping are traced too, so only the shape (and whether
        # to quantise at all) triggers a compilation.
        2.0**bits - 1.0 if bits is not None else 1.0,
        clip,
        quantize=bits is not None,
    )


# One compiled kernel per shape instead of one per primitive when called eagerly; inside
# a caller's jit this simply inlines.
@functools.partial(jax.jit, static_argnames=("quantize",))
def _noise_core(key, x, alpha, sigma, salt_pepper, levels, clip, *, quantize):
    key_gauss, key_mask, key_value = jax.random.split(key, 3)
    variance = jnp.maximum(alpha * x + jnp.square(sigma), 0.0)
    y = x + jnp.sqrt(variance) * jax.random.normal(key_gauss, x.shape, jnp.float32)
    replaced = jax.random.uniform(key_mask, x.shape) < salt_pepper
    y = jnp.where(replaced, jax.random.uniform(key_value, x.shape, jnp.float32), y)
    if quantize:
        y = jnp.round(y * levels) / levels
    y = jnp.where(clip, jnp.clip(y, 0.0, 1.0), y)
    return y.astype(jnp.float32)


@jax.jit
def _blur(g: ForwardModel, x: jax.Array) -> jax.Array:
    # The forward model is an argument (a pytree), so degradations of same-shaped images
    # compile the blur once, whatever the PSF.
    return g(x)


def degrade(
    key,
    clean,
    psf,
    *,
    alpha=0.001,
    sigma=0.1,
    salt_pepper=0.01,
    bits: int | None = 10,
    clip: bool = True,
    padding: str = "zero",
    normalize: bool = True,
    method: str = "auto",
) -> np.ndarray:
    """Degrade a clean image as in the SSI and Papkov et al. benchmarks (module docstring).

    Args:
      key: a ``jax.random`` key; the same key gives the same result.
      clean: the ground truth, 2D (YX) or 3D (ZYX).
      psf: the blur kernel (validated: odd, centred, non-negative, sum 1, same rank as
        ``clean``), or None to skip the blur.
      alpha: Poisson variance factor (0.001 in the papers).
      sigma: Gaussian noise standard deviation (0.1).
      salt_pepper: fraction of pixels replaced by Uniform(0, 1) (0.01 in 2D, 0 in 3D).
      bits: quantisation bit depth (10), or None.
      clip: clip the result to [0, 1].
      padding: boundary of the blur; "zero" (the papers', default), "reflect" or
        "periodic".
      normalize: min-max normalise ``clean`` to [0, 1] first (the papers do). Without it
        the image is used as it is and should already be in [0, 1].
      method: convolution method for the blur, "auto", "fft" or "direct".

    Returns:
      The degraded image as a float32 numpy array of ``clean``'s shape.

    Raises:
      ValueError: for a bad image (rank, NaN/Inf, constant with ``normalize``), a bad PSF,
        or out-of-range noise parameters.

    Example:
      >>> from jdeconv.psf import gaussian_psf
      >>> clean = np.random.default_rng(0).random((32, 32))
      >>> noisy = degrade(jax.random.key(0), clean, gaussian_psf((5, 5), 1.0))
      >>> noisy.shape, noisy.dtype
      ((32, 32), dtype('float32'))
    """
    arr = check_image(clean, name="clean image")
    _check_noise_args(alpha, sigma, salt_pepper, bits)
    if normalize and arr.max() == arr.min():
        raise ValueError(
            "clean image is constant and cannot be min-max normalised; pass "
            "normalize=False (and an image already in [0, 1])."
        )
    x = jnp.asarray(arr, dtype=jnp.float32)
    if normalize:
        x = normalize_minmax(x)
    if psf is not None:
        psf = validate_psf(psf, ndim=x.ndim)
        x = _blur(make_forward(psf, x.shape, method=method, padding=padding), x)
    y = add_noise(
        key,
        x,
        alpha=float(alpha),
        sigma=float(sigma),
        salt_pepper=float(salt_pepper),
        bits=None if bits is None else int(bits),
        clip=bool(clip),
    )
    return np.asarray(y, dtype=np.float32)


def _numpy_rng(key) -> np.random.Generator:
    """A numpy generator seeded by a ``jax.random`` key (one fixed-shape JAX call).

    The phantom draws many small arrays of shape-dependent sizes; drawing them with
    ``jax.random`` would compile a kernel for every new size.
    """
    seed = np.asarray(jax.random.bits(key, (4,), jnp.uint32))
    return np.random.default_rng(seed)


def _filament_points(rng, shape, *, count, step, persistence, axial_scale):
    """Sample ``count`` smooth random curves as points ``(count, 2 n, ndim)`` in pixels.

    Each curve starts at a uniform random point and grows in both directions as a
    persistent random walk: the unit tangent is perturbed by isotropic Gaussian noise and
    renormalised each step, with a per-step variance chosen so that tangents decorrelate
    as about ``exp(-s / persistence)`` along the arc length ``s`` (the noise is smoothed
    over a few pixels of arc so the curves have no kinks).
    """
    ndim = len(shape)
    extent = np.asarray(shape, dtype=np.float64)
    half_steps = int(math.ceil(float(np.linalg.norm(extent)) / step))
    starts = rng.random((count, ndim)) * (extent - 1)
    # Axis 0 is z for 3D: scaling its component keeps filaments closer to the YX planes,
    # as microtubules in flat cells are.
    scale = np.ones(ndim)
    if ndim == 3:
        scale[0] = axial_scale
    tangent = rng.standard_normal((count, ndim)) * scale
    tangent /= np.maximum(np.linalg.norm(tangent, axis=-1, keepdims=True), 1e-12)
    turn_std = math.sqrt(2.0 * step / ((ndim - 1) * persistence))
    turns = rng.standard_normal((2, half_steps, count, ndim))
    # White turning noise gives a rough, kinked curve. Smoothing it along the arc with a
    # unit-sum kernel removes the kinks below ~_TURN_SMOOTHING pixels while keeping its
    # low-frequency power, hence the persistence length.
    turns = scipy.ndimage.gaussian_filter1d(turns, _TURN_SMOOTHING / step, axis=1)
    turns *= turn_std * scale

    halves = []
    for sign, noise in ((1.0, turns[0]), (-1.0, turns[1])):
        position = starts.copy()
        direction = sign * tangent
        points = np.empty((half_steps, count, ndim))
        for i in range(half_steps):
            direction = direction + noise[i]
            direction /= np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-12)
            position = position + step * direction
            points[i] = position
        halves.append(points)
    # Backward half reversed, the start point, then the forward half: one ordered curve.
    curve = np.concatenate([halves[1][::-1], starts[None], halves[0]], axis=0)
    return np.transpose(curve, (1, 0, 2))


def _splat(points: np.ndarray, weights: np.ndarray, shape) -> np.ndarray:
    """Add ``weights`` at sub-pixel ``points`` (N, ndim) with linear interpolation."""
    ndim = len(shape)
    base = np.floor(points).astype(np.int64)
    frac = points - base
    out = np.zeros(math.prod(shape), dtype=np.float64)
    strides = np.array([math.prod(shape[i + 1 :]) for i in range(ndim)], dtype=np.int64)
    for corner in np.ndindex(*(2,) * ndim):
        offset = np.asarray(corner)
        idx = base + offset
        w = weights * np.prod(np.where(offset == 1, frac, 1.0 - frac), axis=-1)
        inside = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=-1)
        out += np.bincount(idx[inside] @ strides, weights=w[inside], minlength=out.size)
    return out.reshape(shape)


def _filaments(key, shape, *, count, thickness, persistence, intensity_range, axial_scale):
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"shape must have positive sizes, got {shape}.")
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}.")
    thickness = float(thickness)
    if not (math.isfinite(thickness) and thickness > 0):
        raise ValueError(
            f"thickness (Gaussian sigma of the tube profile, pixels) must be > 0, got {thickness}."
        )
    if not (math.isfinite(persistence) and persistence > 0):
        raise ValueError(f"persistence (pixels) must be > 0, got {persistence}.")
    lo, hi = (float(v) for v in intensity_range)
    if not (0 <= lo <= hi <= 1):
        raise ValueError(
            f"intensity_range must be (low, high) with 0 <= low <= high <= 1, got "
            f"{intensity_range}."
        )
    if not (math.isfinite(axial_scale) and axial_scale >= 0):
        raise ValueError(f"axial_scale must be >= 0, got {axial_scale}.")
    if count == 0:
        return np.zeros(shape, dtype=np.float32)

    rng = _numpy_rng(key)
    # Sample points much closer than the tube width so the splatted line looks continuous.
    step = min(0.5, thickness / 2)
    points = _filament_points(
        rng,
        shape,
        count=count,
        step=step,
        persistence=float(persistence),
        axial_scale=float(axial_scale),
    )
    brightness = lo + (hi - lo) * rng.random(count)
    weights = np.broadcast_to(brightness[:, None] * step, points.shape[:2])
    density = _splat(points.reshape(-1, ndim), weights.reshape(-1), shape)
    # A straight line of unit density blurred by an isotropic Gaussian has a peak of
    # 1 / (2 pi sigma²) in 3D (a 2D Gaussian cross-section), 1 / (sqrt(2 pi) sigma) in 2D;
    # rescale so each tube peaks at about its brightness. Crossings saturate at 1.
    peak = (2 * math.pi * thickness**2) if ndim == 3 else (math.sqrt(2 * math.pi) * thickness)
    image = scipy.ndimage.gaussian_filter(density, thickness, mode="constant") * peak
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def filaments_3d(
    key,
    shape=(64, 128, 128),
    *,
    count: int = 30,
    thickness: float = 1.0,
    persistence: float = 100.0,
    intensity_range=(0.5, 1.0),
    axial_scale: float = 0.5,
) -> np.ndarray:
    """A synthetic 3D "microtubules" phantom: smooth random curves drawn as thin tubes.

    Each filament is a persistent random walk through the volume (tangent correlation
    ``exp(-s / persistence)`` along the arc length ``s``), started at a uniform random
    voxel and grown in both directions until it leaves the volume. It is rendered by
    spreading its densely sampled points onto the grid and blurring with a Gaussian of
    standard deviation ``thickness``, so each tube has a Gaussian cross-section peaking
    at about the filament's brightness (Uniform in ``intensity_range``); overlaps are
    clipped at 1. Background is 0.

    Args:
      key: a ``jax.random`` key; the same key gives the same volume.
      shape: (Z, Y, X) size.
      count: number of filaments.
      thickness: Gaussian sigma of the tube profile in voxels.
      persistence: persistence length in voxels (larger: straighter filaments).
      intensity_range: (low, high) brightness range within [0, 1].
      axial_scale: factor on the z component of directions and turns; < 1 keeps
        filaments closer to the YX planes, 1 is isotropic.

    Returns:
      float32 numpy array of ``shape`` with values in [0, 1].

    Example:
      >>> vol = filaments_3d(jax.random.key(0), (16, 32, 32), count=4)
      >>> vol.shape, vol.dtype, float(vol.min()) >= 0, float(vol.max()) <= 1
      ((16, 32, 32), dtype('float32'), True, True)
    """
    if len(shape) != 3:
        raise ValueError(f"filaments_3d needs a 3D (Z, Y, X) shape, got {tuple(shape)}.")
    return _filaments(
        key,
        shape,
        count=count,
        thickness=thickness,
        persistence=persistence,
        intensity_range=intensity_range,
        axial_scale=axial_scale,
    )


def filaments_2d(
    key,
    shape=(256, 256),
    *,
    count: int = 20,
    thickness: float = 1.0,
    persistence: float = 100.0,
    intensity_range=(0.5, 1.0),
) -> np.ndarray:
    """The 2D version of :func:`filaments_3d`: smooth random curves as thin lines.

    Args:
      key: a ``jax.random`` key.
      shape: (Y, X) size.
      count: number of filaments.
      thickness: Gaussian sigma of the line profile in pixels.
      persistence: persistence length in pixels.
      intensity_range: (low, high) brightness range within [0, 1].

    Returns:
      float32 numpy array of ``shape`` with values in [0, 1].

    Example:
      >>> filaments_2d(jax.random.key(0), (32, 32), count=3).shape
      (32, 32)
    """
    if len(shape) != 2:
        raise ValueError(f"filaments_2d needs a 2D (Y, X) shape, got {tuple(shape)}.")
    return _filaments(
        key,
        shape,
        count=count,
        thickness=thickness,
        persistence=persistence,
        intensity_range=intensity_range,
        axial_scale=1.0,
    )
