"""The napari plugin (``jdeconv[napari]``; manifest ``jdeconv/napari.yaml``).

:class:`DeconvolutionWidget` deconvolves one image layer (2D or 3D), or the 2D/3D slice
of a larger layer that the viewer shows (one channel or time point), with a PSF from a
layer, a file, or a Gibson-Lanni/Gaussian model computed for the layer's scale (taken
as µm per pixel). Training runs in a worker thread (``napari.qt.threading``); the fit's
callback, called at every validation, reports the step and the held-out loss through a
queue that a timer in the GUI thread reads, so napari stays responsive, the progress bar
and the loss plot move, and Cancel stops training at the next validation (the callback
raises). The result is added as a layer with the input's scale; "Apply to all" runs the
trained model over every channel/time point of the selected layer (one compiled
predictor, as the slices share a shape).

Needs napari, magicgui and a Qt binding; import it only where they are installed.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

__all__ = ["DeconvolutionWidget"]

PSF_KINDS = ("Gibson-Lanni", "Gaussian", "layer", "file")
PRESETS = ("default", "noise2self", "noise2same", "noise2same_d")
_POLL_MS = 100


class Cancelled(Exception):
    """Raised inside the fit's callback when the user pressed Cancel."""


class DeconvolutionWidget(Container):
    """Self-supervised deconvolution of an image layer (module docstring).

    Example:
      >>> import napari                                       # doctest: +SKIP
      >>> viewer = napari.Viewer()                            # doctest: +SKIP
      >>> viewer.window.add_dock_widget(DeconvolutionWidget(viewer))  # doctest: +SKIP
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.spatial = ComboBox(label="deconvolve", choices=["2D (YX)", "3D (ZYX)"])
        self.pixel_xy = FloatSpinBox(label="pixel YX (µm)", min=0.0, max=1e4, step=0.001)
        self.pixel_z = FloatSpinBox(label="pixel Z (µm)", min=0.0, max=1e4, step=0.001)
        self.psf_kind = ComboBox(label="PSF", choices=PSF_KINDS, value="Gibson-Lanni")
        self.psf_layer = ComboBox(label="PSF layer", choices=self._image_layers)
        self.psf_file = FileEdit(label="PSF file", mode="r", filter="*.tif *.tiff *.npy")
        self.na = FloatSpinBox(label="NA", value=0.8, min=0.05, max=1.7, step=0.05)
        self.wavelength = FloatSpinBox(
            label="wavelength (µm)", value=0.6, min=0.2, max=2.0, step=0.01
        )
        self.ni = FloatSpinBox(label="immersion n", value=1.33, min=1.0, max=2.0, step=0.01)
        self.sigma = FloatSpinBox(label="sigma (px)", value=1.5, min=0.1, max=50.0, step=0.1)
        self.psf_size = SpinBox(label="PSF size (px)", value=17, min=3, max=255, step=2)
        self.preset = ComboBox(label="preset", choices=PRESETS, value="default")
        self.steps = SpinBox(label="steps", value=300, min=1, max=1_000_000)
        self.settings = LineEdit(label="settings")
        self.settings.tooltip = (
            "more jdeconv.Config fields as KEY=VALUE, comma-separated, "
            "e.g. learning_rate=3e-4, patch_size=64"
        )
        self.train_button = PushButton(text="Train and deconvolve")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.apply_button = PushButton(text="Apply to all channels / time points", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=100)
        self.status = Label(label="status", value="")
        self.extend(
            [
                self.image,
                self.spatial,
                self.pixel_xy,
                self.pixel_z,
                self.psf_kind,
                self.psf_layer,
                self.psf_file,
                self.na,
                self.wavelength,
                self.ni,
                self.sigma,
                self.psf_size,
                self.preset,
                self.steps,
                self.settings,
                self.train_button,
                self.cancel_button,
                self.progress,
                self.status,
                self.apply_button,
            ]
        )
        self._plot = _LossPlot()
        self.native.layout().addWidget(self._plot.canvas)

        self.model = None  # the last trained FittedModel
        self.worker = None
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._timer = None
        self._job = {}

        self.image.changed.connect(self._image_changed)
        self.psf_kind.changed.connect(self._show_psf_fields)
        self.train_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.apply_button.clicked.connect(self.apply_to_all)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._layers_changed)
        self._image_changed()
        self._show_psf_fields()

    # ------------------------------------------------------------------ form

    def _image_layers(self, *_):
        import napari

        return [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _layers_changed(self, *_):
        self.image.reset_choices()
        self.psf_layer.reset_choices()

    def _image_changed(self, *_):
        layer = self.image.value
        if layer is None:
            return
        self.spatial.value = "2D (YX)" if layer.ndim == 2 else "3D (ZYX)"
        # napari's default scale, 1, says nothing: 0 in a field means "unknown".
        scale = [float(s) if float(s) != 1.0 else 0.0 for s in layer.scale]
        self.pixel_xy.value = scale[-1]
        self.pixel_z.value = scale[-3] if layer.ndim >= 3 else 0.0

    def _show_psf_fields(self, *_):
        kind = self.psf_kind.value
        model = kind == "Gibson-Lanni"
        for widget in (self.na, self.wavelength, self.ni):
            widget.visible = model
        self.sigma.visible = kind == "Gaussian"
        self.psf_size.visible = kind in ("Gibson-Lanni", "Gaussian")
        self.psf_layer.visible = kind == "layer"
        self.psf_file.visible = kind == "file"

    @property
    def ndim(self) -> int:
        """2 or 3: the rank deconvolved."""
        return 3 if self.spatial.value.startswith("3D") else 2

    def pixel_size(self) -> tuple:
        """The image's pixel size per spatial axis (µm); None where the field is 0."""
        xy = self.pixel_xy.value or None
        if self.ndim == 2:
            return (xy, xy)
        return (self.pixel_z.value or None, xy, xy)

    def current_index(self, layer) -> tuple:
        """Index of the slice the viewer shows along the layer's leading axes."""
        lead = layer.ndim - self.ndim
        if lead <= 0:
            return ()
        point = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        return tuple(
            int(min(max(round(float(p)), 0), n - 1))
            for p, n in zip(point[:lead], layer.data.shape[:lead], strict=True)
        )

    def selected_image(self):
        """(image array, layer, leading index) of the slice to deconvolve."""
        layer = self.image.value
        if layer is None:
            raise ValueError("no image layer: open an image first.")
        if layer.rgb:
            raise ValueError(f"layer {layer.name!r} is RGB; convert it to greyscale first.")
        if layer.ndim < self.ndim:
            raise ValueError(
                f"layer {layer.name!r} is {layer.ndim}D; choose 2D (YX) to deconvolve it."
            )
        index = self.current_index(layer)
        return np.asarray(layer.data[index]), layer, index

    def make_psf(self, image_shape):
        """The PSF on the image's grid, and the notice of any resampling."""
        from . import io
        from .psf import gaussian_psf, gibson_lanni_psf, match_psf_to_image, validate_psf

        ndim, sizes = self.ndim, self.pixel_size()
        kind = self.psf_kind.value
        shape = (min(self.psf_size.value, _odd_below(image_shape[0])),) * (ndim == 3) + (
            self.psf_size.value,
        ) * 2
        if kind == "Gibson-Lanni":
            dxy = sizes[-1] or 0.406
            dz = (sizes[0] or 0.406) if ndim == 3 else 0.406
            psf = gibson_lanni_psf(
                shape,
                numerical_aperture=self.na.value,
                wavelength=self.wavelength.value,
                ni=self.ni.value,
                ns=self.ni.value,
                pixel_size_xy=dxy,
                pixel_size_z=dz,
            )
            return psf, None
        if kind == "Gaussian":
            return gaussian_psf(shape, self.sigma.value), None
        if kind == "layer":
            layer = self.psf_layer.value
            if layer is None:
                raise ValueError("choose the PSF layer.")
            psf = np.squeeze(np.asarray(layer.data))
            scale = [float(s) for s in layer.scale][-psf.ndim :]
            psf_sizes = tuple(s if s != 1.0 else None for s in scale)
        else:
            path = Path(str(self.psf_file.value))
            if not path.is_file():
                raise ValueError("choose the PSF file.")
            psf, meta = io.read_image(path)
            psf_sizes = meta.pixel_size
        psf = validate_psf(psf, ndim=ndim, normalize=True)
        return match_psf_to_image(psf, image_shape, psf_pixel_size=psf_sizes, pixel_size=sizes)

    def make_config(self, image_shape, psf_shape):
        """The training config from the preset, steps and settings fields."""
        from .cli.deconvolve import parse_settings
        from .config import Config
        from .files import config_for_voxels

        items = [t.strip() for t in self.settings.value.split(",") if t.strip()]
        try:
            overrides = parse_settings(items)
        except Exception as err:  # the CLI's InputError: a message for the status line
            raise ValueError(str(err)) from None
        steps = self.steps.value
        # A validation (and a callback: progress, loss plot, cancel) every ~2 % of training.
        overrides.setdefault("validate_every", max(1, min(25, steps // 50)))
        if self.preset.value == "default":
            cfg = Config.default(self.ndim, steps=steps, **overrides)
        else:
            cfg = Config.preset(self.preset.value, steps=steps, **overrides)
        if self.ndim == 3 and "patch_size_z" not in overrides:
            cfg = config_for_voxels(cfg, self.pixel_size(), psf_shape=psf_shape)
        return cfg

    # ------------------------------------------------------------------ training

    def start(self, *_):
        """Check the form and train in a worker thread."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image, layer, index = self.selected_image()
                psf, notice = self.make_psf(image.shape)
                cfg = self.make_config(image.shape, psf.shape)
        except Exception as err:
            self._say(f"cannot start: {err}", error=True)
            return
        notes = [notice] if notice else []
        if self.psf_kind.value == "Gibson-Lanni" and None in self.pixel_size():
            notes.append(
                "pixel size unknown: the PSF is computed for 0.406 µm; set the pixel fields "
                "(or the layer's scale) in µm."
            )
        notes += [str(w.message) for w in caught]
        self._job = {"layer": layer, "index": index, "cfg": cfg, "steps": cfg.steps}
        self._cancel.clear()
        self._plot.reset()
        self.progress.value = 0
        self._say(" ".join([*notes, f"training {cfg.steps} steps..."]))
        self._set_running(True)
        self.worker = create_worker(
            _fit_job,
            image,
            psf,
            cfg,
            self._events,
            self._cancel,
            _start_thread=False,
            _connect=self._connections(self._trained),
        )
        self._start_timer()
        self.worker.start()

    def cancel(self, *_):
        """Stop training (at its next validation) or applying (after this slice)."""
        self._cancel.set()
        self._say("cancelling...")

    def _connections(self, returned):
        # Given here, "errored" is ours: superqt does not re-raise the error in the GUI
        # thread (napari still shows it as a notification).
        return {"returned": returned, "errored": self._failed, "finished": self._finished}

    def _trained(self, result):
        self._drain(update_status=False)
        if result is None:
            self._say("cancelled; nothing was added.")
            return
        layer, index, cfg = self._job["layer"], self._job["index"], self._job["cfg"]
        self.model = result.model
        where = "" if not index else " [" + ", ".join(str(i) for i in index) + "]"
        name = f"{layer.name}{where} deconvolved ({cfg.name}, {result.timings['steps']} steps)"
        ndim = self.ndim
        self.viewer.add_image(
            result.deconvolved,
            name=name,
            scale=tuple(layer.scale)[-ndim:],
            translate=tuple(layer.translate)[-ndim:],
            colormap=layer.colormap.name,
        )
        self.progress.value = 100
        self._say(
            f"done: {result.timings['steps']} steps in {result.timings['total']:.1f} s; "
            f"added {name!r}."
        )
        self.apply_button.enabled = True

    def apply_to_all(self, *_):
        """Apply the trained model to every channel/time point of the selected layer."""
        from napari.qt.threading import create_worker

        if self.worker is not None or self.model is None:
            return
        layer = self.image.value
        if layer is None or layer.ndim < self.model.ndim:
            self._say("choose an image layer with the model's dimensionality.", error=True)
            return
        self._job = {"layer": layer, "apply": True}
        self._cancel.clear()
        self.progress.value = 0
        self._say(f"applying the model to {layer.name!r}...")
        self._set_running(True)
        self.worker = create_worker(
            _apply_job,
            layer.data,
            self.model,
            self._events,
            self._cancel,
            _start_thread=False,
            _connect=self._connections(self._applied),
        )
        self._start_timer()
        self.worker.start()

    def _applied(self, out):
        self._drain(update_status=False)
        if out is None:
            self._say("cancelled; nothing was added.")
            return
        layer = self._job["layer"]
        name = f"{layer.name} deconvolved (all)"
        self.viewer.add_image(
            out,
            name=name,
            scale=tuple(layer.scale),
            translate=tuple(layer.translate),
            colormap=layer.colormap.name,
        )
        self.progress.value = 100
        self._say(f"done: added {name!r}.")

    def _failed(self, err):
        self._drain(update_status=False)
        self._say(f"failed: {err}")

    def _finished(self):
        self._drain(update_status=False)
        self._plot.draw(force=True)
        if self._timer is not None:
            self._timer.stop()
        self.worker = None
        self._set_running(False)

    def _set_running(self, running: bool):
        self.train_button.enabled = not running
        self.apply_button.enabled = not running and self.model is not None
        self.cancel_button.enabled = running

    def _start_timer(self):
        from qtpy.QtCore import QTimer

        if self._timer is None:
            self._timer = QTimer()
            self._timer.setInterval(_POLL_MS)
            self._timer.timeout.connect(self._drain)
        self._timer.start()

    def _drain(self, *, update_status: bool = True):
        """Show what the worker reported since the last look (GUI thread)."""
        changed = False
        while True:
            try:
                kind, a, b = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "step":
                self.progress.value = int(100 * a / max(self._job.get("steps", a), 1))
                self._plot.add(a, b)
                changed = True
            elif kind == "apply":
                self.progress.value = int(100 * a / max(b, 1))
        if changed and update_status:
            self._plot.draw()
            step, loss = self._plot.steps[-1], self._plot.losses[-1]
            self.status.value = f"step {step}: held-out loss {loss:.4g}"

    def _say(self, message: str, *, error: bool = False):
        self.status.value = message
        if error:
            from napari.utils.notifications import show_error

            show_error(f"jdeconv: {message}")


def _odd_below(n: int) -> int:
    return n if n % 2 else n - 1


def _fit_job(image, psf, cfg, events: queue.Queue, cancel: threading.Event):
    """Train (worker thread); report each validation; None when cancelled.

    A cancel stops training at the next validation: the callback raises
    :class:`Cancelled` out of ``fit`` (skipping the inference too), caught here, so the
    worker ends normally (napari reports a worker's exceptions as errors).
    """
    from .api import fit

    def callback(step, val_loss, _deconvolve):
        events.put(("step", step, float(val_loss)))
        if cancel.is_set():
            raise Cancelled()
        return False

    try:
        if cancel.is_set():
            raise Cancelled()
        return fit(image, psf, cfg, verbose=False, callback=callback)
    except Cancelled:
        return None


def _apply_job(data, model, events: queue.Queue, cancel: threading.Event):
    """Deconvolve every slice along the leading axes (worker thread)."""
    from .api import deconvolve

    lead = data.shape[: data.ndim - model.ndim]
    out = np.empty(data.shape, np.float32)
    total = math.prod(lead)
    for i, index in enumerate(np.ndindex(*lead)):
        if cancel.is_set():
            return None
        out[index] = deconvolve(np.asarray(data[index]), model)
        events.put(("apply", i + 1, total))
    return out


class _LossPlot:
    """A small matplotlib plot of the held-out loss against the step."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2, 1.8), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(160)
        self.axes = figure.add_subplot()
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.reset()

    def reset(self):
        self.steps, self.losses = [], []
        self.axes.clear()
        self.axes.set_xlabel("step", fontsize=8)
        self.axes.set_ylabel("held-out loss", fontsize=8)
        self.axes.tick_params(labelsize=7)
        (self.line,) = self.axes.plot([], [], "-o", markersize=2, linewidth=1)
        self._drawn = 0.0
        self.canvas.draw_idle()

    def add(self, step: int, loss: float):
        self.steps.append(step)
        self.losses.append(loss)

    def draw(self, *, force: bool = False):
        now = time.monotonic()
        if not force and now - self._drawn < 0.25:  # at most 4 redraws a second
            return
        self._drawn = now
        self.line.set_data(self.steps, self.losses)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw_idle()
