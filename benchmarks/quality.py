"""Development quality benchmark: jdeconv's default against strong classical baselines, 2D.

A matrix of cells, each one PSF × one noise regime × one content kind
(``benchmarks/_matrix.py``): five PSF families (SSI's defocus ring, in-focus widefield at
NA 0.8 and 1.4, a Gaussian, a confocal-like PSF), four noise regimes from photon-starved
to mild (one with the papers' salt-and-pepper), and four content kinds (sparse puncta,
nuclei-like blobs, sharp edges/text, filaments), each with a synthetic phantom and one
or two 256² crops of SSI's ground-truth images. Every image is min-max normalised to
[0, 1] and degraded with ``jdeconv.simulate.degrade`` ('same' blur with zero fill,
Poisson-Gaussian noise, optional salt-and-pepper, quantisation, clipping to [0, 1]); the
noise key of an image is ``fold_in(key(seed), cell and image index)``.

Methods, all scored against the ground truth (PSNR, SSIM with data_range 1, MI, SMI,
RMSE, PSNR without a ``--border``-pixel frame; nothing clipped):

* ``input`` — the degraded image;
* ``rl_oracle`` — Richardson-Lucy (zero padding, as the degradation) at the iteration
  count in 1..``--rl-max`` with the best PSNR (``_common.richardson_lucy_oracle``);
* ``rl_tv_oracle`` — RL with Dey et al.'s TV, best PSNR over TV weights
  ``RL_TV_WEIGHTS`` × counts 1..``--rl-max``;
* ``tik_id_oracle``, ``tik_lap_oracle`` — Tikhonov/Wiener
  (``jdeconv.regularized.tikhonov``, mirror-extended) with the identity / Laplacian
  regulariser at the best weight on a log grid (``TIKHONOV_WEIGHTS``);
* ``best_oracle`` — per image, the best of those four oracles (by PSNR): what a user who
  could tune every classical method with the ground truth would get;
* ground-truth-free: ``tik_lap_gcv`` (``tikhonov(noisy, psf)``: Laplacian, weight by
  GCV), ``tik_nn_gcv`` (``nonnegative_tikhonov``: the same weight, constrained to be at
  least the input's minimum), ``tik_nn_l1`` (the same with the ℓ1 penalty of
  ``choose_sparsity``: ``nonnegative_tikhonov(..., sparsity="auto")``, the default's
  anchor), ``tik_id_disc`` (identity, discrepancy principle),
  ``rl_disc`` (RL, iteration count by the discrepancy principle, ``choose_rl_iterations``,
  up to 100);
* ``default`` — ``jdeconv.fit(noisy, psf)``, the default config (``Config.default(2)``),
  or with ``--set key=value`` overrides; ``--methods`` adds presets by name.

The oracles choose with the ground truth, which no user has: upper bounds for each
classical method. jdeconv uses no ground truth.

Usage (from the repository root; the reference data default to ``../shared/data``)::

    python benchmarks/quality.py --classical-only --tag classical-2d   # full matrix, no training
    python benchmarks/quality.py --quick --tag quick-2d      # 10 jdeconv fits, ~15 min
    python benchmarks/quality.py --tag full-2d --resume      # 180 fits, ~3.5-4 h; resumable
    python benchmarks/quality.py --cells 'ssi_ring/*/puncta' --set steps=500 --tag my-test
    python benchmarks/quality.py --tiny                      # a few seconds, for the tests

``--cells`` takes ``PSF/NOISE/CONTENT`` patterns with shell wildcards; ``--images``
restricts to named images. Writes ``quality-<tag>.md`` and ``.json`` to ``--out``
(default benchmarks/results), rewritten after every image, so a run that is cut off
keeps its finished images; images run one per cell in turn (every cell's first image, then
every cell's second, ...), so a cut-off run covers the cells evenly.

Expected runtime (one CPU core shared with other jobs): classical methods ~1-2 s per
256² image after compilation, the full matrix (180 images) in ~5 min; a default jdeconv
fit (stopped early, usually at step 100) 47-250 s per image on 2 cores (77 s on average),
so --quick takes ~15 min and the full matrix ~3.5-4 h. ``--resume`` keeps
the finished images of an earlier run with the same tag and settings and runs the rest.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import statistics
import time
from pathlib import Path

import _common as C  # first: puts this checkout on sys.path before jdeconv
import _matrix as X
import jax
import numpy as np

from jdeconv import regularized
from jdeconv.classic import richardson_lucy_path
from jdeconv.config import default_preset
from jdeconv.metrics import psnr
from jdeconv.simulate import degrade

NAME = "quality"
# The largest was the oracle's choice on 96 of 180 images; 0.05-0.2 were tried on five of
# them and gained at most 0.05 dB (mostly lost). Three weights plus plain RL keep the four
# compiled RL loops of jdeconv.classic's cache.
RL_TV_WEIGHTS = (0.002, 0.006, 0.02)
TIKHONOV_WEIGHTS = tuple(float(w) for w in np.logspace(-5, 2, 57))  # 8 per decade
RL_DISC_MAX = 100
ORACLES = ("rl_oracle", "rl_tv_oracle", "tik_id_oracle", "tik_lap_oracle")
GT_FREE = ("tik_lap_gcv", "tik_nn_gcv", "tik_nn_l1", "tik_id_disc", "rl_disc")
CLASSICAL = ("input", *ORACLES, "best_oracle", *GT_FREE)
# The classical columns of the per-cell tables and the progress lines.
SUMMARY = ("rl_oracle", "best_oracle", "tik_lap_gcv", "tik_nn_gcv", "tik_nn_l1", "rl_disc")
LABELS = {
    "input": "input",
    "rl_oracle": "RL oracle",
    "rl_tv_oracle": "RL-TV oracle",
    "tik_id_oracle": "Tikhonov-identity oracle",
    "tik_lap_oracle": "Tikhonov-Laplacian oracle",
    "best_oracle": "best classical oracle",
    "tik_lap_gcv": "Tikhonov-Laplacian, GCV",
    "tik_nn_gcv": "non-negative Tikhonov-Laplacian, GCV",
    "tik_nn_l1": "non-negative Tikhonov-Laplacian + ℓ1, GCV + sparsity rule",
    "tik_id_disc": "Tikhonov-identity, discrepancy",
    "rl_disc": "RL, discrepancy",
    "default": "jdeconv default",
}
SHORT = {
    "input": "input",
    "rl_oracle": "RL or.",
    "rl_tv_oracle": "RL-TV or.",
    "tik_id_oracle": "Tik-I or.",
    "tik_lap_oracle": "Tik-L or.",
    "best_oracle": "best or.",
    "tik_lap_gcv": "Tik-L GCV",
    "tik_nn_gcv": "Tik-L≥ GCV",
    "tik_nn_l1": "Tik-L≥ℓ1",
    "tik_id_disc": "Tik-I disc.",
    "rl_disc": "RL disc.",
    "default": "jdeconv",
}

# One image per PSF family × noise extreme, covering sparse puncta, text-like edges and
# smooth blobs: the --quick screen of jdeconv fits (about 5-10 min each on a shared core).
QUICK_CASES = (
    ("ssi_ring", "starved", "puncta"),
    ("wf_na14", "mild", "puncta"),
    ("wf_na08", "starved", "edges"),
    ("confocal_na14", "mild", "edges"),
    ("gauss2", "starved", "characters"),
    ("ssi_ring", "mild", "usaf"),
    ("wf_na08", "mild", "blobs"),
    ("wf_na14", "starved", "nuclei"),
    ("gauss2", "mild", "vesicules"),
    ("confocal_na14", "starved", "blobs"),
)
TINY = {
    "cases": (("gauss2", "paper", "puncta"), ("confocal_na14", "starved", "edges")),
    "size": 64,
    "steps": 2,
    "rl_max": 10,
    "overrides": {"batch_size": 2, "patch_size": 32, "validate_every": 1},
}


# --------------------------------------------------------------------------- cases


def all_cases() -> list[tuple[str, str, str]]:
    """Every (psf, noise, image) of the matrix, PSF outermost."""
    return [(p, n, spec.name) for p in X.PSFS for n in X.NOISES for spec in X.IMAGES]


def select_cases(cells: list[str] | None, images: list[str] | None, base=None):
    cases = list(base) if base is not None else all_cases()
    kind = {spec.name: spec.kind for spec in X.IMAGES}
    if cells:
        patterns = [c for item in cells for c in item.split(",") if c.strip()]
        for pattern in patterns:
            if pattern.count("/") != 2:
                raise SystemExit(f"--cells expects PSF/NOISE/CONTENT patterns, got {pattern!r}")
        cases = [
            c
            for c in cases
            if any(fnmatch.fnmatch(f"{c[0]}/{c[1]}/{kind[c[2]]}", p) for p in patterns)
        ]
    if images:
        wanted = {t.strip() for item in images for t in item.split(",") if t.strip()}
        unknown = wanted - set(kind)
        if unknown:
            raise SystemExit(f"--images: unknown {sorted(unknown)}; choose from {sorted(kind)}")
        cases = [c for c in cases if c[2] in wanted]
    if not cases:
        raise SystemExit("no case matches --cells/--images")
    return cases


def run_order(cases: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``cases`` reordered so that every cell's first image runs before any cell's second.

    A long run that is cut off (and resumed later with ``--resume``) then covers every
    cell it reached evenly rather than the first PSFs whole. Results are written in the
    matrix order whatever the run order.
    """
    kind = {spec.name: spec.kind for spec in X.IMAGES}
    seen: dict[tuple[str, str, str], int] = {}
    rank = []
    for case in cases:
        cell = (case[0], case[1], kind[case[2]])
        rank.append(seen.get(cell, 0))
        seen[cell] = rank[-1] + 1
    return [c for _, _, c in sorted(zip(rank, range(len(cases)), cases, strict=True))]


