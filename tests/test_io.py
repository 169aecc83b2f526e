"""jdeconv.io: reading TIFF/OME-TIFF/NumPy/PNG with axes and pixel sizes, atomic writes.

Independent references: files are written with tifffile / skimage.io directly and read
with jdeconv; files written by jdeconv are read back with tifffile directly.
"""

import os
import warnings
from io import BytesIO

import numpy as np
import pytest
import skimage.io
import tifffile

from jdeconv import io
from jdeconv.io import ImageMetadata, cast_to_dtype, image_stem, read_image, write_image


def _listing(directory):
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------- reading


def test_imagej_hyperstack_axes_and_pixel_sizes(tmp_path):
    data = np.arange(5 * 16 * 24, dtype=np.uint16).reshape(5, 16, 24)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        metadata={"axes": "ZYX", "spacing": 0.5, "unit": "micron"},
        resolution=(1 / 0.125, 1 / 0.125),
    )
    image, meta = read_image(path)
    np.testing.assert_array_equal(image, data)
    assert image.dtype == np.uint16 and meta.dtype == "uint16"
    assert meta.axes == "ZYX" and meta.source_axes == "ZYX"
    assert meta.pixel_size == pytest.approx((0.5, 0.125, 0.125))
    assert meta.size_of("X") == pytest.approx(0.125) and meta.size_of("Z") == pytest.approx(0.5)


def test_imagej_nanometre_unit_is_converted(tmp_path):
    path = tmp_path / "nm.tif"
    tifffile.imwrite(
        path,
        np.ones((8, 8), np.float32),
        imagej=True,
        metadata={"unit": "nm"},
        resolution=(1 / 65.0, 1 / 65.0),
    )
    assert read_image(path)[1].pixel_size == pytest.approx((0.065, 0.065))


def test_ome_tiff_selects_channel_and_time(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (2, 3, 2, 16, 16)).astype(np.uint16)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "TZCYX",
            "PhysicalSizeX": 108.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 108.0,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 0.3,
        },
    )
    with pytest.raises(ValueError, match=r"cells\.ome\.tif.*2 time points.*--time"):
        read_image(path)
    with pytest.raises(ValueError, match=r"2 channels.*--channel"):
        read_image(path, time=1)
    image, meta = read_image(path, time=1, channel=-1)
    np.testing.assert_array_equal(image, data[1, :, 1])
    assert meta.axes == "ZYX" and meta.source_axes == "TZCYX"
    assert meta.selection == {"T": 1, "C": 1}
    assert meta.pixel_size == pytest.approx((0.3, 0.108, 0.108))
    with pytest.raises(ValueError, match="out of range"):
        read_image(path, time=2, channel=0)


