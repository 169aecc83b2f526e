"""Shared pieces of the paper benchmarks: paper_2d.py, paper_3d.py and model_selection.py.

Scoring (PSNR, SSIM, MI, SMI, RMSE against the ground truth), the Richardson-Lucy
baselines with the ground-truth "oracle" iteration count, one timed ``jdeconv.fit`` per
preset, ``--set key=value`` config overrides, machine/library metadata, atomic writes and
Markdown formatting. Not a public module: the scripts import it from their own folder.
"""

from __future__ import annotations

import ast
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # Run as a script from a checkout without installing.
    sys.path.insert(0, str(ROOT))

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import optax  # noqa: E402

import jdeconv  # noqa: E402
from jdeconv import Config, _files  # noqa: E402
from jdeconv.classic import make_richardson_lucy  # noqa: E402
from jdeconv.config import FLAT_FIELDS  # noqa: E402
from jdeconv.devices import use_cpu_devices  # noqa: E402
from jdeconv.metrics import (  # noqa: E402
    mutual_information,
    psnr,
    rmse,
    spectral_mutual_information,
    ssim,
)
from jdeconv.psf import validate_psf  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
PRESETS = ("noise2self", "noise2same", "noise2same_d")
# The method name of jdeconv.fit's default config, Config.default(ndim) (per device).
DEFAULT_METHOD = "default"
RL_COUNTS = (2, 5, 10, 20)
# Intensity range of the ground truth (min-max normalised): PSNR and SSIM use 1, not the
# 2 of the SSI code (DESIGN.md §3).
DATA_RANGE = 1.0
METRICS = ("psnr", "psnr_border", "ssim", "mi", "smi", "rmse")


# --------------------------------------------------------------------------- options


def _parse_value(text: str):
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string setting such as schedule=step


def parse_overrides(items: Iterable[str] | None) -> dict:
    """``["steps=500", "schedule=step", "tta=false"]`` -> Config overrides.

    Values are Python literals (numbers, True/False/None, tuples, dicts) or bare strings;
    unknown field names raise ``SystemExit`` with the valid names.
    """
    fields = Config.keywords()
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        if key not in fields:
            raise SystemExit(f"--set: unknown Config field {key!r}; valid: {sorted(fields)}")
        out[key] = _parse_value(value)
    return out


def check_presets(names: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in PRESETS and n != DEFAULT_METHOD]
    if unknown:
        choices = [DEFAULT_METHOD, *PRESETS]
        raise SystemExit(f"--methods: unknown presets {unknown}; choose from {choices}")
    return names


def output_stem(out: Path, name: str, tag: str | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out / (f"{name}-{tag}" if tag else name)


# --------------------------------------------------------------------------- metadata


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _git(*args) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def machine_info() -> dict:
    """Device, CPU, library versions, git commit, load and date of this run."""
    dev = jax.devices()[0]
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    dirty = _git("status", "--porcelain", "--", "jdeconv")
    return {
        "platform": dev.platform,
        "device": str(dev),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "hostname": platform.node(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "uname": platform.uname()._asdict(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_average_at_start": load,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "jdeconv": jdeconv.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "jdeconv_uncommitted_changes": None if dirty is None else bool(dirty),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def machine_lines(info: dict) -> list[str]:
    """The Markdown bullet lines describing the machine and libraries."""
    cpu = info["cpu_model"] or info["processor"] or info["uname"]["machine"]
    commit = (info["git_commit"] or "unknown")[:10]
    if info["jdeconv_uncommitted_changes"]:
        commit += " (+ uncommitted changes in jdeconv/)"
    load = info.get("load_average_at_start")
    load_text = ", ".join(f"{v:.1f}" for v in load) if load else "unknown"
    count = info.get("device_count") or 1
    devices = f"; {count} JAX devices" if count > 1 else ""
    return [
        f"- Date: {info['date']}; command: `{info['command']}`",
        f"- Device: {info['device_kind']} ({info['platform']}, {info['device']}"
        f"{devices}); CPU: {cpu}, "
        f"{info['cpu_affinity'] or info['cpu_count']} cores usable; load average at start "
        f"(1/5/15 min): {load_text} — timings on a shared machine are upper bounds",
        f"- jax {info['jax']}, jaxlib {info['jaxlib']}, flax {info['flax']}, optax "
        f"{info['optax']}, numpy {info['numpy']}, Python {info['python']}; jdeconv "
        f"{info['jdeconv']} at {commit}",
    ]


# --------------------------------------------------------------------------- files


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    _files.atomic_write_text(path, text)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj):
    # JSON has no inf/nan: store them as strings ("inf" for a perfect PSNR).
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(_finite(data), indent=1, default=_json_default) + "\n")


def write_results(stem: Path, result: dict, markdown: str) -> None:
    """``<stem>.json`` (``result``) and ``<stem>.md`` (``markdown``), each written atomically."""
    write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), markdown)
    print(f"wrote {stem}.md/.json", flush=True)


