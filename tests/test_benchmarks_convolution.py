"""The convolution benchmark's --quick mode runs and writes sane results; auto's rule."""

import importlib.util
import json
import subprocess
import sys
import time
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
    for r in records:
        assert 0 < r["min_s"] <= r["median_s"]
        assert r["repeats"] == len(r["times_s"]) >= 1
    # FFT and direct agree (outputs and gradients) at every point where direct ran.
    errors = [r["rel_err_vs_fft"] for r in records if r["method"] == "direct"]
    assert errors and all(e is not None for e in errors)
    assert max(errors) < 1e-4
    assert result["max_rel_err_direct_vs_fft"] == max(errors)
    assert len(result["crossover"]) == 4  # 2 shapes x (forward, forward+backward)

    # Samples average back-to-back calls (at least one).
    assert all(r["calls_per_sample"] >= 1 for r in records)
    # auto resolves at construction: it lowers to the very program of the method it picks,
    # and is timed against the faster method by A/B alternation at every point. (Whether
    # it picks the faster method is a timing result: benchmarks/results, not a test.)
    auto = result["auto"]
    assert auto["points"] == len(records) // 5 == 12
    assert auto["same_program"] == auto["points"]
    assert all(r["auto_over_best"] > 0 and r["ab_pairs"] >= 3 for r in auto["rows"])

    # The whole-train-step section: FFT and direct steps of the tiny network.
    steps = {r["method"]: r for r in result["train_step"]}
    assert set(steps) == {"fft", "direct"}
    for r in steps.values():
        assert r["repeats"] >= 1 and 0 < r["step_min_s"] <= r["step_median_s"]
    assert steps["direct"]["fft_speedup"] == pytest.approx(
        steps["direct"]["step_min_s"] / steps["fft"]["step_min_s"]
    )
    markdown = stem.with_suffix(".md").read_text()
    assert "## Whole train step: FFT vs direct forward model" in markdown


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_script():
    return _load(SCRIPT, "convolution_benchmark")


def _load_timing():
    return _load(SCRIPT.with_name("_timing.py"), "benchmark_timing")


def _sleeper(name, seconds, log):
    def fn(*args):
        log.append(name)
        time.sleep(seconds)
        return jax.numpy.zeros(())

    return fn


def test_ab_ratio_alternates_and_measures_the_ratio():
    timing = _load_timing()
    log = []
    a, b = _sleeper("a", 0.004, log), _sleeper("b", 0.002, log)
    ab = timing.ab_ratio(a, b, (), pairs=4, half=0.003, budget=1.0)
    assert ab["pairs"] == 4 and ab["calls"] == 2  # 2 calls of >= 2 ms make a 3 ms half
    assert 1.5 < ab["ratio"] < 2.5  # a sleeps twice as long as b
    # After one estimate call each: AB, BA, AB, BA, two calls per half.
    assert log[2:] == list("aabbbbaaaabbbbaa")
    # Too slow for 3 pairs in the budget: no A/B ratio.
    assert timing.ab_ratio(a, b, (), pairs=4, half=0.003, budget=0.01) is None


def test_measure_point_batches_fast_calls_and_rotates(monkeypatch):
    timing = _load_timing()
    order = []
    compiled = {name: _sleeper(name, t, order) for name, t in (("fast", 0.001), ("slow", 0.03))}
    compiled["too_slow"] = _sleeper("too_slow", 0.5, order)
    point = timing.measure_point(compiled, (), repeats=3, budget=0.4, min_sample=0.01)
    fast, slow, too_slow = point["fast"], point["slow"], point["too_slow"]
    assert fast["calls_per_sample"] >= 5  # ~10 calls of 1 ms make one 10 ms sample
    assert slow["calls_per_sample"] == 1
    assert fast["repeats"] == slow["repeats"] == 3
    assert 0.001 <= fast["min_s"] <= fast["median_s"] < 0.01
    assert 0.03 <= slow["min_s"] <= slow["median_s"] < 0.3
    # Slower than the whole budget: the warm-up call is the only sample.
    assert too_slow["mode"] == "1 call" and too_slow["repeats"] == 1
    assert too_slow["times_s"][0] >= 0.5
    # Warm-up: fast twice (first call, then a per-call estimate), slow twice, too_slow once.
    assert order[:5] == ["fast", "fast", "slow", "slow", "too_slow"]
    # Rounds rotate the order (fast, slow | slow, fast | fast, slow), so runs of the same
    # method merge across rounds 0-1 and 1-2: without rotation there would be six runs.
    runs = [name for i, name in enumerate(order[5:]) if i == 0 or order[4 + i] != name]
    assert runs == ["fast", "slow", "fast", "slow"]


def test_missing_reference_psfs_is_a_clear_error(tmp_path, capsys):
    bench = _load_script()
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
    # already at 3x3 / 3x3x3; on GPUs (Papkov et al. 2023's advice) direct wins there.
    assert auto_method(small, image_shape) == ("fft" if backend == "cpu" else "direct")


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
