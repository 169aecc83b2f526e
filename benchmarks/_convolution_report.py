"""The Markdown report and the plot of benchmarks/convolution.py."""

from __future__ import annotations

from pathlib import Path

from _common import atomic_write_text, save_figure
from _convolution_analysis import (
    DIRECTION_LABEL,
    DIRECTIONS,
    METHODS,
    PAPER_SPEEDUPS,
    auto_ratio,
    by_point,
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
    table = by_point(records)
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
                ratio = auto_ratio(m)
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
    table = by_point(result["forward_models"])
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

    table = by_point(records)
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
