"""The PSF of ``--psf FILE`` or ``--psf-model``: generated or read once, checked per image."""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

from ..io import ImageMetadata
from ._common import InputError
from ._files import read

_DEFAULT_GL_SIZE = 17
# Relative difference between the image's and the PSF's pixel sizes worth a warning.
_PIXEL_SIZE_RTOL = 0.05


def psf_source(args) -> str:
    return args.psf if args.psf is not None else f"--psf-model {args.psf_model}"


def model_psf(model: str, size, ndim: int, args, *, size_flag: str = "--psf-size"):
    """A model PSF for ``ndim`` dimensions and the pixel sizes it was computed for."""
    from ..psf import gaussian_psf, gibson_lanni_psf

    if size is not None and len(size) not in (1, ndim):
        raise InputError(
            f"{size_flag} has {len(size)} values but the PSF is {ndim}D; give one value or {ndim}."
        )
    if size is not None:
        shape = tuple(size) * ndim if len(size) == 1 else tuple(size)
    try:
        if model == "gaussian":
            sigma = args.psf_sigma
            if not sigma:
                raise InputError(
                    "the gaussian PSF needs its standard deviation in pixels (--psf-sigma)."
                )
            if len(sigma) not in (1, ndim):
                raise InputError(f"--psf-sigma has {len(sigma)} values; give one or {ndim}.")
            sigma = tuple(sigma) * ndim if len(sigma) == 1 else tuple(sigma)
            if size is None:
                shape = tuple(2 * math.ceil(4 * max(s, 0.0)) + 1 for s in sigma)
            return gaussian_psf(shape, sigma), (None,) * ndim
        if size is None:
            shape = (_DEFAULT_GL_SIZE,) * ndim
        psf = gibson_lanni_psf(
            shape,
            numerical_aperture=args.na,
            wavelength=args.wavelength,
            magnification=args.magnification,
            ni=args.ni,
            ns=args.ns,
            pixel_size_xy=args.pixel_size_xy,
            pixel_size_z=args.pixel_size_z,
            defocus=args.defocus,
            particle_depth=args.particle_depth,
        )
    except ValueError as err:
        raise InputError(f"{model} PSF: {err}") from err
    lateral = (args.pixel_size_xy,) * 2
    return psf, ((args.pixel_size_z, *lateral) if ndim == 3 else lateral)


class PsfProvider:
    """The PSF of --psf or --psf-model, per image dimensionality, read/generated once."""

    def __init__(self, args):
        self.args = args
        self.cache: dict[int, tuple] = {}
        self.file = None
        if args.psf is not None:
            self.file = read(Path(args.psf), argparse.Namespace())

    def get(self, ndim: int):
        """(psf array, pixel sizes per axis or None) for a ``ndim``-D image."""
        if self.file is not None:
            psf, meta = self.file
            return self._centred(psf), meta.pixel_size
        if ndim not in self.cache:
            psf, sizes = model_psf(self.args.psf_model, self.args.psf_size, ndim, self.args)
            self.cache[ndim] = self._centred(psf), sizes
        return self.cache[ndim]

    def _centred(self, psf):
        """The PSF centred on its centre of mass with --center-psf, else as it is."""
        if not getattr(self.args, "center_psf", False):
            return psf
        from ..psf import center_psf

        try:
            return center_psf(psf)
        except ValueError as err:
            raise InputError(f"{psf_source(self.args)}: --center-psf: {err}") from err

    def checked(self, path: Path, image, meta: ImageMetadata):
        """The validated PSF for this image; mismatches name both files."""
        from .._checks import check_psf_fits
        from ..psf import validate_psf

        psf, sizes = self.get(image.ndim)
        source = psf_source(self.args)
        try:
            psf = validate_psf(psf, ndim=image.ndim, normalize=self.args.normalize_psf)
        except ValueError as err:
            hint = " Or pass --normalize-psf." if "sums to" in str(err) else ""
            raise InputError(f"{source}: {err} (image {path}: shape {image.shape}).{hint}") from err
        try:
            check_psf_fits(psf.shape, image.shape)
        except ValueError as err:
            raise InputError(f"{path}: the PSF ({source}): {err}") from err
        _warn_pixel_sizes(path, meta, sizes, source)
        return psf


def _warn_pixel_sizes(path, meta: ImageMetadata, psf_sizes, source) -> None:
    for axis, psf_size in zip(meta.axes, psf_sizes or (), strict=False):
        image_size = meta.size_of(axis)
        if image_size is None or psf_size is None:
            continue
        if abs(image_size - psf_size) > _PIXEL_SIZE_RTOL * image_size:
            warnings.warn(
                f"{path}: pixel size along {axis} is {image_size:.4g} µm in the file but the "
                f"PSF ({source}) assumes {psf_size:.4g} µm; set --pixel-size-xy/"
                "--pixel-size-z to match the image.",
                stacklevel=2,
            )
