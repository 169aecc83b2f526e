"""benchmarks/quality.py --tiny runs end to end and writes complete, consistent results.

It runs in a subprocess (as tests/test_benchmarks_paper.py does), into ``tmp_path``. The
tiny cases use phantoms and model PSFs only, so no reference data are needed; about a
minute on a 2-core CPU (the one jdeconv fit compiles), seconds with --classical-only.
"""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from jdeconv.config import Config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCORES = {"psnr", "psnr_border", "ssim", "mi", "smi", "rmse"}
ORACLES = {"rl_oracle", "rl_tv_oracle", "tik_id_oracle", "tik_lap_oracle"}
CLASSICAL = {"input", "rl_5", "best_oracle", "tik_lap_gcv", "tik_id_disc", "rl_disc"} | ORACLES


def _run(out: Path, *args: str) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "quality.py"), "--tiny", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    stem = out / "quality-tiny"
    md = stem.with_suffix(".md").read_text()
    return json.loads(stem.with_suffix(".json").read_text()), md


def _check_classical(entry: dict) -> None:
    methods = entry["methods"]
    assert CLASSICAL <= set(methods)
    for name in CLASSICAL:
        record = methods[name]
        assert SCORES <= set(record), name
        assert math.isfinite(record["psnr"]) and -1 <= record["ssim"] <= 1
    # The best oracle is the best of the four oracles, and every oracle is at least as
    # good as its ground-truth-free counterpart's choice on the same grid/range.
    best = max(ORACLES, key=lambda m: methods[m]["psnr"])
    assert methods["best_oracle"]["method"] == best
    assert methods["best_oracle"]["psnr"] == methods[best]["psnr"]
    assert methods["rl_oracle"]["psnr"] >= methods["rl_5"]["psnr"]
    assert methods["rl_tv_oracle"]["tv_weight"] > 0 and methods["rl_oracle"]["n"] >= 1
    assert methods["tik_lap_gcv"]["weight"] > 0 and methods["rl_disc"]["n"] >= 1
    assert entry["input_psnr"] == methods["input"]["psnr"]


def test_quality_tiny(tmp_path):
    result, md = _run(tmp_path)
    assert result["status"] == "complete"
    cfg = result["config"]
    assert cfg["tiny"] is True and cfg["size"] == 64 and cfg["learned"] == ["default"]
    assert cfg["overrides"]["steps"] == 2
    assert len(result["images"]) == len(cfg["cases"]) == 2
    for entry in result["images"]:
        assert entry["shape"] == [64, 64]
        assert entry["case"] == f"{entry['psf']}/{entry['noise']}/{entry['image']}"
        _check_classical(entry)
        learned = entry["methods"]["default"]
        assert "error" not in learned, learned.get("error")
        assert learned["steps"] == 2 and learned["config"]["name"] == "noise2same_d"
        assert learned["wall_s"] >= learned["train_s"] > 0
        for ref in ("rl_oracle", "best_oracle"):
            expected = learned["psnr"] - entry["methods"][ref]["psnr"]
            assert math.isclose(learned[f"dpsnr_vs_{ref}"], expected)
    summary = result["summary"]
    assert summary["default"]["n_images"] == 2
    assert 0 <= summary["default"]["wins_vs_best_oracle"] <= 2
    assert summary["default"]["worst"]["case"] in cfg["cases"]
    # Issue 10's targets, recomputed here from the per-image records.
    d_rl = {e["case"]: e["methods"]["default"]["dpsnr_vs_rl_oracle"] for e in result["images"]}
    d_best = [e["methods"]["default"]["dpsnr_vs_best_oracle"] for e in result["images"]]
    targets = summary["default"]
    assert targets["n_cells"] == 2  # the two tiny cases are in different cells
    assert targets["cells_ahead_of_rl_oracle"] == sum(d > 0 for d in d_rl.values())
    assert targets["cells_ahead_of_best_oracle"] == sum(d > 0 for d in d_best)
    assert targets["below_rl_oracle_by_0.3"] == sum(d < -0.3 for d in d_rl.values())
    worst = min(d_rl, key=d_rl.get)
    assert targets["worst_vs_rl_oracle"] == {"case": worst, "dpsnr_vs_rl_oracle": d_rl[worst]}
    assert "Issue 10's targets: ahead of the RL oracle on the mean of" in md
    assert set(summary["gt_free_vs_oracle"]) == {"tik_lap_gcv", "tik_id_disc", "rl_disc"}
    for heading in (
        "## Protocol",
        "## Mean over all images",
        "## Mean PSNR per cell",
        "## Ground-truth-free rules",
        "## Per image: SSIM",
    ):
        assert heading in md
    assert "zero fill" in md and "Padding" in md and "jdeconv default" in md
    for case in cfg["cases"]:
        assert f"| {case} |" in md


