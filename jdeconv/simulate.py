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


# --------------------------------------------------------------------------- phantoms
# Contents for the quality benchmark (benchmarks/quality.py): sparse point sources,
# smooth textured blobs, and sharp-edged, text-like patterns — the cases where the
# default method and the classical baselines were seen to rank differently.

__all__ += ["puncta_2d", "puncta_3d", "nuclei_2d", "nuclei_3d", "edges_2d"]


def _check_shape(shape, ndim: int, name: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or any(s < 1 for s in shape):
        axes = "(Y, X)" if ndim == 2 else "(Z, Y, X)"
        raise ValueError(f"{name} needs a {ndim}D {axes} shape of positive sizes, got {shape}.")
    return shape


def _check_count(count, name: str = "count") -> int:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {count!r}.")
    return int(count)


def _check_range(values, name: str, *, low: float, high: float, positive: bool = False):
    lo, hi = (float(v) for v in values)
    if not (low <= lo <= hi <= high) or (positive and lo <= 0):
        bound = "0 <" if positive else f"{low} <="
        raise ValueError(
            f"{name} must be (low, high) with {bound} low <= high <= {high}, got {tuple(values)}."
        )
    return lo, hi


def _puncta(key, shape, *, count, sigma_range, intensity_range):
    count = _check_count(count)
    s_lo, s_hi = _check_range(sigma_range, "sigma_range", low=0.0, high=math.inf)
    b_lo, b_hi = _check_range(intensity_range, "intensity_range", low=0.0, high=1.0, positive=True)
    rng = _numpy_rng(key)
    image = np.zeros(shape)
    centres = np.stack([rng.integers(0, n, count) for n in shape], axis=-1)
    sigmas = rng.uniform(s_lo, s_hi, count)
    # Log-uniform brightness: a few bright sources among many dim ones, as with beads or
    # vesicles of a range of sizes and labelling densities.
    brightness = np.exp(rng.uniform(math.log(b_lo), math.log(b_hi), count))
    for centre, sigma, peak in zip(centres, sigmas, brightness, strict=True):
        if sigma < 0.3:  # narrower than a pixel: a single bright pixel
            image[tuple(centre)] += peak
            continue
        radius = int(math.ceil(3.5 * sigma))
        window = tuple(
            slice(max(c - radius, 0), min(c + radius + 1, n))
            for c, n in zip(centre, shape, strict=True)
        )
        grids = np.meshgrid(
            *[np.arange(w.start, w.stop) - c for w, c in zip(window, centre, strict=True)],
            indexing="ij",
            sparse=True,
        )
        image[window] += peak * np.exp(-0.5 * sum(g * g for g in grids) / sigma**2)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def puncta_2d(
    key,
    shape=(256, 256),
    *,
    count: int = 300,
    sigma_range=(0.0, 2.0),
    intensity_range=(0.25, 1.0),
) -> np.ndarray:
    """Sparse point sources ("beads", vesicles, single molecules) on a dark background.

    ``count`` Gaussian spots at uniform random pixel centres, each with a standard
    deviation drawn uniformly from ``sigma_range`` (below 0.3 px a spot is a single
    pixel) and a peak brightness drawn log-uniformly from ``intensity_range``; overlaps
    add and are clipped at 1. The background is exactly 0.

    Args:
      key: a ``jax.random`` key; the same key gives the same image.
      shape: (Y, X) size.
      count: number of spots.
      sigma_range: (low, high) spot standard deviation in pixels.
      intensity_range: (low, high) peak brightness, 0 < low <= high <= 1.

    Returns:
      float32 numpy array of ``shape`` with values in [0, 1].

    Example:
      >>> spots = puncta_2d(jax.random.key(0), (64, 64), count=10)
      >>> spots.shape, float(spots.min()), float(spots.max()) <= 1
      ((64, 64), 0.0, True)
    """
    shape = _check_shape(shape, 2, "puncta_2d")
    return _puncta(
        key, shape, count=count, sigma_range=sigma_range, intensity_range=intensity_range
    )


def puncta_3d(
    key,
    shape=(32, 128, 128),
    *,
    count: int = 300,
    sigma_range=(0.0, 2.0),
    intensity_range=(0.25, 1.0),
) -> np.ndarray:
    """The 3D version of :func:`puncta_2d`: isotropic Gaussian spots in a (Z, Y, X) volume.

    Example:
      >>> puncta_3d(jax.random.key(0), (8, 32, 32), count=5).shape
      (8, 32, 32)
    """
    shape = _check_shape(shape, 3, "puncta_3d")
    return _puncta(
        key, shape, count=count, sigma_range=sigma_range, intensity_range=intensity_range
    )


def _random_rotation(rng, ndim: int) -> np.ndarray:
    # QR of a Gaussian matrix, signs fixed, is a uniformly random orthogonal matrix.
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    return q * np.sign(np.diag(r))


def _nuclei(key, shape, *, count, radius_range, texture, edge_width):
    count = _check_count(count)
    r_lo, r_hi = _check_range(radius_range, "radius_range", low=0.0, high=math.inf, positive=True)
    texture = float(texture)
    if not (math.isfinite(texture) and 0 <= texture <= 1):
        raise ValueError(f"texture must be in [0, 1] (0: flat blobs), got {texture}.")
    edge_width = float(edge_width)
    if not (math.isfinite(edge_width) and edge_width > 0):
        raise ValueError(f"edge_width (pixels) must be > 0, got {edge_width}.")
    rng = _numpy_rng(key)
    ndim = len(shape)
    # Chromatin-like texture: smooth noise (correlation length ~1.5 px) of unit standard
    # deviation, shared by all blobs, modulating each blob's brightness.
    field = scipy.ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    field /= max(float(field.std()), 1e-12)
    modulation = np.clip(1.0 + 0.5 * texture * field, 0.0, None)
    image = np.zeros(shape)
    for _ in range(count):
        radius = rng.uniform(r_lo, r_hi)
        axes = radius * rng.uniform(0.6, 1.0, ndim)
        rotation = _random_rotation(rng, ndim)
        centre = rng.uniform(0, 1, ndim) * (np.asarray(shape) - 1)
        brightness = rng.uniform(0.3, 1.0)
        reach = axes.max() + 3 * edge_width
        window = tuple(
            slice(max(int(c - reach), 0), min(int(c + reach) + 2, n))
            for c, n in zip(centre, shape, strict=True)
        )
        if any(w.start >= w.stop for w in window):
            continue
        grids = np.meshgrid(
            *[np.arange(w.start, w.stop) - c for w, c in zip(window, centre, strict=True)],
            indexing="ij",
        )
        coords = np.stack(grids, axis=-1) @ rotation  # body frame of the ellipsoid
        distance = np.sqrt(np.sum((coords / axes) ** 2, axis=-1))
        # Soft edge: a logistic step of about edge_width pixels across the boundary.
        inside = 0.5 * (1.0 - np.tanh((distance - 1.0) * radius / edge_width))
        image[window] = np.maximum(image[window], brightness * inside * modulation[window])
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def nuclei_2d(
    key,
    shape=(256, 256),
    *,
    count: int = 12,
    radius_range=(10.0, 30.0),
    texture: float = 0.5,
    edge_width: float = 1.0,
) -> np.ndarray:
    """Nuclei-like blobs: smooth, randomly oriented ellipses with a chromatin texture.

    Each blob has a radius drawn from ``radius_range``, semi-axes of 0.6-1 times it, a
    random orientation and centre, a brightness Uniform(0.3, 1), and a soft edge about
    ``edge_width`` pixels wide; its interior is modulated by a smooth random texture
    (``1 + texture/2 · n``, ``n`` Gaussian noise smoothed over ~1.5 px, unit standard
    deviation). Where blobs overlap the brighter wins. Background 0.

    Args:
      key: a ``jax.random`` key; the same key gives the same image.
      shape: (Y, X) size.
      count: number of blobs.
      radius_range: (low, high) radius in pixels.
      texture: texture strength in [0, 1] (0: flat blobs).
      edge_width: width of the soft edge in pixels.

    Returns:
      float32 numpy array of ``shape`` with values in [0, 1].

    Example:
      >>> blobs = nuclei_2d(jax.random.key(0), (64, 64), count=3, radius_range=(5, 10))
      >>> blobs.shape, float(blobs.min()) >= 0, float(blobs.max()) <= 1
      ((64, 64), True, True)
    """
    shape = _check_shape(shape, 2, "nuclei_2d")
    return _nuclei(
        key, shape, count=count, radius_range=radius_range, texture=texture, edge_width=edge_width
    )


def nuclei_3d(
    key,
    shape=(32, 128, 128),
    *,
    count: int = 8,
    radius_range=(6.0, 16.0),
    texture: float = 0.5,
    edge_width: float = 1.0,
) -> np.ndarray:
    """The 3D version of :func:`nuclei_2d`: textured ellipsoids in a (Z, Y, X) volume.

    Example:
      >>> nuclei_3d(jax.random.key(0), (16, 32, 32), count=2, radius_range=(4, 6)).shape
      (16, 32, 32)
    """
    shape = _check_shape(shape, 3, "nuclei_3d")
    return _nuclei(
        key, shape, count=count, radius_range=radius_range, texture=texture, edge_width=edge_width
    )


# Seven-segment strokes plus two diagonals, in a unit glyph box (row, col from the top
# left, height 1, width 0.6): a glyph lights a random subset, which reads as text.
_GLYPH_STROKES = (
    ((0.0, 0.0), (0.0, 0.6)),  # top
    ((0.0, 0.6), (0.5, 0.6)),  # upper right
    ((0.5, 0.6), (1.0, 0.6)),  # lower right
    ((1.0, 0.0), (1.0, 0.6)),  # bottom
    ((0.5, 0.0), (1.0, 0.0)),  # lower left
    ((0.0, 0.0), (0.5, 0.0)),  # upper left
    ((0.5, 0.0), (0.5, 0.6)),  # middle
    ((0.0, 0.0), (1.0, 0.6)),  # diagonal
    ((1.0, 0.0), (0.0, 0.6)),  # other diagonal
)


def _draw_segment(image, start, end, width, value):
    """Paint a straight stroke ``width`` pixels wide (hard edges) between two points."""
    (y0, x0), (y1, x1) = start, end
    half = width / 2.0
    lo_y, hi_y = int(math.floor(min(y0, y1) - half)), int(math.ceil(max(y0, y1) + half))
    lo_x, hi_x = int(math.floor(min(x0, x1) - half)), int(math.ceil(max(x0, x1) + half))
    ny, nx = image.shape
    lo_y, hi_y, lo_x, hi_x = max(lo_y, 0), min(hi_y + 1, ny), max(lo_x, 0), min(hi_x + 1, nx)
    if lo_y >= hi_y or lo_x >= hi_x:
        return
    yy, xx = np.meshgrid(np.arange(lo_y, hi_y), np.arange(lo_x, hi_x), indexing="ij")
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(length2, 1e-12), 0.0, 1.0)
    distance = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
    patch = image[lo_y:hi_y, lo_x:hi_x]
    patch[distance <= half] = value


