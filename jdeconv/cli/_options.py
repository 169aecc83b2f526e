"""argparse pieces the commands share: the parser and help classes, option types and the
parent parsers (common, reading, output, PSF choice, PSF model parameters).
"""

from __future__ import annotations

import argparse
import inspect

from ._common import EXIT_USAGE

PSF_MODELS = ("gaussian", "gibson-lanni")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks and shows real defaults (not None/False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "[default" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def odd_int(text: str) -> int:
    value = int(text)
    if value < 1 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"PSF sizes must be odd and positive, got {text}")
    return value


def common_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of unexpected failures"
    )
    return parser


def reading_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("reading images")
    group.add_argument(
        "--axes",
        help="axes of the input as stored, overriding the file's metadata, e.g. YX, ZYX, "
        "CZYX (with --channel) or TZYX (with --time)",
    )
    group.add_argument("--channel", type=int, help="channel (C, or RGB sample) index to use")
    group.add_argument("--time", type=int, help="time point (T) index to use")
    return parser


def outputs_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("output")
    where = group.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-o",
        "--output",
        help="output file (.tif, .tiff or .npy) or OME-Zarr store (.ome.zarr); one input only",
    )
    where.add_argument(
        "--output-dir",
        help="directory for the outputs, named <stem>_deconv.tif (<stem>_deconv.ome.zarr "
        "for OME-Zarr inputs; created if missing)",
    )
    group.add_argument(
        "--dtype",
        choices=("float32", "input", "uint8", "uint16"),
        default="float32",
        help="pixel type written; 'input' casts back to the input's type. Integer types are "
        "rounded and clipped to the type's range, never rescaled",
    )
    add_overwrite(group)
    group.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    return parser


def add_overwrite(parser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that already exist (by default they are refused before any "
        "work starts)",
    )


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def psf_choice_parser(*, per_channel: bool = False) -> argparse.ArgumentParser:
    """``--psf``/``--psf-model`` and their options; ``per_channel``: one PSF per channel
    (``--psf a.tif b.tif``) and the pixel sizes that decide PSF resampling."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("PSF (a file or a model)")
    which = group.add_mutually_exclusive_group(required=True)
    if per_channel:
        which.add_argument(
            "--psf",
            metavar="FILE",
            nargs="+",
            help="measured or saved PSF (.tif or .npy); for a file with several channels one "
            "per channel, in channel order (or one for all)",
        )
    else:
        which.add_argument("--psf", metavar="FILE", help="measured or saved PSF (.tif or .npy)")
    which.add_argument("--psf-model", choices=PSF_MODELS, help="generate the PSF from a model")
    group.add_argument(
        "--psf-size",
        type=odd_int,
        nargs="+",
        metavar="N",
        help="model PSF size: one odd value per axis, or one for all [default: 17 for "
        "gibson-lanni, 8 sigma + 1 for gaussian]",
    )
    group.add_argument(
        "--normalize-psf",
        action="store_true",
        help="divide the PSF by its sum instead of rejecting one that does not sum to 1",
    )
    group.add_argument(
        "--center-psf",
        action="store_true",
        help="centre the PSF on its centre of mass (jdeconv.psf.center_psf) before use, "
        "instead of rejecting one that is off-centre",
    )
    if per_channel:
        sampling = parser.add_argument_group(
            "pixel sizes (µm; a PSF is resampled to the image's grid when both are known)"
        )
        sampling.add_argument(
            "--pixel-size",
            type=positive_float,
            nargs="+",
            metavar="UM",
            help="the image's pixel size, overriding the file's metadata: one value (YX) or "
            "one per axis (Z Y X, or Y X)",
        )
        sampling.add_argument(
            "--psf-pixel-size",
            type=positive_float,
            nargs="+",
            metavar="UM",
            help="the --psf file's pixel size, overriding its metadata: one value (YX) or "
            "one per axis",
        )
    return parser


def _gl_defaults() -> dict:
    from ..psf import gibson_lanni_psf

    return {
        name: param.default
        for name, param in inspect.signature(gibson_lanni_psf).parameters.items()
        if param.default is not inspect.Parameter.empty
    }


def psf_parameter_parser(*, sigma_flag: bool = True) -> argparse.ArgumentParser:
    gl = _gl_defaults()
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("PSF model parameters (lengths in µm)")
    flags = ("--sigma", "--psf-sigma") if sigma_flag else ("--psf-sigma",)
    group.add_argument(
        *flags,
        dest="psf_sigma",
        metavar="SIGMA",
        type=float,
        nargs="+",
        help="gaussian: standard deviation in pixels, one value or one per axis",
    )
    group.add_argument(
        "--na",
        type=float,
        default=gl["numerical_aperture"],
        help="gibson-lanni: numerical aperture",
    )
    group.add_argument(
        "--wavelength",
        type=float,
        nargs="+",
        default=[gl["wavelength"]],
        metavar="UM",
        help="emission wavelength in vacuum; for a file with several channels one per "
        "channel (one PSF each)",
    )
    group.add_argument(
        "--magnification", type=float, default=gl["magnification"], help="objective magnification"
    )
    group.add_argument("--ni", type=float, default=gl["ni"], help="immersion refractive index")
    group.add_argument("--ns", type=float, default=gl["ns"], help="sample refractive index")
    group.add_argument(
        "--pixel-size-xy",
        type=float,
        help="lateral pixel size the PSF is computed for [default: the image's, else "
        f"{gl['pixel_size_xy']}]",
    )
    group.add_argument(
        "--pixel-size-z",
        type=float,
        help=f"axial step (3D PSFs) [default: the image's, else {gl['pixel_size_z']}]",
    )
    group.add_argument(
        "--defocus",
        type=float,
        default=gl["defocus"],
        help="position of the middle plane relative to focus; + is deeper",
    )
    group.add_argument(
        "--particle-depth",
        type=float,
        default=gl["particle_depth"],
        help="depth of the focal plane below the coverslip (matters with --ni != --ns)",
    )
    return parser


def cpu_devices(text: str):
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or a positive integer, got {text}"
        ) from None


def add_cpu_devices(group) -> None:
    group.add_argument(
        "--cpu-devices",
        type=cpu_devices,
        default="auto",
        metavar="N",
        help="on a CPU, train data-parallel on N JAX devices that share its cores ('auto': "
        "the usable cores, at most 2; 1: one device using all cores); about 1.4x faster "
        "training steps on 2 cores. No effect when a GPU trains",
    )


def resources_parser() -> argparse.ArgumentParser:
    """--max-memory, and --workers/--scheduler for a dask.distributed cluster."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("memory and parallelism")
    group.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="working memory of one inference tile (one per parallel task), e.g. 2GB "
        "(default: an eighth of the available RAM, or half the free GPU memory, rounded "
        "down to a power of two)",
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="start a local dask.distributed cluster of N worker processes for the "
        "chunks of OME-Zarr inputs (reading, inference, writing); needs the 'zarr' extra",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use a running dask.distributed scheduler, e.g. tcp://10.0.0.5:8786 (started "
        "by dask-jobqueue on SLURM/LSF, see the README), like --workers",
    )
    return parser
