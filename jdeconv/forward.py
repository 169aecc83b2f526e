"""The PSF forward model ``g(z) = k * z`` and its adjoint, by FFT or direct convolution.

``make_forward(psf, shape)`` returns a :class:`ForwardModel`: a pure, jit-friendly
callable on one unbatched ``(*spatial)`` array (vmap it for a batch), with the exact
adjoint ``g.adjoint`` that Richardson-Lucy and gradient checks need.

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
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from jax import lax

from .psf import validate_psf

__all__ = ["ForwardModel", "make_forward", "auto_method", "METHODS", "PADDINGS"]

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
# Other backends (GPU, TPU): not measured here yet; we follow Papkov et al. 2023's GPU
# advice (FFT above N=25 in 2D and N=9 in 3D) until benchmarks/convolution.py is run there.
_AUTO_FFT_MIN_KERNEL_VOLUME = {
    "cpu": {2: 2, 3: 2},
    "default": {2: 25**2 + 1, 3: 9**3 + 1},
}


def auto_method(psf_shape, image_shape) -> str:
    """The method ``method="auto"`` picks for a PSF and image shape ("fft" or "direct").

    FFT from a kernel volume threshold per backend (``jax.default_backend()``) and rank on.
    CPU (measured): FFT for every PSF larger than one pixel. GPU/TPU (Papkov et al. 2023's
    advice, not yet measured here): FFT above 25x25 in 2D and 9x9x9 in 3D, by volume.
    """
    del image_shape  # Measured on CPU: the crossover does not move with the image size.
    table = _AUTO_FFT_MIN_KERNEL_VOLUME.get(
        jax.default_backend(), _AUTO_FFT_MIN_KERNEL_VOLUME["default"]
    )
    volume = math.prod(psf_shape)
    return "fft" if volume >= table.get(len(psf_shape), 1) else "direct"


@dataclasses.dataclass(frozen=True, eq=False)
class ForwardModel:
    """A linear blur operator on ``(*spatial)`` arrays of a fixed shape.

    Call it to blur (``g(z)``); ``g.adjoint(y)`` applies the exact transpose. Both are
    pure functions of their array argument and can be jitted, vmapped and differentiated.

    Attributes:
      psf: the normalised PSF (float32 numpy array).
      shape: the spatial shape it acts on.
      method: "fft" or "direct" (after resolving "auto").
      padding: "reflect", "zero" or "periodic".
    """

    psf: np.ndarray
    shape: tuple[int, ...]
    method: str
    padding: str
    _apply: Callable = dataclasses.field(repr=False)

    def __call__(self, z: jax.Array) -> jax.Array:
        if z.shape != self.shape:
            raise ValueError(
                f"forward model was built for shape {self.shape}, got {z.shape}; build one "
                "with make_forward(psf, shape) for this shape (or vmap over a batch axis)."
            )
        return self._apply(z)

    def adjoint(self, y: jax.Array) -> jax.Array:
        """Apply the transpose ``gᵀ`` (correlation with the PSF plus folded boundaries)."""
        (out,) = jax.linear_transpose(self._apply, jax.ShapeDtypeStruct(self.shape, y.dtype))(y)
        return out


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
    if any(k > n for k, n in zip(psf_shape, shape, strict=True)):
        raise ValueError(
            f"PSF shape {tuple(psf_shape)} is larger than the image {shape} on some axis; "
            "crop the PSF (its tails usually carry little mass) or use a larger image."
        )
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
    psf = validate_psf(psf)
    shape = _check_shape(shape, psf.shape)
    if method == "auto":
        method = auto_method(psf.shape, shape)
    half = tuple(k // 2 for k in psf.shape)
    pad_mode = _JNP_PAD_MODE[padding]

    def extend(z):
        return jnp.pad(z, [(h, h) for h in half], mode=pad_mode)

    if method == "fft":
        apply = _fft_apply(psf, shape, half, extend)
    else:
        apply = _direct_apply(psf, extend)
    return ForwardModel(psf=psf, shape=shape, method=method, padding=padding, _apply=apply)


def _fft_apply(psf: np.ndarray, shape, half, extend) -> Callable:
    # Extended image has n + 2h samples per axis; a circular convolution of that length or
    # more never wraps the 'same' window we keep, so pad only to the next fast length.
    ext = tuple(n + 2 * h for n, h in zip(shape, half, strict=True))
    fft_shape = tuple(scipy.fft.next_fast_len(e, real=True) for e in ext)
    axes = tuple(range(-len(shape), 0))
    # Kernel centre rolled to index 0, so output index m reads sum_j k[j] x[m + c - j].
    kernel = np.zeros(fft_shape, dtype=np.float64)
    kernel[tuple(slice(0, k) for k in psf.shape)] = psf
    kernel = np.roll(kernel, tuple(-h for h in half), axis=axes)
    otf = jnp.asarray(np.fft.rfftn(kernel, axes=axes).astype(np.complex64))
    window = tuple(slice(h, h + n) for h, n in zip(half, shape, strict=True))

    def apply(z):
        spectrum = jnp.fft.rfftn(extend(z), s=fft_shape, axes=axes)
        out = jnp.fft.irfftn(spectrum * otf, s=fft_shape, axes=axes)
        return out[window].astype(z.dtype)

    return apply


def _direct_apply(psf: np.ndarray, extend) -> Callable:
    flipped = jnp.asarray(np.flip(psf).copy())[None, None]
    ndim = psf.ndim

    def apply(z):
        out = lax.conv_general_dilated(
            extend(z)[None, None],
            flipped.astype(z.dtype),
            window_strides=(1,) * ndim,
            padding="VALID",
            precision=lax.Precision.HIGHEST,
        )
        return out[0, 0]

    return apply
