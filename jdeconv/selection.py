"""Held-out pixels and ground-truth-free model selection.

A small random fraction of the image's pixels is held out: in the image the network
trains on, each is replaced by the mean of its *unmasked* neighbours, so no held-out value
reaches training (``tests/test_selection.py`` checks that the gradient of the training
image with respect to every held-out pixel is exactly zero). Their blind-spot loss after
the PSF, ``(g(f(x_train)) - x)**2`` at the held-out pixels, then estimates the error
against the noise-free blurred image plus the noise variance (Noise2Self's argument), so
it ranks models without ground truth. :class:`ModelSelector` compares models by paired
tests on those residuals.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .classic import laplacian
from .masks import bernoulli_mask, replace_masked
from .unet import apply_network

__all__ = ["hold_out", "make_validation_fn", "ModelSelector", "VALIDATION_REGION"]

# Largest region the held-out validation loss is evaluated on (a centre crop beyond it).
VALIDATION_REGION = {2: (512, 512), 3: (48, 128, 128)}


def hold_out(key: jax.Array, x: jax.Array, *, fraction: float) -> tuple[jax.Array, jax.Array]:
    """Pick held-out pixels and hide them: returns ``(x_train, held_out)``.

    Args:
      key: a ``jax.random`` key.
      x: the standardised image.
      fraction: probability that a pixel is held out (Bernoulli).

    Returns:
      ``x_train``: ``x`` with each held-out pixel replaced by the mean of its unmasked
      neighbours; ``held_out``: the bool mask.

    Example:
      >>> x_train, held = hold_out(jax.random.key(0), jnp.ones((16, 16)), fraction=0.05)
      >>> bool(jnp.all(x_train == 1.0))
      True
    """
    held_out = bernoulli_mask(key, x.shape, fraction=fraction)
    return replace_masked(None, x, held_out, replacement="local_mean"), held_out


def make_validation_fn(graphdef, held_out_index, *, prior=None) -> Callable:
    """Blind-spot residuals on held-out pixels: ``validate(params, image_in, image, g)``.

    Returns the squared residuals ``(g(f(image_in)) - image)**2`` at ``held_out_index``
    (a tuple of index arrays, as from ``np.nonzero``), jitted; ``g`` is the forward model
    for ``image``'s shape (an argument, so a new PSF of that shape does not recompile).
    ``image_in`` is the training image (held-out pixels hidden), ``image`` the original.
    Per-pixel values allow paired comparisons between models.

    ``prior=(weight, sparsity, lower)`` adds, at each held-out pixel, the penalties of the
    non-negative Tikhonov objective (:func:`jdeconv.regularized.project_tikhonov`, times
    2): ``weight (Δx)² + 2 sparsity (x − lower)`` with ``x = f(image_in)`` and ``Δ`` the
    discrete Laplacian (mirror boundary). The score is then that objective measured on
    pixels no model saw, so a network anchored on its minimiser must improve the
    objective, not only the fit to the data, to replace it: the ℓ1 term's shrinkage
    makes the anchor fit the data less closely on purpose, and a plain data-domain score
    prefers any model that undoes it (on a development screen image, one 2.1 dB worse).

    Example:
      >>> import jdeconv
      >>> from jdeconv.unet import UNetConfig, init_unet
      >>> graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
      >>> x = jnp.zeros((16, 16))
      >>> g = jdeconv.make_forward(jdeconv.psf.gaussian_psf((3, 3), 1.0), x.shape)
      >>> validate = make_validation_fn(graphdef, (np.array([3, 5]), np.array([4, 9])))
      >>> validate(params, x, x, g).shape
      (2,)
    """
    index = tuple(jnp.asarray(i) for i in held_out_index)

    @jax.jit
    def validate(params, image_in, image, g):
        deconvolved = apply_network(graphdef, params, image_in[None])[0]
        score = (g(deconvolved) - image) ** 2
        if prior is not None:
            weight, sparsity, lower = prior
            score = score + weight * laplacian(deconvolved) ** 2
            score = score + 2.0 * sparsity * (deconvolved - lower)
        return score[index]

    return validate


class ModelSelector:
    """Which parameters to keep, from held-out blind-spot residuals (paired comparisons).

    The blind-spot loss is measured after the PSF, which hides much of what changes in the
    deconvolved image, and on a few thousand pixels it is noisy: its minimum is often an
    early model by chance. So a later model is kept unless it is significantly worse than
    the best so far (a paired z-test on the per-pixel residuals, z > ``z``), and training
    stops after ``patience`` significantly worse evaluations in a row. With
    ``rule="if_better"`` the burden is reversed: the kept model (the first one, e.g. an
    anchored network's classical step 0) is replaced only by a model significantly better
    than it, and patience counts models significantly worse than the kept one.

    Args:
      z: the paired test's threshold in standard errors.
      rule: "unless_worse" or "if_better" (above).
      patience: stop after this many significantly worse evaluations in a row (None:
        never).
      keep_params: copy the kept parameters (only needed to return them).

    Example:
      >>> sel = ModelSelector(z=2.0, patience=None, keep_params=False)
      >>> sel.update(10, np.ones(100), params=None)
      >>> sel.kept_step
      10
    """

    def __init__(
        self, *, z: float, patience: int | None, keep_params: bool, rule: str = "unless_worse"
    ):
        if rule not in ("unless_worse", "if_better"):
            raise ValueError(f"rule must be 'unless_worse' or 'if_better', got {rule!r}.")
        self.keep = keep_params
        self.rule = rule
        self.z = z
        self.patience = patience
        self.best = None  # residuals of the lowest-mean model so far
        self.kept_params, self.kept_step, self.worse = None, 0, 0

    @classmethod
    def from_config(cls, cfg) -> ModelSelector:
        v = cfg.validation
        return cls(
            z=v.selection_z, patience=v.patience, keep_params=v.restore_best, rule=v.selection
        )

    def update(self, step: int, residuals: np.ndarray, params) -> None:
        if self.rule == "if_better":
            self._update_if_better(step, residuals, params)
            return
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

    def _update_if_better(self, step: int, residuals: np.ndarray, params) -> None:
        if self.best is None:
            significantly_better, significantly_worse = True, False
        else:
            diff = residuals - self.best  # against the kept model
            se = diff.std(ddof=1) / math.sqrt(diff.size) if diff.size > 1 else 0.0
            significantly_better = diff.mean() < -self.z * se
            significantly_worse = diff.mean() > self.z * se
        self.worse = self.worse + 1 if significantly_worse else 0
        if significantly_better:
            self.best = residuals
            self.kept_step = step
            if self.keep:
                self.kept_params = jax.tree.map(jnp.copy, params)

    def should_stop(self) -> bool:
        return self.patience is not None and self.worse >= self.patience