def noise_key(seed: int, case: tuple[str, str, str]):
    psf, noise, image = case
    index = (
        list(X.PSFS).index(psf) * 100
        + list(X.NOISES).index(noise) * 10
        + [s.name for s in X.IMAGES].index(image)
    )
    return jax.random.fold_in(jax.random.key(seed), index)


# --------------------------------------------------------------------------- methods


def _best_over(stack, gt) -> tuple[int, float]:
    scores = [psnr(gt, x, data_range=C.DATA_RANGE) for x in stack]
    best = int(np.argmax(scores))
    return best, scores[best]


def classical(noisy, psf, gt, *, border: int, rl_max: int) -> dict:
    """Every classical method's record (scores, the chosen parameter, seconds)."""
    records = {"input": C.score(gt, noisy, border=border)}
    t0 = time.perf_counter()
    rl, _ = C.richardson_lucy_oracle(
        noisy, psf, gt, counts=(5,), n_max=rl_max, border=border, repeats=1
    )
    records["rl_oracle"] = {**rl["rl_best"], "seconds": time.perf_counter() - t0}
    records["rl_5"] = rl["rl_5"]

    t0 = time.perf_counter()
    best = None
    for tv in RL_TV_WEIGHTS:
        path = richardson_lucy_path(noisy, psf, iterations=range(1, rl_max + 1), tv_weight=tv)
        counts = list(path)
        i, value = _best_over(path.values(), gt)
        if best is None or value > best[0]:
            best = (value, tv, counts[i], path[counts[i]])
    _, tv, n, image = best
    records["rl_tv_oracle"] = {
        **C.score(gt, image, border=border),
        "tv_weight": tv,
        "n": n,
        "seconds": time.perf_counter() - t0,
    }

    for name, regularizer in (("tik_id_oracle", "identity"), ("tik_lap_oracle", "laplacian")):
        t0 = time.perf_counter()
        path = regularized.tikhonov_path(noisy, psf, TIKHONOV_WEIGHTS, regularizer=regularizer)
        i, _ = _best_over(path, gt)
        records[name] = {
            **C.score(gt, path[i], border=border),
            "weight": TIKHONOV_WEIGHTS[i],
            "weight_at_grid_edge": i in (0, len(TIKHONOV_WEIGHTS) - 1),
            "seconds": time.perf_counter() - t0,
        }
    winner = max(ORACLES, key=lambda m: records[m]["psnr"])
    records["best_oracle"] = {**records[winner], "method": winner}

    noise_std = regularized.estimate_noise_std(noisy, psf)
    for name, regularizer, rule in (
        ("tik_lap_gcv", "laplacian", "gcv"),
        ("tik_id_disc", "identity", "discrepancy"),
    ):
        t0 = time.perf_counter()
        weight = regularized.choose_weight(
            noisy, psf, regularizer=regularizer, rule=rule, noise_std=noise_std
        )
        image = regularized.tikhonov(noisy, psf, weight=weight, regularizer=regularizer)
        records[name] = {
            **C.score(gt, image, border=border),
            "weight": weight,
            "seconds": time.perf_counter() - t0,
        }
    t0 = time.perf_counter()
    weight = records["tik_lap_gcv"]["weight"]
    image = regularized.nonnegative_tikhonov(noisy, psf, weight=weight)
    records["tik_nn_gcv"] = {
        **C.score(gt, image, border=border),
        "weight": weight,
        "seconds": time.perf_counter() - t0 + records["tik_lap_gcv"]["seconds"],
    }
    t0 = time.perf_counter()
    sparsity = regularized.choose_sparsity(noisy, psf, noise_std=noise_std)
    image = regularized.nonnegative_tikhonov(noisy, psf, weight=weight, sparsity=sparsity)
    records["tik_nn_l1"] = {
        **C.score(gt, image, border=border),
        "weight": weight,
        "sparsity": sparsity,
        "seconds": time.perf_counter() - t0 + records["tik_lap_gcv"]["seconds"],
    }
    t0 = time.perf_counter()
    n = regularized.choose_rl_iterations(
        noisy, psf, noise_std=noise_std, max_iterations=RL_DISC_MAX
    )
    image = richardson_lucy_path(noisy, psf, iterations=[n])[n]
    records["rl_disc"] = {
        **C.score(gt, image, border=border),
        "n": n,
        "noise_std_estimate": noise_std,
        "seconds": time.perf_counter() - t0,
    }
    return records


