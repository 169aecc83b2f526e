"""jdeconv: self-supervised single-image deconvolution in JAX."""

__version__ = "0.1.0"

from . import psf
from .forward import ForwardModel, make_forward

__all__ = ["ForwardModel", "make_forward", "psf", "__version__"]
