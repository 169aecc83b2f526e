"""A small Flax NNX U-Net for 2D and 3D images, channels-last.

``UNet(UNetConfig(ndim=2), rngs=nnx.Rngs(0))`` maps ``(B, *spatial, 1)`` to
``(B, *spatial, 1)``. Each level has two 3^ndim convolutions (optionally a residual
block), GroupNorm or no normalisation (there are no batch statistics to carry), and a
LeakyReLU; downsampling is 2× average pooling, upsampling is nearest-neighbour followed by
a convolution, and skips are concatenated. Inputs whose sizes are not a multiple of
``2**depth`` are mirror-padded and the output cropped back, so any size works.

Parameter counts (``count_params``) for the defaults, ``base_channels=16, depth=3``:
2D 0.56 M, 3D 1.63 M. The SSI paper used 8 base channels and 4 levels (~0.55 M);
Papkov et al. 96 base channels and depth 3 (~5.75 M) on a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .regularized import project_tikhonov

__all__ = [
    "UNetConfig",
    "UNet",
    "Anchor",
    "anchor_filter",
    "set_anchor",
    "abstract_unet",
    "for_inference",
    "init_unet",
    "apply_network",
    "count_params",
]


#: The ways a 3×3×3 convolution can run (``UNetConfig.conv3d``); same parameters.
CONV3D = ("stacked", "shifted", "native")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Shape of the network.

    Attributes:
      ndim: 2 or 3 spatial dimensions.
      depth: number of 2× downsamplings.
      base_channels: channels at the first level, doubled at every level below.
      norm: "group" (GroupNorm) or "none".
      groups: GroupNorm groups (must divide the channel counts).
      residual: residual blocks (a 1×1 projection on the skip when channels change).
      negative_slope: LeakyReLU slope.
      conv3d: how 3×3×3 convolutions run: "stacked" (the three z-shifted slabs stacked on
        the channel axis, then one 2D convolution: 3–4× faster forward+backward than XLA's
        3D convolution on CPU, see benchmarks/results/train_step-cpu.md), "shifted" (one
        2D convolution of every plane to ``3·Cout`` channels, whose three parts are
        summed z-shifted: no 3× copy of the input, so about 30 % less working memory and
        no slower in inference, but 1.7× slower forward+backward on CPU; what
        :func:`for_inference` picks) or "native" (``lax.conv_general_dilated`` in 3D).
        Same parameters, same result to float rounding.
      dtype: "float32" or "bfloat16": the dtype of convolutions and activations
        (parameters stay float32; :func:`apply_network` returns float32).
      anchor_shape: the shape of a fixed linear filter added to the output (empty: none):
        the network computes ``anchor * x + U(x)``, with the filter a :class:`Anchor`
        parameter that training never changes (:func:`set_anchor` fills it; ``jdeconv.fit``
        puts the Tikhonov deconvolution filter there, see ``NetworkConfig.anchor``).
      anchor_psf_shape: with an anchor, the shape of the PSF (empty: none) of a
        non-negative anchor: the anchor is then ``anchor_iterations`` steps of projected
        FISTA for ``min ½‖y − h * x‖² + ½ anchor_weight ‖Δx‖²
        + anchor_sparsity Σ (x − anchor_lower)`` subject to ``x >= anchor_lower``
        (:func:`jdeconv.regularized.project_tikhonov`), started from the linear
        Tikhonov solution as :func:`jdeconv.regularized.nonnegative_tikhonov` is, with
        the PSF a second fixed :class:`Anchor` parameter, ``anchor_psf`` (the filter then
        only records the anchor's reach for tiling).
      anchor_weight, anchor_lower, anchor_iterations, anchor_sparsity: that problem's λ,
        bound (in the network's standardised units), step count and ℓ1 weight.
      anchor_only: the anchor without the U-Net branch: the network of a model whose
        branch is exactly zero (its head's weights and bias all zero, as ``jdeconv.fit``'s
        step 0), whose output is then the anchor's alone. For inference only
        (:class:`jdeconv.FittedModel` picks it): it holds the anchor's parameters only,
        and its receptive field is the anchor's reach instead of the U-Net's.

    Example:
      >>> UNetConfig(ndim=3, depth=2).multiple
      4
    """

    ndim: int = 2
    depth: int = 3
    base_channels: int = 16
    norm: str = "group"
    groups: int = 8
    residual: bool = True
    negative_slope: float = 0.1
    conv3d: str = "stacked"
    dtype: str = "float32"
    anchor_shape: tuple[int, ...] = ()
    anchor_psf_shape: tuple[int, ...] = ()
    anchor_weight: float = 0.0
    anchor_lower: float = 0.0
    anchor_iterations: int = 50
    anchor_sparsity: float = 0.0
    anchor_only: bool = False

    def __post_init__(self):
        if self.ndim not in (2, 3):
            raise ValueError(f"UNet ndim must be 2 or 3, got {self.ndim}.")
        for name in ("anchor_shape", "anchor_psf_shape"):
            shape = tuple(getattr(self, name))
            if shape and (len(shape) != self.ndim or any(k < 1 or k % 2 == 0 for k in shape)):
                raise ValueError(f"{name} must be {self.ndim} odd sizes (or empty), got {shape}.")
            object.__setattr__(self, name, tuple(int(k) for k in shape))
        if self.anchor_psf_shape and not self.anchor_shape:
            raise ValueError("anchor_psf_shape needs an anchor filter (anchor_shape).")
        if self.anchor_only and not self.anchor_shape:
            raise ValueError("anchor_only needs an anchor filter (anchor_shape).")
        if self.anchor_psf_shape and not self.anchor_weight > 0:
            raise ValueError(f"anchor_weight must be > 0, got {self.anchor_weight}.")
        if self.anchor_iterations < 0:
            raise ValueError(f"anchor_iterations must be >= 0, got {self.anchor_iterations}.")
        if not self.anchor_sparsity >= 0:
            raise ValueError(f"anchor_sparsity must be >= 0, got {self.anchor_sparsity}.")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"UNet depth must be between 1 and 6, got {self.depth}.")
        if self.base_channels < 1:
            raise ValueError(f"base_channels must be positive, got {self.base_channels}.")
        if self.conv3d not in CONV3D:
            raise ValueError(f"conv3d must be one of {CONV3D}, got {self.conv3d!r}.")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")
        if self.norm not in ("group", "none"):
            raise ValueError(f"norm must be 'group' or 'none', got {self.norm!r}.")
        if self.norm == "group" and self.base_channels % self.groups:
            raise ValueError(
                f"base_channels ({self.base_channels}) must be a multiple of groups "
                f"({self.groups}) for GroupNorm; change one of them or use norm='none'."
            )

    @property
    def multiple(self) -> int:
        """Spatial sizes are padded to a multiple of this."""
        return 2**self.depth