def fit_learned(noisy, psf, gt, method: str, args) -> dict:
    """``jdeconv.fit`` for the default config or a named preset, scored and timed."""
    # The default method (C.DEFAULT_METHOD) is Config.default(2), exactly what
    # jdeconv.fit(noisy, psf) runs (its preset plus the default's anchor, model selection
    # and clipping).
    t0 = time.perf_counter()
    record, _ = C.fit_preset(
        noisy,
        psf,
        gt,
        method,
        args.config_overrides,
        border=args.border,
        verbose=args.verbose,
        infer_repeats=0,
    )
    record["wall_s"] = time.perf_counter() - t0
    # Keep the held-out curve (a value every validation); the per-step losses are large.
    history = record.pop("history", None) or {}
    record["val_history"] = {k: history[k] for k in ("val_step", "val_loss") if k in history}
    return record


# --------------------------------------------------------------------------- summary


def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(values) if values else None


def _ok(record) -> bool:
    return record is not None and "error" not in record


def deltas(entry: dict, learned: list[str]) -> None:
    """Δ PSNR and Δ SSIM of each learned method vs the RL oracle and the best oracle."""
    methods = entry["methods"]
    for m in learned:
        rec = methods.get(m)
        if not _ok(rec):
            continue
        for ref in ("rl_oracle", "best_oracle"):
            rec[f"dpsnr_vs_{ref}"] = rec["psnr"] - methods[ref]["psnr"]
            rec[f"dssim_vs_{ref}"] = rec["ssim"] - methods[ref]["ssim"]


