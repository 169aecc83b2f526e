"""The records of benchmarks/convolution.py and what they show.

A record is one method at one point (image shape, kernel size, direction). Here: the
method and direction names, the paper's numbers, and the analysis: where FFT becomes
faster than direct convolution, and how ``method="auto"`` compares with the faster one.
"""

from __future__ import annotations

import math

METHODS = ("fft", "fft_no_otf", "direct", "auto", "fftconvolve")
DIRECTIONS = ("forward", "backward")  # backward = forward + gradient w.r.t. the image
DIRECTION_LABEL = {"forward": "forward", "backward": "forward+backward"}

# Papkov et al. 2023 (arXiv 2308.09426): FFT advised above these kernel sizes (GPU).
PAPER_FFT_ABOVE = {2: 25, 3: 9}
PAPER_SPEEDUPS = {17: 2.3, 31: 14.0}  # whole training, 3D, FFT vs direct


def by_point(records: list[dict]) -> dict:
    """(shape, direction, kernel) -> {method: record}."""
    out: dict = {}
    for r in records:
        out.setdefault((tuple(r["shape"]), r["direction"], r["kernel"]), {})[r["method"]] = r
    return out


def crossover(records: list[dict]) -> list[dict]:
    """Per (shape, direction): smallest kernel from which FFT beats direct at all larger."""
    table = by_point(records)
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


def faster(m: dict) -> str:
    """The faster of fft and direct by median ("fft" on a tie or when direct was not run)."""
    return min(("fft", "direct"), key=lambda n: m[n]["median_s"] if n in m else math.inf)


def auto_ratio(m: dict) -> float:
    """auto's time / the faster method's: A/B alternation, else the ratio of medians."""
    ab = m["auto"].get("ab_vs_faster")
    if ab is not None:
        return ab["ratio"]
    return m["auto"]["median_s"] / m[faster(m)]["median_s"]


def auto_summary(records: list[dict]) -> dict:
    """auto vs the faster of fft and direct at every point."""
    table = by_point(records)
    rows = []
    for (shape, direction, k), m in table.items():
        fastest = faster(m)
        auto, best = m["auto"], m[fastest]
        rows.append(
            {
                "shape": list(shape),
                "direction": direction,
                "kernel": k,
                "auto_choice": auto["runs_as"],
                "faster": fastest,
                "same_program": auto.get("same_program_as_runs_as"),
                "auto_over_best": auto_ratio(m),
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
