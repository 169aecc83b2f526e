"""Model folders: round trip, checksums, corrupt or foreign files, custom losses, format 1."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jdeconv
from jdeconv.model import FittedModel, load_model, save_model
from jdeconv.psf import gaussian_psf
from jdeconv.unet import init_unet

CFG = jdeconv.Config(depth=1, base_channels=4, patch_size=8, tta=False)


@pytest.fixture
def folder(tmp_path):
    _, params = init_unet(0, CFG.unet(2))
    return save_model(FittedModel(params, CFG, 2, gaussian_psf((3, 3), 1.0)), tmp_path / "m")


def test_round_trip_and_results_are_frozen(folder):
    import dataclasses

    model = load_model(folder)
    assert model.config == CFG and model.ndim == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.ndim = 3
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == 2 and set(meta["sha256"]) == {"params.npz", "psf.npy"}


@pytest.mark.parametrize("name", ["params.npz", "psf.npy"])
def test_missing_file(folder, name):
    (folder / name).unlink()
    with pytest.raises(ValueError, match=f"{name} is missing"):
        load_model(folder)


@pytest.mark.parametrize("name", ["params.npz", "psf.npy"])
def test_truncated_file_fails_the_checksum(folder, name):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{name} does not match the checksum"):
        load_model(folder)


def test_corrupt_file_without_checksum_is_named(folder):
    meta = json.loads((folder / "config.json").read_text())
    del meta["sha256"]
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "params.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="params.npz cannot be read"):
        load_model(folder)
    (folder / "params.npz").unlink()
    with pytest.raises(ValueError, match="params.npz is missing"):
        load_model(folder)


def test_foreign_or_broken_config(folder, tmp_path):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not a valid jdeconv model config"):
        load_model(folder)
    with pytest.raises(ValueError, match="not a folder"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)


def test_format_1_folder_still_loads(folder):
    # jdeconv 0.1 wrote a flat config and no checksums.
    meta = json.loads((folder / "config.json").read_text())
    flat = {
        "name": "custom",
        "loss_weights": {"bsp": 1.0},
        "depth": 1,
        "base_channels": 4,
        "patch_size": 8,
        "tta": False,
        "percentiles": [0.1, 99.9],
    }
    old = {"format": 1, "jdeconv_version": "0.1.0", "ndim": 2, "config": flat}
    (folder / "config.json").write_text(json.dumps(old))
    model = load_model(folder)
    assert model.config == CFG and model.version == "0.1.0"
    del meta


def test_model_with_a_custom_term_loads_in_a_fresh_process(tmp_path):
    # Train (two steps) with a term registered only in this process, save, then load and
    # predict in a new interpreter where the term does not exist.
    import jax.numpy as jnp

    from jdeconv.losses import register_loss

    register_loss(
        "tv_fresh_test",
        lambda p: jnp.mean(jnp.abs(jnp.diff(p.deconvolved, axis=0))),
        needs=("unmasked",),
        overwrite=True,
    )
    cfg = CFG.replace(loss_weights={"bsp": 1.0, "tv_fresh_test": 0.1}, steps=2, batch_size=2)
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    result = jdeconv.fit(image, gaussian_psf((3, 3), 1.0), cfg, verbose=False)
    save_model(result.model, tmp_path / "custom")
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "expected.npy", jdeconv.deconvolve(image, result.model))
    script = textwrap.dedent(
        f"""
        import numpy as np, jdeconv
        from jdeconv.losses import registered_losses
        assert "tv_fresh_test" not in registered_losses()
        model = jdeconv.load_model({str(tmp_path / "custom")!r})
        out = jdeconv.deconvolve(np.load({str(tmp_path / "image.npy")!r}), model)
        np.testing.assert_allclose(out, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-5)
        print("ok", [s.name for s in model.config.loss])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok ['bsp', 'tv_fresh_test']" in done.stdout
