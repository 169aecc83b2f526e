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

Protocol: every function is jitted and compiled once ahead of time (compile time is
reported separately), then called with ``block_until_ready``. The first call is a timed
warm-up; if it took longer than ``--time-budget`` it is the only sample ("1 call").
Otherwise a sample is the mean time per call of enough back-to-back calls to last at
least ``--min-sample`` seconds, and up to ``--repeats`` samples per method fit in the
budget. Samples are taken in rounds (one of each method per round, the order rotated
every round, an untimed call before each sample of a fast method), so load from other
processes hits all methods alike and no method always follows the same neighbour. The
median sample is the headline number; the minimum is reported too. (On a shared
machine single sub-millisecond calls and the minimum are dominated by the scheduler:
with one call per sample and the minimum as headline, two separately compiled copies of
the same program differed by up to 1.7x here.) A call predicted (from the previous kernel
size, scaling by kernel volume) to take longer than ``--max-call`` seconds is not run:
its time is extrapolated that way and flagged.

``auto`` is compared with the faster of fft and direct by A/B alternation (``--ab-pairs``
pairs of back-to-back call batches, AB, BA, ...; the median of the per-pair ratios), and
its lowered program with that of the method it resolves to. (Medians from separate
rounds are not steady enough for a 10 % criterion here: over three full runs on the
2-core CPU, the median of auto over that of the identical program it resolves to ranged
from 0.80 to 1.15; the A/B ratio from 0.90 to 1.04.)

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

Adding a section: write a ``run_<name>(args)`` that returns its raw records and a
``<name>_markdown(records)`` that renders them; call both from :func:`main` and
:func:`write_markdown` where marked ("SECTIONS"), and store the records under their own
key in the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import statistics
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
from _common import DEFAULT_DATA, atomic_write_text, machine_info, save_figure  # noqa: E402
from jax.scipy.signal import fftconvolve  # noqa: E402

from jdeconv.forward import auto_method, make_forward  # noqa: E402
from jdeconv.psf import gaussian_psf  # noqa: E402

METHODS = ("fft", "fft_no_otf", "direct", "auto", "fftconvolve")
DIRECTIONS = ("forward", "backward")  # backward = forward + gradient w.r.t. the image
DIRECTION_LABEL = {"forward": "forward", "backward": "forward+backward"}

DEFAULT_SIZES = ("256x256", "1024x1024", "64x128x128")
LARGE_SIZES = ("2048x2048", "128x256x256")
# k=1 (no blur) is the one size where direct convolution wins on CPU; it anchors the
# crossover.
DEFAULT_KERNELS = {2: (1, 3, 5, 7, 9, 13, 17, 25, 33, 49, 63), 3: (1, 3, 5, 7, 9, 13, 17, 25, 31)}
QUICK_SIZES = ("64x64", "16x32x32")
QUICK_KERNELS = {2: (1, 3, 9), 3: (1, 3, 5)}

# Papkov et al. 2023 (arXiv 2308.09426): FFT advised above these kernel sizes (GPU).
PAPER_FFT_ABOVE = {2: 25, 3: 9}
PAPER_SPEEDUPS = {17: 2.3, 31: 14.0}  # whole training, 3D, FFT vs direct


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


# --------------------------------------------------------------------------- timing


def _timed(fn, args, calls: int = 1) -> tuple[float, jax.Array]:
    """Seconds per call of ``calls`` back-to-back calls, each one waited for."""
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
        out.block_until_ready()
    return (time.perf_counter() - t0) / calls, out


# Calls faster than this get an untimed call right before each sample: interleaving
# methods otherwise leaves caches cold (and XLA's thread pool asleep) after a slow
# neighbour, which biases the fast method timed after it by up to 2x.
_PRECALL_BELOW_S = 0.05


