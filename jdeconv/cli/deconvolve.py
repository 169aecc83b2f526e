"""``jdeconv deconvolve``: train on each image and write its deconvolution."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from .. import _signals
from ..devices import on_devices_text
from ..io import image_stem
from . import _dask, _whole
from . import _options as opt
from ._common import EXIT_OK, Failure, InputError, note, progress, shape_text
from ._files import (
    MODEL_FILES,
    Claims,
    computed,
    expand_inputs,
    make_output_dir,
    output_dtype,
    plan_outputs,
    read,
    same_file,
    validated,
    write,
)
from ._psf import PsfProvider, image_pixel_size


def add_parser(commands) -> None:
    p = commands.add_parser(
        "deconvolve",
        parents=[
            opt.common_parser(),
            opt.reading_parser(),
            opt.psf_choice_parser(per_channel=True),
            opt.psf_parameter_parser(),
            opt.outputs_parser(),
            opt.resources_parser(),
        ],
        help="train on each image and write its deconvolution",
        description=(
            "Learn a deconvolution of each input from the image itself (self-supervised) "
            "and write the result. Each file gets its own model.\n\n"
            "Example:\n  jdeconv deconvolve cells.tif --psf psf.tif -o cells_deconv.tif\n"
            "  jdeconv deconvolve stack.ome.zarr --psf psf.tif -o out.ome.zarr --workers 2\n"
            "  jdeconv deconvolve 'data/*.tif' --psf-model gibson-lanni --na 1.2 "
            "--wavelength 0.52 --ni 1.33 --pixel-size-xy 0.1 --output-dir results\n"
            "  jdeconv deconvolve timelapse.ome.tif --psf green.tif red.tif -o out.ome.tif\n\n"
            "A file with several channels or time points is deconvolved whole unless "
            "--channel/--time pick one: one model per channel (its own PSF), fitted on one "
            "time point (--fit-time) and applied to all; the output keeps the input's axes "
            "and pixel sizes."
        ),
        formatter_class=opt.Formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images or glob patterns")
    group = p.add_argument_group("training")
    opt.add_cpu_devices(group)
    group.add_argument(
        "--preset",
        choices=("noise2self", "noise2same", "noise2same_d"),
        help="loss preset (default: the library's choice for the image's dimensionality)",
    )
    group.add_argument("--steps", type=opt.positive_int, help="training steps (maximum)")
    group.add_argument("--seed", type=opt.non_negative_int, help="random seed")
    group.add_argument("--patch-size", type=opt.positive_int, help="training patch side (YX)")
    group.add_argument("--patch-size-z", type=opt.positive_int, help="training patch depth (3D)")
    group.add_argument("--batch-size", type=opt.positive_int, help="patches per step")
    group.add_argument("--tile", type=opt.positive_int, help="tiled inference with this tile side")
    group.add_argument(
        "--fit-time",
        type=int,
        metavar="T",
        help="time-lapse files: the time point each channel's model is fitted on "
        "[default: the middle one]",
    )
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
    group.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any jdeconv.Config field (repeatable), e.g. --set learning_rate=3e-4 "
        "--set grad_clip=0.5; values are Python literals or bare words",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    inputs = expand_inputs(args.inputs)
    protected = [*inputs, *(args.psf or [])]
    outputs = plan_outputs(args, inputs, protected)
    model_dirs = _model_dirs(args, inputs, protected)
    max_memory = _dask.max_memory(args)
    psfs = PsfProvider(args)
    with _dask.scheduler(args) as client:
        return _run(args, inputs, outputs, model_dirs, psfs, max_memory, client is not None)


def _run(args, inputs, outputs, model_dirs, psfs, max_memory, distributed: bool) -> int:
    # Read and check every input before the first (long) fit, so a batch fails early.
    # Each file is read once: the images are kept (in their stored dtype, or lazily for
    # OME-Zarr and big TIFFs) until fitted.
    jobs = []
    for path in inputs:
        if _whole.is_whole_file(path, args):  # channels/time points: jdeconv.files
            jobs.append(_whole.prepare(path, args, psfs, make_config))
            continue
        if args.fit_time is not None:
            raise InputError(
                f"{path}: --fit-time is for files with several time points, and this one has "
                "none (or --time picked one)."
            )
        image, meta = read(path, args, distributed=distributed)
        arr = validated(path, image)
        psf = psfs.checked(path, arr, meta)
        cfg = _shaped(
            make_config(args, arr.ndim), args, image_pixel_size(args, meta, arr.ndim), psf
        )
        jobs.append((image, meta, psf, cfg))
    make_output_dir(args)
    if model_dirs is not None and len(inputs) > 1:
        _make_dir(Path(args.save_model))
    progress.plan(zip(inputs, outputs, strict=True))

    with Claims(overwrite=args.overwrite) as claims:
        for out in outputs:  # every output is writable and ours before any training
            claims.file(out)
        for directory in model_dirs or ():
            claims.model_dir(directory)

        from ..api import fit, save_model

        for i, (path, out) in enumerate(zip(inputs, outputs, strict=True)):
            if isinstance(jobs[i], _whole.WholeFileJob):
                job, jobs[i] = jobs[i], None
                _run_whole(args, i, len(inputs), job, out, model_dirs)
                continue
            image, meta, psf, cfg = jobs[i]
            jobs[i] = None  # free each image once it is done with
            note(
                args,
                f"[{i + 1}/{len(inputs)}] {path} ({shape_text(image.shape)} {meta.axes} "
                f"{image.dtype}) -> {out}",
            )
            start = time.perf_counter()
            try:
                result = fit(
                    image,
                    psf,
                    cfg,
                    verbose=not args.quiet,
                    normalize_psf=args.normalize_psf,
                    max_memory=max_memory,
                )
            except FloatingPointError as err:
                raise Failure(f"{path}: {err} {_CLI_FIX}") from err
            except ValueError as err:
                raise InputError(f"{path}: {err}") from err
            saved = ""
            # A lazy result is computed first (an interrupt stops it and removes what was
            # written); then an interrupt waits for the result to be written.
            deconvolved, streamed = computed(out, result.deconvolved)
            write_out = functools.partial(
                write,
                out,
                deconvolved,
                meta,
                output_dtype(args, meta),
                overwrite=args.overwrite,
                chunks=_chunks(image),
            )
            if streamed:
                write_out()
            with _signals.commit():
                if not streamed:
                    write_out()
                if model_dirs is not None:
                    save_model(result.model, model_dirs[i])
                    saved = f"; model saved to {model_dirs[i]}"
                progress.done(out)
            t = result.timings
            losses = _loss_summary(result.history, result.model.config)
            if not args.quiet:
                total = time.perf_counter() - start  # a lazy result is computed by write
                print(
                    f"{path} -> {out}: {shape_text(image.shape)} in {total:.1f} s "
                    f"(compile {t['compile']:.1f} s, {t['steps']} steps at "
                    f"{t['seconds_per_step']:.3g} s/step{on_devices_text(t)}); {losses}; "
                    f"kept step {result.best_step}{saved}",
                    flush=True,
                )
    return EXIT_OK


def _shaped(cfg, args, pixel_size, psf):
    """3D: the patch depth from the voxel size (jdeconv.files.config_for_voxels), unless
    --patch-size-z was given."""
    if psf.ndim != 3 or args.patch_size_z is not None:
        return cfg
    from ..config import Config
    from ..files import config_for_voxels

    shaped = config_for_voxels(cfg or Config.default(3), pixel_size, psf_shape=psf.shape)
    return cfg if cfg is None and shaped == Config.default(3) else shaped


def _run_whole(args, i, total, job, out, model_dirs) -> None:
    """One whole-file job (all channels and time points): fit, apply, write."""
    note(args, f"[{i + 1}/{total}] {job.path} ({_whole.describe(job)}) -> {out}")
    try:
        result = _whole.run(job, args)
    except FloatingPointError as err:
        raise Failure(f"{job.path}: {err} {_CLI_FIX}") from err
    except ValueError as err:
        raise InputError(f"{job.path}: {err}") from err
    saved = ""
    with _signals.commit():
        _whole.write(out, result, args, job.stack)
        if model_dirs is not None:
            saved = f"; models saved to {_whole.save_models(result, model_dirs[i])}"
        progress.done(out)
    if not args.quiet:
        t = result.timings
        fitted = "" if result.fit_time is None else f" on time point {result.fit_time}"
        print(
            f"{job.path} -> {out}: {shape_text(result.deconvolved.shape)} {result.axes}; "
            f"{len(result.models)} model(s) fitted{fitted} in {t['fit']:.1f} s, "
            f"{t['time_points']} time point(s), applied in {t['apply']:.1f} s{saved}",
            flush=True,
        )


def _chunks(image):
    """The storage chunks of a lazy input (kept in an OME-Zarr output), else None."""
    return getattr(image, "chunksize", None)


# How to apply the divergence error's advice from the command line.
_CLI_FIX = "On the command line: --set learning_rate=1e-4 (or lower), --set grad_clip=0.5."


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(exist_ok=True)
    except OSError as err:
        raise InputError(f"{directory}: cannot create the --save-model folder: {err}") from err


def _model_dirs(args, inputs, protected):
    if args.save_model is None:
        return None
    base = Path(args.save_model)
    if base.exists() and not base.is_dir():
        raise InputError(f"{base}: --save-model must be a directory, and this is a file.")
    dirs = [base] if len(inputs) == 1 else [base / image_stem(p) for p in inputs]
    for directory in dirs:
        for name in MODEL_FILES:
            for source in protected:
                if source is not None and same_file(directory / name, Path(source)):
                    raise InputError(
                        f"{directory}: saving the model would overwrite the input {source}; "
                        "choose another --save-model directory."
                    )
    if not base.parent.is_dir():
        raise InputError(f"{base}: its parent directory {base.parent} does not exist.")
    for directory in dirs:
        present = [n for n in MODEL_FILES if (directory / n).exists()]
        if present and not args.overwrite:
            raise InputError(
                f"{directory}: already holds a model ({', '.join(present)}); pass "
                "--overwrite to replace it, or choose another --save-model folder."
            )
    return dirs


def _config_overrides(args) -> dict:
    names = ("steps", "seed", "patch_size", "patch_size_z", "batch_size")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.tta is not None:
        overrides["tta"] = args.tta
    overrides.update(parse_settings(getattr(args, "settings", None)))
    return overrides


def parse_settings(items) -> dict:
    """``--set`` items (``["learning_rate=3e-4", "schedule=step"]``) as Config overrides.

    Values are Python literals (numbers, True/False/None, tuples, dicts) or bare words.

    Example:
      >>> parse_settings(["learning_rate=3e-4", "schedule=step", "tta=false"])
      {'learning_rate': 0.0003, 'schedule': 'step', 'tta': False}
    """
    import ast

    from ..config import Config

    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}.")
        if key not in Config.keywords():
            raise InputError(
                f"--set: unknown setting {key!r}; valid: {', '.join(sorted(Config.keywords()))}."
            )
        low = text.strip().lower()
        if low in ("true", "false", "none"):
            out[key] = {"true": True, "false": False, "none": None}[low]
            continue
        try:
            out[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key] = text.strip()
    return out


def with_tile(cfg, tile):
    """``cfg`` with tiled inference of side ``tile`` (None: unchanged)."""
    return cfg if tile is None else cfg.replace(tile_size=tile)


def make_config(args, ndim: int):
    """The Config for a ``ndim``-D image from the CLI options, or None for fit's default."""
    from ..config import Config

    overrides = _config_overrides(args)
    if args.preset is None and not overrides and args.tile is None:
        return None
    try:
        if args.preset is None:  # fit's default for this dimensionality, with the changes
            cfg = Config.default(ndim, **overrides)
        else:
            cfg = Config.preset(args.preset, **overrides)
        return with_tile(cfg, args.tile)
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
