"""The jitted train step: patch sampling, both passes, the loss, the gradient, the update.

``make_train_step`` returns one pure function ``step(state, image) -> (state, metrics)``
compiled once with ``jax.jit`` and donating the carried :class:`TrainState`. Inside it,
patches are cut from the standardised training image with ``jax.vmap`` over per-patch
keys (random crop, then rot90/flip; in 3D flips on every axis and rot90 in YX only), one
mask is drawn per patch, the network runs once or twice (only the passes the loss needs),
the forward model is vmapped over the batch, and optax applies the update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from .config import Config
from .forward import ForwardModel
from .losses import MASKED, UNMASKED, Loss, Passes
from .masks import mask_and_replace

__all__ = [
    "TrainState",
    "make_optimizer",
    "sample_patch",
    "make_train_step",
    "make_validation_fn",
    "apply_network",
]


class TrainState(NamedTuple):
    """What one step carries to the next (a pytree; replaced, never mutated)."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """The optax optimiser and learning-rate schedule of ``cfg``."""
    lr = cfg.learning_rate
    if cfg.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=lr * 0.01,
            peak_value=lr,
            warmup_steps=min(cfg.warmup_steps, max(cfg.steps - 1, 0)),
            decay_steps=max(cfg.steps, 1),
            end_value=lr * 0.01,
        )
    else:  # "step": halve every decay_every steps (Papkov et al.)
        schedule = optax.exponential_decay(lr, cfg.decay_every, 0.5, staircase=True)
    if cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    else:
        opt = optax.adam(schedule)
    if cfg.grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt


def _rot90_yx(x: jax.Array, k: jax.Array) -> jax.Array:
    branches = [lambda a, i=i: jnp.rot90(a, i, axes=(-2, -1)) for i in range(4)]
    return lax.switch(k, branches, x)


def sample_patch(key: jax.Array, image: jax.Array, patch_shape, *, augment: bool = True):
    """One random crop of ``patch_shape`` from ``image``, randomly rotated/flipped.

    Augmentation: rot90 in the YX plane (square YX patches), and a flip of every axis in
    3D (Y only in 2D, which with the 4 rotations gives all 8 symmetries of the square).
    """
    crop_key, rot_key, flip_key = jax.random.split(key, 3)
    highs = jnp.array([n - p + 1 for n, p in zip(image.shape, patch_shape, strict=True)])
    starts = jax.random.randint(crop_key, (image.ndim,), 0, highs)
    patch = lax.dynamic_slice(image, tuple(starts), patch_shape)
    if not augment:
        return patch
    patch = _rot90_yx(patch, jax.random.randint(rot_key, (), 0, 4))
    flip_axes = range(image.ndim) if image.ndim == 3 else (0,)
    flips = jax.random.bernoulli(flip_key, 0.5, (image.ndim,))
    for axis in flip_axes:
        patch = jnp.where(flips[axis], jnp.flip(patch, axis), patch)
    return patch


def apply_network(graphdef, params, x: jax.Array) -> jax.Array:
    """Run the network on a batch ``(B, *spatial)`` and return ``(B, *spatial)``."""
    model = nnx.merge(graphdef, params)
    return model(x[..., None])[..., 0]


def _interior(border):
    def crop(a):
        if a is None or jnp.ndim(a) == 0:
            return a
        return a[(slice(None), *(slice(b, a.shape[i + 1] - b) for i, b in enumerate(border)))]

    return crop


def make_train_step(
    graphdef,
    loss: Loss,
    forward: ForwardModel,
    tx: optax.GradientTransformation,
    cfg: Config,
    *,
    key: jax.Array,
    bounds: tuple[float, float],
) -> Callable:
    """Build the jitted step ``step(state, image) -> (new_state, metrics)``.

    Args:
      graphdef: the network's graph definition (``nnx.split``).
      loss: the composed loss; its ``needs`` decides which passes run.
      forward: the forward model for one patch (``forward.shape`` is the patch shape).
      tx: the optax optimiser.
      cfg: mask and patch settings.
      key: base key; step ``t`` uses ``fold_in(key, t)``.
      bounds: ``(lower, upper)`` intensity bounds in standardised units (bound terms).

    Returns:
      A jitted function donating ``state``. ``metrics`` holds the total loss and each
      term, batch-averaged.
    """
    patch_shape = forward.shape
    need_unmasked = UNMASKED in loss.needs
    need_masked = MASKED in loss.needs
    border = (
        tuple(k // 2 for k in forward.psf.shape) if cfg.crop_border else (0,) * len(patch_shape)
    )
    crop = _interior(border)
    lower, upper = bounds
    g = jax.vmap(forward)

    def loss_fn(params, patches, masked, mask):
        deconvolved = reconvolved = deconvolved_masked = reconvolved_masked = None
        if need_unmasked and need_masked:
            # One network call on the stacked batch: both passes share the weights.
            both = apply_network(graphdef, params, jnp.concatenate([patches, masked]))
            deconvolved, deconvolved_masked = jnp.split(both, 2)
        elif need_unmasked:
            deconvolved = apply_network(graphdef, params, patches)
        else:
            deconvolved_masked = apply_network(graphdef, params, masked)
        if deconvolved is not None:
            reconvolved = g(deconvolved)
        if deconvolved_masked is not None:
            reconvolved_masked = g(deconvolved_masked)
        passes = Passes(
            *map(
                crop,
                (patches, mask, deconvolved, reconvolved, deconvolved_masked, reconvolved_masked),
            ),
            lower=lower,
            upper=upper,
        )
        return loss(passes)

    def step(state: TrainState, image: jax.Array):
        step_key = jax.random.fold_in(key, state.step)
        patch_keys, mask_keys = jnp.split(jax.random.split(step_key, 2 * cfg.batch_size), 2)
        patches = jax.vmap(lambda k: sample_patch(k, image, patch_shape))(patch_keys)
        masked, mask = jax.vmap(
            lambda k, p: mask_and_replace(
                k,
                p,
                kind=cfg.mask_kind,
                fraction=cfg.mask_fraction,
                replacement=cfg.mask_replacement,
                noise_std=cfg.mask_noise_std,
            )
        )(mask_keys, patches)
        (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, patches, masked, mask
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total, **terms}
        return TrainState(params, opt_state, state.step + 1), metrics

    return jax.jit(step, donate_argnums=0)


def make_validation_fn(graphdef, forward_full: ForwardModel, held_out_index) -> Callable:
    """Blind-spot residuals on held-out pixels: ``val(params, image_in, image)``.

    Returns the squared residuals ``(g(f(image_in)) - image)**2`` at ``held_out_index``
    (a tuple of index arrays, as from ``np.nonzero``). ``image_in`` is the training image
    with the held-out pixels replaced, so the network never sees them; ``image`` is the
    original standardised image. By Noise2Self's argument the mean is the error against
    the noise-free blurred image plus the noise variance, so it ranks models without
    ground truth; keeping per-pixel values allows paired comparisons between models.
    """
    index = tuple(jnp.asarray(i) for i in held_out_index)

    @jax.jit
    def validate(params, image_in, image):
        deconvolved = apply_network(graphdef, params, image_in[None])[0]
        reconvolved = forward_full(deconvolved)
        return ((reconvolved - image) ** 2)[index]

    return validate
