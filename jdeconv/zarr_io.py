"""Images larger than memory: OME-Zarr (NGFF) and lazily read TIFF, as dask arrays.

- :func:`read_ome_zarr` opens the full-resolution level of an OME-Zarr image (NGFF
  0.4 or 0.5, through ``ngff-zarr``) as a dask array, with axes and pixel sizes in an
  :class:`~jdeconv.io.ImageMetadata`; channel/time axes are picked as
  :func:`jdeconv.io.read_image` picks them.
- :func:`write_ome_zarr` writes a 2D/3D array (NumPy or dask, computed a chunk at a
  time) as an OME-Zarr multiscale pyramid, halving Y and X per level (Z is kept: it is
  usually sampled more coarsely already). The store is written to a hidden temporary
  folder beside the output and renamed into place at the end, so an interrupted write
  never leaves a store at ``path`` that looks complete.
- :func:`read_tiff_lazy` reads a TIFF through tifffile's Zarr interface
  (``aszarr``): pages or tiles are decoded when a chunk is computed. The store keeps
  the file open, so use it with the threaded or single-process scheduler, or convert the
  file to OME-Zarr first for a cluster.

Needs the ``zarr`` extra: ``pip install 'jdeconv[zarr]'`` (dask, zarr, ngff-zarr).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import _signals
from ._files import _exists
from .io import (
    ImageMetadata,
    _apply_axes_override,
    _default_axes,
    _selected,
    _tiff_pixel_sizes,
    cast_to_dtype,
)

__all__ = ["read_ome_zarr", "write_ome_zarr", "read_tiff_lazy", "is_zarr_store", "ZARR_SUFFIX"]

ZARR_SUFFIX = ".zarr"

# Micrometres per NGFF space unit (the UDUNITS-2 names the specification lists).
_UM_PER_NGFF_UNIT = {
    "angstrom": 1e-4,
    "picometer": 1e-6,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "decimeter": 1e5,
    "meter": 1e6,
}


def is_zarr_store(path) -> bool:
    """Whether ``path`` is a folder holding a Zarr group or array (v2 or v3).

    Example:
      >>> is_zarr_store("no-such-folder.zarr")
      False
    """
    path = Path(path)
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray", ".zattrs")
    )


def read_ome_zarr(path, *, channel: int | None = None, time: int | None = None):
    """Open the full-resolution image of an OME-Zarr store lazily, with its metadata.

    Args:
      path: an OME-Zarr folder (NGFF 0.4 or 0.5), e.g. ``cells.ome.zarr``.
      channel: index to keep along the channel axis (``c``), needed when it is longer
        than one.
      time: index to keep along the time axis (``t``), likewise.

    Returns:
      ``(array, metadata)``: a 2D ``YX`` or 3D ``ZYX`` dask array in the stored dtype
      (chunked as stored), and an :class:`~jdeconv.io.ImageMetadata` whose pixel sizes
      are in micrometres (None for an axis without a known space unit).

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: for a folder that is not an OME-Zarr image, or axes jdeconv cannot
        use (as :func:`jdeconv.io.read_image`).

    Example:
      >>> import tempfile, numpy as np
      >>> path = f"{tempfile.mkdtemp()}/a.ome.zarr"
      >>> _ = write_ome_zarr(path, np.ones((2, 8, 8), np.float32),
      ...                    metadata=ImageMetadata("ZYX", (1.0, 0.1, 0.1)))
      >>> image, meta = read_ome_zarr(path)
      >>> image.shape, meta.axes, meta.pixel_size
      ((2, 8, 8), 'ZYX', (1.0, 0.1, 0.1))
    """
    import dask.array as da
    import ngff_zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    try:
        multiscales = ngff_zarr.from_ngff_zarr(str(path))
        image = multiscales.images[0]
        # The pixels through dask's own Zarr reader: a graph that pickles, so that
        # dask.distributed workers can read the chunks themselves.
        pixels = da.from_zarr(str(path), component=multiscales.metadata.datasets[0].path)
    except Exception as err:  # ngff-zarr and zarr raise many types for foreign folders
        raise ValueError(
            f"{path}: cannot read it as an OME-Zarr image ({type(err).__name__}: {err})."
        ) from err
    dims = "".join(image.dims).upper()
    sizes = {}
    for dim in "ZYX":
        unit = (image.axes_units or {}).get(dim.lower())
        if dim in dims and unit in _UM_PER_NGFF_UNIT:
            sizes[dim] = float(image.scale[dim.lower()]) * _UM_PER_NGFF_UNIT[unit]
    try:
        data, metadata = _selected(
            path, pixels, dims, sizes, channel=channel, time=time, user_axes=False
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return data, metadata


def _scale_factors(shape, levels: int | None):
    yx = min(shape[-2:])
    if levels is None:  # halve while the smaller of Y and X keeps at least 256 pixels
        levels = 0
        while yx // 2 ** (levels + 1) >= 256 and levels < 8:
            levels += 1
    factors = []
    for k in range(1, levels + 1):
        factor = {"y": 2**k, "x": 2**k}
        if len(shape) == 3:
            factor["z"] = 1
        factors.append(factor)
    return factors


def write_ome_zarr(
    path,
    array,
    *,
    metadata: ImageMetadata | None = None,
    chunks=None,
    levels: int | None = None,
    dtype=None,
    version: str = "0.4",
    name: str = "image",
    overwrite: bool = False,
) -> Path:
    """Write a 2D/3D image as an OME-Zarr multiscale pyramid, moved into place at the end.

    A NumPy or dask array (a lazy result of :func:`jdeconv.deconvolve` is computed a chunk
    at a time, on the current dask scheduler) is written with its axes, µm pixel sizes and
    a pyramid of ``levels`` extra levels (Y and X halved per level). The store is built in
    a hidden temporary folder beside ``path`` and renamed to ``path`` only when complete.
    An existing ``path`` is an error unless ``overwrite=True`` (as for
    :func:`jdeconv.io.write_image`), which replaces an existing Zarr store (never any other
    folder or file). An interrupted write leaves at most a hidden ``.NAME.*.tmp`` folder.

    Args:
      path: the output folder, conventionally ``NAME.ome.zarr``; its parent must exist.
      array: 2D (YX) or 3D (ZYX) array.
      metadata: axes and pixel sizes (e.g. from :func:`read_ome_zarr` or
        :func:`jdeconv.io.read_image`); by default ``YX``/``ZYX`` with none.
      chunks: chunk size (an int, or one per axis); None: ngff-zarr's default.
      levels: downsampled levels below full resolution; None halves Y and X while the
        smaller of them keeps at least 256 pixels.
      dtype: pixel type written; None writes float32 (as :func:`jdeconv.io.write_image`);
        an integer type is rounded and clipped (:func:`jdeconv.io.cast_to_dtype`).
      version: OME-Zarr version, ``"0.4"`` (Zarr v2, widely read) or ``"0.5"`` (Zarr v3).
      name: the image's name in the metadata.
      overwrite: replace an existing Zarr store at ``path``. By default an existing
        ``path`` is an error, checked before writing and again before the final rename.

    Returns:
      The output ``Path``.

    Raises:
      FileNotFoundError: if the parent folder does not exist.
      FileExistsError: if ``path`` exists and is not a Zarr store, or exists and
        ``overwrite`` is False.
      ValueError: for a bad rank, or axes that do not match the array.

    Example:
      >>> import tempfile, numpy as np
      >>> out = write_ome_zarr(f"{tempfile.mkdtemp()}/x.ome.zarr", np.zeros((16, 16)), levels=1)
      >>> sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
      ['scale0', 'scale1']
    """
    import dask.array as da
    import ngff_zarr

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"output folder {path.parent} does not exist; create it first (mkdir -p {path.parent})."
        )
    if path.exists() and not is_zarr_store(path):
        raise FileExistsError(f"{path} exists and is not a Zarr store; not replacing it.")
    if not overwrite and os.path.lexists(path):
        raise _exists(path)
    if array.ndim not in (2, 3):
        raise ValueError(f"can only write 2D (YX) or 3D (ZYX) images, got shape {array.shape}.")
    if metadata is None:
        metadata = ImageMetadata("YX" if array.ndim == 2 else "ZYX")
    if len(metadata.axes) != array.ndim:
        raise ValueError(
            f"metadata axes {metadata.axes!r} do not match the array's shape {array.shape}."
        )
    target = np.dtype(np.float32 if dtype is None or np.dtype(dtype) == np.float64 else dtype)
    data = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    if data.dtype != target:
        data = data.map_blocks(lambda b: cast_to_dtype(b, target)[0], dtype=target)

    dims = tuple(metadata.axes.lower())
    scale = {d: metadata.size_of(d.upper()) or 1.0 for d in dims}
    units = {d: "micrometer" for d in dims if metadata.size_of(d.upper()) is not None}
    image = ngff_zarr.to_ngff_image(
        data, dims=dims, scale=scale, axes_units=units or None, name=name
    )
    multiscales = ngff_zarr.to_multiscales(
        image,
        scale_factors=_scale_factors(array.shape, levels),
        method=ngff_zarr.Methods.DASK_BIN_SHRINK,  # block means; needs only dask
        chunks=chunks,
    )
    with _signals.commit():  # an interrupt (CLI) removes the folder: track it at once
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        _signals.track(tmp)
    try:
        # ngff-zarr writes the metadata and creates the arrays; the pixels go through
        # zarr-python arrays, which pickle (dask.distributed workers write their chunks).
        ngff_zarr.to_ngff_zarr(str(tmp), multiscales, version=version, metadata_only=True)
        _write_pixels(tmp, data, [d.path for d in multiscales.metadata.datasets])
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private
        with _signals.commit():
            if not overwrite and os.path.lexists(path):  # created meanwhile by another
                raise _exists(path)
            _replace_folder(tmp, path)
            _signals.untrack(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _signals.untrack(tmp)
        raise
    return path


def _write_pixels(store: Path, data, paths) -> None:
    """Full resolution from ``data`` (computed a chunk at a time), then each level from
    the one written before it: 2×2 block means in YX, so the data are computed once."""
    import dask.array as da
    import zarr

    for k, component in enumerate(paths):
        target = zarr.open_array(str(store / component), mode="r+")
        if k == 0:
            level = data
        else:
            level = _halved(da.from_zarr(str(store), component=paths[k - 1]), target)
        da.store(level.rechunk(target.chunks), target, lock=False)


def _halved(previous, target):
    """``previous`` binned 2×2 in YX (means) and cropped to the ``target`` array's shape."""
    import dask.array as da

    crop = tuple(
        slice(0, n if i < previous.ndim - 2 else 2 * n) for i, n in enumerate(target.shape)
    )
    axes = {previous.ndim - 2: 2, previous.ndim - 1: 2}
    means = da.coarsen(np.mean, previous[crop].astype(np.float64), axes, trim_excess=True)
    dtype = np.dtype(target.dtype)
    return means.map_blocks(lambda b: cast_to_dtype(b, dtype)[0], dtype=dtype)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_folder(new: Path, path: Path) -> None:
    """Move ``new`` to ``path``; an existing ``path`` is moved aside first, then deleted."""
    if not path.exists():
        os.replace(new, path)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    os.replace(path, old / "store")
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old / "store", path)  # put the old store back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def read_tiff_lazy(
    path, *, axes: str | None = None, channel: int | None = None, time: int | None = None
):
    """Read a TIFF's first series lazily as a dask array (decoded a chunk at a time).

    Axes, pixel sizes and the ``axes``/``channel``/``time`` options are those of
    :func:`jdeconv.io.read_image`; only the pixels stay on disk until computed.

    Returns:
      ``(array, metadata)``: a 2D ``YX`` or 3D ``ZYX`` dask array in the stored dtype,
      chunked as the file is stored (a page or a tile per chunk), and an
      :class:`~jdeconv.io.ImageMetadata`.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: as :func:`jdeconv.io.read_image`.

    Example:
      >>> import tempfile, numpy as np
      >>> from jdeconv.io import write_image
      >>> path = write_image(f"{tempfile.mkdtemp()}/a.tif", np.ones((3, 8, 8), np.float32))
      >>> image, meta = read_tiff_lazy(path)
      >>> type(image).__name__, image.shape, meta.axes
      ('Array', (3, 8, 8), 'ZYX')
    """
    import dask.array as da
    import tifffile
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("the TIFF file contains no image data.")
            file_axes = tif.series[0].axes.upper()
            try:
                sizes = _tiff_pixel_sizes(tif)
            except Exception:  # odd metadata must not stop us reading the pixels
                sizes = {}
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        data = da.from_zarr(zarr.open(store, mode="r"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    except Exception as err:  # tifffile raises several types for damaged files
        raise ValueError(
            f"{path}: cannot read it as a TIFF file ({type(err).__name__}: {err})."
        ) from err
    try:
        if len(file_axes) != data.ndim:
            file_axes = _default_axes(data.ndim)
        file_axes = _apply_axes_override(data, file_axes, axes)
        data, metadata = _selected(
            path, data, file_axes, sizes, channel=channel, time=time, user_axes=axes is not None
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return data, metadata
