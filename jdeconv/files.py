"""Whole acquisition files: every channel and time point of a TIFF/OME-TIFF hyperstack.

:func:`deconvolve_file` reads a file with channel (C) and/or time (T) axes, fits one
model per channel and applies it to every time point, and writes a file with the same
axes, in the same order, and the same pixel sizes (and time interval, when the file
records one). The steps are public too: :func:`read_hyperstack`, :func:`deconvolve_stack`
(arrays in, arrays out) and :func:`write_hyperstack`.

Which time point a channel's model learns from: **one**, the middle one (``T // 2``)
unless ``fit_time`` says otherwise. Self-supervised training needs only one noisy image;
each time point is then normalised with its own statistics before the model is applied
(:func:`jdeconv.deconvolve`), so slow changes of brightness (bleaching) do not matter,
and the middle of a time-lapse is the closest to both its bright start and its dim end.
Fitting once costs one training per channel instead of one per time point; all the
time points of a channel have one shape, so they share one compiled predictor.

PSFs: one per channel, or one for all. Each is brought onto the image's grid by
:func:`jdeconv.psf.match_psf_to_image` (resampled when both pixel sizes are known and
differ, a warning when it looks badly sampled). In 3D, when the voxel is anisotropic and
no Z patch size was asked for, the training patch's depth follows the voxel size
(:func:`config_for_voxels`).
"""

from __future__ import annotations

import dataclasses
import sys
import time as _time
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import io
from ._checks import loss_patch_floor
from ._files import atomic_write

__all__ = [
    "Hyperstack",
    "FileResult",
    "read_hyperstack",
    "write_hyperstack",
    "deconvolve_stack",
    "deconvolve_file",
    "config_for_voxels",
]

# ImageJ hyperstacks hold these axes in this order; other orders are written as OME-TIFF.
_IMAGEJ_ORDER = "TZCYXS"
_SPATIAL = "ZYX"


@dataclasses.dataclass(frozen=True)
class Hyperstack:
    """A whole image file: the array as stored, its axes and its physical sizes.

    Attributes:
      data: the pixels in their stored dtype, one axis per letter of ``axes``.
      axes: letters from ``TCZYX`` (a plain stack of planes, tifffile's ``I``/``Q``, is
        read as Z), in the file's order, e.g. ``"TZCYX"``.
      pixel_size: µm per pixel along ``"X"``, ``"Y"``, ``"Z"`` where the file says.
      time_interval: seconds between time points, or None.
      path: the file read, or None.

    Example:
      >>> s = Hyperstack(np.zeros((3, 2, 8, 8)), "TCYX", {"X": 0.1, "Y": 0.1})
      >>> s.size("T"), s.size("C"), s.size("Z"), s.spatial_axes
      (3, 2, 1, 'YX')
    """

    data: np.ndarray
    axes: str
    pixel_size: dict = dataclasses.field(default_factory=dict)
    time_interval: float | None = None
    path: str | None = None

    def __post_init__(self):
        if len(self.axes) != np.ndim(self.data):
            raise ValueError(
                f"axes {self.axes!r} do not match the array's shape {np.shape(self.data)}."
            )
        bad = sorted(set(self.axes) - set("TCZYX"))
        if bad or len(set(self.axes)) != len(self.axes) or not {"Y", "X"} <= set(self.axes):
            raise ValueError(
                f"axes {self.axes!r} must be distinct letters from 'TCZYX' with Y and X; "
                "say what the axes are with axes= (--axes), e.g. 'TCZYX'."
            )

    def size(self, axis: str) -> int:
        """Length of ``axis`` (1 when the file has no such axis)."""
        return self.data.shape[self.axes.index(axis)] if axis in self.axes else 1

    @property
    def spatial_axes(self) -> str:
        """``"ZYX"`` for a stack of more than one plane, else ``"YX"``."""
        return "ZYX" if self.size("Z") > 1 else "YX"

    @property
    def spatial_pixel_size(self) -> tuple[float | None, ...]:
        """Pixel sizes along :attr:`spatial_axes` (None where unknown)."""
        return tuple(self.pixel_size.get(a) for a in self.spatial_axes)

    def index(self, *, channel: int | None = None, time: int | None = None) -> tuple:
        """The index into :attr:`data` of one channel and time point (all spatial axes)."""
        picks = {"C": channel, "T": time}
        return tuple((picks[a] or 0) if a in picks else slice(None) for a in self.axes)

    def image(self, *, channel: int | None = None, time: int | None = None) -> np.ndarray:
        """One channel and time point as a 2D ``YX`` or 3D ``ZYX`` array.

        Example:
          >>> s = Hyperstack(np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5), "ZCYX")
          >>> s.image(channel=1).shape
          (2, 4, 5)
        """
        block = self.data[self.index(channel=channel, time=time)]
        return _to_spatial(np.asarray(block), self._rest_axes(), self.spatial_axes)

    def _rest_axes(self) -> str:
        return "".join(a for a in self.axes if a not in "CT")


