"""``jdeconv demo``: the whole story on a test image, in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path

from . import _options as opt
from ._common import EXIT_OK, InputError


def add_parser(commands) -> None:
    p = commands.add_parser(
        "demo",
        parents=[opt.common_parser()],
        help="the whole story on a test image, in minutes on a CPU",
        description=(
            "Degrade a test image with the SSI microscope PSF and the papers' noise, "
            "deconvolve it with Richardson-Lucy (best iteration count, chosen with the "
            "ground truth) and with jdeconv, and write a comparison figure and a metrics "
            "table."
        ),
        formatter_class=opt.Formatter,
    )
    p.add_argument("--output-dir", default="jdeconv_demo", help="where to write the results")
    p.add_argument("--steps", type=opt.positive_int, help="training steps (default: fit's)")
    p.add_argument("--size", type=opt.positive_int, help="crop side in pixels [default: 256]")
    p.add_argument(
        "--image",
        choices=("camera", "filaments"),
        default="camera",
        help="skimage's camera picture, or synthetic filaments",
    )
    p.add_argument("--seed", type=opt.non_negative_int, default=0, help="random seed")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run (48 px crop, 3 steps) to check an installation; the tests use it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    opt.add_cpu_devices(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..demo import run_demo

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
