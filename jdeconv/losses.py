"""The loss family of Papkov et al. 2023 (eq. 1) and Kobayashi et al. 2020, as values.

Two passes share the network ``f``: the unmasked pass gives ``deconvolved = f(x)`` and
``reconvolved = g(f(x))``; the masked pass gives ``deconvolved_masked = f(x_Jc)`` and
``reconvolved_masked = g(f(x_Jc))``, where the pixels in ``J`` (``mask``) were replaced.
All arrays are one unbatched, standardised ``(*spatial)`` patch (:class:`Passes`); a
composed :class:`Loss` vmaps over the batch and averages.

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

A term is a value: a :class:`Term` holds a pure function, the passes it ``needs`` and
its keyword hyper-parameters as fields (``lower``/``upper`` of the bound terms are such
fields; ``fit`` fills them from the input's range in the standardised frame).
:func:`make_loss` binds the terms when the loss is built; the registry only maps names
to terms for configs and is never consulted when a loss is called, so re-registering a
name does not change existing losses, and inference needs no loss at all.

A :class:`LossSpec` (name, weight, hyper-parameters) is the serialisable form a
:class:`jdeconv.Config` stores.

Example:
  >>> loss = make_loss({"rec": 1.0, "inv_d": 2.0, "bound_d": 0.1})
  >>> sorted(loss.needs)
  ['masked', 'unmasked']
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .classic import laplacian

__all__ = [
    "Passes",
    "Term",
    "LossSpec",
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
    "loss_specs",
    "PRESETS",
]

UNMASKED, MASKED = "unmasked", "masked"


class Passes(NamedTuple):
    """Everything a loss term may read, for one patch. Absent passes are ``None``.

    Example:
      >>> x = jnp.zeros((8, 8))
      >>> Passes(image=x, mask=x > 0, deconvolved=x).reconvolved is None
      True
    """

    image: jax.Array
    mask: jax.Array
    deconvolved: jax.Array | None = None
    reconvolved: jax.Array | None = None
    deconvolved_masked: jax.Array | None = None
    reconvolved_masked: jax.Array | None = None


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
    """``bsp``: Noise2Self through the PSF (Kobayashi et al. 2020, eq. 5).

    Example:
      >>> x = jnp.ones((4, 4))
      >>> float(blind_spot(Passes(x, x > 0, reconvolved_masked=x)))
      0.0
    """
    return _masked_mse(p.reconvolved_masked, p.image, p.mask)


def reconstruction(p: Passes) -> jax.Array:
    """``rec``: MSE of the reconvolved unmasked prediction (Papkov et al. eq. 1, first term).

    Example:
      >>> x = jnp.ones((4, 4))
      >>> float(reconstruction(Passes(x, x > 0, reconvolved=x + 1)))
      1.0
    """
    return jnp.mean((p.reconvolved - p.image) ** 2)


def invariance(p: Passes) -> jax.Array:
    """``inv``: Noise2Same invariance after the PSF (Papkov et al. eq. 1, "reconvolved").

    Example:
      >>> x = jnp.ones((4, 4))
      >>> float(invariance(Passes(x, x > 0, reconvolved=x, reconvolved_masked=x + 2)))
      2.0
    """
    return _safe_sqrt(_masked_mse(p.reconvolved, p.reconvolved_masked, p.mask))


def invariance_deconvolved(p: Passes) -> jax.Array:
    """``inv_d``: Noise2Same invariance before the PSF (Papkov et al., "deconvolved").

    Example:
      >>> x = jnp.ones((4, 4))
      >>> float(invariance_deconvolved(Passes(x, x > 0, deconvolved=x, deconvolved_masked=x)))
      0.0
    """
    return _safe_sqrt(_masked_mse(p.deconvolved, p.deconvolved_masked, p.mask))


def bound(p: Passes, *, lower=-math.inf, upper=math.inf) -> jax.Array:
    """``bound``: penalty on reconvolved intensities outside ``[lower, upper]``.

    Example:
      >>> x = jnp.full((4, 4), 2.0)
      >>> float(bound(Passes(x, x > 0, reconvolved=x), lower=0.0, upper=1.0))
      1.0
    """
    return _out_of_bounds(p.reconvolved, lower, upper)


def bound_deconvolved(p: Passes, *, lower=-math.inf, upper=math.inf) -> jax.Array:
    """``bound_d``: penalty on deconvolved intensities outside ``[lower, upper]``.

    Example:
      >>> x = jnp.full((4, 4), -1.0)
      >>> float(bound_deconvolved(Passes(x, x > 0, deconvolved=x), lower=0.0, upper=1.0))
      1.0
    """
    return _out_of_bounds(p.deconvolved, lower, upper)


def prior_deconvolved(p: Passes, *, lower=0.0, laplacian_weight=0.0, sparsity=0.0) -> jax.Array:
    """``prior``: the non-negative anchor's penalties on the deconvolved image, per pixel:
    ``λ (Δx)² + 2μ |x − lower|`` (with ``rec``, twice the anchor's objective per pixel).

    ``fit`` fills ``laplacian_weight`` (λ), ``sparsity`` (μ) and ``lower`` from an anchored
    network (``NetworkConfig.anchor="nonneg_tikhonov"``) when they are not given.

    Example:
      >>> x = jnp.full((4, 4), 2.0)
      >>> float(prior_deconvolved(Passes(x, x > 0, deconvolved=x), lower=1.0, sparsity=0.5))
      1.0
    """
    x = p.deconvolved
    return jnp.mean(laplacian_weight * laplacian(x) ** 2 + 2.0 * sparsity * jnp.abs(x - lower))


def _keyword_names(fn: Callable) -> frozenset[str] | None:
    """Keyword hyper-parameters ``fn`` accepts (None: any, it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


@dataclasses.dataclass(frozen=True)
class Term:
    """A loss term bound to its hyper-parameters: ``term(passes) -> scalar`` on one patch.

    Attributes:
      fn: pure function ``fn(passes, **params) -> scalar``.
      needs: the passes it reads: ``"unmasked"`` and/or ``"masked"``.
      params: bound keyword hyper-parameters, ``((name, value), ...)``.
      signed: whether a negative weight is allowed (a reward rather than a penalty).

    Example:
      >>> t = Term(bound, frozenset({"unmasked"})).bind(lower=0.0, upper=1.0)
      >>> dict(t.params)
      {'lower': 0.0, 'upper': 1.0}
    """

    fn: Callable[..., jax.Array]
    needs: frozenset[str]
    params: tuple[tuple[str, object], ...] = ()
    signed: bool = False

    def __post_init__(self):
        needs = frozenset(self.needs)
        if not needs or not needs <= {UNMASKED, MASKED}:
            raise ValueError(
                f"needs must be a non-empty subset of {{'unmasked', 'masked'}}, got {set(needs)}."
            )
        if not callable(self.fn):
            raise ValueError(f"a loss term must be callable, got {self.fn!r}.")
        object.__setattr__(self, "needs", needs)
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))

    def accepts(self, name: str) -> bool:
        """Whether ``fn`` takes the keyword hyper-parameter ``name``."""
        names = _keyword_names(self.fn)
        return names is None or name in names

    def bind(self, **params) -> Term:
        """A copy with these hyper-parameters bound (added to or replacing the current)."""
        names = _keyword_names(self.fn)
        unknown = sorted(set(params) - names) if names is not None else []
        if unknown:
            raise ValueError(
                f"loss term {getattr(self.fn, '__name__', self.fn)} takes no hyper-parameters "
                f"{unknown}; it accepts {sorted(names - {'p', 'passes'})}."
            )
        return dataclasses.replace(self, params=(*self.params, *params.items()))

    def __call__(self, passes: Passes) -> jax.Array:
        return self.fn(passes, **dict(self.params))


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The serialisable description of one weighted term: name, weight, hyper-parameters.

    Example:
      >>> LossSpec("bound_d", 0.1).to_dict()
      {'name': 'bound_d', 'weight': 0.1, 'params': {}}
    """

    name: str
    weight: float
    params: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a loss term name must be a non-empty string, got {self.name!r}.")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(f"loss weight of {self.name!r} must be a number, got {weight!r}.")
        if not math.isfinite(float(weight)):
            raise ValueError(f"loss weight of {self.name!r} must be finite, got {weight}.")
        params = dict(self.params)
        for key, value in params.items():
            if not isinstance(value, str | bool | int | float) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise ValueError(
                    f"hyper-parameter {key!r} of loss term {self.name!r} must be a finite "
                    f"number, a string or a bool (to be saved with the model), got {value!r}."
                )
        object.__setattr__(self, "weight", float(weight))
        object.__setattr__(self, "params", tuple(sorted(params.items())))

    def to_dict(self) -> dict:
        return {"name": self.name, "weight": self.weight, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping) -> LossSpec:
        unknown = sorted(set(d) - {"name", "weight", "params"})
        if unknown or "name" not in d or "weight" not in d:
            raise ValueError(
                f"a loss spec needs 'name' and 'weight' (and optional 'params'), got {dict(d)}."
            )
        return cls(d["name"], d["weight"], tuple(dict(d.get("params") or {}).items()))


_REGISTRY: dict[str, Term] = {}


def register_loss(
    name: str,
    fn: Callable[..., jax.Array],
    *,
    needs=(UNMASKED, MASKED),
    overwrite: bool = False,
    signed: bool = False,
) -> None:
    """Add a loss term usable by name in :func:`make_loss` and ``Config(loss_weights=...)``.

    Losses built before a name is registered again keep the term they were built with.

    Args:
      name: the key to use in a weights mapping.
      fn: pure function ``fn(passes: Passes, **hyper) -> scalar`` on one patch.
      needs: which passes it reads: any of ``"unmasked"`` (``deconvolved``,
        ``reconvolved``) and ``"masked"`` (``deconvolved_masked``, ``reconvolved_masked``).
      overwrite: allow replacing an existing term of the same name.
      signed: allow negative weights for this term.

    Example:
      >>> def tv(p):
      ...     return sum(jnp.mean(jnp.abs(jnp.diff(p.deconvolved, axis=a)))
      ...                for a in range(p.deconvolved.ndim))
      >>> register_loss("tv_doc_example", tv, needs=("unmasked",), overwrite=True)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a loss term name must be a non-empty string, got {name!r}.")
    if not callable(fn):
        raise ValueError(f"loss term {name!r} must be callable.")
    term = Term(fn, frozenset(needs), signed=signed)
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"a loss term named {name!r} exists; pick another name or pass overwrite=True."
        )
    _REGISTRY[name] = term


