"""The PSF forward model ``g(z) = k * z`` and its adjoint, by FFT or direct convolution.

``make_forward(psf, shape)`` returns a :class:`ForwardModel`: a pure, jit-friendly
callable on one unbatched ``(*spatial)`` array (vmap it for a batch), with the exact
adjoint ``g.adjoint`` that Richardson-Lucy and gradient checks need.

A :class:`ForwardModel` is a value, a registered pytree: its PSF and transfer function
(OTF) are array leaves, its shape, method, padding and FFT size static fields. A jitted
function can therefore take ``g`` as an argument, and a new PSF of the same shape reuses
the compiled code. :func:`check_adjoint` tests ``<g x, y> = <x, gᵀ y>`` numerically.

Boundary handling ("padding") follows SciPy so results can be checked against it:

==========  ===========================================  ============================
padding     image is extended by                         SciPy reference
==========  ===========================================  ============================
"zero"      zeros                                        ``signal.convolve(mode="same")``
"reflect"   mirror, edge pixel repeated (d c b a|a b c d) ``ndimage.convolve(mode="reflect")``
"periodic"  wrap-around                                  ``ndimage.convolve(mode="wrap")``
==========  ===========================================  ============================

The FFT path pads the extended image to a fast FFT length (``scipy.fft.next_fast_len``),
multiplies by the PSF's transfer function (OTF, computed once per shape when the model is
built), and crops back to 'same'. The direct path uses ``lax.conv_general_dilated`` with
the kernel flipped (XLA's convolution is a cross-correlation) at highest precision.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from jax import lax

from ._checks import check_psf_fits
from .psf import validate_psf

__all__ = [
    "ForwardModel",
    "make_forward",
    "check_adjoint",
    "auto_method",
    "METHODS",
    "PADDINGS",
]

METHODS = ("fft", "direct", "auto")
PADDINGS = ("reflect", "zero", "periodic")
_JNP_PAD_MODE = {"zero": "constant", "reflect": "symmetric", "periodic": "wrap"}

# FFT is used from these kernel volumes (prod(psf.shape)) on, per backend and rank.
# CPU: measured by benchmarks/convolution.py (benchmarks/results/convolution-cpu.md).
# XLA's CPU convolution of a single-channel image is so slow (and worse in 3D) that FFT
# wins from 3x3 / 3x3x3 on at every image size measured (256^2, 1024^2 and 64x128x128 in
# the committed results; 16^2-128^2 and 8x16x16-32x64x64 in smaller runs), forward and
# backward (by 5-9x at 3x3 and 50-170x at 3x3x3, growing with the kernel); only a
# 1-pixel kernel is faster direct.
# GPU: measured by benchmarks/convolution.py --large on an NVIDIA H100
# (benchmarks/results/convolution-gpu.md). There every call of a small problem costs about
# 0.1 ms of launch overhead whatever the method; where the work shows, FFT is faster from
# 9x9 in 2D (1024^2 and 2048^2, forward and forward+backward; at 256^2 the two stay within
# 0.1 ms of each other up to 25x25) and from 5x5x5 in 3D (64x128x128; 3x3x3 already at
# 128x256x256). That is earlier than Papkov et al. 2023's advice (FFT above 25x25 in 2D,
# 9x9x9 in 3D), which they give for PyTorch; our direct path is XLA's convolution.
# Other backends (TPU, ROCm): not measured; we keep the papers' advice there.
_AUTO_FFT_MIN_KERNEL_VOLUME = {
    "cpu": {2: 2, 3: 2},
    "gpu": {2: 9**2, 3: 5**3},
    "default": {2: 25**2 + 1, 3: 9**3 + 1},
}


def auto_method(psf_shape, image_shape) -> str:
    """The method ``method="auto"`` picks for a PSF and image shape ("fft" or "direct").

    FFT from a kernel volume threshold per backend (``jax.default_backend()``) and rank on.
    CPU (measured): FFT for every PSF larger than one pixel. GPU (measured on an H100):
    FFT from 9x9 in 2D and 5x5x5 in 3D, by volume. Other backends (TPU; not measured):
    Papkov et al. 2023's advice, FFT above 25x25 in 2D and 9x9x9 in 3D.

    Example:
      >>> auto_method((17, 17), (256, 256)) in ("fft", "direct")
      True
    """
    del image_shape  # Measured on CPU: the crossover does not move with the image size.
    table = _AUTO_FFT_MIN_KERNEL_VOLUME.get(
        jax.default_backend(), _AUTO_FFT_MIN_KERNEL_VOLUME["default"]
    )
    volume = math.prod(psf_shape)
    return "fft" if volume >= table.get(len(psf_shape), 1) else "direct"


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["psf", "otf"],
    meta_fields=["shape", "method", "padding", "fft_shape"],
)
@dataclasses.dataclass(frozen=True, eq=False)
class ForwardModel:
    """A linear blur operator on ``(*spatial)`` arrays of a fixed shape.

    Call it to blur (``g(z)``); ``g.adjoint(y)`` applies the exact transpose and
    ``g.normal(z)`` the normal operator ``gᵀg``. All three are pure functions of their
    array argument and the model's fields, and can be jitted, vmapped and differentiated.

    The model is a pytree (``jax.tree_util.register_dataclass``): ``psf`` and ``otf`` are
    its leaves, the other fields static. Pass it to jitted functions as an argument: a
    model with another PSF of the same shape, method and padding reuses the compiled
    code. Build it with :func:`make_forward`, which validates the PSF and computes the
    OTF from it; replacing ``psf`` alone (e.g. with ``dataclasses.replace``) would leave
    the FFT path's ``otf`` stale.

    Attributes:
      psf: the normalised PSF, a float32 array (a leaf).
      otf: the PSF's transfer function on the padded FFT grid, complex64 of shape
        ``rfftn`` gives for ``fft_shape`` (a leaf); None for the direct method.
      shape: the spatial shape it acts on (static).
      method: "fft" or "direct", after resolving "auto" (static).
      padding: "reflect", "zero" or "periodic" (static).
      fft_shape: the fast FFT size of the extended image; None for the direct method
        (static).

    Example:
      >>> g = make_forward(np.full((3, 3), 1 / 9), (16, 16))
      >>> g.method, g.shape
      ('fft', (16, 16))
    """

    psf: jax.Array
    otf: jax.Array | None
    shape: tuple[int, ...]
    method: str
    padding: str
    fft_shape: tuple[int, ...] | None

    def __repr__(self) -> str:
        return (
            f"ForwardModel(psf.shape={tuple(self.psf.shape)}, shape={self.shape}, "
            f"method={self.method!r}, padding={self.padding!r}, fft_shape={self.fft_shape})"
        )

    def __call__(self, z: jax.Array) -> jax.Array:
        """Blur ``z`` (an array of ``self.shape``): ``g(z) = psf * z``, 'same' size."""
        if z.shape != self.shape:
            raise ValueError(
                f"forward model was built for shape {self.shape}, got {z.shape}; build one "
                "with make_forward(psf, shape) for this shape (or vmap over a batch axis)."
            )
        return self._apply(z)

    def adjoint(self, y: jax.Array) -> jax.Array:
        """Apply the transpose ``gᵀ`` (correlation with the PSF plus folded boundaries)."""
        if y.shape != self.shape:
            raise ValueError(
                f"forward model was built for shape {self.shape}, got {y.shape} for the "
                "adjoint; vmap over a batch axis."
            )
        # The transpose of the apply itself, so it is exact for every padding: the folded
        # boundary of "reflect" and "periodic" comes from transposing jnp.pad.
        (out,) = jax.linear_transpose(self._apply, jax.ShapeDtypeStruct(self.shape, y.dtype))(y)
        return out

    def normal(self, z: jax.Array) -> jax.Array:
        """Apply the normal operator ``gᵀ g`` (the Hessian of ``½‖g z − y‖²``)."""
        return self.adjoint(self(z))

    def _extend(self, z: jax.Array) -> jax.Array:
        half = [(k // 2, k // 2) for k in self.psf.shape]
        return jnp.pad(z, half, mode=_JNP_PAD_MODE[self.padding])

    def _apply(self, z: jax.Array) -> jax.Array:
        if self.method == "fft":
            return self._apply_fft(z)
        return self._apply_direct(z)

    def _apply_fft(self, z: jax.Array) -> jax.Array:
        axes = tuple(range(-len(self.shape), 0))
        spectrum = jnp.fft.rfftn(self._extend(z), s=self.fft_shape, axes=axes)
        out = jnp.fft.irfftn(spectrum * self.otf, s=self.fft_shape, axes=axes)
        window = tuple(
            slice(k // 2, k // 2 + n) for k, n in zip(self.psf.shape, self.shape, strict=True)
        )
        return out[window].astype(z.dtype)

    def _apply_direct(self, z: jax.Array) -> jax.Array:
        # XLA's convolution is a cross-correlation: flip the kernel to convolve.
        kernel = jnp.flip(self.psf).astype(z.dtype)[None, None]
        out = lax.conv_general_dilated(
            self._extend(z)[None, None],
            kernel,
            window_strides=(1,) * len(self.shape),
            padding="VALID",
            precision=lax.Precision.HIGHEST,
        )
        return out[0, 0]


def _check_shape(shape, psf_shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"image must be 2D (YX) or 3D (ZYX), got shape {shape}; remove channel/time axes."
        )
    if len(psf_shape) != len(shape):
        raise ValueError(
            f"PSF rank {len(psf_shape)} (shape {tuple(psf_shape)}) does not match image rank "
            f"{len(shape)} (shape {shape}); use a PSF with the image's dimensionality."
        )
    check_psf_fits(psf_shape, shape)
    return shape


def make_forward(psf, shape, *, method: str = "fft", padding: str = "reflect") -> ForwardModel:
    """Build the forward model ``g(z) = psf * z`` for arrays of ``shape``.

    Args:
      psf: a 2D/3D PSF, odd-sized, centred, non-negative, summing to 1 (validated).
      shape: spatial shape of the arrays ``g`` will act on (same rank as ``psf``).
      method: "fft", "direct", or "auto" (see :func:`auto_method`).
      padding: boundary extension, "reflect", "zero" or "periodic" (module docstring).

    Returns:
      A :class:`ForwardModel`; ``g(z)`` returns an array of ``shape``.

    Raises:
      ValueError: for an invalid PSF, a rank mismatch, a PSF larger than the image, or an
        unknown method/padding.

    Example:
      >>> g = make_forward(np.full((3, 3), 1 / 9), (32, 32))
      >>> g(jnp.ones((32, 32))).shape
      (32, 32)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}.")
    psf = validate_psf(psf, check_centre=False)  # an operator may blur with any kernel
    shape = _check_shape(shape, psf.shape)
    if method == "auto":
        method = auto_method(psf.shape, shape)
    otf = fft_shape = None
    if method == "fft":
        fft_shape = _fft_shape(psf.shape, shape)
        otf = jnp.asarray(_otf(psf, fft_shape))
    return ForwardModel(
        psf=jnp.asarray(psf),
        otf=otf,
        shape=shape,
        method=method,
        padding=padding,
        fft_shape=fft_shape,
    )


