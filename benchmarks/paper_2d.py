"""The papers' 2D benchmark: SSI's 22 images, degraded as in DESIGN.md §3, every method scored.

Protocol (Kobayashi et al. 2020, arXiv 2006.06156; Papkov et al. 2023, arXiv 2308.09426):
each ground-truth image of ``<data>/ssi2d/*.png`` is min-max normalised to [0, 1]
(float64, then float32), optionally centre-cropped (``--crop``, before degradation; the
crop is min-max normalised again, as the papers normalise the image they degrade), and
degraded with ``jdeconv.simulate.degrade``: blur by ``<data>/psf/ssi_2d_17.npy``
('same', zero fill), ``x + sqrt(0.001 x + 0.1²) N(0, 1)``, 1 % salt-and-pepper, 10 bits,
clip. The noise key of image ``i`` (its index among the 22, sorted by name) is
``fold_in(key(seed), i)``, so any subset sees the same noise as a full run. Then:

* ``input`` — the degraded image itself;
* ``RL n=2, 5, 10, 20`` — Richardson-Lucy (``jdeconv.classic``) with the degradation's
  zero-padded blur;
* ``RL oracle`` — RL at the count in 1..``--rl-max`` with the best PSNR against the ground
  truth: an oracle no user has, an upper bound for RL;
* ``noise2self``, ``noise2same``, ``noise2same_d`` — ``jdeconv.fit(noisy, psf,
  Config.preset(name, **overrides))`` (self-supervised, no ground truth), overrides from
  ``--steps`` and ``--set key=value``; ``default`` (``--methods default``) —
  ``Config.default(2)``, what ``jdeconv.fit(noisy, psf)`` runs on the device.

Scores against the ground truth: PSNR and SSIM with data_range=1, MI and SMI (256 bins),
RMSE, and the PSNR without a ``--border``-pixel frame (the degradation pads with zeros,
the learned forward model with ``cfg.padding``, so borders are handled differently);
nothing is clipped. Times: training seconds (the fit's loop, compilation excluded and
reported separately) and inference milliseconds (a warm, whole-image run; RL: the
iterations from the start).

Usage (from the repository root)::

    .venv/bin/python benchmarks/paper_2d.py --quick --methods noise2self   # ~1 min, smoke
    .venv/bin/python benchmarks/paper_2d.py --methods none --tag rl        # RL only, ~3 min
    .venv/bin/python benchmarks/paper_2d.py --crop 256 --steps 200 --methods noise2self \\
        --tag crop256-noise2self                                           # ~1 h, 2-core CPU
    .venv/bin/python benchmarks/paper_2d.py --steps 3000 --tag full     # the papers' scale (GPU)

On a 2-core CPU shared with other jobs, a step at the preset's batch of 16 64² patches took
~0.6 s (noise2self) and ~1.0-1.2 s (noise2same, noise2same_d); each fit adds ~15-25 s of
compilation and inference, and the first in a process ~10 s more.

Writes ``paper_2d[-tag].md``, ``.json`` (every number, the configs, the validation
histories, machine and library versions) and ``.png`` (crops of three images) to
``--out`` (default ``benchmarks/results``), rewritten after every image, so a run that is
cut off leaves its finished images. ``--quick`` defaults the tag to ``quick``.

Expected result: on whole images, means of input 17.8 dB, RL n=2 21.9, n=5 22.0 and the RL
oracle 22.3 dB (n ~4), as measured here with seed 0 (the papers: 17.8 / 22.0 / 22.2).
For the learned presets, DESIGN.md §4's prototype found them within about ±1 dB of the RL
oracle on 256² crops after a few hundred CPU steps.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from pathlib import Path

import _common as C  # first: puts this checkout on sys.path before jdeconv
import jax
import numpy as np
import skimage.color
import skimage.io

from jdeconv.simulate import degrade

NAME = "paper_2d"
PSF_FILE = "psf/ssi_2d_17.npy"
DEGRADATION = {
    "normalize": "min-max to [0, 1] (float64 -> float32); with --crop, again after cropping",
    "blur": "ssi_2d_17.npy, 'same', zero fill",
    "alpha": 0.001,
    "sigma": 0.1,
    "salt_pepper": 0.01,
    "bits": 10,
    "clip": True,
}
QUICK = {
    "images": ["drosophila", "tubules"],
    "crop": 64,
    "steps": 4,
    "rl_max": 10,
    "overrides": {"batch_size": 2, "patch_size": 32, "validate_every": 2},
}
PANEL_PREFERENCE = ("drosophila", "characters", "tubules")
PANEL_SIZE = 192  # side of the displayed centre crop

# The papers' numbers, for reference beside ours (never mixed into our tables' numbers).
PAPERS_MD = """\
## The papers' numbers (reference only — from the publications, not from our runs)

