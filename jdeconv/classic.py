"""Classical deconvolution baselines in JAX: Richardson-Lucy, optionally with TV.

Richardson-Lucy (RL; Richardson 1972, Lucy 1974) is the multiplicative
maximum-likelihood iteration for Poisson data ``y ~ Poisson(g x)``::

    x_{k+1} = x_k * gᵀ(y / g x_k)

with ``g`` the blur of :func:`jdeconv.forward.make_forward` and ``gᵀ`` its exact adjoint
(for a PSF ``k`` and zero padding, correlation with ``k``, i.e. convolution with the
flipped PSF, exactly what ``skimage.restoration.richardson_lucy`` does). Noise is
amplified with every iteration, so the iteration count is the regulariser;
:func:`richardson_lucy_path` returns several counts from one run so a benchmark can pick
the best.

Optional total-variation regularisation follows Dey et al. 2006 ("Richardson-Lucy
algorithm with total variation regularization for 3D confocal microscope
deconvolution", Microsc. Res. Tech. 69:260-266)::

    x_{k+1} = x_k / (1 - lambda div(grad x_k / |grad x_k|)) * gᵀ(y / g x_k)

Everything runs as one jitted ``lax.fori_loop`` that takes the forward model as an
argument (a pytree), so it compiles once per image shape, method, padding and settings,
whatever the PSF and the iteration count.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._checks import check_image
from .forward import ForwardModel, make_forward
from .psf import validate_psf

__all__ = ["richardson_lucy", "richardson_lucy_path", "make_richardson_lucy"]

# |grad x| is smoothed as sqrt(|grad x|² + (_TV_EPS_REL * max|y|)²) so that flat regions
# (zero gradient) give a zero, not NaN, unit normal; relative to the data scale so the
# regularisation does not depend on the image's units.
_TV_EPS_REL = 1e-6


def _tv_weight_limit(ndim: int) -> float:
    # Each component of the unit normal field p = grad x / |grad x| is at most 1 in
    # magnitude and |p| <= 1, so |div p| <= 2 sum_a |p_a| <= 2 sqrt(ndim). Below this
    # weight the TV denominator 1 - lambda div p stays positive and the iterate
    # non-negative.
    return 1.0 / (2.0 * math.sqrt(ndim))


def _shift_forward(x: jax.Array, axis: int) -> jax.Array:
    """``x[i + 1] - x[i]`` along ``axis``, 0 at the last index (Neumann boundary)."""
    n = x.shape[axis]
    ahead = lax.concatenate(
        [lax.slice_in_dim(x, 1, n, axis=axis), lax.slice_in_dim(x, n - 1, n, axis=axis)],
        dimension=axis,
    )
    return ahead - x


def _shift_backward(p: jax.Array, axis: int) -> jax.Array:
    """``p[i] - p[i - 1]`` along ``axis`` with ``p[-1] = 0``: minus the adjoint of
    :func:`_shift_forward` for fields that vanish at the last index."""
    n = p.shape[axis]
    zero = jnp.zeros_like(lax.slice_in_dim(p, 0, 1, axis=axis))
    behind = lax.concatenate([zero, lax.slice_in_dim(p, 0, n - 1, axis=axis)], dimension=axis)
    return p - behind


def laplacian(x: jax.Array) -> jax.Array:
    """The Laplacian stencil of the Tikhonov regulariser (2·ndim centre, −1 neighbours,
    i.e. minus the second difference), mirror (symmetric) boundary: minus the divergence
    of the Neumann forward-difference gradient (the finite differences of the TV code).

    Example:
      >>> laplacian(jnp.arange(5.0) ** 2).tolist()  # x² has second difference 2
      [-1.0, -2.0, -2.0, -2.0, 7.0]
    """
    return -sum(_shift_backward(_shift_forward(x, axis), axis) for axis in range(x.ndim))


def _tv_curvature(x: jax.Array, smoothing) -> jax.Array:
    """``div(grad x / |grad x|)`` with forward differences and backward divergence."""
    grads = [_shift_forward(x, a) for a in range(x.ndim)]
    norm = jnp.sqrt(sum(g * g for g in grads) + jnp.square(smoothing))
    # norm is 0 only where all gradients are (an all-zero image): the normal field is 0.
    norm = jnp.where(norm > 0, norm, 1.0)
    return sum(_shift_backward(g / norm, a) for a, g in enumerate(grads))


def make_richardson_lucy(
    psf,
    shape,
    *,
    method: str = "fft",
    padding: str = "zero",
    eps: float = 1e-12,
    tv_weight: float = 0.0,
    boundary_correction: bool = False,
) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """The jitted Richardson-Lucy loop for one PSF and image shape.

    Returns ``run(image, estimate, iterations) -> estimate``: a pure, jitted function of
    float32 arrays of ``shape`` and an integer iteration count (traced, so different
    counts share one compilation). It can be called inside other jitted code. Loops for
    different PSFs of the same shape share one compilation too.
    :func:`richardson_lucy` is a validated, numpy-in/numpy-out wrapper around it.

    Args and the update are those of :func:`richardson_lucy`; ``psf`` must already sum
    to 1.

    Example:
      >>> from jdeconv.psf import gaussian_psf
      >>> run = make_richardson_lucy(gaussian_psf((5, 5), 1.0), (32, 32))
      >>> y = jnp.ones((32, 32))
      >>> run(y, y, 3).shape
      (32, 32)
    """
    eps, tv_weight = _check_settings(len(tuple(shape)), eps, tv_weight)
    g = make_forward(psf, shape, method=method, padding=padding)
    return functools.partial(
        _rl_run,
        g,
        eps=eps,
        tv_weight=tv_weight,
        boundary_correction=bool(boundary_correction),
    )


@functools.partial(jax.jit, static_argnames=("eps", "tv_weight", "boundary_correction"))
def _rl_run(
    g: ForwardModel,
    image: jax.Array,
    estimate: jax.Array,
    iterations,
    *,
    eps: float,
    tv_weight: float,
    boundary_correction: bool,
) -> jax.Array:
    """``iterations`` RL updates of ``estimate`` for ``image`` under the blur ``g``."""
    image = jnp.asarray(image, jnp.float32)
    estimate = jnp.asarray(estimate, jnp.float32)
    tv_smoothing = _TV_EPS_REL * jnp.max(jnp.abs(image))
    # gᵀ1: the fraction of each pixel's light that lands inside the image.
    sensitivity = g.adjoint(jnp.ones(g.shape, jnp.float32)) if boundary_correction else None

    def update(_, x):
        blurred = g(x)
        # Where the re-blurred estimate is (numerically) zero, so is the estimate under
        # the PSF's footprint; the ratio is set to 0 there instead of dividing by ~0
        # (FFT round-off can also make it slightly negative). Same rule as skimage's
        # filter_epsilon.
        positive = blurred > eps
        ratio = jnp.where(positive, image / jnp.where(positive, blurred, 1.0), 0.0)
        correction = g.adjoint(ratio)
        if sensitivity is not None:
            correction = correction / jnp.maximum(sensitivity, eps)
        if tv_weight > 0:
            # Dey et al. 2006; the denominator is positive below _tv_weight_limit.
            correction = correction / (1.0 - tv_weight * _tv_curvature(x, tv_smoothing))
        return x * correction

    return lax.fori_loop(0, iterations, update, estimate)


def _check_settings(ndim: int, eps, tv_weight) -> tuple[float, float]:
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}.")
    tv_weight = float(tv_weight)
    limit = _tv_weight_limit(ndim)
    if not (0 <= tv_weight < limit):
        raise ValueError(
            f"tv_weight must be in [0, {limit:.3f}) for a {ndim}D image (above it the TV "
            f"denominator can reach zero), got {tv_weight}; typical values are 0.001-0.01."
        )
    return eps, tv_weight


def _check_count(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n!r}.")
    return int(n)


def _prepare(image, psf, *, eps, tv_weight, init):
    image = check_image(image, allow_negative=False, dtype=np.float32)
    psf = validate_psf(psf, ndim=image.ndim, normalize=True)
    eps, tv_weight = _check_settings(image.ndim, eps, tv_weight)
    if init is None:
        # Any constant start gives the same iterates (RL's first step cancels it); the
        # image mean keeps the start in the data's units.
        start = np.full(image.shape, image.mean(), np.float32)
    elif np.ndim(init) == 0:
        value = float(init)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"a constant init must be positive and finite, got {init}.")
        start = np.full(image.shape, value, np.float32)
    else:
        start = np.asarray(init, np.float32)
        if start.shape != image.shape:
            raise ValueError(
                f"init has shape {start.shape}, the image {image.shape}; pass an array of "
                "the image's shape, a positive constant, or None."
            )
        if not np.all(np.isfinite(start)) or start.min() < 0:
            raise ValueError(
                "init must be finite and non-negative (RL keeps zeros at zero); "
                "e.g. np.clip(init, 1e-6, None)."
            )
    return image, psf, eps, tv_weight, start


def _finish(estimate, clip: bool) -> np.ndarray:
    out = np.asarray(estimate, dtype=np.float32)
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out


def richardson_lucy(
    image,
    psf,
    *,
    iterations: int = 10,
    method: str = "fft",
    padding: str = "zero",
    eps: float = 1e-12,
    tv_weight: float = 0.0,
    clip: bool = False,
    init=None,
    boundary_correction: bool = False,
) -> np.ndarray:
    """Richardson-Lucy deconvolution of a 2D or 3D image, optionally TV-regularised.

    Iterates ``x <- x * gᵀ(y / g x)`` (module docstring) with ``g`` the PSF blur, in
    float32 on the default JAX device. With ``padding="zero"``, ``eps`` as skimage's
    ``filter_epsilon`` and ``init=0.5`` it reproduces
    ``skimage.restoration.richardson_lucy(image, psf, num_iter=iterations, clip=False,
    filter_epsilon=eps)`` up to float32 rounding.

    Args:
      image: the blurred, noisy image, 2D (YX) or 3D (ZYX), finite, non-negative.
      psf: the PSF, same rank; odd-sized and centred, normalised to sum 1 here.
      iterations: number of RL iterations (0 returns the initial estimate).
      method: convolution method, "fft", "direct" or "auto" (see ``make_forward``).
      padding: boundary of the blur model: "zero" (as skimage and the papers'
        degradation), "reflect" or "periodic".
      eps: where the re-blurred estimate is at most ``eps`` the ratio ``y / g x`` is set
        to 0 instead of dividing by ~0.
      tv_weight: ``lambda`` of Dey et al. 2006 (0 = plain RL); typical 0.001-0.01, must
        be below ``1 / (2 sqrt(ndim))``.
      clip: clip the result to [0, 1] (skimage's ``clip=True`` clips to [-1, 1], the
        same for RL's non-negative output). Off by default: the output stays in the
        input's intensity scale.
      init: initial estimate: None (default) for the constant image mean, a positive
        constant (skimage uses 0.5), or a non-negative array of the image's shape. Any
        constant gives the same result up to rounding, since the first RL step cancels
        it.
      boundary_correction: divide each update by ``gᵀ1`` (the sensitivity, which is
        below 1 near the border for zero padding): the exact maximum-likelihood EM
        update (Shepp & Vardi 1982; Bertero & Boccacci 2005, A&A 437:369) that keeps
        border pixels from darkening. skimage does not do this.

    Returns:
      The deconvolved image, float32 numpy array of the image's shape.

    Raises:
      ValueError: naming the problem and the fix, for a bad image (rank, dtype, NaN/Inf,
        negative values), PSF (rank mismatch, even size, negative, NaN, larger than the
        image), iteration count, ``eps``, ``tv_weight`` or ``init``.

    Example:
      >>> from jdeconv.psf import gaussian_psf
      >>> psf = gaussian_psf((7, 7), 1.5)
      >>> image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
      >>> richardson_lucy(image, psf, iterations=5).shape
      (32, 32)
    """
    iterations = _check_count(iterations, "iterations")
    path = richardson_lucy_path(
        image,
        psf,
        iterations=[iterations],
        method=method,
        padding=padding,
        eps=eps,
        tv_weight=tv_weight,
        clip=clip,
        init=init,
        boundary_correction=boundary_correction,
    )
    return path[iterations]


def richardson_lucy_path(
    image,
    psf,
    *,
    iterations: Iterable[int] = (2, 5, 10, 20),
    method: str = "fft",
    padding: str = "zero",
    eps: float = 1e-12,
    tv_weight: float = 0.0,
    clip: bool = False,
    init=None,
    boundary_correction: bool = False,
) -> dict[int, np.ndarray]:
    """Richardson-Lucy estimates at several iteration counts from a single run.

    Runs to ``max(iterations)`` once, copying the estimate out at each requested count,
    so choosing the best count (e.g. by PSNR against a ground truth, as the papers' "RL
    n=2 / n=5" baselines do) costs no more than the longest run. Each estimate equals
    :func:`richardson_lucy` with that ``iterations`` and the same other arguments.

    Args:
      image: as :func:`richardson_lucy`.
      psf: as :func:`richardson_lucy`.
      iterations: the iteration counts wanted (non-negative integers, any order).
      method, padding, eps, tv_weight, clip, init, boundary_correction: as
        :func:`richardson_lucy`.

    Returns:
      A dict from iteration count (ascending) to the float32 numpy estimate.

    Raises:
      ValueError: as :func:`richardson_lucy`, or for an empty ``iterations``.

    Example:
      >>> from jdeconv.psf import gaussian_psf
      >>> image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
      >>> path = richardson_lucy_path(image, gaussian_psf((7, 7), 1.5), iterations=[1, 4])
      >>> sorted(path)
      [1, 4]
    """
    if isinstance(iterations, numbers.Integral):
        iterations = [iterations]
    counts = sorted({_check_count(n, "each of iterations") for n in iterations})
    if not counts:
        raise ValueError("iterations is empty; pass the counts wanted, e.g. [2, 5, 10].")
    image, psf, eps, tv_weight, start = _prepare(
        image, psf, eps=eps, tv_weight=tv_weight, init=init
    )
    run = make_richardson_lucy(
        psf,
        image.shape,
        method=method,
        padding=padding,
        eps=eps,
        tv_weight=tv_weight,
        boundary_correction=boundary_correction,
    )
    y = jnp.asarray(image)
    estimate = jnp.asarray(start)
    done = 0
    path = {}
    for n in counts:
        estimate = run(y, estimate, n - done)
        done = n
        path[n] = _finish(estimate, clip)
    return path


from .regularized import (  # noqa: E402, I001
    choose_rl_iterations,  # noqa: F401
    choose_sparsity,  # noqa: F401
    choose_weight,  # noqa: F401
    nonnegative_tikhonov,  # noqa: F401
    tikhonov,  # noqa: F401
    tikhonov_path,  # noqa: F401
    wiener,  # noqa: F401
)
