"""Reading and writing microscopy images: TIFF/OME-TIFF with axes and pixel sizes, NumPy, PNG.

jdeconv works on 2D ``YX`` and 3D ``ZYX`` arrays. :func:`read_image` turns what is on disk
into one of those, and keeps what a microscopist needs to write the result back the same
way (axes, pixel sizes in micrometres, the stored dtype) in an :class:`ImageMetadata`:

- TIFF and OME-TIFF (tifffile): the axes of the first series as tifffile reports them
  (``YX``, ``ZYX``, ``TZCYX``, ...); pixel sizes from the OME-XML ``PhysicalSize*``
  attributes, from ImageJ's ``unit``/``spacing`` and resolution tags, or from plain
  resolution tags in inch or centimetre units.
- ``.npy``: 2D is ``YX`` and 3D is ``ZYX`` unless ``axes`` says otherwise; no pixel sizes.
- PNG/JPEG/BMP (scikit-image): greyscale, or RGB(A) whose colour channels are identical
  (greyscale saved as RGB). A colour image is an error unless you pick one channel.

Singleton axes are squeezed. A channel (C), time (T) or sample (S, e.g. RGB) axis longer
than one is an error unless you pick one index with ``channel=``/``time=``; a stack of
unspecified kind (tifffile's ``I``/``Q`` axes, e.g. a plain multi-page TIFF) is read as Z.

:func:`write_image` writes float32 by default: an ImageJ-compatible TIFF with axes and
pixel sizes when known (OME-TIFF when the name ends in ``.ome.tif``), or ``.npy``. Writes
are atomic: the data go to a temporary file in the output's directory, which is then
moved into place, so an interrupted write never leaves a truncated file behind. An
existing file is never replaced unless ``overwrite=True``: the move is then an exclusive
link, so of two writers of one new file one gets ``FileExistsError`` instead of one
result being silently lost (:mod:`jdeconv._files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import math
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from ._files import atomic_write

__all__ = [
    "ImageMetadata",
    "read_image",
    "write_image",
    "cast_to_dtype",
    "image_stem",
    "TIFF_SUFFIXES",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
]

TIFF_SUFFIXES = (".tif", ".tiff")
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
READ_SUFFIXES = (*TIFF_SUFFIXES, ".npy", *_PICTURE_SUFFIXES)
WRITE_SUFFIXES = (*TIFF_SUFFIXES, ".npy")

# Axis letters as tifffile uses them. Y and X are spatial; Z is the third spatial axis.
_SELECTABLE = {"C": "channel", "S": "channel", "T": "time"}
_GENERIC_STACK = "IQ"  # tifffile: image sequence / unknown; read as Z when it is the only one
_KNOWN_AXES = "TZCSYXIQ"

# Micrometres per unit, for OME-XML units and ImageJ's free-text unit.
_UM_PER_UNIT = {
    "m": 1e6,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,
    "μm": 1.0,  # Greek mu, also seen in files
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "\\u00b5m": 1.0,  # ImageJ writes the escape literally
    "nm": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "inch": 25400.0,
    "in": 25400.0,
}
# TIFF ResolutionUnit tag: 2 = inch, 3 = centimetre (1 = none: no physical size).
_UM_PER_RESOLUTION_UNIT = {2: 25400.0, 3: 1e4}


@dataclasses.dataclass(frozen=True)
class ImageMetadata:
    """What :func:`read_image` learned about a file, and :func:`write_image` writes back.

    Attributes:
      axes: axes of the returned array, ``"YX"`` or ``"ZYX"``.
      pixel_size: size of a pixel along each of ``axes`` in micrometres, ``None`` where
        the file does not say (for Z: the step between planes).
      dtype: the dtype stored in the file (e.g. ``"uint16"``), for an opt-in cast back.
      source_axes: the file's axes before selection and squeezing (e.g. ``"TZCYX"``).
      source_shape: the file's array shape.
      selection: the indices picked from selectable axes, e.g. ``{"C": 1}``.
      path: the file read, or None.

    Example:
      >>> ImageMetadata(axes="ZYX", pixel_size=(0.3, 0.1, 0.1)).size_of("Z")
      0.3
    """

    axes: str
    pixel_size: tuple[float | None, ...] = ()
    dtype: str = "float32"
    source_axes: str = ""
    source_shape: tuple[int, ...] = ()
    selection: dict = dataclasses.field(default_factory=dict)
    path: str | None = None

    def __post_init__(self):
        if self.axes not in ("YX", "ZYX"):
            raise ValueError(f"axes must be 'YX' or 'ZYX', got {self.axes!r}.")
        size = tuple(self.pixel_size) if self.pixel_size else (None,) * len(self.axes)
        if len(size) != len(self.axes):
            raise ValueError(
                f"pixel_size {self.pixel_size} needs one value (or None) per axis of {self.axes!r}."
            )
        object.__setattr__(self, "pixel_size", tuple(_positive_or_none(s) for s in size))

    def size_of(self, axis: str) -> float | None:
        """Pixel size along ``axis`` ("X", "Y" or "Z") in µm, or None if unknown/absent."""
        return self.pixel_size[self.axes.index(axis)] if axis in self.axes else None


def _positive_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def image_stem(path) -> str:
    """File name without its image suffix (``cells.ome.tif`` or ``cells.ome.zarr`` -> ``cells``).

    Example:
      >>> image_stem("cells.ome.tif")
      'cells'
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".zarr", *READ_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _suffix(path: Path) -> str:
    return path.suffix.lower()


