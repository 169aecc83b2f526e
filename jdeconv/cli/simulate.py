"""``jdeconv simulate``: blur and add the papers' noise to a clean image."""

from __future__ import annotations

from pathlib import Path

from .. import _signals
from . import _options as opt
from ._common import EXIT_OK, InputError, progress, shape_text
from ._files import Claims, check_output, read, same_file, validated, write
from ._psf import PsfProvider, psf_source


def add_parser(commands) -> None:
    p = commands.add_parser(
        "simulate",
        parents=[
            opt.common_parser(),
            opt.reading_parser(),
            opt.psf_choice_parser(),
            opt.psf_parameter_parser(sigma_flag=False),
        ],
        help="blur and add the papers' noise to a clean image",
        description=(
            "Degrade a clean image as the SSI and Papkov et al. benchmarks do: min-max "
            "normalise to [0, 1], blur with the PSF (zero fill), Poisson-Gaussian noise, "
            "salt-and-pepper, quantise, clip.\n\n"
            "Example:\n  jdeconv simulate clean.tif --psf-model gibson-lanni --defocus -3.045 "
            "-o noisy.tif --clean-out clean01.tif"
        ),
        formatter_class=opt.Formatter,
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
    p.add_argument("--seed", type=opt.non_negative_int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no summary")
    opt.add_overwrite(p)
    p.set_defaults(run=run)


def run(args) -> int:
    clean_path = Path(args.clean)
    if not clean_path.exists():
        raise InputError(f"{clean_path}: no such file.")
    protected = [clean_path, args.psf]
    out = Path(args.output)
    check_output(out, protected, overwrite=args.overwrite)
    clean_out = Path(args.clean_out) if args.clean_out else None
    if clean_out is not None:
        check_output(clean_out, protected, overwrite=args.overwrite)
        if same_file(clean_out, out):
            raise InputError(f"{clean_out}: --clean-out and -o name the same file.")
    image, meta = read(clean_path, args)
    arr = validated(clean_path, image)
    psf = PsfProvider(args).checked(clean_path, arr, meta)
    outputs = [out] if clean_out is None else [out, clean_out]
    progress.plan([(clean_path, o) for o in outputs])
    with Claims(overwrite=args.overwrite) as claims:
        for o in outputs:
            claims.file(o)
        return _simulate(args, clean_path, arr, meta, psf, out, clean_out)


def _simulate(args, clean_path, arr, meta, psf, out, clean_out) -> int:

    import jax

    from ..metrics import psnr
    from ..simulate import degrade, normalize_minmax

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
    with _signals.commit():
        write(out, noisy, meta, overwrite=args.overwrite)
        progress.done(out)
        if clean_out is not None:
            write(clean_out, normalize_minmax(arr), meta, overwrite=args.overwrite)
            progress.done(clean_out)
    if not args.quiet:
        extra = f"; clean (normalised to [0, 1]) -> {clean_out}" if clean_out else ""
        print(
            f"{clean_path} -> {out}: {shape_text(arr.shape)} blurred with {psf_source(args)}, "
            f"noise alpha {args.alpha}, sigma {args.noise_sigma}, salt-and-pepper "
            f"{salt_pepper}, {args.bits or 'no'} bits; PSNR vs clean "
            f"{psnr(clean01, noisy, data_range=1.0):.2f} dB{extra}",
            flush=True,
        )
    return EXIT_OK
