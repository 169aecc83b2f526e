"""How much the default fit depends on its seed: 10 seeds on 3 images, against the RL oracle.

Protocol: paper_2d.py's (Kobayashi et al. 2020; Papkov et al. 2023; DESIGN.md §3). Each
ground truth of ``<data>/ssi2d`` is min-max normalised, centre-cropped (``--crop``, 256
by default) and normalised again, and degraded with ``jdeconv.simulate.degrade``: blur by
``psf/ssi_2d_17.npy`` ('same', zero fill), ``x + sqrt(0.001 x + 0.1²) N(0, 1)``, 1 %
salt-and-pepper, 10 bits, clip. The noise of image ``i`` (its index among the 22 sorted
by name) is ``fold_in(key(--noise-seed), i)``, the same as paper_2d.py's, and does not
change with the fit's seed. Then, per image:

* ``RL oracle`` — Richardson-Lucy at the iteration count in 1..``--rl-max`` with the best
  PSNR against the ground truth (an upper bound for RL no user can reach);
* for each seed ``s`` in ``0..--seeds - 1``: ``jdeconv.fit(noisy, psf,
  Config.default(2, seed=s))`` — the default a user gets (noise2same_d anchored on the
  non-negative sparse Tikhonov solution, at most 300 steps, stopped early); the seed
  changes the network's initialisation, the patches, the masks and the held-out pixels
  (the anchor, step 0, does not depend on it). ``--steps`` overrides the step count.

Reported: the PSNR of every (image, seed) run (data_range 1, nothing clipped), per image
and over all runs the mean, standard deviation (n - 1) and minimum, how many runs fall
below the RL oracle, and how many failed (an exception is recorded, e.g. a diverged
loss, and the run goes on).

Usage (from the repository root)::

    .venv/bin/python benchmarks/seeds.py --tiny            # ~1 min: 1 image, 2 seeds, 48²
    .venv/bin/python benchmarks/seeds.py --tag crop256     # the study: 30 fits

Expected runtime of the study on a 2-core CPU: each fit ~25 s of compilation plus 100
to 300 steps at ~0.6-1.2 s (100 when training cannot beat step 0), so 1-2 h for 30
fits; a GPU does it in minutes. Expected result: the
default beat the RL oracle on all 22 crops with seed 0 (paper_2d-crop256-all22: +0.66 dB
on average); this measures whether that holds for other seeds, and how often it does not.

Writes ``seeds[-tag].md`` and ``.json`` (every run's scores, timings and config, machine
and library versions) to ``--out`` (default ``benchmarks/results``), rewritten after
every image, so a run that is cut off leaves its finished images. ``--tiny`` defaults
the tag to ``tiny``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import _common as C  # first: puts this checkout on sys.path before jdeconv
import jax
import numpy as np
import paper_2d as P

import jdeconv
from jdeconv.simulate import degrade

NAME = "seeds"
IMAGES = ("drosophila", "tubules", "characters")
BORDER = 16
TINY = {
    "images": ["drosophila"],
    "crop": 48,
    "seeds": 2,
    "steps": 2,
    "rl_max": 5,
    "overrides": {
        "batch_size": 2,
        "patch_size": 24,
        "base_channels": 4,
        "depth": 2,
        "validate_every": 1,
        "tta": False,
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder")
    p.add_argument(
        "--images",
        nargs="+",
        help=f"names (or unique prefixes) or indices 0..21 [default: {' '.join(IMAGES)}]",
    )
    p.add_argument("--seeds", type=int, help="fit seeds 0..N-1 [default: 10]")
    p.add_argument("--steps", type=int, help="training steps [default: the default config's]")
    p.add_argument("--crop", type=int, help="centre crop side before degradation [256]")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of the degradation noise")
    p.add_argument("--rl-max", type=int, default=50, help="RL oracle searches n in 1..this")
    p.add_argument("--out", type=Path, default=C.DEFAULT_OUT, help="output folder")
    p.add_argument("--tag", help="file name suffix: seeds-<tag>.{md,json}")
    p.add_argument("--tiny", action="store_true", help="1 image, 2 seeds, 48² (a minute; tests)")
    p.add_argument("--verbose", action="store_true", help="progress bars of the fits")
    args = p.parse_args(argv)
    overrides = {}
    if args.tiny:
        args.images = args.images or TINY["images"]
        args.crop = args.crop or TINY["crop"]
        args.seeds = args.seeds or TINY["seeds"]
        args.steps = args.steps or TINY["steps"]
        args.rl_max = min(args.rl_max, TINY["rl_max"])
        args.tag = args.tag or "tiny"
        overrides.update(TINY["overrides"])
    args.images = args.images or list(IMAGES)
    args.crop = args.crop or 256
    args.seeds = args.seeds or 10
    if args.seeds < 1:
        raise SystemExit("--seeds must be at least 1")
    if args.steps is not None:
        overrides["steps"] = args.steps
    args.overrides = overrides
    return args


def fit_seed(noisy, psf, gt, seed: int, overrides: dict, *, verbose: bool) -> dict:
    """One default fit with ``seed``, scored; an exception is recorded, not raised."""
    try:
        cfg = jdeconv.Config.default(2, seed=seed, **overrides)
        result = jdeconv.fit(noisy, psf, cfg, verbose=verbose)
    except Exception as err:  # a failed seed is a result of this benchmark
        return {"seed": seed, "error": f"{type(err).__name__}: {err}"}
    t = result.timings
    return {
        "seed": seed,
        **C.score(gt, result.deconvolved, border=BORDER),
        "train_s": t["train"],
        "compile_s": t["compile"],
        "steps": t["steps"],
        "config": result.model.config.to_dict(),
    }


def summarise(psnrs: list[float], oracle: float | None, failed: int) -> dict:
    """Mean, std (n - 1), min, max of the PSNRs; runs below the RL oracle; failures."""
    n = len(psnrs)
    return {
        "runs": n,
        "failed": failed,
        "mean": statistics.fmean(psnrs) if n else None,
        "std": statistics.stdev(psnrs) if n > 1 else None,
        "min": min(psnrs) if n else None,
        "max": max(psnrs) if n else None,
        "below_rl_oracle": None if oracle is None else sum(p < oracle for p in psnrs),
    }


def write_markdown(path: Path, result: dict) -> None:
    cfg, images = result["config"], result["images"]
    status = (
        "complete"
        if result["status"] == "complete"
        else f"**PARTIAL: {len(images)} of {len(cfg['images'])} images** (running, or cut off)"
    )
    overrides = C.learned_overrides_text(cfg["overrides"])
    lines = [
        "# Seed dependence of the default fit",
        "",
        f"Status: {status}. Generated by `benchmarks/seeds.py`; raw numbers in the `.json`.",
        "",
        "## Protocol",
        "",
        f"- Images: {', '.join(cfg['images'])} of `{cfg['data']}/ssi2d`, {cfg['crop']}² "
        "centre crops, degraded as in paper_2d.py (blur by `psf/ssi_2d_17.npy` with zero "
        "fill, `x + sqrt(0.001 x + 0.1²) N(0,1)`, 1 % salt-and-pepper, 10 bits, clip); noise "
        f"key of image i: `fold_in(key({cfg['noise_seed']}), i)`, the same for every seed.",
        f"- Fits: `jdeconv.fit(noisy, psf, Config.default(2, seed=s))` for s in "
        f"0..{len(cfg['seeds']) - 1}; overrides: {overrides}.",
        f"- RL oracle: Richardson-Lucy at the n in 1..{cfg['rl_max']} with the best PSNR "
        "against the ground truth (an upper bound for RL).",
        "- PSNR against the ground truth, data_range 1, nothing clipped; std with n - 1.",
        "",
        "## Machine",
        "",
        *C.machine_lines(result["machine"]),
        "",
        "## PSNR (dB) per seed",
        "",
    ]
    headers = ["seed", *(img["name"] for img in images)]
    rows = []
    for k, seed in enumerate(cfg["seeds"]):
        row = [str(seed)]
        for img in images:
            run = img["runs"][k] if k < len(img["runs"]) else None
            row.append("" if run is None else ("error" if "error" in run else C.fmt(run["psnr"])))
        rows.append(row)
    for label, key in (("**mean**", "mean"), ("**std**", "std"), ("**min**", "min")):
        rows.append([label, *(C.fmt(img["summary"][key]) for img in images)])
    rows.append(["input", *(C.fmt(img["input"]["psnr"]) for img in images)])
    rows.append(
        [
            "RL oracle",
            *(f"{C.fmt(img['rl_oracle']['psnr'])} (n={img['rl_oracle']['n']})" for img in images),
        ]
    )
    rows.append(
        [
            "runs below the RL oracle",
            *(f"{img['summary']['below_rl_oracle']} / {img['summary']['runs']}" for img in images),
        ]
    )
    lines += C.table(headers, rows)
    total = result["summary"]
    lines += [
        "",
        "## Over all runs",
        "",
        f"- {total['runs']} runs ({total['failed']} failed): PSNR mean {C.fmt(total['mean'])} "
        f"dB, std {C.fmt(total['std'])}, min {C.fmt(total['min'])}, max {C.fmt(total['max'])}.",
        f"- {total['below_rl_oracle']} of {total['runs']} runs fall below the RL oracle of "
        "their image.",
        "",
    ]
    for img in images:
        for run in img["runs"]:
            if "error" in run:
                lines.append(f"- {img['name']}, seed {run['seed']}: {run['error'][:200]}")
    C.atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    selected = P.select_images(P.list_images(args.data), args.images)
    psf = np.load(args.data / P.PSF_FILE).astype(np.float32)
    stem = C.output_stem(args.out, NAME, args.tag)
    seeds = list(range(args.seeds))
    result = {
        "benchmark": NAME,
        "status": "running",
        "machine": C.machine_info(),
        "config": {
            "data": str(args.data),
            "psf": P.PSF_FILE,
            "images": [p.stem for _, p in selected],
            "crop": args.crop,
            "seeds": seeds,
            "overrides": args.overrides,
            "noise_seed": args.noise_seed,
            "rl_max": args.rl_max,
            "border": BORDER,
            "tiny": args.tiny,
            "degradation": P.DEGRADATION,
            "data_range": C.DATA_RANGE,
        },
        "images": [],
        "summary": {},
    }
    base_key = jax.random.key(args.noise_seed)
    t_run = time.perf_counter()
    for done, (index, path) in enumerate(selected, 1):
        t_image = time.perf_counter()
        gt, full_shape = P.load_ground_truth(path, args.crop)
        noisy = degrade(jax.random.fold_in(base_key, index), gt, psf, normalize=False)
        rl, _ = C.richardson_lucy_oracle(
            noisy, psf, gt, n_max=args.rl_max, border=BORDER, repeats=1
        )
        oracle = rl["rl_best"]
        entry = {
            "name": path.stem,
            "index": index,
            "full_shape": list(full_shape),
            "shape": list(gt.shape),
            "input": C.score(gt, noisy, border=BORDER),
            "rl_oracle": {k: oracle[k] for k in ("psnr", "ssim", "n")},
            "runs": [],
        }
        for seed in seeds:
            run = fit_seed(noisy, psf, gt, seed, args.overrides, verbose=args.verbose)
            entry["runs"].append(run)
            text = run["error"] if "error" in run else f"{run['psnr']:.2f} dB"
            print(f"  {path.stem} seed {seed}: {text}", flush=True)
        psnrs = [r["psnr"] for r in entry["runs"] if "error" not in r]
        failed = len(entry["runs"]) - len(psnrs)
        entry["summary"] = summarise(psnrs, oracle["psnr"], failed)
        entry["seconds"] = time.perf_counter() - t_image
        result["images"].append(entry)
        all_psnrs = [r["psnr"] for img in result["images"] for r in img["runs"] if "error" not in r]
        below = sum(img["summary"]["below_rl_oracle"] for img in result["images"])
        failures = sum(img["summary"]["failed"] for img in result["images"])
        result["summary"] = {**summarise(all_psnrs, None, failures), "below_rl_oracle": below}
        result["status"] = "complete" if done == len(selected) else "partial"
        result["elapsed_s"] = time.perf_counter() - t_run
        s = entry["summary"]
        print(
            f"[{done}/{len(selected)}] {path.stem} {tuple(gt.shape)}: mean {C.fmt(s['mean'])} "
            f"± {C.fmt(s['std'])} dB, min {C.fmt(s['min'])}; RL oracle "
            f"{C.fmt(oracle['psnr'])}; {s['below_rl_oracle']} of {s['runs']} below it",
            flush=True,
        )
        C.write_json(stem.with_suffix(".json"), result)
        write_markdown(stem.with_suffix(".md"), result)
    print(f"wrote {stem}.md/.json in {time.perf_counter() - t_run:.0f} s", flush=True)
    return result


if __name__ == "__main__":
    main()