def summarise(entries: list[dict], methods: list[str], learned: list[str]) -> dict:
    """Means per method over ``entries``, Δs of learned methods, worst image."""
    out = {"n_images": len(entries)}
    for m in methods:
        recs = [e["methods"][m] for e in entries if _ok(e["methods"].get(m))]
        if not recs:
            continue
        s = {"n_images": len(recs)}
        for key in (*C.METRICS, "train_s", "wall_s", "seconds", "n", "weight"):
            if any(key in r for r in recs):
                s[key] = _mean(r.get(key) for r in recs)
        if m in learned:
            for key in (
                "dpsnr_vs_rl_oracle",
                "dpsnr_vs_best_oracle",
                "dssim_vs_best_oracle",
                "dssim_vs_rl_oracle",
            ):
                s[key] = _mean(r.get(key) for r in recs)
            s["wins_vs_rl_oracle"] = sum(r["dpsnr_vs_rl_oracle"] > 0 for r in recs)
            s["wins_vs_best_oracle"] = sum(r["dpsnr_vs_best_oracle"] > 0 for r in recs)
            worst = min(
                (e for e in entries if _ok(e["methods"].get(m))),
                key=lambda e: e["methods"][m]["dpsnr_vs_best_oracle"],
            )
            s["worst"] = {
                "case": worst["case"],
                "dpsnr_vs_best_oracle": worst["methods"][m]["dpsnr_vs_best_oracle"],
            }
            s.update(_targets(entries, m))
        if m == "best_oracle":
            s["winner_counts"] = {o: sum(r["method"] == o for r in recs) for o in ORACLES}
        out[m] = s
    out["gt_free_vs_oracle"] = _gt_free_gaps(entries)
    return out


def _targets(entries: list[dict], method: str) -> dict:
    """Issue 10's targets for a learned method: the worst image and the count more than
    0.3 dB behind the RL oracle, and the cells (PSF/noise/content) whose mean Δ PSNR is
    ahead of the RL oracle and of the best classical oracle."""
    es = [e for e in entries if _ok(e["methods"].get(method))]
    d_rl = {e["case"]: e["methods"][method]["dpsnr_vs_rl_oracle"] for e in es}
    worst = min(d_rl, key=d_rl.get)
    cells = group(es, lambda e: f"{e['psf']}/{e['noise']}/{e['content']}")
    mean_rl = {
        c: _mean(e["methods"][method]["dpsnr_vs_rl_oracle"] for e in g) for c, g in cells.items()
    }
    mean_best = {
        c: _mean(e["methods"][method]["dpsnr_vs_best_oracle"] for e in g) for c, g in cells.items()
    }
    return {
        "worst_vs_rl_oracle": {"case": worst, "dpsnr_vs_rl_oracle": d_rl[worst]},
        "below_rl_oracle_by_0.3": sum(d < -0.3 for d in d_rl.values()),
        "n_cells": len(cells),
        "cells_ahead_of_rl_oracle": sum(d > 0 for d in mean_rl.values()),
        "cells_ahead_of_best_oracle": sum(d > 0 for d in mean_best.values()),
        "worst_cell_vs_rl_oracle": min(mean_rl, key=mean_rl.get),
    }


def _gt_free_gaps(entries: list[dict]) -> dict:
    """How close each ground-truth-free rule gets to its own oracle."""
    pairs = {
        "tik_lap_gcv": ("tik_lap_oracle", "weight"),
        "tik_id_disc": ("tik_id_oracle", "weight"),
        "rl_disc": ("rl_oracle", "n"),
    }
    out = {}
    for rule, (oracle, param) in pairs.items():
        gaps, ratios, within = [], [], 0
        for e in entries:
            a, b = e["methods"].get(rule), e["methods"].get(oracle)
            if not (_ok(a) and _ok(b)):
                continue
            gaps.append(a["psnr"] - b["psnr"])
            ratios.append(a[param] / b[param])
            within += a["psnr"] >= b["psnr"] - 0.5
        if gaps:
            out[rule] = {
                "oracle": oracle,
                "parameter": param,
                "mean_dpsnr": statistics.fmean(gaps),
                "worst_dpsnr": min(gaps),
                "within_0.5_db": within,
                "n_images": len(gaps),
                "median_parameter_ratio": statistics.median(ratios),
                "geo_mean_parameter_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios)),
            }
    return out


