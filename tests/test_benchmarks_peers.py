"""benchmarks/torch_reference.py and benchmarks/peers.py (the optional ``peers`` extra).

Without PyTorch/sdeconv (as in CI) only the argument parsing and case lists are tested;
with them, the PyTorch reference is checked against jdeconv (same network output, blur
and loss on the same inputs) and both scripts run end to end on tiny cases.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"optional peers extra: {missing} missing")


def test_torch_reference_arguments_and_cases_without_torch(monkeypatch, capsys, load_benchmark):
    ref = load_benchmark("torch_reference")
    args = ref.parse_args(["--quick", "--cases", "3d", "2d", "--set", "steps=7"])
    cases = ref.case_settings(args)
    assert [c[0] for c in cases] == ["3d-default", "2d-default"]
    for _name, cfg, psf, shape in cases:
        ndim = len(shape)
        assert cfg.name == ("noise2same_d" if ndim == 2 else "noise2same")
        assert psf.ndim == ndim and cfg.base_channels == 4 and cfg.depth == 2
    full = ref.parse_args(["--data", "/nonexistent"])
    assert full.cases == ["2d", "3d"] and full.quality and not full.torch_quality
    with pytest.raises(SystemExit, match="reference PSF not found"):
        ref.case_settings(full)
    with pytest.raises(SystemExit, match="--set: unknown Config field 'no_such_field'"):
        ref.parse_args(["--set", "no_such_field=1"])
    assert full.torch_device == "cpu"
    with pytest.raises(SystemExit):
        ref.parse_args(["--torch-device", "tpu"])
    assert "--torch-device must be cpu or cuda, got 'tpu'" in capsys.readouterr().err
    monkeypatch.setattr(ref, "torch", None)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[peers\]'"):
        ref.main(["--quick", "--no-quality"])


def test_peers_arguments_and_case_list_without_torch(tmp_path, capsys, load_benchmark):
    peers = load_benchmark("peers")
    quality = load_benchmark("quality")
    args = peers.parse_args(["--out", str(tmp_path)])
    assert args.cases == list(quality.QUICK_CASES) and args.tag == "quick-2d"
    assert args.methods == ["wiener", "rl", "spitfire", "ssnn"] and args.epochs == 25
    assert args.jdeconv_results == [tmp_path / n for n in peers.DEFAULT_RESULTS]
    some = peers.parse_args(["--cells", "ssi_ring/*/*", "--methods", "rl", "n2v", "rl"])
    assert {c[0] for c in some.cases} == {"ssi_ring"} and some.methods == ["rl", "n2v"]
    assert args.network_cases is None  # the networks run on every case by default
    assert peers.parse_args(["--network-cases", "a/*"]).network_cases == ["a/*"]
    tiny = peers.parse_args(["--tiny"])
    assert tiny.size == 64 and tiny.tag == "tiny" and len(tiny.cases) == 2
    for bad, message in (
        (["--patch", "30"], "--patch must be a multiple of 4"),
        (["--epochs", "0"], "--epochs and --rl-max must be at least 1"),
        (["--methods", "deepwiener"], "invalid choice: 'deepwiener'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            peers.parse_args(bad)
        assert exit_info.value.code == 2  # argparse's usage error
        assert message in capsys.readouterr().err
    order = peers.methods_order(["wiener", "ssnn"])
    assert order[:4] == ["input", "rl_oracle", "best_oracle", "jdeconv"]
    assert order[4:] == ["sd_wiener", "sd_wiener_oracle", "sd_ssnn"]
    # The 8 rotations/flips a square image trains sdeconv's networks on are distinct.
    views = peers.dihedral(np.arange(16.0).reshape(4, 4))
    assert len({v.tobytes() for v in views}) == 8


def test_peers_reads_the_newest_reference_per_case(tmp_path, load_benchmark):
    peers = load_benchmark("peers")

    def write(name, date, psnr):
        entry = {"case": "a/b/c", "input_psnr": 10.0, "methods": {"default": {"psnr": psnr}}}
        data = {"machine": {"date": date}, "images": [entry]}
        (tmp_path / name).write_text(json.dumps(data))

    write("old.json", "2026-01-01T00:00:00+00:00", 1.0)
    write("new.json", "2026-02-01T00:00:00+00:00", 2.0)
    ref = peers.load_reference([tmp_path / "old.json", tmp_path / "new.json", tmp_path / "x"])
    assert ref["a/b/c"]["methods"]["default"]["psnr"] == 2.0
    assert ref["a/b/c"]["source"] == "new.json"


@_needs("torch")
@pytest.mark.parametrize("ndim", [2, 3])
def test_torch_reference_matches_jdeconv(ndim, load_benchmark):
    # Same parameters in both networks: same output; and the same blur and loss terms.
    import jax
    import jax.numpy as jnp
    import torch

    from jdeconv import Config
    from jdeconv.forward import make_forward
    from jdeconv.losses import Passes, make_loss
    from jdeconv.psf import gaussian_psf
    from jdeconv.unet import apply_network, init_unet

    ref = load_benchmark("torch_reference")
    shape = (16, 16) if ndim == 2 else (8, 16, 16)
    cfg = Config.default(ndim, backend="cpu").replace(base_channels=4, depth=2)
    graphdef, params = init_unet(0, cfg.unet(ndim))
    net = ref.TorchUNet(ndim, base_channels=4, depth=2)
    ref.load_jdeconv_params(net, params)
    assert ref.count_params(net) == sum(p.size for p in jax.tree.leaves(params))
    full = ref.TorchUNet(ndim)
    assert ref.count_params(full) == sum(
        p.size for p in jax.tree.leaves(init_unet(0, Config.default(ndim).unet(ndim))[1])
    )

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    ours = np.asarray(apply_network(graphdef, params, jnp.asarray(x)))
    theirs = net(torch.from_numpy(x)[:, None])[:, 0].detach().numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5 * np.abs(ours).max())

    psf = gaussian_psf((5,) * ndim, 1.0)
    g = jax.vmap(make_forward(psf, shape, method="fft", padding="reflect"))
    blur = ref.TorchBlur(psf, shape)
    np.testing.assert_allclose(blur(torch.from_numpy(x)).numpy(), g(x), atol=1e-5)

    gen = torch.Generator().manual_seed(0)
    mask = ref.stratified_masks(gen, 2, shape, fraction=cfg.masks.fraction)
    boxes = math.prod(math.ceil(n / (14 if ndim == 2 else 6)) for n in shape)
    assert mask.flatten(1).sum(1).tolist() == [boxes, boxes]
    masked = np.where(mask.numpy(), 0.2 * rng.standard_normal(x.shape), x).astype(np.float32)
    border = (2,) * ndim
    total, terms = ref.loss_terms(
        net,
        blur,
        torch.from_numpy(x),
        torch.from_numpy(masked),
        mask,
        preset=cfg.name,
        border=border,
    )
    loss = make_loss(cfg.loss, defaults={"lower": ref.BOUNDS[0], "upper": ref.BOUNDS[1]})
    d, dm = (apply_network(graphdef, params, jnp.asarray(a)) for a in (x, masked))
    window = (slice(None), *(slice(2, n - 2) for n in shape))
    passes = Passes(
        *(a[window] for a in (jnp.asarray(x), jnp.asarray(mask.numpy()), d, g(d), dm, g(dm)))
    )
    expected, expected_terms = loss(passes)
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    for name, value in terms.items():
        assert float(value) == pytest.approx(float(expected_terms[name]), rel=1e-4, abs=1e-7)


@_needs("torch")
def test_torch_reference_quick_runs(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "torch_reference.py"),
            "--quick",
            "--no-quality",
            "--out",
            str(tmp_path),
            "--tag",
            "t",
            "--budget",
            "2",
            "--repeats",
            "2",
            "--min-sample",
            "0.05",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "peers-torch-cpu-t.json").read_text())
    assert result["torch_threads"] == 1
    assert [r["case"] for r in result["records"]] == ["2d-default", "3d-default"]
    for r in result["records"]:
        assert r["params_jdeconv"] == r["params_pytorch"]
        for who in ("jdeconv", "pytorch"):
            assert 0 < r[who]["min_s"] <= r[who]["median_s"]
        assert r["ratio_median"] == pytest.approx(
            r["jdeconv"]["median_s"] / r["pytorch"]["median_s"]
        )
    assert "ratio (A/B)" in (tmp_path / "peers-torch-cpu-t.md").read_text()


@_needs("torch", "sdeconv")
def test_peers_tiny_runs(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "peers.py"),
            "--tiny",
            "--out",
            str(tmp_path),
            "--methods",
            "wiener",
            "rl",
            "ssnn",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "peers-tiny.json").read_text())
    assert result["status"] == "complete" and len(result["images"]) == 2
    for entry in result["images"]:
        methods = entry["methods"]
        # Phantom cases are not in any results file: the oracles are recomputed.
        assert entry["reference"].startswith("recomputed")
        for name in (
            "input",
            "rl_oracle",
            "best_oracle",
            "sd_wiener",
            "sd_wiener_oracle",
            "sd_rl",
            "sd_rl_oracle",
            "sd_ssnn",
        ):
            assert math.isfinite(methods[name]["psnr"]), name
        # The β grid holds the default 1e-5 (to rounding): the oracle is at least as good.
        assert methods["sd_wiener_oracle"]["psnr"] >= methods["sd_wiener"]["psnr"] - 1e-3
        assert 1 <= methods["sd_rl_oracle"]["n"] <= 5  # tiny: the oracle searches 1..5
        assert methods["sd_ssnn"]["steps"] >= 1 and methods["sd_ssnn"]["train_s"] > 0
    assert "sdeconv self-supervised NN" in (tmp_path / "peers-tiny.md").read_text()


def test_train_step_torch_arguments(capsys, load_benchmark):
    bench = load_benchmark("train_step")
    args = bench.parse_args(["--quick", "--torch", "--threads", "1"])
    assert args.torch and args.threads == 1
    assert not bench.parse_args(["--quick"]).torch
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick", "--torch", "--threads", "0"])
    assert "--threads must be at least 1" in capsys.readouterr().err


@_needs("torch")
def test_train_step_times_the_torch_reference_beside_jdeconv(load_benchmark):
    bench = load_benchmark("train_step")
    beside = bench.torch_side_by_side(bench.parse_args(["--quick", "--torch", "--threads", "1"]))
    assert beside["torch_threads"] == 1
    records = beside["torch_records"]
    assert [r["case"] for r in records] == ["2d-default", "3d-default"]
    for r in records:
        assert r["params_jdeconv"] == r["params_pytorch"]
        assert r["ratio_median"] == pytest.approx(
            r["jdeconv"]["median_s"] / r["pytorch"]["median_s"]
        )
    result = {"device": "cpu", "machine": load_benchmark("_common").machine_info(), "note": ""}
    text = bench.markdown({**result, "records": [], **beside})
    assert "| 2d-default | noise2same_d" in text and "ratio (medians)" in text
    assert f"PyTorch {beside['torch']}, torch threads: 1;" in text