class _StackedConv3d(nnx.Module):
    """3×3×3 'SAME' convolution computed with 2D convolutions over the z planes.

    ``out[z] = sum_dz conv2d(x[z + dz - 1], w[dz])``, in one of two ways (``shifted``):

    - stacked (False): the three shifted slabs are concatenated on the channel axis and
      convolved with the kernel reshaped to ``(3, 3, 3·Cin, Cout)``. Fastest with its
      gradient (training), but it holds a 3× copy of the input.
    - shifted (True): every zero-padded plane is convolved once with the kernel reshaped to
      ``(3, 3, Cin, 3·Cout)`` and the three ``Cout`` parts are summed, each shifted by
      its ``dz``. No input copy: inference with less memory.

    Parameters have the layout of ``nnx.Conv`` (DHWIO), float32; input, kernel and bias
    are cast to ``dtype`` as ``nnx.Conv`` does.
    """

    def __init__(
        self, cin: int, cout: int, *, dtype=jnp.float32, shifted: bool = False, rngs: nnx.Rngs
    ):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, 3, cin, cout)))
        self.bias = nnx.Param(jnp.zeros((cout,)))
        self.dtype = dtype
        self.shifted = shifted

    def __call__(self, x):
        x = x.astype(self.dtype)
        b, z, y, w, c = x.shape
        padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
        kernel = self.kernel[...].astype(self.dtype)  # (dz, dy, dx, Cin, Cout)
        cout = kernel.shape[-1]
        numbers = ("NHWC", "HWIO", "NHWC")
        if self.shifted:
            kernel = jnp.transpose(kernel, (1, 2, 3, 0, 4)).reshape(3, 3, c, 3 * cout)
            planes = padded.reshape(b * (z + 2), y, w, c)
            parts = jax.lax.conv_general_dilated(
                planes, kernel, (1, 1), "SAME", dimension_numbers=numbers
            )
            parts = parts.reshape(b, z + 2, y, w, 3, cout)
            out = sum(parts[:, dz : dz + z, :, :, dz] for dz in range(3))
        else:
            slabs = jnp.concatenate([padded[:, dz : dz + z] for dz in range(3)], axis=-1)
            kernel = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(3, 3, 3 * c, cout)
            out = jax.lax.conv_general_dilated(
                slabs.reshape(b * z, y, w, 3 * c), kernel, (1, 1), "SAME", dimension_numbers=numbers
            ).reshape(b, z, y, w, cout)
        return out + self.bias[...].astype(self.dtype)


