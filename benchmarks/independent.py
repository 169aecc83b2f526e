"""Independent check: every method on scikit-image's sample images, which nothing was tuned on.

The development matrix (``quality.py``: jdeconv phantoms and SSI crops, five PSFs, four
noise regimes) is where jdeconv's defaults were chosen; a default that wins only there
is a defect. This script takes images, PSFs and noise regimes that appear nowhere in
that matrix, fixed before any result was seen:

* images: 12 of scikit-image's bundled samples (no download), grey, 256² centre crops,
  min-max normalised to [0, 1]: natural scenes (camera, moon, coins, clock, brick),
  microscopy and astronomy (cell, immunohistochemistry, retina vessels inverted to be
  bright, Hubble deep field stars), shapes (horse, binary blobs) and inverted text;
* PSFs: Gaussians of σ 1.5 and 3 px, and a Gibson-Lanni widefield PSF of a 60×/1.2 water
  objective, 0.6 µm emission, 0.108 µm pixels, 0.5 µm out of focus;
* noise: Poisson-Gaussian at ``moderate`` (α 0.004, σ 0.04, 0.2 % salt-and-pepper,
  12 bits, clipped to [0, 1]) and ``low_light`` (α 0.03, σ 0.08, 8 bits, clipped) levels,
  and ``offset``: the image scaled to 0.2 + 0.75 x (a camera pedestal), α 0.004, σ 0.03,
  **not clipped and not quantised**, so the background's noise goes below the pedestal,
  as in raw camera data, and blurred with a mirror extension (a pedestal blurred with
  zero fill would fall to 0 at the border; scored against the scaled image). The other
  two blur with zero fill, as the papers and quality.py.

Methods are ``quality.py``'s (``quality.classical``: RL, RL-TV and Tikhonov oracles, the
best of them, and the ground-truth-free rules, including ``tik_nn_l1``, the default's
anchor); ``--fit`` adds ``jdeconv.fit(noisy, psf)`` (the default config) on the first N
cases of the selection (each several minutes on a CPU).

Usage (from the repository root)::

    python benchmarks/independent.py --tag 2d               # classical, 108 images, minutes
    python benchmarks/independent.py --fit 6 --tag 2d-fit   # plus 6 default fits

Writes ``independent-<tag>.md`` and ``.json`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import skimage.color
import skimage.data
import skimage.transform

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import quality as Q  # noqa: E402

from jdeconv.metrics import psnr  # noqa: E402
from jdeconv.psf import gaussian_psf, gibson_lanni_psf  # noqa: E402
from jdeconv.simulate import degrade  # noqa: E402

NAME = "independent"
SIZE = 256


def _grey(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3])
    return image.astype(np.float64)


def _retina() -> np.ndarray:
    green = np.asarray(skimage.data.retina())[..., 1].astype(np.float64)
    green = skimage.transform.rescale(green, 0.35, anti_aliasing=True)
    return green.max() - green  # vessels bright on a dark background


def _text() -> np.ndarray:
    text = _grey(skimage.data.text())
    return np.pad(text.max() - text, ((42, 42), (0, 0)), mode="constant")


# name: (loader, what it stands for)
IMAGES = {
    "camera": (lambda: _grey(skimage.data.camera()), "natural scene"),
    "moon": (lambda: _grey(skimage.data.moon()), "smooth texture"),
    "coins": (lambda: _grey(skimage.data.coins()), "objects with edges"),
    "clock": (lambda: _grey(skimage.data.clock()), "edges, smooth shading"),
    "brick": (lambda: _grey(skimage.data.brick()), "fine texture"),
    "cell": (lambda: _grey(skimage.data.cell()), "phase-contrast cell"),
    "ihc": (lambda: _grey(skimage.data.immunohistochemistry()), "stained tissue"),
    "retina": (_retina, "vessels (filaments), inverted"),
    "hubble": (lambda: _grey(skimage.data.hubble_deep_field()), "sparse bright sources"),
    "horse": (lambda: _grey(skimage.data.horse()).max() - _grey(skimage.data.horse()), "shape"),
    "blobs": (lambda: _grey(skimage.data.binary_blobs(512, rng=0)), "binary blobs"),
    "text": (_text, "text strokes, inverted"),
}


def _widefield_defocus() -> np.ndarray:
    return gibson_lanni_psf(
        (25, 25),
        numerical_aperture=1.2,
        wavelength=0.6,
        magnification=60.0,
        pixel_size_xy=0.108,
        defocus=0.5,
    )


PSFS = {
    "gauss1.5": (lambda: gaussian_psf((17, 17), 1.5), "Gaussian, σ 1.5 px, 17²"),
    "gauss3": (lambda: gaussian_psf((25, 25), 3.0), "Gaussian, σ 3 px, 25²"),
    "wf_na12_dz0.5": (
        _widefield_defocus,
        "widefield Gibson-Lanni 60×/1.2 water, λ 0.6 µm, 0.108 µm pixels, 0.5 µm defocus, 25²",
    ),
}

# name: (degrade keyword arguments, pedestal, gain)
NOISES = {
    "moderate": (dict(alpha=0.004, sigma=0.04, salt_pepper=0.002, bits=12), 0.0, 1.0),
    "low_light": (dict(alpha=0.03, sigma=0.08, salt_pepper=0.0, bits=8), 0.0, 1.0),
    "offset": (
        dict(alpha=0.004, sigma=0.03, salt_pepper=0.0, bits=None, clip=False, padding="reflect"),
        0.2,
        0.75,
    ),
}

SUMMARY = ("rl_oracle", "rl_tv_oracle", "tik_lap_oracle", "best_oracle", *Q.GT_FREE)
GT_FREE_SHOWN = ("tik_lap_gcv", "tik_nn_gcv", "tik_nn_l1", "rl_disc")


def ground_truth(name: str, size: int) -> np.ndarray:
    """A ``size``² centre crop of the sample, min-max normalised to [0, 1] (float32)."""
    image = IMAGES[name][0]()
    image = (image - image.min()) / (image.max() - image.min())
    if min(image.shape) < size:
        raise SystemExit(f"sample {name!r} is smaller than {size}²")
    top, left = ((n - size) // 2 for n in image.shape)
    crop = image[top : top + size, left : left + size]
    return ((crop - crop.min()) / (crop.max() - crop.min())).astype(np.float32)


def select(psfs, noises, images, *, only_psfs, only_noises, only_images) -> list[tuple]:
    """Every (psf, noise, image) of the three name lists, PSF outermost, kept by the filters."""
    out = [
        (p, n, i)
        for p in psfs
        for n in noises
        for i in images
        if (not only_psfs or p in only_psfs)
        and (not only_noises or n in only_noises)
        and (not only_images or i in only_images)
    ]
    if not out:
        raise SystemExit("no case matches the --psfs/--noises/image filters")
    return out


def run_case(case, args) -> dict:
    psf_name, noise_name, image_name = case
    kwargs, pedestal, gain = NOISES[noise_name]
    gt = pedestal + gain * ground_truth(image_name, args.size)
    psf = PSFS[psf_name][0]().astype(np.float32)
    index = (list(PSFS).index(psf_name) * 100 + list(NOISES).index(noise_name) * 20) + list(
        IMAGES
    ).index(image_name)
    key = jax.random.fold_in(jax.random.key(args.seed), index)
    noisy = np.asarray(degrade(key, gt, psf, normalize=False, **kwargs), np.float32)
    t0 = time.perf_counter()
    entry = classical_entry(case, noisy, psf, gt, args)
    fit_default(entry, case, noisy, psf, gt, args)
    entry["seconds"] = time.perf_counter() - t0
    return entry


def classical_entry(case, noisy, psf, gt, args) -> dict:
    """One case's record: names, input PSNR, and ``quality.classical``'s methods."""
    psf_name, noise_name, image_name = case
    return {
        "case": "/".join(case),
        "psf": psf_name,
        "noise": noise_name,
        "image": image_name,
        "input_psnr": psnr(gt, noisy, data_range=C.DATA_RANGE),
        "methods": Q.classical(noisy, psf, gt, border=args.border, rl_max=args.rl_max),
    }


def add_fit_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fit", type=int, default=0, help="also run jdeconv.fit's default on N of the cases"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="Config override of the fits (repeatable), e.g. --set steps=100",
    )
    p.add_argument("--verbose", action="store_true", help="progress bars of the fits")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished cases of an earlier run with this tag and the same settings",
    )
    C.add_cpu_devices_option(p)


def parse_fit_options(args) -> None:
    """From :func:`add_fit_option`'s options: ``args.fit_cases``, the ``--fit`` cases spread
    evenly over the selection, first and last included (4 of quality3d's 12 cover both
    PSFs, both noises and the three phantoms), and ``args.config_overrides`` (``--set``)."""
    args.devices_config = C.apply_cpu_devices(args)
    n = min(args.fit, len(args.cases))
    picks = np.linspace(0, len(args.cases) - 1, n).round().astype(int) if n else []
    args.fit_cases = {args.cases[i] for i in picks}
    args.config_overrides = C.parse_overrides(args.set)


def fit_default(entry: dict, case, noisy, psf, gt, args) -> None:
    """Add ``jdeconv.fit(noisy, psf)``'s record (the default config) to a ``--fit`` case."""
    if case in args.fit_cases:
        entry["methods"]["default"] = Q.fit_learned(noisy, psf, gt, C.DEFAULT_METHOD, args)
        Q.deltas(entry, ["default"])


