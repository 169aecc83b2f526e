"""``jdeconv predict``: apply a saved model to images."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

from .. import _signals
from . import _dask
from . import _options as opt
from ._common import EXIT_OK, InputError, progress, shape_text
from ._files import (
    Claims,
    computed,
    expand_inputs,
    make_output_dir,
    output_dtype,
    plan_outputs,
    read,
    validated,
    write,
)
from .deconvolve import with_tile


def add_parser(commands) -> None:
    p = commands.add_parser(
        "predict",
        parents=[
            opt.common_parser(),
            opt.reading_parser(),
            opt.outputs_parser(),
            opt.resources_parser(),
        ],
        help="apply a saved model to images",
        description=(
            "Deconvolve images with a model saved by 'jdeconv deconvolve --save-model'.\n\n"
            "Example:\n  jdeconv predict --model cells_model more/*.tif --output-dir results"
        ),
        formatter_class=opt.Formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images or glob patterns")
    p.add_argument("--model", required=True, metavar="DIR", help="a saved model directory")
    p.add_argument("--tile", type=opt.positive_int, help="tiled inference with this tile side")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average over rotations/flips (default: the model's setting)",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    inputs = expand_inputs(args.inputs)
    outputs = plan_outputs(args, inputs, inputs)
    max_memory = _dask.max_memory(args)
    with _dask.scheduler(args) as client:
        return _run(args, inputs, outputs, max_memory, client is not None)


def _run(args, inputs, outputs, max_memory, distributed: bool) -> int:
    from ..api import deconvolve, load_model

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
            model = dataclasses.replace(model, config=with_tile(model.config, args.tile))
        except ValueError as err:
            raise InputError(f"--tile {args.tile}: {err}") from err

    # Read and check every input before the first prediction, so a batch fails early.
    # Each file is read once: the images are kept (in their stored dtype) until used.
    images = []
    for path in inputs:
        image, meta = read(path, args, distributed=distributed)
        arr = validated(path, image)
        if arr.ndim != model.ndim:
            raise InputError(
                f"{path}: the model in {model_dir} is {model.ndim}D but the image is "
                f"{arr.ndim}D (shape {arr.shape}); use --axes/--channel/--time or a "
                f"{arr.ndim}D model."
            )
        images.append((image, meta))
    make_output_dir(args)
    progress.plan(zip(inputs, outputs, strict=True))

    with Claims(overwrite=args.overwrite) as claims:
        for out in outputs:
            claims.file(out)
        for i, (path, out) in enumerate(zip(inputs, outputs, strict=True)):
            image, meta = images[i]
            images[i] = None  # free each image once it is done with
            start = time.perf_counter()
            try:
                result = deconvolve(image, model, tta=args.tta, max_memory=max_memory)
            except ValueError as err:
                raise InputError(f"{path}: {err}") from err
            result, streamed = computed(out, result)
            write_out = functools.partial(
                write,
                out,
                result,
                meta,
                output_dtype(args, meta),
                overwrite=args.overwrite,
                chunks=getattr(image, "chunksize", None),
            )
            if streamed:  # computed while written; an interrupt removes the partial store
                write_out()
            with _signals.commit():
                if not streamed:
                    write_out()
                progress.done(out)
            if not args.quiet:
                print(
                    f"{path} -> {out}: {shape_text(image.shape)} in "
                    f"{time.perf_counter() - start:.1f} s with the model in {model_dir}",
                    flush=True,
                )
    return EXIT_OK