def _dtype(cfg: UNetConfig):
    return jnp.dtype(cfg.dtype)


def _conv(cin: int, cout: int, size: int, cfg: UNetConfig, rngs: nnx.Rngs):
    # Float32 parameters, computation in cfg.dtype.
    return nnx.Conv(
        cin, cout, (size,) * cfg.ndim, dtype=_dtype(cfg), param_dtype=jnp.float32, rngs=rngs
    )


def _conv3(cin: int, cout: int, cfg: UNetConfig, rngs: nnx.Rngs):
    if cfg.ndim == 3 and cfg.conv3d != "native":
        shifted = cfg.conv3d == "shifted"
        return _StackedConv3d(cin, cout, dtype=_dtype(cfg), shifted=shifted, rngs=rngs)
    return _conv(cin, cout, 3, cfg, rngs)


def _group_norm(cout: int, cfg: UNetConfig, rngs: nnx.Rngs):
    if cfg.norm != "group":
        return None
    return nnx.GroupNorm(
        cout, num_groups=cfg.groups, dtype=_dtype(cfg), param_dtype=jnp.float32, rngs=rngs
    )


class _Block(nnx.Module):
    def __init__(self, cin: int, cout: int, cfg: UNetConfig, *, rngs: nnx.Rngs):
        self.conv1 = _conv3(cin, cout, cfg, rngs)
        self.conv2 = _conv3(cout, cout, cfg, rngs)
        self.norm1 = _group_norm(cout, cfg, rngs)
        self.norm2 = _group_norm(cout, cfg, rngs)
        needs_proj = cfg.residual and cin != cout
        self.proj = _conv(cin, cout, 1, cfg, rngs) if needs_proj else None
        self.residual = cfg.residual
        self.slope = cfg.negative_slope

    def __call__(self, x):
        h = self.conv1(x)
        if self.norm1 is not None:
            h = self.norm1(h)
        h = jax.nn.leaky_relu(h, self.slope)
        h = self.conv2(h)
        if self.norm2 is not None:
            h = self.norm2(h)
        if self.residual:
            h = h + (self.proj(x) if self.proj is not None else x)
        return jax.nn.leaky_relu(h, self.slope)


