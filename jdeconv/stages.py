"""``fit`` in three stages: prepare → train → infer.

- :func:`prepare` validates the image, PSF and config, standardises the image, picks the
  held-out pixels (:mod:`jdeconv.selection`; in the centre window where the validation
  loss is evaluated) and binds the loss; nothing is compiled yet.
  A large or lazy image is not copied: its statistics are computed a block at a time and
  training reads a bounded set of regions from it (:mod:`jdeconv.sampling`).
- :func:`train` initialises the network, compiles the step once and runs the loop, with
  progress bar, history and model selection; with several devices the batch is sharded
  over them (data parallel, :func:`jdeconv.train.batch_mesh`).
- :func:`infer` applies the trained network to the whole image (tiled if configured),
  reconvolves it and returns both in the input's intensity scale.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ._checks import (
    MIN_LOSS_INTERIOR,
    check_image,
    check_psf_fits,
    image_statistics,
    is_dask_array,
    loss_patch_floor,
)
from .config import Config
from .devices import training_devices
from .forward import ForwardModel, make_forward
from .losses import Loss, make_loss
from .model import FittedModel
from .predict import fft_extension, make_predictor, predict, tile_bytes_per_pixel
from .psf import validate_psf
from .regularized import choose_sparsity, choose_weight, tikhonov_kernel
from .sampling import RegionSampler, RegionSampling, use_regions
from .selection import VALIDATION_REGION, ModelSelector, hold_out, make_validation_fn
from .symmetry import psf_symmetries
from .train import batch_mesh, init_state, make_optimizer, make_train_step
from .unet import init_unet, set_anchor

__all__ = [
    "Prepared",
    "Trained",
    "prepare",
    "train",
    "infer",
    "validate_image",
    "normalization",
    "normalization_from_statistics",
    "destandardise",
    "predict_standardised",
    "reconvolve",
]


def validate_image(image, *, name: str = "image") -> np.ndarray:
    """Check an image and return it as float64 numpy (2D YX or 3D ZYX).

    Integer images (including uint32/int64, whose arithmetic could overflow) are converted
    to float before any statistics are computed; bool, complex and object arrays, other
    ranks, NaN/Inf, empty and constant images raise ``ValueError``.

    Example:
      >>> validate_image(np.arange(16).reshape(4, 4)).dtype
      dtype('float64')
    """
    return check_image(image, name=name, allow_constant=False)


def normalization(arr: np.ndarray, cfg: Config) -> tuple[float, float]:
    """(offset, scale) so that (arr - offset) / scale is the network's input frame.

    Example:
      >>> normalization(np.array([[0.0, 2.0], [0.0, 2.0]]), Config())
      (1.0, 1.0)
    """
    if cfg.data.normalization == "percentile":
        stats = {
            "percentiles": np.percentile(arr, cfg.data.percentiles),
            "min": arr.min(),
            "max": arr.max(),
        }
    else:
        stats = {"mean": arr.mean(), "std": arr.std()}
    return normalization_from_statistics(stats, cfg)


def normalization_from_statistics(stats, cfg: Config) -> tuple[float, float]:
    """:func:`normalization` from an image's summary statistics (no pixels needed).

    Args:
      stats: ``"mean"`` and ``"std"``, or for percentile normalisation ``"percentiles"``
        (low, high) and the image's ``"min"`` and ``"max"``.
      cfg: the config whose ``data.normalization`` says which.

    Example:
      >>> normalization_from_statistics({"mean": 1.0, "std": 2.0}, Config())
      (1.0, 2.0)
    """
    if cfg.data.normalization == "percentile":
        lo, hi = stats["percentiles"]
        if hi <= lo:
            lo, hi = stats["min"], stats["max"]
        return float(lo), float(hi - lo)
    return float(stats["mean"]), float(stats["std"])


def destandardise(y_std, offset: float, scale: float, *, clip_range=None, out=None) -> np.ndarray:
    """Back to the input's intensity scale, float32 (optionally clipped to its range).

    Computed in float64 a block of planes at a time, so a large image needs no full-size
    float64 copy; ``out`` (a float32 array of the same shape, e.g. ``y_std`` itself)
    receives the result in place.

    Example:
      >>> destandardise(np.zeros(2), 5.0, 2.0)
      array([5., 5.], dtype=float32)
    """
    y_std = np.asarray(y_std)
    if out is None:
        out = np.empty(y_std.shape, np.float32)
    for block in _plane_blocks(y_std.shape):
        y = y_std[block].astype(np.float64)
        y *= scale
        y += offset
        if clip_range is not None:
            np.clip(y, *clip_range, out=y)
        out[block] = y
        del y  # before the next block is converted: one block of float64 at a time
    return out


def _plane_blocks(shape, *, block_bytes: int = 2**20):
    """Slices along the first axis, each at most about ``block_bytes`` of float64."""
    if len(shape) == 0:
        return [()]
    per_plane = 8 * math.prod(shape[1:])
    step = max(1, block_bytes // max(per_plane, 1))
    return [slice(i, i + step) for i in range(0, shape[0], step)] or [slice(0, 0)]


def predict_standardised(
    model: FittedModel,
    x,
    *,
    tile_size=None,
    offset: float = 0.0,
    scale: float = 1.0,
    max_memory=None,
) -> np.ndarray:
    """The model's output on ``(x - offset) / scale`` (whole or tiled, with the config's TTA).

    ``x`` is standardised a tile at a time (see :func:`jdeconv.predict.predict`); the tile
    size is ``tile_size``, else the config's, else the largest that fits the memory
    budget (``max_memory``, bytes or a string like ``"2GB"``; None: a share of the free
    memory). The result is float32, in the standardised frame.

    Example:
      >>> import jdeconv
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8, tta=False)
      >>> _, params = init_unet(0, cfg.unet(2))
      >>> m = FittedModel(params, cfg, 2, jdeconv.psf.gaussian_psf((3, 3), 1.0))
      >>> predict_standardised(m, np.zeros((8, 8), np.float32)).shape
      (8, 8)
    """
    inf = model.config.inference
    network = model.network
    return predict(
        make_predictor(model.inference_graphdef),
        model.inference_params,
        x,
        multiple=model.multiple,
        tile_size=inf.tile_size if tile_size is None else tile_size,
        halo=model.tile_context(),
        # The anchor alone commutes with the PSF's symmetries (to float rounding):
        # test-time augmentation would average copies of one image.
        tta=psf_symmetries(model.psf) if inf.tta and not network.anchor_only else False,
        offset=offset,
        scale=scale,
        max_memory=max_memory,
        bytes_per_pixel=tile_bytes_per_pixel(network),
        fft_extension=fft_extension(network),
    )


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` hands to training and inference.

    Attributes:
      cfg: the config (patch sizes adapted to a small image).
      psf: the validated PSF (float32, sum 1).
      x: the standardised image (float32 numpy); None when training from regions.
      x_train: ``x`` with the held-out pixels hidden (device array); None with regions.
      held_out: bool mask of the held-out pixels (all in the validation window,
        :data:`jdeconv.selection.VALIDATION_REGION` at the centre), or None.
      offset, scale: the standardisation, ``x = (image - offset) / scale``.
      input_range: the input's (min, max), in its own units.
      loss: the loss, its bound terms bound to the input's range.
      train_key: the key of patch sampling and masks.
      anchor: the network's fixed Tikhonov filter (``cfg.network.anchor``), or None (a
        non-negative anchor's PSF is ``psf``).
      source: the image as given (read by the sampler and inference); None when ``x``
        holds it.
      sampler: the :class:`jdeconv.sampling.RegionSampler` of a large or lazy image, or
        None (whole-array training).

    Example:
      >>> import jdeconv
      >>> p = prepare(np.random.default_rng(0).random((32, 32)),
      ...             jdeconv.psf.gaussian_psf((3, 3), 1.0), jdeconv.Config(patch_size=16, depth=2))
      >>> p.forward((16, 16)).shape
      (16, 16)
    """

    cfg: Config
    psf: np.ndarray
    x: np.ndarray
    x_train: jax.Array
    held_out: jax.Array | None
    offset: float
    scale: float
    input_range: tuple[float, float]
    loss: Loss
    train_key: jax.Array
    anchor: np.ndarray | None = None
    source: object = None
    sampler: RegionSampler | None = None

    @property
    def ndim(self) -> int:
        return self.psf.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape if self.x is not None else self.source.shape)

    def standardised_prediction(self, model: FittedModel, *, max_memory=None) -> np.ndarray:
        """The model's output on the whole image (standardised frame, float32)."""
        if self.x is not None:
            return predict_standardised(model, self.x, max_memory=max_memory)
        return predict_standardised(
            model, self.source, offset=self.offset, scale=self.scale, max_memory=max_memory
        )

    def forward(self, shape) -> ForwardModel:
        """The forward model for arrays of ``shape``, as the config says."""
        f = self.cfg.forward
        return make_forward(self.psf, shape, method=f.method, padding=f.padding)

    def destandardise(self, y_std) -> np.ndarray:
        clip = self.cfg.inference.clip_range(*self.input_range)
        return destandardise(y_std, self.offset, self.scale, clip_range=clip)