def edges_2d(
    key,
    shape=(256, 256),
    *,
    count: int = 14,
    background: float = 0.05,
) -> np.ndarray:
    """Sharp-edged, text-like test patterns: rectangles, frames, bar groups and glyphs.

    ``count`` elements are painted in turn (later ones cover earlier ones) on a constant
    ``background``, each of a brightness Uniform(0.3, 1) and with hard (pixel-aligned or
    rasterised) edges, chosen among: a filled rectangle (8-64 px sides); a rectangular
    frame (lines 1-3 px); a resolution-chart bar group (three bars of width 1-6 px,
    separated by their width, 5 widths long, horizontal or vertical, as on a USAF
    target); a line of 3-7 "glyphs" 8-24 px high with strokes 1-3 px wide, each
    lighting a random subset of seven-segment strokes and diagonals, so the line reads
    like text without any font.

    Args:
      key: a ``jax.random`` key; the same key gives the same image.
      shape: (Y, X) size.
      count: number of elements.
      background: background level in [0, 1].

    Returns:
      float32 numpy array of ``shape`` with values in [0, 1].

    Example:
      >>> edges = edges_2d(jax.random.key(0), (64, 64), count=4)
      >>> edges.shape, float(edges.min()) >= 0, float(edges.max()) <= 1
      ((64, 64), True, True)
    """
    shape = _check_shape(shape, 2, "edges_2d")
    count = _check_count(count)
    background = float(background)
    if not (math.isfinite(background) and 0 <= background <= 1):
        raise ValueError(f"background must be in [0, 1], got {background}.")
    rng = _numpy_rng(key)
    ny, nx = shape
    image = np.full(shape, background)
    kinds = ("rectangle", "frame", "bars", "glyphs")
    for _ in range(count):
        kind = kinds[rng.integers(len(kinds))]
        value = rng.uniform(0.3, 1.0)
        y, x = rng.uniform(0, ny), rng.uniform(0, nx)
        if kind in ("rectangle", "frame"):
            h, w = rng.uniform(8, 64, 2)
            y0, x0, y1, x1 = int(y), int(x), int(y + h), int(x + w)
            if kind == "rectangle":
                image[y0:y1, x0:x1] = value
            else:
                line = int(rng.integers(1, 4))
                for a, b in (
                    ((y0, x0), (y0, x1)),
                    ((y1, x0), (y1, x1)),
                    ((y0, x0), (y1, x0)),
                    ((y0, x1), (y1, x1)),
                ):
                    _draw_segment(image, a, b, line, value)
        elif kind == "bars":
            width = int(rng.integers(1, 7))
            length = 5 * width
            vertical = rng.random() < 0.5
            for i in range(3):
                offset = 2 * i * width
                y0, x0 = int(y), int(x) + offset
                if vertical:
                    image[y0 : y0 + length, x0 : x0 + width] = value
                else:
                    image[int(y) + offset : int(y) + offset + width, int(x) : int(x) + length] = (
                        value
                    )
        else:
            height = rng.uniform(8, 24)
            stroke = int(rng.integers(1, 4))
            for i in range(int(rng.integers(3, 8))):
                left = x + i * 0.9 * height
                lit = rng.random(len(_GLYPH_STROKES)) < 0.45
                lit[:7] |= ~lit[:7].any()  # never an empty glyph
                for (a, b), on in zip(_GLYPH_STROKES, lit, strict=True):
                    if on:
                        _draw_segment(
                            image,
                            (y + a[0] * height, left + a[1] * height),
                            (y + b[0] * height, left + b[1] * height),
                            stroke,
                            value,
                        )
    return np.clip(image, 0.0, 1.0).astype(np.float32)