def _fft_shape(psf_shape, shape) -> tuple[int, ...]:
    # Extended image has n + 2h samples per axis; a circular convolution of that length or
    # more never wraps the 'same' window we keep, so pad only to the next fast length.
    return tuple(
        scipy.fft.next_fast_len(n + 2 * (k // 2), real=True)
        for k, n in zip(psf_shape, shape, strict=True)
    )


def _otf(psf: np.ndarray, fft_shape) -> np.ndarray:
    """The PSF's transfer function on ``fft_shape``, computed in float64, as complex64."""
    axes = tuple(range(-psf.ndim, 0))
    # Kernel centre rolled to index 0, so output index m reads sum_j k[j] x[m + c - j].
    kernel = np.zeros(fft_shape, dtype=np.float64)
    kernel[tuple(slice(0, k) for k in psf.shape)] = psf
    kernel = np.roll(kernel, tuple(-(k // 2) for k in psf.shape), axis=axes)
    return np.fft.rfftn(kernel, axes=axes).astype(np.complex64)


@jax.jit
def _blur_and_transpose(g, x, y):
    # One compilation per operator shape and kind, instead of one per primitive.
    return g(x), g.adjoint(y)


def check_adjoint(g: ForwardModel, key: jax.Array, *, rtol: float = 1e-4) -> float:
    """Check the adjoint identity ``<g x, y> = <x, gᵀ y>`` on random arrays.

    Draws ``x`` and ``y`` uniformly in [0, 1) (float32, of ``g.shape``) from ``key`` and
    returns the relative error ``|<g x, y> - <x, gᵀ y>| / |<g x, y>|``, the inner
    products summed in float64. Positive draws keep ``<g x, y>`` near ``N / 4`` (``N``
    pixels) rather than near 0, so the error measures float32 round-off (about 1e-7) and
    not the chance size of the denominator; a wrong transpose (unflipped PSF, boundary
    not folded) shows up at about ``1 / sqrt(N)`` or the border's share of the pixels,
    far above ``rtol``. The same check as scico's ``linop_adjoint_check`` and deepinv's
    ``adjointness_test``, for any operator with ``shape``, ``__call__`` and ``adjoint``.

    Args:
      g: the operator, e.g. from :func:`make_forward`.
      key: a ``jax.random`` key.
      rtol: the largest relative error accepted.

    Returns:
      The relative error, a Python float (at most ``rtol``).

    Raises:
      ValueError: if the error exceeds ``rtol`` (or is NaN), or ``rtol`` is not positive.

    Example:
      >>> g = make_forward(np.full((3, 3), 1 / 9), (16, 16), padding="periodic")
      >>> check_adjoint(g, jax.random.key(0)) < 1e-5
      True
    """
    rtol = float(rtol)
    if not (math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be positive and finite, got {rtol}.")
    # Drawn by numpy from a seed the key gives (one fixed-shape JAX call): drawing with
    # jax.random would compile a sampler for every operator shape.
    rng = np.random.default_rng(np.asarray(jax.random.bits(key, (4,), jnp.uint32)))
    x, y = rng.random((2, *g.shape), dtype=np.float32)
    if isinstance(g, ForwardModel):
        pair = _blur_and_transpose(g, x, y)
    else:  # Any other operator, called as it is.
        pair = g(jnp.asarray(x)), g.adjoint(jnp.asarray(y))
    gx, gty = (np.asarray(a, np.float64) for a in pair)
    lhs = np.vdot(gx, y.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), gty)
    error = float(abs(lhs - rhs) / (abs(lhs) + np.finfo(np.float64).tiny))
    if not error <= rtol:
        raise ValueError(
            f"adjoint identity fails: <g x, y> = {lhs:.9g} but <x, gᵀ y> = {rhs:.9g}, "
            f"relative error {error:.3g} > rtol {rtol:.3g}; gᵀ is not the transpose of g."
        )
    return error
