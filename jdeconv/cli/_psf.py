"""The PSF of ``--psf FILE...`` or ``--psf-model``: read or generated once, then checked
and brought onto each image's grid.

Pixel sizes (README, "PSF sampling"): the image's come from ``--pixel-size`` or its
metadata; a PSF file's from ``--psf-pixel-size`` or its metadata; a model PSF is
computed for ``--pixel-size-xy``/``--pixel-size-z`` when given, else for the image's
pixel size, else for the Gibson-Lanni defaults (0.406 µm, with a notice). Where both are
known and differ, the PSF is resampled to the image's grid with a one-line notice
(:func:`jdeconv.psf.match_psf_to_image`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..io import ImageMetadata
from ._common import InputError, note
from ._files import read

_DEFAULT_GL_SIZE = 17


def psf_files(args) -> list[str]:
    """The ``--psf`` files as a list (one string for commands that take one)."""
    value = getattr(args, "psf", None)
    if value is None:
        return []
    return [value] if isinstance(value, (str, Path)) else list(value)


def wavelengths(args) -> list[float]:
    value = getattr(args, "wavelength", None)
    if value is None:
        return []
    return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


def psf_source(args, index: int | None = None) -> str:
    files = psf_files(args)
    if files:
        return str(files[0 if index is None or len(files) == 1 else index])
    text = f"--psf-model {args.psf_model}"
    waves = wavelengths(args)
    if index is not None and len(waves) > 1:
        text += f" (wavelength {waves[index]:g} µm)"
    return text


def _per_axis(values, ndim: int, flag: str, known=None) -> tuple:
    """``--pixel-size``-style values as one size per axis: one value is the lateral size
    (Z from ``known``), else one per axis."""
    known = tuple(known) if known else (None,) * ndim
    if values is None:
        return known
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return (*known[:-2], values[0], values[0])
    if len(values) == ndim:
        return values
    axes = "Z Y X" if ndim == 3 else "Y X"
    raise InputError(f"{flag} has {len(values)} values; give one (YX) or {ndim} ({axes}).")


def image_pixel_size(args, meta: ImageMetadata, ndim: int) -> tuple:
    """The image's pixel size per axis: ``--pixel-size`` over the file's metadata."""
    return _per_axis(getattr(args, "pixel_size", None), ndim, "--pixel-size", meta.pixel_size)


def model_psf(
    model: str,
    size,
    ndim: int,
    args,
    *,
    size_flag: str = "--psf-size",
    wavelength: float | None = None,
    image_pixel_size=None,
):
    """A model PSF for ``ndim`` dimensions and the pixel sizes it was computed for.

    Gibson-Lanni: ``--pixel-size-xy``/``--pixel-size-z`` when given, else the image's
    pixel size (``image_pixel_size``), else the model's defaults.
    """
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
        if wavelength is None:
            waves = wavelengths(args)
            if len(waves) > 1:
                raise InputError(f"--wavelength has {len(waves)} values; give one here.")
            wavelength = waves[0]
        dz, dxy = generation_pixel_size(args, ndim, image_pixel_size)
        psf = gibson_lanni_psf(
            shape,
            numerical_aperture=args.na,
            wavelength=wavelength,
            magnification=args.magnification,
            ni=args.ni,
            ns=args.ns,
            pixel_size_xy=dxy,
            pixel_size_z=dz,
            defocus=args.defocus,
            particle_depth=args.particle_depth,
        )
    except ValueError as err:
        raise InputError(f"{model} PSF: {err}") from err
    return psf, ((dz, dxy, dxy) if ndim == 3 else (dxy, dxy))


def generation_pixel_size(args, ndim: int, image_pixel_size=None) -> tuple[float, float]:
    """``(dz, dxy)`` a Gibson-Lanni PSF is computed for (module docstring)."""
    from ..psf import gibson_lanni_psf

    defaults = gibson_lanni_psf.__kwdefaults__
    sizes = tuple(image_pixel_size) if image_pixel_size else (None,) * ndim
    lateral = [s for s in sizes[-2:] if s is not None]
    dxy = args.pixel_size_xy
    if dxy is None:
        dxy = min(lateral) if lateral else defaults["pixel_size_xy"]
    dz = args.pixel_size_z
    if dz is None:
        dz = sizes[0] if ndim == 3 and sizes[0] is not None else defaults["pixel_size_z"]
    return float(dz), float(dxy)


class PsfProvider:
    """The PSF(s) of --psf or --psf-model: files read once, models generated per grid."""

    def __init__(self, args):
        self.args = args
        self.cache: dict = {}
        self.files = [read(Path(f), argparse.Namespace()) for f in psf_files(args)]

    @property
    def count(self) -> int:
        """How many PSFs were given: files, or wavelengths of a model (1: one for all)."""
        if self.files:
            return len(self.files)
        return max(len(wavelengths(self.args)), 1) if self.args.psf_model == "gibson-lanni" else 1

    def index(self, channel: int | None, n_channels: int | None, path) -> int:
        """Which PSF serves ``channel`` of an image with ``n_channels`` channels."""
        if self.count == 1:
            return 0
        what = "--psf files" if self.files else "--wavelength values"
        if n_channels is None:
            raise InputError(
                f"{path}: {self.count} {what} were given but the image has no channel axis; "
                "give one."
            )
        if self.count != n_channels:
            raise InputError(
                f"{path}: {self.count} {what} were given for {n_channels} channels; give one "
                "per channel, in channel order, or one for all."
            )
        return channel

    def get(self, ndim: int, *, index: int = 0, image_pixel_size=None):
        """(psf array, its pixel sizes per axis, None where unknown) for an ``ndim``-D image."""
        if self.files:
            psf, meta = self.files[index]
            sizes = _per_axis(
                getattr(self.args, "psf_pixel_size", None),
                psf.ndim,
                "--psf-pixel-size",
                meta.pixel_size,
            )
            return self._centred(psf), sizes
        waves = wavelengths(self.args)
        wave = waves[index] if waves else None
        key = (ndim, wave, tuple(image_pixel_size or ()))
        if key not in self.cache:
            psf, sizes = model_psf(
                self.args.psf_model,
                self.args.psf_size,
                ndim,
                self.args,
                wavelength=wave,
                image_pixel_size=image_pixel_size,
            )
            self.cache[key] = self._centred(psf), sizes
        return self.cache[key]

    def _centred(self, psf):
        """The PSF centred on its centre of mass with --center-psf, else as it is."""
        if not getattr(self.args, "center_psf", False):
            return psf
        from ..psf import center_psf

        try:
            return center_psf(psf)
        except ValueError as err:
            raise InputError(f"{psf_source(self.args)}: --center-psf: {err}") from err

    def checked(
        self,
        path: Path,
        image,
        meta: ImageMetadata,
        *,
        channel: int | None = None,
        n_channels: int | None = None,
    ):
        """The validated PSF for this image, on its grid; mismatches name both files."""
        from .._checks import check_psf_fits
        from ..psf import match_psf_to_image, validate_psf

        if channel is None and meta.selection:
            channel = next((meta.selection[a] for a in "CS" if a in meta.selection), None)
            if channel is not None and n_channels is None and meta.source_axes:
                axis = "C" if "C" in meta.selection else "S"
                n_channels = meta.source_shape[meta.source_axes.index(axis)]
        index = self.index(channel, n_channels, path)
        sizes = image_pixel_size(self.args, meta, image.ndim)
        psf, psf_sizes = self.get(image.ndim, index=index, image_pixel_size=sizes)
        source = psf_source(self.args, index)
        normalize = getattr(self.args, "normalize_psf", False)
        try:
            psf = validate_psf(psf, ndim=image.ndim, normalize=normalize)
        except ValueError as err:
            hint = " Or pass --normalize-psf." if "sums to" in str(err) else ""
            raise InputError(f"{source}: {err} (image {path}: shape {image.shape}).{hint}") from err
        lateral_default = (
            self.args.pixel_size_xy is None and None in sizes[-2:] if not self.files else False
        )
        axial_default = (
            not self.files
            and image.ndim == 3
            and self.args.pixel_size_z is None
            and sizes[0] is None
        )
        if self.args.psf_model == "gibson-lanni" and (lateral_default or axial_default):
            dz, dxy = generation_pixel_size(self.args, image.ndim, sizes)
            note(
                self.args,
                f"{path}: the image's pixel size is not known; the PSF is computed for "
                f"{dxy:g} µm pixels"
                + (f" and {dz:g} µm planes" if image.ndim == 3 else "")
                + " (give --pixel-size to set it).",
            )
        try:
            psf, notice = match_psf_to_image(
                psf, image.shape, psf_pixel_size=psf_sizes, pixel_size=sizes
            )
        except ValueError as err:
            raise InputError(f"{source}: {err}") from err
        if notice:
            note(self.args, f"{path}: {notice}")
        try:
            check_psf_fits(psf.shape, image.shape)
        except ValueError as err:
            raise InputError(f"{path}: the PSF ({source}): {err}") from err
        return psf