def _to_spatial(block: np.ndarray, rest: str, spatial: str) -> np.ndarray:
    """An array with axes ``rest`` (spatial letters, in any order) as ``spatial`` order."""
    block = block.reshape([n for a, n in zip(rest, block.shape, strict=True) if a in spatial])
    kept = "".join(a for a in rest if a in spatial)
    return np.ascontiguousarray(block.transpose([kept.index(a) for a in spatial]))


def _from_spatial(image: np.ndarray, spatial: str, rest: str, shape) -> np.ndarray:
    """The inverse of :func:`_to_spatial`: ``image`` (axes ``spatial``) as ``rest``."""
    kept = "".join(a for a in rest if a in spatial)
    return image.transpose([spatial.index(a) for a in kept]).reshape(shape)


# ----------------------------------------------------------------------------- reading


def read_hyperstack(path, *, axes: str | None = None) -> Hyperstack:
    """Read a whole TIFF/OME-TIFF (or ``.npy``) file, keeping its channel and time axes.

    Args:
      path: a ``.tif``/``.tiff`` (OME-TIFF, ImageJ hyperstack or plain) or ``.npy`` file.
      axes: the stored axes, overriding the file's metadata (e.g. ``"TCZYX"`` for a
        ``.npy`` file); as for :func:`jdeconv.io.read_image`.

    Returns:
      A :class:`Hyperstack`.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: naming the file and the fix, for an unsupported file, axes that do not
        fit, colour samples (S) or axes that are neither channel, time nor spatial.

    Example:
      >>> import tempfile
      >>> p = f"{tempfile.mkdtemp()}/a.ome.tif"
      >>> _ = write_hyperstack(p, np.zeros((3, 2, 4, 8, 8), np.float32), axes="TCZYX",
      ...                      pixel_size={"X": 0.1, "Y": 0.1, "Z": 0.5})
      >>> s = read_hyperstack(p)
      >>> s.axes, s.data.shape, s.pixel_size["Z"]
      ('TCZYX', (3, 2, 4, 8, 8), 0.5)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        return _read_hyperstack(path, axes)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _read_hyperstack(path: Path, axes: str | None) -> Hyperstack:
    suffix = path.suffix.lower()
    interval = None
    if suffix in io.TIFF_SUFFIXES:
        data, file_axes, sizes = io._read_tiff(path)
        interval = _time_interval(path)
    elif suffix == ".npy":
        data, file_axes, sizes = io._read_npy(path)
    else:
        raise ValueError(
            f"whole-file deconvolution reads .tif, .tiff and .npy files, not {suffix or 'this'}."
        )
    file_axes = io._apply_axes_override(data, file_axes, axes)
    generic = [a for a in file_axes if a in "IQ"]
    if len(generic) == 1 and "Z" not in file_axes:
        file_axes = file_axes.replace(generic[0], "Z")  # a plain stack of planes
    # Singleton axes of any kind carry nothing: drop them (Y and X stay).
    keep = [
        i for i, (a, n) in enumerate(zip(file_axes, data.shape, strict=True)) if n > 1 or a in "YX"
    ]
    data = data.reshape([data.shape[i] for i in keep])
    file_axes = "".join(file_axes[i] for i in keep)
    if "S" in file_axes:
        raise ValueError(
            f"it has colour samples (axis S, axes {file_axes!r}); convert it to greyscale or "
            "deconvolve one sample with --channel N (channel=N)."
        )
    other = sorted(set(file_axes) - set("TCZYX"))
    if other:
        raise ValueError(
            f"it has axes that are neither channel, time nor spatial ({', '.join(other)}; "
            f"axes {file_axes!r}, shape {data.shape}); say what they are with --axes (axes=), "
            "e.g. 'TCZYX'."
        )
    if data.dtype.kind not in "uif":
        raise ValueError(
            f"unsupported pixel type {data.dtype}; jdeconv reads integer and real images."
        )
    return Hyperstack(data, file_axes, dict(sizes), interval, str(path))


def _time_interval(path: Path) -> float | None:
    """Seconds between time points from ImageJ's ``finterval`` or OME's TimeIncrement."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_imagej and tif.imagej_metadata:
                value = tif.imagej_metadata.get("finterval")
                return float(value) if value else None
            if tif.is_ome and tif.ome_metadata:
                root = ElementTree.fromstring(tif.ome_metadata)
                for el in root.iter():
                    if el.tag.rsplit("}", 1)[-1] == "Pixels" and el.get("TimeIncrement"):
                        return float(el.get("TimeIncrement"))
    except Exception:  # odd metadata must not stop the deconvolution
        return None
    return None