def earlier_run(path: Path, config: dict, keys=None) -> dict | None:
    """The results of an earlier run at ``path``, for ``--resume`` (None if there is none).

    Refused (SystemExit) when its config differs from ``config`` on ``keys`` (default:
    every key of either but ``resumed``), compared as JSON stores them: finished cases
    run with other settings would make a silently wrong table.
    """
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    now = json.loads(json.dumps(_finite(config), default=_json_default))
    if keys is None:
        keys = sorted((set(now) | set(earlier["config"])) - {"resumed"})
    different = [k for k in keys if earlier["config"].get(k) != now.get(k)]
    if different:
        raise SystemExit(
            f"--resume: {path} was run with other settings ({different}); "
            "use another --tag or drop --resume"
        )
    return earlier


def save_figure(fig, path: Path) -> None:
    _files.atomic_write(
        path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    )


# --------------------------------------------------------------------------- scoring


def interior(arr: np.ndarray, border: int) -> np.ndarray | None:
    """``arr`` without ``border`` pixels on every side (None if nothing would be left)."""
    if border <= 0 or any(n <= 2 * border for n in arr.shape):
        return None
    return arr[tuple(slice(border, n - border) for n in arr.shape)]


def score(gt: np.ndarray, image: np.ndarray, *, border: int) -> dict:
    """All metrics of ``image`` against the ground truth ``gt`` (both in [0, 1] scale).

    ``psnr_border`` is the PSNR without a ``border``-pixel frame (None when not asked or
    the image is too small). Nothing is clipped: outputs are scored as they come.
    """
    inner_gt, inner = interior(gt, border), interior(image, border)
    return {
        "psnr": psnr(gt, image, data_range=DATA_RANGE),
        "psnr_border": None if inner is None else psnr(inner_gt, inner, data_range=DATA_RANGE),
        "ssim": ssim(gt, image, data_range=DATA_RANGE),
        "mi": mutual_information(gt, image),
        "smi": spectral_mutual_information(gt, image),
        "rmse": rmse(gt, image),
    }


# --------------------------------------------------------------------------- baselines