def registered_losses() -> dict[str, frozenset[str]]:
    """Names of the registered terms and the passes each needs.

    Example:
      >>> sorted(registered_losses()["inv_d"])
      ['masked', 'unmasked']
    """
    return {name: term.needs for name, term in _REGISTRY.items()}


register_loss("bsp", blind_spot, needs=(MASKED,))
register_loss("rec", reconstruction, needs=(UNMASKED,))
register_loss("inv", invariance)
register_loss("inv_d", invariance_deconvolved)
register_loss("bound", bound, needs=(UNMASKED,))
register_loss("bound_d", bound_deconvolved, needs=(UNMASKED,))
register_loss("prior", prior_deconvolved, needs=(UNMASKED,))

PRESETS: dict[str, dict[str, float]] = {
    # Kobayashi et al. 2020 (SSI): blind spot through the PSF.
    "noise2self": {"bsp": 1.0},
    # Papkov et al. 2023: invariance after the PSF (their best in 3D).
    "noise2same": {"rec": 1.0, "inv": 2.0, "bound": 0.1},
    # Papkov et al. 2023: invariance before the PSF (their best in 2D).
    "noise2same_d": {"rec": 1.0, "inv_d": 2.0, "bound_d": 0.1},
}


@dataclasses.dataclass(frozen=True)
class Loss:
    """A weighted sum of bound terms; call it on a batch of :class:`Passes`.

    ``loss(passes)`` takes Passes whose arrays carry a leading batch axis, vmaps each term
    over it and returns ``(total, {name: value})`` with batch-averaged values.

    Attributes:
      terms: ``((name, weight, Term), ...)``.

    Example:
      >>> loss = make_loss({"rec": 1.0, "bound": 0.1}, defaults={"lower": 0.0, "upper": 1.0})
      >>> x = jnp.ones((2, 8, 8))
      >>> total, terms = loss(Passes(x, x > 0, deconvolved=x, reconvolved=x))
      >>> float(total)
      0.0
    """

    terms: tuple[tuple[str, float, Term], ...]

    @property
    def needs(self) -> frozenset[str]:
        """The passes the train step must compute."""
        return frozenset().union(*(term.needs for _, _, term in self.terms))

    @property
    def weights(self) -> dict[str, float]:
        return {name: weight for name, weight, _ in self.terms}

    def __call__(self, passes: Passes) -> tuple[jax.Array, dict[str, jax.Array]]:
        in_axes = Passes(*(0 if v is not None else None for v in passes))
        values = {
            name: jnp.mean(jax.vmap(term, in_axes=(in_axes,))(passes))
            for name, _, term in self.terms
        }
        total = sum(weight * values[name] for name, weight, _ in self.terms)
        return total, values


