"""jdeconv: self-supervised single-image deconvolution in JAX.

Public API (see README.md):

- ``fit(image, psf, cfg)`` -> :class:`FitResult`; ``deconvolve(image, model)``;
  ``deconvolve_file(path, psf, output=)`` for whole files (channels, time points);
  ``save_model`` / ``load_model``; :class:`Config` with ``Config.preset(name, **overrides)``.
- ``make_forward(psf, shape, method=, padding=)`` -> :class:`ForwardModel` (a pytree:
  ``g``, ``g.adjoint``, ``g.normal``); ``check_adjoint(g, key)``.
- modules ``psf``, ``masks``, ``losses``, ``metrics``, ``simulate``, ``unet``, ``train``,
  ``stages`` (prepare → train → infer), ``selection``, ``symmetry``, ``model``.
- ``richardson_lucy`` (classical baseline).
- ``use_cpu_devices()``: split the CPU into JAX devices for data-parallel training (about
  1.4× faster steps on 2 cores); call it before any JAX computation.

Example:
  >>> import jdeconv
  >>> cfg = jdeconv.Config.preset("noise2self", steps=200)
  >>> cfg.name, cfg.steps
  ('noise2self', 200)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562), not here: importing JAX takes
# seconds, and the command line must be able to handle Ctrl-C from its first moment
# (jdeconv._signals), which it can only do once its own code runs, after this module.
_NAMES = {
    "FitResult": ".api",
    "FittedModel": ".api",
    "deconvolve": ".api",
    "fit": ".api",
    "load_model": ".api",
    "save_model": ".api",
    "deconvolve_file": ".files",
    "richardson_lucy": ".classic",
    "wiener": ".classic",
    "Config": ".config",
    "ForwardModel": ".forward",
    "make_forward": ".forward",
    "check_adjoint": ".forward",
    "use_cpu_devices": ".devices",
}

__all__ = [
    "Config",
    "FitResult",
    "FittedModel",
    "ForwardModel",
    "check_adjoint",
    "deconvolve",
    "deconvolve_file",
    "files",
    "fit",
    "load_model",
    "losses",
    "make_forward",
    "masks",
    "metrics",
    "richardson_lucy",
    "wiener",
    "simulate",
    "psf",
    "save_model",
    "selection",
    "stages",
    "symmetry",
    "unet",
    "use_cpu_devices",
    "__version__",
]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):  # any submodule, as ``jdeconv.psf`` (imported on use)
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
