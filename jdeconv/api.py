"""``fit``, ``deconvolve``, and saving/loading fitted models."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from . import __version__
from ._checks import check_image
from .config import Config
from .forward import make_forward
from .losses import make_loss
from .masks import bernoulli_mask, replace_masked
from .predict import make_predictor, predict
from .psf import validate_psf
from .train import TrainState, make_optimizer, make_train_step, make_validation_fn
from .unet import UNet, init_unet

__all__ = [
    "FitResult",
    "FittedModel",
    "fit",
    "deconvolve",
    "save_model",
    "load_model",
    "validate_image",
]

MODEL_FORMAT = 1
# Largest region the held-out validation loss is evaluated on (a centre crop beyond it).
_VALIDATION_REGION = {2: (512, 512), 3: (48, 128, 128)}


def validate_image(image, *, name: str = "image") -> np.ndarray:
    """Check an image and return it as float64 numpy (2D YX or 3D ZYX).

    Integer images (including uint32/int64, whose arithmetic could overflow) are converted
    to float before any statistics are computed; bool, complex and object arrays, other
    ranks, NaN/Inf, empty and constant images raise ``ValueError``.
    """
    arr = check_image(image, name=name)
    if np.ptp(arr) == 0:
        raise ValueError(
            f"{name} is constant (all {arr.flat[0]:g}); there is nothing to deconvolve."
        )
    return arr


def _normalization(arr: np.ndarray, cfg: Config) -> tuple[float, float]:
    """(offset, scale) so that (arr - offset) / scale is the network's input frame."""
    if cfg.normalization == "percentile":
        lo, hi = np.percentile(arr, cfg.percentiles)
        if hi <= lo:
            lo, hi = arr.min(), arr.max()
        return float(lo), float(hi - lo)
    return float(arr.mean()), float(arr.std())