# ----------------------------------------------------------------------------- reading


def read_image(
    path,
    *,
    axes: str | None = None,
    channel: int | None = None,
    time: int | None = None,
) -> tuple[np.ndarray, ImageMetadata]:
    """Read a 2D (YX) or 3D (ZYX) image and its metadata.

    Args:
      path: a ``.tif``/``.tiff`` (including OME-TIFF and ImageJ hyperstacks), ``.npy``,
        ``.png``, ``.jpg``/``.jpeg`` or ``.bmp`` file.
      axes: the axes of the stored array, one letter per dimension from ``TZCSYX`` (e.g.
        ``"ZYX"``, ``"CYX"``), overriding what the file says (or the default ``YX``/``ZYX``
        for NumPy files). A string with as many letters as the array has non-singleton
        axes is accepted too. The axes left after selection must be ``YX`` or ``ZYX``.
      channel: index to keep along a channel axis (C, or S such as RGB when there is no
        C axis); required when that axis is longer than one.
      time: index to keep along a time axis (T); required when it is longer than one.

    Returns:
      ``(array, metadata)``: the array in its stored dtype (uint8, uint16, float32, ...),
      2D ``YX`` or 3D ``ZYX``, and an :class:`ImageMetadata`.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: naming the problem and the fix, for an unreadable or unsupported file,
        a colour image, an ambiguous channel/time axis, an index out of range, axes that
        do not fit the array, or a result that is not 2D/3D.

    Example:
      >>> import tempfile, numpy as np
      >>> d = tempfile.mkdtemp()
      >>> _ = write_image(f"{d}/a.tif", np.ones((3, 8, 8), np.float32),
      ...                 metadata=ImageMetadata("ZYX", (1.0, 0.1, 0.1)))
      >>> image, meta = read_image(f"{d}/a.tif")
      >>> image.shape, meta.axes, meta.pixel_size
      ((3, 8, 8), 'ZYX', (1.0, 0.1, 0.1))
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        return _read(path, axes=axes, channel=channel, time=time)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _read(path: Path, *, axes, channel, time):
    if path.is_dir():
        raise ValueError("is a directory, not an image file.")
    suffix = _suffix(path)
    if suffix not in READ_SUFFIXES:
        raise ValueError(
            f"unsupported file type {suffix or '(no suffix)'!r}; jdeconv reads "
            f"{', '.join(READ_SUFFIXES)}."
        )
    if suffix in TIFF_SUFFIXES:
        data, file_axes, sizes = _read_tiff(path)
    elif suffix == ".npy":
        data, file_axes, sizes = _read_npy(path)
    else:
        data, file_axes, sizes = _read_picture(path)

    source_shape = tuple(data.shape)
    if data.ndim < 2:
        raise ValueError(
            f"it is {data.ndim}D (shape {source_shape}); jdeconv needs a 2D (YX) or 3D (ZYX) image."
        )
    file_axes = _apply_axes_override(data, file_axes, axes)
    data, metadata = _selected(
        path, data, file_axes, sizes, channel=channel, time=time, user_axes=axes is not None
    )
    if data.dtype.kind not in "uif" or data.dtype.itemsize > 8:
        raise ValueError(
            f"unsupported pixel type {data.dtype}; jdeconv reads integer and real images."
        )
    return data, metadata


def _selected(path, data, file_axes: str, sizes, *, channel, time, user_axes: bool):
    """Pick the channel/time point and describe the result: ``(data, ImageMetadata)``."""
    source_shape = tuple(data.shape)
    data, out_axes, sizes, selection = _select(
        data, file_axes, sizes, channel=channel, time=time, user_axes=user_axes
    )
    metadata = ImageMetadata(
        axes=out_axes,
        pixel_size=tuple(sizes.get(a) for a in out_axes),
        dtype=str(data.dtype),
        source_axes=file_axes,
        source_shape=source_shape,
        selection=selection,
        path=str(path),
    )
    return data, metadata


# tifffile log messages that mean pages or pixels are missing: the file is damaged and
# what tifffile returns (e.g. the first plane of a cut ImageJ stack) is not the image.
_DAMAGED = ("corrupt", "invalid page offset", "invalid offset to first page", "truncated")


class _TiffLog(logging.Handler):
    """Collects tifffile's log records while one file is read (they are not printed)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(" ".join(record.getMessage().split()))
        except Exception:  # a malformed record must not stop the read
            pass


