"""The ``jdeconv`` command line: deconvolve, predict, psf, simulate and demo.

Run ``jdeconv --help`` or ``jdeconv COMMAND --help``. Exit codes: 0 success, 1 a failure
while running (e.g. a write error or a bug; ``--debug`` shows the traceback), 2 bad usage
or bad input. Bad input is reported as one line on stderr naming the file and the
problem, without a traceback.

The heavy imports (JAX, Flax, matplotlib) happen inside the commands so that ``--help``
and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import inspect
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from . import __version__
from .io import WRITE_SUFFIXES, ImageMetadata, image_stem, read_image, write_image

__all__ = ["main", "build_parser", "InputError"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_PSF_MODELS = ("gaussian", "gibson-lanni")
_DEFAULT_GL_SIZE = 17
# Relative difference between the image's and the PSF's pixel sizes worth a warning.
_PIXEL_SIZE_RTOL = 0.05


class InputError(Exception):
    """Bad usage or bad input: one line on stderr and exit code 2."""


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits for --help (0) and usage errors (2)
        return _exit_code(stop.code)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = getattr(args, "debug", False) or bool(os.environ.get("JDECONV_DEBUG"))
    with _warnings_as_lines():
        try:
            return args.run(args)
        except InputError as err:
            _error(str(err))
            return EXIT_USAGE
        except KeyboardInterrupt:
            _error("interrupted.")
            return 130
        except Exception as err:  # a failure while running: summarise, traceback on request
            if debug:
                traceback.print_exc()
            hint = "" if debug else " (run with --debug for the traceback)"
            _error(f"failed: {type(err).__name__}: {err}{hint}")
            return EXIT_FAILURE


def _exit_code(code) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_USAGE


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str) -> None:
    print(f"jdeconv: error: {_one_line(message)}", file=sys.stderr, flush=True)


def _note(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _warnings_as_lines():
    """Show warnings as one ``jdeconv: warning:`` line instead of a source dump.

    The warning filters (``-W``, ``PYTHONWARNINGS``) are left as the user set them.
    """

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"jdeconv: warning: {_one_line(message)}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = show
        yield


# ----------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jdeconv`` (one sub-command per task)."""
    parser = _Parser(
        prog="jdeconv",
        description=(
            "Self-supervised single-image deconvolution (Noise2Self / Noise2Same through the "
            "PSF) in JAX."
        ),
        epilog=(
            "Exit codes: 0 success, 1 failure while running, 2 bad usage or bad input.\n"
            "Start with: jdeconv demo --quick"
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"jdeconv {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of unexpected failures"
    )

    reading = argparse.ArgumentParser(add_help=False)
    group = reading.add_argument_group("reading images")
    group.add_argument(
        "--axes",
        help="axes of the input as stored, overriding the file's metadata, e.g. YX, ZYX, "
        "CZYX (with --channel) or TZYX (with --time)",
    )
    group.add_argument("--channel", type=int, help="channel (C, or RGB sample) index to use")
    group.add_argument("--time", type=int, help="time point (T) index to use")

    outputs = argparse.ArgumentParser(add_help=False)
    group = outputs.add_argument_group("output")
    where = group.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="output file (.tif, .tiff or .npy); one input only")
    where.add_argument(
        "--output-dir",
        help="directory for the outputs, named <stem>_deconv.tif (created if missing)",
    )
    group.add_argument(
        "--dtype",
        choices=("float32", "input", "uint8", "uint16"),
        default="float32",
        help="pixel type written; 'input' casts back to the input's type. Integer types are "
        "rounded and clipped to the type's range, never rescaled",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bars or summaries")

    params = _psf_parameter_parser()

    # deconvolve
    p = commands.add_parser(
        "deconvolve",
        parents=[common, reading, _psf_choice_parser(), params, outputs],
        help="train on each image and write its deconvolution",
        description=(
            "Learn a deconvolution of each input from the image itself (self-supervised) "
            "and write the result. Each file gets its own model.\n\n"
            "Example:\n  jdeconv deconvolve cells.tif --psf psf.tif -o cells_deconv.tif\n"
            "  jdeconv deconvolve 'data/*.tif' --psf-model gibson-lanni --na 1.2 "
            "--wavelength 0.52 --ni 1.33 --pixel-size-xy 0.1 --output-dir results"
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images or glob patterns")
    group = p.add_argument_group("training")
    group.add_argument(
        "--preset",
        choices=("noise2self", "noise2same", "noise2same_d"),
        help="loss preset (default: the library's choice for the image's dimensionality)",
    )
    group.add_argument("--steps", type=_positive_int, help="training steps (maximum)")
    group.add_argument("--seed", type=_non_negative_int, help="random seed")
    group.add_argument("--patch-size", type=_positive_int, help="training patch side (YX)")
    group.add_argument("--patch-size-z", type=_positive_int, help="training patch depth (3D)")
    group.add_argument("--batch-size", type=_positive_int, help="patches per step")
    group.add_argument("--tile", type=_positive_int, help="tiled inference with this tile side")
    group.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average the prediction over rotations/flips (default: the preset's)",
    )
    group.add_argument(
        "--save-model",
        metavar="DIR",
        help="save the trained model here (with several inputs: DIR/<stem>)",
    )
    p.set_defaults(run=_cmd_deconvolve)

    # predict
    p = commands.add_parser(
        "predict",
        parents=[common, reading, outputs],
        help="apply a saved model to images",
        description=(
            "Deconvolve images with a model saved by 'jdeconv deconvolve --save-model'.\n\n"
            "Example:\n  jdeconv predict --model cells_model more/*.tif --output-dir results"
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images or glob patterns")
    p.add_argument("--model", required=True, metavar="DIR", help="a saved model directory")
    p.add_argument("--tile", type=_positive_int, help="tiled inference with this tile side")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average over rotations/flips (default: the model's setting)",
    )
    p.set_defaults(run=_cmd_predict)

    # psf
    p = commands.add_parser(
        "psf",
        parents=[common, params],
        help="write a model PSF (2D or 3D)",
        description=(
            "Write a generated, normalised PSF.\n\n"
            "Examples:\n  jdeconv psf --model gibson-lanni --size 17 -o ssi_2d.tif --defocus "
            "-3.045\n  jdeconv psf --model gibson-lanni --size 17 17 17 -o psf3d.tif\n"
            "  jdeconv psf --model gaussian --size 15 --sigma 2 -o gauss.tif"
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("--model", choices=_PSF_MODELS, required=True, help="PSF model")
    p.add_argument(
        "--size",
        type=_odd_int,
        nargs="+",
        metavar="N",
        help="odd size per axis (one value: that size on every axis of --ndim) [default: 17 "
        "for gibson-lanni, 8 sigma + 1 for gaussian]",
    )
    p.add_argument("--ndim", type=int, choices=(2, 3), help="2 or 3 when --size has one value")
    p.add_argument("-o", "--output", required=True, help="output file (.tif, .tiff or .npy)")
    p.set_defaults(run=_cmd_psf)

    # simulate
    p = commands.add_parser(
        "simulate",
        parents=[common, reading, _psf_choice_parser(), _psf_parameter_parser(sigma_flag=False)],
        help="blur and add the papers' noise to a clean image",
        description=(
            "Degrade a clean image as the SSI and Papkov et al. benchmarks do: min-max "
            "normalise to [0, 1], blur with the PSF (zero fill), Poisson-Gaussian noise, "
            "salt-and-pepper, quantise, clip.\n\n"
            "Example:\n  jdeconv simulate clean.tif --psf-model gibson-lanni --defocus -3.045 "
            "-o noisy.tif --clean-out clean01.tif"
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("clean", metavar="CLEAN", help="the clean (ground-truth) image")
    p.add_argument("-o", "--output", required=True, help="the degraded image (.tif or .npy)")
    p.add_argument("--clean-out", help="also write the normalised clean image here")
    p.add_argument("--alpha", type=float, default=0.001, help="Poisson variance factor")
    p.add_argument(
        "--sigma",
        dest="noise_sigma",
        type=float,
        default=0.1,
        help="Gaussian noise standard deviation (images in [0, 1]; the Gaussian PSF's is "
        "--psf-sigma here)",
    )
    p.add_argument(
        "--salt-pepper",
        type=float,
        help="fraction of pixels replaced by Uniform(0, 1) [default: 0.01 in 2D, 0 in 3D]",
    )
    p.add_argument("--bits", type=int, default=10, help="quantisation bit depth (0: none)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.set_defaults(run=_cmd_simulate)

    # demo
    p = commands.add_parser(
        "demo",
        parents=[common],
        help="the whole story on a test image, in minutes on a CPU",
        description=(
            "Degrade a test image with the SSI microscope PSF and the papers' noise, "
            "deconvolve it with Richardson-Lucy (best iteration count, chosen with the "
            "ground truth) and with jdeconv, and write a comparison figure and a metrics "
            "table."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("--output-dir", default="jdeconv_demo", help="where to write the results")
    p.add_argument("--steps", type=_positive_int, help="training steps (default: fit's)")
    p.add_argument("--size", type=_positive_int, help="crop side in pixels [default: 256]")
    p.add_argument(
        "--image",
        choices=("camera", "filaments"),
        default="camera",
        help="skimage's camera picture, or synthetic filaments",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run (48 px crop, 3 steps) to check an installation; the tests use it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_demo)
    return parser


def _psf_choice_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("PSF (a file or a model)")
    which = group.add_mutually_exclusive_group(required=True)
    which.add_argument("--psf", metavar="FILE", help="measured or saved PSF (.tif or .npy)")
    which.add_argument("--psf-model", choices=_PSF_MODELS, help="generate the PSF from a model")
    group.add_argument(
        "--psf-size",
        type=_odd_int,
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
    return parser


def _gl_defaults() -> dict:
    from .psf import gibson_lanni_psf

    return {
        name: param.default
        for name, param in inspect.signature(gibson_lanni_psf).parameters.items()
        if param.default is not inspect.Parameter.empty
    }


def _psf_parameter_parser(*, sigma_flag: bool = True) -> argparse.ArgumentParser:
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
        "--wavelength", type=float, default=gl["wavelength"], help="emission wavelength in vacuum"
    )
    group.add_argument(
        "--magnification", type=float, default=gl["magnification"], help="objective magnification"
    )
    group.add_argument("--ni", type=float, default=gl["ni"], help="immersion refractive index")
    group.add_argument("--ns", type=float, default=gl["ns"], help="sample refractive index")
    group.add_argument(
        "--pixel-size-xy",
        type=float,
        default=gl["pixel_size_xy"],
        help="lateral pixel size in the sample",
    )
    group.add_argument(
        "--pixel-size-z", type=float, default=gl["pixel_size_z"], help="axial step (3D PSFs)"
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _odd_int(text: str) -> int:
    value = int(text)
    if value < 1 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"PSF sizes must be odd and positive, got {text}")
    return value


# ----------------------------------------------------------------------------- helpers


def _expand_inputs(patterns) -> list[Path]:
    """Inputs as paths; glob patterns are expanded here too (Windows shells do not)."""
    paths: list[Path] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?[") and not Path(pattern).exists():
            matches = [Path(m) for m in sorted(glob.glob(pattern)) if Path(m).is_file()]
            if not matches:
                raise InputError(f"{pattern}: no files match this pattern.")
            paths.extend(matches)
        else:
            path = Path(pattern)
            if not path.exists():
                raise InputError(f"{path}: no such file.")
            paths.append(path)
    unique, seen = [], set()
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_output(out: Path, inputs, *, parent_must_exist: bool = True) -> None:
    """An output must be writable where it is named, and never one of the inputs."""
    if out.suffix.lower() not in WRITE_SUFFIXES:
        raise InputError(
            f"{out}: unsupported output type {out.suffix or '(none)'!r}; use "
            f"{', '.join(WRITE_SUFFIXES)}."
        )
    for source in inputs:
        if source is not None and _same_file(out, Path(source)):
            raise InputError(
                f"{out}: the output is the input file {source}; jdeconv never overwrites "
                "its inputs. Choose another output name."
            )
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give an output file name.")
    if parent_must_exist and not out.parent.is_dir():
        raise InputError(
            f"{out}: the output directory {out.parent} does not exist; create it first."
        )


def _plan_outputs(args, inputs: list[Path], protected) -> list[Path]:
    """One output path per input, checked before any work starts."""
    if args.output is not None:
        if len(inputs) != 1:
            raise InputError(
                f"-o/--output names one file but there are {len(inputs)} inputs; use "
                "--output-dir for several."
            )
        outputs = [Path(args.output)]
    else:
        directory = Path(args.output_dir)
        if directory.exists() and not directory.is_dir():
            raise InputError(f"{directory}: --output-dir is a file, not a directory.")
        outputs = [directory / f"{image_stem(p)}_deconv.tif" for p in inputs]
    seen: dict[Path, Path] = {}
    for source, out in zip(inputs, outputs, strict=True):
        key = out.resolve()
        if key in seen:
            raise InputError(
                f"{out}: {seen[key]} and {source} would both be written here; rename one or "
                "process them separately."
            )
        seen[key] = source
        # --output-dir is created later, once the inputs have been checked.
        _check_output(out, protected, parent_must_exist=args.output is not None)
    return outputs


def _make_output_dir(args) -> None:
    if getattr(args, "output_dir", None) is not None:
        try:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"{args.output_dir}: cannot create the output directory: {err}"
            ) from err


def _read(path: Path, args):
    """read_image with the CLI's axes/channel/time options; errors become InputError."""
    try:
        return read_image(
            path,
            axes=getattr(args, "axes", None),
            channel=getattr(args, "channel", None),
            time=getattr(args, "time", None),
        )
    except (ValueError, OSError) as err:
        message = str(err)
        raise InputError(message if str(path) in message else f"{path}: {message}") from err


def _validated(path: Path, image):
    from .api import validate_image

    try:
        return validate_image(image, name="image")
    except ValueError as err:
        raise InputError(f"{path}: {err}") from err


def _psf_source(args) -> str:
    return args.psf if args.psf is not None else f"--psf-model {args.psf_model}"


def _model_psf(model: str, size, ndim: int, args, *, size_flag: str = "--psf-size"):
    """A model PSF for ``ndim`` dimensions and the pixel sizes it was computed for."""
    from .psf import gaussian_psf, gibson_lanni_psf

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


class _PsfProvider:
    """The PSF of --psf or --psf-model, per image dimensionality, read/generated once."""

    def __init__(self, args):
        self.args = args
        self.cache: dict[int, tuple] = {}
        self.file = None
        if args.psf is not None:
            self.file = _read(Path(args.psf), argparse.Namespace())

    def get(self, ndim: int):
        """(psf array, pixel sizes per axis or None) for a ``ndim``-D image."""
        if self.file is not None:
            psf, meta = self.file
            return psf, meta.pixel_size
        if ndim not in self.cache:
            self.cache[ndim] = _model_psf(self.args.psf_model, self.args.psf_size, ndim, self.args)
        return self.cache[ndim]

    def checked(self, path: Path, image, meta: ImageMetadata):
        """The validated PSF for this image; mismatches name both files."""
        from .psf import validate_psf

        psf, sizes = self.get(image.ndim)
        source = _psf_source(self.args)
        try:
            psf = validate_psf(psf, ndim=image.ndim, normalize=self.args.normalize_psf)
        except ValueError as err:
            hint = " Or pass --normalize-psf." if "sums to" in str(err) else ""
            raise InputError(f"{source}: {err} (image {path}: shape {image.shape}).{hint}") from err
        if any(k > n for k, n in zip(psf.shape, image.shape, strict=True)):
            raise InputError(
                f"{path}: the PSF ({source}) has shape {psf.shape}, larger than the image "
                f"{image.shape} on some axis; crop the PSF or use a larger image."
            )
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


def _output_dtype(args, meta: ImageMetadata):
    return meta.dtype if args.dtype == "input" else args.dtype


def _write(out: Path, array, meta: ImageMetadata | None, dtype=None) -> None:
    import numpy as np

    if dtype is not None and np.dtype(dtype).kind in "ui":
        span = float(np.ptp(array))
        if span < 255:
            warnings.warn(
                f"{out}: the result spans only {span:.3g} intensity units, so {dtype} keeps "
                f"at most {int(span) + 2} grey levels (values are not rescaled); write float32 "
                "(the default) to keep its precision.",
                stacklevel=2,
            )
    try:
        write_image(out, array, metadata=meta, dtype=dtype)
    except FileNotFoundError as err:
        raise InputError(f"{out}: {err}") from err
    except OSError as err:
        raise RuntimeError(f"cannot write {out}: {err}") from err


def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def _config_overrides(args) -> dict:
    names = ("steps", "seed", "patch_size", "patch_size_z", "batch_size")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.tta is not None:
        overrides["tta"] = args.tta
    return overrides


def _with_tile(cfg, tile):
    """``cfg`` with tiled inference of side ``tile`` (None: unchanged)."""
    return cfg if tile is None else cfg.replace(tile_size=tile)


def _make_config(args, ndim: int):
    """The Config for a ``ndim``-D image from the CLI options, or None for fit's default."""
    from .config import Config

    overrides = _config_overrides(args)
    if args.preset is None and not overrides and args.tile is None:
        return None
    try:
        if args.preset is None:  # fit's default for this dimensionality, with the changes
            cfg = Config.default(ndim, **overrides)
        else:
            cfg = Config.preset(args.preset, **overrides)
        return _with_tile(cfg, args.tile)
    except ValueError as err:
        raise InputError(f"invalid training settings: {err}") from err


def _loss_summary(history: dict, cfg) -> str:
    """Last total loss, its terms (those of ``cfg.loss_weights``) and the validation loss."""
    losses = history.get("loss") or []
    if not losses:
        return "no losses recorded"
    terms = [
        f"{name} {history[name][-1]:.4g}"
        for name, _ in cfg.loss_weights
        if isinstance(history.get(name), list) and history[name]
    ]
    text = f"final loss {losses[-1]:.4g}"
    if terms:
        text += f" ({', '.join(terms)})"
    validation = history.get("val_loss") or []
    if validation:
        text += f", validation {validation[-1]:.4g} (best {min(validation):.4g})"
    return text


# ----------------------------------------------------------------------------- commands


def _cmd_deconvolve(args) -> int:
    inputs = _expand_inputs(args.inputs)
    protected = [*inputs, args.psf]
    outputs = _plan_outputs(args, inputs, protected)
    model_dirs = _model_dirs(args, inputs, protected)
    psfs = _PsfProvider(args)

    # Check every input before the first (long) fit, so a batch fails early.
    shapes = []
    for path in inputs:
        image, meta = _read(path, args)
        arr = _validated(path, image)
        psfs.checked(path, arr, meta)
        _make_config(args, arr.ndim)
        shapes.append(arr.shape)
    _make_output_dir(args)

    from .api import fit, save_model

    for i, (path, out) in enumerate(zip(inputs, outputs, strict=True)):
        image, meta = _read(path, args)
        psf = psfs.checked(path, image, meta)
        cfg = _make_config(args, image.ndim)
        _note(
            args,
            f"[{i + 1}/{len(inputs)}] {path} ({_shape_text(image.shape)} {meta.axes} "
            f"{image.dtype}) -> {out}",
        )
        try:
            result = fit(image, psf, cfg, verbose=not args.quiet, normalize_psf=args.normalize_psf)
        except ValueError as err:
            raise InputError(f"{path}: {err}") from err
        _write(out, result.deconvolved, meta, _output_dtype(args, meta))
        saved = ""
        if model_dirs is not None:
            save_model(result.model, model_dirs[i])
            saved = f"; model saved to {model_dirs[i]}"
        t = result.timings
        losses = _loss_summary(result.history, result.model.config)
        if not args.quiet:
            print(
                f"{path} -> {out}: {_shape_text(image.shape)} in {t['total']:.1f} s "
                f"(compile {t['compile']:.1f} s, {t['steps']} steps at "
                f"{t['seconds_per_step']:.3g} s/step); {losses}; "
                f"kept step {result.best_step}{saved}",
                flush=True,
            )
    return EXIT_OK


def _model_dirs(args, inputs, protected):
    if args.save_model is None:
        return None
    base = Path(args.save_model)
    if base.exists() and not base.is_dir():
        raise InputError(f"{base}: --save-model must be a directory, and this is a file.")
    dirs = [base] if len(inputs) == 1 else [base / image_stem(p) for p in inputs]
    for directory in dirs:
        for name in ("config.json", "params.npz", "psf.npy"):
            for source in protected:
                if source is not None and _same_file(directory / name, Path(source)):
                    raise InputError(
                        f"{directory}: saving the model would overwrite the input {source}; "
                        "choose another --save-model directory."
                    )
    if not base.parent.is_dir():
        raise InputError(f"{base}: its parent directory {base.parent} does not exist.")
    return dirs


def _cmd_predict(args) -> int:
    from .api import deconvolve, load_model

    inputs = _expand_inputs(args.inputs)
    outputs = _plan_outputs(args, inputs, inputs)
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: no such model directory.")
    try:
        model = load_model(model_dir)
    except (ValueError, OSError) as err:
        message = str(err)
        raise InputError(
            message if str(model_dir) in message else f"{model_dir}: {message}"
        ) from err
    if args.tile is not None:
        try:
            model = dataclasses.replace(model, config=_with_tile(model.config, args.tile))
        except ValueError as err:
            raise InputError(f"--tile {args.tile}: {err}") from err

    for path in inputs:
        image, meta = _read(path, args)
        arr = _validated(path, image)
        if arr.ndim != model.ndim:
            raise InputError(
                f"{path}: the model in {model_dir} is {model.ndim}D but the image is "
                f"{arr.ndim}D (shape {arr.shape}); use --axes/--channel/--time or a "
                f"{arr.ndim}D model."
            )
    _make_output_dir(args)

    for path, out in zip(inputs, outputs, strict=True):
        image, meta = _read(path, args)
        start = time.perf_counter()
        try:
            result = deconvolve(image, model, tta=args.tta)
        except ValueError as err:
            raise InputError(f"{path}: {err}") from err
        _write(out, result, meta, _output_dtype(args, meta))
        if not args.quiet:
            print(
                f"{path} -> {out}: {_shape_text(image.shape)} in "
                f"{time.perf_counter() - start:.1f} s with the model in {model_dir}",
                flush=True,
            )
    return EXIT_OK


def _cmd_psf(args) -> int:
    out = Path(args.output)
    _check_output(out, [])
    if args.size is not None and len(args.size) > 3:
        raise InputError(f"--size has {len(args.size)} values; give 1, 2 or 3.")
    if args.size is not None and len(args.size) in (2, 3):
        if args.ndim is not None and args.ndim != len(args.size):
            raise InputError(f"--size has {len(args.size)} values but --ndim is {args.ndim}.")
        ndim = len(args.size)
    else:
        ndim = args.ndim or 2
    psf, sizes = _model_psf(args.model, args.size, ndim, args, size_flag="--size")
    meta = ImageMetadata("YX" if ndim == 2 else "ZYX", sizes)
    _write(out, psf, meta)
    described = (
        f"sigma {', '.join(f'{v:g}' for v in args.psf_sigma)} px"
        if args.model == "gaussian"
        else f"NA {args.na}, wavelength {args.wavelength} µm, ni {args.ni}, pixel "
        f"{args.pixel_size_xy} µm"
        + (f" x {args.pixel_size_z} µm" if ndim == 3 else "")
        + f", defocus {args.defocus} µm"
    )
    print(f"wrote {out}: {args.model} PSF {_shape_text(psf.shape)} ({described}), sum 1")
    return EXIT_OK


def _cmd_simulate(args) -> int:
    clean_path = Path(args.clean)
    if not clean_path.exists():
        raise InputError(f"{clean_path}: no such file.")
    protected = [clean_path, args.psf]
    out = Path(args.output)
    _check_output(out, protected)
    clean_out = Path(args.clean_out) if args.clean_out else None
    if clean_out is not None:
        _check_output(clean_out, protected)
        if _same_file(clean_out, out):
            raise InputError(f"{clean_out}: --clean-out and -o name the same file.")
    image, meta = _read(clean_path, args)
    arr = _validated(clean_path, image)
    psf = _PsfProvider(args).checked(clean_path, arr, meta)

    import jax

    from .metrics import psnr
    from .simulate import degrade, normalize_minmax

    salt_pepper = args.salt_pepper
    if salt_pepper is None:
        salt_pepper = 0.01 if arr.ndim == 2 else 0.0
    try:
        noisy = degrade(
            jax.random.key(args.seed),
            arr,
            psf,
            alpha=args.alpha,
            sigma=args.noise_sigma,
            salt_pepper=salt_pepper,
            bits=args.bits or None,
        )
    except ValueError as err:
        raise InputError(f"{clean_path}: {err}") from err
    clean01 = (arr - arr.min()) / (arr.max() - arr.min())
    _write(out, noisy, meta)
    if clean_out is not None:
        _write(clean_out, normalize_minmax(arr), meta)
    if not args.quiet:
        extra = f"; clean (normalised to [0, 1]) -> {clean_out}" if clean_out else ""
        print(
            f"{clean_path} -> {out}: {_shape_text(arr.shape)} blurred with {_psf_source(args)}, "
            f"noise alpha {args.alpha}, sigma {args.noise_sigma}, salt-and-pepper "
            f"{salt_pepper}, {args.bits or 'no'} bits; PSNR vs clean "
            f"{psnr(clean01, noisy, data_range=1.0):.2f} dB{extra}",
            flush=True,
        )
    return EXIT_OK


def _cmd_demo(args) -> int:
    from .demo import run_demo

    directory = Path(args.output_dir)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: --output-dir is a file, not a directory.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{directory}: cannot create the output directory: {err}") from err
    size = args.size or (48 if args.quick else 256)
    steps = args.steps or (3 if args.quick else None)
    if size < 32:
        raise InputError(f"--size {size} is too small for the 17x17 PSF; use 32 or more.")
    run_demo(
        directory,
        size=size,
        steps=steps,
        image=args.image,
        seed=args.seed,
        quick=args.quick,
        verbose=not args.quiet,
    )
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