def test_quality_tiny_classical_only(tmp_path):
    result, md = _run(tmp_path, "--classical-only", "--cells", "*/*/edges")
    assert result["config"]["learned"] == [] and result["config"]["classical_only"]
    assert [e["content"] for e in result["images"]] == ["edges"]
    _check_classical(result["images"][0])
    assert "default" not in result["images"][0]["methods"]
    assert "classical methods only" in md


def test_quality_resume_keeps_finished_images(tmp_path):
    first, _ = _run(tmp_path, "--classical-only", "--cells", "*/*/edges")
    (kept,) = first["images"]
    second, md = _run(tmp_path, "--classical-only", "--resume")
    assert second["status"] == "complete"
    assert [e["case"] for e in second["images"]] == second["config"]["cases"]
    assert len(second["images"]) == 2
    again = next(e for e in second["images"] if e["case"] == kept["case"])
    assert again == kept  # reused, not recomputed
    assert second["config"]["resumed"]["images"] == [kept["case"]]
    assert "Resumed" in md
    # Other settings: refused rather than mixed.
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "quality.py"),
            "--tiny",
            "--classical-only",
            "--resume",
            "--rl-max",
            "7",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 1 and "was run with other settings" in proc.stderr
    assert "use another --tag or drop --resume" in proc.stderr and "Traceback" not in proc.stderr


def test_full_run_order_visits_every_cell_before_any_cell_twice(load_benchmark):
    quality = load_benchmark("quality")
    cases = quality.all_cases()
    order = quality.run_order(cases)
    assert sorted(order) == sorted(cases) and len(order) == len(cases)
    kind = {s.name: s.kind for s in quality.X.IMAGES}
    cells = [(p, n, kind[i]) for p, n, i in order]
    n_cells = len(set(cells))
    assert len(set(cells[:n_cells])) == n_cells  # one image of each cell first
    # Within a round, the matrix order is kept (PSF outermost).
    first_round = order[:n_cells]
    assert first_round == sorted(first_round, key=cases.index)


