"""The papers' 3D benchmark: a synthetic filament volume blurred by a 17³ Gibson-Lanni PSF.

Reproduces the columns of Papkov et al. 2023 (arXiv 2308.09426), tables 3-4, on our own
phantom: ``jdeconv.simulate.filaments_3d`` (smooth random tubes, "microtubules"), min-max
normalised to [0, 1], degraded with ``jdeconv.simulate.degrade`` as the paper's 3D
setting: blur by ``<data>/psf/gl_3d_17.npy`` ('same', zero fill),
``x + sqrt(0.001 x + 0.1²) N(0, 1)``, no salt-and-pepper, 10 bits, clip. Then:

* ``input``; ``RL n=2, 5, 10, 20`` (zero-padded blur, as the degradation);
* ``RL oracle`` — the count in 1..``--rl-max`` with the best PSNR against the ground truth
  (an oracle no user has: an upper bound for RL);
* ``noise2self``, ``noise2same``, ``noise2same_d`` — ``jdeconv.fit`` with
  ``Config.preset(name, **overrides)``; ``default`` (``--methods default``) —
  ``Config.default(3, **overrides)``, what ``jdeconv.fit(noisy, psf)`` runs on the device.

Scores: PSNR, SSIM (data_range=1, 3D Gaussian window), MI, SMI (DCT-II over all three
axes: our 3D extension), RMSE, PSNR without a ``--border``-voxel frame; training seconds
(after compilation) and warm whole-volume inference milliseconds.

CPU default (``--shape 32 96 96``, patches 32×48×48, batch 2, 150 steps): a 3D U-Net step
is expensive on a CPU. Measured on a 2-core CPU shared with other jobs (load 4-7): 1.4 s
per step for noise2self and 4.3 s for noise2same (two passes) at batch 2 of 32×48×48;
the preset's batch 16 of 32×64×64 is 14× the voxels (~20 / ~60 s per step). Each fit
adds ~20 s of compilation and ~25 s per 16-fold test-time-augmented inference of the
32×96×96 volume (run twice: in ``fit`` and timed warm). So the default takes about
half an hour with all three presets; training that short tests the protocol, it does not
reproduce the paper. The step cost depends on the patches and batch, not the volume; the
volume sets the validation, inference and RL cost (48×128×128 would add ~3 min per preset
in inference alone).
``--full`` runs the paper's 128×256×512 volume with Papkov's 64³ patches, batch 4 (a GPU
job; add ``--steps 15000`` for their schedule).

Usage (from the repository root)::

    .venv/bin/python benchmarks/paper_3d.py --quick --methods noise2self   # < 1 min, smoke
    .venv/bin/python benchmarks/paper_3d.py                            # ~30 min, 2-core CPU
    .venv/bin/python benchmarks/paper_3d.py --full --steps 3000 --tag full  # GPU

Writes ``paper_3d[-tag].md``, ``.json`` and ``.png`` (max-intensity projections) to
``--out`` (default ``benchmarks/results``), rewritten after every method.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import _common as C  # first: puts this checkout on sys.path before jdeconv
import jax
import numpy as np

from jdeconv.psf import gibson_lanni_psf
from jdeconv.simulate import degrade, filaments_3d, normalize_minmax

NAME = "paper_3d"
PSF_FILE = "psf/gl_3d_17.npy"
CPU_SHAPE = (32, 96, 96)
FULL_SHAPE = (128, 256, 512)
# Learned-method settings by mode; --steps and --set override them.
CPU_OVERRIDES = {"patch_size_z": 32, "patch_size": 48, "batch_size": 2, "steps": 150}
FULL_OVERRIDES = {"patch_size_z": 64, "patch_size": 64, "batch_size": 4}
QUICK = {
    "shape": (24, 32, 32),
    "rl_max": 10,
    "overrides": {
        "patch_size_z": 24,
        "patch_size": 24,
        "batch_size": 1,
        "steps": 2,
        "validate_every": 1,
        "tta": False,
    },
}
# filaments_3d's default count is 30 in a 64×128×128 volume; filaments cross the whole
# volume, so their voxel fraction goes as count / (Y X): keep it by scaling with Y X.
REFERENCE_COUNT, REFERENCE_YX = 30, 128 * 128
DEGRADATION = {
    "normalize": "min-max of the phantom to [0, 1]",
    "blur": "gl_3d_17.npy, 'same', zero fill",
    "alpha": 0.001,
    "sigma": 0.1,
    "salt_pepper": 0.0,
    "bits": 10,
    "clip": True,
}

PAPERS_MD = """\
## The papers' numbers (reference only — from the publications, not from our runs)