@contextlib.contextmanager
def _tifffile_log():
    """tifffile's log output, captured instead of printed (no stray lines on stderr)."""
    logger = logging.getLogger("tifffile")
    handler, propagate = _TiffLog(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _read_tiff(path: Path):
    import tifffile

    with _tifffile_log() as log:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0] if tif.series else None
                if series is not None:
                    data = series.asarray()
                    file_axes = series.axes.upper()
                    try:
                        sizes = _tiff_pixel_sizes(tif)
                    except Exception:  # odd metadata must not stop us reading the pixels
                        sizes = {}
        except Exception as err:  # tifffile raises several types for damaged files
            hint = " The file may be truncated or damaged." if log else ""
            raise ValueError(
                f"cannot read it as a TIFF file ({type(err).__name__}: {err}).{hint}"
            ) from err
    damaged = [m for m in log if any(word in m.lower() for word in _DAMAGED)]
    if damaged:
        raise ValueError(
            f"the TIFF file is truncated or damaged (tifffile: {damaged[0]}); what could be "
            "read is not the whole image. Copy or export the file again."
        )
    if log:
        warnings.warn(
            f"{path}: tifffile reported a problem reading it ({log[0]}); check the image.",
            stacklevel=4,
        )
    if series is None:
        raise ValueError("the TIFF file contains no image data.")
    if len(file_axes) != data.ndim:
        file_axes = _default_axes(data.ndim)
    return data, file_axes, sizes


def _tiff_pixel_sizes(tif) -> dict[str, float]:
    """Pixel sizes in µm keyed by axis letter, from OME, ImageJ or resolution tags."""
    sizes: dict[str, float] = {}
    if tif.is_ome and tif.ome_metadata:
        sizes = _ome_pixel_sizes(tif.ome_metadata)
        if sizes:
            return sizes
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    try:
        xres, yres = (float(r) for r in page.resolution)
        res_unit = int(page.resolutionunit)
    except (AttributeError, TypeError, ValueError):
        return sizes
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        per_unit = _unit_to_um(meta.get("unit"))
        if per_unit is not None:
            if xres > 0 and yres > 0:
                sizes["X"] = per_unit / xres
                sizes["Y"] = per_unit / yres
            if meta.get("spacing"):
                sizes["Z"] = per_unit * float(meta["spacing"])
        return sizes
    if res_unit in _UM_PER_RESOLUTION_UNIT and xres > 0 and yres > 0:
        sizes["X"] = _UM_PER_RESOLUTION_UNIT[res_unit] / xres
        sizes["Y"] = _UM_PER_RESOLUTION_UNIT[res_unit] / yres
    shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
    per_unit = _unit_to_um(shaped.get("unit"))
    if per_unit is not None and shaped.get("spacing"):
        sizes["Z"] = per_unit * float(shaped["spacing"])  # written by write_image
    return sizes


def _unit_to_um(unit) -> float | None:
    if not isinstance(unit, str):
        return None
    return _UM_PER_UNIT.get(unit.strip().lower())


