"""The scripts in examples/ run (with --tiny) and say how to run them.

They run in this process (imported from their files, ``main(["--tiny", ...])``), so the
JIT caches are shared with the other tests; each still trains once, for a few steps.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from jdeconv.io import read_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = ["deconvolve_2d", "deconvolve_3d", "custom_loss"]


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_docstring_states_command_runtime_and_tiny(name):
    doc = load(name).__doc__
    assert f"python examples/{name}.py" in doc
    assert "Expected runtime" in doc and "--tiny" in doc and "Expected result" in doc


@pytest.mark.slow
def test_deconvolve_2d(tmp_path, capsys):
    scores = load("deconvolve_2d").main(["--tiny", "--output-dir", str(tmp_path)])
    assert math.isfinite(scores["train"]) and math.isfinite(scores["reused"])
    out = capsys.readouterr().out
    assert "second image, reused model" in out
    image, meta = read_image(tmp_path / "deconvolved.tif")
    assert image.shape == (48, 48) and meta.pixel_size == pytest.approx((0.406, 0.406))
    assert (tmp_path / "model" / "config.json").is_file()
    assert (tmp_path / "second_deconvolved.tif").is_file()


@pytest.mark.slow
def test_deconvolve_3d(tmp_path):
    scores = load("deconvolve_3d").main(["--tiny", "--output-dir", str(tmp_path)])
    assert set(scores) == {"input", "deconvolved"}
    assert all(math.isfinite(v) for v in scores.values())
    volume, meta = read_image(tmp_path / "deconvolved.tif")
    assert volume.shape == (16, 32, 32) and meta.axes == "ZYX"
    assert meta.pixel_size == pytest.approx((0.406,) * 3)


@pytest.mark.slow
def test_custom_loss_registers_and_trains_with_tv(capsys):
    module = load("custom_loss")
    result = module.main(["--tiny", "--tv-weight", "0.05"])
    history = result["history"]
    assert "tv" in history and "bsp" in history
    assert np.all(np.isfinite(history["tv"])) and history["tv"][-1] > 0
    assert "final terms: bsp" in capsys.readouterr().out

    # The term is a pure function of the passes: zero for a constant image.
    import jax.numpy as jnp

    from jdeconv.losses import Passes

    flat = Passes(image=jnp.zeros((8, 8)), mask=jnp.zeros((8, 8)), deconvolved=jnp.ones((8, 8)))
    assert float(module.total_variation(flat)) == 0.0
