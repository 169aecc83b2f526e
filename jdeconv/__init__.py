"""jdeconv: self-supervised single-image deconvolution in JAX.

Public API (see README.md):

- ``fit(image, psf, cfg)`` -> :class:`FitResult`; ``deconvolve(image, model)``;
  ``save_model`` / ``load_model``; :class:`Config` with ``Config.preset(name, **overrides)``.
- ``make_forward(psf, shape, method=, padding=)`` -> :class:`ForwardModel` (``g`` and
  ``g.adjoint``).
- modules ``psf``, ``masks``, ``losses``, ``metrics``, ``simulate``, ``unet``, ``train``.
- ``richardson_lucy`` (classical baseline).
"""

__version__ = "0.1.0"

from . import losses, masks, metrics, psf, simulate, unet
from .api import FitResult, FittedModel, deconvolve, fit, load_model, save_model
from .classic import richardson_lucy
from .config import Config
from .forward import ForwardModel, make_forward

__all__ = [
    "Config",
    "FitResult",
    "FittedModel",
    "ForwardModel",
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
    "unet",
    "__version__",
]