def loss_specs(weights, *, hyper=None) -> tuple[LossSpec, ...]:
    """Normalise a preset name, ``{name: weight}`` or LossSpecs to a tuple of LossSpec.

    Example:
      >>> [s.name for s in loss_specs("noise2same_d")]
      ['rec', 'inv_d', 'bound_d']
    """
    if isinstance(weights, str):
        if weights not in PRESETS:
            raise ValueError(f"unknown loss preset {weights!r}; choose one of {list(PRESETS)}.")
        weights = PRESETS[weights]
    hyper = {str(k): dict(v) for k, v in (hyper or {}).items()}
    if isinstance(weights, Mapping):
        specs = [
            LossSpec(str(k), v, tuple(hyper.pop(str(k), {}).items())) for k, v in weights.items()
        ]
    else:
        specs = []
        for item in weights:
            if isinstance(item, LossSpec):
                specs.append(item)
            elif isinstance(item, Mapping):
                specs.append(LossSpec.from_dict(item))
            else:  # a (name, weight) pair
                name, weight = item
                specs.append(LossSpec(str(name), weight, tuple(hyper.pop(str(name), {}).items())))
    if hyper:
        raise ValueError(f"hyper-parameters given for terms not in the loss: {sorted(hyper)}.")
    if not specs:
        raise ValueError("loss weights are empty; give at least one term, e.g. {'bsp': 1.0}.")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"loss terms must be named once each, got {names}.")
    return tuple(specs)


