"""``Config``: every setting of a fit, grouped by concern, frozen, validated eagerly.

A :class:`Config` has a few top-level fields (``name``, ``seed``, ``steps``, ``loss``)
and one frozen group per concern, CAREamics-style:

==============  ========================  ==============================================
group           class                     fields
==============  ========================  ==============================================
``network``     :class:`NetworkConfig`    base_channels, depth, norm, residual, dtype
``data``        :class:`DataConfig`       patch_size, patch_size_z, batch_size,
                                          normalization, percentiles
``masks``       :class:`MaskConfig`       kind, fraction, replacement, noise_std
``optim``       :class:`OptimConfig`      optimizer, learning_rate, weight_decay, schedule,
                                          warmup_steps, decay_every, grad_clip
``forward``     :class:`ForwardConfig`    method, padding, crop_border
``validation``  :class:`ValidationConfig` fraction, every, selection_z, patience,
                                          restore_best
``inference``   :class:`InferenceConfig`  tta, tile_size, tile_halo, clip_output
==============  ========================  ==============================================

The common fields also read and write flat, under their historical names
(``Config(steps=500, learning_rate=4e-4, mask_fraction=0.005)``, ``cfg.patch_size``,
``cfg.replace(tta=False)``): see ``FLAT_FIELDS``. Every value is checked when the config
is built (types, finiteness, ranges), before anything is traced or compiled.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Literal, get_args

from .losses import PRESETS, LossSpec, check_specs, loss_specs
from .unet import UNetConfig

__all__ = [
    "Config",
    "NetworkConfig",
    "DataConfig",
    "MaskConfig",
    "OptimConfig",
    "ForwardConfig",
    "ValidationConfig",
    "InferenceConfig",
    "FLAT_FIELDS",
    "default_preset",
]

Schedule = Literal["constant", "cosine", "step"]
Optimizer = Literal["adam", "adamw"]
Normalization = Literal["meanstd", "percentile"]
MaskKind = Literal["stratified", "bernoulli"]
Replacement = Literal["noise", "zero", "local_mean"]
Method = Literal["fft", "direct", "auto"]
Padding = Literal["reflect", "zero", "periodic"]
Norm = Literal["none", "group"]
AnchorKind = Literal["none", "tikhonov", "nonneg_tikhonov"]
SelectionRule = Literal["unless_worse", "if_better"]
ClipOutput = Literal[False, True, "below"]
ComputeDtype = Literal["float32", "bfloat16"]


# ----------------------------------------------------------------------------- checks


def _choice(owner, name: str, kind) -> None:
    value = getattr(owner, name)
    choices = get_args(kind)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _integer(owner, name: str, *, minimum: int, allow_none: bool = False) -> None:
    value = getattr(owner, name)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__}); e.g. "
            f"{name}={max(minimum, 1)}."
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    object.__setattr__(owner, name, int(value))


def _real(
    owner,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> None:
    value = getattr(owner, name)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low:g}, {high:g}{hi}, got {value:g}.")
    object.__setattr__(owner, name, value)


def _boolean(owner, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")


# ----------------------------------------------------------------------------- groups


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The U-Net (see :class:`jdeconv.unet.UNetConfig`).

    Attributes:
      base_channels: channels at the first level, doubled at every level below.
      depth: number of 2× downsamplings.
      norm: "none" (needed for exact tiled inference) or "group" (GroupNorm).
      residual: residual blocks.
      dtype: "float32", or "bfloat16" for mixed precision (flat name ``compute_dtype``):
        convolutions and activations in bfloat16, parameters, optimiser, forward model
        and losses in float32 (the network's output is cast to float32 before the PSF).
        Off by default: its effect on quality has not been benchmarked; it pays on GPUs
        and TPUs, not on CPUs.
      anchor: "tikhonov": the network's output is the Tikhonov (Wiener-Hunt, Laplacian)
        deconvolution of its input plus the U-Net's correction, which starts at zero;
        training starts from the classical solution instead of from a random image, and
        the held-out loss of step 0 scores that solution (``jdeconv.regularized``).
        "nonneg_tikhonov": the same with the Tikhonov solution constrained to be at least
        the input's minimum (:func:`jdeconv.regularized.nonnegative_tikhonov`, computed in
        the network on every input: the linear filter clipped, then
        ``anchor_iterations`` projected FISTA steps, with an ℓ1 penalty of weight
        ``anchor_sparsity`` on the excess over the bound); on sparse images (puncta,
        filaments, text) it is up to 3.4 dB above the linear one without the penalty,
        and the penalty adds 0.65 dB on the mean of the 2D development matrix (up to
        4 dB on puncta; :func:`jdeconv.regularized.choose_sparsity`).
        "none": the U-Net alone (the papers' network).
      anchor_weight: the Tikhonov weight λ; None: chosen by generalised cross-validation
        on the image when the fit starts (the fitted model's config records the value).
      anchor_shape: the filter's kernel shape; filled in when the fit starts (from the
        PSF and λ: :func:`jdeconv.regularized.tikhonov_kernel`).
      anchor_psf_shape, anchor_lower: for "nonneg_tikhonov", the PSF's shape and the
        bound in standardised units; filled in when the fit starts.
      anchor_iterations: for "nonneg_tikhonov", the projected FISTA steps.
      anchor_sparsity: for "nonneg_tikhonov", the ℓ1 weight ``μ >= 0`` in standardised
        units; None: chosen from the image when the fit starts
        (:func:`jdeconv.regularized.choose_sparsity`; the fitted config records it);
        0: none, the plain constrained problem.

    Example:
      >>> NetworkConfig(base_channels=8, depth=2).multiple
      4
    """

    base_channels: int = 16
    depth: int = 3
    norm: Norm = "none"
    residual: bool = True
    dtype: ComputeDtype = "float32"
    anchor: AnchorKind = "none"
    anchor_weight: float | None = None
    anchor_shape: tuple[int, ...] = ()
    anchor_psf_shape: tuple[int, ...] = ()
    anchor_lower: float | None = None
    anchor_iterations: int = 50
    anchor_sparsity: float | None = None

    def __post_init__(self):
        _integer(self, "base_channels", minimum=1)
        _integer(self, "depth", minimum=1)
        _choice(self, "norm", Norm)
        _boolean(self, "residual")
        _choice(self, "dtype", ComputeDtype)
        _choice(self, "anchor", AnchorKind)
        _real(self, "anchor_weight", low=0.0, low_open=True, allow_none=True)
        for name in ("anchor_shape", "anchor_psf_shape"):
            shape = getattr(self, name)
            if isinstance(shape, str) or not all(
                isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in shape
            ):
                raise ValueError(f"{name} must be a tuple of odd integers, got {shape!r}.")
            object.__setattr__(self, name, tuple(int(n) for n in shape))
        _real(self, "anchor_lower", allow_none=True)
        _integer(self, "anchor_iterations", minimum=0)
        _real(self, "anchor_sparsity", low=0.0, allow_none=True)
        self.unet(len(self.anchor_shape) or 2)  # the network's own checks

    @property
    def multiple(self) -> int:
        """Spatial sizes the network works on are padded to a multiple of this."""
        return 2**self.depth

    def unet(self, ndim: int) -> UNetConfig:
        return UNetConfig(
            ndim=ndim,
            depth=self.depth,
            base_channels=self.base_channels,
            norm=self.norm,
            residual=self.residual,
            groups=min(8, self.base_channels),
            dtype=self.dtype,
            anchor_shape=self.anchor_shape if len(self.anchor_shape) == ndim else (),
            anchor_psf_shape=(self.anchor_psf_shape if len(self.anchor_psf_shape) == ndim else ()),
            anchor_weight=self.anchor_weight or 0.0,
            anchor_lower=self.anchor_lower or 0.0,
            anchor_iterations=self.anchor_iterations,
            anchor_sparsity=self.anchor_sparsity or 0.0,
        )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training patches and intensity normalisation.

    Attributes:
      patch_size: side of the square (YX) training patch.
      patch_size_z: depth of 3D patches (``(patch_size_z, patch_size, patch_size)``).
      batch_size: patches per step.
      normalization: "meanstd" or "percentile" (``percentiles`` low/high mapped to 0/1).
      percentiles: (low, high) for "percentile".

    Example:
      >>> DataConfig(patch_size=32, patch_size_z=16).patch_shape(3)
      (16, 32, 32)
    """

    patch_size: int = 64
    patch_size_z: int = 32
    batch_size: int = 16
    normalization: Normalization = "meanstd"
    percentiles: tuple[float, float] = (0.1, 99.9)

    def __post_init__(self):
        _integer(self, "patch_size", minimum=1)
        _integer(self, "patch_size_z", minimum=1)
        _integer(self, "batch_size", minimum=1)
        _choice(self, "normalization", Normalization)
        try:
            lo, hi = (float(p) for p in self.percentiles)
        except (TypeError, ValueError) as err:
            raise ValueError(f"percentiles must be two numbers, got {self.percentiles!r}.") from err
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi <= 100):
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}."
            )
        object.__setattr__(self, "percentiles", (lo, hi))

    def patch_shape(self, ndim: int) -> tuple[int, ...]:
        if ndim == 2:
            return (self.patch_size, self.patch_size)
        return (self.patch_size_z, self.patch_size, self.patch_size)


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """Blind-spot masks (see :mod:`jdeconv.masks`).

    Attributes:
      kind: "stratified" (one pixel per box) or "bernoulli".
      fraction: fraction of masked pixels, in (0, 0.5].
      replacement: "noise" (N(0, noise_std)), "zero" or "local_mean".
      noise_std: standard deviation of the replacement noise (standardised units).

    Example:
      >>> MaskConfig(fraction=0.005).fraction
      0.005
    """

    kind: MaskKind = "stratified"
    fraction: float = 0.02
    replacement: Replacement = "noise"
    noise_std: float = 0.2

    def __post_init__(self):
        _choice(self, "kind", MaskKind)
        _real(self, "fraction", low=0.0, high=0.5, low_open=True)
        _choice(self, "replacement", Replacement)
        _real(self, "noise_std", low=0.0, high=100.0)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimiser and learning-rate schedule.

    Attributes:
      optimizer: "adam" or "adamw" (``weight_decay`` for adamw).
      learning_rate: peak learning rate, in (0, 1].
      schedule: "constant", "cosine" (warm-up then cosine decay to 1 % over ``steps``) or
        "step" (halve every ``decay_every`` steps, as Papkov et al.).
      warmup_steps, decay_every: schedule settings.
      grad_clip: global-norm clipping, or None.

    Example:
      >>> OptimConfig(learning_rate=4e-4, schedule="step").decay_every
      500
    """

    optimizer: Optimizer = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Schedule = "cosine"
    warmup_steps: int = 50
    decay_every: int = 500
    grad_clip: float | None = 1.0

    def __post_init__(self):
        _choice(self, "optimizer", Optimizer)
        _real(self, "learning_rate", low=0.0, high=1.0, low_open=True)
        _real(self, "weight_decay", low=0.0, high=1.0)
        _choice(self, "schedule", Schedule)
        _integer(self, "warmup_steps", minimum=0)
        _integer(self, "decay_every", minimum=1)
        _real(self, "grad_clip", low=0.0, low_open=True, allow_none=True)


