"""Peers on the same data: sdeconv's methods on the quality benchmark's quick matrix, 2D.

Runs the deconvolution methods of ``sdeconv`` (S. Prigent's PyTorch library, PyPI) on the
cases of ``quality.py --quick`` (``quality.QUICK_CASES``: the same ground truths, PSFs,
noise and noise keys, through ``_matrix.py`` and ``quality.noise_key``), scores them
as every benchmark here does (``_common.score``: PSNR and SSIM with data_range 1, ...),
and puts them beside jdeconv's default and the classical oracles read from quality.py's
results (``--jdeconv-results``; jdeconv is not re-run). A case missing from those files
gets its classical oracles recomputed (``quality.classical``) and no jdeconv column.

sdeconv methods (``--methods``), all with the image mirror-padded by 13 pixels
(``pad=13``, its GUI default, more than half of every PSF here):

* ``wiener`` — ``swiener`` (Laplacian-regularised Wiener) at its default ``beta=1e-5``
  and the **oracle** ``beta`` (best PSNR over 10^-7..10^1, 8 per decade);
* ``rl`` — ``srichardsonlucy`` at its default 30 iterations and the **oracle** count
  among ``RL_COUNTS`` up to ``--rl-max`` (1-6, 8, 10, 12, 15, 20, 25, 30, 40, 50: each
  count restarts from the image, so not every count);
* ``spitfire`` — ``spitfire`` (Hessian-sparse variational deconvolution, up to 2500 Adam
  iterations) at its defaults (``weight=0.6, reg=0.995``), and the best of
  ``--spitfire-regs`` if given. Slow here: its 'same' blur is a direct 17²/25²
  convolution (``torch.nn.Conv2d``), and one iteration on a 256² image took 4.1 s on the
  busy 2-core CPU (two torch threads, load ~10): up to 2500 iterations, hours per image,
  so the committed quick run leaves it out (``--methods``);
* ``ssnn`` — ``SelfSupervisedNNDeconv``: a U-Net (32, 64, 128 channels) trained on the
  one image with sdeconv's self-supervised loss (reconvolved MSE + Spitfire's Hessian
  term), its defaults: ``--epochs`` 25, 32² patches at stride 16, batch 300 (fixed in
  sdeconv), Adam 1e-3. A 256² image gives only 196 such patches, fewer than one batch
  (sdeconv drops incomplete batches, so it would not train at all): the training folder
  holds the image's 8 rotations/flips (1568 patches, 5 steps per epoch);
* ``n2v`` — ``Noise2VoidDeconv`` (blind-spot loss through the PSF), the same data and
  defaults (not run by default: as slow as ``ssnn``).

The oracles choose with the ground truth (upper bounds no user can reach). Times are
wall seconds per image on this machine, the oracles' search included.

sdeconv imports ``torchvision.transforms.v2`` (flips and dtype conversion only). Where
torchvision cannot be imported (PyPI's torchvision wheels need the CUDA build of torch),
a stand-in with the same four transforms is used, and the results say so.

Usage (needs the ``peers`` extra; the reference data default to ``../shared/data``)::

    python benchmarks/peers.py --tag quick-2d                 # ~1-2 h on one CPU core
    python benchmarks/peers.py --methods wiener rl spitfire   # classical only, minutes
    python benchmarks/peers.py --tiny                         # seconds, for the tests

Writes ``peers-<tag>.md`` and ``.json`` (default tag ``quick-2d``) to ``--out``, rewritten
after every image.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import math
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import _common as C  # first: puts this checkout on sys.path before jdeconv
import _matrix as X
import numpy as np
import quality as Q

from jdeconv.metrics import psnr
from jdeconv.simulate import degrade

NAME = "peers"
METHODS = ("wiener", "rl", "spitfire", "ssnn", "n2v")
DEFAULT_METHODS = ("wiener", "rl", "spitfire", "ssnn")
PAD = 13
RL_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
WIENER_BETAS = tuple(float(b) for b in np.logspace(-7, 1, 65))  # 8 per decade
DEFAULT_RESULTS = (
    "quality-quick-2d-starved-main.json",
    "quality-quick-2d-mild-main.json",
    "quality-quick-2d.json",
)
TINY = {"cases": Q.TINY["cases"], "size": 64, "epochs": 1, "rl_max": 5, "patch": 8}
LABELS = {
    "input": "input",
    "rl_oracle": "RL oracle (jdeconv.classic)",
    "best_oracle": "best classical oracle (quality.py)",
    "jdeconv": "jdeconv default",
    "sd_wiener": "sdeconv Wiener, default β",
    "sd_wiener_oracle": "sdeconv Wiener, oracle β",
    "sd_rl": "sdeconv RL, 30 iterations",
    "sd_rl_oracle": "sdeconv RL, oracle count",
    "sd_spitfire": "sdeconv Spitfire, defaults",
    "sd_spitfire_oracle": "sdeconv Spitfire, oracle reg",
    "sd_ssnn": "sdeconv self-supervised NN",
    "sd_n2v": "sdeconv Noise2Void deconv.",
}
SHORT = {
    "input": "input",
    "rl_oracle": "RL or.",
    "best_oracle": "best or.",
    "jdeconv": "jdeconv",
    "sd_wiener": "sd Wiener",
    "sd_wiener_oracle": "sd Wiener or.",
    "sd_rl": "sd RL 30",
    "sd_rl_oracle": "sd RL or.",
    "sd_spitfire": "sd Spitfire",
    "sd_spitfire_oracle": "sd Spitfire or.",
    "sd_ssnn": "sd SSNN",
    "sd_n2v": "sd N2V",
}


# --------------------------------------------------------------------------- sdeconv


def _torchvision_stand_in(torch) -> None:
    """``torchvision.transforms.v2`` with the four transforms sdeconv uses."""

    class Compose:
        def __init__(self, transforms):
            self.transforms = list(transforms)

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class _RandomFlip:
        dim = -1

        def __init__(self, p: float = 0.5):
            self.p = p

        def __call__(self, x):
            return torch.flip(x, (self.dim,)) if float(torch.rand(())) < self.p else x

    class RandomHorizontalFlip(_RandomFlip):
        dim = -1

    class RandomVerticalFlip(_RandomFlip):
        dim = -2

    class ToDtype:
        def __init__(self, dtype, scale: bool = False):
            self.dtype, self.scale = dtype, scale

        def __call__(self, x):
            if self.scale and not x.is_floating_point():
                return x.to(self.dtype) / torch.iinfo(x.dtype).max
            return x.to(self.dtype)

    v2 = types.ModuleType("torchvision.transforms.v2")
    v2.Compose, v2.ToDtype = Compose, ToDtype
    v2.RandomHorizontalFlip, v2.RandomVerticalFlip = RandomHorizontalFlip, RandomVerticalFlip
    transforms = types.ModuleType("torchvision.transforms")
    transforms.v2 = v2
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    root.__version__ = "stand-in (benchmarks/peers.py)"
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules.update(
        {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.v2": v2}
    )


def import_sdeconv():
    """``(torch, sdeconv.deconv, versions)``; SystemExit with the fix if not installed."""
    try:
        import torch
    except ImportError as err:
        raise SystemExit("PyTorch is not installed: pip install -e '.[peers]'") from err
    stand_in = False
    try:
        import torchvision  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # a CUDA torchvision on a CPU torch
        _torchvision_stand_in(torch)
        stand_in = True
    try:
        import sdeconv
        import sdeconv.deconv as deconv
    except ImportError as err:
        raise SystemExit(f"sdeconv is not installed ({err}): pip install -e '.[peers]'") from err
    versions = {
        "torch": torch.__version__,
        "sdeconv": getattr(sdeconv, "__version__", None) or _dist_version("sdeconv"),
        "torchvision": sys.modules["torchvision"].__version__,
        "torchvision_stand_in": stand_in,
        "torch_threads": torch.get_num_threads(),
    }
    return torch, deconv, versions


def _dist_version(name: str):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _numpy(t) -> np.ndarray:
    return np.asarray(t.detach().cpu().numpy(), np.float32).reshape(t.shape[-2:])


def _best(candidates, gt):
    """(index, psnr) of the candidate image with the best PSNR."""
    scores = [psnr(gt, c, data_range=C.DATA_RANGE) for c in candidates]
    i = int(np.argmax(scores))
    return i, scores[i]


def run_wiener(deconv, noisy, psf, gt, *, border):
    t0 = time.perf_counter()
    images = [_numpy(deconv.swiener(noisy, psf, beta=b, pad=PAD)) for b in WIENER_BETAS]
    i, _ = _best(images, gt)
    seconds = time.perf_counter() - t0
    default = _numpy(deconv.swiener(noisy, psf, beta=1e-5, pad=PAD))
    return {
        "sd_wiener": {**C.score(gt, default, border=border), "beta": 1e-5},
        "sd_wiener_oracle": {
            **C.score(gt, images[i], border=border),
            "beta": WIENER_BETAS[i],
            "beta_at_grid_edge": i in (0, len(WIENER_BETAS) - 1),
            "seconds": seconds,
        },
    }


def run_rl(deconv, noisy, psf, gt, *, border, rl_max):
    # sdeconv's RL restarts from the image for every count: a grid, not every count.
    counts = [n for n in RL_COUNTS if n <= rl_max] or [rl_max]
    t0 = time.perf_counter()
    images = [_numpy(deconv.srichardsonlucy(noisy, psf, niter=n, pad=PAD)) for n in counts]
    i, _ = _best(images, gt)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    default = _numpy(deconv.srichardsonlucy(noisy, psf, niter=30, pad=PAD))
    return {
        "sd_rl": {
            **C.score(gt, default, border=border),
            "n": 30,
            "seconds": time.perf_counter() - t0,
        },
        "sd_rl_oracle": {
            **C.score(gt, images[i], border=border),
            "n": counts[i],
            "counts": counts,
            "seconds": seconds,
        },
    }


def run_spitfire(deconv, noisy, psf, gt, *, border, regs):
    out = {}
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        default = _numpy(deconv.spitfire(noisy, psf, weight=0.6, reg=0.995, pad=PAD))
    out["sd_spitfire"] = {
        **C.score(gt, default, border=border),
        "reg": 0.995,
        "weight": 0.6,
        "seconds": time.perf_counter() - t0,
    }
    if regs:
        t0 = time.perf_counter()
        images = {0.995: default}
        with contextlib.redirect_stdout(io.StringIO()):
            for reg in regs:
                if reg not in images:
                    images[reg] = _numpy(deconv.spitfire(noisy, psf, weight=0.6, reg=reg, pad=PAD))
        grid = sorted(images)
        i, _ = _best([images[r] for r in grid], gt)
        out["sd_spitfire_oracle"] = {
            **C.score(gt, images[grid[i]], border=border),
            "reg": grid[i],
            "regs": grid,
            "seconds": time.perf_counter() - t0 + out["sd_spitfire"]["seconds"],
        }
    return out


def dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/flips of a square image."""
    return [np.rot90(v, k) for v in (image, image[::-1]) for k in range(4)]