def _downsample(x, ndim: int):
    # 2× average pooling over the spatial axes of (B, *spatial, C).
    b, *spatial, c = x.shape
    split = [d for s in spatial for d in (s // 2, 2)]
    x = x.reshape(b, *split, c)
    return x.mean(axis=tuple(range(2, 2 + 2 * ndim, 2)))


def _upsample(x, ndim: int):
    for axis in range(1, 1 + ndim):
        x = jnp.repeat(x, 2, axis=axis)
    return x


class Anchor(nnx.Param):
    """A fixed (never trained) filter of the network: a ``Param`` so that it is saved,
    loaded and sharded with the others; its gradient is stopped and the optimiser
    leaves it alone (:func:`jdeconv.train.make_optimizer`).

    Example:
      >>> cfg = UNetConfig(ndim=2, depth=1, base_channels=4, norm="none", anchor_shape=(3, 3))
      >>> _, p = init_unet(0, cfg)
      >>> isinstance(p["anchor"], Anchor), p["anchor"].get_value().shape
      (True, (3, 3))
    """


def anchor_filter(kernel: jax.Array, x: jax.Array) -> jax.Array:
    """Convolve a batch ``(B, *spatial)`` with an odd-sized ``kernel``, mirror-extended.

    Computed with FFTs on the image extended by half the kernel on every side (symmetric
    extension, as the network's own padding), so it costs O(N log N) whatever the kernel
    size; the result has ``x``'s shape.

    Example:
      >>> delta = jnp.zeros((3, 3)).at[1, 1].set(1.0)
      >>> x = jnp.arange(20.0).reshape(1, 4, 5)
      >>> bool(jnp.allclose(anchor_filter(delta, x), x, atol=1e-5))
      True
    """
    spatial = x.shape[1:]
    half = [k // 2 for k in kernel.shape]
    xp = jnp.pad(x, [(0, 0), *((h, h) for h in half)], mode="symmetric")
    axes = tuple(range(1, xp.ndim))
    grid = xp.shape[1:]
    spectrum = jnp.fft.rfftn(xp, axes=axes) * jnp.fft.rfftn(kernel, s=grid)
    full = jnp.fft.irfftn(spectrum, s=grid, axes=axes)
    # Index i + k - 1 of the circular convolution is the valid linear one (no wrap).
    window = tuple(slice(k - 1, k - 1 + n) for k, n in zip(kernel.shape, spatial, strict=True))
    return full[(slice(None), *window)]


def set_anchor(params, kernel, *, psf=None):
    """``params`` with the network's :class:`Anchor` filter set to ``kernel`` (and, for a
    non-negative anchor, its PSF to ``psf``).

    Example:
      >>> cfg = UNetConfig(ndim=2, depth=1, base_channels=4, norm="none", anchor_shape=(3, 3))
      >>> _, p = init_unet(0, cfg)
      >>> p = set_anchor(p, np.ones((3, 3)) / 9)
      >>> float(p["anchor"].get_value().sum())
      1.0
    """
    if "anchor" not in params:
        raise ValueError("this network has no anchor filter (UNetConfig.anchor_shape is empty).")
    want = params["anchor"].get_value().shape
    kernel = jnp.asarray(kernel, jnp.float32)
    if kernel.shape != want:
        raise ValueError(f"anchor kernel shape {kernel.shape} != the network's {want}.")
    has_psf = "anchor_psf" in params
    if (psf is not None) != has_psf:
        raise ValueError(
            "this network's anchor " + ("needs a PSF (psf=...)." if has_psf else "has no PSF.")
        )
    if has_psf:
        psf = jnp.asarray(psf, jnp.float32)
        if psf.shape != params["anchor_psf"].get_value().shape:
            raise ValueError(
                f"anchor PSF shape {psf.shape} != the network's "
                f"{params['anchor_psf'].get_value().shape}."
            )
    params = jax.tree.map(lambda v: v, params)  # a new State; the caller's is untouched
    params["anchor"].set_value(kernel)
    if has_psf:
        params["anchor_psf"].set_value(psf)
    return params


class UNet(nnx.Module):
    """U-Net ``(B, *spatial, 1) -> (B, *spatial, 1)``; see the module docstring.

    Example:
      >>> net = UNet(UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"), rngs=nnx.Rngs(0))
      >>> net(jnp.zeros((1, 8, 8, 1))).shape
      (1, 8, 8, 1)
    """

    def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.anchor_shape:
            self.anchor = Anchor(jnp.zeros(cfg.anchor_shape, jnp.float32))
        if cfg.anchor_psf_shape:
            self.anchor_psf = Anchor(jnp.zeros(cfg.anchor_psf_shape, jnp.float32))
        if cfg.anchor_only:
            return
        chans = [cfg.base_channels * 2**i for i in range(cfg.depth + 1)]
        self.encoders = nnx.List(
            [
                _Block(1 if i == 0 else chans[i - 1], chans[i], cfg, rngs=rngs)
                for i in range(cfg.depth)
            ]
        )
        self.bottom = _Block(chans[-2], chans[-1], cfg, rngs=rngs)
        self.ups = nnx.List(
            [_conv3(chans[i + 1], chans[i], cfg, rngs) for i in reversed(range(cfg.depth))]
        )
        self.decoders = nnx.List(
            [_Block(2 * chans[i], chans[i], cfg, rngs=rngs) for i in reversed(range(cfg.depth))]
        )
        self.head = _conv(chans[0], 1, 1, cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        ndim = self.cfg.ndim
        if x.ndim != ndim + 2 or x.shape[-1] != 1:
            raise ValueError(
                f"UNet(ndim={ndim}) expects (batch, *spatial, 1), got shape {x.shape}."
            )
        if self.cfg.anchor_only:
            return self._anchor(x[..., 0].astype(jnp.float32))[..., None]
        spatial = x.shape[1:-1]
        x_in = x
        m = self.cfg.multiple
        pads = [(0, (-s) % m) for s in spatial]
        if any(p for _, p in pads):
            x = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode="symmetric")
        x = x.astype(_dtype(self.cfg))
        skips = []
        h = x
        for enc in self.encoders:
            h = enc(h)
            skips.append(h)
            h = _downsample(h, ndim)
        h = self.bottom(h)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            h = up(_upsample(h, ndim))
            h = dec(jnp.concatenate([h, skip], axis=-1))
        out = self.head(h)
        out = out[(slice(None), *(slice(0, s) for s in spatial), slice(None))]
        if self.cfg.anchor_shape:
            anchor = self._anchor(x_in[..., 0].astype(jnp.float32))
            out = out.astype(jnp.float32) + anchor[..., None]
        return out

    def _anchor(self, y: jax.Array) -> jax.Array:
        """The anchor's output for a batch ``(B, *spatial)``."""
        if self.cfg.anchor_psf_shape:
            # FISTA starts from the linear solution (project_tikhonov's start=None),
            # as nonnegative_tikhonov does: the truncated filter's solution sits
            # further from the constrained optimum (in 3D with an axially long PSF,
            # 0.6 dB short of it after 50 steps); the filter's size still sets the
            # anchor's reach (NetworkConfig.tile_context).
            return project_tikhonov(
                y,
                None,
                jax.lax.stop_gradient(self.anchor_psf.get_value()),
                self.cfg.anchor_weight,
                lower=self.cfg.anchor_lower,
                iterations=self.cfg.anchor_iterations,
                sparsity=self.cfg.anchor_sparsity,
            )
        return anchor_filter(jax.lax.stop_gradient(self.anchor.get_value()), y)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters.

    Example:
      >>> cfg = UNetConfig(ndim=2, depth=1, base_channels=4, norm="none")
      >>> count_params(UNet(cfg, rngs=nnx.Rngs(0)))
      1889
    """
    params = nnx.state(model, nnx.Param)
    return sum(int(p.size) for p in jax.tree.leaves(params))


@functools.lru_cache(maxsize=16)
def abstract_unet(cfg: UNetConfig):
    """``(graphdef, abstract_params)`` of a U-Net: shapes and dtypes only, no arrays.

    Built once per network shape (``cfg`` is a frozen, hashable config) and shared by
    initialisation, loading and prediction.

    Example:
      >>> graphdef, params = abstract_unet(UNetConfig(ndim=2, depth=2, base_channels=8))
      >>> jax.tree.leaves(params)[0].dtype
      dtype('float32')
    """
    abstract = nnx.eval_shape(lambda: UNet(cfg, rngs=nnx.Rngs(0)))
    return nnx.split(abstract, nnx.Param)


def for_inference(cfg: UNetConfig) -> UNetConfig:
    """The same network (same parameters, same result to float rounding) laid out for
    inference: 3D convolutions "shifted" instead of "stacked", which need about 30 % less
    working memory and run no slower without a gradient.

    Example:
      >>> for_inference(UNetConfig(ndim=3)).conv3d, for_inference(UNetConfig(ndim=2)).conv3d
      ('shifted', 'stacked')
    """
    if cfg.ndim == 3 and cfg.conv3d == "stacked":
        return dataclasses.replace(cfg, conv3d="shifted")
    return cfg


def apply_network(graphdef, params, x: jax.Array) -> jax.Array:
    """Run the network on a batch ``(B, *spatial)`` and return ``(B, *spatial)``, float32.

    With ``dtype="bfloat16"`` the network computes in bfloat16 and its output is cast back
    to float32 here, so the forward model and the losses always run in float32.

    Example:
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> apply_network(graphdef, params, jnp.zeros((1, 8, 8))).shape
      (1, 8, 8)
    """
    model = nnx.merge(graphdef, params)
    return model(x[..., None])[..., 0].astype(jnp.float32)


def _seed_of(key) -> int | np.ndarray:
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return int(key)
    try:
        return np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel()
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"key must be a jax.random key or an integer seed, got {type(key).__name__}."
        ) from err


def init_unet(key, cfg: UNetConfig | None = None, *, seed: int | None = None):
    """Build a U-Net's ``(graphdef, params)`` without running its initialisers on a device.

    Eager NNX initialisation compiles one small XLA program per parameter shape (10–20 s on
    a CPU); here the network is traced abstractly and its parameters drawn with NumPy:
    kernels from a truncated normal (±2 std) with LeCun scaling, as ``nnx.Conv``'s default,
    biases 0 and GroupNorm scales 1. Deterministic for a given key.

    Args:
      key: a ``jax.random`` key, or an integer seed (``fit`` passes ``Config.seed``).
      cfg: the network's shape.

    Example:
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> count = sum(p.size for p in jax.tree.leaves(params))
    """
    if isinstance(key, UNetConfig):  # the pre-0.2 order init_unet(cfg, seed=0)
        warnings.warn(
            "init_unet(cfg, seed=...) is deprecated; call init_unet(key_or_seed, cfg).",
            DeprecationWarning,
            stacklevel=2,
        )
        key, cfg = (0 if seed is None else seed), key
    if not isinstance(cfg, UNetConfig):
        raise ValueError(f"cfg must be a UNetConfig, got {type(cfg).__name__}.")
    graphdef, state = abstract_unet(cfg)
    rng = np.random.default_rng(_seed_of(key))
    paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves = []
    for path, leaf in paths:
        name = jax.tree_util.keystr(path)
        if cfg.anchor_shape and "['head']" in name:
            # With an anchor the network starts as the anchor filter alone: a zero head
            # (its gradient is not zero, so training moves it at once).
            value = np.zeros(leaf.shape)
        elif "['kernel']" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            z = rng.standard_normal(leaf.shape)
            while np.any(bad := np.abs(z) > 2):
                z[bad] = rng.standard_normal(int(bad.sum()))
            # 0.8796 is the std of a standard normal truncated at ±2.
            value = z * np.sqrt(1.0 / fan_in) / 0.87962566103423978
        elif "['scale']" in name:
            value = np.ones(leaf.shape)

        else:
            value = np.zeros(leaf.shape)
        leaves.append(jnp.asarray(value, dtype=leaf.dtype))
    return graphdef, jax.tree_util.tree_unflatten(treedef, leaves)
