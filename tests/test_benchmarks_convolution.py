"""The convolution benchmark's --quick mode runs and writes sane results; auto's rule."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jdeconv.forward import auto_method

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "convolution.py"


def _run_quick(script: Path, out: Path) -> Path:
    """Run a benchmark script with --quick into ``out``; return its JSON result's path."""
    # A subprocess, so the script's own JAX/matplotlib set-up cannot leak into this session.
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SCRIPT.parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (json_path,) = out.glob(f"{script.stem}-*-quick.json")
    return json_path


def test_quick_benchmark_writes_results(tmp_path):
    json_path = _run_quick(SCRIPT, tmp_path)
    stem = json_path.with_suffix("")
    for suffix in (".md", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    result = json.loads(json_path.read_text())
    for key in ("machine", "config", "forward_models", "crossover", "auto", "auto_rule"):
        assert key in result
    for key in ("platform", "processor", "uname", "cpu_count", "jax", "jaxlib", "date"):
        assert key in result["machine"]
    assert result["config"]["quick"] is True

    records = result["forward_models"]
    methods = {r["method"] for r in records}
    assert methods == {"fft", "fft_no_otf", "direct", "auto", "fftconvolve"}
    assert {r["direction"] for r in records} == {"forward", "backward"}
    assert {r["ndim"] for r in records} == {2, 3}
    # Whether a call is measured or extrapolated (predicted slower than --max-call) depends
    # on the machine's speed; only the shape of the records is checked here.
    measured = [r for r in records if not r["mode"].startswith("extrapolated")]
    for r in records:
        assert 0 < r["min_s"] <= r["median_s"]
        assert r["repeats"] == len(r["times_s"])  # 0 where extrapolated
    # Samples average back-to-back calls (at least one).
    assert measured and all(r["repeats"] >= 1 and r["calls_per_sample"] >= 1 for r in measured)
    # FFT and direct agree (outputs and gradients) at every point where both ran.
    points = {}
    for r in measured:
        points.setdefault((tuple(r["shape"]), r["kernel"], r["direction"]), {})[r["method"]] = r
    errors = [m["direct"]["rel_err_vs_fft"] for m in points.values() if {"fft", "direct"} <= set(m)]
    assert errors and all(e is not None for e in errors)
    assert max(errors) < 1e-4
    assert result["max_rel_err_direct_vs_fft"] == max(errors)
    assert len(result["crossover"]) == 4  # 2 shapes x (forward, forward+backward)

    # auto resolves at construction: it lowers to the very program of the method it picks,
    # and is timed against the faster method by A/B alternation at every point where 3
    # pairs fit in the budget. (How many fit, and whether auto picks the faster method,
    # are timing results: benchmarks/results and the fake-clock tests below, not asserts.)
    auto = result["auto"]
    assert auto["points"] == len(records) // 5 == 12
    assert auto["same_program"] == auto["points"]
    max_pairs = result["config"]["ab_pairs"]
    for r in auto["rows"]:  # 0 pairs: fewer than 3 fit in the budget (a ratio of medians)
        assert r["auto_over_best"] > 0 and (r["ab_pairs"] == 0 or 3 <= r["ab_pairs"] <= max_pairs)

    # The whole-train-step section: FFT and direct steps of the tiny network.
    steps = {r["method"]: r for r in result["train_step"]}
    assert set(steps) == {"fft", "direct"}
    for r in steps.values():
        assert r["repeats"] >= (0 if r["extrapolated"] else 1)
        assert 0 < r["step_min_s"] <= r["step_median_s"]
    assert steps["direct"]["fft_speedup"] == pytest.approx(
        steps["direct"]["step_min_s"] / steps["fft"]["step_min_s"]
    )
    markdown = stem.with_suffix(".md").read_text()
    assert "## Whole train step: FFT vs direct forward model" in markdown


class FakeClock:
    """A clock that moves only when a stand-in function runs: timings known exactly."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Done:
    def block_until_ready(self):
        return self


def _stand_in(name: str, seconds: float, clock: FakeClock, log: list):
    """A 'compiled function' that takes ``seconds`` on ``clock`` and logs its calls."""

    def fn(*args):
        log.append(name)
        clock.now += seconds
        return _Done()

    return fn


# Durations are powers of two, so the fake clock's sums and differences are exact.
MS = 2.0**-10  # about a millisecond


def test_ab_ratio_alternates_and_measures_the_ratio(load_benchmark):
    timing, clock, log = load_benchmark("_timing"), FakeClock(), []
    a, b = _stand_in("a", 4 * MS, clock, log), _stand_in("b", 2 * MS, clock, log)
    ab = timing.ab_ratio(a, b, (), pairs=4, half=3 * MS, budget=1.0, clock=clock)
    assert ab == {"ratio": 2.0, "pairs": 4, "calls": 2}  # 2 calls of >= 2 ms make a 3 ms half
    # One estimate call each, then AB, BA, AB, BA with two calls per half.
    assert log == list("ab" + "aabb" + "bbaa" + "aabb" + "bbaa")
    # Too slow for 3 pairs in the budget (one pair costs 2 x 2 x 2 ms): no A/B ratio.
    log.clear()
    assert timing.ab_ratio(a, b, (), pairs=4, half=3 * MS, budget=10 * MS, clock=clock) is None
    assert log == ["a", "b"]


def test_ab_ratio_is_the_median_of_the_pairs(load_benchmark):
    # The machine is twice as slow during the second pair: both halves of that pair see
    # it, so its ratio stays 2. One call of b in the fourth pair takes 8x: that pair's
    # ratio drops to 4/9, and the median ignores it.
    timing, clock, log = load_benchmark("_timing"), FakeClock(), []
    # Call numbers: 0-1 the estimates, then 4 per pair (pair i: 2 + 4i to 5 + 4i).
    slowdown = {6: 2, 7: 2, 8: 2, 9: 2, 14: 8}

    def stand_in(name, seconds):
        def fn(*args):
            clock.now += seconds * slowdown.get(len(log), 1)
            log.append(name)
            return _Done()

        return fn

    a, b = stand_in("a", 4 * MS), stand_in("b", 2 * MS)
    ab = timing.ab_ratio(a, b, (), pairs=5, half=3 * MS, budget=1.0, clock=clock)
    assert log[14] == "b"  # the fourth pair is BA
    assert ab == {"ratio": 2.0, "pairs": 5, "calls": 2}


def test_measure_point_batches_fast_calls_and_rotates(load_benchmark):
    timing, clock, order = load_benchmark("_timing"), FakeClock(), []
    durations = {"fast": MS, "slow": 32 * MS, "too_slow": 512 * MS}
    compiled = {name: _stand_in(name, t, clock, order) for name, t in durations.items()}
    point = timing.measure_point(compiled, (), repeats=3, budget=0.4, min_sample=0.01, clock=clock)
    fast, slow, too_slow = point["fast"], point["slow"], point["too_slow"]
    # 11 calls of 1 ms make one 10 ms sample; the untimed call before it is not counted.
    assert fast["calls_per_sample"] == 11 and slow["calls_per_sample"] == 1
    assert fast["times_s"] == [MS] * 3 and slow["times_s"] == [32 * MS] * 3
    assert (fast["min_s"], fast["median_s"], fast["repeats"]) == (MS, MS, 3)
    assert fast["mode"] == slow["mode"] == "measured"
    # Slower than the whole budget: the warm-up call is the only sample.
    assert too_slow["mode"] == "1 call" and too_slow["times_s"] == [512 * MS]
    assert too_slow["calls_per_sample"] == 1 and too_slow["repeats"] == 1
    # Warm-up: fast twice (first call, then a per-call estimate), slow twice, too_slow
    # once. Then rounds in rotated order (fast, slow | slow, fast | fast, slow; too_slow
    # is done), each sample preceded by one untimed call (both are under 50 ms).
    fast_sample, slow_sample = ["fast"] * 12, ["slow"] * 2
    warm_up = ["fast", "fast", "slow", "slow", "too_slow"]
    rounds = fast_sample + slow_sample + slow_sample + fast_sample + fast_sample + slow_sample
    assert order == warm_up + rounds


def test_missing_reference_psfs_is_a_clear_error(tmp_path, capsys, load_benchmark):
    bench = load_benchmark("convolution")
    with pytest.raises(SystemExit) as info:
        bench.parse_args(["--data", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "gl_3d_17.npy" in err and "--no-train-step" in err
    # Without the section, or in quick mode (a generated PSF), no data is needed.
    assert bench.parse_args(["--data", str(tmp_path), "--no-train-step"]).train_step is False
    assert bench.parse_args(["--data", str(tmp_path), "--quick"]).quick is True


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
@pytest.mark.parametrize(
    ("image_shape", "small", "large"),
    [((256, 256), (3, 3), (63, 63)), ((64, 128, 128), (3, 3, 3), (31, 31, 31))],
)
def test_auto_method_rule(monkeypatch, backend, image_shape, small, large):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    ndim = len(image_shape)
    assert auto_method((1,) * ndim, image_shape) == "direct"  # no blur: nothing to transform
    assert auto_method(large, image_shape) == "fft"
    # benchmarks/results/convolution-cpu.md: XLA's CPU direct convolution loses to FFT
    # already at 3x3 / 3x3x3; on a GPU (convolution-gpu.md, an H100) direct wins there.
    assert auto_method(small, image_shape) == ("fft" if backend == "cpu" else "direct")


@pytest.mark.parametrize(
    ("backend", "last_direct", "first_fft"),
    [
        # convolution-gpu.md: FFT faster from 9x9 (1024², 2048²) and 5x5x5 (64x128x128).
        ("gpu", {2: 7, 3: 3}, {2: 9, 3: 5}),
        # Unmeasured backends keep Papkov et al. 2023's advice: FFT above 25x25 / 9x9x9.
        ("tpu", {2: 25, 3: 9}, {2: 27, 3: 11}),
    ],
)
def test_auto_method_thresholds_per_backend(monkeypatch, backend, last_direct, first_fft):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    for ndim in (2, 3):
        image_shape = (256, 256) if ndim == 2 else (64, 128, 128)
        assert auto_method((last_direct[ndim],) * ndim, image_shape) == "direct"
        assert auto_method((first_fft[ndim],) * ndim, image_shape) == "fft"


def test_train_step_benchmark_quick(tmp_path):
    json_path = _run_quick(SCRIPT.with_name("train_step.py"), tmp_path)
    result = json.loads(json_path.read_text())
    cases = {r["case"]: r for r in result["records"]}
    assert set(cases) == {
        "2d-default",
        "3d-default",
        "3d-native-conv",
        "3d-psf5-fft",
        "3d-psf5-direct",
    }
    for r in cases.values():
        assert r["repeats"] >= 1 and 0 < r["step_min_s"] <= r["step_median_s"]
        assert r["compile_s"] > 0 and r["xla_memory_mb"] > 0
    assert cases["3d-native-conv"]["conv3d"] == "native"
    assert cases["3d-psf5-direct"]["method"] == "direct"
    assert cases["3d-psf5-direct"]["volume_estimate_s"] > 0
    assert "| 3d-psf5-direct |" in json_path.with_suffix(".md").read_text()


def test_conv_gradient_benchmark_quick(tmp_path):
    json_path = _run_quick(SCRIPT.with_name("conv_gradient.py"), tmp_path)
    result = json.loads(json_path.read_text())
    (two,) = result["layers_2d"]
    assert all(two["xla"][k] > 0 for k in ("forward_s", "input_grad_s", "kernel_grad_s"))
    (three,) = result["layers_3d"]
    assert three["xla"]["stacked_fwd_bwd_s"] > 0 and three["xla"]["native_fwd_bwd_s"] > 0
    text = json_path.with_suffix(".md").read_text()
    assert "| 2 × 16², 4 → 4 |" in text and "| 2 × 8×12², 4 → 4 |" in text