def _ome_pixel_sizes(xml: str) -> dict[str, float]:
    """PhysicalSize{X,Y,Z} of the first image (series 0, the one read), in µm."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return {}
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    if not pixels:
        return {}
    element = pixels[0]
    sizes = {}
    for axis in "XYZ":
        value = element.get(f"PhysicalSize{axis}")
        if value is None:
            continue
        per_unit = _unit_to_um(element.get(f"PhysicalSize{axis}Unit", "µm"))
        try:
            size = float(value) * per_unit if per_unit is not None else None
        except ValueError:
            size = None
        if size is not None:
            sizes[axis] = size
    return sizes


def _read_npy(path: Path):
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot read it as a NumPy .npy file ({err}).") from err
    if not isinstance(data, np.ndarray):
        raise ValueError("the .npy file does not hold a single array.")
    return data, _default_axes(data.ndim), {}


def _read_picture(path: Path):
    import skimage.io

    try:
        data = np.asarray(skimage.io.imread(path))
    except Exception as err:
        raise ValueError(f"cannot read it as an image ({type(err).__name__}: {err}).") from err
    if data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        axes = "YXS"
    else:
        axes = _default_axes(data.ndim)
    return data, axes, {}


def _default_axes(ndim: int) -> str:
    # Unlabelled arrays: the last two axes are YX; one more is Z; anything else is unknown.
    if ndim == 3:
        return "ZYX"
    return "Q" * (ndim - 2) + "YX" if ndim >= 2 else "X" * ndim


def _apply_axes_override(data: np.ndarray, file_axes: str, axes: str | None) -> str:
    if axes is None:
        return file_axes
    axes = axes.strip().upper()
    bad = sorted(set(axes) - set(_KNOWN_AXES))
    if not axes or bad or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes):
        raise ValueError(
            f"axes {axes!r} must be distinct letters from 'TZCSYX' including Y and X, e.g. "
            "'YX', 'ZYX' or 'CZYX'."
        )
    if len(axes) == data.ndim:
        return axes
    non_singleton = [n for n in data.shape if n != 1]
    if len(axes) == len(non_singleton):
        # The user named only the real axes; label the singleton ones as generic.
        it = iter(axes)
        return "".join(next(it) if n != 1 else "Q" for n in data.shape)
    raise ValueError(
        f"axes {axes!r} has {len(axes)} letters but the file's array has shape "
        f"{data.shape} (axes {file_axes!r} in the file); give one letter per axis."
    )


def _select(data, axes, sizes, *, channel, time, user_axes):
    """Pick channel/time indices, squeeze singletons, and order the rest as (Z)YX."""
    source_shape = tuple(data.shape)
    selection = {}
    picks = {"channel": channel, "time": time}
    used = dict.fromkeys(picks, False)
    # S is the channel axis only when there is no C axis (e.g. RGB pictures).
    channel_axis = "C" if "C" in axes else ("S" if "S" in axes else None)
    index: list = [slice(None)] * data.ndim
    for i, (letter, n) in enumerate(zip(axes, data.shape, strict=True)):
        option = _SELECTABLE.get(letter)
        if option == "channel" and letter != channel_axis:
            option = None
        if option is not None and picks[option] is not None:
            k = picks[option]
            if not -n <= k < n:
                raise ValueError(
                    f"{option} index {k} is out of range: axis {letter} has {n} entries "
                    f"(0..{n - 1})."
                )
            index[i] = k
            selection[letter] = k % n
            used[option] = True
        elif letter == "S" and n > 1:
            gray = _greyscale_samples(data, i)
            if gray is None:
                raise ValueError(
                    f"it is a colour image ({n} samples per pixel, axes {axes!r}); convert "
                    "it to greyscale first (e.g. skimage.color.rgb2gray, or Image > Type > "
                    "8-bit in Fiji) or pick one channel with --channel N (channel=N)."
                )
            index[i] = 0  # identical colour channels: any one is the grey image
            selection[letter] = 0
        elif option is not None and n > 1:
            what = {"C": "channels", "T": "time points", "S": "samples"}[letter]
            flag = "--channel" if option == "channel" else "--time"
            raise ValueError(
                f"it has {n} {what} (axis {letter}; axes {axes!r}, shape {source_shape}); "
                f"jdeconv deconvolves one at a time: pick one with {flag} N ({option}=N)."
            )
    for option, value in picks.items():
        if value is not None and not used[option]:
            raise ValueError(
                f"{option}={value} was given but the image has no "
                f"{'channel (C/S)' if option == 'channel' else 'time (T)'} axis "
                f"(axes {axes!r}, shape {source_shape})."
            )
    data = data[tuple(index)]
    rest = "".join(a for a, ix in zip(axes, index, strict=True) if isinstance(ix, slice))

    keep = [i for i, (a, n) in enumerate(zip(rest, data.shape, strict=True)) if n != 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    rest = "".join(rest[i] for i in keep)

    generic = [a for a in rest if a in _GENERIC_STACK]
    if len(generic) == 1 and "Z" not in rest:
        rest = rest.replace(generic[0], "Z")  # a plain stack: read as Z planes
    leftover = [(a, n) for a, n in zip(rest, data.shape, strict=True) if a not in "ZYX"]
    if leftover:
        described = ", ".join(
            f"{'an unlabelled axis' if a in _GENERIC_STACK else 'axis ' + a} of size {n}"
            for a, n in leftover
        )
        hint = "" if user_axes else " Say what they are with --axes (axes=), e.g. 'TZYX'."
        raise ValueError(
            f"it has axes jdeconv cannot use ({described}; axes {axes!r}, shape "
            f"{source_shape}); it deconvolves 2D (YX) or 3D (ZYX) images.{hint}"
        )
    if "Y" not in rest or "X" not in rest:
        raise ValueError(f"it has no Y and X axes (axes {axes!r}).")
    order = [rest.index(a) for a in "ZYX" if a in rest]
    data = data.transpose(order)  # a method, so that a dask array stays lazy
    out_axes = "".join(rest[i] for i in order)
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    return data, out_axes, sizes, selection


def _greyscale_samples(data: np.ndarray, axis: int):
    """Index 0 along ``axis`` if the colour samples are identical (and alpha opaque)."""
    samples = np.moveaxis(data, axis, 0)
    n = samples.shape[0]
    colour = samples[: 3 if n >= 3 else 1]
    alpha = samples[3] if n == 4 else (samples[1] if n == 2 else None)
    if alpha is not None and np.ptp(alpha) != 0:
        return None
    if not all(np.array_equal(colour[0], c) for c in colour[1:]):
        return None
    return 0


# ----------------------------------------------------------------------------- writing


def cast_to_dtype(array, dtype) -> tuple[np.ndarray, int]:
    """Convert ``array`` to ``dtype`` without rescaling; return it and the clipped count.

    Integer targets: values are rounded to the nearest integer (halves to even,
    ``np.rint``) and clipped to the dtype's range (0..65535 for uint16); intensities are
    NOT rescaled, so a deconvolved image stays in its input's units, and values below 0
    or above the maximum (e.g. deconvolution overshoot) are clipped. NaN becomes 0.
    Float targets: a plain conversion.

    Example:
      >>> cast_to_dtype(np.array([-3.2, 1.5, 2.5, 70000.0]), "uint16")
      (array([    0,     2,     2, 65535], dtype=uint16), 2)
    """
    dtype = np.dtype(dtype)
    arr = np.asarray(array)
    if dtype.kind == "f":
        return arr.astype(dtype), 0
    if dtype.kind not in "ui":
        raise ValueError(f"cannot write pixel type {dtype}; use a float or integer dtype.")
    info = np.iinfo(dtype)
    values = np.rint(np.nan_to_num(arr.astype(np.float64), nan=0.0))
    clipped = int(np.count_nonzero((values < info.min) | (values > info.max)))
    return np.clip(values, info.min, info.max).astype(dtype), clipped


def write_image(
    path,
    array,
    *,
    metadata: ImageMetadata | None = None,
    dtype=None,
    like=None,
    overwrite: bool = False,
):
    """Write a 2D/3D image atomically as TIFF (ImageJ-compatible) or ``.npy``.

    Args:
      path: output file: ``.tif``/``.tiff`` (ImageJ hyperstack with axes, µm pixel sizes
        and Z spacing when known; OME-TIFF if the name ends in ``.ome.tif``/``.ome.tiff``)
        or ``.npy`` (the array only). Its directory must exist.
      array: 2D (YX) or 3D (ZYX) array.
      metadata: axes and pixel sizes to record (e.g. the input's, from
        :func:`read_image`); by default ``YX``/``ZYX`` and no pixel sizes.
      dtype: the pixel type to write; None writes float32 (float64 data are written
        as float32 too). An integer dtype is converted by :func:`cast_to_dtype`: rounded
        and clipped to the dtype's range, never rescaled.
      like: an :class:`ImageMetadata` or array whose dtype to write (e.g. the input's
        metadata, to cast back to its uint16); not together with ``dtype``.
      overwrite: replace an existing file. By default an existing ``path`` is an error,
        checked before anything is written and again, exclusively, when the file is
        moved into place.

    Returns:
      The output ``Path``.

    Raises:
      FileNotFoundError: if the output's directory does not exist.
      FileExistsError: if ``path`` exists and ``overwrite`` is False.
      ValueError: for an unsupported suffix, a directory path, a bad rank, or axes that
        do not match the array.

    Example:
      >>> import tempfile, numpy as np
      >>> out = write_image(f"{tempfile.mkdtemp()}/x.npy", np.zeros((4, 4)))
      >>> np.load(out).dtype
      dtype('float32')
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"unsupported output type {suffix or '(no suffix)'!r}; write "
            f"{', '.join(WRITE_SUFFIXES)}."
        )
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"output directory {parent} does not exist; create it first (mkdir -p {parent})."
        )
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name.")
    if not overwrite and path.exists():
        raise FileExistsError(
            errno.EEXIST,
            f"{path} already exists; pass overwrite=True to replace it or choose another name",
            str(path),
        )
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ValueError(f"can only write 2D (YX) or 3D (ZYX) images, got shape {arr.shape}.")
    if metadata is None:
        metadata = ImageMetadata("YX" if arr.ndim == 2 else "ZYX")
    if len(metadata.axes) != arr.ndim:
        raise ValueError(
            f"metadata axes {metadata.axes!r} do not match the array's shape {arr.shape}."
        )
    if dtype is not None and like is not None:
        raise ValueError("give dtype or like, not both.")
    if like is not None:
        dtype = like.dtype
    target = np.dtype(np.float32 if dtype is None else dtype)
    if target == np.float64:
        target = np.dtype(np.float32)
    arr, clipped = cast_to_dtype(arr, target)
    if clipped:
        warnings.warn(
            f"{clipped} of {arr.size} pixels ({100 * clipped / arr.size:.2g} %) were outside "
            f"the {target} range and were clipped when writing {path.name}.",
            stacklevel=2,
        )

    if suffix == ".npy":
        atomic_write(path, lambda tmp: _save_npy(tmp, arr), overwrite=overwrite)
    else:
        ome = _is_ome(path)
        atomic_write(
            path, lambda tmp: _write_tiff(tmp, arr, metadata, ome=ome), overwrite=overwrite
        )
    return path