def compare(entries: list[dict], method: str) -> dict | None:
    """Mean PSNR and the gaps of ``method`` to the RL oracle and the best classical oracle."""
    es = [e for e in entries if Q._ok(e["methods"].get(method))]
    if not es:
        return None
    d_rl = [e["methods"][method]["psnr"] - e["methods"]["rl_oracle"]["psnr"] for e in es]
    d_best = [e["methods"][method]["psnr"] - e["methods"]["best_oracle"]["psnr"] for e in es]
    worst = min(range(len(es)), key=lambda i: d_rl[i])
    return {
        "n": len(es),
        "psnr": Q._mean(e["methods"][method]["psnr"] for e in es),
        "ssim": Q._mean(e["methods"][method]["ssim"] for e in es),
        "dpsnr_vs_rl_oracle": Q._mean(d_rl),
        "worst_vs_rl_oracle": d_rl[worst],
        "worst_case": es[worst]["case"],
        "below_rl_oracle_by_0.3": sum(d < -0.3 for d in d_rl),
        "dpsnr_vs_best_oracle": Q._mean(d_best),
        "wins_vs_best_oracle": sum(d > 0 for d in d_best),
    }


TITLE = "Independent check, 2D: scikit-image samples, PSFs and noise nothing was tuned on"


def _summary_table(entries: list[dict], methods) -> list[str]:
    """:func:`compare` of each method over ``entries``, as Markdown table lines."""
    rows = []
    for m in methods:
        s = compare(entries, m)
        if s is None:
            continue
        rows.append(
            [
                Q.LABELS.get(m, m),
                str(s["n"]),
                C.fmt(s["psnr"]),
                C.fmt(s["ssim"], 3),
                Q._signed(s["dpsnr_vs_rl_oracle"]),
                f"{Q._signed(s['worst_vs_rl_oracle'])} ({s['worst_case']})",
                str(s["below_rl_oracle_by_0.3"]),
                Q._signed(s["dpsnr_vs_best_oracle"]),
                str(s["wins_vs_best_oracle"]),
            ]
        )
    return C.table(
        [
            "method",
            "n",
            "PSNR",
            "SSIM",
            "Δ vs RL or.",
            "worst Δ vs RL or.",
            "< −0.3 dB vs RL or.",
            "Δ vs best or.",
            "> best or.",
        ],
        rows,
    )