def _time_call(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def richardson_lucy_oracle(
    noisy: np.ndarray,
    psf: np.ndarray,
    gt: np.ndarray,
    *,
    counts: Sequence[int] = RL_COUNTS,
    n_max: int = 50,
    border: int,
    repeats: int = 3,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Richardson-Lucy at fixed iteration counts and at the ground-truth-best count.

    RL uses zero padding and the FFT blur, as the degradation, and starts from the
    constant image mean (``jdeconv.richardson_lucy``'s default). One run to
    ``max(n_max, counts)`` scores every iterate; the "oracle" is the count in
    ``1..n_max`` with the highest PSNR against ``gt`` — a choice no user can make
    without ground truth, so it is an upper bound for RL. Times (ms) are of a warm,
    jitted run of ``n`` iterations from the start, the minimum of ``repeats``.

    Returns:
      ``(records, images)``: records keyed ``rl_<n>`` and ``rl_best`` (metrics, ``n``,
      ``infer_ms``) plus ``rl_psnr_curve`` (PSNR at 1..n_max); images keyed alike.
    """
    psf = validate_psf(psf, ndim=noisy.ndim, normalize=True)
    run = make_richardson_lucy(psf, noisy.shape, method="fft", padding="zero")
    y = jnp.asarray(noisy, jnp.float32)
    start = jnp.full(noisy.shape, float(noisy.mean()), jnp.float32)
    last = max(n_max, *counts)
    estimate, curve, kept = start, [], {}
    best_psnr, best_n, best_image = -math.inf, 0, None
    for n in range(1, last + 1):
        estimate = run(y, estimate, 1)
        current = np.asarray(estimate)
        value = psnr(gt, current, data_range=DATA_RANGE)
        if n <= n_max:
            curve.append(value)
            if value > best_psnr:
                best_psnr, best_n, best_image = value, n, current
        if n in counts:
            kept[n] = current
    records, images = {}, {}
    for name, n, image in [
        *((f"rl_{n}", n, kept[n]) for n in counts),
        ("rl_best", best_n, best_image),
    ]:
        times = _time_call(lambda n=n: run(y, start, n), repeats)
        records[name] = {
            **score(gt, image, border=border),
            "n": n,
            "infer_ms": 1e3 * min(times),
            "infer_ms_all": [1e3 * t for t in times],
        }
        images[name] = image
    records["rl_psnr_curve"] = curve
    return records, images


# --------------------------------------------------------------------------- learned


def fit_options(args) -> dict:
    """:func:`fit_preset`'s keyword options from the shared command-line options."""
    return dict(
        overrides=args.config_overrides,
        border=args.border,
        verbose=args.verbose,
        infer_repeats=args.infer_repeats,
    )


def fit_preset(
    noisy: np.ndarray,
    psf: np.ndarray,
    gt: np.ndarray,
    preset: str | None,
    overrides: dict,
    *,
    border: int,
    verbose: bool,
    infer_repeats: int = 1,
) -> tuple[dict, np.ndarray | None]:
    """``jdeconv.fit`` one preset and score it; an exception is recorded, not raised.

    ``preset=None`` (or ``DEFAULT_METHOD``) is the default config, ``Config.default(ndim)``
    — what ``jdeconv.fit(noisy, psf)`` runs on this device — with ``overrides`` applied.

    ``train_s`` is the fit's training loop (steps and validations, after compilation);
    ``infer_ms`` a warm ``jdeconv.deconvolve`` of the whole image with the config's
    test-time augmentation (``fit`` has already compiled the predictor for this shape),
    the minimum of ``infer_repeats`` (0: not measured, None; ``fit_inference_s`` is
    ``fit``'s own first, compiling, inference).
    """
    try:
        if preset is None or preset == DEFAULT_METHOD:
            cfg = Config.default(noisy.ndim, **overrides)
        else:
            cfg = Config.preset(preset, **overrides)
        result = jdeconv.fit(noisy, psf, cfg, verbose=verbose)
        times = []
        if infer_repeats > 0:
            times = _time_call(lambda: jdeconv.deconvolve(noisy, result.model), infer_repeats)
    except Exception as err:  # a long run goes on with the other methods
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}"}, None
    t = result.timings
    history = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in result.history.items()}
    record = {
        **score(gt, result.deconvolved, border=border),
        "train_s": t["train"],
        "compile_s": t["compile"],
        "fit_inference_s": t["inference"],
        "fit_total_s": t["total"],
        "steps": t["steps"],
        "devices": t.get("devices"),
        "seconds_per_step": t["seconds_per_step"],
        "best_step": result.best_step,
        "infer_ms": 1e3 * min(times) if times else None,
        "infer_ms_all": [1e3 * s for s in times],
        "config": config_record(result.model.config),
        "history": history,
    }
    return record, result.deconvolved


def config_record(cfg: Config) -> dict:
    """The config for a results file: its nested dict plus the flat names readers use."""
    flat = {name: getattr(cfg, name) for name in FLAT_FIELDS}
    return {**cfg.to_dict(), **flat, "loss_weights": dict(cfg.loss_weights)}


# --------------------------------------------------------------------------- Markdown


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def fmt_ms(ms) -> str:
    if ms is None:
        return "–"
    return f"{ms:.3g}" if ms < 1000 else f"{ms:,.0f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    """Markdown table lines; ``align`` gives 'l'/'r' per column (default: first l)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---" if a == "l" else "--:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def method_label(name: str, record: dict | None = None) -> str:
    if name == "input":
        return "input"
    if name == "rl_best":
        n = record.get("n") if record else None
        return f"RL oracle (n={n})" if n else "RL oracle"
    if name.startswith("rl_"):
        return f"RL n={name[3:]}"
    return name


def add_config_override_option(p) -> None:
    """``--set KEY=VALUE`` (repeatable): Config overrides for every learned method."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Config override for every learned method (repeatable), e.g. --set batch_size=8",
    )


def add_cpu_devices_option(p, *, results="the results record it") -> None:
    """``--cpu-devices N``: jdeconv trains data-parallel on the CPU split into N JAX devices
    (``results``: what the split does to the results files, for the help)."""
    p.add_argument(
        "--cpu-devices",
        type=int,
        default=1,
        help="split the CPU into N JAX devices for training (jdeconv.use_cpu_devices, as the "
        f"command line does by default on 2 cores): the batch trains data-parallel; {results} "
        "(default 1: the protocol of the earlier results)",
    )


def apply_cpu_devices(args) -> dict:
    """Split the CPU as ``--cpu-devices`` asks, before JAX starts its CPU backend; the entry
    for the results' config (empty at 1, so runs from before the option still resume)."""
    if args.cpu_devices < 1:
        raise SystemExit("--cpu-devices must be at least 1")
    if args.cpu_devices == 1:
        return {}
    use_cpu_devices(n=args.cpu_devices)
    return {"cpu_devices": args.cpu_devices}


def add_methods_option(p) -> None:
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"learned presets to run (default all: {' '.join(PRESETS)}), and/or "
        f"'{DEFAULT_METHOD}' (jdeconv.fit's default config for this device); 'none' for none. "
        "Input and Richardson-Lucy are always run.",
    )


