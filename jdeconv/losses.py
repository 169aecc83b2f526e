"""The loss family of Papkov et al. 2023 (eq. 1) and Kobayashi et al. 2020, composable by name.

Two passes share the network ``f``: the unmasked pass gives ``deconvolved = f(x)`` and
``reconvolved = g(f(x))``; the masked pass gives ``deconvolved_masked = f(x_Jc)`` and
``reconvolved_masked = g(f(x_Jc))``, where the pixels in ``J`` (``mask``) were replaced.
All arrays are one unbatched, standardised ``(*spatial)`` patch; a composed loss vmaps
over the batch and averages.

=========  ================================================================  ===========
term       definition                                                        passes
=========  ================================================================  ===========
``bsp``    MSE over J of ``reconvolved_masked`` vs ``image`` (blind spot)     masked
``rec``    MSE over all pixels of ``reconvolved`` vs ``image``                unmasked
``inv``    sqrt(MSE over J of ``reconvolved`` vs ``reconvolved_masked``)      both
``inv_d``  sqrt(MSE over J of ``deconvolved`` vs ``deconvolved_masked``)      both
``bound``  mean of relu(lower - r) + relu(r - upper), r = ``reconvolved``     unmasked
``bound_d`` the same on ``deconvolved``                                        unmasked
=========  ================================================================  ===========

``lower``/``upper`` are the intensity bounds in the standardised frame (``fit`` sets them
from the input's range, i.e. 0 and 1 after min-max normalisation as in the papers).

A researcher adds a term with :func:`register_loss`; the term is a pure function of a
:class:`Passes` and keyword-only hyper-parameters returning a scalar.

Example:
  >>> loss = make_loss({"rec": 1.0, "inv_d": 2.0, "bound_d": 0.1})
  >>> sorted(loss.needs)
  ['masked', 'unmasked']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Passes",
    "Loss",
    "blind_spot",
    "reconstruction",
    "invariance",
    "invariance_deconvolved",
    "bound",
    "bound_deconvolved",
    "register_loss",
    "registered_losses",
    "make_loss",
    "PRESETS",
]

UNMASKED, MASKED = "unmasked", "masked"


class Passes(NamedTuple):
    """Everything a loss term may read, for one patch. Absent passes are ``None``."""

    image: jax.Array
    mask: jax.Array
    deconvolved: jax.Array | None = None
    reconvolved: jax.Array | None = None
    deconvolved_masked: jax.Array | None = None
    reconvolved_masked: jax.Array | None = None
    lower: jax.Array | float = -jnp.inf
    upper: jax.Array | float = jnp.inf


def _masked_mse(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
    weight = mask.astype(a.dtype)
    return jnp.sum(weight * (a - b) ** 2) / jnp.maximum(jnp.sum(weight), 1.0)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    # sqrt has an infinite slope at 0; keep the gradient finite where the invariance
    # term is exactly satisfied (e.g. a network that ignores its input).
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _out_of_bounds(x: jax.Array, lower, upper) -> jax.Array:
    return jnp.mean(jax.nn.relu(lower - x) + jax.nn.relu(x - upper))


def blind_spot(p: Passes) -> jax.Array:
    """``bsp``: Noise2Self through the PSF (Kobayashi et al. 2020, eq. 5)."""
    return _masked_mse(p.reconvolved_masked, p.image, p.mask)


def reconstruction(p: Passes) -> jax.Array:
    """``rec``: MSE of the reconvolved unmasked prediction (Papkov et al. eq. 1, first term)."""
    return jnp.mean((p.reconvolved - p.image) ** 2)


def invariance(p: Passes) -> jax.Array:
    """``inv``: Noise2Same invariance after the PSF (Papkov et al. eq. 1, "reconvolved")."""
    return _safe_sqrt(_masked_mse(p.reconvolved, p.reconvolved_masked, p.mask))


def invariance_deconvolved(p: Passes) -> jax.Array:
    """``inv_d``: Noise2Same invariance before the PSF (Papkov et al., "deconvolved")."""
    return _safe_sqrt(_masked_mse(p.deconvolved, p.deconvolved_masked, p.mask))


def bound(p: Passes) -> jax.Array:
    """``bound``: penalty on reconvolved intensities outside ``[lower, upper]``."""
    return _out_of_bounds(p.reconvolved, p.lower, p.upper)


def bound_deconvolved(p: Passes) -> jax.Array:
    """``bound_d``: penalty on deconvolved intensities outside ``[lower, upper]``."""
    return _out_of_bounds(p.deconvolved, p.lower, p.upper)


@dataclasses.dataclass(frozen=True)
class _Term:
    fn: Callable[..., jax.Array]
    needs: frozenset[str]


_REGISTRY: dict[str, _Term] = {}


def register_loss(
    name: str, fn: Callable[..., jax.Array], *, needs=(UNMASKED, MASKED), overwrite=False
) -> None:
    """Add a loss term usable by name in :func:`make_loss` and ``Config.loss_weights``.

    Args:
      name: the key to use in a weights mapping.
      fn: pure function ``fn(passes: Passes, **hyper) -> scalar`` on one patch.
      needs: which passes it reads: any of ``"unmasked"`` (``deconvolved``,
        ``reconvolved``) and ``"masked"`` (``deconvolved_masked``, ``reconvolved_masked``).
      overwrite: allow replacing an existing term of the same name.

    Example:
      >>> def tv(p):
      ...     return sum(jnp.mean(jnp.abs(jnp.diff(p.deconvolved, axis=a)))
      ...                for a in range(p.deconvolved.ndim))
      >>> register_loss("tv_doc_example", tv, needs=("unmasked",))
    """
    needs = frozenset(needs)
    if not needs or not needs <= {UNMASKED, MASKED}:
        raise ValueError(
            f"needs must be a non-empty subset of {{'unmasked', 'masked'}}, got {set(needs)}."
        )
    if not callable(fn):
        raise ValueError(f"loss term {name!r} must be callable.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"a loss term named {name!r} exists; pick another name or pass overwrite=True."
        )
    _REGISTRY[name] = _Term(fn, needs)


def registered_losses() -> dict[str, frozenset[str]]:
    """Names of the registered terms and the passes each needs."""
    return {name: term.needs for name, term in _REGISTRY.items()}


register_loss("bsp", blind_spot, needs=(MASKED,))
register_loss("rec", reconstruction, needs=(UNMASKED,))
register_loss("inv", invariance)
register_loss("inv_d", invariance_deconvolved)
register_loss("bound", bound, needs=(UNMASKED,))
register_loss("bound_d", bound_deconvolved, needs=(UNMASKED,))

PRESETS: dict[str, dict[str, float]] = {
    # Kobayashi et al. 2020 (SSI): blind spot through the PSF.
    "noise2self": {"bsp": 1.0},
    # Papkov et al. 2023: invariance after the PSF (their best in 3D).
    "noise2same": {"rec": 1.0, "inv": 2.0, "bound": 0.1},
    # Papkov et al. 2023: invariance before the PSF (their best in 2D).
    "noise2same_d": {"rec": 1.0, "inv_d": 2.0, "bound_d": 0.1},
}


@dataclasses.dataclass(frozen=True, eq=False)
class Loss:
    """A weighted sum of registered terms; call it on a batch of :class:`Passes`.

    ``loss(passes)`` takes Passes whose arrays carry a leading batch axis, vmaps each term
    over it and returns ``(total, {name: value})`` with batch-averaged values.
    """

    weights: Mapping[str, float]
    hyper: Mapping[str, Mapping[str, object]]
    needs: frozenset[str]

    def __call__(self, passes: Passes) -> tuple[jax.Array, dict[str, jax.Array]]:
        in_axes = Passes(*(0 if v is not None and jnp.ndim(v) > 0 else None for v in passes))
        terms = {}
        for name in self.weights:
            term = _REGISTRY[name]
            hyper = dict(self.hyper.get(name, {}))
            values = jax.vmap(lambda p, fn=term.fn, kw=hyper: fn(p, **kw), in_axes=(in_axes,))(
                passes
            )
            terms[name] = jnp.mean(values)
        total = sum(self.weights[name] * terms[name] for name in self.weights)
        return total, terms


def make_loss(weights, *, hyper=None) -> Loss:
    """Compose registered terms: ``make_loss({"rec": 1, "inv": 2})`` or a preset name.

    Args:
      weights: a mapping ``{term name: weight}``, or the name of a preset in
        :data:`PRESETS` (``"noise2self"``, ``"noise2same"``, ``"noise2same_d"``).
      hyper: optional ``{term name: {keyword: value}}`` passed to user terms.

    Returns:
      A :class:`Loss` whose ``needs`` tells the train step which passes to compute (a
      ``noise2self`` loss needs only the masked pass).
    """
    if isinstance(weights, str):
        if weights not in PRESETS:
            raise ValueError(f"unknown loss preset {weights!r}; choose one of {list(PRESETS)}.")
        weights = PRESETS[weights]
    weights = {str(k): float(v) for k, v in dict(weights).items()}
    if not weights:
        raise ValueError("loss weights are empty; give at least one term, e.g. {'bsp': 1.0}.")
    unknown = sorted(set(weights) - set(_REGISTRY))
    if unknown:
        raise ValueError(
            f"unknown loss terms {unknown}; registered: {sorted(_REGISTRY)} "
            "(add your own with jdeconv.losses.register_loss)."
        )
    bad = {k: v for k, v in weights.items() if not jnp.isfinite(v)}
    if bad:
        raise ValueError(f"loss weights must be finite, got {bad}.")
    hyper = {k: dict(v) for k, v in (hyper or {}).items()}
    needs = frozenset().union(*(_REGISTRY[name].needs for name in weights))
    return Loss(weights=weights, hyper=hyper, needs=needs)