def test_plain_tiff_stack_is_z_and_resolution_tags_give_pixel_size(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.float32), photometric="minisblack", metadata=None)
    image, meta = read_image(path)
    assert image.shape == (4, 8, 8) and meta.axes == "ZYX"
    assert meta.pixel_size == (None, None, None)

    path = tmp_path / "res.tif"
    tifffile.imwrite(
        path,
        np.zeros((8, 8), np.uint8),
        resolution=(5000.0, 5000.0),  # pixels per cm: 2 µm pixels
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    assert read_image(path)[1].pixel_size == pytest.approx((2.0, 2.0))


def test_singleton_axes_are_squeezed(tmp_path):
    path = tmp_path / "single.tif"
    data = np.random.default_rng(0).random((1, 1, 12, 10)).astype(np.float32)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX"})
    image, meta = read_image(path)
    assert image.shape == (12, 10) and meta.axes == "YX"
    np.save(tmp_path / "s.npy", data)
    assert read_image(tmp_path / "s.npy")[0].shape == (12, 10)


def test_npy_default_and_explicit_axes(tmp_path):
    np.save(tmp_path / "a2.npy", np.zeros((6, 7)))
    np.save(tmp_path / "a3.npy", np.zeros((3, 6, 7)))
    np.save(tmp_path / "a4.npy", np.arange(2 * 3 * 6 * 7).reshape(2, 3, 6, 7))
    assert read_image(tmp_path / "a2.npy")[1].axes == "YX"
    assert read_image(tmp_path / "a3.npy")[1].axes == "ZYX"
    with pytest.raises(ValueError, match=r"a4\.npy.*unlabelled axis.*--axes"):
        read_image(tmp_path / "a4.npy")
    image, meta = read_image(tmp_path / "a4.npy", axes="TZYX", time=1)
    assert image.shape == (3, 6, 7) and meta.selection == {"T": 1}
    # A (3, 6, 7) array whose first axis holds channels, not planes.
    with pytest.raises(ValueError, match="3 channels"):
        read_image(tmp_path / "a3.npy", axes="CYX")
    assert read_image(tmp_path / "a3.npy", axes="CYX", channel=2)[0].shape == (6, 7)
    # YX stored transposed (XY) comes back in YX order.
    xy = np.arange(6 * 7).reshape(7, 6)
    np.save(tmp_path / "xy.npy", xy)
    np.testing.assert_array_equal(read_image(tmp_path / "xy.npy", axes="XY")[0], xy.T)
    with pytest.raises(ValueError, match="one letter per axis"):
        read_image(tmp_path / "a3.npy", axes="YX")
    with pytest.raises(ValueError, match="distinct letters"):
        read_image(tmp_path / "a2.npy", axes="YY")


def test_png_grey_rgb_and_colour(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (16, 20)).astype(np.uint8)
    skimage.io.imsave(tmp_path / "grey.png", grey, check_contrast=False)
    image, meta = read_image(tmp_path / "grey.png")
    np.testing.assert_array_equal(image, grey)
    assert meta.axes == "YX" and image.dtype == np.uint8

    grey16 = rng.integers(0, 65536, (16, 20)).astype(np.uint16)
    skimage.io.imsave(tmp_path / "grey16.png", grey16, check_contrast=False)
    assert read_image(tmp_path / "grey16.png")[0].dtype == np.uint16

    # Greyscale saved as RGB (identical channels) is accepted as greyscale.
    skimage.io.imsave(tmp_path / "grey_rgb.png", np.stack([grey] * 3, -1), check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "grey_rgb.png")[0], grey)

    colour = rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)
    skimage.io.imsave(tmp_path / "colour.png", colour, check_contrast=False)
    with pytest.raises(ValueError, match=r"colour\.png: it is a colour image.*rgb2gray"):
        read_image(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_image(tmp_path / "colour.png", channel=1)[0], colour[..., 1])


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "garbage.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match=r"garbage\.tif: cannot read it as a TIFF"):
        read_image(tmp_path / "garbage.tif")
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"bad\.npy: cannot read"):
        read_image(tmp_path / "bad.npy")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="is a directory"):
        read_image(tmp_path)
    np.save(tmp_path / "line.npy", np.zeros(5))
    with pytest.raises(ValueError, match="1D"):
        read_image(tmp_path / "line.npy")
    with pytest.raises(ValueError, match="no time"):
        np.save(tmp_path / "ok.npy", np.zeros((4, 4)))
        read_image(tmp_path / "ok.npy", time=0)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", ["out.tif", "out.tiff", "out.ome.tif"])
def test_tiff_round_trip_keeps_axes_and_pixel_sizes(tmp_path, name):
    data = np.random.default_rng(1).normal(size=(3, 10, 12))  # float64 in
    meta = ImageMetadata("ZYX", (0.3, 0.108, 0.108))
    write_image(tmp_path / name, data, metadata=meta)
    image, back = read_image(tmp_path / name)
    assert image.dtype == np.float32  # float32 by default
    np.testing.assert_allclose(image, data.astype(np.float32))
    assert back.axes == "ZYX"
    assert back.pixel_size == pytest.approx(meta.pixel_size, rel=1e-6)
    assert _listing(tmp_path) == [name]  # no temporary files left behind


def test_written_tiff_is_imagej_compatible(tmp_path):
    write_image(
        tmp_path / "ij.tif",
        np.zeros((2, 6, 6), np.float32),
        metadata=ImageMetadata("ZYX", (1.5, 0.25, 0.25)),
    )
    with tifffile.TiffFile(tmp_path / "ij.tif") as tif:
        assert tif.is_imagej
        assert tif.series[0].axes == "ZYX"
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.imagej_metadata["spacing"] == pytest.approx(1.5)
        assert tif.pages[0].resolution == pytest.approx((4.0, 4.0))


def test_npy_round_trip_and_default_metadata(tmp_path):
    data = np.random.default_rng(2).random((5, 7))
    path = write_image(tmp_path / "x.npy", data)
    assert path == tmp_path / "x.npy"
    np.testing.assert_allclose(np.load(path), data.astype(np.float32))
    assert np.load(path).dtype == np.float32
    assert _listing(tmp_path) == ["x.npy"]