# ----------------------------------------------------------------------------- writing


def write_hyperstack(
    path,
    array,
    *,
    axes: str,
    pixel_size: dict | None = None,
    time_interval: float | None = None,
    dtype=None,
    overwrite: bool = False,
) -> Path:
    """Write an N-D image with its axes and pixel sizes, atomically.

    ``.tif``/``.tiff``: an ImageJ hyperstack when the axes are in ImageJ's order
    (``TZCYX``, or a part of it) and the pixel type is one ImageJ holds; otherwise, or
    when the name ends in ``.ome.tif``, an OME-TIFF (any order of T, C, Z before YX).
    ``.npy``: the array alone. Never replaces a file unless ``overwrite``.

    Args:
      path: the output file; its folder must exist.
      array: the image, one axis per letter of ``axes``.
      axes: letters from ``TCZYX``.
      pixel_size: µm per pixel along ``"X"``, ``"Y"``, ``"Z"`` (any may be missing).
      time_interval: seconds between time points.
      dtype: pixel type (None: float32); integers are rounded and clipped, never rescaled
        (:func:`jdeconv.io.cast_to_dtype`).
      overwrite: replace an existing file.

    Returns:
      The output ``Path``.

    Example:
      >>> import tempfile
      >>> p = write_hyperstack(f"{tempfile.mkdtemp()}/a.tif", np.ones((2, 3, 8, 8)),
      ...                      axes="TZYX", pixel_size={"X": 0.2, "Y": 0.2, "Z": 1.0})
      >>> read_hyperstack(p).axes
      'TZYX'
    """
    path = Path(path)
    arr = np.asarray(array)
    if len(axes) != arr.ndim:
        raise ValueError(f"axes {axes!r} do not match the array's shape {arr.shape}.")
    suffix = path.suffix.lower()
    if suffix not in io.WRITE_SUFFIXES:
        raise ValueError(
            f"unsupported output type {suffix or '(no suffix)'!r}; write "
            f"{', '.join(io.WRITE_SUFFIXES)}."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {path.parent} does not exist; create it first.")
    target = np.dtype(np.float32 if dtype is None else dtype)
    if target == np.float64:
        target = np.dtype(np.float32)
    arr, clipped = io.cast_to_dtype(arr, target)
    if clipped:
        warnings.warn(
            f"{clipped} of {arr.size} pixels were outside the {target} range and were clipped "
            f"when writing {path.name}.",
            stacklevel=2,
        )
    sizes = {k: v for k, v in (pixel_size or {}).items() if v is not None}
    if suffix == ".npy":

        def write(tmp):
            with open(tmp, "wb") as f:
                np.save(f, arr)

    else:

        def write(tmp):
            _write_tiff(tmp, arr, axes, sizes, time_interval, ome=_wants_ome(path, axes, arr))

    atomic_write(path, write, overwrite=overwrite)
    return path


def _wants_ome(path: Path, axes: str, arr: np.ndarray) -> bool:
    if path.name.lower().endswith((".ome.tif", ".ome.tiff")):
        return True
    order = [_IMAGEJ_ORDER.index(a) for a in axes]
    return order != sorted(order) or arr.dtype.char not in "BHhf"


def _write_tiff(tmp, arr, axes, sizes, interval, *, ome: bool) -> None:
    import tifffile

    if ome:
        meta: dict = {"axes": axes}
        for axis in "XYZ":
            if axis in sizes:
                meta[f"PhysicalSize{axis}"] = sizes[axis]
                meta[f"PhysicalSize{axis}Unit"] = "µm"
        if interval:
            meta["TimeIncrement"] = interval
            meta["TimeIncrementUnit"] = "s"
        tifffile.imwrite(tmp, arr, ome=True, metadata=meta, photometric="minisblack")
        return
    meta = {"axes": axes}
    kwargs = {}
    if sizes:
        meta["unit"] = "um"
    if "Z" in sizes:
        meta["spacing"] = sizes["Z"]
    if interval:
        meta["finterval"] = interval
    if "X" in sizes and "Y" in sizes:
        kwargs["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
    tifffile.imwrite(tmp, arr, imagej=True, metadata=meta, **kwargs)


# ----------------------------------------------------------------------------- anisotropy

# A voxel counts as anisotropic when Z and YX sizes differ by more than this factor.
_ANISOTROPY = 1.5


def config_for_voxels(cfg, pixel_size, *, psf_shape=None):
    """``cfg`` with its 3D training patch shaped by the voxel size.

    jdeconv's patches are ``(patch_size_z, patch_size, patch_size)`` and its rotations
    (rot90) act in the YX plane only, which assumes Y and X pixels of one size; Z may
    differ. When the Z step is more than 1.5 times the lateral pixel, a patch of the
    default depth reaches much further along Z than across, so the depth is cut to
    cover about the same physical length as the side (``patch_size · dxy / dz``, rounded
    to the network's size multiple), never below what the PSF needs (the planes its
    blur takes plus 8 of interior for the loss) and never above the configured depth: a
    cheaper step with the same physical field of view. The patch is never made deeper. 2D
    configs, unknown sizes and near-isotropic voxels return ``cfg`` unchanged.

    Args:
      cfg: a :class:`jdeconv.Config` for a 3D image.
      pixel_size: ``(dz, dy, dx)`` in µm (None entries where unknown), or ``(dy, dx)``.
      psf_shape: the PSF's shape, to keep room for its axial extent.

    Returns:
      The (possibly) changed config.

    Warns:
      UserWarning: when Y and X pixels differ by more than 1 %: rotations in YX then
        mix two sampling rates.

    Example:
      >>> import jdeconv
      >>> cfg = jdeconv.Config(patch_size=48, patch_size_z=32, depth=2)
      >>> config_for_voxels(cfg, (0.6, 0.1, 0.1), psf_shape=(9, 17, 17)).patch_size_z
      16
    """
    sizes = tuple(pixel_size or ())
    if len(sizes) == 3 and None not in sizes[1:] and abs(sizes[1] - sizes[2]) > 0.01 * sizes[2]:
        warnings.warn(
            f"Y and X pixels differ ({sizes[1]:.4g} and {sizes[2]:.4g} µm); jdeconv's "
            "rotations in the YX plane assume square pixels. Resample the image to square "
            "pixels for the best result.",
            UserWarning,
            stacklevel=2,
        )
    if len(sizes) != 3 or any(s is None for s in sizes):
        return cfg
    dz, dxy = float(sizes[0]), float(min(sizes[1:]))
    if dz <= _ANISOTROPY * dxy:
        return cfg
    m = cfg.network.multiple
    want = max(round(cfg.patch_size * dxy / dz / m), 1) * m
    if psf_shape is not None and cfg.forward.crop_border:
        lower = loss_patch_floor(psf_shape[0], m)
    else:
        lower = m
    depth = min(max(want, lower), cfg.patch_size_z)
    return cfg if depth == cfg.patch_size_z else cfg.replace(patch_size_z=depth)


# ----------------------------------------------------------------------------- deconvolving


@dataclasses.dataclass(frozen=True)
class FileResult:
    """What :func:`deconvolve_stack` and :func:`deconvolve_file` return.

    Attributes:
      deconvolved: float32 array, the input's axes minus the selected ones.
      axes: its axes (e.g. ``"TCZYX"``).
      pixel_size, time_interval: as the input's.
      fit_time: the time index each channel's model was fitted on (None: no T axis).
      channels: the channel indices processed (None: no C axis).
      models: one :class:`jdeconv.FittedModel` per processed channel.
      notices: one-line notices (PSF resampling...).
      timings: seconds for ``fit`` (all channels) and ``apply`` (the other time points).
      path: the file written (:func:`deconvolve_file`), else None.

    Example:
      >>> FileResult(np.zeros((2, 8, 8), np.float32), "CYX").axes
      'CYX'
    """

    deconvolved: np.ndarray
    axes: str
    pixel_size: dict = dataclasses.field(default_factory=dict)
    time_interval: float | None = None
    fit_time: int | None = None
    channels: tuple | None = None
    models: tuple = ()
    notices: tuple = ()
    timings: dict = dataclasses.field(default_factory=dict)
    path: Path | None = None


def _index_list(n: int, pick: int | None, what: str, axis: str) -> list[int]:
    if pick is None:
        return list(range(n))
    if not -n <= pick < n:
        raise ValueError(
            f"{what} index {pick} is out of range: axis {axis} has {n} entries (0..{n - 1})."
        )
    return [pick % n]


def _psf_list(psf, n_channels: int, channels: list[int]):
    """One PSF per processed channel from an array, a path, or a sequence of them."""
    if isinstance(psf, (str, Path)) or isinstance(psf, np.ndarray) or not isinstance(psf, Sequence):
        items = [psf]
    else:
        items = list(psf)
    if len(items) == 1:
        return [items[0]] * len(channels)
    if len(items) != n_channels:
        raise ValueError(
            f"{len(items)} PSFs were given for {n_channels} channels; give one PSF for all "
            "channels or one per channel, in channel order."
        )
    return [items[c] for c in channels]


def _read_psf(item, psf_pixel_size):
    """(array, pixel sizes per axis or None) from a path or an array."""
    if isinstance(item, (str, Path)):
        arr, meta = io.read_image(item)
        sizes = meta.pixel_size if psf_pixel_size is None else psf_pixel_size
        return arr, sizes
    return np.asarray(item), psf_pixel_size


def deconvolve_stack(
    stack: Hyperstack,
    psf,
    *,
    cfg=None,
    channel: int | None = None,
    time: int | None = None,
    fit_time: int | None = None,
    pixel_size=None,
    psf_pixel_size=None,
    normalize_psf: bool = False,
    match_psf: bool = True,
    shape_patches: bool = True,
    verbose: bool = True,
    notify: Callable[[str], object] | None = None,
) -> FileResult:
    """Deconvolve every channel and time point of a :class:`Hyperstack` (module docstring).

    Args:
      stack: from :func:`read_hyperstack` (or built from an array).
      psf: one PSF for all channels or a sequence of one per channel (in channel order);
        each an array or a file path.
      cfg: a :class:`jdeconv.Config` for every channel (None: ``Config.default(ndim)``).
      channel: process this channel only (the output has no C axis).
      time: process this time point only (the output has no T axis).
      fit_time: the time point each model learns from (default: the middle one).
      pixel_size: the image's pixel size per spatial axis (``(dz, dy, dx)`` or
        ``(dy, dx)``), overriding the file's.
      psf_pixel_size: the PSFs' pixel size per axis, overriding a PSF file's metadata
        (arrays have none unless given here).
      normalize_psf: divide each PSF by its sum instead of raising.
      match_psf: bring each PSF onto the image's grid
        (:func:`jdeconv.psf.match_psf_to_image`); False when that is done already.
      shape_patches: in 3D, fit the patch depth to the voxel size
        (:func:`config_for_voxels`); False keeps ``cfg``'s.
      verbose: progress bars for training and for the time points.
      notify: called with each one-line notice (default: printed to stderr when
        ``verbose``).

    Returns:
      A :class:`FileResult` (``path`` None).

    Raises:
      ValueError: for bad indices, PSF counts, images or PSFs.

    Example:
      >>> import jdeconv
      >>> rng = np.random.default_rng(0)
      >>> stack = Hyperstack(rng.random((2, 2, 32, 32)).astype(np.float32), "TCYX")
      >>> cfg = jdeconv.Config(steps=1, batch_size=2, patch_size=16, depth=2, tta=False)
      >>> r = deconvolve_stack(stack, jdeconv.psf.gaussian_psf((5, 5), 1.0), cfg=cfg,
      ...                      verbose=False)
      >>> r.deconvolved.shape, r.axes, r.fit_time
      ((2, 2, 32, 32), 'TCYX', 1)
    """
    from tqdm.auto import tqdm

    from .api import deconvolve, fit
    from .config import Config
    from .psf import match_psf_to_image, validate_psf

    if notify is None:
        notify = _stderr if verbose else _silent
    n_c, n_t = stack.size("C"), stack.size("T")
    channels = _index_list(n_c, channel, "channel", "C")
    times = _index_list(n_t, time, "time", "T")
    if fit_time is None:
        fit_time = times[len(times) // 2] if time is None else times[0]
    fit_time = _index_list(n_t, fit_time, "fit_time", "T")[0]
    spatial = stack.spatial_axes
    sizes = stack.spatial_pixel_size if pixel_size is None else tuple(pixel_size)
    if len(sizes) != len(spatial):
        raise ValueError(
            f"pixel_size {tuple(pixel_size)} needs one value per spatial axis ({spatial})."
        )
    psfs = _psf_list(psf, n_c, channels)

    out_axes = "".join(
        a
        for a in stack.axes
        if not (a == "C" and channel is not None or a == "T" and time is not None)
    )
    out_shape = tuple(n for a, n in zip(stack.axes, stack.data.shape, strict=True) if a in out_axes)
    out = np.empty(out_shape, np.float32)
    rest = stack._rest_axes()

    def place(image, c, t):
        picks = {"C": c, "T": t}  # a selected axis is not in out_axes
        index = tuple(picks[a] if a in picks else slice(None) for a in out_axes)
        out[index] = _from_spatial(image, spatial, rest, out[index].shape)

    models, notices = [], []
    fit_s = apply_s = 0.0
    for c, item in zip(channels, psfs, strict=True):
        label = f"channel {c}" if "C" in stack.axes else "image"
        psf_arr, psf_sizes = _read_psf(item, psf_pixel_size)
        image = stack.image(channel=c, time=fit_time)
        # The layout (centre, crop) is checked, once, by fit.
        psf_arr = validate_psf(
            psf_arr, ndim=image.ndim, normalize=normalize_psf, check_centre=False
        )
        notice = None
        if match_psf:
            psf_arr, notice = match_psf_to_image(
                psf_arr, image.shape, psf_pixel_size=psf_sizes, pixel_size=sizes
            )
        if notice:
            notices.append(f"{label}: {notice}")
            notify(notices[-1])
        channel_cfg = cfg if cfg is not None else Config.default(image.ndim)
        if image.ndim == 3 and shape_patches:
            channel_cfg = config_for_voxels(channel_cfg, sizes, psf_shape=psf_arr.shape)
        where = f" on time point {fit_time}" if "T" in stack.axes else ""
        notify(f"{label}: fitting{where} ({'x'.join(map(str, image.shape))} {spatial})")
        t0 = _time.perf_counter()
        result = fit(image, psf_arr, channel_cfg, verbose=verbose)
        fit_s += _time.perf_counter() - t0
        models.append(result.model)
        place(result.deconvolved, c, fit_time)
        others = [t for t in times if t != fit_time]
        t0 = _time.perf_counter()
        bar = tqdm(
            others, desc=f"jdeconv {label}", unit="time point", disable=not verbose or not others
        )
        for t in bar:
            place(deconvolve(stack.image(channel=c, time=t), result.model), c, t)
        apply_s += _time.perf_counter() - t0

    return FileResult(
        deconvolved=out,
        axes=out_axes,
        pixel_size={a: s for a, s in zip(spatial, sizes, strict=True) if s is not None},
        time_interval=stack.time_interval,
        fit_time=fit_time if "T" in stack.axes else None,
        channels=tuple(channels) if "C" in stack.axes else None,
        models=tuple(models),
        notices=tuple(notices),
        timings={"fit": fit_s, "apply": apply_s, "time_points": len(times)},
    )


def _stderr(message: str) -> None:
    print(f"jdeconv: {message}", file=sys.stderr, flush=True)


def _silent(message: str) -> None:
    return None


def deconvolve_file(
    path,
    psf,
    *,
    output,
    cfg=None,
    axes: str | None = None,
    channel: int | None = None,
    time: int | None = None,
    fit_time: int | None = None,
    pixel_size=None,
    psf_pixel_size=None,
    normalize_psf: bool = False,
    dtype=None,
    overwrite: bool = False,
    verbose: bool = True,
) -> FileResult:
    """Deconvolve a whole file (all channels and time points) and write the result.

    Reads ``path`` (:func:`read_hyperstack`), runs :func:`deconvolve_stack` and writes
    ``output`` (:func:`write_hyperstack`) with the input's axes order, pixel sizes and
    time interval; ``channel``/``time`` keep one of them (their axis is then dropped).
    The input is never overwritten.

    Args:
      path: input ``.tif``/``.tiff``/``.npy``.
      psf: one PSF (array or file) for all channels, or one per channel.
      cfg: training config for every channel (None: the default for its rank).
      output: output file (``.tif``: ImageJ or OME-TIFF, ``.ome.tif``, ``.npy``).
      axes, channel, time: as :func:`jdeconv.io.read_image`.
      fit_time, pixel_size, psf_pixel_size, normalize_psf, verbose: as
        :func:`deconvolve_stack`.
      dtype: pixel type written (None: float32; ``"input"``: the input's).
      overwrite: replace an existing output.

    Returns:
      A :class:`FileResult` with ``path`` set.

    Raises:
      FileExistsError: if ``output`` exists and ``overwrite`` is False (checked first).
      ValueError: for an output that is the input, or bad input.

    Example:
      >>> import tempfile, jdeconv
      >>> d = tempfile.mkdtemp()
      >>> rng = np.random.default_rng(0)
      >>> _ = write_hyperstack(f"{d}/in.tif", rng.random((2, 32, 32)), axes="CYX",
      ...                      pixel_size={"X": 0.1, "Y": 0.1})
      >>> cfg = jdeconv.Config(steps=1, batch_size=2, patch_size=16, depth=2, tta=False)
      >>> r = deconvolve_file(f"{d}/in.tif", jdeconv.psf.gaussian_psf((5, 5), 1.0), cfg=cfg,
      ...                     output=f"{d}/out.tif", verbose=False)
      >>> read_hyperstack(r.path).axes, r.pixel_size
      ('CYX', {'Y': 0.1, 'X': 0.1})
    """
    path, output = Path(path), Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"{output} already exists; pass overwrite=True or choose another name."
        )
    if output.exists() and path.exists() and output.resolve() == path.resolve():
        raise ValueError(f"{output} is the input file; jdeconv never overwrites its inputs.")
    stack = read_hyperstack(path, axes=axes)
    result = deconvolve_stack(
        stack,
        psf,
        cfg=cfg,
        channel=channel,
        time=time,
        fit_time=fit_time,
        pixel_size=pixel_size,
        psf_pixel_size=psf_pixel_size,
        normalize_psf=normalize_psf,
        verbose=verbose,
    )
    if isinstance(dtype, str) and dtype == "input":
        dtype = stack.data.dtype
    written = write_hyperstack(
        output,
        result.deconvolved,
        axes=result.axes,
        pixel_size=result.pixel_size,
        time_interval=result.time_interval,
        dtype=dtype,
        overwrite=overwrite,
    )
    return dataclasses.replace(result, path=written)