def run_network(torch, deconv, kind: str, noisy, psf, gt, *, border, epochs, patch, seed):
    """Train sdeconv's self-supervised network on the one image; predict; score."""
    import tifffile

    cls = {"ssnn": deconv.SelfSupervisedNNDeconv, "n2v": deconv.Noise2VoidDeconv}[kind]
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (sdeconv's Noise2Void masks use the global generator)
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        train, val, out = (Path(tmp) / d for d in ("train", "val", "out"))
        for d in (train, val, out):
            d.mkdir()
        for i, view in enumerate(dihedral(noisy.astype(np.float32))):
            tifffile.imwrite(train / f"view{i}.tif", np.ascontiguousarray(view))
        tifffile.imwrite(val / "image.tif", noisy.astype(np.float32))
        module = cls()
        t0 = time.perf_counter()
        kwargs = dict(n_epoch=epochs, patch_size=patch, out_dir=out, psf=torch.tensor(psf))
        with contextlib.redirect_stdout(io.StringIO()):
            module.fit(train, val, **kwargs)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        image = _numpy(module(torch.tensor(noisy.astype(np.float32))))
        infer_s = time.perf_counter() - t0
    n_patches = (
        len(dihedral(noisy))
        * ((noisy.shape[0] - patch) // (patch // 2))
        * ((noisy.shape[1] - patch) // (patch // 2))
    )
    return {
        **C.score(gt, image, border=border),
        "epochs": epochs,
        "patch": patch,
        "batch": 300,
        "steps": epochs * (n_patches // 300),
        "training_patches": n_patches,
        "params": sum(p.numel() for p in module._model.parameters()),
        "train_s": train_s,
        "infer_s": infer_s,
        "seconds": train_s + infer_s,
    }


# --------------------------------------------------------------------------- jdeconv results


def load_reference(paths: list[Path]) -> dict[str, dict]:
    """Per case, the newest entry of quality.py results: input, oracles, jdeconv default."""
    found: dict[str, tuple[str, dict, str]] = {}
    for path in paths:
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        date = data["machine"]["date"]
        for entry in data["images"]:
            if entry["case"] not in found or date > found[entry["case"]][0]:
                found[entry["case"]] = (date, entry, path.name)
    return {case: {**entry, "source": name} for case, (_, entry, name) in found.items()}


# --------------------------------------------------------------------------- summary


def _ok(rec) -> bool:
    return rec is not None and "error" not in rec and "psnr" in rec


def summarise(entries: list[dict], methods: list[str]) -> dict:
    out = {}
    for m in methods:
        recs = [(e, e["methods"][m]) for e in entries if _ok(e["methods"].get(m))]
        if not recs:
            continue
        s = {"n_images": len(recs)}
        for key in ("psnr", "ssim", "seconds"):
            # jdeconv's records (from quality.py) time the whole fit as wall_s.
            values = [r.get(key, r.get("wall_s")) for _, r in recs]
            values = [v for v in values if v is not None]
            s[key] = statistics.fmean(values) if values else None
        for ref in ("rl_oracle", "best_oracle"):
            gaps = [
                r["psnr"] - e["methods"][ref]["psnr"] for e, r in recs if _ok(e["methods"].get(ref))
            ]
            s[f"dpsnr_vs_{ref}"] = statistics.fmean(gaps) if gaps else None
            s[f"wins_vs_{ref}"] = sum(g > 0 for g in gaps)
        out[m] = s
    return out


def _signed(v) -> str:
    return "–" if v is None else f"{v:+.2f}"


def write_markdown(path: Path, result: dict) -> None:
    cfg, entries, summary = result["config"], result["images"], result["summary"]
    v = result["versions"]
    status = (
        "complete"
        if result["status"] == "complete"
        else (f"**PARTIAL: {len(entries)} of {len(cfg['cases'])} images**")
    )
    lines = [
        "# Peers on the quick quality matrix, 2D: sdeconv beside jdeconv",
        "",
        f"Status: {status}. Generated by `benchmarks/peers.py`; every number in the `.json`.",
        "",
        "## Protocol",
        "",
        f"- Cases: `quality.py --quick`'s {len(cfg['cases'])} (PSF/noise/image), "
        f"{cfg['size']}² ground truths, the same degradation and noise keys (seed "
        f"{cfg['seed']}); input PSNR checked against the results file's.",
        f"- sdeconv {v['sdeconv']} on torch {v['torch']} ({v['torch_threads']} threads), CPU; "
        f"every method with `pad={PAD}` (mirror). torchvision: {v['torchvision']}"
        + (
            " — sdeconv's 4 transforms re-implemented here, as the installed torchvision "
            "wheel needs CUDA torch"
            if v["torchvision_stand_in"]
            else ""
        )
        + ".",
        "- Wiener: default β 1e-5 and oracle β (10^-7..10^1, 8 per decade); RL: default 30 "
        f"iterations and oracle count in {cfg['rl_counts']}; Spitfire: defaults (weight 0.6, "
        f"reg 0.995)"
        + (f", oracle over reg {cfg['spitfire_regs']}" if cfg["spitfire_regs"] else "")
        + (
            ""
            if "spitfire" in cfg["methods"]
            else " — **not run**: 4.1 s per iteration on a 256² image here, up to 2500 "
            "iterations (hours per image; see the script's docstring)"
        )
        + ".",
        f"- Self-supervised networks: sdeconv's defaults — U-Net (32, 64, 128), "
        f"{cfg['epochs']} epochs, {cfg['patch']}² patches at stride {cfg['patch'] // 2}, "
        "batch 300, Adam 1e-3 — trained on the image's 8 rotations/flips (one 256² image "
        "gives fewer patches than one batch, and sdeconv drops incomplete batches)"
        + (
            f"; run only on the cases matching {cfg['network_cases']} (time)"
            if cfg.get("network_cases")
            else ""
        )
        + ".",
        "- jdeconv default, RL oracle and best classical oracle: read from "
        f"{', '.join(f'`{s}`' for s in cfg['reference_files'])} (benchmarks/quality.py; "
        "jdeconv not re-run). Oracles choose with the ground truth: upper bounds.",
        "- Scores over the whole image, data_range 1, nothing clipped.",
        "",
        "## Machine",
        "",
        *C.machine_lines(result["machine"]),
        "",
        "## Mean over the images",
        "",
    ]
    rows = []
    for m in result["methods_order"]:
        s = summary.get(m)
        if not s:
            continue
        n = s["n_images"]
        rows.append(
            [
                LABELS.get(m, m),
                str(n),
                C.fmt(s["psnr"]),
                C.fmt(s["ssim"], 3),
                ""
                if m in ("input", "rl_oracle")
                else f"{_signed(s['dpsnr_vs_rl_oracle'])} ({s['wins_vs_rl_oracle']}/{n})",
                ""
                if m in ("input", "best_oracle")
                else f"{_signed(s['dpsnr_vs_best_oracle'])} ({s['wins_vs_best_oracle']}/{n})",
                C.fmt(s["seconds"], 1),
            ]
        )
    lines += C.table(
        ["method", "n", "PSNR", "SSIM", "Δ vs RL or. (wins)", "Δ vs best or. (wins)", "s / image"],
        rows,
    )
    for metric, digits in (("psnr", 2), ("ssim", 3)):
        lines += ["", f"## Per image: {metric.upper()}", ""]
        cols = result["methods_order"]
        rows = [
            [e["case"], *(C.fmt(e["methods"].get(m, {}).get(metric), digits) for m in cols)]
            for e in entries
        ]
        lines += C.table(["case", *(SHORT.get(m, m) for m in cols)], rows)
    lines += ["", "## Per image: chosen parameters and seconds", ""]
    rows = []
    for e in entries:
        ms = e["methods"]
        rows.append(
            [
                e["case"],
                C.fmt(ms.get("sd_wiener_oracle", {}).get("beta"), 7)
                if "sd_wiener_oracle" in ms
                else "–",
                str(ms.get("sd_rl_oracle", {}).get("n", "–")),
                str(ms.get("sd_spitfire_oracle", {}).get("reg", "–")),
                C.fmt(ms.get("sd_spitfire", {}).get("seconds"), 1),
                C.fmt(ms.get("sd_ssnn", {}).get("train_s"), 0),
                C.fmt(ms.get("sd_n2v", {}).get("train_s"), 0),
                C.fmt(ms.get("jdeconv", {}).get("wall_s"), 0),
            ]
        )
    lines += C.table(
        [
            "case",
            "Wiener or. β",
            "RL or. n",
            "Spitfire or. reg",
            "Spitfire s",
            "SSNN train s",
            "N2V train s",
            "jdeconv fit s (quality.py)",
        ],
        rows,
    )
    lines.append("")
    C.atomic_write_text(path, "\n".join(lines))


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder")
    p.add_argument("--out", type=Path, default=C.DEFAULT_OUT, help="output folder")
    p.add_argument("--tag", help="file name suffix: peers-<tag>.md/.json (default quick-2d)")
    p.add_argument("--cells", nargs="+", help="PSF/NOISE/CONTENT patterns (as quality.py)")
    p.add_argument("--images", nargs="+", help="only these images (names in _matrix.IMAGES)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    p.add_argument("--epochs", type=int, default=25, help="sdeconv networks' epochs (its default)")
    p.add_argument("--patch", type=int, default=32, help="sdeconv networks' patch (its default)")
    p.add_argument("--rl-max", type=int, default=50, help="RL oracle searches 1..this")
    p.add_argument(
        "--spitfire-regs",
        type=float,
        nargs="*",
        default=[],
        help="also run Spitfire at these reg values and keep the best (oracle)",
    )
    p.add_argument(
        "--jdeconv-results",
        type=Path,
        nargs="+",
        help="quality.py JSON files with jdeconv's default and the oracles "
        f"(default: {', '.join(DEFAULT_RESULTS)} in --out)",
    )
    p.add_argument("--size", type=int, default=256, help="image side")
    p.add_argument("--seed", type=int, default=0, help="noise seed (as quality.py's)")
    p.add_argument("--border", type=int, default=16, help="also report PSNR without it")
    p.add_argument(
        "--network-cases",
        nargs="+",
        help="run sdeconv's networks only on these cases (PSF/NOISE/IMAGE patterns with "
        "wildcards; they take minutes per image on a CPU); default: every case",
    )
    p.add_argument("--tiny", action="store_true", help="2 phantom cases at 64², 1 epoch (tests)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.rl_max < 1:
        p.error("--epochs and --rl-max must be at least 1")
    if args.patch < 8 or args.patch % 4:
        p.error("--patch must be a multiple of 4, at least 8 (sdeconv's U-Net pools twice)")
    args.methods = list(dict.fromkeys(args.methods))
    base = Q.QUICK_CASES
    if args.tiny:
        base = TINY["cases"]
        args.size, args.epochs, args.patch = TINY["size"], TINY["epochs"], TINY["patch"]
        args.rl_max = min(args.rl_max, TINY["rl_max"])
        args.tag = args.tag or "tiny"
    args.tag = args.tag or "quick-2d"
    args.cases = Q.select_cases(args.cells, args.images, base)
    if args.jdeconv_results is None:
        args.jdeconv_results = [args.out / name for name in DEFAULT_RESULTS]
    return args


def methods_order(methods: list[str]) -> list[str]:
    order = ["input", "rl_oracle", "best_oracle", "jdeconv"]
    names = {
        "wiener": ["sd_wiener", "sd_wiener_oracle"],
        "rl": ["sd_rl", "sd_rl_oracle"],
        "spitfire": ["sd_spitfire", "sd_spitfire_oracle"],
        "ssnn": ["sd_ssnn"],
        "n2v": ["sd_n2v"],
    }
    return order + [n for m in methods for n in names[m]]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch, deconv, versions = import_sdeconv()
    stem = C.output_stem(args.out, NAME, args.tag)
    reference = load_reference(args.jdeconv_results)
    used = sorted(
        {
            reference[c]["source"]
            for c in ("/".join(x) for x in args.cases)
            if c in reference and args.size == 256
        }
    )
    result = {
        "benchmark": NAME,
        "status": "running",
        "machine": C.machine_info(),
        "versions": versions,
        "config": {
            "data": str(args.data),
            "size": args.size,
            "cases": ["/".join(c) for c in args.cases],
            "methods": args.methods,
            "epochs": args.epochs,
            "network_cases": args.network_cases,
            "patch": args.patch,
            "rl_max": args.rl_max,
            "rl_counts": [n for n in RL_COUNTS if n <= args.rl_max] or [args.rl_max],
            "spitfire_regs": args.spitfire_regs,
            "wiener_betas": list(WIENER_BETAS),
            "pad": PAD,
            "seed": args.seed,
            "border": args.border,
            "reference_files": used,
        },
        "methods_order": methods_order(args.methods),
        "images": [],
        "summary": {},
    }
    kinds = {spec.name: spec for spec in X.IMAGES}
    t_run = time.perf_counter()
    for done, case in enumerate(args.cases, 1):
        psf_name, noise_name, image_name = case
        name = "/".join(case)
        t_image = time.perf_counter()
        gt = X.ground_truth(kinds[image_name], data=args.data, size=args.size, seed=args.seed)
        psf = X.load_psf(psf_name, args.data)
        noise = X.NOISES[noise_name]
        noisy = np.asarray(
            degrade(
                Q.noise_key(args.seed, case), gt, psf, normalize=False, **noise.degrade_kwargs()
            ),
            np.float32,
        )
        entry = {"case": name, "input_psnr": psnr(gt, noisy, data_range=C.DATA_RANGE)}
        ref = reference.get(name) if args.size == 256 else None
        if ref is not None:
            if not math.isclose(ref["input_psnr"], entry["input_psnr"], abs_tol=1e-4):
                raise SystemExit(
                    f"{name}: input PSNR {entry['input_psnr']:.4f} differs from "
                    f"{ref['source']}'s {ref['input_psnr']:.4f}: not the same degradation"
                )
            known = ref["methods"]
            methods = {m: known[m] for m in ("input", "rl_oracle", "best_oracle") if m in known}
            if "default" in known:
                methods["jdeconv"] = known["default"]
            entry["reference"] = ref["source"]
        else:
            known = Q.classical(noisy, psf, gt, border=args.border, rl_max=args.rl_max)
            methods = {m: known[m] for m in ("input", "rl_oracle", "best_oracle")}
            entry["reference"] = "recomputed (quality.classical)"
        score = dict(border=args.border)
        if "wiener" in args.methods:
            methods.update(run_wiener(deconv, noisy, psf, gt, **score))
        if "rl" in args.methods:
            methods.update(run_rl(deconv, noisy, psf, gt, **score, rl_max=args.rl_max))
        if "spitfire" in args.methods:
            methods.update(run_spitfire(deconv, noisy, psf, gt, **score, regs=args.spitfire_regs))
        networks = args.network_cases is None or any(
            fnmatch.fnmatch(name, pattern) for pattern in args.network_cases
        )
        for kind in ("ssnn", "n2v"):
            if kind in args.methods and networks:
                methods[f"sd_{kind}"] = run_network(
                    torch,
                    deconv,
                    kind,
                    noisy,
                    psf,
                    gt,
                    **score,
                    epochs=args.epochs,
                    patch=args.patch,
                    seed=args.seed,
                )
        entry["methods"] = methods
        entry["seconds"] = time.perf_counter() - t_image
        result["images"].append(entry)
        result["summary"] = summarise(result["images"], result["methods_order"])
        result["status"] = "complete" if done == len(args.cases) else "partial"
        result["elapsed_s"] = time.perf_counter() - t_run
        parts = ", ".join(
            f"{SHORT[m]} {methods[m]['psnr']:.2f}" for m in result["methods_order"] if m in methods
        )
        print(f"[{done}/{len(args.cases)}] {name} ({entry['seconds']:.0f} s): {parts}", flush=True)
        C.write_json(stem.with_suffix(".json"), result)
        write_markdown(stem.with_suffix(".md"), result)
    print(f"wrote {stem}.md/.json in {time.perf_counter() - t_run:.0f} s", flush=True)
    return result


if __name__ == "__main__":
    main()
