"""A trained model: :class:`FittedModel`, and saving/loading it as a folder of files.

A model folder holds ``config.json`` (the config, dimensionality, format and library
version, and SHA-256 checksums of the other two files), ``params.npz`` (the network's
parameters) and ``psf.npy`` (the PSF it was trained with). Loading needs no loss term:
a model trained with a custom term that is not registered in this process still loads
and predicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import __version__
from ._files import atomic_write_bytes
from .config import Config
from .psf import validate_psf
from .unet import abstract_unet, for_inference

__all__ = ["FittedModel", "save_model", "load_model", "MODEL_FORMAT"]

MODEL_FORMAT = 2  # 2: nested config and checksums; 1 (jdeconv 0.1): flat config
_FILES = ("config.json", "params.npz", "psf.npy")


@dataclasses.dataclass(frozen=True)
class FittedModel:
    """A trained network with everything needed to apply it to other images.

    Attributes:
      params: network parameters (an ``nnx.State``).
      config: the :class:`Config` it was trained with.
      ndim: 2 or 3.
      psf: the PSF it was trained with (for ``reconvolved``).
      version: jdeconv version that trained it.

    Example:
      >>> import jdeconv
      >>> from jdeconv.unet import init_unet
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8)
      >>> psf = jdeconv.psf.gaussian_psf((3, 3), 1.0)
      >>> m = FittedModel(init_unet(0, cfg.unet(2))[1], cfg, 2, psf)
      >>> m.ndim
      2
    """

    params: nnx.State
    config: Config
    ndim: int
    psf: np.ndarray
    version: str = __version__

    @property
    def anchor_only(self) -> bool:
        """Whether the network is its anchor alone: an anchored network whose U-Net branch
        is exactly zero (its head's weights and bias all zero), as at ``jdeconv.fit``'s
        step 0, the classical solution, which model selection keeps unless training does
        significantly better. Inference then skips the U-Net (the result is the same) and
        tiles with the anchor's context only (:meth:`tile_context`)."""
        if self.params is None or not self.config.network.anchor_shape:
            return False
        if "head" not in self.params:  # already the anchor alone
            return True
        return all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(self.params["head"]))

    @property
    def network(self):
        """The :class:`jdeconv.unet.UNetConfig` inference runs: laid out for inference
        (:func:`jdeconv.unet.for_inference`), and ``anchor_only`` when :attr:`anchor_only`."""
        network = for_inference(self.config.unet(self.ndim))
        if self.anchor_only:
            network = dataclasses.replace(network, anchor_only=True)
        return network

    @property
    def graphdef(self):
        """The whole network's graph definition, laid out for inference
        (:func:`jdeconv.unet.for_inference`; shared by every model of the same shape); it
        runs on :attr:`params`."""
        return abstract_unet(for_inference(self.config.unet(self.ndim)))[0]

    @property
    def inference_graphdef(self):
        """The graph definition of :attr:`network`, what inference runs (the anchor alone
        for an :attr:`anchor_only` model); it runs on :attr:`inference_params`."""
        return abstract_unet(self.network)[0]

    @property
    def inference_params(self):
        """The parameters :attr:`inference_graphdef` takes: all, or the anchor's alone."""
        if not self.anchor_only:
            return self.params
        wanted = abstract_unet(self.network)[1]
        return nnx.State({name: self.params[name] for name in wanted.keys()})

    @property
    def multiple(self) -> int:
        """The size multiple inference windows are cut on: the U-Net's ``2**depth``
        (its pooling grid), or 1 for an :attr:`anchor_only` network, which has none."""
        return 1 if self.anchor_only else self.config.network.multiple

    def tile_context(self) -> int:
        """Pixels of context tiled inference gives each tile: ``Config.tile_context()``,
        or for an :attr:`anchor_only` network the anchor's reach alone (the U-Net's
        receptive field no longer counts).

        Example:
          >>> import jdeconv
          >>> from jdeconv.unet import init_unet
          >>> net = jdeconv.config.NetworkConfig(anchor="tikhonov", anchor_shape=(9, 9))
          >>> cfg = jdeconv.Config(depth=1, base_channels=8, network=net, tile_halo=32)
          >>> m = FittedModel(init_unet(0, cfg.unet(2))[1], cfg, 2, np.ones((3, 3)) / 9)
          >>> m.anchor_only, m.tile_context()
          (True, 4)
        """
        return self.config.tile_context(anchor_only=self.anchor_only)