@dataclasses.dataclass
class FittedModel:
    """A trained network with everything needed to apply it to other images.

    Attributes:
      params: network parameters (an ``nnx.State``).
      config: the :class:`Config` it was trained with.
      ndim: 2 or 3.
      psf: the PSF it was trained with (for ``reconvolved``).
      version: jdeconv version that trained it.
    """

    params: nnx.State
    config: Config
    ndim: int
    psf: np.ndarray
    version: str = __version__


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      deconvolved: float32 array of the input's shape, in the input's intensity scale.
      reconvolved: the deconvolved image blurred again by the PSF (should match the input
        minus noise).
      model: the :class:`FittedModel` (use with :func:`deconvolve` and :func:`save_model`).
      history: every step's ``"loss"`` and loss terms (``{"step": [1, 2, ...], "loss":
        [...], <term>: [...]}``) and the held-out blind-spot loss (``"val_step"``,
        ``"val_loss"``).
      best_step: the step whose parameters were kept (by validation loss), or the last.
      timings: seconds for ``compile``, ``train``, ``inference``, ``total`` and ``steps``
        run.
    """

    deconvolved: np.ndarray
    reconvolved: np.ndarray
    model: FittedModel
    history: dict
    best_step: int
    timings: dict


def _abstract_model(cfg: Config, ndim: int):
    model = nnx.eval_shape(lambda: UNet(cfg.unet(ndim), rngs=nnx.Rngs(0)))
    return nnx.split(model, nnx.Param)


def _adapt_patch(cfg: Config, shape: tuple[int, ...], psf_shape) -> Config:
    """Shrink patches to fit a small image (a documented adaptation), or raise."""
    m = 2**cfg.depth
    want = cfg.patch_shape(len(shape))
    fit_shape = tuple(min(p, (n // m) * m) for p, n in zip(want, shape, strict=True))
    if min(fit_shape) < m:
        raise ValueError(
            f"image shape {shape} is smaller than the network's minimum patch ({m} per axis "
            f"for depth {cfg.depth}); use a larger image or a smaller depth."
        )
    if cfg.crop_border:
        interior = [p - 2 * (k // 2) for p, k in zip(fit_shape, psf_shape, strict=True)]
        if min(interior) < 4:
            raise ValueError(
                f"patch {fit_shape} leaves no interior for the loss with a PSF of "
                f"{tuple(psf_shape)}; use larger patches (patch_size/patch_size_z) or "
                "crop_border=False."
            )
    if fit_shape != want:
        warnings.warn(
            f"image {shape} is smaller than the patch {want}; training on patches of "
            f"{fit_shape} instead.",
            stacklevel=3,
        )
        if len(shape) == 2:
            cfg = cfg.replace(patch_size=min(fit_shape))
        else:
            cfg = cfg.replace(patch_size_z=fit_shape[0], patch_size=min(fit_shape[1:]))
    return cfg


def _centre_window(shape, limit):
    return tuple(
        slice((n - min(n, lim)) // 2, (n - min(n, lim)) // 2 + min(n, lim))
        for n, lim in zip(shape, limit, strict=True)
    )


def fit(
    image,
    psf,
    cfg: Config | None = None,
    *,
    verbose: bool = True,
    normalize_psf: bool = False,
    callback=None,
) -> FitResult:
    """Learn a deconvolution of one noisy image with its known PSF, self-supervised.

    Args:
      image: 2D (YX) or 3D (ZYX) array, any real dtype.
      psf: PSF of the same rank, odd-sized and centred; it must sum to 1 unless
        ``normalize_psf``.
      cfg: a :class:`Config`; None uses ``Config.default(image.ndim)``.
      verbose: show a progress bar with the loss and validation loss.
      normalize_psf: divide the PSF by its sum instead of raising.
      callback: optional ``callback(step, val_loss, deconvolve_fn)`` called after every
        validation; ``deconvolve_fn()`` returns the current deconvolved image (numpy, input
        scale). Return ``True`` to stop training. For research and benchmarks.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: for bad images, PSFs or configs, before any compilation.

    Example:
      >>> import numpy as np, jdeconv
      >>> rng = np.random.default_rng(0)
      >>> noisy = rng.random((32, 32)).astype(np.float32)
      >>> psf = jdeconv.psf.gaussian_psf((5, 5), 1.0)
      >>> cfg = jdeconv.Config.preset("noise2self", steps=2, batch_size=2, patch_size=16)
      >>> jdeconv.fit(noisy, psf, cfg, verbose=False).deconvolved.shape
      (32, 32)
    """
    t_start = time.perf_counter()
    arr = validate_image(image)
    ndim = arr.ndim
    psf = validate_psf(psf, ndim=ndim, normalize=normalize_psf)
    if any(k > n for k, n in zip(psf.shape, arr.shape, strict=True)):
        raise ValueError(
            f"PSF shape {psf.shape} is larger than the image {arr.shape}; crop the PSF."
        )
    if cfg is None:
        cfg = Config.default(ndim)
    if not isinstance(cfg, Config):
        raise ValueError(f"cfg must be a jdeconv.Config or None, got {type(cfg).__name__}.")
    cfg = _adapt_patch(cfg, arr.shape, psf.shape)

    offset, scale = _normalization(arr, cfg)
    x = ((arr - offset) / scale).astype(np.float32)
    bounds = ((arr.min() - offset) / scale, (arr.max() - offset) / scale)

    key = jax.random.key(cfg.seed)
    train_key, val_key = jax.random.split(key)
    x_dev = jnp.asarray(x)
    if cfg.validation_fraction > 0:
        held_out = bernoulli_mask(val_key, x.shape, fraction=cfg.validation_fraction)
        # Training never sees held-out pixels: replaced by their neighbours' mean.
        x_train = replace_masked(None, x_dev, held_out, replacement="local_mean")
    else:
        held_out, x_train = None, x_dev

    graphdef, params = init_unet(cfg.unet(ndim), seed=cfg.seed)
    tx = make_optimizer(cfg)
    loss = make_loss(dict(cfg.loss_weights))
    g_patch = make_forward(
        psf, cfg.patch_shape(ndim), method=cfg.forward_method, padding=cfg.padding
    )
    step_fn = make_train_step(graphdef, loss, g_patch, tx, cfg, key=train_key, bounds=bounds)
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))

    t0 = time.perf_counter()
    compiled = step_fn.lower(state, x_train).compile()
    validate = None
    if held_out is not None:
        window = _centre_window(x.shape, _VALIDATION_REGION[ndim])
        region = tuple(s.stop - s.start for s in window)
        g_region = make_forward(psf, region, method=cfg.forward_method, padding=cfg.padding)
        index = np.nonzero(np.asarray(held_out[window]))
        validate_fn = make_validation_fn(graphdef, g_region, index)
        val_args = (x_train[window], x_dev[window])

        def validate(p):
            return np.asarray(validate_fn(p, *val_args), dtype=np.float64)

    compile_s = time.perf_counter() - t0

    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_loss": []}
    selector = _ModelSelector(cfg)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, disable=not verbose, desc="jdeconv fit", unit="step", leave=verbose)
    steps_run = 0
    pending = []  # per-step metrics, fetched from the device at the end (no sync per step)
    try:
        for i in range(cfg.steps):
            state, metrics = compiled(state, x_train)
            steps_run = i + 1
            pending.append(metrics)
            if validate is not None and (
                steps_run % cfg.validate_every == 0 or steps_run == cfg.steps
            ):
                residuals = validate(state.params)
                val = float(residuals.mean())
                history["val_step"].append(steps_run)
                history["val_loss"].append(val)
                selector.update(steps_run, residuals, state.params)
                bar.set_postfix(
                    loss=f"{float(metrics['loss']):.4g}", val=f"{val:.4g}", refresh=False
                )
                stop = False
                if callback is not None:
                    current = FittedModel(params=state.params, config=cfg, ndim=ndim, psf=psf)
                    stop = bool(
                        callback(
                            steps_run,
                            val,
                            lambda m=current: _destandardise(
                                _predict_standardised(m, x), offset, scale, cfg, arr
                            ),
                        )
                    )
                if stop or selector.should_stop():
                    bar.update(steps_run - bar.n)
                    break
            elif steps_run % 10 == 0:
                bar.set_postfix(loss=f"{float(metrics['loss']):.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    for step, metrics in enumerate(jax.device_get(pending), start=1):
        _record(history, step, metrics)
    jax.block_until_ready(state.params)
    train_s = time.perf_counter() - t0

    if cfg.restore_best and selector.kept_params is not None:
        params, best_step = selector.kept_params, selector.kept_step
    else:
        params, best_step = state.params, steps_run
    fitted = FittedModel(params=params, config=cfg, ndim=ndim, psf=psf)

    t0 = time.perf_counter()
    deconvolved_std = _predict_standardised(fitted, x)
    g_full = make_forward(psf, x.shape, method=cfg.forward_method, padding=cfg.padding)
    reconvolved_std = np.asarray(jax.jit(g_full)(jnp.asarray(deconvolved_std)))
    infer_s = time.perf_counter() - t0

    deconvolved = _destandardise(deconvolved_std, offset, scale, cfg, arr)
    reconvolved = (reconvolved_std.astype(np.float64) * scale + offset).astype(np.float32)
    timings = {
        "compile": compile_s,
        "train": train_s,
        "inference": infer_s,
        "total": time.perf_counter() - t_start,
        "steps": steps_run,
        "seconds_per_step": train_s / max(steps_run, 1),
    }
    return FitResult(deconvolved, reconvolved, fitted, history, best_step, timings)


class _ModelSelector:
    """Which parameters to keep, from held-out blind-spot residuals (paired comparisons).

    The blind-spot loss is measured after the PSF, which hides much of what changes in the
    deconvolved image, and on a few thousand pixels it is noisy: its minimum is often an
    early model by chance. So a later model is kept unless it is significantly worse than
    the best so far (a paired z-test on the per-pixel residuals, z > ``selection_z``), and
    training stops after ``patience`` significantly worse evaluations in a row.
    """

    def __init__(self, cfg: Config):
        self.keep = cfg.restore_best  # copy parameters only when they may be returned
        self.z = cfg.selection_z
        self.patience = cfg.patience
        self.best = None  # residuals of the lowest-mean model so far
        self.kept_params, self.kept_step, self.worse = None, 0, 0

    def update(self, step, residuals, params):
        if self.best is None or residuals.mean() < self.best.mean():
            self.best = residuals
            significantly_worse = False
        else:
            diff = residuals - self.best
            se = diff.std(ddof=1) / math.sqrt(diff.size) if diff.size > 1 else 0.0
            significantly_worse = diff.mean() > self.z * se
        if significantly_worse:
            self.worse += 1
        else:
            self.worse = 0
            self.kept_step = step
            if self.keep:
                self.kept_params = jax.tree.map(jnp.copy, params)

    def should_stop(self) -> bool:
        return self.patience is not None and self.worse >= self.patience


def _record(history, step, metrics):
    history["step"].append(step)
    for name, value in metrics.items():
        history.setdefault(name, []).append(float(value))


@functools.lru_cache(maxsize=8)
def _predictor(unet_cfg):
    # One compiled predictor per network shape, reused across calls and images.
    model = nnx.eval_shape(lambda: UNet(unet_cfg, rngs=nnx.Rngs(0)))
    return make_predictor(nnx.split(model, nnx.Param)[0])


def _predict_standardised(model: FittedModel, x: np.ndarray, *, tile_size=None) -> np.ndarray:
    cfg = model.config
    net = _predictor(cfg.unet(model.ndim))
    tile = cfg.tile_size if tile_size is None else tile_size
    return predict(
        net,
        model.params,
        x,
        multiple=2**cfg.depth,
        tile_size=tile,
        halo=cfg.tile_halo,
        tta=cfg.tta,
    )


def _destandardise(y_std, offset, scale, cfg, arr):
    y = y_std.astype(np.float64) * scale + offset
    if cfg.clip_output:
        y = np.clip(y, arr.min(), arr.max())
    return y.astype(np.float32)


def deconvolve(
    image, model: FittedModel, *, tile_size: int | None = None, tta: bool | None = None
) -> np.ndarray:
    """Deconvolve an image with a fitted model (trained on this or a similar image).

    The image is normalised with its own statistics, in the way the model's config says.

    Args:
      image: 2D/3D array of the model's dimensionality.
      model: a :class:`FittedModel` (``fit(...).model`` or :func:`load_model`).
      tile_size: tiled inference with this tile side (None: the model config's setting).
      tta: override the config's test-time augmentation.

    Returns:
      float32 array of the image's shape, in its intensity scale.
    """
    arr = validate_image(image)
    if arr.ndim != model.ndim:
        raise ValueError(
            f"model is {model.ndim}D but the image is {arr.ndim}D (shape {arr.shape})."
        )
    cfg = model.config if tta is None else model.config.replace(tta=tta)
    offset, scale = _normalization(arr, cfg)
    x = ((arr - offset) / scale).astype(np.float32)
    y = _predict_standardised(dataclasses.replace(model, config=cfg), x, tile_size=tile_size)
    return _destandardise(y, offset, scale, cfg, arr)


def save_model(model: FittedModel, directory) -> Path:
    """Write ``model`` to ``directory`` (created; files written atomically).

    Files: ``config.json`` (config, ndim, format and library version), ``params.npz``,
    ``psf.npy``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in _flatten(model.params)}
    meta = {
        "format": MODEL_FORMAT,
        "jdeconv_version": model.version,
        "ndim": model.ndim,
        "config": model.config.to_dict(),
    }
    _atomic_write(directory / "params.npz", lambda f: np.savez(f, **flat))
    _atomic_write(directory / "psf.npy", lambda f: np.save(f, model.psf))
    _atomic_write(directory / "config.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return directory


def load_model(directory) -> FittedModel:
    """Read a model written by :func:`save_model`; a clear ``ValueError`` if incompatible."""
    directory = Path(directory)
    meta_path = directory / "config.json"
    if not meta_path.is_file():
        raise ValueError(f"{directory} is not a jdeconv model directory (no config.json).")
    try:
        meta = json.loads(meta_path.read_text())
        fmt = meta["format"]
        cfg = Config.from_dict(meta["config"])
        ndim = int(meta["ndim"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path} is not a valid jdeconv model config: {err}") from err
    if fmt != MODEL_FORMAT:
        raise ValueError(
            f"model format {fmt} (jdeconv {meta.get('jdeconv_version')}) is not supported by "
            f"jdeconv {__version__} (format {MODEL_FORMAT}); retrain or use a matching version."
        )
    _, abstract = _abstract_model(cfg, ndim)
    with np.load(directory / "params.npz") as data:
        stored = dict(data)
    leaves = []
    for path, leaf in _flatten(abstract):
        name = jax.tree_util.keystr(path)
        if name not in stored or stored[name].shape != leaf.shape:
            raise ValueError(
                f"{directory}/params.npz does not match the network in config.json (parameter "
                f"{name}); the files are from different models or corrupted."
            )
        leaves.append(jnp.asarray(stored[name]))
    params = jax.tree.unflatten(jax.tree.structure(abstract), leaves)
    psf = validate_psf(np.load(directory / "psf.npy"), ndim=ndim)
    return FittedModel(
        params=params, config=cfg, ndim=ndim, psf=psf, version=meta["jdeconv_version"]
    )


def _flatten(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