def test_cast_back_to_input_dtype_clips_and_rounds_without_rescaling(tmp_path):
    values = np.array([[-7.0, 0.4, 0.5, 1.5], [2.6, 1000.2, 65535.4, 7e4]])
    out, clipped = cast_to_dtype(values, "uint16")
    np.testing.assert_array_equal(out, [[0, 0, 0, 2], [3, 1000, 65535, 65535]])
    assert clipped == 2

    source = tmp_path / "source.tif"
    tifffile.imwrite(source, np.zeros((2, 4), np.uint16))
    _, meta = read_image(source)
    with pytest.warns(UserWarning, match="2 of 8 pixels"):
        write_image(tmp_path / "back.tif", values, metadata=meta, like=meta)
    back, back_meta = read_image(tmp_path / "back.tif")
    assert back.dtype == np.uint16 and back_meta.dtype == "uint16"
    np.testing.assert_array_equal(back, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_image(tmp_path / "u8.tif", np.array([[1.2, 3.7]]), dtype="uint8")
    np.testing.assert_array_equal(read_image(tmp_path / "u8.tif")[0], [[1, 4]])
    with pytest.raises(ValueError, match="not both"):
        write_image(tmp_path / "x.tif", values, dtype="uint8", like=meta)


def test_write_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image(tmp_path / "missing" / "x.tif", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="unsupported output type"):
        write_image(tmp_path / "x.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="2D"):
        write_image(tmp_path / "x.tif", np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="do not match"):
        write_image(tmp_path / "x.tif", np.zeros((4, 4)), metadata=ImageMetadata("ZYX"))
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        write_image(tmp_path / "d.tif", np.zeros((4, 4)))
    assert _listing(tmp_path) == ["d.tif"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.tif"
    write_image(target, np.ones((4, 4)))
    before = target.read_bytes()

    def broken(tmp, *args, **kwargs):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_tiff", broken)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, np.zeros((4, 4)), overwrite=True)
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["result.tif"]


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    # Review: "output file that already exists -> replaced silently".
    target = tmp_path / "result.tif"
    write_image(target, np.ones((4, 4)))
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        write_image(target, np.zeros((4, 4)))
    assert target.read_bytes() == before and _listing(tmp_path) == ["result.tif"]
    write_image(target, np.zeros((4, 4)), overwrite=True)
    np.testing.assert_array_equal(read_image(target)[0], np.zeros((4, 4)))


def test_two_writers_of_one_new_file_cannot_both_succeed(tmp_path, monkeypatch):
    # Review: "two runs writing the same output -> both succeed, one result silently
    # lost". The second writer checks before writing (nothing there yet) and then finds
    # the first one's file when it moves its own into place: the exclusive link refuses.
    target = tmp_path / "result.npy"
    real_save = io._save_npy

    def slow_save(tmp, arr):
        real_save(tmp, arr)
        if arr[0, 0] == 2:  # the second writer: the first finishes meanwhile
            write_image(target, np.ones((4, 4)))

    monkeypatch.setattr(io, "_save_npy", slow_save)
    with pytest.raises(FileExistsError, match="already exists"):
        write_image(target, np.full((4, 4), 2.0))
    np.testing.assert_array_equal(np.load(target), np.ones((4, 4)))  # the first result
    assert _listing(tmp_path) == ["result.npy"]  # and no temporary file


def test_writers_racing_in_threads_one_wins(tmp_path):
    import threading

    target = tmp_path / "race.npy"
    outcomes, barrier = [], threading.Barrier(6)

    def writer(k):
        barrier.wait()
        try:
            write_image(target, np.full((64, 64), float(k)))
            outcomes.append(k)
        except FileExistsError:
            outcomes.append(None)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [k for k in outcomes if k is not None]
    assert len(winners) == 1 and len(outcomes) == 6
    assert np.load(target)[0, 0] == winners[0]
    assert _listing(tmp_path) == ["race.npy"]


@pytest.mark.parametrize("cut", ["header", "pixels", "stack"])
def test_truncated_tiff_is_an_error_and_tifffile_stays_quiet(tmp_path, cut, capfd):
    # Review: "a truncated TIFF -> a tifffile log line is printed first". tifffile logs
    # through the 'tifffile' logger; read_image turns what it says into its own error.
    import logging

    buffer = BytesIO()
    if cut == "stack":  # an ImageJ stack cut after its first plane
        tifffile.imwrite(buffer, np.ones((3, 32, 32), np.float32), imagej=True)
    else:
        tifffile.imwrite(buffer, np.ones((32, 32), np.float32))
    data = buffer.getvalue()
    keep = {"header": 200, "pixels": len(data) // 2, "stack": len(data) // 2}[cut]
    (tmp_path / "cut.tif").write_bytes(data[:keep])
    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record)

    catch = Catch()
    logging.getLogger().addHandler(catch)
    try:
        with pytest.raises(ValueError, match=r"cut\.tif: .*(TIFF|truncated)"):
            read_image(tmp_path / "cut.tif")
    finally:
        logging.getLogger().removeHandler(catch)
    assert [r for r in seen if r.name.startswith("tifffile")] == []
    assert capfd.readouterr().err == ""


def test_written_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "p.tif", np.zeros((4, 4)))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_metadata_validation_and_stem():
    assert ImageMetadata("YX").pixel_size == (None, None)
    assert ImageMetadata("YX", (0.1, -1.0)).pixel_size == (0.1, None)
    with pytest.raises(ValueError, match="'YX' or 'ZYX'"):
        ImageMetadata("CYX")
    with pytest.raises(ValueError, match="one value"):
        ImageMetadata("ZYX", (1.0, 1.0))
    assert image_stem("a/b/cells.ome.tif") == "cells"
    assert image_stem("cells.TIF") == "cells"
    assert image_stem("x.y.npy") == "x.y"