def _fit_cells(record: dict, step0: float) -> list[str]:
    if not Q._ok(record):
        return ["failed: " + record.get("error", "?"), "", "", "", ""]
    return [
        C.fmt(record["psnr"]),
        Q._signed(record["psnr"] - step0),
        str(record["best_step"]),
        str(record["steps"]),
        f"{record['train_s']:.0f}",
    ]


def _resumed_lines(cfg: dict) -> list[str]:
    resumed = cfg.get("resumed")
    if not resumed or not resumed["cases"]:
        return []
    dates = ", ".join(r["machine"].get("date", "?") for r in resumed["runs"])
    return [
        f"Resumed (`--resume`): {len(resumed['cases'])} cases come from earlier runs with "
        f"the same settings (started {dates}); their timings are those runs'.",
        "",
    ]


def write_markdown(path: Path, result: dict, *, title=TITLE, script="independent.py") -> None:
    """The summary tables (every image, per PSF/noise/image, per image) as Markdown."""
    entries, cfg = result["images"], result["config"]
    methods = [*SUMMARY, *(["default"] if any("default" in e["methods"] for e in entries) else [])]
    size = "×".join(map(str, cfg["shape"])) if "shape" in cfg else f"{cfg['size']}²"
    lines = [
        f"# {title}",
        "",
        f"Status: {result['status']}. Generated by `benchmarks/{script}` "
        "(its docstring gives the protocol); every number in the `.json`.",
        "",
        *_resumed_lines(cfg),
        f"- {len(entries)} images: {len(cfg['images'])} samples × {len(cfg['psfs'])} PSFs × "
        f"{len(cfg['noises'])} noise regimes, {size}, border {cfg['border']} px "
        f"excluded only in 'PSNR −{cfg['border']}' of the JSON; RL oracle n ≤ {cfg['rl_max']}.",
        "- Oracles choose with the ground truth (upper bounds no user can reach); the "
        "ground-truth-free rules and jdeconv do not.",
        "",
        "## Machine",
        "",
        *C.machine_lines(result["machine"]),
        "",
        "## Every image",
        "",
    ]
    lines += _summary_table(entries, methods)
    fitted = [e for e in entries if "default" in e["methods"]]
    if fitted:
        lines += [
            "",
            f"## Fitted images ({len(fitted)}): jdeconv's default",
            "",
            "The same comparison on the fitted images only, then each fit: its step 0 is the "
            "non-negative sparse Tikhonov solution (Tik-L≥ℓ1), kept unless a trained model's "
            "held-out score is significantly better.",
            "",
            *_summary_table(fitted, methods),
            "",
        ]
        lines += C.table(
            ["case", "Tik-L≥ℓ1", "jdeconv", "Δ", "kept step", "steps run", "train s", "RL or."],
            [
                [
                    e["case"],
                    C.fmt(e["methods"]["tik_nn_l1"]["psnr"]),
                    *_fit_cells(e["methods"]["default"], e["methods"]["tik_nn_l1"]["psnr"]),
                    C.fmt(e["methods"]["rl_oracle"]["psnr"]),
                ]
                for e in fitted
            ],
        )
    shown = [m for m in ("input", "rl_oracle", "best_oracle", *GT_FREE_SHOWN, "default")]
    for title, key in (("PSF", "psf"), ("noise", "noise"), ("image", "image")):
        lines += ["", f"## Mean PSNR per {title}", ""]
        groups: dict[str, list[dict]] = {}
        for e in entries:
            groups.setdefault(e[key], []).append(e)
        rows = []
        for name, es in groups.items():
            row = [name, str(len(es))]
            for m in shown:
                vals = [e["methods"][m]["psnr"] for e in es if Q._ok(e["methods"].get(m))]
                mean = C.fmt(Q._mean(vals)) if vals else "–"
                # A mean over fewer images than the row's n (jdeconv's fitted ones) says so.
                row.append(f"{mean} (n={len(vals)})" if vals and len(vals) < len(es) else mean)
            rows.append(row)
        lines += C.table([title, "n", *(Q.SHORT.get(m, m) for m in shown)], rows)
    lines += ["", "## Per image (PSNR)", ""]
    rows = []
    for e in entries:
        ms = e["methods"]
        rows.append(
            [
                e["case"],
                C.fmt(e["input_psnr"]),
                *(C.fmt(ms[m]["psnr"]) if Q._ok(ms.get(m)) else "–" for m in shown[1:]),
            ]
        )
    lines += C.table(["case", *(Q.SHORT.get(m, m) for m in shown)], rows)
    C.atomic_write_text(path, "\n".join(lines) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", nargs="+", choices=list(IMAGES), help="only these samples")
    p.add_argument("--psfs", nargs="+", choices=list(PSFS), help="only these PSFs")
    p.add_argument("--noises", nargs="+", choices=list(NOISES), help="only these noise regimes")
    p.add_argument("--size", type=int, default=SIZE, help="crop side (px)")
    add_fit_option(p)
    C.add_scoring_options(p, name=NAME, border=16, unit="px", infer_repeats=False)
    args = p.parse_args(argv)
    args.cases = select(
        PSFS, NOISES, IMAGES, only_psfs=args.psfs, only_noises=args.noises, only_images=args.images
    )
    parse_fit_options(args)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    stem = C.output_stem(args.out, NAME, args.tag)
    result = new_result(
        NAME,
        args,
        size=args.size,
        images={k: v[1] for k, v in IMAGES.items() if any(c[2] == k for c in args.cases)},
        psfs={k: v[1] for k, v in PSFS.items() if any(c[0] == k for c in args.cases)},
        noises={
            k: {**v[0], "pedestal": v[1], "gain": v[2]}
            for k, v in NOISES.items()
            if any(c[1] == k for c in args.cases)
        },
        fit_cases=sorted("/".join(c) for c in args.fit_cases),
        overrides=args.config_overrides,
    )
    run_all(args.cases, lambda case: run_case(case, args), result, stem, resume=args.resume)
    return result


def new_result(name: str, args, **config) -> dict:
    """The result record before any case: machine, the shared scoring settings, ``config``."""
    config = {**config, **getattr(args, "devices_config", {})}
    return {
        "benchmark": name,
        "status": "running",
        "machine": C.machine_info(),
        "config": {"seed": args.seed, "border": args.border, "rl_max": args.rl_max, **config},
        "images": [],
    }


def finished_cases(path: Path, result: dict) -> dict[str, dict]:
    """The finished cases of an earlier run at ``path`` (by case name), for ``--resume``
    (refused if its settings differ: :func:`_common.earlier_run`)."""
    earlier = C.earlier_run(path, result["config"])
    if earlier is None:
        return {}
    kept = {e["case"]: e for e in earlier["images"]}
    runs = earlier["config"].get("resumed", {}).get("runs", [])
    runs = [*runs, {"machine": earlier["machine"], "elapsed_s": earlier.get("elapsed_s")}]
    result["config"]["resumed"] = {"cases": sorted(kept), "runs": runs}
    print(f"--resume: keeping {len(kept)} finished cases of {path.name}", flush=True)
    return kept


def run_all(cases, run, result: dict, stem: Path, *, resume=False, **markdown) -> None:
    """Run every case, writing the JSON and Markdown after each (``markdown``: title, script).

    With ``resume``, the cases an earlier run with the same settings finished (its JSON at
    ``stem``) are kept, not run again.
    """
    t_run = time.perf_counter()
    finished = finished_cases(stem.with_suffix(".json"), result) if resume else {}
    names = ["/".join(c) for c in cases]
    position = {n: i for i, n in enumerate(names)}
    result["images"] = [finished[n] for n in names if n in finished]
    if finished and len(result["images"]) == len(cases):
        result["status"] = "complete"
        result["summary"] = {m: compare(result["images"], m) for m in (*SUMMARY, "default")}
        C.write_json(stem.with_suffix(".json"), result)
        write_markdown(stem.with_suffix(".md"), result, **markdown)
    for case, name in zip(cases, names, strict=True):
        if name in finished:
            continue
        entry = run(case)
        result["images"].append(entry)
        result["images"].sort(key=lambda e: position[e["case"]])
        done = len(result["images"])
        result["status"] = "complete" if done == len(cases) else "partial"
        result["summary"] = {m: compare(result["images"], m) for m in (*SUMMARY, "default")}
        result["elapsed_s"] = time.perf_counter() - t_run
        C.write_json(stem.with_suffix(".json"), result)
        write_markdown(stem.with_suffix(".md"), result, **markdown)
        ms = entry["methods"]
        print(
            f"[{done}/{len(cases)}] {entry['case']} ({entry['seconds']:.0f} s): in "
            f"{entry['input_psnr']:.2f}, "
            + ", ".join(
                f"{Q.SHORT.get(m, m)} {ms[m]['psnr']:.2f}"
                for m in ("rl_oracle", "best_oracle", *GT_FREE_SHOWN, "default")
                if Q._ok(ms.get(m))
            ),
            flush=True,
        )
    print(f"wrote {stem}.md/.json in {time.perf_counter() - t_run:.0f} s", flush=True)


if __name__ == "__main__":
    main()