def cell_name(entry: dict) -> str:
    return f"{entry['psf']}/{entry['noise']}/{entry['content']}"


def group(entries, key) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in entries:
        out.setdefault(key(e), []).append(e)
    return out


# --------------------------------------------------------------------------- Markdown


def _cell(rec, key="psnr", digits=2) -> str:
    if rec is None:
        return ""
    if "error" in rec:
        return "error"
    return C.fmt(rec.get(key), digits)


def _signed(value, digits=2) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}"


def write_markdown(path: Path, result: dict) -> None:
    cfg, entries = result["config"], result["images"]
    learned = cfg["learned"]
    border = cfg["border"]
    status = (
        "complete"
        if result["status"] == "complete"
        else f"**PARTIAL: {len(entries)} of {len(cfg['cases'])} images** (running, or cut off)"
    )
    lines = [
        f"# Quality benchmark, 2D{' (classical methods only)' if not learned else ''}",
        "",
        f"Status: {status}. Generated by `benchmarks/quality.py`; every number in the `.json`.",
        "",
        "## Protocol",
        "",
        f"- Images: {cfg['size']}² ground truths, min-max normalised to [0, 1]; phantoms of "
        "`jdeconv.simulate` and centre crops of SSI's ground-truth images "
        f"(`{cfg['data']}/ssi2d`). Noise key: `fold_in(key({cfg['seed']}), case index)`.",
        "- Degradation: `jdeconv.simulate.degrade(key, gt, psf, normalize=False, alpha, sigma, "
        "salt_pepper, bits)`: 'same' blur with **zero fill**, `x + sqrt(alpha x + sigma²) "
        "N(0,1)`, salt-and-pepper (Uniform(0,1) values), quantisation, clip to [0, 1].",
        "- **Padding**: degradation and Richardson-Lucy zero fill; Tikhonov mirror extension "
        "(`padding='reflect'`, PSF-size margin, residuals for GCV/discrepancy measured away "
        "from the border); jdeconv's forward model `padding="
        f"{'/'.join(sorted(set(cfg['learned_padding']))) or 'n/a'}`. Scores over the whole "
        f'image (PSNR, SSIM) and without a {border}-pixel border ("PSNR −{border}"). Nothing '
        "is clipped.",
        f"- Oracles (chosen by PSNR against the ground truth — no user can; upper bounds): RL "
        f"n in 1..{cfg['rl_max']}; RL-TV weights {list(RL_TV_WEIGHTS)} × n in "
        f"1..{cfg['rl_max']}; Tikhonov weights 10^-5..10^2, 8 per decade. **Best oracle**: "
        "per image the best of the four.",
        "- Ground-truth-free: Tikhonov-Laplacian with GCV; Tikhonov-identity with the "
        "discrepancy principle; RL with the discrepancy principle (n ≤ 100); noise level by "
        "`regularized.estimate_noise_std` (spectral).",
        f"- jdeconv: {', '.join(learned) or 'not run'}"
        + (
            f" — `jdeconv.fit(noisy, psf)` with `Config.default(2)` (preset "
            f"{default_preset(2)}); overrides: {C.learned_overrides_text(cfg['overrides'])}."
            if learned
            else "."
        ),
        "",
        "### PSFs",
        "",
        *C.table(
            ["name", "description"],
            [[k, v["description"]] for k, v in cfg["psfs"].items()],
            align="ll",
        ),
        "",
        "### Noise regimes (measured input PSNR over the images run)",
        "",
    ]
    rows = []
    for name, spec in cfg["noises"].items():
        ins = [e["input_psnr"] for e in entries if e["noise"] == name]
        rng = f"{min(ins):.1f}–{max(ins):.1f} (mean {statistics.fmean(ins):.1f})" if ins else "–"
        rows.append([name, spec["alpha"], spec["sigma"], spec["salt_pepper"], spec["bits"], rng])
    lines += C.table(["noise", "alpha", "sigma", "s&p", "bits", "input PSNR dB"], rows)
    lines += ["", "### Contents", ""]
    rows = []
    for kind, what in X.CONTENTS.items():
        names = [s.name for s in X.IMAGES if s.kind == kind]
        zeros = {e["image"]: e["zero_image_psnr"] for e in entries if e["content"] == kind}
        rows.append(
            [
                kind,
                ", ".join(names),
                what,
                ", ".join(f"{zeros[n]:.1f}" if n in zeros else "–" for n in names),
            ]
        )
    lines += C.table(
        ["kind", "images (phantom first, then SSI crops)", "what", "PSNR of an all-zero image"],
        rows,
        align="lllr",
    )
    lines += ["", "## Machine", "", *C.machine_lines(result["machine"])]
    resumed = cfg.get("resumed")
    if resumed and resumed["images"]:
        first = resumed["machine"]
        lines.append(
            f"- Resumed (`--resume`): {len(resumed['images'])} images come from an earlier run "
            f"with the same settings, started {first['date']} at "
            f"{(first['git_commit'] or 'unknown')[:10]} (load average at start "
            f"{', '.join(f'{v:.1f}' for v in first.get('load_average_at_start') or [])})"
        )
    lines.append("")

    methods = [*CLASSICAL, *learned]
    summary = result["summary"]
    lines += ["## Mean over all images", ""]
    headers = ["method", "PSNR", f"PSNR −{border}", "SSIM", "Δ PSNR vs best or.", "s / image"]
    rows = []
    for m in methods:
        s = summary.get(m)
        if not s:
            continue
        dbest = s.get("dpsnr_vs_best_oracle")
        if dbest is None and m != "input":
            dbest = _mean(
                e["methods"][m]["psnr"] - e["methods"]["best_oracle"]["psnr"]
                for e in entries
                if _ok(e["methods"].get(m))
            )
        secs = s.get("wall_s", s.get("seconds"))
        rows.append(
            [
                LABELS.get(m, m),
                C.fmt(s.get("psnr")),
                C.fmt(s.get("psnr_border")),
                C.fmt(s.get("ssim"), 3),
                "" if m == "input" else _signed(dbest),
                C.fmt(secs, 2),
            ]
        )
    lines += C.table(headers, rows)
    best = summary.get("best_oracle", {}).get("winner_counts")
    if best:
        lines += [
            "",
            "Best oracle per image: "
            + ", ".join(f"{LABELS[k]} {v}" for k, v in best.items())
            + ".",
        ]
    for m in learned:
        s = summary.get(m)
        if not s:
            continue
        lines += [
            "",
            f"**{LABELS.get(m, m)}**: Δ PSNR vs RL oracle {_signed(s['dpsnr_vs_rl_oracle'])} dB "
            f"(beats it on {s['wins_vs_rl_oracle']}/{s['n_images']}), vs best classical oracle "
            f"{_signed(s['dpsnr_vs_best_oracle'])} dB (beats it on "
            f"{s['wins_vs_best_oracle']}/{s['n_images']}); Δ SSIM vs best oracle "
            f"{_signed(s['dssim_vs_best_oracle'], 3)}; worst image vs best oracle "
            f"{s['worst']['case']} ({_signed(s['worst']['dpsnr_vs_best_oracle'])} dB); "
            f"mean fit wall time "
            f"{C.fmt(s.get('wall_s'), 0)} s (training {C.fmt(s.get('train_s'), 0)} s).",
            "",
            f"Issue 10's targets: ahead of the RL oracle on the mean of "
            f"{s['cells_ahead_of_rl_oracle']}/{s['n_cells']} cells (the worst cell "
            f"{s['worst_cell_vs_rl_oracle']}), ahead of the best classical oracle on the mean "
            f"of {s['cells_ahead_of_best_oracle']}/{s['n_cells']}; "
            f"{s['below_rl_oracle_by_0.3']} images more than 0.3 dB behind the RL oracle "
            f"(worst {s['worst_vs_rl_oracle']['case']}, "
            f"{_signed(s['worst_vs_rl_oracle']['dpsnr_vs_rl_oracle'])} dB); overall "
            f"{_signed(s['dpsnr_vs_best_oracle'])} dB vs the best classical oracle.",
        ]

    lines += ["", "## Ground-truth-free rules against their own oracle", ""]
    rows = []
    for rule, g in summary.get("gt_free_vs_oracle", {}).items():
        rows.append(
            [
                LABELS[rule],
                LABELS[g["oracle"]],
                _signed(g["mean_dpsnr"]),
                _signed(g["worst_dpsnr"]),
                f"{g['within_0.5_db']}/{g['n_images']}",
                f"{g['parameter']}: {g['median_parameter_ratio']:.2g}",
            ]
        )
    lines += C.table(
        [
            "rule",
            "its oracle",
            "mean Δ PSNR",
            "worst Δ PSNR",
            "within 0.5 dB",
            "median chosen/oracle",
        ],
        rows,
    )
    lines += ["", "Same, by noise regime (mean Δ PSNR to the rule's oracle):", ""]
    by_noise = group(entries, lambda e: e["noise"])
    rows = []
    for noise, es in by_noise.items():
        gaps = _gt_free_gaps(es)
        rows.append(
            [noise, *(_signed(gaps[r]["mean_dpsnr"]) if r in gaps else "–" for r in GT_FREE)]
        )
    lines += C.table(["noise", *(LABELS[r] for r in GT_FREE)], rows)

    main = ["input", *SUMMARY, *learned]
    for title, key in (
        ("cell (PSF/noise/content)", cell_name),
        ("PSF", lambda e: e["psf"]),
        ("noise", lambda e: e["noise"]),
        ("content", lambda e: e["content"]),
    ):
        lines += ["", f"## Mean PSNR per {title.split(' ')[0]}", ""]
        headers = [title, "n", *(SHORT.get(m, m) for m in main)]
        if learned:
            headers += ["Δ vs RL or.", "Δ vs best or.", "Δ SSIM vs best or."]
        headers += ["best or. is (images)"]
        rows = []
        for name, es in group(entries, key).items():
            s = summarise(es, main, learned)
            row = [name, str(len(es)), *(C.fmt(s.get(m, {}).get("psnr")) for m in main)]
            if learned:
                m = learned[0]
                row += [
                    _signed(s.get(m, {}).get("dpsnr_vs_rl_oracle")),
                    _signed(s.get(m, {}).get("dpsnr_vs_best_oracle")),
                    _signed(s.get(m, {}).get("dssim_vs_best_oracle"), 3),
                ]
            winners = [e["methods"]["best_oracle"]["method"] for e in es]
            counts = sorted(((winners.count(w), w) for w in set(winners)), reverse=True)
            row.append(", ".join(f"{SHORT[w]} {c}" for c, w in counts))
            rows.append(row)
        lines += C.table(headers, rows)

    lines += ["", "## Per image", ""]
    cols = [*CLASSICAL, *learned]
    headers = ["case", "in PSNR", *(SHORT.get(m, m) for m in cols[1:])]
    headers += ["RL n (or./disc.)", "Tik-L λ (or./GCV)"]
    if learned:
        headers += ["Δ vs best or.", "fit s"]
    rows = []
    for e in entries:
        ms = e["methods"]
        row = [e["case"], C.fmt(e["input_psnr"])]
        row += [_cell(ms.get(m)) for m in cols[1:]]
        row.append(f"{ms['rl_oracle']['n']}/{ms['rl_disc']['n']}")
        row.append(f"{ms['tik_lap_oracle']['weight']:.2g}/{ms['tik_lap_gcv']['weight']:.2g}")
        if learned:
            rec = ms.get(learned[0])
            row += [
                _signed(rec.get("dpsnr_vs_best_oracle")) if _ok(rec) else "error",
                C.fmt(rec.get("wall_s"), 0) if _ok(rec) else "",
            ]
        rows.append(row)
    lines += C.table(headers, rows)
    lines += ["", "## Per image: SSIM", ""]
    rows = [[e["case"], *(_cell(e["methods"].get(m), "ssim", 3) for m in cols)] for e in entries]
    lines += C.table(["case", *(SHORT.get(m, m) for m in cols)], rows)
    lines.append("")
    C.atomic_write_text(path, "\n".join(lines))


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder")
    p.add_argument(
        "--cells", nargs="+", help="PSF/NOISE/CONTENT patterns with wildcards, e.g. 'ssi_ring/*/*'"
    )
    p.add_argument("--images", nargs="+", help="only these images (names in _matrix.IMAGES)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"learned methods: '{C.DEFAULT_METHOD}' (jdeconv.fit's default config, the "
        f"default) and/or presets {list(C.PRESETS)}",
    )
    p.add_argument("--classical-only", action="store_true", help="no jdeconv fits")
    p.add_argument("--quick", action="store_true", help=f"{len(QUICK_CASES)} cases, one fit each")
    p.add_argument("--tiny", action="store_true", help="2 phantom cases at 64², 2 steps (tests)")
    p.add_argument("--size", type=int, default=256, help="image side")
    p.add_argument("--steps", type=int, help="training steps (default: the config's)")
    C.add_config_override_option(p)
    C.add_scoring_options(p, name=NAME, border=16, unit="px", infer_repeats=False)
    p.add_argument("--verbose", action="store_true", help="progress bars of the fits")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished images of an earlier run with this tag and the same settings",
    )
    C.add_cpu_devices_option(p)
    args = p.parse_args(argv)
    args.devices_config = C.apply_cpu_devices(args)
    methods = args.methods if args.methods is not None else [C.DEFAULT_METHOD]
    if args.classical_only or [m.lower() for m in methods] == ["none"]:
        methods = []
    args.learned = C.check_presets(methods)
    overrides = {}
    base = None
    if args.tiny:
        base = TINY["cases"]
        args.size = TINY["size"]
        args.steps = args.steps or TINY["steps"]
        args.rl_max = min(args.rl_max, TINY["rl_max"])
        args.tag = args.tag or "tiny"
        overrides.update(TINY["overrides"])
    elif args.quick:
        base = QUICK_CASES
    if args.steps is not None:
        overrides["steps"] = args.steps
    overrides.update(C.parse_overrides(args.overrides))
    args.config_overrides = overrides
    args.cases = select_cases(args.cells, args.images, base)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    stem = C.output_stem(args.out, NAME, args.tag)
    kinds = {spec.name: spec for spec in X.IMAGES}
    result = {
        "benchmark": NAME,
        "status": "running",
        "machine": C.machine_info(),
        "config": {
            "data": str(args.data),
            "size": args.size,
            "cases": ["/".join(c) for c in args.cases],
            "learned": args.learned,
            "learned_padding": [],
            "overrides": args.config_overrides,
            "seed": args.seed,
            "border": args.border,
            "rl_max": args.rl_max,
            "rl_tv_weights": list(RL_TV_WEIGHTS),
            "tikhonov_weights": list(TIKHONOV_WEIGHTS),
            "rl_disc_max": RL_DISC_MAX,
            "quick": args.quick,
            "tiny": args.tiny,
            "classical_only": not args.learned,
            "psfs": {k: {"description": v.description} for k, v in X.PSFS.items()},
            "noises": {
                k: {**v.degrade_kwargs(), "description": v.description} for k, v in X.NOISES.items()
            },
            "images": {s.name: {"kind": s.kind, "source": s.source} for s in X.IMAGES},
            "data_range": C.DATA_RANGE,
            **args.devices_config,
        },
        "images": [],
        "summary": {},
    }
    finished = _resumed(stem.with_suffix(".json"), result) if args.resume else {}
    truths: dict[str, np.ndarray] = {}
    t_run = time.perf_counter()
    position = {"/".join(c): i for i, c in enumerate(args.cases)}
    for case in args.cases:
        if "/".join(case) in finished:
            result["images"].append(finished["/".join(case)])
    for case in run_order(args.cases):
        if "/".join(case) in finished:
            continue
        psf_name, noise_name, image_name = case
        t_image = time.perf_counter()
        spec = kinds[image_name]
        if image_name not in truths:
            truths[image_name] = X.ground_truth(
                spec, data=args.data, size=args.size, seed=args.seed
            )
        gt = truths[image_name]
        psf = X.load_psf(psf_name, args.data)
        noise = X.NOISES[noise_name]
        noisy = degrade(
            noise_key(args.seed, case), gt, psf, normalize=False, **noise.degrade_kwargs()
        )
        entry = {
            "case": "/".join(case),
            "psf": psf_name,
            "noise": noise_name,
            "content": spec.kind,
            "image": image_name,
            "shape": list(gt.shape),
            "input_psnr": psnr(gt, noisy, data_range=C.DATA_RANGE),
            # What an all-zero output scores: high for sparse content, where PSNR mostly
            # measures the background.
            "zero_image_psnr": psnr(gt, np.zeros_like(gt), data_range=C.DATA_RANGE),
            "methods": classical(noisy, psf, gt, border=args.border, rl_max=args.rl_max),
        }
        entry["classical_s"] = time.perf_counter() - t_image
        for m in args.learned:
            record = fit_learned(noisy, psf, gt, m, args)
            entry["methods"][m] = record
            if "config" in record:
                result["config"]["learned_padding"].append(record["config"]["padding"])
        deltas(entry, args.learned)
        entry["seconds"] = time.perf_counter() - t_image
        result["images"].append(entry)
        result["images"].sort(key=lambda e: position[e["case"]])
        done = len(result["images"])
        result["summary"] = summarise(result["images"], [*CLASSICAL, *args.learned], args.learned)
        result["status"] = "complete" if done == len(args.cases) else "partial"
        result["elapsed_s"] = time.perf_counter() - t_run
        _print(entry, args.learned, done, len(args.cases))
        C.write_json(stem.with_suffix(".json"), result)
        write_markdown(stem.with_suffix(".md"), result)
    # A resumed run whose last cases were already finished still needs its final write.
    result["summary"] = summarise(result["images"], [*CLASSICAL, *args.learned], args.learned)
    result["status"] = "complete"
    result["elapsed_s"] = time.perf_counter() - t_run
    C.write_json(stem.with_suffix(".json"), result)
    write_markdown(stem.with_suffix(".md"), result)
    print(f"wrote {stem}.md/.json in {time.perf_counter() - t_run:.0f} s", flush=True)
    return result


