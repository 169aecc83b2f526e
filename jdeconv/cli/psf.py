"""``jdeconv psf``: write a model PSF (2D or 3D)."""

from __future__ import annotations

from pathlib import Path

from .. import _signals
from ..io import ImageMetadata
from . import _options as opt
from ._common import EXIT_OK, InputError, progress, shape_text
from ._files import Claims, check_output, write
from ._psf import model_psf, wavelengths


def add_parser(commands) -> None:
    p = commands.add_parser(
        "psf",
        parents=[opt.common_parser(), opt.psf_parameter_parser()],
        help="write a model PSF (2D or 3D)",
        description=(
            "Write a generated, normalised PSF.\n\n"
            "Examples:\n  jdeconv psf --model gibson-lanni --size 17 -o ssi_2d.tif --defocus "
            "-3.045\n  jdeconv psf --model gibson-lanni --size 17 17 17 -o psf3d.tif\n"
            "  jdeconv psf --model gaussian --size 15 --sigma 2 -o gauss.tif"
        ),
        formatter_class=opt.Formatter,
    )
    p.add_argument("--model", choices=opt.PSF_MODELS, required=True, help="PSF model")
    p.add_argument(
        "--size",
        type=opt.odd_int,
        nargs="+",
        metavar="N",
        help="odd size per axis (one value: that size on every axis of --ndim) [default: 17 "
        "for gibson-lanni, 8 sigma + 1 for gaussian]",
    )
    p.add_argument("--ndim", type=int, choices=(2, 3), help="2 or 3 when --size has one value")
    p.add_argument("-o", "--output", required=True, help="output file (.tif, .tiff or .npy)")
    opt.add_overwrite(p)
    p.set_defaults(run=run)


def run(args) -> int:
    out = Path(args.output)
    check_output(out, [], overwrite=args.overwrite)
    if args.size is not None and len(args.size) > 3:
        raise InputError(f"--size has {len(args.size)} values; give 1, 2 or 3.")
    if args.size is not None and len(args.size) in (2, 3):
        if args.ndim is not None and args.ndim != len(args.size):
            raise InputError(f"--size has {len(args.size)} values but --ndim is {args.ndim}.")
        ndim = len(args.size)
    else:
        ndim = args.ndim or 2
    psf, sizes = model_psf(args.model, args.size, ndim, args, size_flag="--size")
    meta = ImageMetadata("YX" if ndim == 2 else "ZYX", sizes)
    progress.plan([(f"--model {args.model}", out)])
    with Claims(overwrite=args.overwrite) as claims, _signals.commit():
        claims.file(out)
        write(out, psf, meta, overwrite=args.overwrite)
        progress.done(out)
    described = (
        f"sigma {', '.join(f'{v:g}' for v in args.psf_sigma)} px"
        if args.model == "gaussian"
        else f"NA {args.na}, wavelength {wavelengths(args)[0]} µm, ni {args.ni}, pixel "
        f"{sizes[-1]} µm"
        + (f" x {sizes[0]} µm" if ndim == 3 else "")
        + f", defocus {args.defocus} µm"
    )
    print(f"wrote {out}: {args.model} PSF {shape_text(psf.shape)} ({described}), sum 1")
    return EXIT_OK