def check_specs(specs: Iterable[LossSpec]) -> None:
    """Raise ``ValueError`` for unregistered names, bad hyper-parameters or negative weights."""
    specs = tuple(specs)
    unknown = sorted({s.name for s in specs} - set(_REGISTRY))
    if unknown:
        raise ValueError(
            f"unknown loss terms {unknown}; registered: {sorted(_REGISTRY)} "
            "(add your own with jdeconv.losses.register_loss)."
        )
    for spec in specs:
        term = _REGISTRY[spec.name]
        if spec.weight < 0 and not term.signed:
            raise ValueError(
                f"loss weight of {spec.name!r} is negative ({spec.weight}): that rewards the "
                "error it measures; use a positive weight (or register the term with "
                "signed=True if a negative weight is intended)."
            )
        term.bind(**dict(spec.params))  # raises for unknown hyper-parameters


def make_loss(weights, *, hyper=None, defaults=None) -> Loss:
    """Bind registered terms into a :class:`Loss`: ``make_loss({"rec": 1, "inv": 2})``.

    Args:
      weights: ``{term name: weight}``, a preset name from :data:`PRESETS`
        (``"noise2self"``, ``"noise2same"``, ``"noise2same_d"``), or LossSpecs.
      hyper: optional ``{term name: {keyword: value}}`` bound to the terms.
      defaults: hyper-parameters bound to every term that accepts them and was not given
        them explicitly (``fit`` passes the intensity bounds ``lower``/``upper`` this way).

    Returns:
      A :class:`Loss` whose ``needs`` tells the train step which passes to compute (a
      ``noise2self`` loss needs only the masked pass).

    Example:
      >>> make_loss("noise2self").needs == frozenset({"masked"})
      True
    """
    specs = loss_specs(weights, hyper=hyper)
    check_specs(specs)
    terms = []
    for spec in specs:
        term = _REGISTRY[spec.name]
        given = dict(spec.params)
        # Defaults go to the terms that name them; a **kwargs term (names None) gets only
        # what was asked for it.
        names = _keyword_names(term.fn) or frozenset()
        extra = {k: v for k, v in (defaults or {}).items() if k in names and k not in given}
        terms.append((spec.name, spec.weight, term.bind(**given, **extra)))
    return Loss(tuple(terms))