def _flatten(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def save_model(model: FittedModel, directory) -> Path:
    """Write ``model`` to ``directory`` (created; each file written atomically).

    ``config.json`` is written last and records the checksums of ``params.npz`` and
    ``psf.npy``, so a folder whose writing was interrupted is recognised on loading.

    Example:
      >>> import tempfile, jdeconv
      >>> from jdeconv.unet import init_unet
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8)
      >>> _, params = init_unet(0, cfg.unet(2))
      >>> m = FittedModel(params, cfg, 2, jdeconv.psf.gaussian_psf((3, 3), 1.0))
      >>> folder = save_model(m, tempfile.mkdtemp())
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in _flatten(model.params)}
    params = _npz_bytes(flat)
    psf = _npy_bytes(np.asarray(model.psf, np.float32))
    meta = {
        "format": MODEL_FORMAT,
        "jdeconv_version": model.version,
        "ndim": model.ndim,
        "config": model.config.to_dict(),
        "sha256": {
            "params.npz": hashlib.sha256(params).hexdigest(),
            "psf.npy": hashlib.sha256(psf).hexdigest(),
        },
    }
    atomic_write_bytes(directory / "params.npz", params)
    atomic_write_bytes(directory / "psf.npy", psf)
    atomic_write_bytes(directory / "config.json", json.dumps(meta, indent=2).encode())
    return directory


def _problem(directory: Path, name: str, what: str) -> ValueError:
    return ValueError(
        f"model folder {directory}: {name} {what}; the folder is incomplete, corrupted or "
        "from another program. Save the model again (jdeconv deconvolve --save-model) or "
        "point to the folder save_model wrote."
    )


def _read(directory: Path, name: str, checksums: dict | None) -> bytes:
    path = directory / name
    if not path.is_file():
        raise _problem(directory, name, "is missing")
    data = path.read_bytes()
    expected = (checksums or {}).get(name)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise _problem(directory, name, "does not match the checksum in config.json")
    return data


def load_model(directory) -> FittedModel:
    """Read a model written by :func:`save_model` (format 2, or 1 of jdeconv 0.1).

    Raises:
      ValueError: naming the folder, the file and the problem, for a missing, truncated,
        corrupted or mismatched file, or an unsupported format.

    Example:
      >>> import tempfile, jdeconv
      >>> from jdeconv.unet import init_unet
      >>> cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8)
      >>> _, params = init_unet(0, cfg.unet(2))
      >>> m = FittedModel(params, cfg, 2, jdeconv.psf.gaussian_psf((3, 3), 1.0))
      >>> load_model(save_model(m, tempfile.mkdtemp())).ndim
      2
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a folder; pass the folder save_model wrote.")
    if not (directory / "config.json").is_file():
        raise ValueError(f"{directory} is not a jdeconv model folder (no config.json).")
    try:
        meta = json.loads(_read(directory, "config.json", None))
        fmt = meta["format"]
        ndim = int(meta["ndim"])
        checksums = meta.get("sha256")
        if fmt not in (1, MODEL_FORMAT):
            raise ValueError(
                f"model format {fmt} (jdeconv {meta.get('jdeconv_version')}) is not supported "
                f"by jdeconv {__version__} (formats 1 and {MODEL_FORMAT}); retrain or use a "
                "matching version."
            )
        cfg = Config.from_dict(meta["config"], check_terms=False)
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _problem(
            directory, "config.json", f"is not a valid jdeconv model config ({err})"
        ) from None
    except ValueError as err:
        raise ValueError(f"model folder {directory}: config.json: {err}") from err

    params_bytes = _read(directory, "params.npz", checksums)
    try:
        with np.load(io.BytesIO(params_bytes)) as data:
            stored = dict(data)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise _problem(directory, "params.npz", f"cannot be read ({type(err).__name__})") from None
    _, abstract = abstract_unet(cfg.unet(ndim))
    leaves = []
    for path, leaf in _flatten(abstract):
        name = jax.tree_util.keystr(path)
        if name not in stored or stored[name].shape != leaf.shape:
            raise _problem(
                directory,
                "params.npz",
                f"does not match the network in config.json (parameter {name})",
            )
        leaves.append(jnp.asarray(stored[name]))
    params = jax.tree.unflatten(jax.tree.structure(abstract), leaves)
    psf_bytes = _read(directory, "psf.npy", checksums)
    try:
        psf = np.load(io.BytesIO(psf_bytes), allow_pickle=False)
    except (EOFError, OSError, ValueError) as err:
        raise _problem(directory, "psf.npy", f"cannot be read ({type(err).__name__})") from None
    try:
        psf = validate_psf(psf, ndim=ndim)
    except ValueError as err:
        raise _problem(directory, "psf.npy", f"is not a valid PSF ({err})") from None
    return FittedModel(
        params=params, config=cfg, ndim=ndim, psf=psf, version=meta["jdeconv_version"]
    )