# Settings that must match for --resume to reuse an earlier run's images.
_RESUME_KEYS = (
    "cpu_devices",  # absent (None) on one device: timings from a split CPU are not mixed in
    "size",
    "learned",
    "overrides",
    "seed",
    "border",
    "rl_max",
    "rl_tv_weights",
    "tikhonov_weights",
    "rl_disc_max",
    "noises",
    "psfs",
    "images",
)


def _resumed(path: Path, result: dict) -> dict[str, dict]:
    """The finished images of an earlier run at ``path``, by case, if its settings match."""
    cfg = result["config"]
    earlier = C.earlier_run(path, cfg, _RESUME_KEYS)
    if earlier is None:
        return {}
    wanted = set(cfg["cases"])
    kept = {e["case"]: e for e in earlier["images"] if e["case"] in wanted}
    cfg["learned_padding"] = list(earlier["config"].get("learned_padding", []))
    cfg["resumed"] = {
        "images": sorted(kept),
        "machine": earlier["machine"],
        "elapsed_s": earlier.get("elapsed_s"),
    }
    print(f"--resume: keeping {len(kept)} finished images of {path.name}", flush=True)
    return kept


def _print(entry: dict, learned: list[str], done: int, total: int) -> None:
    ms = entry["methods"]
    parts = [f"in {entry['input_psnr']:.2f}"]
    for m in (*SUMMARY, *learned):
        rec = ms[m]
        parts.append(f"{SHORT.get(m, m)} " + ("error" if "error" in rec else f"{rec['psnr']:.2f}"))
    print(
        f"[{done}/{total}] {entry['case']} ({entry['seconds']:.0f} s): " + ", ".join(parts),
        flush=True,
    )


if __name__ == "__main__":
    main()
