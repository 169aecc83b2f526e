"""Test-time augmentation: one network call per transformed copy vs batched copies.

Cases, on the default network of ``Config.default(ndim)`` (random weights: the cost does
not depend on them), whole-image inference with ``jdeconv.predict.predict``:
- ``none``: no TTA, one network call;
- ``tta-1``: TTA, one call per copy (8 in 2D, 16 in 3D; ``max_batch=1``, jdeconv <= 0.2);
- ``tta-batched``: TTA with the default batching (as many copies per call as
  ``TTA_BATCH_VOXELS`` allows).

Shapes: 2D 512², 3D 32×128×128. Method: one first call (compilation included, reported
separately), then the minimum and median of ``--repeats`` warm calls with the result
fetched to numpy (what ``deconvolve`` returns). Batched and one-per-copy results are
compared (maximum absolute difference).

Command (CPU, about 5 minutes on 2 busy cores): ``python benchmarks/tta.py``; quick check:
``python benchmarks/tta.py --quick`` (tiny shapes, seconds). Writes
``benchmarks/results/tta-<tag>.{md,json}`` (tag: ``cpu`` by default, ``quick`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax  # noqa: E402
from _common import (  # noqa: E402
    DEFAULT_OUT,
    atomic_write_text,
    machine_info,
    machine_lines,
    table,
    write_json,
)

from jdeconv import Config  # noqa: E402
from jdeconv.predict import TTA_BATCH_VOXELS, _tta_batch, make_predictor, predict  # noqa: E402
from jdeconv.unet import init_unet  # noqa: E402

SHAPES = {2: (512, 512), 3: (32, 128, 128)}
QUICK_SHAPES = {2: (64, 64), 3: (16, 32, 32)}
CASES = {"none": dict(tta=False), "tta-1": dict(tta=True, max_batch=1), "tta-batched": {}}


def time_case(net, params, x, multiple, options, repeats):
    run = lambda: predict(net, params, x, multiple=multiple, **{"tta": True, **options})  # noqa: E731
    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return out, first, times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="warm calls per case")
    p.add_argument("--quick", action="store_true", help="tiny shapes, to check the script")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tag", default=None, help="file name suffix (default: cpu or quick)")
    args = p.parse_args(argv)
    tag = args.tag or ("quick" if args.quick else "cpu")
    info = machine_info()
    records = []
    for ndim, shape in (QUICK_SHAPES if args.quick else SHAPES).items():
        cfg = Config.default(ndim)
        graphdef, params = init_unet(0, cfg.unet(ndim))
        net = make_predictor(graphdef)
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        outs = {}
        n_copies = 8 if ndim == 2 else 16
        for case, options in CASES.items():
            outs[case], first, times = time_case(
                net, params, x, cfg.network.multiple, options, args.repeats
            )
            batch = 1 if case != "tta-batched" else _tta_batch(n_copies, x.size, None)
            record = {
                "ndim": ndim,
                "shape": list(shape),
                "case": case,
                "copies_per_call": 0 if case == "none" else batch,
                "network_calls": 1 if case == "none" else n_copies // batch,
                "first_call_s": first,
                "min_s": min(times),
                "median_s": statistics.median(times),
                "all_s": times,
                "voxels_per_second": x.size / min(times),
                "params": int(sum(leaf.size for leaf in jax.tree.leaves(params))),
            }
            records.append(record)
            print(
                f"{ndim}D {shape} {case}: first {first:.2f} s, min {min(times):.2f} s, "
                f"median {statistics.median(times):.2f} s",
                flush=True,
            )
        diff = float(np.max(np.abs(outs["tta-batched"] - outs["tta-1"])))
        for r in records:
            if r["ndim"] == ndim:
                r["max_abs_diff_batched_vs_one_per_copy"] = diff
                base = {c["case"]: c["min_s"] for c in records if c["ndim"] == ndim}
                r["vs_none"] = r["min_s"] / base["none"]
                r["speedup_vs_tta_1"] = base.get("tta-1", np.nan) / r["min_s"]
    write(args.out, tag, info, records, args.repeats)


def write(out: Path, tag: str, info: dict, records: list, repeats: int):
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"tta-{tag}"
    write_json(
        stem.with_suffix(".json"),
        {"machine": info, "tta_batch_voxels": TTA_BATCH_VOXELS, "results": records},
    )
    rows = [
        (
            f"{r['ndim']}D {'×'.join(map(str, r['shape']))}",
            r["case"],
            str(r["network_calls"]),
            f"{r['first_call_s']:.2f}",
            f"{r['min_s']:.2f}",
            f"{r['median_s']:.2f}",
            f"{r['vs_none']:.1f}×",
            f"{r['speedup_vs_tta_1']:.2f}×" if r["case"] != "none" else "–",
            f"{r['voxels_per_second'] / 1e6:.3g}",
        )
        for r in records
    ]
    lines = [
        "# Test-time augmentation: one call per copy vs batched",
        "",
        *machine_lines(info),
        f"- Default network of `Config.default(ndim)` ({records[0]['params']:,} parameters "
        f"in 2D, {records[-1]['params']:,} in 3D), whole-image inference, float32; "
        f"`TTA_BATCH_VOXELS` = {TTA_BATCH_VOXELS:,}; {repeats} warm repeats",
        "- first call includes compilation; times in seconds; ×none: time over the no-TTA "
        "time; speed-up: one-call-per-copy time over this case's",
        "",
        *table(
            [
                "image",
                "case",
                "net calls",
                "first call",
                "min",
                "median",
                "×none",
                "speed-up",
                "Mvoxel/s",
            ],
            rows,
        ),
        "",
        "Batched and one-per-copy results agree to "
        + ", ".join(
            f"{r['max_abs_diff_batched_vs_one_per_copy']:.1e} ({r['ndim']}D)"
            for r in records
            if r["case"] == "tta-batched"
        )
        + " (maximum absolute difference, standardised units).",
        "",
    ]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