| source | data | method | PSNR | SSIM | SMI | train s | infer ms |
|---|---|---|--:|--:|--:|--:|--:|
| Papkov 2023, tab. 2 | Drosophila 1352×532 | input | 17.8 | 0.18 | 0.18 | | |
| Papkov 2023, tab. 2 | Drosophila 1352×532 | RL n=2 | 22.0 | 0.47 | 0.25 | | |
| Papkov 2023, tab. 2 | Drosophila 1352×532 | RL n=5 | 22.2 | 0.44 | 0.25 | | 46 |
| Papkov 2023, tab. 2 | Drosophila 1352×532 | SSI (noise2self) | 22.0 | 0.46 | 0.26 | 442 | 26 |
| Papkov 2023, tab. 2 | Drosophila 1352×532 | noise2same_d | 22.8 | 0.46 | 0.30 | 856 | 53 |
| Kobayashi et al. 2020 (SSI) | 22-image average | input | 17.8 | | | | |
| Kobayashi et al. 2020 (SSI) | 22-image average | RL n=5 | 22.2 | | | | |
| Kobayashi et al. 2020 (SSI) | 22-image average | SSI (noise2self) | 22.5 | | | | |

The "Drosophila" label is DESIGN.md §4's. On our runs of this protocol (whole images,
seed 0), the 22-image means of input and RL match these values closely (input 17.8,
RL n=2 21.9, n=5 22.0 dB; SSIM 0.16 / 0.46 / 0.43) while Drosophila alone scores several
dB higher (19.5 / 26.6 / 26.2 dB), so that table is probably a 22-image average: compare
it with our mean row. Their setting differs from a CPU run here: whole images, 3000 steps,
a 5.75 M-parameter U-Net (Papkov) or 0.55 M (SSI) on a GPU; SSI's SSIM used data_range=2
(inflated). Crops are not the papers' protocol. Compare protocols, not just numbers.
"""


# --------------------------------------------------------------------------- data


def list_images(data: Path) -> list[Path]:
    files = sorted((data / "ssi2d").glob("*.png"))
    if not files:
        raise SystemExit(f"no images found under {data / 'ssi2d'} (set --data)")
    return files


def select_images(files: list[Path], wanted: list[str] | None) -> list[tuple[int, Path]]:
    """``(index among all, path)`` for names (prefix of the file stem) or indices."""
    if not wanted:
        return list(enumerate(files))
    tokens = [t for item in wanted for t in item.split(",") if t.strip()]
    chosen = []
    for token in tokens:
        token = token.strip()
        if token.lstrip("-").isdigit():
            i = int(token)
            if not -len(files) <= i < len(files):
                raise SystemExit(f"--images: index {i} out of range 0..{len(files) - 1}")
            i %= len(files)
        else:
            hits = _match(files, token.lower())
            if len(hits) != 1:
                names = [f.stem for f in files]
                raise SystemExit(
                    f"--images: {token!r} matches {len(hits)} images; names are {names}"
                )
            i = hits[0]
        if i not in [c[0] for c in chosen]:
            chosen.append((i, files[i]))
    return chosen


def _match(files: list[Path], token: str) -> list[int]:
    """Exact stem, then exact name without the size suffix ("nuclei"), then prefix."""
    stems = [f.stem.lower() for f in files]
    bases = [re.sub(r"\d+x\d+$", "", s) for s in stems]
    for candidates in (stems, bases):
        hits = [i for i, c in enumerate(candidates) if c == token]
        if hits:
            return hits
    return [i for i, s in enumerate(stems) if s.startswith(token)]


def centre_crop(arr: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return arr
    starts = [(n - min(n, size)) // 2 for n in arr.shape]
    return arr[tuple(slice(s, s + min(n, size)) for s, n in zip(starts, arr.shape, strict=True))]


def _minmax(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    lo, hi = img.min(), img.max()
    if hi <= lo:
        raise SystemExit("a constant image (or crop) cannot be min-max normalised")
    return ((img - lo) / (hi - lo)).astype(np.float32)


def load_ground_truth(path: Path, crop: int | None) -> tuple[np.ndarray, tuple[int, ...]]:
    """The [0, 1] ground truth: min-max normalised, centre-cropped, normalised again.

    The second normalisation is step 1 of the papers' degradation applied to the image
    actually degraded (a crop): without it a dim crop (Drosophila's centre spans 0.2-0.5
    of the whole image's range) would be scored against data_range=1 it does not have.
    """
    img = skimage.io.imread(path)
    if img.ndim == 3:  # not the case for SSI's images; tolerate RGB(A) copies
        img = skimage.color.rgb2gray(img[..., :3])
    full = _minmax(img)
    if not crop:
        return full, full.shape
    return _minmax(centre_crop(full, crop)), full.shape


# --------------------------------------------------------------------------- summary


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def summarise(images: list[dict], methods: list[str]) -> dict:
    """Mean of every metric over the images a method has, and its wins over the RL oracle."""
    out = {}
    for m in methods:
        pairs = [
            (img["methods"][m], img["methods"]["rl_best"])
            for img in images
            if m in img["methods"] and "error" not in img["methods"][m]
        ]
        recs = [p[0] for p in pairs]
        entry = {"n_images": len(recs)}
        for key in (*C.METRICS, "train_s", "compile_s", "infer_ms", "steps", "best_step", "n"):
            if any(key in r for r in recs):
                entry[key] = _mean(r.get(key) for r in recs)
        if m != "rl_best":
            entry["delta_psnr_vs_rl_best"] = _mean(r["psnr"] - rl["psnr"] for r, rl in pairs)
            entry["wins_vs_rl_best"] = sum(r["psnr"] > rl["psnr"] for r, rl in pairs)
        out[m] = entry
    return out


# --------------------------------------------------------------------------- report


def method_names(presets: list[str]) -> list[str]:
    return ["input", *(f"rl_{n}" for n in C.RL_COUNTS), "rl_best", *presets]


def write_markdown(path: Path, result: dict) -> None:
    cfg, images, summary = result["config"], result["images"], result["summary"]
    methods = method_names(cfg["methods"])
    border = cfg["border"]
    done, total = len(images), len(cfg["images"])
    status = (
        "complete"
        if result["status"] == "complete"
        else f"**PARTIAL: {done} of {total} images** (still running, or cut off)"
    )
    crop = f"{cfg['crop']}² centre crops" if cfg["crop"] else "whole images"
    padding = sorted({r["config"]["padding"] for img in images for r in _learned(img, cfg)})
    lines = [
        "# 2D benchmark: SSI's 22 images (Kobayashi et al. 2020; Papkov et al. 2023)",
        "",
        f"Status: {status}. Generated by `benchmarks/paper_2d.py`; raw numbers in the `.json`.",
        "",
        "## Protocol",
        "",
        f"- Images: {total} of `{cfg['data']}/ssi2d` ({crop}); ground truth min-max "
        "normalised to [0, 1] (a crop is normalised again after cropping).",
        "- Degradation (DESIGN.md §3): blur by `psf/ssi_2d_17.npy`, **'same' with zero "
        "fill**; `x + sqrt(0.001 x + 0.1²) N(0,1)`; 1 % salt-and-pepper; 10 bits; clip. Noise "
        f"key of image i: `fold_in(key({cfg['seed']}), i)`.",
        "- **Padding**: the degradation and Richardson-Lucy use zero fill; the learned "
        f"methods' forward model uses `padding={'/'.join(padding) or 'n/a'}` "
        f"(Config). Hence the column PSNR without a {border}-pixel border.",
        f"- RL: FFT blur, zero fill, constant start; n = {', '.join(map(str, C.RL_COUNTS))} and "
        f"the **RL oracle: the n in 1..{cfg['rl_max']} with the best PSNR against the ground "
        "truth** — chosen with information no user has, so an upper bound for RL.",
        C.learned_methods_text(cfg["methods"], cfg["overrides"]),
        "- Scores: PSNR and SSIM with data_range=1 (Gaussian-window SSIM), MI and SMI "
        "(256-bin normalised mutual information, of the images / of their DCT-II spectra), "
        "RMSE; outputs are not clipped. Train s: the training loop after compilation "
        "(compile time in the JSON); infer ms: one warm whole-image run (learned: with the "
        "config's test-time augmentation; RL: n iterations).",
        "",
        "## Machine",
        "",
        *C.machine_lines(result["machine"]),
        "",
        "## Mean over images",
        "",
    ]
    headers = [
        "method",
        "PSNR",
        f"PSNR (no {border}-px border)",
        "SSIM",
        "MI",
        "SMI",
        "RMSE",
        "train s",
        "infer ms",
        "Δ PSNR vs RL oracle",
        "images beating RL oracle",
        "images",
    ]
    rows = []
    for m in methods:
        s = summary.get(m, {})
        if not s.get("n_images"):
            continue
        label = C.method_label(m)
        if m == "rl_best" and s.get("n") is not None:
            label = f"RL oracle (mean n={s['n']:.1f})"
        rows.append(
            [
                label,
                C.fmt(s.get("psnr")),
                C.fmt(s.get("psnr_border")),
                C.fmt(s.get("ssim"), 3),
                C.fmt(s.get("mi"), 3),
                C.fmt(s.get("smi"), 3),
                C.fmt(s.get("rmse"), 4),
                C.fmt(s.get("train_s"), 0) if "train_s" in s else "",
                C.fmt_ms(s.get("infer_ms")),
                "" if m == "rl_best" else C.fmt(s.get("delta_psnr_vs_rl_best")),
                "" if m == "rl_best" else f"{s.get('wins_vs_rl_best', 0)} / {s['n_images']}",
                str(s["n_images"]),
            ]
        )
    lines += C.table(headers, rows)
    lines += [
        "",
        'A method "beats the RL oracle" on an image when its PSNR is higher there.',
        "",
    ]
    for metric, title, digits in (
        ("psnr", "PSNR (dB)", 2),
        ("psnr_border", f"PSNR without a {border}-pixel border (dB)", 2),
        ("ssim", "SSIM", 3),
    ):
        lines += [f"## Per image: {title}", ""]
        headers = ["image", "shape", *(_short(m) for m in methods), "RL oracle n"]
        rows = []
        for img in images:
            row = [img["name"], "×".join(map(str, img["shape"]))]
            for m in methods:
                rec = img["methods"].get(m)
                row.append(_cell(rec, metric, digits))
            row.append(str(img["methods"]["rl_best"]["n"]))
            rows.append(row)
        mean_row = ["**mean**", ""]
        for m in methods:
            mean_row.append(C.fmt(summary.get(m, {}).get(metric), digits))
        mean_row.append(C.fmt(summary.get("rl_best", {}).get("n"), 1))
        rows.append(mean_row)
        lines += C.table(headers, rows)
        lines.append("")
    lines += ["## Per image: every score and time", ""]
    headers = ["image", "method", "PSNR", "PSNR (border)", "SSIM", "MI", "SMI", "RMSE"]
    headers += ["train s", "compile s", "infer ms", "steps (best)"]
    rows = []
    for img in images:
        for m in methods:
            rec = img["methods"].get(m)
            if rec is None:
                continue
            if "error" in rec:
                rows.append([img["name"], m, f"error: {rec['error'][:80]}", *[""] * 9])
                continue
            steps = f"{rec['steps']} ({rec['best_step']})" if "steps" in rec else ""
            rows.append(
                [
                    img["name"],
                    C.method_label(m, rec),
                    C.fmt(rec["psnr"]),
                    C.fmt(rec["psnr_border"]),
                    C.fmt(rec["ssim"], 3),
                    C.fmt(rec["mi"], 3),
                    C.fmt(rec["smi"], 3),
                    C.fmt(rec["rmse"], 4),
                    C.fmt(rec.get("train_s"), 1) if "train_s" in rec else "",
                    C.fmt(rec.get("compile_s"), 1) if "compile_s" in rec else "",
                    C.fmt_ms(rec.get("infer_ms")),
                    steps,
                ]
            )
    lines += C.table(headers, rows, align="ll" + "r" * 10)
    lines += ["", PAPERS_MD]
    C.atomic_write_text(path, "\n".join(lines))


def _learned(img: dict, cfg: dict):
    for m in cfg["methods"]:
        rec = img["methods"].get(m)
        if rec and "config" in rec:
            yield rec


def _short(m: str) -> str:
    if m == "rl_best":
        return "RL oracle"
    return C.method_label(m)


def _cell(rec: dict | None, metric: str, digits: int) -> str:
    if rec is None:
        return ""
    if "error" in rec:
        return "error"
    return C.fmt(rec.get(metric), digits)


def write_panel(path: Path, panels: list[dict], presets: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["ground truth", "input", "rl_best", *presets]
    fig, axes = plt.subplots(
        len(panels), len(columns), figsize=(2.3 * len(columns), 2.5 * len(panels)), squeeze=False
    )
    for r, panel in enumerate(panels):
        for c, key in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = panel["crops"].get(key)
            if image is None:
                ax.set_title(f"{C.method_label(key)}\n(not run)", fontsize=8)
                continue
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            title = key if key == "ground truth" else C.method_label(key, panel["records"][key])
            if key != "ground truth":
                title += f"\n{panel['records'][key]['psnr']:.2f} dB"
            ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(panel["name"], fontsize=8)
    side = max(max(p["crops"]["ground truth"].shape) for p in panels)
    fig.suptitle(
        f"Centre crops (up to {side}²), display range [0, 1]; PSNR over the whole scored "
        "image. RL oracle: n chosen with the ground truth.",
        fontsize=8,
    )
    C.save_figure(fig, path)
    plt.close(fig)


def panel_choice(selected: list[tuple[int, Path]]) -> set[int]:
    """Indices of up to three images to draw: the preferred ones if run, else the first."""
    chosen = []
    for prefix in PANEL_PREFERENCE:
        chosen += [i for i, p in selected if p.stem.startswith(prefix)][:1]
    for i, _ in selected:
        if len(chosen) >= 3:
            break
        if i not in chosen:
            chosen.append(i)
    return set(chosen[:3])


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder")
    p.add_argument(
        "--images",
        nargs="+",
        help="subset by name (or unique prefix, e.g. drosophila tubules) or index 0..21 "
        "(sorted by name); spaces or commas",
    )
    p.add_argument("--crop", type=int, help="centre crop side, applied before degradation")
    C.add_methods_option(p)
    p.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    C.add_config_override_option(p)
    C.add_scoring_options(p, name="paper_2d", border=16, unit="px", infer_repeats=True)
    p.add_argument("--quick", action="store_true", help="2 images, 64² crops, 4 steps (tests)")
    p.add_argument("--verbose", action="store_true", help="progress bars of the fits")
    args = p.parse_args(argv)
    args.methods = C.resolve_methods(args.methods)
    overrides = {}
    if args.quick:
        args.images = args.images or QUICK["images"]
        args.crop = args.crop or QUICK["crop"]
        args.steps = args.steps or QUICK["steps"]
        args.rl_max = min(args.rl_max, QUICK["rl_max"])
        args.tag = args.tag or "quick"
        overrides.update(QUICK["overrides"])
    overrides["seed"] = args.seed
    if args.steps is not None:
        overrides["steps"] = args.steps
    overrides.update(C.parse_overrides(args.overrides))
    args.config_overrides = overrides
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    files = list_images(args.data)
    selected = select_images(files, args.images)
    psf = np.load(args.data / PSF_FILE).astype(np.float32)
    stem = C.output_stem(args.out, NAME, args.tag)
    presets = args.methods
    result = {
        "benchmark": NAME,
        "status": "running",
        "machine": C.machine_info(),
        "config": {
            "data": str(args.data),
            "psf": PSF_FILE,
            "images": [p.stem for _, p in selected],
            "crop": args.crop,
            "methods": presets,
            "overrides": args.config_overrides,
            "seed": args.seed,
            "border": args.border,
            "rl_max": args.rl_max,
            "rl_counts": list(C.RL_COUNTS),
            "infer_repeats": args.infer_repeats,
            "quick": args.quick,
            "degradation": DEGRADATION,
            "data_range": C.DATA_RANGE,
        },
        "images": [],
        "summary": {},
    }
    panel_ids = panel_choice(selected)
    panels = []
    base_key = jax.random.key(args.seed)
    t_run = time.perf_counter()
    for done, (index, path) in enumerate(selected, 1):
        t_image = time.perf_counter()
        gt, full_shape = load_ground_truth(path, args.crop)
        noisy = degrade(jax.random.fold_in(base_key, index), gt, psf, normalize=False)
        entry = {
            "name": path.stem,
            "index": index,
            "file": path.name,
            "full_shape": list(full_shape),
            "shape": list(gt.shape),
            "methods": {"input": C.score(gt, noisy, border=args.border)},
        }
        outputs = {"input": noisy}
        rl_records, rl_images = C.richardson_lucy_oracle(
            noisy, psf, gt, n_max=args.rl_max, border=args.border
        )
        entry["rl_psnr_curve"] = rl_records.pop("rl_psnr_curve")
        entry["methods"].update(rl_records)
        outputs["rl_best"] = rl_images["rl_best"]
        for preset in presets:
            record, deconvolved = C.fit_preset(noisy, psf, gt, preset, **C.fit_options(args))
            entry["methods"][preset] = record
            if deconvolved is not None:
                outputs[preset] = deconvolved
        entry["seconds"] = time.perf_counter() - t_image
        result["images"].append(entry)
        result["summary"] = summarise(result["images"], method_names(presets))
        result["status"] = "complete" if done == len(selected) else "partial"
        result["elapsed_s"] = time.perf_counter() - t_run
        _print_image(entry, presets, done, len(selected))
        C.write_json(stem.with_suffix(".json"), result)
        write_markdown(stem.with_suffix(".md"), result)
        if index in panel_ids:
            panels.append(
                {
                    "name": path.stem,
                    "crops": {
                        "ground truth": centre_crop(gt, PANEL_SIZE),
                        **{k: centre_crop(v, PANEL_SIZE) for k, v in outputs.items()},
                    },
                    "records": entry["methods"],
                }
            )
            write_panel(stem.with_suffix(".png"), panels, presets)
    print(f"wrote {stem}.md/.json/.png in {time.perf_counter() - t_run:.0f} s", flush=True)
    return result


def _print_image(entry: dict, presets: list[str], done: int, total: int) -> None:
    parts = []
    for m in ["input", "rl_best", *presets]:
        rec = entry["methods"][m]
        parts.append(
            f"{C.method_label(m, rec)} " + ("error" if "error" in rec else f"{rec['psnr']:.2f}")
        )
    print(
        f"[{done}/{total}] {entry['name']} {tuple(entry['shape'])} ({entry['seconds']:.0f} s): "
        + ", ".join(parts),
        flush=True,
    )


if __name__ == "__main__":
    main()
