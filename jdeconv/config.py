"""``Config``: every setting of a fit, frozen, typed, validated eagerly, with named presets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .forward import METHODS, PADDINGS
from .losses import PRESETS, make_loss
from .masks import MASK_KINDS, REPLACEMENTS, box_size
from .unet import UNetConfig

__all__ = ["Config", "default_preset"]

SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "adamw")
NORMALIZATIONS = ("meanstd", "percentile")

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


def default_preset(ndim: int) -> str:
    """The preset ``fit`` uses when no config is given, by dimensionality.

    Chosen from our benchmarks (benchmarks/results/): see README "Which preset".
    """
    return "noise2same_d" if ndim == 2 else "noise2same"


# Settings of the default 3D config that differ from the 2D one, sized for a CPU: one
# step of batch 4 × 32×64×64 took 13.9 s on one core, batch 2 × 32×48×48 about 3 s
# (benchmarks/results/train_step-cpu.md, paper_3d-cpu.md). On a GPU raise them (Papkov
# et al.: 64³ patches, batch 4, 15 000 steps).
_DEFAULT_3D = {"batch_size": 2, "patch_size": 48, "patch_size_z": 32, "steps": 300}


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of :func:`jdeconv.fit`.

    Build one with ``Config.preset("noise2same_d", steps=500, seed=0)``; unknown or
    invalid values raise ``ValueError`` at construction, before any tracing.

    Attributes:
      name: the preset this config started from (informational; "custom" otherwise).
      loss_weights: ``((term, weight), ...)``; a dict is accepted and converted.
      seed: seeds network initialisation, patch sampling and masks.
      steps: maximum number of training steps.
      patch_size: side of the square (YX) training patch; 3D patches are
        ``(patch_size_z, patch_size, patch_size)``.
      patch_size_z: depth of 3D patches.
      batch_size: patches per step.
      optimizer: "adam" or "adamw"; ``weight_decay`` for adamw.
      learning_rate, schedule, warmup_steps, decay_every: "constant", "cosine" (warm-up
        then cosine decay to 1 % over ``steps``) or "step" (halve every ``decay_every``
        steps, as Papkov et al.).
      grad_clip: global-norm clipping, or None.
      base_channels, depth, norm, residual: the U-Net (see :class:`jdeconv.unet.UNetConfig`).
      mask_kind, mask_fraction, mask_replacement, mask_noise_std: blind-spot masks.
      normalization: "meanstd" or "percentile" (``percentiles`` low/high mapped to 0/1).
      forward_method, padding: the PSF forward model (see :func:`jdeconv.make_forward`).
      crop_border: compute losses only where ``g`` sees real pixels (patch minus half the
        PSF on each side) instead of over the padded border.
      validation_fraction: fraction of pixels held out from training; their blind-spot loss
        is tracked in ``history["val_loss"]`` (0 disables it).
      validate_every: steps between validation evaluations.
      selection_z: a later model is kept unless its held-out residuals are worse than the
        best model's by more than this many standard errors (paired test).
      patience: stop after this many significantly worse evaluations in a row (None:
        never).
      restore_best: return the kept parameters (see ``selection_z``) instead of the last.
        Off by default, like ``patience``: the held-out loss is measured after the PSF and
        in our runs it did not track the deconvolved image's quality (it rose while the
        ground-truth PSNR rose: benchmarks/results/model_selection-*.md), so ``fit``
        trains the whole schedule and returns the last parameters unless asked.
      tta: average the 8 (2D) / 16 (3D) rotations/flips at inference.
      tile_size, tile_halo: tiled inference with windows of ``tile_size`` per axis, each
        with ``tile_halo`` pixels of context around the part it contributes (None: whole
        image at once). With ``norm="none"`` tiled and whole results agree to float
        rounding when the halo covers the receptive field (64 does for depth 3).
      clip_output: clip the deconvolved image to the input's range.
    """

    name: str = "custom"
    loss_weights: tuple[tuple[str, float], ...] = (("bsp", 1.0),)
    seed: int = 0
    steps: int = 1000
    patch_size: int = 64
    patch_size_z: int = 32
    batch_size: int = 16
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 50
    decay_every: int = 500
    grad_clip: float | None = 1.0
    base_channels: int = 16
    depth: int = 3
    norm: str = "none"
    residual: bool = True
    mask_kind: str = "stratified"
    mask_fraction: float = 0.02
    mask_replacement: str = "noise"
    mask_noise_std: float = 0.2
    normalization: str = "meanstd"
    percentiles: tuple[float, float] = (0.1, 99.9)
    forward_method: str = "auto"
    padding: str = "reflect"
    crop_border: bool = True
    validation_fraction: float = 0.01
    validate_every: int = 25
    selection_z: float = 2.0
    patience: int | None = None
    restore_best: bool = False
    tta: bool = True
    tile_size: int | None = None
    tile_halo: int = 64
    clip_output: bool = False

    def __post_init__(self):
        weights = self.loss_weights
        if isinstance(weights, Mapping):
            weights = tuple((str(k), float(v)) for k, v in weights.items())
            object.__setattr__(self, "loss_weights", weights)
        make_loss(dict(weights))  # raises for unknown terms or empty weights
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("mask_kind", self.mask_kind, MASK_KINDS)
        _check_choice("mask_replacement", self.mask_replacement, REPLACEMENTS)
        _check_choice("forward_method", self.forward_method, METHODS)
        _check_choice("padding", self.padding, PADDINGS)
        for name in ("steps", "patch_size", "patch_size_z", "batch_size", "validate_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("warmup_steps", "tile_halo", "seed"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.patch_size % 2**self.depth or self.patch_size_z % 2**self.depth:
            raise ValueError(
                f"patch sizes ({self.patch_size}, z {self.patch_size_z}) must be multiples of "
                f"2**depth = {2**self.depth}."
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        box_size(self.mask_fraction, 2)  # validates the fraction
        if not 0 <= self.validation_fraction < 0.5:
            raise ValueError(
                f"validation_fraction must be in [0, 0.5), got {self.validation_fraction}."
            )
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}."
            )
        if not self.selection_z >= 0:
            raise ValueError(f"selection_z must be >= 0, got {self.selection_z}.")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}.")
        if self.tile_size is not None and self.tile_size < 2**self.depth:
            raise ValueError(f"tile_size must be at least 2**depth = {2**self.depth}.")
        self.unet(2)  # validates the network settings

    @classmethod
    def preset(cls, name: str, **overrides) -> Config:
        """A named preset with optional overrides.

        Args:
          name: "noise2self" (Kobayashi et al. 2020), "noise2same" (Papkov et al., invariance
            after the PSF, their best in 3D) or "noise2same_d" (before the PSF, their best in
            2D).
          **overrides: any field, e.g. ``steps=500, seed=0``.

        Example:
          >>> Config.preset("noise2same_d", steps=500).steps
          500
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown Config fields {unknown}; valid fields: {sorted(fields)}.")
        settings = {"name": name, "loss_weights": tuple(PRESETS[name].items())}
        settings.update(_PRESET_SETTINGS[name])
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def default(cls, ndim: int, **overrides) -> Config:
        """The config ``fit`` uses when given none: the best preset for ``ndim`` (2 or 3).

        Example:
          >>> Config.default(3).name
          'noise2same'
        """
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}.")
        settings = dict(_DEFAULT_3D) if ndim == 3 else {}
        settings.update(overrides)
        return cls.preset(default_preset(ndim), **settings)

    def replace(self, **changes) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def unet(self, ndim: int) -> UNetConfig:
        return UNetConfig(
            ndim=ndim,
            depth=self.depth,
            base_channels=self.base_channels,
            norm=self.norm,
            residual=self.residual,
            groups=min(8, self.base_channels),
        )

    def patch_shape(self, ndim: int) -> tuple[int, ...]:
        if ndim == 2:
            return (self.patch_size, self.patch_size)
        return (self.patch_size_z, self.patch_size, self.patch_size)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["loss_weights"] = dict(self.loss_weights)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Config:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown Config fields {unknown}.")
        return cls(**d)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
