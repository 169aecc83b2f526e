"""The paper benchmarks' --quick modes run end to end and write complete results.

Each script runs in a subprocess (its own JAX/matplotlib set-up cannot leak into this
session) with one learned preset, into ``tmp_path``; about 30-60 s each on a 2-core CPU.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCORES = {"psnr", "psnr_border", "ssim", "mi", "smi", "rmse"}
RL_METHODS = {"input", "rl_2", "rl_5", "rl_10", "rl_20", "rl_best"}
LEARNED_KEYS = SCORES | {"train_s", "compile_s", "infer_ms", "steps", "best_step", "config"}
MACHINE_KEYS = {"platform", "device_kind", "cpu_count", "jax", "jaxlib", "flax", "date"}


def _run(script: str, out: Path, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    stem = out / (Path(script).stem + "-quick")
    for suffix in (".md", ".json", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0, suffix
    return json.loads(stem.with_suffix(".json").read_text())


def _check_scores(record: dict) -> None:
    assert "error" not in record, record.get("error")
    assert SCORES <= set(record)
    assert math.isfinite(record["psnr"]) and 0 < record["rmse"] < 1
    assert -1 <= record["ssim"] <= 1 and 0 <= record["mi"] <= 1 and 0 <= record["smi"] <= 1


def test_paper_2d_quick(tmp_path, shared_data):
    result = _run("paper_2d.py", tmp_path, "--methods", "noise2self", "--data", str(shared_data))
    assert result["status"] == "complete"
    assert MACHINE_KEYS <= set(result["machine"])
    cfg = result["config"]
    assert cfg["quick"] is True and cfg["crop"] == 64 and cfg["methods"] == ["noise2self"]
    assert len(result["images"]) == 2
    for image in result["images"]:
        assert image["shape"] == [64, 64]
        assert set(image["methods"]) == RL_METHODS | {"noise2self"}
        for record in image["methods"].values():
            _check_scores(record)
        assert LEARNED_KEYS <= set(image["methods"]["noise2self"])
        best = image["methods"]["rl_best"]
        # The oracle is the best RL iterate: no fixed count within its range beats it.
        assert best["psnr"] == max(image["rl_psnr_curve"])
        assert best["psnr"] >= max(image["methods"][f"rl_{n}"]["psnr"] for n in (2, 5, 10))
    summary = result["summary"]
    assert set(summary) == RL_METHODS | {"noise2self"}
    assert summary["noise2self"]["n_images"] == 2
    assert 0 <= summary["noise2self"]["wins_vs_rl_best"] <= 2
    md = (tmp_path / "paper_2d-quick.md").read_text()
    assert "papers' numbers" in md and "22.8" in md and "zero fill" in md


def test_paper_3d_quick(tmp_path):
    result = _run("paper_3d.py", tmp_path, "--methods", "noise2self")
    assert result["status"] == "complete"
    assert MACHINE_KEYS <= set(result["machine"])
    assert result["volume"]["shape"] == [24, 32, 32]
    assert set(result["methods"]) == RL_METHODS | {"noise2self"}
    for record in result["methods"].values():
        _check_scores(record)
    assert LEARNED_KEYS <= set(result["methods"]["noise2self"])
    assert result["methods"]["rl_best"]["psnr"] == max(result["rl_psnr_curve"])
    md = (tmp_path / "paper_3d-quick.md").read_text()
    assert "papers' numbers" in md and "24.1" in md


def test_model_selection_quick(tmp_path, shared_data):
    result = _run("model_selection.py", tmp_path, "--data", str(shared_data))
    assert result["status"] == "complete"
    curve = result["curve"]
    assert [r["step"] for r in curve] == [2, 4, 6]
    sel = result["selection"]
    # fit keeps the parameters of the lowest validation loss: the same step we find.
    assert sel["chosen_step"] == sel["fit_kept_step"]
    assert sel["psnr_lost"] >= 0 and sel["best_psnr"] == max(r["psnr"] for r in curve)
    assert -1 <= sel["spearman"] <= 1
    assert result["final"]["psnr"] == pytest.approx(sel["chosen_psnr"], abs=1e-4)


def test_methods_option_takes_the_default_config(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _common as C

    assert C.resolve_methods(["default", "noise2self", "default"]) == ["default", "noise2self"]
    assert C.resolve_methods(None) == list(C.PRESETS)
    with pytest.raises(SystemExit, match=r"unknown presets \['n2v'\]; choose from \['default'"):
        C.resolve_methods(["n2v"])
    text = C.learned_methods_text(["default", "noise2same_d"], {"seed": 0})
    assert "Config.default(ndim, **overrides)" in text and "presets noise2same_d" in text
    assert "the last parameters are returned" in text  # the presets' selection, not default's
    only_default = C.learned_methods_text(["default"], {})
    assert "Config.preset" not in only_default and "last parameters" not in only_default
