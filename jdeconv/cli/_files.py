"""Input and output files: globs, output plans that never overwrite an input, reading
with the CLI's axis options, validation, output claims and writing; problems become
:class:`InputError`.

Outputs are checked before any work starts, in two steps:

1. :func:`check_output` while planning (before the inputs are read): the type, never an
   input, the folder exists, and an existing output is refused unless ``--overwrite``.
2. :class:`Claims` once the inputs are checked (before training): each output (and
   each ``--save-model`` folder) is locked with ``<output>.lock``, created exclusively
   (:func:`jdeconv._files.acquire_lock`). That proves the folder is writable, and a
   second jdeconv writing the same output is refused at once instead of both training
   and one result being lost. Under the lock the existence check is repeated. The locks
   are removed at the end, on error, and on interrupt.

Writing itself never replaces a file without ``--overwrite`` (an exclusive link,
:func:`jdeconv._files.atomic_write`).

OME-Zarr (``.zarr``/``.ome.zarr`` folders) is read and written like a file: inputs are
opened lazily (:func:`jdeconv.zarr_io.read_ome_zarr`), as are TIFFs larger than
:data:`LAZY_TIFF_BYTES` (unless a ``dask.distributed`` cluster runs the work: a TIFF
reader cannot be sent to workers); an output store is built in a hidden folder and
renamed into place when complete, locked and refused without ``--overwrite`` as a file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import warnings
from pathlib import Path

from .. import _files, io
from ._common import InputError

#: The files of a model folder (:func:`jdeconv.save_model`).
MODEL_FILES = ("config.json", "params.npz", "psf.npy")
#: TIFF inputs larger than this are read lazily (a chunk at a time), not loaded.
LAZY_TIFF_BYTES = 2**28
ZARR_SUFFIX = ".zarr"


def is_zarr_path(path) -> bool:
    """Whether ``path`` names an OME-Zarr store (``.zarr``/``.ome.zarr``)."""
    return str(path).rstrip("/\\").lower().endswith(ZARR_SUFFIX)


def expand_inputs(patterns) -> list[Path]:
    """Inputs as paths; glob patterns are expanded here too (Windows shells do not)."""
    paths: list[Path] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?[") and not Path(pattern).exists():
            matches = [
                Path(m)
                for m in sorted(glob.glob(pattern))
                if Path(m).is_file() or (is_zarr_path(m) and Path(m).is_dir())
            ]
            if not matches:
                raise InputError(f"{pattern}: no files match this pattern.")
            paths.extend(matches)
        else:
            path = Path(pattern)
            if not path.exists():
                raise InputError(f"{path}: no such file.")
            paths.append(path)
    unique, seen = [], set()
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(
    out: Path, inputs, *, parent_must_exist: bool = True, overwrite: bool = False
) -> None:
    """An output must be writable where it is named, never an input, and new unless
    ``overwrite``."""
    zarr = is_zarr_path(out)
    if out.suffix.lower() not in io.WRITE_SUFFIXES and not zarr:
        raise InputError(
            f"{out}: unsupported output type {out.suffix or '(none)'!r}; use "
            f"{', '.join(io.WRITE_SUFFIXES)} or .ome.zarr."
        )
    for source in inputs:
        if source is None:
            continue
        if same_file(out, Path(source)) or _inside(out, Path(source)):
            raise InputError(
                f"{out}: the output is (or is inside) the input {source}; jdeconv never "
                "overwrites its inputs. Choose another output name."
            )
    if out.is_dir() and not zarr:
        raise InputError(f"{out}: is a directory; give an output file name.")
    if zarr and out.exists() and overwrite:
        from ..zarr_io import is_zarr_store

        if not is_zarr_store(out):
            raise InputError(
                f"{out}: exists and is not a Zarr store; jdeconv replaces only a store "
                "(choose another name)."
            )
    if parent_must_exist and not out.parent.is_dir():
        raise InputError(
            f"{out}: the output directory {out.parent} does not exist; create it first."
        )
    if not overwrite and os.path.lexists(out):
        raise InputError(exists_message(out))


def _inside(out: Path, source: Path) -> bool:
    """Whether ``out`` lies inside the folder ``source`` (an input OME-Zarr store)."""
    if not source.is_dir():
        return False
    return source.resolve() in out.resolve().parents


def exists_message(out: Path) -> str:
    return (
        f"{out}: the output already exists; pass --overwrite to replace it, or choose another name."
    )


def plan_outputs(args, inputs: list[Path], protected) -> list[Path]:
    """One output path per input, checked before any work starts."""
    if args.output is not None:
        if len(inputs) != 1:
            raise InputError(
                f"-o/--output names one file but there are {len(inputs)} inputs; use "
                "--output-dir for several."
            )
        outputs = [Path(args.output)]
    else:
        directory = Path(args.output_dir)
        if directory.exists() and not directory.is_dir():
            raise InputError(f"{directory}: --output-dir is a file, not a directory.")
        outputs = [
            directory / f"{io.image_stem(p)}_deconv{'.ome.zarr' if is_zarr_path(p) else '.tif'}"
            for p in inputs
        ]
    seen: dict[Path, Path] = {}
    for source, out in zip(inputs, outputs, strict=True):
        key = out.resolve()
        if key in seen:
            raise InputError(
                f"{out}: {seen[key]} and {source} would both be written here; rename one or "
                "process them separately."
            )
        seen[key] = source
        # --output-dir is created later, once the inputs have been checked.
        check_output(
            out, protected, parent_must_exist=args.output is not None, overwrite=args.overwrite
        )
    return outputs


def make_output_dir(args) -> None:
    if getattr(args, "output_dir", None) is not None:
        try:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"{args.output_dir}: cannot create the output directory: {err}"
            ) from err


class Claims(contextlib.AbstractContextManager):
    """The outputs this command will write, locked until it ends (module docstring).

    Example:
      >>> import tempfile, pathlib
      >>> out = pathlib.Path(tempfile.mkdtemp()) / "o.tif"
      >>> with Claims(overwrite=False) as claims:
      ...     claims.file(out)
      ...     (out.parent / "o.tif.lock").exists()
      True
      >>> (out.parent / "o.tif.lock").exists()
      False
    """

    def __init__(self, *, overwrite: bool):
        self.overwrite = overwrite
        self.locks: list[Path] = []

    def file(self, out: Path) -> None:
        """Claim an output file; refuse a locked, unwritable or (without --overwrite)
        existing one."""
        self._lock(out, out.parent)
        if not self.overwrite and os.path.lexists(out):
            raise InputError(exists_message(out))

    def model_dir(self, directory: Path) -> None:
        """Claim a --save-model folder (its lock is ``<folder>.lock`` beside it)."""
        self._lock(directory, directory.parent)
        if directory.is_dir():
            _probe_writable(directory)
            present = [n for n in MODEL_FILES if (directory / n).exists()]
            if present and not self.overwrite:
                raise InputError(
                    f"{directory}: already holds a model ({', '.join(present)}); pass "
                    "--overwrite to replace it, or choose another --save-model folder."
                )

    def _lock(self, target: Path, folder: Path) -> None:
        try:
            self.locks.append(_files.acquire_lock(target))
        except _files.LockedError as err:
            raise InputError(f"{err.strerror}.") from err
        except OSError as err:
            raise InputError(_unwritable(target, folder, err)) from err

    def __exit__(self, *exc) -> None:
        while self.locks:
            _files.release_lock(self.locks.pop())


def _probe_writable(folder: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".jdeconv-probe.")
    except OSError as err:
        raise InputError(_unwritable(folder, folder, err)) from err
    os.close(fd)
    os.unlink(probe)


def _unwritable(target: Path, folder: Path, err: OSError) -> str:
    reason = err.strerror or str(err)
    return (
        f"{target}: cannot write in {folder} ({reason}); choose a folder you can write to "
        "(nothing was computed)."
    )


def read(path: Path, args, *, distributed: bool = False):
    """``jdeconv.io.read_image`` with the CLI's axes/channel/time options; OME-Zarr
    stores and TIFFs above :data:`LAZY_TIFF_BYTES` (unless ``distributed``) are opened
    lazily as dask arrays.

    Returns ``(image, metadata)``; errors become :class:`InputError`.
    """
    options = dict(channel=getattr(args, "channel", None), time=getattr(args, "time", None))
    axes = getattr(args, "axes", None)
    try:
        if is_zarr_path(path):
            if axes is not None:
                raise InputError(
                    f"{path}: --axes is not used for OME-Zarr (its axes are in its metadata)."
                )
            zarr_io = _zarr_io(path)
            if not zarr_io.is_zarr_store(path):
                raise ValueError("is not a Zarr store (no zarr.json or .zgroup inside).")
            return zarr_io.read_ome_zarr(path, **options)
        if (
            not distributed
            and path.suffix.lower() in io.TIFF_SUFFIXES
            and path.is_file()
            and path.stat().st_size > LAZY_TIFF_BYTES
        ):
            with contextlib.suppress(ImportError):
                from ..zarr_io import read_tiff_lazy

                return read_tiff_lazy(path, axes=axes, **options)
        return io.read_image(path, axes=axes, **options)
    except (ValueError, OSError) as err:
        message = str(err)
        raise InputError(message if str(path) in message else f"{path}: {message}") from err


def _zarr_io(path):
    try:
        import dask.array  # noqa: F401
        import ngff_zarr  # noqa: F401

        from .. import zarr_io
    except ImportError as err:
        raise InputError(
            f"{path}: reading and writing OME-Zarr needs the 'zarr' extra: "
            "pip install 'jdeconv[zarr]'."
        ) from err
    return zarr_io


def validated(path: Path, image):
    """Check the image (2D/3D, real, finite, not constant) without a full-size float copy:
    a NumPy image a block at a time, a lazy one in one dask pass. Returns ``image``."""
    from .._checks import image_statistics

    try:
        image_statistics(image, name="image")
    except ValueError as err:
        raise InputError(f"{path}: {err}") from err
    return image


def output_dtype(args, meta: io.ImageMetadata):
    return meta.dtype if args.dtype == "input" else args.dtype


def computed(out: Path, array):
    """``(array, streamed)``: a lazy result stays lazy for an OME-Zarr output (``streamed``:
    computed a chunk at a time while written), and is computed now for a file."""
    from .._checks import is_dask_array

    if not is_dask_array(array):
        return array, False
    if is_zarr_path(out):
        return array, True
    return array.compute(), False


def write(
    out: Path,
    array,
    meta: io.ImageMetadata | None,
    dtype=None,
    *,
    overwrite: bool = False,
    chunks=None,
) -> None:
    """Write one output (TIFF/NumPy, or OME-Zarr with ``chunks``); a lazy result is
    computed here, a chunk at a time for OME-Zarr. Warns when an integer type would keep
    few grey levels (of an in-memory result)."""
    import numpy as np

    from .._checks import is_dask_array

    if is_zarr_path(out):
        _write_zarr(out, array, meta, dtype, overwrite=overwrite, chunks=chunks)
        return
    if is_dask_array(array):
        array = array.compute()
    if dtype is not None and np.dtype(dtype).kind in "ui":
        span = float(np.ptp(array))
        if span < 255:
            warnings.warn(
                f"{out}: the result spans only {span:.3g} intensity units, so {dtype} keeps "
                f"at most {int(span) + 2} grey levels (values are not rescaled); write float32 "
                "(the default) to keep its precision.",
                stacklevel=2,
            )
    with _write_errors(out):
        io.write_image(out, array, metadata=meta, dtype=dtype, overwrite=overwrite)


@contextlib.contextmanager
def _write_errors(out: Path, *, other_os_errors: bool = True):
    """The CLI's errors for a failed write of ``out`` (TIFF/NumPy and OME-Zarr alike)."""
    try:
        yield
    except FileExistsError as err:  # created by another program since it was claimed
        raise RuntimeError(
            f"{out} was created by another program while jdeconv worked and was not "
            "replaced; pass --overwrite to replace it"
        ) from err
    except FileNotFoundError as err:
        raise InputError(f"{out}: {err}") from err
    except OSError as err:
        if not other_os_errors:
            raise
        raise RuntimeError(f"cannot write {out}: {err}") from err


def _write_zarr(out: Path, array, meta, dtype, *, overwrite: bool, chunks) -> None:
    zarr_io = _zarr_io(out)
    with _write_errors(out, other_os_errors=False):
        zarr_io.write_ome_zarr(
            out, array, metadata=meta, dtype=dtype, chunks=chunks, overwrite=overwrite
        )