def _measure_point(compiled: dict, args, *, repeats: int, budget: float, min_sample: float) -> dict:
    """Interleaved, rotated timing of several compiled functions on the same arguments.

    One sample = the mean time per call of ``calls`` back-to-back calls, ``calls`` chosen
    so that a sample lasts at least ``min_sample`` seconds (a single sub-millisecond call
    is at the mercy of the scheduler). Round ``r`` takes one sample of every method, in
    the order rotated by ``r`` so that no method always follows the same neighbour.
    Returns per method the samples, their min and median, and the calls per sample.
    """
    names = list(compiled)
    first, outputs, calls, n_wanted, samples = {}, {}, {}, {}, {}
    for name, fn in compiled.items():
        first[name], outputs[name] = _timed(fn, args)  # includes first-call overhead
        samples[name] = []
        if first[name] > budget:
            # Slower than the whole budget: this call is the only sample.
            n_wanted[name], calls[name] = 0, 1
            samples[name] = [first[name]]
            continue
        per_call = _timed(fn, args)[0] if first[name] < budget / 2 else first[name]
        calls[name] = max(1, math.ceil(min_sample / per_call))
        cost = per_call * (calls[name] + (per_call < _PRECALL_BELOW_S))
        n_wanted[name] = max(1, min(repeats, int(budget / cost)))
    for r in range(max(n_wanted.values(), default=0)):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if len(samples[name]) < n_wanted[name]:
                fn = compiled[name]
                if first[name] < _PRECALL_BELOW_S:
                    fn(*args).block_until_ready()
                samples[name].append(_timed(fn, args, calls[name])[0])
    return {
        name: {
            "times_s": samples[name],
            "min_s": min(samples[name]),
            "median_s": statistics.median(samples[name]),
            "repeats": len(samples[name]),
            "calls_per_sample": calls[name],
            "mode": "1 call" if n_wanted[name] == 0 else "measured",
            "output": np.asarray(outputs[name]),
        }
        for name in names
    }


