"""Benchmark the PSF forward model: FFT (with/without precomputed OTF) vs direct convolution.

Times ``g = jdeconv.make_forward(psf, shape, method=...)`` alone ("forward") and the
gradient of ``sum(g(x) * w)`` with respect to the image ``x`` ("forward+backward", what a
training step differentiates), jitted, for 2D images and 3D volumes over a range of
kernel sizes. Methods:

* ``fft``          make_forward(method="fft"): the OTF is computed once, outside the step.
* ``fft_no_otf``   the same FFT convolution with the PSF's FFT taken inside every call
                   (the PSF is an argument, so XLA cannot constant-fold it away).
* ``direct``       make_forward(method="direct"): ``lax.conv_general_dilated``.
* ``auto``         make_forward(method="auto"): whatever :func:`jdeconv.forward.auto_method`
                   picks; reported relative to the faster of fft and direct.
* ``fftconvolve``  ``jax.scipy.signal.fftconvolve(x, psf, mode="same")`` as an outside
                   reference (zero boundary, no fast-length padding; timing only).

All methods except ``fftconvolve`` use reflect padding. FFT and direct outputs (and
gradients) are compared at every point where both were run.

Protocol (the whole of it in benchmarks/_timing.py): every function is jitted and
compiled once ahead of time (compile time is reported separately); a sample is the mean
of back-to-back calls lasting at least ``--min-sample`` seconds; up to ``--repeats``
samples per method within ``--time-budget`` seconds, taken in rounds whose order rotates;
the median sample is the headline number. A call predicted (from the previous kernel
size, scaling by kernel volume) to take longer than ``--max-call`` seconds is not run:
its time is extrapolated that way and flagged. ``auto`` is compared with the faster of
fft and direct by A/B alternation (``--ab-pairs`` pairs), and its lowered program with
that of the method it resolves to.

Section "whole train step" (``--no-train-step`` skips it): one jitted train step of the
default 3D configuration with the forward model by FFT and by direct convolution, on the
reference Gibson-Lanni PSFs ``<--data>/psf/gl_3d_17.npy`` and ``gl_3d_31.npy`` (Papkov et
al. 2023's 2.3x and 14x training speed-up claims), via ``train_step.psf_method_cases``;
``--quick`` uses a tiny network and a 5^3 Gaussian instead.

Usage (from the repository root)::

    .venv/bin/python benchmarks/convolution.py            # full run, ~11 min on a 2-core CPU
    .venv/bin/python benchmarks/convolution.py --quick    # smoke test, well under a minute
    .venv/bin/python benchmarks/convolution.py --large    # adds 2048^2 and 128x256x256 (GPUs)

Writes ``convolution-<platform>[-quick].{md,json,png}`` to ``--out`` (default
``benchmarks/results``). Expected result on CPU (benchmarks/results/convolution-cpu.md):
FFT is faster than direct convolution from 3x3 / 3x3x3 on, forward and backward (3.5-4.3x
at 3x3, 24-28x at 3x3x3, orders of magnitude more for large kernels); direct wins only for
a 1-pixel kernel; a whole default 3D train step is ~10x faster with FFT for the 17^3 PSF.
FFT and direct agree to ~1e-6 relative.

Layout: this file holds the cases (the methods, the sizes, the train-step section), the
options and :func:`main`; ``_timing.py`` the timing protocol; ``_convolution_analysis.py``
the record names and the analysis (crossover, auto vs the faster method);
``_convolution_report.py`` the Markdown and the plot.

Adding a section: write a ``run_<name>(args)`` here that returns its raw records and a
``<name>_markdown(records)`` in ``_convolution_report.py`` that renders them; call both
from :func:`main` and ``write_markdown`` where marked ("SECTIONS"), and store the records
under their own key in the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # Run as a script from a checkout without installing.
    sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared benchmark helpers

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import scipy.fft  # noqa: E402
from _common import DEFAULT_DATA, atomic_write_text, machine_info  # noqa: E402
from _convolution_analysis import (  # noqa: E402
    DIRECTIONS,
    METHODS,
    PAPER_SPEEDUPS,
    auto_summary,
    crossover,
    faster,
)
from _convolution_report import write_markdown, write_plot  # noqa: E402
from _timing import ab_ratio, measure_point  # noqa: E402
from jax.scipy.signal import fftconvolve  # noqa: E402

from jdeconv.forward import auto_method, make_forward  # noqa: E402
from jdeconv.psf import gaussian_psf  # noqa: E402

DEFAULT_SIZES = ("256x256", "1024x1024", "64x128x128")
LARGE_SIZES = ("2048x2048", "128x256x256")
# k=1 (no blur) is the one size where direct convolution wins on CPU; it anchors the
# crossover.
DEFAULT_KERNELS = {2: (1, 3, 5, 7, 9, 13, 17, 25, 33, 49, 63), 3: (1, 3, 5, 7, 9, 13, 17, 25, 31)}
QUICK_SIZES = ("64x64", "16x32x32")
QUICK_KERNELS = {2: (1, 3, 9), 3: (1, 3, 5)}


# --------------------------------------------------------------------------- methods


def _fft_no_otf(shape, psf_shape) -> Callable:
    """FFT convolution (reflect padding) that transforms the PSF inside every call."""
    half = tuple(k // 2 for k in psf_shape)
    ext = tuple(n + 2 * h for n, h in zip(shape, half, strict=True))
    fft_shape = tuple(scipy.fft.next_fast_len(e, real=True) for e in ext)
    axes = tuple(range(-len(shape), 0))
    window = tuple(slice(h, h + n) for h, n in zip(half, shape, strict=True))

    def apply(x, psf):
        padded = jnp.pad(x, [(h, h) for h in half], mode="symmetric")
        kernel = jnp.pad(psf, [(0, f - k) for f, k in zip(fft_shape, psf_shape, strict=True)])
        kernel = jnp.roll(kernel, tuple(-h for h in half), axis=axes)
        otf = jnp.fft.rfftn(kernel, axes=axes)
        spectrum = jnp.fft.rfftn(padded, s=fft_shape, axes=axes)
        return jnp.fft.irfftn(spectrum * otf, s=fft_shape, axes=axes)[window]

    return apply


def _method_fn(method: str, psf: np.ndarray, shape) -> tuple[Callable, str]:
    """``fn(x, psf) -> g(x)`` for one method, and the method that actually runs."""
    if method == "fft_no_otf":
        return _fft_no_otf(shape, psf.shape), method
    if method == "fftconvolve":
        return (lambda x, k: fftconvolve(x, k, mode="same")), method
    g = make_forward(psf, shape, method=method)
    return (lambda x, k: g(x)), g.method


def _jitted(fn: Callable, direction: str) -> Callable:
    if direction == "forward":
        return jax.jit(fn)

    # w is an argument, not a closed-over constant: XLA would otherwise constant-fold the
    # whole adjoint convolution at compile time.
    def loss(x, k, w):
        return jnp.sum(fn(x, k) * w)

    return jax.jit(jax.grad(loss))


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def run_forward_models(args) -> list[dict]:
    """Time every method at every (size, kernel, direction); return flat records."""
    records = []
    rng = np.random.default_rng(0)
    for size in args.sizes:
        shape = tuple(int(s) for s in size.split("x"))
        ndim = len(shape)
        x = jnp.asarray(rng.random(shape, dtype=np.float32))
        w = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
        last = {}  # (direction, method) -> (kernel, median_s): base for extrapolation
        for k in args.kernels[ndim]:
            if k > min(shape):
                print(f"skip kernel {k} > image {shape}", flush=True)
                continue
            psf_np = gaussian_psf((k,) * ndim, k / 6)
            psf = jnp.asarray(psf_np)
            choice = auto_method(psf_np.shape, shape)
            for direction in DIRECTIONS:
                call_args = (x, psf) if direction == "forward" else (x, psf, w)
                compiled, compile_s, runs, extrapolated, program = {}, {}, {}, {}, {}
                for method in METHODS:
                    prev = last.get((direction, method))
                    if prev is not None:
                        predicted = prev[1] * (k / prev[0]) ** ndim
                        if predicted > args.max_call:
                            extrapolated[method] = (predicted, prev[0])
                            continue
                    fn, runs[method] = _method_fn(method, psf_np, shape)
                    t0 = time.perf_counter()
                    lowered = _jitted(fn, direction).lower(*call_args)
                    compiled[method] = lowered.compile()
                    compile_s[method] = time.perf_counter() - t0
                    if method in ("fft", "direct", "auto"):
                        # auto resolves at construction: is its program the very same?
                        text = lowered.as_text().encode()
                        program[method] = hashlib.sha256(text).hexdigest()
                point = measure_point(
                    compiled,
                    call_args,
                    repeats=args.repeats,
                    budget=args.time_budget,
                    min_sample=args.min_sample,
                )
                ref = point.get("fft", {}).get("output")
                fastest = faster(point)
                ab = None
                if "auto" in compiled:
                    ab = ab_ratio(
                        compiled["auto"],
                        compiled[fastest],
                        call_args,
                        pairs=args.ab_pairs,
                        half=args.min_sample,
                        budget=args.time_budget,
                    )
                for method in METHODS:
                    rec = {
                        "ndim": ndim,
                        "shape": list(shape),
                        "kernel": k,
                        "direction": direction,
                        "method": method,
                        "runs_as": runs.get(method, choice if method == "auto" else method),
                        "dtype": "float32",
                    }
                    if method in point:
                        res = point[method]
                        last[(direction, method)] = (k, res["median_s"])
                        err = None
                        if method in ("direct", "fft_no_otf", "auto") and ref is not None:
                            err = _rel_err(res["output"], ref)
                        rec.update(
                            {k_: v for k_, v in res.items() if k_ != "output"},
                            compile_s=compile_s[method],
                            rel_err_vs_fft=err,
                        )
                        if method == "auto":
                            same = program.get("auto") == program.get(rec["runs_as"])
                            rec["same_program_as_runs_as"] = same
                            rec["ab_vs_faster"] = ab
                    else:
                        predicted, base = extrapolated[method]
                        rec.update(
                            times_s=[],
                            calls_per_sample=0,
                            min_s=predicted,
                            median_s=predicted,
                            repeats=0,
                            mode=f"extrapolated from k={base}",
                            compile_s=None,
                            rel_err_vs_fft=None,
                        )
                    records.append(rec)
                _print_point(records[-len(METHODS) :])
    return records


def _print_point(recs: list[dict]) -> None:
    r0 = recs[0]
    parts = []
    for r in recs:
        flag = "" if r["mode"] == "measured" else f" [{r['mode']}]"
        parts.append(f"{r['method']}={r['median_s'] * 1e3:.3g}ms{flag}")
    err = next((r["rel_err_vs_fft"] for r in recs if r["method"] == "direct"), None)
    err_s = "n/a" if err is None else f"{err:.1e}"
    shape = "x".join(map(str, r0["shape"]))
    print(
        f"{shape} k={r0['kernel']} {r0['direction']}: " + " ".join(parts) + f" err={err_s}",
        flush=True,
    )


# --------------------------------------------------------------------------- train step


def _train_step_setup(args):
    """(config, image shape, {label: PSF}) of the whole-train-step section."""
    from jdeconv import Config

    cfg = Config.default(3)
    if args.quick:
        small = dict(batch_size=2, patch_size=16, patch_size_z=16, base_channels=8, depth=2)
        return cfg.replace(**small), (32, 48, 48), {5: gaussian_psf((5,) * 3, 1.0)}
    psfs = {k: np.load(args.data / "psf" / f"gl_3d_{k}.npy") for k in PAPER_SPEEDUPS}
    return cfg, (64, 128, 128), psfs


def run_train_step(args) -> list[dict]:
    """A whole default 3D train step with the FFT and with the direct forward model."""
    from train_step import psf_method_cases

    cfg, shape, psfs = _train_step_setup(args)
    print(f"whole train step, {cfg.name}, image {shape}, PSFs {list(psfs)}", flush=True)
    return psf_method_cases(
        cfg, shape, psfs, repeats=args.train_repeats, max_call=args.train_max_call
    )


def _auto_rule_text() -> str:
    doc = (auto_method.__doc__ or "").strip().splitlines()
    return " ".join(line.strip() for line in doc[2:] if line.strip()) or doc[0]


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    p.add_argument("--large", action="store_true", help="add 2048² and 128×256×256 (GPUs)")
    p.add_argument("--out", type=Path, default=_ROOT / "benchmarks" / "results")
    p.add_argument("--sizes", help="comma-separated, e.g. 256x256,64x128x128")
    p.add_argument("--kernels", help="comma-separated kernel sizes for 2D and 3D")
    p.add_argument("--kernels-2d", help="comma-separated kernel sizes for 2D")
    p.add_argument("--kernels-3d", help="comma-separated kernel sizes for 3D")
    p.add_argument("--repeats", type=int, help="max timed repeats per method and point")
    p.add_argument("--time-budget", type=float, help="seconds of repeats per method and point")
    p.add_argument("--max-call", type=float, help="extrapolate calls predicted slower (s)")
    p.add_argument(
        "--min-sample",
        type=float,
        default=0.02,
        help="seconds one timing sample lasts at least (back-to-back calls averaged)",
    )
    p.add_argument("--ab-pairs", type=int, help="A/B pairs timing auto against the faster method")
    p.add_argument(
        "--train-step",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time a whole 3D train step per method on the reference PSFs (default: on)",
    )
    p.add_argument("--train-repeats", type=int, help="timed train steps per case")
    p.add_argument("--train-max-call", type=float, help="extrapolate slower train steps (s)")
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="shared data folder with psf/gl_3d_17.npy and psf/gl_3d_31.npy",
    )
    p.add_argument("--suffix", default=None, help="file name suffix (default: -quick/none)")
    p.add_argument("--note", default="", help="a remark for the Markdown (e.g. machine load)")
    args = p.parse_args(argv)
    args.command = shlex.join(
        ["benchmarks/convolution.py", *(sys.argv[1:] if argv is None else argv)]
    )
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES + (LARGE_SIZES if args.large else ())
    args.sizes = args.sizes.split(",") if args.sizes else list(sizes)
    kernels = dict(QUICK_KERNELS if args.quick else DEFAULT_KERNELS)
    if args.kernels:
        kernels = {n: tuple(int(k) for k in args.kernels.split(",")) for n in (2, 3)}
    for n, opt in ((2, args.kernels_2d), (3, args.kernels_3d)):
        if opt:
            kernels[n] = tuple(int(k) for k in opt.split(","))
    args.kernels = kernels
    if args.repeats is None:
        args.repeats = 3 if args.quick else 20
    if args.time_budget is None:
        args.time_budget = 0.2 if args.quick else 1.5
    if args.ab_pairs is None:
        args.ab_pairs = 6 if args.quick else 30
    if args.max_call is None:
        args.max_call = 5.0 if args.quick else 90.0
    if args.suffix is None:
        args.suffix = "-quick" if args.quick else ""
    if args.train_repeats is None:
        args.train_repeats = 2 if args.quick else 3
    if args.train_max_call is None:
        args.train_max_call = 5.0 if args.quick else 120.0
    if args.train_step and not args.quick:
        missing = [
            str(f)
            for k in PAPER_SPEEDUPS
            if not (f := args.data / "psf" / f"gl_3d_{k}.npy").is_file()
        ]
        if missing:
            p.error(
                f"reference PSF(s) not found: {', '.join(missing)}; pass --data DIR (the "
                "shared data folder holding psf/) or --no-train-step"
            )
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    info = machine_info()
    print(
        f"device {info['device']} ({info['device_kind']}), jax {info['jax']}, jaxlib "
        f"{info['jaxlib']}, dtype float32, sizes {args.sizes}, kernels {args.kernels}",
        flush=True,
    )
    t0 = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    records = run_forward_models(args)
    # SECTIONS: run further sections here and store their records in `result` under
    # their own key.
    train_records = run_train_step(args) if args.train_step else []
    result = {
        "machine": info,
        "config": {
            "command": args.command,
            "quick": args.quick,
            "note": args.note,
            "sizes": args.sizes,
            "kernels": {str(n): list(k) for n, k in args.kernels.items()},
            "repeats": args.repeats,
            "time_budget": args.time_budget,
            "max_call": args.max_call,
            "min_sample": args.min_sample,
            "ab_pairs": args.ab_pairs,
            "train_step": args.train_step,
            "train_repeats": args.train_repeats,
            "train_max_call": args.train_max_call,
            "train_step_psfs": (
                "a 5³ Gaussian (quick mode)"
                if args.quick
                else "the reference Gibson-Lanni PSFs psf/gl_3d_17.npy and psf/gl_3d_31.npy"
            ),
            "data": str(args.data),
            "dtype": "float32",
            "padding": "reflect",
            "psf": "gaussian, sigma=k/6",
        },
        "wall_s": time.perf_counter() - t0,
        "load_start": load_start,
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "auto_rule": _auto_rule_text(),
        "forward_models": records,
        "train_step": train_records,
        "crossover": crossover(records),
        "auto": auto_summary(records),
        "max_rel_err_direct_vs_fft": max(
            (
                r["rel_err_vs_fft"]
                for r in records
                if r["method"] == "direct" and r["rel_err_vs_fft"] is not None
            ),
            default=None,
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"convolution-{info['platform']}{args.suffix}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=1, allow_nan=False))
    write_markdown(stem.with_suffix(".md"), result)
    write_plot(stem.with_suffix(".png"), records)
    print(f"wrote {stem}.{{md,json,png}} in {result['wall_s']:.0f} s", flush=True)
    for c in result["crossover"]:
        print(f"crossover {c['ndim']}D {c['shape']} {c['direction']}: {c['text']}")
    return result


if __name__ == "__main__":
    main()