@dataclasses.dataclass(frozen=True)
class ForwardConfig:
    """The PSF forward model (see :func:`jdeconv.make_forward`).

    Attributes:
      method: "fft", "direct" or "auto".
      padding: "reflect", "zero" or "periodic".
      crop_border: compute losses only where ``g`` sees real pixels (patch minus half the
        PSF on each side) instead of over the padded border.

    Example:
      >>> ForwardConfig(padding="zero").method
      'auto'
    """

    method: Method = "auto"
    padding: Padding = "reflect"
    crop_border: bool = True

    def __post_init__(self):
        _choice(self, "method", Method)
        _choice(self, "padding", Padding)
        _boolean(self, "crop_border")


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Held-out pixels and model selection (see :mod:`jdeconv.selection`).

    Attributes:
      fraction: fraction of pixels held out from training, in [0, 0.5); their blind-spot
        loss is tracked in ``history["val_loss"]`` (0 disables it).
      every: steps between validation evaluations.
      selection_z: the paired test's threshold, in standard errors (see ``selection``).
      selection: "unless_worse": a later model is kept unless its held-out residuals are
        worse than the best model's by more than ``selection_z`` standard errors;
        "if_better": the kept model (step 0 first) is replaced only by one better than it
        by more than ``selection_z`` standard errors — for an anchored network, whose
        step 0 is a classical solution that training must beat, not merely match.
      patience: stop after this many significantly worse evaluations in a row (None:
        never).
      restore_best: return the kept parameters instead of the last. Off by default: the
        held-out loss is measured after the PSF and in our runs it did not track the
        deconvolved image's quality (benchmarks/results/model_selection-*.md).

    Example:
      >>> ValidationConfig(fraction=0.0).restore_best
      False
    """

    fraction: float = 0.01
    every: int = 25
    selection_z: float = 2.0
    selection: SelectionRule = "unless_worse"
    patience: int | None = None
    restore_best: bool = False

    def __post_init__(self):
        _real(self, "fraction", low=0.0, high=0.5, high_open=True)
        _integer(self, "every", minimum=1)
        _real(self, "selection_z", low=0.0)
        _choice(self, "selection", SelectionRule)
        _integer(self, "patience", minimum=1, allow_none=True)
        _boolean(self, "restore_best")


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """Applying the trained network (see :mod:`jdeconv.predict`).

    Attributes:
      tta: average the 8 (2D) / 16 (3D) rotations/flips.
      tile_size: tiled inference with windows of this size per axis (None: the largest
        that fits the memory budget, the whole image when it fits).
      tile_halo: context around each tile's core; with ``norm="none"`` tiled and whole
        results agree to float rounding when it covers the receptive field (64 does for
        depth 3).
      clip_output: clip the deconvolved image to the input's range (True), only below
        at the input's minimum ("below": no negative light, while deconvolved peaks may
        exceed the blurred input's maximum), or not at all (False).

    Example:
      >>> InferenceConfig(tile_size=256).tile_halo
      64
    """

    tta: bool = True
    tile_size: int | None = None
    tile_halo: int = 64
    clip_output: ClipOutput = False

    def __post_init__(self):
        _boolean(self, "tta")
        _integer(self, "tile_size", minimum=1, allow_none=True)
        _integer(self, "tile_halo", minimum=0)
        if not any(
            self.clip_output is c or (c == "below" == self.clip_output)
            for c in get_args(ClipOutput)
        ):
            raise ValueError(
                f"clip_output must be True, False or 'below', got {self.clip_output!r}."
            )

    def clip_range(self, low: float, high: float) -> tuple[float, float | None] | None:
        """The output's clip range given the input's ``(low, high)``, or None.

        Example:
          >>> InferenceConfig(clip_output="below").clip_range(0.0, 1.0)
          (0.0, None)
        """
        if self.clip_output == "below":
            return (low, None)
        return (low, high) if self.clip_output else None


_GROUPS: dict[str, type] = {
    "network": NetworkConfig,
    "data": DataConfig,
    "masks": MaskConfig,
    "optim": OptimConfig,
    "forward": ForwardConfig,
    "validation": ValidationConfig,
    "inference": InferenceConfig,
}

#: Flat (historical) names of grouped fields: ``name -> (group, field)``.
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    **{
        f: ("network", f)
        for f in ("base_channels", "depth", "norm", "residual", "anchor", "anchor_weight")
    },
    "compute_dtype": ("network", "dtype"),
    **{
        f: ("data", f)
        for f in ("patch_size", "patch_size_z", "batch_size", "normalization", "percentiles")
    },
    "mask_kind": ("masks", "kind"),
    "mask_fraction": ("masks", "fraction"),
    "mask_replacement": ("masks", "replacement"),
    "mask_noise_std": ("masks", "noise_std"),
    **{
        f: ("optim", f)
        for f in (
            "optimizer",
            "learning_rate",
            "weight_decay",
            "schedule",
            "warmup_steps",
            "decay_every",
            "grad_clip",
        )
    },
    "forward_method": ("forward", "method"),
    "padding": ("forward", "padding"),
    "crop_border": ("forward", "crop_border"),
    "validation_fraction": ("validation", "fraction"),
    "validate_every": ("validation", "every"),
    **{f: ("validation", f) for f in ("selection_z", "selection", "patience", "restore_best")},
    **{f: ("inference", f) for f in ("tta", "tile_size", "tile_halo", "clip_output")},
}

# Settings that differ between presets (the loss weights come from losses.PRESETS).
# noise2self: a denser mask (2 %, box 7 in 2D) measured better than the 0.5 % of
# Noise2Same on 256² crops (DESIGN.md §4); it keeps improving with longer training.
# noise2same_d: a short schedule — its PSNR peaked within a few hundred steps and then
# fell in our runs (benchmarks/results/paper_2d-*.md and the README).
_PRESET_SETTINGS: dict[str, dict[str, object]] = {
    "noise2self": {"mask_fraction": 0.02},
    "noise2same": {"mask_fraction": 0.005},
    "noise2same_d": {"mask_fraction": 0.005, "steps": 300},
}

# What the default config changes in its preset, by backend: data sizes, and 300 steps
# in 3D (noise2same_d, the 2D default, has 300 already); the network is the same
# everywhere.
# CPU: one 3D step of batch 4 × 32×64×64 took 13.9 s on one core, batch 2 × 32×48×48
# about 3 s (benchmarks/results/train_step-cpu.md, paper_3d-cpu.md), so the 3D default
# is small; 2D keeps the DataConfig defaults (64² crops, batch 16).
# Accelerators (GPU, TPU): the papers' sizes — 128² crops, batch 16 in 2D (Noise2Same,
# Kobayashi et al.); 64³ crops, batch 4 in 3D (Papkov et al.).
_DEFAULT_DATA = {
    ("cpu", 2): {},
    ("cpu", 3): {"batch_size": 2, "patch_size": 48, "patch_size_z": 32, "steps": 300},
    ("accelerator", 2): {"batch_size": 16, "patch_size": 128},
    ("accelerator", 3): {"batch_size": 4, "patch_size": 64, "patch_size_z": 64, "steps": 300},
}


# What the default config adds to its preset, the same in 2D and 3D: the network is
# anchored on the non-negative Tikhonov solution (weight by GCV, bound at the input's
# minimum, ℓ1 weight by regularized.choose_sparsity), a trained model replaces that
# solution (step 0) only if its held-out loss is significantly better, training stops
# after 4 evaluations in a row (100 steps) significantly worse than the kept model, and
# the output is clipped below at the input's minimum (2D: benchmarks/results/
# quality-quick-2d-l1.md, -patience.md; without the ℓ1 term quality-quick-2d-nonneg.md;
# the linear anchor's quality-quick-2d-anchor.md; 3D: quality3d-*.md).
_ANCHORED: dict[str, object] = {
    "anchor": "nonneg_tikhonov",
    "restore_best": True,
    "selection": "if_better",
    "patience": 4,
    "clip_output": "below",
}
_DEFAULT_METHOD: dict[int, dict[str, object]] = {2: _ANCHORED, 3: _ANCHORED}


def default_preset(ndim: int) -> str:
    """The preset ``fit`` uses when no config is given, by dimensionality.

    Chosen from our benchmarks (benchmarks/results/): see README "Which preset".

    Example:
      >>> default_preset(2)
      'noise2same_d'
    """
    return "noise2same_d" if ndim == 2 else "noise2same"


_TOP = ("name", "seed", "steps", "loss")
_DEFAULT_LOSS = (LossSpec("bsp", 1.0),)


@dataclasses.dataclass(frozen=True, init=False)
class Config:
    """Settings of :func:`jdeconv.fit` (module docstring: the groups and flat names).

    Build one with ``Config.preset("noise2same_d", steps=500, seed=0)`` or
    ``Config(loss_weights={"bsp": 1.0}, steps=200)``; invalid values raise ``ValueError``
    at construction, before any tracing.

    Attributes:
      name: the preset this config started from (informational; "custom" otherwise).
      seed: seeds network initialisation, patch sampling, masks and held-out pixels.
      steps: number of training steps.
      loss: the weighted terms, as :class:`jdeconv.losses.LossSpec` (``loss_weights`` is
        the flat ``((name, weight), ...)`` view and override).
      network, data, masks, optim, forward, validation, inference: the groups.

    Example:
      >>> cfg = Config.preset("noise2self", steps=200, learning_rate=4e-4)
      >>> cfg.optim.learning_rate, cfg.learning_rate, cfg.steps
      (0.0004, 0.0004, 200)
    """

    name: str
    seed: int
    steps: int
    loss: tuple[LossSpec, ...]
    network: NetworkConfig
    data: DataConfig
    masks: MaskConfig
    optim: OptimConfig
    forward: ForwardConfig
    validation: ValidationConfig
    inference: InferenceConfig

    def __init__(
        self,
        *,
        name: str = "custom",
        seed: int = 0,
        steps: int = 1000,
        loss=_DEFAULT_LOSS,
        network: NetworkConfig | Mapping | None = None,
        data: DataConfig | Mapping | None = None,
        masks: MaskConfig | Mapping | None = None,
        optim: OptimConfig | Mapping | None = None,
        forward: ForwardConfig | Mapping | None = None,
        validation: ValidationConfig | Mapping | None = None,
        inference: InferenceConfig | Mapping | None = None,
        loss_weights=None,
        _check_terms: bool = True,
        **flat,
    ):
        unknown = sorted(set(flat) - set(FLAT_FIELDS))
        if unknown:
            valid = sorted(Config.keywords())
            raise ValueError(f"unknown Config fields {unknown}; valid fields: {valid}.")
        given = dict(
            network=network,
            data=data,
            masks=masks,
            optim=optim,
            forward=forward,
            validation=validation,
            inference=inference,
        )
        changes: dict[str, dict] = {g: {} for g in _GROUPS}
        for key, value in flat.items():
            group, field = FLAT_FIELDS[key]
            changes[group][field] = value
        for group, cls in _GROUPS.items():
            value = given[group]
            if value is None:
                value = cls()
            elif isinstance(value, Mapping):
                value = _group_from_dict(cls, group, value)
            elif not isinstance(value, cls):
                raise ValueError(
                    f"{group} must be a {cls.__name__} or a dict, got {type(value).__name__}."
                )
            if changes[group]:
                value = dataclasses.replace(value, **changes[group])
            object.__setattr__(self, group, value)
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}.")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "steps", steps)
        _integer(self, "seed", minimum=0)
        _integer(self, "steps", minimum=1)
        specs = loss_specs(loss_weights if loss_weights is not None else loss)
        if _check_terms:
            check_specs(specs)
        object.__setattr__(self, "loss", specs)
        self._check_across_groups()

    def _check_across_groups(self):
        m = self.network.multiple
        if self.data.patch_size % m or self.data.patch_size_z % m:
            raise ValueError(
                f"patch sizes ({self.data.patch_size}, z {self.data.patch_size_z}) must be "
                f"multiples of 2**depth = {m}."
            )
        if self.inference.tile_size is not None and self.inference.tile_size < m:
            raise ValueError(f"tile_size must be at least 2**depth = {m}.")

    def __getattr__(self, attr):
        # Only reached when normal lookup fails: the flat views of grouped fields.
        if attr in FLAT_FIELDS:
            group, field = FLAT_FIELDS[attr]
            return getattr(object.__getattribute__(self, group), field)
        if attr == "loss_weights":
            return tuple((s.name, s.weight) for s in object.__getattribute__(self, "loss"))
        raise AttributeError(f"'Config' object has no attribute {attr!r}")

    @staticmethod
    def keywords() -> frozenset[str]:
        """Every keyword ``Config(...)``, ``preset`` and ``replace`` accept.

        Example:
          >>> {"steps", "learning_rate", "optim"} <= Config.keywords()
          True
        """
        return frozenset({*_TOP, *_GROUPS, *FLAT_FIELDS, "loss_weights"})

    @classmethod
    def preset(cls, name: str, **overrides) -> Config:
        """A named preset with optional overrides (flat or grouped fields).

        Args:
          name: "noise2self" (Kobayashi et al. 2020), "noise2same" (Papkov et al.,
            invariance after the PSF, their best in 3D) or "noise2same_d" (before the PSF,
            their best in 2D).
          **overrides: any field, e.g. ``steps=500, seed=0``.

        Example:
          >>> Config.preset("noise2same_d", steps=500).steps
          500
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}.")
        settings: dict[str, object] = {"name": name, "loss": loss_specs(name)}
        settings.update(_PRESET_SETTINGS[name])
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def default(cls, ndim: int, *, backend: str | None = None, **overrides) -> Config:
        """The config ``fit`` uses when given none: the best preset for ``ndim`` (2 or 3),
        with patch and batch sizes for the device it will train on.

        ========  =====================  =========================
        backend   2D                     3D
        ========  =====================  =========================
        cpu       64² crops, batch 16    32×48×48 crops, batch 2
        gpu, tpu  128² crops, batch 16   64×64×64 crops, batch 4
        ========  =====================  =========================

        Steps (at most 300) and the network are the same on every backend. The
        accelerator sizes are the papers' (Noise2Same in 2D, Papkov et al. in 3D); the
        CPU ones keep a fit to minutes (benchmarks/results/train_step-cpu.md). In 2D and
        3D the network is anchored on the non-negative sparse Tikhonov solution, which
        is kept (step 0) unless a trained model's held-out score is significantly
        better; training stops after 4 validations in a row significantly worse than
        the kept model (``patience``), and the output is clipped below at the input's
        minimum.

        Args:
          ndim: 2 or 3.
          backend: whose sizes: "cpu", or "gpu"/"cuda"/"rocm"/"tpu" (any non-CPU backend
            gets the accelerator sizes); None: ``jax.default_backend()``, the device JAX
            will run on.
          **overrides: any field, applied last (``patch_size=96``...).

        Example:
          >>> Config.default(3).name
          'noise2same'
          >>> Config.default(2, backend="gpu").patch_size
          128
        """
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}.")
        if backend is None:
            import jax  # not at module level: a Config is built without touching a device

            backend = jax.default_backend()
        if not isinstance(backend, str) or not backend:
            raise ValueError(f"backend must be a name such as 'cpu' or 'gpu', got {backend!r}.")
        kind = "cpu" if backend.lower() == "cpu" else "accelerator"
        settings = dict(_DEFAULT_DATA[kind, ndim])
        settings.update(_DEFAULT_METHOD[ndim])
        settings.update(overrides)
        return cls.preset(default_preset(ndim), **settings)

    def replace(self, **changes) -> Config:
        """A copy with some fields changed, flat or grouped (validated again).

        Example:
          >>> Config().replace(tta=False).inference.tta
          False
        """
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if "loss_weights" in changes:
            settings.pop("loss")
        settings.update(changes)
        return Config(**settings)

    def unet(self, ndim: int) -> UNetConfig:
        """The network's :class:`~jdeconv.unet.UNetConfig` for ``ndim`` spatial axes."""
        return self.network.unet(ndim)

    def patch_shape(self, ndim: int) -> tuple[int, ...]:
        """The training patch shape for ``ndim`` spatial axes."""
        return self.data.patch_shape(ndim)

    def tile_context(self, *, anchor_only: bool = False) -> int:
        """The context tiled inference gives each tile: ``tile_halo``, widened to the
        anchor's reach (half its filter plus, for a non-negative anchor, the PSF's size,
        the extension of its iterations), so tiles see what the whole image would; with
        ``anchor_only`` (a network that is its anchor alone) the anchor's reach only.

        Example:
          >>> Config(tile_halo=64).tile_context()
          64
          >>> net = NetworkConfig(anchor="tikhonov", anchor_shape=(201, 201))
          >>> Config(network=net).tile_context()
          100
          >>> Config(network=NetworkConfig(anchor="tikhonov", anchor_shape=(9, 9))).tile_context(
          ...     anchor_only=True)
          4
        """
        net = self.network
        reach = max(net.anchor_shape, default=0) // 2 + max(net.anchor_psf_shape, default=0)
        return reach if anchor_only else max(self.inference.tile_halo, reach)

    def to_dict(self) -> dict:
        """A JSON-ready nested dict (see :meth:`from_dict`)."""
        d = {"name": self.name, "seed": self.seed, "steps": self.steps}
        d["loss"] = [s.to_dict() for s in self.loss]
        for group in _GROUPS:
            d[group] = dataclasses.asdict(getattr(self, group))
        d["data"]["percentiles"] = list(self.data.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: Mapping, *, check_terms: bool = True) -> Config:
        """Rebuild a config from :meth:`to_dict` output, or from the flat dict of format 1.

        Args:
          d: the dict.
          check_terms: require every loss term to be registered in this process (a saved
            model is loaded with False: inference needs no loss).
        """
        d = dict(d)
        if "loss" in d and not isinstance(d["loss"], str):
            d["loss"] = tuple(
                LossSpec.from_dict(s) if isinstance(s, Mapping) else s for s in d["loss"]
            )
        return cls(**d, _check_terms=check_terms)


def _group_from_dict(cls, group: str, values: Mapping):
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown {group} fields {unknown}; valid: {sorted(fields)}.")
    values = dict(values)
    for name in ("percentiles", "anchor_shape", "anchor_psf_shape"):
        if name in values:
            values[name] = tuple(values[name])
    return cls(**values)