def _ab_ratio(fa, fb, args, *, pairs: int, half: float, budget: float) -> dict | None:
    """Time of ``fa`` / time of ``fb`` by A/B alternation: the median of per-pair ratios.

    Each pair times ``calls`` back-to-back calls of each (lasting at least ``half``
    seconds), in the order AB, BA, AB, ... so both see the same state of the machine
    (drifts of its speed over seconds cancel) and neither always goes first. Up to
    ``pairs`` pairs within ``budget`` seconds; None when fewer than 3 fit.
    """
    per_call = min(_timed(fa, args)[0], _timed(fb, args)[0])
    calls = max(1, math.ceil(half / per_call))
    n = min(pairs, int(budget / (2 * calls * per_call)))
    if n < 3:
        return None
    ratios = []
    for i in range(n):
        first, second = (fa, fb) if i % 2 == 0 else (fb, fa)
        t_first, t_second = _timed(first, args, calls)[0], _timed(second, args, calls)[0]
        ratios.append(t_first / t_second if i % 2 == 0 else t_second / t_first)
    return {"ratio": statistics.median(ratios), "pairs": n, "calls": calls}


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
                point = _measure_point(
                    compiled,
                    call_args,
                    repeats=args.repeats,
                    budget=args.time_budget,
                    min_sample=args.min_sample,
                )
                ref = point.get("fft", {}).get("output")
                faster = _faster(point)
                ab = None
                if "auto" in compiled:
                    ab = _ab_ratio(
                        compiled["auto"],
                        compiled[faster],
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


# --------------------------------------------------------------------------- analysis


def _table(records: list[dict]) -> dict:
    """(shape, direction, kernel) -> {method: record}."""
    out: dict = {}
    for r in records:
        out.setdefault((tuple(r["shape"]), r["direction"], r["kernel"]), {})[r["method"]] = r
    return out


def crossover(records: list[dict]) -> list[dict]:
    """Per (shape, direction): smallest kernel from which FFT beats direct at all larger."""
    table = _table(records)
    keys = sorted(
        {(s, d) for s, d, _ in table},
        key=lambda sd: (len(sd[0]), sd[0], DIRECTIONS.index(sd[1])),
    )
    result = []
    for shape, direction in keys:
        kernels = sorted(k for s, d, k in table if (s, d) == (shape, direction))
        fft_wins = [
            table[shape, direction, k]["fft"]["median_s"]
            < table[shape, direction, k]["direct"]["median_s"]
            for k in kernels
        ]
        k_star = None
        for i in range(len(kernels) - 1, -1, -1):
            if not fft_wins[i]:
                break
            k_star = kernels[i]
        if k_star is None:
            text = f"direct faster up to k={kernels[-1]} (largest measured)"
        elif k_star == kernels[0]:
            text = f"FFT faster at every measured kernel (k≥{kernels[0]})"
        else:
            below = kernels[kernels.index(k_star) - 1]
            text = f"FFT faster from k={k_star} (direct faster at k={below})"
        result.append(
            {
                "ndim": len(shape),
                "shape": list(shape),
                "direction": direction,
                "fft_faster_from_kernel": k_star,
                "kernels": kernels,
                "text": text,
            }
        )
    return result


def _faster(m: dict) -> str:
    """The faster of fft and direct by median ("fft" on a tie or when direct was not run)."""
    return min(("fft", "direct"), key=lambda n: m[n]["median_s"] if n in m else math.inf)


def _auto_ratio(m: dict) -> float:
    """auto's time / the faster method's: A/B alternation, else the ratio of medians."""
    ab = m["auto"].get("ab_vs_faster")
    if ab is not None:
        return ab["ratio"]
    return m["auto"]["median_s"] / m[_faster(m)]["median_s"]


def auto_summary(records: list[dict]) -> dict:
    """auto vs the faster of fft and direct at every point."""
    table = _table(records)
    rows = []
    for (shape, direction, k), m in table.items():
        faster = _faster(m)
        auto, best = m["auto"], m[faster]
        rows.append(
            {
                "shape": list(shape),
                "direction": direction,
                "kernel": k,
                "auto_choice": auto["runs_as"],
                "faster": faster,
                "same_program": auto.get("same_program_as_runs_as"),
                "auto_over_best": _auto_ratio(m),
                "ab_pairs": (auto.get("ab_vs_faster") or {}).get("pairs", 0),
                "auto_over_best_medians": auto["median_s"] / best["median_s"],
                "choice_over_best": m[auto["runs_as"]]["median_s"] / best["median_s"],
            }
        )
    return {
        "points": len(rows),
        "max_auto_over_best": max((r["auto_over_best"] for r in rows), default=None),
        "max_auto_over_best_medians": max(
            (r["auto_over_best_medians"] for r in rows), default=None
        ),
        "max_choice_over_best": max((r["choice_over_best"] for r in rows), default=None),
        "same_program": sum(bool(r["same_program"]) for r in rows),
        "misses_10pct": [r for r in rows if r["auto_over_best"] > 1.10],
        "wrong_choice": [r for r in rows if r["auto_choice"] != r["faster"]],
        "rows": rows,
    }


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


def train_step_markdown(records: list[dict], psfs: str) -> list[str]:
    by_case = {r["case"]: r for r in records}
    r0 = records[0]
    lines = [
        "## Whole train step: FFT vs direct forward model",
        "",
        f"One jitted train step exactly as `jdeconv.fit` builds it (preset {r0['preset']}, "
        f"U-Net with stacked 3D convolutions, batch {r0['batch']} × "
        f"{'×'.join(map(str, r0['patch']))} patches, both passes) with "
        f"`make_forward(method='fft')` or `method='direct'`, on {psfs}. "
        "Seconds per step: median (minimum) of the repeats after one warm-up call; "
        "`~` extrapolated, not run: the FFT step plus the direct blur's forward+backward "
        "cost, measured on a 5³ kernel over the same patches and scaled by kernel volume "
        "(the column 'direct by 5³ scaling' gives that estimate for every PSF, so it can be "
        "checked where the direct step was measured). "
        "Papkov et al. 2023 report FFT speeding up whole training 2.3× (17³) and 14× (31³) "
        "on a GPU (PyTorch).",
        "",
        "| PSF | FFT step s | direct step s | direct/FFT | paper | direct by 5³ scaling s "
        "| compile FFT/direct s | repeats FFT/direct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["method"] != "fft":
            continue
        label = r["case"].removeprefix("3d-psf").removesuffix("-fft")
        d = by_case[f"3d-psf{label}-direct"]
        k = r["psf"][0]
        direct_s = ("~" if d["extrapolated"] else "") + f"{d['step_median_s']:.3g}"
        if not d["extrapolated"]:
            direct_s += f" ({d['step_min_s']:.3g})"
        paper = f"{PAPER_SPEEDUPS[k]}×" if k in PAPER_SPEEDUPS else "–"
        compile_d = "–" if d["compile_s"] is None else f"{d['compile_s']:.1f}"
        lines.append(
            f"| {'×'.join(map(str, r['psf']))} | {r['step_median_s']:.3g} "
            f"({r['step_min_s']:.3g}) | {direct_s} "
            f"| {d['step_median_s'] / r['step_median_s']:.1f}× | {paper} "
            f"| {d['volume_estimate_s']:.3g} "
            f"| {r['compile_s']:.1f} / {compile_d} | {r['repeats']} / {d['repeats'] or '–'} |"
        )
    extra = [r["extrapolation"] for r in records if r.get("extrapolated")]
    lines += [""] + [f"- extrapolated: {e}" for e in extra] + [""]
    return lines


# --------------------------------------------------------------------------- reports


def _ms(s: float | None) -> str:
    if s is None:
        return "–"
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 1000 else f"{ms:,.0f}"


def _cell(r: dict) -> str:
    if r["mode"].startswith("extrapolated"):
        return f"~{_ms(r['min_s'])}†"
    if r["repeats"] == 1:
        return f"{_ms(r['median_s'])}*"
    return f"{_ms(r['median_s'])} ({_ms(r['min_s'])})"


def forward_models_markdown(records: list[dict], *, quick: bool) -> list[str]:
    table = _table(records)
    lines = []
    shapes = sorted({s for s, _, _ in table}, key=lambda s: (len(s), s))
    for shape in shapes:
        for direction in DIRECTIONS:
            kernels = sorted(k for s, d, k in table if (s, d) == (shape, direction))
            if not kernels:
                continue
            lines += [
                f"### {len(shape)}D {'×'.join(map(str, shape))}, {DIRECTION_LABEL[direction]}",
                "",
                "| kernel | fft | fft_no_otf | direct | fftconvolve | direct/fft | auto → "
                "| auto/faster | err direct vs fft | samples×calls fft/direct "
                "| compile fft/direct s |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for k in kernels:
                m = table[shape, direction, k]
                ratio = _auto_ratio(m)
                miss = " ✗" if ratio > 1.10 else ""
                same = "" if m["auto"].get("same_program_as_runs_as") else " (other program)"
                err = m["direct"]["rel_err_vs_fft"]
                comp = [m[n]["compile_s"] for n in ("fft", "direct")]
                speedup = m["direct"]["median_s"] / m["fft"]["median_s"]
                samples = "/".join(
                    f"{m[n]['repeats']}×{m[n]['calls_per_sample']}" if m[n]["repeats"] else "–"
                    for n in ("fft", "direct")
                )
                lines.append(
                    f"| {k} | {_cell(m['fft'])} | {_cell(m['fft_no_otf'])} | {_cell(m['direct'])}"
                    f" | {_cell(m['fftconvolve'])} | {speedup:.3g}×"
                    f" | {m['auto']['runs_as']}{same} | {ratio:.2f}{miss}"
                    f" | {'n/a' if err is None else f'{err:.1e}'}"
                    f" | {samples}"
                    f" | {' / '.join('–' if c is None else f'{c:.2f}' for c in comp)} |"
                )
            lines.append("")
    return lines


def write_markdown(path: Path, result: dict) -> None:
    info, cfg, recs = result["machine"], result["config"], result["forward_models"]
    quick = cfg["quick"]
    cross = result["crossover"]
    auto = result["auto"]
    errs = [r["rel_err_vs_fft"] for r in recs if r["method"] == "direct" and r["rel_err_vs_fft"]]
    lines = [
        f"# Convolution benchmark: FFT vs direct forward model ({info['platform']})"
        + (" — QUICK smoke run, not for conclusions" if quick else ""),
        "",
        "Generated by `benchmarks/convolution.py` "
        f"(`{cfg['command']}`), {info['date']}, total wall time {result['wall_s'] / 60:.1f} min.",
        "",
        f"- Device: {info['device']} ({info['device_kind']}); JAX {info['jax']}, "
        f"jaxlib {info['jaxlib']}; dtype float32; default XLA threading "
        f"(XLA_FLAGS={info['xla_flags']!r}).",
        f"- Machine: {info['cpu_model'] or info['processor'] or info['uname']['machine']}, "
        f"{info['uname']['system']} {info['uname']['release']}, {info['cpu_count']} CPUs "
        f"(affinity {info['cpu_affinity']}); load average at start/end "
        f"{result['load_start']} / {result['load_end']}.",
    ]
    if cfg["note"]:
        lines.append(f"- **Note:** {cfg['note']}")
    lines += [
        f"- Protocol: jit, compile once ahead of time (compile time reported separately), "
        "`block_until_ready` on every call. A sample is the mean time per call of enough "
        f"back-to-back calls to last ≥ {cfg['min_sample'] * 1e3:g} ms; up to "
        f"{cfg['repeats']} samples per method and point within a {cfg['time_budget']} s "
        "budget, taken in rounds (one sample of each method per round, the order rotated "
        "every round, an untimed call before each sample of a call under 50 ms). Headline: "
        "the median sample. Calls predicted slower than "
        f"{cfg['max_call']} s are extrapolated by kernel volume from the largest measured "
        "kernel.",
        "- Image: uniform random; PSF: Gaussian, sigma = k/6, size k per axis; reflect "
        "padding (fftconvolve: zero padding, its own FFT sizes — a timing reference only). "
        "Backward = `jit(grad(lambda x: sum(g(x) * w)))` w.r.t. the image, w random.",
        "",
        "## Crossover: where FFT becomes faster than direct",
        "",
        "| dim | shape | direction | crossover |",
        "|---|---|---|---|",
    ]
    for c in cross:
        lines.append(
            f"| {c['ndim']}D | {'×'.join(map(str, c['shape']))} | "
            f"{DIRECTION_LABEL[c['direction']]} | {c['text']} |"
        )
    lines += ["", _paper_comparison(result), ""]
    lines += [
        '## `method="auto"`',
        "",
        f"Rule in `jdeconv.forward.auto_method` at run time: {result['auto_rule']}",
        "",
        "`auto` is timed as its own separately compiled program against the faster of fft "
        "and direct at that point (by median): auto/faster is the median of per-pair ratios "
        f"over up to {cfg['ab_pairs']} A/B pairs (AB, BA, AB, …; each half ≥ "
        f"{cfg['min_sample'] * 1e3:g} ms of back-to-back calls), so both programs see the "
        "same state of the machine; the ratio of the medians of the rounds above is "
        "given too (it drifts with the machine's speed between samples: see the "
        "script's docstring).",
        "",
        f"Over {auto['points']} points, auto/faster is at most "
        f"{auto['max_auto_over_best']:.2f} (as a ratio of the two medians: at most "
        f"{auto['max_auto_over_best_medians']:.2f}; the method it picks vs the faster "
        f"method: at most {auto['max_choice_over_best']:.2f}); "
        f"**{len(auto['misses_10pct'])} point(s) over 1.10**, "
        f"{len(auto['wrong_choice'])} point(s) where it picks the slower method. "
        f"At {auto['same_program']} of {auto['points']} points auto lowers to exactly the "
        "program of the method it picks (same StableHLO text, SHA-256).",
        "",
    ]
    for r in auto["misses_10pct"] + [
        r for r in auto["wrong_choice"] if r not in auto["misses_10pct"]
    ]:
        lines.append(
            f"- {'×'.join(map(str, r['shape']))} k={r['kernel']} {r['direction']}: auto "
            f"picks {r['auto_choice']}, faster is {r['faster']}, auto/faster "
            f"{r['auto_over_best']:.2f} (medians {r['auto_over_best_medians']:.2f}), "
            f"picked/faster {r['choice_over_best']:.2f}"
        )
    lines += [
        "",
        "## Times",
        "",
        "Milliseconds per call: median (minimum) of the samples. `*` one call only (slower "
        "than the budget; includes first-call overhead); `~…†` extrapolated, not run. "
        "direct/fft (medians) > 1 means FFT is faster. samples×calls: samples taken × calls "
        "per sample. `err`: max |direct − fft| / max |fft| over the output (forward) "
        f"or the gradient (backward); largest measured {max(errs, default=float('nan')):.1e}. "
        "`✗` marks auto more than 10 % slower than the faster method.",
        "",
    ]
    lines += forward_models_markdown(recs, quick=quick)
    lines += [f"![plot]({path.with_suffix('.png').name})", ""]
    # SECTIONS: further sections render here.
    if result.get("train_step"):
        lines += train_step_markdown(result["train_step"], cfg["train_step_psfs"])
    atomic_write_text(path, "\n".join(lines))


def _paper_comparison(result: dict) -> str:
    cross = result["crossover"]
    table = _table(result["forward_models"])
    ours = []
    for ndim in (2, 3):
        for c in (c for c in cross if c["ndim"] == ndim):
            k = c["fft_faster_from_kernel"]
            ours.append(
                f"{ndim}D {'×'.join(map(str, c['shape']))} {DIRECTION_LABEL[c['direction']]}: "
                + ("never" if k is None else f"k≥{k}")
            )
    speed = []
    for (shape, direction, k), m in sorted(table.items()):
        if len(shape) == 3 and direction == "backward" and k in PAPER_SPEEDUPS:
            r = m["direct"]["median_s"] / m["fft"]["median_s"]
            flag = " (direct extrapolated)" if m["direct"]["mode"].startswith("extra") else ""
            speed.append(f"{k}³: {r:,.0f}×{flag} (paper {PAPER_SPEEDUPS[k]}×)")
    text = (
        "**Paper comparison.** Papkov et al. 2023 advise FFT above N=25 in 2D and N=9 in 3D, "
        "and report FFT speeding up whole-network training 2.3× for a 17³ PSF and 14× for "
        "31³ (GPU, PyTorch). Our FFT-faster-from kernels: " + "; ".join(ours) + ". "
    )
    if speed:
        text += (
            "Our forward+backward direct/FFT ratio for the blur alone: "
            + "; ".join(speed)
            + ". Theirs is a whole training step (the network dominates), ours the forward "
            "model only, so ours is expected to be larger. "
        )
    steps = {r["case"]: r for r in result.get("train_step", [])}
    whole = []
    for k in PAPER_SPEEDUPS:
        fft, direct = steps.get(f"3d-psf{k}-fft"), steps.get(f"3d-psf{k}-direct")
        if fft and direct:
            flag = "~" if direct["extrapolated"] else ""
            whole.append(
                f"{k}³: {flag}{direct['step_median_s'] / fft['step_median_s']:.1f}×"
                + (" (direct extrapolated)" if direct["extrapolated"] else "")
                + f" (paper {PAPER_SPEEDUPS[k]}×)"
            )
    if whole:
        text += (
            "Whole default 3D train step, direct/FFT (medians, see the section below): "
            + "; ".join(whole)
            + ". "
        )
    text += (
        "On this CPU, XLA's direct convolution of a single-channel image is slow (see the "
        "direct column; worst in 3D), so the crossover sits at much smaller kernels than the "
        "paper's GPU advice."
        if result["machine"]["platform"] == "cpu"
        else "Compare their advice with the crossover measured here."
    )
    return text


def write_plot(path: Path, records: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _table(records)
    shapes = sorted({s for s, _, _ in table}, key=lambda s: (len(s), s))
    fig, axes = plt.subplots(
        2, len(shapes), figsize=(4.2 * len(shapes), 7), squeeze=False, sharex="col"
    )
    colours = dict(zip(METHODS, ("C0", "C1", "C3", "k", "C2"), strict=True))
    for col, shape in enumerate(shapes):
        for row, direction in enumerate(DIRECTIONS):
            ax = axes[row, col]
            kernels = sorted(k for s, d, k in table if (s, d) == (shape, direction))
            for method in METHODS:
                rs = [table[shape, direction, k][method] for k in kernels]
                meas = [(r["kernel"], r["median_s"]) for r in rs if r["repeats"] > 0]
                extra = [(r["kernel"], r["median_s"]) for r in rs if r["repeats"] == 0]
                style = dict(color=colours[method], label=method)
                if method == "auto":
                    style.update(linestyle=":", marker="x", linewidth=1)
                else:
                    style.update(marker="o", markersize=4)
                if meas:
                    ax.plot(*zip(*meas, strict=True), **style)
                if extra:
                    ax.plot(
                        *zip(*(meas[-1:] + extra), strict=True),
                        color=colours[method],
                        linestyle="--",
                        marker="o",
                        markerfacecolor="none",
                        markersize=4,
                        label=f"{method} (extrapolated)",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(kernels)
            ax.set_xticklabels([str(k) for k in kernels], fontsize=7)
            ax.minorticks_off()
            ax.set_title(
                f"{len(shape)}D {'×'.join(map(str, shape))}, {DIRECTION_LABEL[direction]}",
                fontsize=9,
            )
            ax.grid(True, which="major", alpha=0.3)
            if row == 1:
                ax.set_xlabel("kernel size per axis")
            if col == 0:
                ax.set_ylabel("time per call (s)")
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


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