Papkov et al. 2023, table 4: synthetic microtubules 128×256×512, 17³ Gibson-Lanni PSF,
15 000 steps of 64³ patches (batch 4) on a GPU. Train s in brackets: without FFT.

| method | PSNR | SSIM | train s |
|---|--:|--:|--:|
| input | 21.2 | 0.64 | |
| RL n=2 | 22.4 | 0.32 | |
| SSI (noise2self) | 22.6 | 0.39 | 2814 (6580) |
| Papkov noise2same | 24.1 | 0.39 | 8160 (18900) |

Their phantom is not ours (ours: `jdeconv.simulate.filaments_3d`), so only the ordering
of the methods and the gaps between them are comparable, not the absolute values.
"""


def load_psf(data: Path) -> tuple[np.ndarray, str]:
    """The shared 17³ PSF, or (without the shared data) our Gibson-Lanni model of it."""
    path = data / PSF_FILE
    if path.is_file():
        return np.load(path).astype(np.float32), PSF_FILE
    print(f"warning: {path} not found; using jdeconv.psf.gibson_lanni_psf((17, 17, 17))")
    # Same microscope (16x/0.8, n=1.33, 0.406 µm voxels), but centred at plane 8 where the
    # shared file peaks at plane 7: numbers are not comparable with runs on the file.
    return gibson_lanni_psf((17, 17, 17)), "jdeconv.psf.gibson_lanni_psf((17, 17, 17))"


def default_count(shape) -> int:
    return max(1, round(REFERENCE_COUNT * shape[1] * shape[2] / REFERENCE_YX))


def method_names(presets: list[str]) -> list[str]:
    return ["input", *(f"rl_{n}" for n in C.RL_COUNTS), "rl_best", *presets]


# --------------------------------------------------------------------------- report


def write_markdown(path: Path, result: dict) -> None:
    cfg, methods = result["config"], result["methods"]
    vol = result["volume"]
    border = cfg["border"]
    names = [m for m in method_names(cfg["methods"]) if m in methods]
    pending = [m for m in cfg["methods"] if m not in methods]
    status = (
        "complete"
        if result["status"] == "complete"
        else f"**PARTIAL: {', '.join(pending)} not finished** (still running, or cut off)"
    )
    padding = sorted({r["config"]["padding"] for r in methods.values() if "config" in r})
    shape = "×".join(map(str, vol["shape"]))
    lines = [
        "# 3D benchmark: synthetic filaments (Papkov et al. 2023, tables 3-4)",
        "",
        f"Status: {status}. Generated by `benchmarks/paper_3d.py`; raw numbers in the `.json`.",
        "",
        "## Protocol",
        "",
        f"- Volume: `filaments_3d` {shape} (ZYX), {vol['count']} filaments, seed "
        f"{cfg['seed']}; min-max normalised to [0, 1]; {vol['foreground_fraction']:.2%} of "
        "voxels above 0.1.",
        f"- Degradation: blur by `{cfg['psf']}` (17³), **'same' with zero fill**; "
        "`x + sqrt(0.001 x + 0.1²) N(0,1)`; no salt-and-pepper; 10 bits; clip.",
        "- **Padding**: the degradation and Richardson-Lucy use zero fill; the learned "
        f"methods' forward model uses `padding={'/'.join(padding) or 'n/a'}` (Config). "
        f"Hence the column PSNR without a {border}-voxel border.",
        f"- RL: FFT blur, zero fill, constant start; the **RL oracle is the n in "
        f"1..{cfg['rl_max']} with the best PSNR against the ground truth** — an upper bound "
        "for RL, not a method a user can run.",
        C.learned_methods_text(cfg["methods"], cfg["overrides"]),
        "- Scores: PSNR, SSIM (data_range=1, 3D Gaussian window), MI, SMI (DCT-II over all "
        "three axes), RMSE; outputs not clipped. Train s: training loop after compilation; "
        "infer ms: one warm whole-volume run (learned: with the config's test-time "
        "augmentation; RL: n iterations).",
        "",
        "## Machine",
        "",
        *C.machine_lines(result["machine"]),
        "",
        "## Results",
        "",
    ]
    headers = [
        "method",
        "PSNR",
        f"PSNR (no {border}-vx border)",
        "SSIM",
        "MI",
        "SMI",
        "RMSE",
        "train s",
        "compile s",
        "infer ms",
        "steps (best)",
    ]
    rows = []
    for m in names:
        rec = methods[m]
        if "error" in rec:
            rows.append([m, f"error: {rec['error'][:80]}", *[""] * 9])
            continue
        rows.append(
            [
                C.method_label(m, rec),
                C.fmt(rec["psnr"]),
                C.fmt(rec["psnr_border"]),
                C.fmt(rec["ssim"], 3),
                C.fmt(rec["mi"], 3),
                C.fmt(rec["smi"], 3),
                C.fmt(rec["rmse"], 4),
                C.fmt(rec["train_s"], 0) if "train_s" in rec else "",
                C.fmt(rec["compile_s"], 0) if "compile_s" in rec else "",
                C.fmt_ms(rec.get("infer_ms")),
                f"{rec['steps']} ({rec['best_step']})" if "steps" in rec else "",
            ]
        )
    lines += C.table(headers, rows)
    learned = [m for m in cfg["methods"] if m in methods and "error" not in methods[m]]
    if learned:
        rl = methods["rl_best"]["psnr"]
        lines += [
            "",
            "PSNR minus the RL oracle's: "
            + ", ".join(f"{m} {methods[m]['psnr'] - rl:+.2f} dB" for m in learned)
            + ". Seconds per training step: "
            + ", ".join(f"{m} {methods[m]['seconds_per_step']:.2f}" for m in learned)
            + ".",
        ]
    lines += ["", PAPERS_MD]
    C.atomic_write_text(path, "\n".join(lines))


def write_projections(path: Path, volumes: dict, records: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(volumes)
    z, y, x = volumes["ground truth"].shape
    width = 2.6
    fig, axes = plt.subplots(
        2,
        len(keys),
        figsize=(width * len(keys), width * (y + z) / x + 0.6),
        squeeze=False,
        gridspec_kw={"height_ratios": [y, z], "wspace": 0.05, "hspace": 0.08},
    )
    for c, key in enumerate(keys):
        vol = volumes[key]
        title = "ground truth" if key == "ground truth" else C.method_label(key, records[key])
        if key != "ground truth":
            title += f"\n{records[key]['psnr']:.2f} dB"
        for r, axis in enumerate((0, 1)):  # projections along Z (YX) and along Y (ZX)
            ax = axes[r, c]
            # Isotropic voxels (dxy = dz = 0.406 µm): equal aspect.
            ax.imshow(vol.max(axis=axis), cmap="gray", vmin=0, vmax=1, aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel("MIP along Z (YX)" if axis == 0 else "MIP along Y (ZX)", fontsize=8)
    fig.suptitle(
        "Maximum-intensity projections, display range [0, 1]. RL oracle: n chosen with the "
        "ground truth.",
        fontsize=8,
    )
    C.save_figure(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder (PSF)")
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help=f"volume shape (default {' '.join(map(str, CPU_SHAPE))}; --full: "
        f"{' '.join(map(str, FULL_SHAPE))})",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="the paper's 128×256×512 volume with 64³ patches, batch 4 (GPU)",
    )
    p.add_argument("--count", type=int, help="number of filaments (default: scaled with Y×X)")
    C.add_methods_option(p)
    p.add_argument("--steps", type=int, help="training steps (default 150 on CPU, else preset)")
    C.add_config_override_option(p)
    C.add_scoring_options(p, name="paper_3d", border=8, unit="voxels", infer_repeats=True)
    p.add_argument("--quick", action="store_true", help="24×32×32, 2 steps (tests)")
    p.add_argument("--verbose", action="store_true", help="progress bars of the fits")
    args = p.parse_args(argv)
    args.methods = C.resolve_methods(args.methods)
    if args.quick and args.full:
        raise SystemExit("--quick and --full exclude each other")
    if args.quick:
        mode, overrides = "quick", dict(QUICK["overrides"])
        args.shape = args.shape or QUICK["shape"]
        args.rl_max = min(args.rl_max, QUICK["rl_max"])
        args.tag = args.tag or "quick"
    elif args.full:
        mode, overrides = "full", dict(FULL_OVERRIDES)
        args.shape = args.shape or FULL_SHAPE
    else:
        mode, overrides = "cpu", dict(CPU_OVERRIDES)
        args.shape = args.shape or CPU_SHAPE
    args.shape = tuple(args.shape)
    args.mode = mode
    overrides["seed"] = args.seed
    if args.steps is not None:
        overrides["steps"] = args.steps
    overrides.update(C.parse_overrides(args.overrides))
    args.config_overrides = overrides
    if args.count is None:
        args.count = default_count(args.shape)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    psf, psf_source = load_psf(args.data)
    stem = C.output_stem(args.out, NAME, args.tag)
    key = jax.random.key(args.seed)
    t_run = time.perf_counter()
    clean = filaments_3d(jax.random.fold_in(key, 0), args.shape, count=args.count)
    gt = np.asarray(normalize_minmax(clean), dtype=np.float32)
    noisy = degrade(jax.random.fold_in(key, 1), gt, psf, salt_pepper=0.0, normalize=False)
    result = {
        "benchmark": NAME,
        "status": "running",
        "machine": C.machine_info(),
        "config": {
            "mode": args.mode,
            "data": str(args.data),
            "psf": psf_source,
            "methods": args.methods,
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
        "volume": {
            "shape": list(args.shape),
            "count": args.count,
            "foreground_fraction": float(np.mean(gt > 0.1)),
            "simulate_s": time.perf_counter() - t_run,
        },
        "methods": {"input": C.score(gt, noisy, border=args.border)},
    }
    rl_records, rl_images = C.richardson_lucy_oracle(
        noisy, psf, gt, n_max=args.rl_max, border=args.border
    )
    result["rl_psnr_curve"] = rl_records.pop("rl_psnr_curve")
    result["methods"].update(rl_records)
    volumes = {"ground truth": gt, "input": noisy, "rl_best": rl_images["rl_best"]}

    def write(status: str) -> None:
        result["status"] = status
        result["elapsed_s"] = time.perf_counter() - t_run
        C.write_json(stem.with_suffix(".json"), result)
        write_markdown(stem.with_suffix(".md"), result)
        write_projections(stem.with_suffix(".png"), volumes, result["methods"])

    _print("input", result["methods"]["input"])
    _print("rl_best", result["methods"]["rl_best"])
    write("partial" if args.methods else "complete")
    for i, preset in enumerate(args.methods, 1):
        record, deconvolved = C.fit_preset(noisy, psf, gt, preset, **C.fit_options(args))
        result["methods"][preset] = record
        if deconvolved is not None:
            volumes[preset] = deconvolved
        _print(preset, record)
        write("complete" if i == len(args.methods) else "partial")
    print(f"wrote {stem}.md/.json/.png in {time.perf_counter() - t_run:.0f} s", flush=True)
    return result


def _print(name: str, rec: dict) -> None:
    if "error" in rec:
        print(f"{name}: error {rec['error']}", flush=True)
        return
    extra = ""
    if "train_s" in rec:
        extra = (
            f", train {rec['train_s']:.0f} s ({rec['seconds_per_step']:.2f} s/step), "
            f"compile {rec['compile_s']:.0f} s, infer {C.fmt_ms(rec['infer_ms'])} ms"
        )
    psnr = rec["psnr"]
    print(
        f"{C.method_label(name, rec)}: PSNR {psnr:.2f}" if math.isfinite(psnr) else name,
        f"SSIM {rec['ssim']:.3f}{extra}",
        flush=True,
    )


if __name__ == "__main__":
    main()
