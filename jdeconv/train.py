"""The jitted train step: patch sampling, both passes, the loss, the gradient, the update.

``make_train_step`` returns one pure function ``step(key, state, image, g) ->
(state, metrics)`` compiled once with ``jax.jit`` and donating the carried
:class:`TrainState`. The forward model ``g`` (a pytree: its PSF and OTF are leaves) is an
argument, so a new PSF of the same shape reuses the compiled step. Inside it, patches are
cut from the standardised training image with ``jax.vmap`` over per-patch keys (random
crop, then rot90/flip; in 3D flips on every axis and rot90 in YX only), one mask is drawn
per patch, the network runs once or twice (only the passes the loss needs), the forward
model is vmapped over the batch, and optax applies the update. ``image`` may also be the
stack of the coming steps' crops ``(steps × batch, *patch)`` read from a large image
(:mod:`jdeconv.sampling`): the step then augments its own crops with the same keys.
Step ``t`` draws its randomness from ``fold_in(key, t)``.

Data parallel: given a 1-D ``mesh`` (:func:`batch_mesh`), the step shards the batch of
patches over the mesh's devices and keeps parameters, optimiser state, image and forward
model replicated; XLA inserts the gradient all-reduce. The patches and masks drawn do
not depend on the device count (the same keys), so the losses agree with one device's
to float rounding.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from .config import Config, MaskConfig
from .forward import ForwardModel
from .losses import MASKED, UNMASKED, Loss, Passes
from .masks import mask_and_replace
from .symmetry import candidate_transforms, transform
from .unet import apply_network

__all__ = [
    "TrainState",
    "make_optimizer",
    "sample_patch",
    "make_train_step",
    "init_state",
    "batch_mesh",
]

BATCH_AXIS = "batch"


class TrainState(NamedTuple):
    """What one step carries to the next (a pytree; replaced, never mutated).

    Example:
      >>> state = TrainState({"w": jnp.zeros(2)}, (), jnp.zeros((), jnp.int32))
      >>> int(state.step)
      0
    """

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
    """The state before the first step.

    Example:
      >>> tx = optax.adam(1e-3)
      >>> int(init_state({"w": jnp.zeros(2)}, tx).step)
      0
    """
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def batch_mesh(batch_size: int, *, devices=None) -> Mesh | None:
    """A 1-D mesh over ``devices`` to shard a batch of ``batch_size`` on, or None for one.

    On one host ``jax.devices()`` are the local accelerators; across hosts, after
    ``jax.distributed.initialize()`` in every process, they are all hosts' devices.

    Args:
      batch_size: patches per step; must be a multiple of the device count.
      devices: the devices (default ``jax.devices()``).

    Raises:
      ValueError: if ``batch_size`` is not a multiple of the number of devices.

    Example:
      >>> batch_mesh(4, devices=jax.devices()[:1]) is None
      True
    """
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    if batch_size % len(devices):
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of the {len(devices)} devices the "
            "batch is sharded over (data-parallel training); change batch_size, or make "
            "fewer devices visible (e.g. CUDA_VISIBLE_DEVICES)."
        )
    return jax.make_mesh(
        (len(devices),), (BATCH_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def _not_anchor(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "anchor" not in jax.tree_util.keystr(path), params
    )


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """The optax optimiser and learning-rate schedule of ``cfg`` (its ``optim`` group).

    Example:
      >>> tx = make_optimizer(Config.preset("noise2self", steps=10))
    """
    o = cfg.optim
    lr = o.learning_rate
    if o.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif o.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=lr * 0.01,
            peak_value=lr,
            warmup_steps=min(o.warmup_steps, max(cfg.steps - 1, 0)),
            decay_steps=max(cfg.steps, 1),
            end_value=lr * 0.01,
        )
    else:  # "step": halve every decay_every steps (Papkov et al.)
        schedule = optax.exponential_decay(lr, o.decay_every, 0.5, staircase=True)
    if o.optimizer == "adamw":
        # No decay of the fixed anchor filter (its gradient is stopped, so Adam alone
        # leaves it unchanged).
        opt = optax.adamw(schedule, weight_decay=o.weight_decay, mask=_not_anchor)
    else:
        opt = optax.adam(schedule)
    if o.grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(o.grad_clip), opt)
    return opt


def _rot90_yx(x: jax.Array, k: jax.Array) -> jax.Array:
    branches = [lambda a, i=i: jnp.rot90(a, i, axes=(-2, -1)) for i in range(4)]
    return lax.switch(k, branches, x)


def sample_patch(key: jax.Array, image: jax.Array, patch_shape, *, augment=True):
    """One random crop of ``patch_shape`` from ``image``, randomly rotated/flipped.

    Augmentation (``augment=True``): rot90 in the YX plane (square YX patches), and a flip
    of every axis in 3D (Y only in 2D, which with the 4 rotations gives all 8 symmetries
    of the square). ``augment`` may instead be a sequence of ``(k, flips)`` transforms
    (:mod:`jdeconv.symmetry`; ``fit`` passes the PSF's symmetries), one of which is drawn
    uniformly; the full set draws exactly as ``True`` does. False: no augmentation.

    Example:
      >>> sample_patch(jax.random.key(0), jnp.zeros((20, 24)), (8, 8)).shape
      (8, 8)
    """
    crop_key, rot_key, flip_key = jax.random.split(key, 3)
    highs = jnp.array([n - p + 1 for n, p in zip(image.shape, patch_shape, strict=True)])
    starts = jax.random.randint(crop_key, (image.ndim,), 0, highs)
    patch = lax.dynamic_slice(image, tuple(starts), patch_shape)
    if not augment:
        return patch
    if augment is not True and set(augment) != set(candidate_transforms(image.ndim)):
        branches = [lambda a, t=t: transform(a, *t) for t in augment]
        return lax.switch(jax.random.randint(rot_key, (), 0, len(branches)), branches, patch)
    patch = _rot90_yx(patch, jax.random.randint(rot_key, (), 0, 4))
    flip_axes = range(image.ndim) if image.ndim == 3 else (0,)
    flips = jax.random.bernoulli(flip_key, 0.5, (image.ndim,))
    for axis in flip_axes:
        patch = jnp.where(flips[axis], jnp.flip(patch, axis), patch)
    return patch


def _interior(border):
    def crop(a):
        if a is None or jnp.ndim(a) == 0:
            return a
        return a[(slice(None), *(slice(b, a.shape[i + 1] - b) for i, b in enumerate(border)))]

    return crop


def make_train_step(
    graphdef,
    loss: Loss,
    tx: optax.GradientTransformation,
    *args,
    batch_size: int | None = None,
    masks: MaskConfig | None = None,
    crop_border: bool = True,
    mesh: Mesh | None = None,
    augment=True,
    **legacy,
) -> Callable:
    """Build the jitted step ``step(key, state, image, g) -> (new_state, metrics)``.

    Args:
      graphdef: the network's graph definition (``nnx.split``).
      loss: the composed loss, its terms bound (the bounds of ``bound``/``bound_d`` too);
        its ``needs`` decides which passes run.
      tx: the optax optimiser.
      batch_size: patches per step.
      masks: blind-spot mask settings (a :class:`jdeconv.config.MaskConfig`).
      crop_border: compute the loss only where ``g`` sees real pixels.
      mesh: a 1-D mesh (:func:`batch_mesh`) to shard the batch over; the arguments
        should then be replicated on it (``jax.device_put(x, NamedSharding(mesh,
        PartitionSpec()))``), and the new state and metrics come back replicated.
      augment: the patches' random rotations/flips (:func:`sample_patch`): True (all),
        a sequence of ``(k, flips)`` transforms (``fit`` passes the PSF's symmetries,
        :func:`jdeconv.symmetry.psf_symmetries`), or False.

    Returns:
      A jitted function donating ``state``. ``g`` is the forward model of one patch
      (``g.shape`` is the patch shape); ``key`` is the run's base key. ``metrics`` holds
      the total loss and each term, batch-averaged.

    Example:
      >>> from jdeconv.losses import make_loss
      >>> from jdeconv.unet import UNetConfig, init_unet
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> tx = optax.adam(1e-3)
      >>> step = make_train_step(graphdef, make_loss("noise2self"), tx, batch_size=2,
      ...                        masks=MaskConfig())
    """
    if args or legacy:
        return _legacy_train_step(graphdef, loss, tx, *args, **legacy)
    if batch_size is None or masks is None:
        raise TypeError("make_train_step needs batch_size= and masks= (keyword-only).")
    need_unmasked = UNMASKED in loss.needs
    need_masked = MASKED in loss.needs
    if mesh is not None and len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be 1-D (one batch axis), got axes {mesh.axis_names}.")

    batch_spec = PartitionSpec(*mesh.axis_names) if mesh is not None else None

    def shard(a):  # split the batch (leading) axis over the mesh's devices
        if mesh is None:
            return a
        return lax.with_sharding_constraint(a, NamedSharding(mesh, batch_spec))

    def blur(g):  # the forward model over a batch
        if mesh is None:
            return jax.vmap(g)
        # XLA's partitioner gathers a batch of FFTs onto every device; shard_map keeps
        # each device's share of the batch on it.
        return functools.partial(
            jax.shard_map(
                lambda g, a: jax.vmap(g)(a),
                mesh=mesh,
                in_specs=(PartitionSpec(), batch_spec),
                out_specs=batch_spec,
            ),
            g,
        )

    def loss_fn(params, patches, masked, mask, g):
        patch_shape = g.shape
        border = tuple(k // 2 for k in g.psf.shape) if crop_border else (0,) * len(patch_shape)
        crop = _interior(border)
        gb = blur(g)
        deconvolved = reconvolved = deconvolved_masked = reconvolved_masked = None
        if need_unmasked and need_masked:
            # One network call on the stacked batch: both passes share the weights. The
            # passes interleave (patch i, masked i, ...) so that a batch sharded over
            # devices stays where it is.
            stacked = jnp.stack([patches, masked], axis=1).reshape(-1, *patches.shape[1:])
            both = apply_network(graphdef, params, shard(stacked))
            both = both.reshape(patches.shape[0], 2, *patches.shape[1:])
            deconvolved, deconvolved_masked = both[:, 0], both[:, 1]
        elif need_unmasked:
            deconvolved = apply_network(graphdef, params, patches)
        else:
            deconvolved_masked = apply_network(graphdef, params, masked)
        if deconvolved is not None:
            reconvolved = gb(deconvolved)
        if deconvolved_masked is not None:
            reconvolved_masked = gb(deconvolved_masked)
        passes = Passes(
            *map(
                crop,
                (patches, mask, deconvolved, reconvolved, deconvolved_masked, reconvolved_masked),
            )
        )
        return loss(passes)

    def step(key: jax.Array, state: TrainState, image: jax.Array, g: ForwardModel):
        step_key = jax.random.fold_in(key, state.step)
        patch_keys, mask_keys = jnp.split(jax.random.split(step_key, 2 * batch_size), 2)
        if image.ndim == len(g.shape):
            patches = jax.vmap(lambda k: sample_patch(k, image, g.shape, augment=augment))(
                patch_keys
            )
        else:  # the crops of the coming steps (jdeconv.sampling): this step's, augmented
            per_set = image.shape[0] // batch_size
            first = (state.step % per_set) * batch_size
            crops = lax.dynamic_slice_in_dim(image, first, batch_size)
            patches = jax.vmap(lambda k, c: sample_patch(k, c, g.shape, augment=augment))(
                patch_keys, crops
            )
        patches = shard(patches)
        masked, mask = jax.vmap(
            lambda k, p: mask_and_replace(
                k,
                p,
                kind=masks.kind,
                fraction=masks.fraction,
                replacement=masks.replacement,
                noise_std=masks.noise_std,
            )
        )(mask_keys, patches)
        masked, mask = shard(masked), shard(mask)
        (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, patches, masked, mask, g
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total, **terms}
        return TrainState(params, opt_state, state.step + 1), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=1)
    return jax.jit(step, donate_argnums=1, out_shardings=NamedSharding(mesh, PartitionSpec()))


def _legacy_train_step(graphdef, loss, forward, tx, cfg, *, key, bounds=None):
    # jdeconv 0.1: make_train_step(graphdef, loss, forward, tx, cfg, key=, bounds=) ->
    # step(state, image). The bounds now live in the loss terms.
    warnings.warn(
        "make_train_step(graphdef, loss, forward, tx, cfg, key=, bounds=) is deprecated; "
        "use make_train_step(graphdef, loss, tx, batch_size=, masks=, crop_border=) and "
        "call step(key, state, image, g); bind the bounds with "
        "make_loss(..., defaults={'lower': lo, 'upper': hi}).",
        DeprecationWarning,
        stacklevel=3,
    )
    if bounds is not None:
        lower, upper = bounds
        loss = Loss(
            tuple(
                (name, w, term.bind(lower=lower, upper=upper) if term.accepts("lower") else term)
                for name, w, term in loss.terms
            )
        )
    step = make_train_step(
        graphdef, loss, tx, batch_size=cfg.batch_size, masks=cfg.masks, crop_border=cfg.crop_border
    )
    return lambda state, image: step(key, state, image, forward)
