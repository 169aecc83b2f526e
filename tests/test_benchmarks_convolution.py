"""The convolution benchmark's --quick mode runs and writes sane results; auto's rule."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jdeconv.forward import auto_method

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "convolution.py"


def test_quick_benchmark_writes_results(tmp_path):
    # A subprocess, so the script's own JAX/matplotlib set-up cannot leak into this session.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=SCRIPT.parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (json_path,) = tmp_path.glob("convolution-*-quick.json")
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
