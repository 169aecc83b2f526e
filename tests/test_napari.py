"""The napari widget end to end, headless (an X server in memory: ``xvfb-run``), on a tiny
2D image and a tiny 3D time-lapse; and Cancel. Skipped, with the reason, without the
``jdeconv[napari]`` extra or without a display.

Every fit is a few steps of a 4-channel depth-2 network (the settings field).
"""

import os

import numpy as np
import pytest

pytest.importorskip(
    "napari", reason="the napari extra is not installed (pip install 'jdeconv[napari]')"
)
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (pip install 'jdeconv[napari]')")
if not os.environ.get("DISPLAY"):
    # Qt's offscreen platform gives napari's (vispy) canvas no OpenGL context.
    pytest.skip(
        "napari's canvas needs OpenGL from an X server: run under xvfb-run -a (.ci/run does)",
        allow_module_level=True,
    )
from jdeconv._napari import DeconvolutionWidget  # noqa: E402

TINY = "patch_size=16, patch_size_z=8, batch_size=2, depth=2, base_channels=4, tta=False"
TIMEOUT_MS = 180_000


def _widget(viewer, steps):
    widget = DeconvolutionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.psf_kind.value = "Gaussian"
    widget.sigma.value = 1.0
    widget.psf_size.value = 5
    widget.steps.value = steps
    widget.settings.value = TINY
    return widget


def _run(qtbot, widget, button):
    button.native.click()
    assert widget.worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_2d_image_layer_is_deconvolved_with_its_scale(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    viewer.add_image(image, name="cells", scale=(0.2, 0.2))
    widget = _widget(viewer, steps=4)
    assert widget.ndim == 2 and widget.pixel_xy.value == pytest.approx(0.2)
    _run(qtbot, widget, widget.train_button)
    out = viewer.layers[-1]
    assert out.name.startswith("cells deconvolved"), widget.status.value
    assert out.data.shape == (32, 32) and np.all(np.isfinite(out.data))
    assert tuple(out.scale) == pytest.approx((0.2, 0.2))
    assert widget._plot.steps and widget._plot.steps[-1] == 4  # the loss plot got points
    assert widget.progress.value == 100 and widget.apply_button.enabled


def test_3d_time_point_then_all_time_points(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(1).random((3, 12, 24, 24)).astype(np.float32)  # TZYX
    viewer.add_image(stack, name="embryo", scale=(1.0, 0.5, 0.1, 0.1))
    viewer.dims.set_current_step(0, 2)  # the viewer shows time point 2
    widget = _widget(viewer, steps=2)
    widget.psf_kind.value = "Gibson-Lanni"  # computed for the layer's scale
    widget.psf_size.value = 5
    assert widget.ndim == 3 and widget.pixel_size() == pytest.approx((0.5, 0.1, 0.1))
    _run(qtbot, widget, widget.train_button)
    out = viewer.layers[-1]
    assert out.name.startswith("embryo [2] deconvolved"), widget.status.value
    assert out.data.shape == (12, 24, 24)
    assert tuple(out.scale) == pytest.approx((0.5, 0.1, 0.1))
    # The same model on every time point of the layer.
    widget.image.value = viewer.layers["embryo"]
    _run(qtbot, widget, widget.apply_button)
    everything = viewer.layers[-1]
    assert everything.name == "embryo deconvolved (all)", widget.status.value
    assert everything.data.shape == stack.shape
    np.testing.assert_allclose(everything.data[2], out.data, rtol=1e-4, atol=1e-4)


def test_cancel_stops_training_and_adds_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((32, 32)).astype(np.float32), name="x")
    widget = _widget(viewer, steps=100_000)
    widget.train_button.native.click()
    qtbot.waitUntil(lambda: len(widget._plot.steps) > 0, timeout=TIMEOUT_MS)  # training
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert "cancelled" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["x"]
    assert widget._plot.steps[-1] < 100_000 and widget.train_button.enabled