@dataclasses.dataclass(frozen=True)
class Trained:
    """What :func:`train` returns: parameters, history, kept step and timings.

    Example:
      >>> import jdeconv
      >>> cfg = jdeconv.Config(patch_size=16, depth=2, steps=1, batch_size=2)
      >>> p = prepare(np.random.default_rng(0).random((32, 32)),
      ...             jdeconv.psf.gaussian_psf((3, 3), 1.0), cfg)
      >>> train(p, verbose=False).best_step
      1
    """

    params: object
    history: dict
    best_step: int
    timings: dict


def _adapt_patch(cfg: Config, shape: tuple[int, ...], psf_shape) -> Config:
    """The config's training patch fitted to the image and the PSF, with a warning for
    each change; raise if the image is too small for the network.

    A patch larger than the image is shrunk to it. With ``crop_border`` (the loss only
    where the blur sees real pixels), a patch whose interior the PSF leaves under
    ``MIN_LOSS_INTERIOR`` (8) voxels on an axis is grown (in steps of the network's size
    multiple, within the image) until it does not (a 31³ PSF in a 32-plane patch left 2
    planes); where even the whole image leaves fewer than 4, the loss covers whole patches
    (``crop_border=False``: their borders see the padded blur) instead of failing.
    """
    m = cfg.network.multiple
    ndim = len(shape)
    want = cfg.patch_shape(ndim)
    cap = tuple((n // m) * m for n in shape)
    fit_shape = [min(p, c) for p, c in zip(want, cap, strict=True)]
    yx = slice(ndim - 2, ndim)  # Y and X share one patch size
    fit_shape[yx] = [min(fit_shape[yx])] * 2
    fit_shape = tuple(fit_shape)
    if min(fit_shape) < m:
        raise ValueError(
            f"image shape {shape} is smaller than the network's minimum patch ({m} per axis "
            f"for depth {cfg.depth}); use a larger image or a smaller depth."
        )
    if fit_shape != want:
        warnings.warn(
            f"image {shape} is smaller than the patch {want}; training on patches of "
            f"{fit_shape} instead.",
            stacklevel=4,
        )
    if cfg.forward.crop_border:
        border = tuple(2 * (k // 2) for k in psf_shape)
        need = [loss_patch_floor(k, m) for k in psf_shape]
        grown = [min(max(p, n), c) for p, n, c in zip(fit_shape, need, cap, strict=True)]
        grown[yx] = [min(max(grown[yx]), min(cap[yx]))] * 2
        grown = tuple(grown)
        interior = [g - b for g, b in zip(grown, border, strict=True)]
        if min(interior) < 4:
            warnings.warn(
                f"a PSF of {tuple(psf_shape)} leaves no interior for the loss in patches of "
                f"image {shape}; the loss covers whole patches instead (crop_border=False: "
                "their borders see the padded blur). An image at least the PSF's size plus "
                f"{MIN_LOSS_INTERIOR} per axis avoids this.",
                stacklevel=4,
            )
            cfg = cfg.replace(crop_border=False)
        elif grown != fit_shape:
            warnings.warn(
                f"a PSF of {tuple(psf_shape)} leaves less than {MIN_LOSS_INTERIOR} voxels "
                f"per axis of a {fit_shape} patch for the loss; training on patches of "
                f"{grown} instead (set patch_size/patch_size_z to choose).",
                stacklevel=4,
            )
            fit_shape = grown
    if fit_shape != want:
        cfg = cfg.replace(patch_size=fit_shape[-1])
        if ndim == 3:
            cfg = cfg.replace(patch_size_z=fit_shape[0])
    return cfg


def prepare(
    image, psf, cfg: Config | None = None, *, normalize_psf: bool = False, sampling=None
) -> Prepared:
    """Validate and standardise; hold out pixels; bind the loss (no compilation).

    With ``sampling`` (or, when None, for a lazy image or one above
    :data:`jdeconv.sampling.BOUNDED_TRAINING_VOXELS` voxels) the image is not copied:
    its statistics are computed a block at a time and a
    :class:`jdeconv.sampling.RegionSampler` reads the training data.

    Args:
      image, psf, cfg, normalize_psf: as :func:`jdeconv.fit`.
      sampling: None (automatic), "whole", "regions" or a
        :class:`jdeconv.sampling.RegionSampling`.

    Raises:
      ValueError: for a bad image, PSF or config.

    Example:
      >>> import jdeconv
      >>> p = prepare(np.random.default_rng(0).random((32, 32)),
      ...             jdeconv.psf.gaussian_psf((3, 3), 1.0),
      ...             jdeconv.Config(patch_size=16, depth=2))
      >>> p.x.shape, p.x.dtype
      ((32, 32), dtype('float32'))
    """
    if use_regions(image, sampling):
        settings = sampling if isinstance(sampling, RegionSampling) else RegionSampling()
        return _prepare_regions(image, psf, cfg, normalize_psf=normalize_psf, settings=settings)
    arr = validate_image(image)
    ndim = arr.ndim
    psf = validate_psf(psf, ndim=ndim, normalize=normalize_psf)
    check_psf_fits(psf.shape, arr.shape)
    if cfg is None:
        cfg = Config.default(ndim)
    if not isinstance(cfg, Config):
        raise ValueError(f"cfg must be a jdeconv.Config or None, got {type(cfg).__name__}.")
    cfg = _adapt_patch(cfg, arr.shape, psf.shape)

    offset, scale = normalization(arr, cfg)
    x = ((arr - offset) / scale).astype(np.float32)
    input_range = (float(arr.min()), float(arr.max()))
    lower, upper = ((v - offset) / scale for v in input_range)
    anchor = None
    if cfg.network.anchor != "none":
        cfg, anchor = _anchor(cfg, x, psf, lower=lower)
    loss = _bind_loss(cfg, lower, upper)

    key = jax.random.key(cfg.seed)
    train_key, val_key = jax.random.split(key)
    x_dev = jnp.asarray(x)
    if cfg.validation.fraction > 0:
        # Held out only where the validation loss is evaluated (the centre window), as
        # training from regions does: the two then train on the same pixels.
        window = _centre_window(x.shape, VALIDATION_REGION[ndim])
        hidden, held = hold_out(val_key, x_dev[window], fraction=cfg.validation.fraction)
        x_train = x_dev.at[window].set(hidden)
        held_out = jnp.zeros(x.shape, bool).at[window].set(held)
    else:
        x_train, held_out = x_dev, None
    return Prepared(
        cfg, psf, x, x_train, held_out, offset, scale, input_range, loss, train_key, anchor
    )


def _bind_loss(cfg: Config, lower: float, upper: float):
    """The config's loss with the hyper-parameters ``fit`` fills: the input's range in the
    standardised frame (``lower``/``upper``) and, for a non-negative anchor, its
    penalties' weights (the ``prior`` term's ``laplacian_weight`` and ``sparsity``)."""
    defaults = {"lower": lower, "upper": upper}
    net = cfg.network
    if net.anchor == "nonneg_tikhonov":
        defaults.update(laplacian_weight=net.anchor_weight, sparsity=net.anchor_sparsity or 0.0)
    elif any(
        spec.name == "prior" and "laplacian_weight" not in dict(spec.params) for spec in cfg.loss
    ):
        raise ValueError(
            "the 'prior' loss term takes its weights from a non-negative anchor: set "
            "anchor='nonneg_tikhonov', or give the term laplacian_weight and sparsity."
        )
    return make_loss(cfg.loss, defaults=defaults)


def _anchor(
    cfg: Config, x: np.ndarray, psf: np.ndarray, *, lower: float
) -> tuple[Config, np.ndarray]:
    """The Tikhonov filter of the anchored network; the config records its weight and shape
    (and, for a non-negative anchor, the PSF's shape, the bound ``lower``, the input's
    minimum in standardised units, and the ℓ1 weight).

    The weight is chosen on the standardised image (λ does not depend on the intensity
    scale) by generalised cross-validation, unless the config gives one; the ℓ1 weight,
    in standardised units, by :func:`jdeconv.regularized.choose_sparsity`, likewise.
    """
    weight = cfg.network.anchor_weight
    if weight is None:
        weight = choose_weight(x, psf)
    kernel = tikhonov_kernel(psf, weight)
    network = dataclasses.replace(
        cfg.network, anchor_weight=float(weight), anchor_shape=kernel.shape
    )
    if cfg.network.anchor == "nonneg_tikhonov":
        sparsity = cfg.network.anchor_sparsity
        if sparsity is None:
            sparsity = choose_sparsity(x, psf)
        network = dataclasses.replace(
            network,
            anchor_psf_shape=psf.shape,
            anchor_lower=float(lower),
            anchor_sparsity=float(sparsity),
        )
    return cfg.replace(network=network), kernel


def _prepare_regions(image, psf, cfg, *, normalize_psf: bool, settings) -> Prepared:
    """:func:`prepare` for training from regions: nothing full-size is made."""
    if not is_dask_array(image) and not isinstance(image, np.ndarray):
        image = _as_dask(image)
    ndim = len(image.shape)
    if cfg is None and ndim in (2, 3):
        cfg = Config.default(ndim)
    if cfg is not None and not isinstance(cfg, Config):
        raise ValueError(f"cfg must be a jdeconv.Config or None, got {type(cfg).__name__}.")
    percentiles = None
    if cfg is not None and cfg.data.normalization == "percentile":
        percentiles = cfg.data.percentiles
    stats = image_statistics(image, percentiles=percentiles)  # the image checks too
    psf = validate_psf(psf, ndim=ndim, normalize=normalize_psf)
    check_psf_fits(psf.shape, image.shape)
    cfg = _adapt_patch(cfg, tuple(image.shape), psf.shape)
    offset, scale = normalization_from_statistics(stats, cfg)
    input_range = (stats["min"], stats["max"])
    lower, upper = ((v - offset) / scale for v in input_range)
    key = jax.random.key(cfg.seed)
    train_key, val_key = jax.random.split(key)
    sampler = RegionSampler(
        image,
        cfg.patch_shape(ndim),
        offset=offset,
        scale=scale,
        key=train_key,
        batch_size=cfg.data.batch_size,
        validation_key=val_key if cfg.validation.fraction > 0 else None,
        validation_fraction=cfg.validation.fraction,
        settings=settings,
    )
    anchor = None
    if cfg.network.anchor != "none":
        # λ by GCV on the centre window (read once), standardised as the whole image.
        window = _centre_window(tuple(image.shape), VALIDATION_REGION[ndim])
        crop = (np.asarray(image[window], dtype=np.float64) - offset) / scale
        cfg, anchor = _anchor(cfg, crop.astype(np.float32), psf, lower=lower)
    loss = _bind_loss(cfg, lower, upper)
    return Prepared(
        cfg,
        psf,
        None,
        None,
        None,
        offset,
        scale,
        input_range,
        loss,
        train_key,
        anchor,
        source=image,
        sampler=sampler,
    )


def _as_dask(image):
    """A lazy array-like (e.g. a ``zarr.Array``) as dask, so statistics stream."""
    try:
        import dask.array as da
    except ImportError:
        return np.asarray(image)
    return da.from_array(image)


def _validation_data(prepared: Prepared):
    """``(x_train, x, held_out)`` of the validation window, or None (nothing held out)."""
    if prepared.sampler is not None:
        return prepared.sampler.validation()
    if prepared.held_out is None:
        return None
    window = _centre_window(prepared.x.shape, VALIDATION_REGION[prepared.ndim])
    return prepared.x_train[window], prepared.x[window], np.asarray(prepared.held_out[window])


def _centre_window(shape, limit):
    return tuple(
        slice((n - min(n, lim)) // 2, (n - min(n, lim)) // 2 + min(n, lim))
        for n, lim in zip(shape, limit, strict=True)
    )


def _record(history, step, metrics):
    history["step"].append(step)
    for name, value in metrics.items():
        history.setdefault(name, []).append(float(value))


# Steps between fetches of the pending metrics (the divergence check): one device sync
# per chunk, never one per step.
CHECK_EVERY = 10


def _divergence_advice(cfg: Config) -> str:
    weights = ", ".join(f"{name} {weight:g}" for name, weight in cfg.loss_weights)
    return (
        f"lower the learning rate (learning_rate={cfg.optim.learning_rate:g} now, try "
        f"{cfg.optim.learning_rate / 10:g}), clip the gradients (grad_clip="
        f"{cfg.optim.grad_clip} now, try 0.5) or check the loss weights ({weights}) and "
        "any custom loss term for NaN/Inf."
    )


def _drain(history, pending, first_step, cfg: Config) -> None:
    """Fetch the pending metrics (one sync), record them, stop at a non-finite loss.

    Raises:
      FloatingPointError: naming the first step whose loss is NaN or Inf and the
        settings to change.
    """
    for step, metrics in enumerate(jax.device_get(pending), start=first_step):
        _record(history, step, metrics)
        bad = [name for name, value in metrics.items() if not np.all(np.isfinite(value))]
        if bad:
            value = float(metrics["loss"]) if "loss" in metrics else float("nan")
            raise FloatingPointError(
                f"training diverged: the loss became {value} at step {step} of {cfg.steps} "
                f"(non-finite: {', '.join(sorted(bad))}); {_divergence_advice(cfg)}"
            )
    pending.clear()


def train(prepared: Prepared, *, verbose: bool = True, callback=None) -> Trained:
    """Initialise the network, compile the step once, and run the training loop.

    With more than one device (``jax.devices()``; across hosts after
    ``jax.distributed.initialize()``), the batch of patches is sharded over all of them
    and everything else replicated; ``batch_size`` must be a multiple of the accelerator
    count (a CPU split by :func:`jdeconv.use_cpu_devices` uses the most of its devices
    that divide it). ``timings["devices"]`` says how many trained.

    Args:
      prepared: from :func:`prepare`.
      verbose: show a progress bar with the loss and validation loss.
      callback: ``callback(step, val_loss, deconvolve_fn)`` after every validation (see
        :func:`jdeconv.fit`); return True to stop.

    Raises:
      FloatingPointError: the loss (or the held-out loss) became NaN or Inf; names the
        step and the settings to change. The loss is checked every ``CHECK_EVERY``
        steps, at validations and at the end.

    Example:
      >>> import jdeconv
      >>> cfg = jdeconv.Config(patch_size=16, depth=2, steps=2, batch_size=2)
      >>> p = prepare(np.random.default_rng(0).random((32, 32)),
      ...             jdeconv.psf.gaussian_psf((3, 3), 1.0), cfg)
      >>> train(p, verbose=False).history["step"]
      [1, 2]
    """
    cfg, ndim = prepared.cfg, prepared.ndim
    mesh = batch_mesh(cfg.data.batch_size, devices=training_devices(cfg.data.batch_size))
    graphdef, params = init_unet(cfg.seed, cfg.unet(ndim))
    if prepared.anchor is not None:
        nonneg = cfg.network.anchor == "nonneg_tikhonov"
        params = set_anchor(params, prepared.anchor, psf=prepared.psf if nonneg else None)
    tx = make_optimizer(cfg)
    g_patch = prepared.forward(cfg.patch_shape(ndim))
    step_fn = make_train_step(
        graphdef,
        prepared.loss,
        tx,
        batch_size=cfg.data.batch_size,
        masks=cfg.masks,
        crop_border=cfg.forward.crop_border,
        mesh=mesh,
        augment=psf_symmetries(prepared.psf),
    )
    state = init_state(params, tx)
    key, x_train = prepared.train_key, prepared.x_train
    sampler, next_regions = prepared.sampler, None
    if sampler is not None:  # a large image: the coming steps' crops, the next set read meanwhile
        x_train = jnp.asarray(sampler.regions(0))
        if sampler.refresh_every < cfg.steps:
            next_regions = sampler.prefetch(1)
    replicated = None
    if mesh is not None:
        replicated = NamedSharding(mesh, PartitionSpec())
        key, state, x_train, g_patch = jax.device_put((key, state, x_train, g_patch), replicated)

    t0 = time.perf_counter()
    compiled = step_fn.lower(key, state, x_train, g_patch).compile()
    validate = None
    validation = _validation_data(prepared)
    if validation is not None:
        val_train, val_x, val_held = validation
        index = np.nonzero(val_held)
        net = cfg.network
        prior = None
        if net.anchor == "nonneg_tikhonov":  # score with the anchor's objective (selection.py)
            prior = (net.anchor_weight, net.anchor_sparsity or 0.0, net.anchor_lower)
        validate_fn = make_validation_fn(graphdef, index, prior=prior)
        val_args = (jnp.asarray(val_train), jnp.asarray(val_x), prepared.forward(val_x.shape))

        def validate(p):
            return np.asarray(validate_fn(p, *val_args), dtype=np.float64)

    compile_s = time.perf_counter() - t0

    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_loss": []}
    selector = ModelSelector.from_config(cfg)
    every = cfg.validation.every
    if validate is not None and prepared.anchor is not None:
        # Step 0 is the classical solution alone (the U-Net's head starts at zero): a
        # candidate like any other, kept unless training does significantly better.
        residuals = validate(state.params)
        history["val_step"].append(0)
        history["val_loss"].append(float(residuals.mean()))
        selector.update(0, residuals, state.params)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, disable=not verbose, desc="jdeconv fit", unit="step", leave=verbose)
    steps_run = 0
    # Per-step metrics stay on the device and are fetched in chunks (_drain): every
    # CHECK_EVERY steps, at validations and at the end, so a diverged loss stops training
    # within CHECK_EVERY steps without a device sync per step.
    pending = []
    try:
        for i in range(cfg.steps):
            if next_regions is not None and i > 0 and i % sampler.refresh_every == 0:
                x_train = jax.device_put(next_regions.result(), replicated)
                refresh = i // sampler.refresh_every + 1
                more = refresh * sampler.refresh_every < cfg.steps
                next_regions = sampler.prefetch(refresh) if more else None
            state, metrics = compiled(key, state, x_train, g_patch)
            steps_run = i + 1
            pending.append(metrics)
            validating = validate is not None and (steps_run % every == 0 or steps_run == cfg.steps)
            if validating or steps_run % CHECK_EVERY == 0:
                _drain(history, pending, steps_run - len(pending) + 1, cfg)
            if validating:
                residuals = validate(state.params)
                val = float(residuals.mean())
                if not math.isfinite(val):
                    raise FloatingPointError(
                        f"training diverged: the held-out loss became {val} at step "
                        f"{steps_run} of {cfg.steps}; {_divergence_advice(cfg)}"
                    )
                history["val_step"].append(steps_run)
                history["val_loss"].append(val)
                selector.update(steps_run, residuals, state.params)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", val=f"{val:.4g}", refresh=False)
                stop = False
                if callback is not None:
                    current = FittedModel(state.params, cfg, ndim, prepared.psf)
                    stop = bool(
                        callback(
                            steps_run,
                            val,
                            lambda m=current: prepared.destandardise(
                                prepared.standardised_prediction(m)
                            ),
                        )
                    )
                if stop or selector.should_stop():
                    bar.update(steps_run - bar.n)
                    break
            elif steps_run % 10 == 0:
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if sampler is not None:
            sampler.close()
    _drain(history, pending, steps_run - len(pending) + 1, cfg)
    jax.block_until_ready(state.params)
    train_s = time.perf_counter() - t0

    if cfg.validation.restore_best and selector.kept_params is not None:
        params, best_step = selector.kept_params, selector.kept_step
    else:
        params, best_step = state.params, steps_run
    if mesh is not None:  # the model lives on one device, as after a one-device fit
        params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), params)
    timings = {
        "compile": compile_s,
        "train": train_s,
        "steps": steps_run,
        "seconds_per_step": train_s / max(steps_run, 1),
        "devices": 1 if mesh is None else mesh.size,
    }
    return Trained(params, history, best_step, timings)


def release_memory() -> None:
    """Return freed memory to the operating system: after training, and after each block
    of lazy inference.

    Freed buffers go back to the C allocator, which keeps the pages for reuse (on a CPU,
    about 350 MB after training the default 3D network), so they count again on top of
    inference's peak; blocks predicted in several threads leave such pages behind too
    (64×1024², 2 threads: 2.98 GB peak without, 2.48 GB with a release after each block,
    in the same time). A garbage collection and glibc's ``malloc_trim`` hand them back;
    elsewhere this only collects.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def infer(
    prepared: Prepared, model: FittedModel, *, max_memory=None
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(deconvolved, reconvolved, seconds)`` of the whole image, in the input's scale.

    ``max_memory`` bounds one inference tile (:func:`jdeconv.predict.memory_budget`).

    Raises:
      FloatingPointError: the deconvolved image has NaN or Inf pixels (never returned).

    Example:
      >>> import jdeconv
      >>> cfg = jdeconv.Config(patch_size=16, depth=2, steps=1, batch_size=2, tta=False)
      >>> p = prepare(np.random.default_rng(0).random((32, 32)),
      ...             jdeconv.psf.gaussian_psf((3, 3), 1.0), cfg)
      >>> t = train(p, verbose=False)
      >>> infer(p, FittedModel(t.params, p.cfg, 2, p.psf))[0].shape
      (32, 32)
    """
    if prepared.sampler is not None:
        return _infer_from_source(prepared, model, max_memory=max_memory)
    t0 = time.perf_counter()
    deconvolved_std = predict_standardised(model, prepared.x, max_memory=max_memory)
    g_full = prepared.forward(prepared.x.shape)
    reconvolved_std = np.asarray(_blur(g_full, jnp.asarray(deconvolved_std)))
    seconds = time.perf_counter() - t0
    reconvolved = destandardise(reconvolved_std, prepared.offset, prepared.scale)
    deconvolved = prepared.destandardise(deconvolved_std)
    _check_finite_result(deconvolved, model)
    return deconvolved, reconvolved, seconds


def _check_finite_result(deconvolved: np.ndarray, model: FittedModel) -> None:
    # Never hand back a non-finite image in silence: raise, as training does when its
    # loss diverges (the parameters may have turned NaN on the last steps, after the
    # last loss was computed).
    bad = int(np.count_nonzero(~np.isfinite(deconvolved)))
    if bad:
        raise FloatingPointError(
            f"the deconvolved image has {bad} of {deconvolved.size} non-finite pixels (NaN "
            f"or Inf): training diverged or the parameters are broken; "
            f"{_divergence_advice(model.config)}"
        )


def _infer_from_source(prepared: Prepared, model: FittedModel, *, max_memory=None):
    """:func:`infer` for an image trained from regions: streamed, or lazy for dask.

    A NumPy image is predicted a tile at a time into a float32 result and reblurred a
    slab at a time (:func:`reconvolve`); a dask image gives lazy results (computing
    ``reconvolved`` runs the network on the blocks again) and 0 seconds.
    """
    cfg = prepared.cfg
    clip = cfg.inference.clip_range(*prepared.input_range)
    f = cfg.forward
    if is_dask_array(prepared.source):
        from .lazy import blur_dask, predict_dask

        options = dict(offset=prepared.offset, scale=prepared.scale, max_memory=max_memory)
        deconvolved = predict_dask(prepared.source, model, clip_range=clip, **options)
        standardised = predict_dask(prepared.source, model, destandardise=False, **options)
        reblurred = blur_dask(standardised, prepared.psf, method=f.method, padding=f.padding)
        reconvolved = reblurred.map_blocks(
            destandardise, prepared.offset, prepared.scale, dtype=np.float32
        )
        return deconvolved, reconvolved, 0.0
    t0 = time.perf_counter()
    deconvolved_std = prepared.standardised_prediction(model, max_memory=max_memory)
    reconvolved_std = reconvolve(deconvolved_std, prepared.psf, method=f.method, padding=f.padding)
    seconds = time.perf_counter() - t0
    reconvolved = destandardise(
        reconvolved_std, prepared.offset, prepared.scale, out=reconvolved_std
    )
    deconvolved = destandardise(
        deconvolved_std, prepared.offset, prepared.scale, clip_range=clip, out=deconvolved_std
    )
    _check_finite_result(deconvolved, model)
    return deconvolved, reconvolved, seconds


def reconvolve(x, psf, *, method: str = "fft", padding: str = "reflect", slab_voxels: int = 2**22):
    """The PSF blur of ``x`` computed in slabs along the first axis, float32.

    Each slab of about ``slab_voxels`` voxels is extended by half the PSF on both sides
    (not past the image's edges, where the forward model pads as for the whole image),
    blurred and trimmed, so the result equals the whole-image blur to float rounding
    while the working memory stays that of one slab.

    Example:
      >>> import jdeconv
      >>> x = np.random.default_rng(0).random((40, 30)).astype(np.float32)
      >>> psf = jdeconv.psf.gaussian_psf((5, 5), 1.0)
      >>> whole = np.asarray(make_forward(psf, x.shape)(jnp.asarray(x)))
      >>> bool(np.allclose(reconvolve(x, psf, slab_voxels=300), whole, atol=1e-6))
      True
    """
    n = x.shape[0]
    half = psf.shape[0] // 2
    step = max(psf.shape[0], slab_voxels // max(1, math.prod(x.shape[1:])))
    out = np.empty(x.shape, np.float32)
    for start in range(0, n, step):
        stop = min(start + step, n)
        lo, hi = max(0, start - half), min(n, stop + half)
        lo = max(0, min(lo, hi - psf.shape[0]))  # a short last slab: more real neighbours
        slab = np.asarray(x[lo:hi], np.float32)
        g = make_forward(psf, slab.shape, method=method, padding=padding)
        blurred = np.asarray(_blur(g, jnp.asarray(slab)))
        out[start:stop] = blurred[start - lo : stop - lo]
    return out


@jax.jit
def _blur(g, x):
    return g(x)
