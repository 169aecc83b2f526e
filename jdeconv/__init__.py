"""jdeconv: self-supervised single-image deconvolution in JAX.

Public API (see README.md):

- ``fit(image, psf, cfg)`` -> :class:`FitResult`; ``deconvolve(image, model)``;
  ``save_model`` / ``load_model``; :class:`Config` with ``Config.preset(name, **overrides)``.
- ``make_forward(psf, shape, method=, padding=)`` -> :class:`ForwardModel` (a pytree:
  ``g``, ``g.adjoint``, ``g.normal``); ``check_adjoint(g, key)``.
- modules ``psf``, ``masks``, ``losses``, ``metrics``, ``simulate``, ``unet``, ``train``,
  ``stages`` (prepare → train → infer), ``selection``, ``model``.
- ``richardson_lucy`` (classical baseline).

Example:
  >>> import jdeconv
  >>> cfg = jdeconv.Config.preset("noise2self", steps=200)
  >>> cfg.name, cfg.steps
  ('noise2self', 200)
"""

__version__ = "0.1.0"

from . import losses, masks, metrics, psf, selection, simulate, stages, unet
from .api import FitResult, FittedModel, deconvolve, fit, load_model, save_model
from .classic import richardson_lucy
from .config import Config
from .forward import ForwardModel, check_adjoint, make_forward

__all__ = [
    "Config",
    "FitResult",
    "FittedModel",
    "ForwardModel",
    "check_adjoint",
    "deconvolve",
    "fit",
    "load_model",
    "losses",
    "make_forward",
    "masks",
    "metrics",
    "richardson_lucy",
    "simulate",
    "psf",
    "save_model",
    "selection",
    "stages",
    "unet",
    "__version__",
]
