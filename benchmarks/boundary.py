"""The default anchor's boundary: ``nonnegative_tikhonov(sparsity="auto")`` with a free
extension (``boundary="auto"``) against a mirrored one (``"mirror"``), on the 2D
development matrix of ``quality.py`` (180 images).

Two ways of making each image, to see whether a gain depends on the degradation:

* ``zero``: ``quality.py``'s own — the 256² ground truth blurred with zero fill (the
  papers' protocol: nothing but darkness beyond the image);
* ``outside``: the ground truth at 320² (the same SSI crops widened, or the phantom drawn
  at 320²), blurred and degraded at 320², then the centre 256² of both kept: the sample
  continues beyond the image, as in most real fields of view.

Scores are PSNR against the (cropped) ground truth with data range 1, over the whole
image and without a ``--border``-pixel frame; the weight is chosen by GCV and the ℓ1
weight by ``choose_sparsity``, as the default does.

Usage (from the repository root; ~5 minutes on 2 cores)::

    python benchmarks/boundary.py
    python benchmarks/boundary.py --tiny     # 4 images at 64², seconds (tests)

Writes ``boundary-2d[-tiny].md`` and ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (first: puts this checkout on sys.path before jdeconv)
import _matrix as X  # noqa: E402
import quality as Q  # noqa: E402

from jdeconv.metrics import psnr  # noqa: E402
from jdeconv.regularized import nonnegative_tikhonov  # noqa: E402
from jdeconv.simulate import degrade  # noqa: E402

NAME = "boundary"
BOUNDARIES = ("auto", "mirror")
MARGIN = 32  # pixels of sample beyond each side of the image in the "outside" variant


def make_image(case, variant: str, *, data: Path, size: int, seed: int, truths: dict):
    psf_name, noise_name, image_name = case
    spec = {s.name: s for s in X.IMAGES}[image_name]
    side = size + 2 * MARGIN if variant == "outside" else size
    if (image_name, side) not in truths:
        truths[image_name, side] = X.ground_truth(spec, data=data, size=side, seed=seed)
    gt = truths[image_name, side]
    psf = X.load_psf(psf_name, data)
    kwargs = X.NOISES[noise_name].degrade_kwargs()
    noisy = np.asarray(degrade(Q.noise_key(seed, case), gt, psf, normalize=False, **kwargs))
    if variant == "outside":
        inner = (slice(MARGIN, MARGIN + size),) * 2
        gt, noisy = gt[inner], noisy[inner]
    return gt, noisy.astype(np.float32), psf


def run(args) -> dict:
    records, truths = [], {}
    for variant in args.variants:
        for i, case in enumerate(args.cases):
            gt, noisy, psf = make_image(
                case, variant, data=args.data, size=args.size, seed=args.seed, truths=truths
            )
            rec = {"case": "/".join(case), "variant": variant}
            for boundary in BOUNDARIES:
                x = nonnegative_tikhonov(noisy, psf, sparsity="auto", boundary=boundary)
                inner = C.interior(x, args.border)
                rec[boundary] = {
                    "psnr": psnr(gt, x, data_range=C.DATA_RANGE),
                    "psnr_border": None
                    if inner is None
                    else psnr(C.interior(gt, args.border), inner, data_range=C.DATA_RANGE),
                }
            records.append(rec)
            print(
                f"[{variant} {i + 1}/{len(args.cases)}] {rec['case']}: free "
                f"{rec['auto']['psnr']:.2f}, mirror {rec['mirror']['psnr']:.2f}",
                flush=True,
            )
    return {"records": records, "summary": summarise(records, args.variants)}


def summarise(records, variants) -> dict:
    out = {}
    for variant in variants:
        rows = [r for r in records if r["variant"] == variant]
        diff = np.array([r["auto"]["psnr"] - r["mirror"]["psnr"] for r in rows])
        worst = int(np.argmin(diff))
        border = [
            r["auto"]["psnr_border"] - r["mirror"]["psnr_border"]
            for r in rows
            if r["auto"]["psnr_border"] is not None
        ]
        out[variant] = {
            "n": len(rows),
            "free_psnr": float(np.mean([r["auto"]["psnr"] for r in rows])),
            "mirror_psnr": float(np.mean([r["mirror"]["psnr"] for r in rows])),
            "mean_gain": float(diff.mean()),
            "worst_gain": float(diff[worst]),
            "worst_case": rows[worst]["case"],
            "better": int((diff > 0.05).sum()),
            "worse": int((diff < -0.05).sum()),
            "mean_gain_without_border": float(np.mean(border)) if border else None,
        }
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder")
    p.add_argument("--out", type=Path, default=C.DEFAULT_OUT)
    p.add_argument("--size", type=int, default=256, help="image side")
    p.add_argument("--border", type=int, default=16, help="frame left out of 'PSNR −border'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="4 phantom images at 64² (tests)")
    args = p.parse_args(argv)
    args.variants = ("zero", "outside")
    args.cases = Q.all_cases()
    if args.tiny:
        args.size, args.border = 64, 8
        phantoms = {s.name for s in X.IMAGES if s.source.startswith("phantom:")}
        args.cases = [c for c in args.cases if c[2] in phantoms and c[0] == "gauss2"][:4]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    result = {
        "benchmark": NAME,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": C.machine_info(),
        "config": {"size": args.size, "border": args.border, "seed": args.seed, "margin": MARGIN},
        **run(args),
    }
    result["elapsed_s"] = time.perf_counter() - t0
    stem = C.output_stem(args.out, NAME, "2d-tiny" if args.tiny else "2d")
    C.write_results(stem, result, markdown(result))
    return result


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        "# The anchor's boundary, 2D: free (`boundary='auto'`) vs mirror",
        "",
        "Generated by `benchmarks/boundary.py` (its docstring gives the protocol); every "
        "number in the `.json`. `nonnegative_tikhonov(noisy, psf, sparsity='auto')`, the "
        "default's step 0, with each boundary; PSNR in dB against the ground truth.",
        "",
        *C.machine_lines(result["machine"]),
        "",
        "| degradation | n | free | mirror | mean Δ | worst Δ (image) | Δ > 0.05 | Δ < −0.05 "
        f"| mean Δ without a {cfg['border']}-px border |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    names = {
        "zero": f"zero fill, {cfg['size']}² (quality.py's)",
        "outside": f"sample beyond the image ({cfg['size'] + 2 * cfg['margin']}², cropped)",
    }
    for variant, s in result["summary"].items():
        lines.append(
            f"| {names[variant]} | {s['n']} | {s['free_psnr']:.2f} | {s['mirror_psnr']:.2f} "
            f"| {s['mean_gain']:+.3f} | {s['worst_gain']:+.3f} ({s['worst_case']}) "
            f"| {s['better']} | {s['worse']} | {_signed(s['mean_gain_without_border'])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