def resolve_methods(methods) -> list[str]:
    """``--methods`` as given: None means every preset, ``none`` means no learned method."""
    if methods is None:
        return list(PRESETS)
    if [m.lower() for m in methods] == ["none"]:
        return []
    return check_presets(methods)


def add_scoring_options(p, *, name: str, border: int, unit: str, infer_repeats: bool) -> None:
    """The options every paper benchmark shares: seed, border, RL range, outputs."""
    p.add_argument("--seed", type=int, default=0, help="noise seed; also the Config seed")
    p.add_argument(
        "--border", type=int, default=border, help=f"also report PSNR without it ({unit})"
    )
    p.add_argument("--rl-max", type=int, default=50, help="RL oracle searches n in 1..this")
    if infer_repeats:
        p.add_argument(
            "--infer-repeats",
            type=int,
            default=1,
            help="warm inference timings (0: skip; saves time on big CPU images)",
        )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--tag", help=f"file name suffix: {name}-<tag>.{{md,json,png}}")


def kept_parameters_text(overrides: dict) -> str:
    """How the learned methods' returned parameters were chosen, from their config."""
    if overrides.get("restore_best", Config().restore_best):
        return (
            "the kept parameters are the latest not significantly worse on the held-out "
            "blind-spot loss (paired z-test; no ground truth)"
        )
    return "the last parameters are returned (the held-out loss is only recorded)"


def learned_methods_text(methods: Sequence[str], overrides: dict) -> str:
    """The Markdown line describing the learned methods of a paper benchmark."""
    presets = [m for m in methods if m != DEFAULT_METHOD]
    parts = []
    if DEFAULT_METHOD in methods:
        parts.append(
            f"`{DEFAULT_METHOD}`: `jdeconv.fit(noisy, psf, Config.default(ndim, **overrides))`, "
            "the default config for the device it ran on (its anchor and its model selection "
            "on held-out pixels: the kept step is in the JSON)"
        )
    if presets:
        parts.append(
            f"presets {', '.join(presets)}: `jdeconv.fit(noisy, psf, Config.preset(name, "
            f"**overrides))`; {kept_parameters_text(overrides)}"
        )
    return (
        f"- Learned: {'; '.join(parts) or 'none'}. Overrides: "
        f"{learned_overrides_text(overrides)}. No ground truth is used."
    )


def learned_overrides_text(overrides: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "none (preset defaults)"
