"""Data-parallel training: the batch sharded over 2 (virtual CPU) devices.

The device count is fixed when JAX starts, so the 2-device runs happen in a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``; this process has one device
and gives the reference.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import jdeconv
from jdeconv import Config
from jdeconv.psf import gaussian_psf

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(steps=3, batch_size=4, patch_size=16, base_channels=4, depth=2)
CFG = dict(preset="noise2same", validate_every=1, tta=False, **TINY)

SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
import jdeconv
from jdeconv import Config
from jdeconv.forward import make_forward
from jdeconv.losses import make_loss
from jdeconv.psf import gaussian_psf
from jdeconv.devices import training_devices
from jdeconv.train import batch_mesh, init_state, make_optimizer, make_train_step
from jdeconv.unet import init_unet

settings = json.loads(sys.argv[1])
cfg = Config.preset(settings.pop("preset"), **settings)
image = np.random.default_rng(0).random((32, 32)).astype(np.float32) * 100 + 50
result = jdeconv.fit(image, gaussian_psf((3, 3), 1.0), cfg, verbose=False)

# The jitted step on 2 devices: compiled once for every call (the new state comes back
# with the sharding it went in with).
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None
)
mesh = batch_mesh(cfg.batch_size)
graphdef, params = init_unet(0, cfg.unet(2))
tx = make_optimizer(cfg)
step = make_train_step(graphdef, make_loss("noise2same"), tx, batch_size=cfg.batch_size,
                       masks=cfg.masks, mesh=mesh)
args = jax.device_put(
    (jax.random.key(0), init_state(params, tx), jnp.asarray(image / 100),
     make_forward(gaussian_psf((3, 3), 1.0), cfg.patch_shape(2))),
    NamedSharding(mesh, PartitionSpec()),
)
key, state, x, g = args
before = len(compiles)
for _ in range(3):
    state, metrics = step(key, state, x, g)
step_compiles = len(compiles) - before
# Each device runs its share: the gradient all-reduce and nothing gathered.
hlo = step.lower(key, state, x, g).compile().as_text()
try:
    batch_mesh(3)
    odd_batch_error = None
except ValueError as err:
    odd_batch_error = str(err)
print("RESULT" + json.dumps({
    "device_count": jax.device_count(),
    "devices": result.timings["devices"],
    "loss": result.history["loss"],
    "val_loss": result.history["val_loss"],
    "deconvolved": result.deconvolved.tolist(),
    "step_compiles": step_compiles,
    "step_cache_size": step._cache_size(),
    "state_replicated": all(
        a.sharding.is_fully_replicated and len(a.devices()) == 2
        for a in jax.tree.leaves(state)
    ),
    "param_devices": len(jax.tree.leaves(result.model.params)[0].devices()),
    "odd_batch_error": odd_batch_error,
    "training_devices": [len(training_devices(b)) for b in (3, 4)],
    "all_reduces": hlo.count("all-reduce("),
    "all_gathers": hlo.count("all-gather("),
}))
"""


def _run_on_two_devices(settings: dict) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def two_devices():
    return _run_on_two_devices(dict(CFG))


def test_two_devices_train_like_one(two_devices):
    r = two_devices
    assert r["device_count"] == 2 and r["devices"] == 2
    settings = dict(CFG)
    cfg = Config.preset(settings.pop("preset"), **settings)
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32) * 100 + 50
    one = jdeconv.fit(image, gaussian_psf((3, 3), 1.0), cfg, verbose=False)
    assert one.timings["devices"] == 1 and one.timings["voxels_per_second"] > 0
    # Same patches and masks (same keys); only the order of the sums differs.
    np.testing.assert_allclose(r["loss"], one.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(r["val_loss"], one.history["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(np.array(r["deconvolved"]), one.deconvolved, rtol=1e-4, atol=1e-3)


def test_two_devices_compile_once_replicated_state(two_devices):
    r = two_devices
    assert r["step_compiles"] == 1 and r["step_cache_size"] == 1
    assert r["state_replicated"]  # parameters and optimiser state on both, whole
    assert r["param_devices"] == 1  # the fitted model lives on one device
    # The batch is split, not replicated: gradients are summed across devices and no
    # activation (e.g. of the FFT forward model) is gathered onto every device.
    assert r["all_reduces"] >= 1 and r["all_gathers"] == 0


def test_batch_not_divisible_by_devices_is_rejected(two_devices):
    assert "multiple of the 2 devices" in two_devices["odd_batch_error"]


def test_cpu_split_trains_on_the_devices_that_divide_the_batch(two_devices):
    # A split CPU is a speed choice: an odd batch trains on one device, not an error.
    assert two_devices["training_devices"] == [1, 2]


def test_cli_splits_the_cpu(tmp_path):
    """``--cpu-devices 2`` (the default "auto" on a 2-core machine) trains on 2 devices;
    1 keeps one device."""
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "in.tif", (rng.random((32, 32)) * 100 + 50).astype(np.float32))
    np.save(tmp_path / "psf.npy", np.asarray(gaussian_psf((3, 3), 1.0)))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "ignore"}
    env.pop("XLA_FLAGS", None)
    tiny = ["--steps", "2", "--batch-size", "4", "--patch-size", "16"]
    lines = []
    for n in ("2", "1"):
        proc = subprocess.run(
            [sys.executable, "-m", "jdeconv", "deconvolve", tmp_path / "in.tif", "--psf",
             tmp_path / "psf.npy", "-o", tmp_path / f"out{n}.tif", "--cpu-devices", n, *tiny],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines.append(proc.stdout.strip().splitlines()[-1])
    assert "s/step on 2 devices)" in lines[0] and " devices)" not in lines[1], lines
    np.testing.assert_allclose(
        tifffile.imread(tmp_path / "out2.tif"), tifffile.imread(tmp_path / "out1.tif"),
        rtol=1e-4, atol=1e-3,
    )  # fmt: skip


def test_use_cpu_devices_after_jax_started():
    import jax

    from jdeconv.devices import use_cpu_devices

    have = len(jax.devices("cpu"))  # this process's JAX has started (earlier tests)
    assert use_cpu_devices(n=have) == have  # nothing to change
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        use_cpu_devices(n=have + 1)
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            use_cpu_devices(n=bad)


def test_demo_table_says_how_many_devices_trained():
    from jdeconv import Config
    from jdeconv.demo import _table

    timings = {"compile": 6.0, "train": 75.0, "seconds_per_step": 0.375, "inference": 1.5}
    rows = [("input (noisy, blurred)", "", 17.31, 0.158, None)]
    common = dict(rows=rows, image="camera", size=64, cfg=Config.default(2), seed=0)
    split = _table(timings={**timings, "devices": 2}, **common)
    assert "(0.375 s/step on 2 devices)" in split
    one = _table(timings={**timings, "devices": 1}, **common)
    assert "(0.375 s/step)" in one and "devices)" not in one