def _script(name: str, out: Path, *args: str) -> tuple[dict, str]:
    """Run ``benchmarks/<name>.py ARGS --out OUT``; its JSON and Markdown."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (path,) = out.glob(f"{name}*.json")
    return json.loads(path.read_text()), path.with_suffix(".md").read_text()


def test_independent_check_runs_on_samples_nothing_was_tuned_on(tmp_path):
    args = ["--images", "camera", "hubble", "--psfs", "gauss1.5", "--noises", "moderate"]
    args += ["offset", "--size", "64", "--rl-max", "3"]
    result, md = _script("independent", tmp_path, *args)
    assert result["status"] == "complete" and len(result["images"]) == 4
    for entry in result["images"]:
        _check_classical(entry)
        assert entry["methods"]["tik_nn_l1"]["sparsity"] >= 0
    # The offset regime is not clipped: a pedestal under the image, as raw camera data.
    assert result["config"]["noises"]["offset"]["clip"] is False
    rl = [e["methods"]["rl_oracle"]["psnr"] for e in result["images"]]
    l1 = [e["methods"]["tik_nn_l1"]["psnr"] for e in result["images"]]
    summary = result["summary"]["tik_nn_l1"]
    assert summary["n"] == 4
    assert math.isclose(summary["dpsnr_vs_rl_oracle"], sum(l1) / 4 - sum(rl) / 4, abs_tol=1e-9)
    assert summary["below_rl_oracle_by_0.3"] == sum(
        a - b < -0.3 for a, b in zip(l1, rl, strict=True)
    )
    assert "## Every image" in md and "gauss1.5/offset/hubble" in md


def test_independent_resume_runs_only_the_missing_cases(tmp_path):
    args = ["--images", "camera", "--psfs", "gauss1.5", "--noises", "moderate", "offset"]
    args += ["--size", "48", "--rl-max", "2", "--tag", "r"]
    full, _ = _script("independent", tmp_path, *args)
    path = tmp_path / "independent-r.json"
    # As if cut off after the first case, whose record is marked to see it kept as is.
    first, second = full["images"]
    first["seconds"] = -1.0
    path.write_text(json.dumps({**full, "status": "partial", "images": [first]}))
    resumed, md = _script("independent", tmp_path, *args, "--resume")
    assert resumed["status"] == "complete"
    assert [e["case"] for e in resumed["images"]] == [first["case"], second["case"]]
    assert resumed["images"][0] == first  # kept, not recomputed
    assert (
        resumed["images"][1]["methods"]["rl_oracle"]["psnr"]
        == second["methods"]["rl_oracle"]["psnr"]
    )
    assert resumed["config"]["resumed"]["cases"] == [first["case"]]
    assert "Resumed (`--resume`): 1 cases" in md
    # Other settings: refused, not mixed into one table.
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "independent.py"), *args, "--resume", "--size", "40"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 1 and "was run with other settings (['size'])" in proc.stderr


def test_quality3d_runs_the_classical_methods_on_volumes(tmp_path, shared_data):
    args = ["--shape", "18", "24", "24", "--psfs", "gl_3d_17", "--noises", "paper"]
    args += ["--phantoms", "puncta", "--rl-max", "2", "--data", str(shared_data)]
    result, md = _script("quality3d", tmp_path, *args)
    assert result["status"] == "complete" and result["config"]["shape"] == [18, 24, 24]
    (entry,) = result["images"]
    _check_classical(entry)
    assert result["summary"]["tik_nn_l1"]["n"] == 1
    assert "18×24×24" in md


def test_quality3d_fits_the_default_on_the_chosen_volumes(tmp_path, shared_data):
    args = ["--shape", "24", "24", "24", "--psfs", "gl_3d_17", "--noises", "paper", "mild"]
    args += ["--phantoms", "puncta", "--rl-max", "2", "--data", str(shared_data), "--fit", "1"]
    args += ["--set", "steps=2", "--set", "patch_size=24", "--set", "patch_size_z=24"]
    args += ["--set", "validate_every=1", "--set", "tta=False", "--cpu-devices", "2"]
    result, md = _script("quality3d", tmp_path, *args)
    assert result["config"]["fit_cases"] == ["gl_3d_17/paper/puncta"]
    # The CPU split into two JAX devices: recorded in the config, the machine and the fit.
    assert result["config"]["cpu_devices"] == 2 == result["machine"]["device_count"]
    assert "; 2 JAX devices)" in md
    assert result["config"]["overrides"]["steps"] == 2
    fitted, plain = result["images"]
    assert "default" not in plain["methods"]
    record = fitted["methods"]["default"]
    assert "error" not in record, record["error"]
    assert record["steps"] == 2 and math.isfinite(record["psnr"])
    assert record["devices"] == 2  # the default 3D batch (4) trained sharded over both
    assert record["config"]["network"]["anchor"] == "nonneg_tikhonov" == Config.default(3).anchor
    assert record["val_history"]["val_step"] == [0, 1, 2]
    delta = record["psnr"] - fitted["methods"]["rl_oracle"]["psnr"]
    assert math.isclose(record["dpsnr_vs_rl_oracle"], delta, abs_tol=1e-9)
    assert result["summary"]["default"]["n"] == 1
    # The fitted volumes get their own comparison and a row per fit (kept step, steps run).
    assert "## Fitted images (1): jdeconv's default" in md
    kept = f"| {record['best_step']} | 2 |"
    assert any(
        line.startswith("| gl_3d_17/paper/puncta |") and kept in line for line in md.splitlines()
    )


def test_boundary_tiny(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "boundary.py"),
            "--tiny",
            "--out",
            str(tmp_path),
            "--data",
            str(tmp_path / "no-data"),  # phantoms and model PSFs only
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "boundary-2d-tiny.json").read_text())
    assert {r["variant"] for r in result["records"]} == {"zero", "outside"}
    for variant, s in result["summary"].items():
        rows = [r for r in result["records"] if r["variant"] == variant]
        gains = [r["auto"]["psnr"] - r["mirror"]["psnr"] for r in rows]
        assert s["n"] == len(rows) == 4
        assert math.isclose(s["mean_gain"], sum(gains) / len(gains), abs_tol=1e-9)
        assert s["worst_gain"] == min(gains)
    # The papers' zero fill is where the mirror errs most (the docstring's point).
    assert result["summary"]["zero"]["mean_gain"] > 0
    text = (tmp_path / "boundary-2d-tiny.md").read_text()
    assert "| zero fill, 64² (quality.py's) | 4 |" in text


def test_cpu_devices_option_is_validated_and_absent_from_the_config_at_one(load_benchmark):
    common = load_benchmark("_common")
    quality = load_benchmark("quality")
    args = quality.parse_args(["--tiny"])
    assert args.cpu_devices == 1 and args.devices_config == {}  # earlier runs still resume
    with pytest.raises(SystemExit, match="--cpu-devices must be at least 1"):
        common.apply_cpu_devices(argparse.Namespace(cpu_devices=0))
    # A resumed run on another device count is refused, not mixed into one table.
    assert "cpu_devices" in quality._RESUME_KEYS
