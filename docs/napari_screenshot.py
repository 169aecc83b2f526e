"""Make docs/napari-widget.png: the napari widget after deconvolving a real image.

Command (needs ``pip install 'jdeconv[napari]'`` and a display; headless, under Xvfb)::

    xvfb-run -a -s "-screen 0 1500x950x24" python docs/napari_screenshot.py \\
        --data ../shared/data -o docs/napari-widget.png

Runtime: 8-12 minutes on a shared 2-core CPU (300 training steps took 484 and 678 s in
our two runs). What it shows: the 256x256 centre of the SSI "cells" image, blurred with
the SSI 2D Gibson-Lanni kernel and degraded as in the papers (jdeconv.simulate.degrade,
seed 0), deconvolved by the widget with its defaults (the library's 2D preset, 300
steps) and the kernel loaded as a file; the input and the result side by side (grid
mode), the loss plot and the status line. PyQt6 in our run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="the reference data folder")
    parser.add_argument("-o", "--output", default="docs/napari-widget.png")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

    import jax
    import napari

    from jdeconv.io import read_image
    from jdeconv.simulate import degrade

    data = Path(args.data)
    clean, _ = read_image(data / "ssi2d" / "cells1024x1024.png")
    clean = clean.astype(np.float64)
    c = (np.array(clean.shape) - 256) // 2
    clean = clean[c[0] : c[0] + 256, c[1] : c[1] + 256]
    psf_path = data / "psf" / "ssi_2d_17.npy"
    noisy = np.asarray(degrade(jax.random.key(0), clean, np.load(psf_path)), np.float32)

    from napari.settings import get_settings

    settings = get_settings().application
    level, settings.gui_notification_level = settings.gui_notification_level, "none"
    try:  # no notification toasts in the picture; the user's setting is put back after
        return _shoot(args, napari, noisy, psf_path)
    finally:
        settings.gui_notification_level = level


def _shoot(args, napari, noisy, psf_path) -> int:
    from qtpy.QtWidgets import QApplication

    from jdeconv._napari import DeconvolutionWidget

    viewer = napari.Viewer(title="jdeconv in napari", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(noisy, name="cells (noisy, blurred)", scale=(0.406, 0.406))
    widget = DeconvolutionWidget(viewer)
    widget.native.setMaximumWidth(470)
    viewer.window.add_dock_widget(widget, name="jdeconv", area="right")
    widget.psf_kind.value = "file"
    widget.psf_file.value = str(psf_path)
    widget.steps.value = args.steps
    app = QApplication.instance()
    widget.train_button.native.click()
    while widget.worker is not None:  # napari stays live while the worker trains
        app.processEvents()
        time.sleep(0.05)
    if len(viewer.layers) < 2:
        print(f"training failed: {widget.status.value}", file=sys.stderr)
        return 1
    viewer.grid.enabled = True
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    import imageio.v3 as iio

    iio.imwrite(args.output, shot)
    print(f"wrote {args.output} ({shot.shape[1]}x{shot.shape[0]}): {widget.status.value}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