def _save_npy(tmp: str, arr: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # np.save(name) would append ".npy" to the temporary name
        np.save(f, arr)


def _is_ome(path: Path) -> bool:
    return path.name.lower().endswith((".ome.tif", ".ome.tiff"))


def _write_tiff(tmp: str, arr: np.ndarray, metadata: ImageMetadata, *, ome: bool) -> None:
    import tifffile

    dx, dy, dz = (metadata.size_of(a) for a in "XYZ")
    kwargs: dict = {}
    if ome:
        meta: dict = {"axes": metadata.axes}
        for axis, size in (("X", dx), ("Y", dy), ("Z", dz)):
            if size is not None:
                meta[f"PhysicalSize{axis}"] = size
                meta[f"PhysicalSize{axis}Unit"] = "µm"
        tifffile.imwrite(tmp, arr, ome=True, metadata=meta, photometric="minisblack")
        return
    if arr.dtype.char in "BHhf":
        # ImageJ hyperstack: Fiji opens it with axes, µm calibration and Z spacing.
        meta = {"axes": metadata.axes}
        if dx is not None or dy is not None or dz is not None:
            meta["unit"] = "um"
        if dz is not None:
            meta["spacing"] = dz
        if dx is not None and dy is not None:
            kwargs["resolution"] = (1.0 / dx, 1.0 / dy)
        tifffile.imwrite(tmp, arr, imagej=True, metadata=meta, **kwargs)
        return
    # Pixel types ImageJ cannot hold: a plain TIFF with axes and centimetre resolution.
    if dx is not None and dy is not None:
        kwargs["resolution"] = (1e4 / dx, 1e4 / dy)
        kwargs["resolutionunit"] = "CENTIMETER"
    meta = {"axes": metadata.axes}
    if dz is not None:
        meta.update(spacing=dz, unit="um")
    tifffile.imwrite(tmp, arr, metadata=meta, photometric="minisblack", **kwargs)
