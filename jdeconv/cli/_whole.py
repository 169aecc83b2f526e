"""``jdeconv deconvolve`` on a whole file: every channel and time point (jdeconv.files).

A file with a channel (C) or time (T) axis longer than one, not narrowed down by
``--channel``/``--time``, is a whole-file job: each channel gets its PSF (``--psf a.tif
b.tif`` or ``--wavelength`` values in channel order, or one for all) and one model,
fitted on one time point (``--fit-time``, default the middle one) and applied to all of
them; the output keeps the input's axes, in its order, and its pixel sizes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import files
from ._common import InputError, note, shape_text

_SELECTABLE = {"C": "channel", "T": "time"}


def probe(path: Path, args) -> tuple[str, tuple] | None:
    """The stored axes and shape of a TIFF/NumPy file without reading its pixels."""
    import numpy as np
    import tifffile

    from .. import io

    suffix = path.suffix.lower()
    try:
        if suffix in io.TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                if not tif.series:
                    return None
                series = tif.series[0]
                shape, axes = tuple(series.shape), series.axes.upper()
        elif suffix == ".npy":
            shape = tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
            axes = io._default_axes(len(shape))
        else:
            return None
        if len(axes) != len(shape):
            return None
        return io._apply_axes_override(np.empty(shape, bool), axes, args.axes), shape
    except Exception:  # unreadable here: the ordinary reader reports it properly
        return None


def is_whole_file(path: Path, args) -> bool:
    """Whether ``path`` has channel/time axes longer than one that are not selected."""
    found = probe(path, args)
    if found is None:
        return False
    axes, shape = found
    return any(
        n > 1 and getattr(args, _SELECTABLE[a]) is None
        for a, n in zip(axes, shape, strict=True)
        if a in _SELECTABLE
    )


@dataclasses.dataclass
class WholeFileJob:
    path: Path
    stack: files.Hyperstack
    psfs: list
    pixel_size: tuple
    cfg: object


def prepare(path: Path, args, provider, make_config) -> WholeFileJob:
    """Read the whole file and check one PSF per channel (before any training)."""
    from .. import io
    from ..api import validate_image

    try:
        stack = files.read_hyperstack(path, axes=args.axes)
    except (ValueError, OSError) as err:
        raise InputError(str(err) if str(path) in str(err) else f"{path}: {err}") from err
    n_c, n_t = stack.size("C"), stack.size("T")
    channels = _indices(path, n_c, args.channel, "--channel", "C")
    times = _indices(path, n_t, args.time, "--time", "T")
    fit_time = args.fit_time
    if fit_time is not None:
        _indices(path, n_t, fit_time, "--fit-time", "T")
    elif times:
        fit_time = times[len(times) // 2]
    spatial = stack.spatial_axes
    meta = io.ImageMetadata(spatial, stack.spatial_pixel_size, path=str(path))
    psfs = []
    for c in channels:
        image = stack.image(channel=c, time=fit_time)
        try:
            validate_image(image, name="image")
        except ValueError as err:
            raise InputError(f"{path}: channel {c}, time point {fit_time}: {err}") from err
        psfs.append(
            provider.checked(
                path, image, meta, channel=c, n_channels=n_c if "C" in stack.axes else None
            )
        )
    from ._psf import image_pixel_size

    sizes = image_pixel_size(args, meta, len(spatial))
    return WholeFileJob(path, stack, psfs, sizes, make_config(args, len(spatial)))


def _indices(path, n: int, pick, flag: str, axis: str) -> list[int]:
    if pick is None:
        return list(range(n))
    if not -n <= pick < n:
        raise InputError(
            f"{path}: {flag} {pick} is out of range: axis {axis} has {n} entries (0..{n - 1})."
        )
    return [pick % n]


def describe(job: WholeFileJob) -> str:
    return f"{shape_text(job.stack.data.shape)} {job.stack.axes} {job.stack.data.dtype}"


def run(job: WholeFileJob, args):
    """Fit and apply every channel; returns the :class:`jdeconv.files.FileResult`."""
    stack = job.stack
    return files.deconvolve_stack(
        stack,
        job.psfs if len(job.psfs) > 1 else job.psfs[0],
        cfg=job.cfg,
        channel=args.channel if "C" in stack.axes else None,
        time=args.time if "T" in stack.axes else None,
        fit_time=args.fit_time,
        pixel_size=job.pixel_size,
        match_psf=False,  # prepare() brought every PSF onto the image's grid
        shape_patches=args.patch_size_z is None,
        normalize_psf=args.normalize_psf,
        verbose=not args.quiet,
        notify=lambda message: note(args, f"{job.path}: {message}"),
    )


def write(out: Path, result, args, stack: files.Hyperstack) -> None:
    dtype = stack.data.dtype if args.dtype == "input" else args.dtype
    try:
        files.write_hyperstack(
            out,
            result.deconvolved,
            axes=result.axes,
            pixel_size=result.pixel_size,
            time_interval=result.time_interval,
            dtype=dtype,
            overwrite=args.overwrite,
        )
    except FileExistsError as err:
        raise RuntimeError(
            f"{out} was created by another program while jdeconv worked and was not "
            "replaced; pass --overwrite to replace it"
        ) from err
    except OSError as err:
        raise RuntimeError(f"cannot write {out}: {err}") from err


def save_models(result, directory: Path) -> str:
    """Save one model (``directory``) or one per channel (``directory/channel<c>``)."""
    from ..api import save_model

    if len(result.models) == 1:
        save_model(result.models[0], directory)
        return str(directory)
    for c, model in zip(result.channels, result.models, strict=True):
        save_model(model, directory / f"channel{c}")
    return f"{directory}/channel*"
