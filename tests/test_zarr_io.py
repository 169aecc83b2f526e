"""OME-Zarr and lazy TIFF: round trips with axes and pixel sizes, atomic replacement."""

import json

import numpy as np
import pytest

pytest.importorskip("ngff_zarr", reason="the 'ngff-zarr' package is not installed")
da = pytest.importorskip("dask.array", reason="the 'dask' package is not installed")

from jdeconv.io import ImageMetadata, write_image  # noqa: E402
from jdeconv.zarr_io import (  # noqa: E402
    is_zarr_store,
    read_ome_zarr,
    read_tiff_lazy,
    write_ome_zarr,
)


def _volume(shape=(4, 20, 24)):
    return np.random.default_rng(0).random(shape).astype(np.float32)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip_3d_with_pixel_sizes_and_pyramid(tmp_path, version):
    image = _volume()
    meta = ImageMetadata("ZYX", (0.3, 0.1, 0.12))
    path = write_ome_zarr(
        tmp_path / "a.ome.zarr", image, metadata=meta, levels=2, chunks=8, version=version
    )
    back, got = read_ome_zarr(path)
    assert isinstance(back, da.Array)  # lazy
    np.testing.assert_array_equal(back.compute(), image)
    assert got.axes == "ZYX" and got.dtype == "float32"
    np.testing.assert_allclose(got.pixel_size, (0.3, 0.1, 0.12))
    # The pyramid halves Y and X per level and keeps Z (read with ngff-zarr itself).
    import ngff_zarr

    levels = ngff_zarr.from_ngff_zarr(str(path)).images
    assert [lvl.data.shape for lvl in levels] == [(4, 20, 24), (4, 10, 12), (4, 5, 6)]
    assert levels[1].scale["x"] == pytest.approx(0.24) and levels[1].scale["z"] == 0.3
    assert is_zarr_store(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_ome_zarr_2d_dask_input_and_integer_dtype(tmp_path):
    image = (np.arange(16 * 18).reshape(16, 18) * 300.7).astype(np.float64)
    lazy = da.from_array(image, chunks=8)
    path = write_ome_zarr(tmp_path / "b.ome.zarr", lazy, dtype="uint16", levels=0)
    back, meta = read_ome_zarr(path)
    assert meta.axes == "YX" and meta.pixel_size == (None, None) and meta.dtype == "uint16"
    np.testing.assert_array_equal(back.compute(), np.clip(np.rint(image), 0, 65535))


def test_write_ome_zarr_replaces_a_store_only_when_asked_and_never_other_folders(tmp_path):
    path = tmp_path / "c.ome.zarr"
    write_ome_zarr(path, np.zeros((8, 8)), levels=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_ome_zarr(path, np.ones((6, 6)), levels=0)
    assert read_ome_zarr(path)[0].shape == (8, 8)  # untouched
    write_ome_zarr(path, np.ones((6, 6)), levels=0, overwrite=True)
    back, _ = read_ome_zarr(path)
    assert back.shape == (6, 6) and float(back.max()) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ome.zarr"]
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        write_ome_zarr(folder, np.zeros((8, 8)), overwrite=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_ome_zarr(tmp_path / "missing" / "d.ome.zarr", np.zeros((8, 8)))


def test_interrupted_write_leaves_no_store(tmp_path, monkeypatch):
    import ngff_zarr

    path = tmp_path / "e.ome.zarr"

    def crash(store, *args, **kwargs):
        (__import__("pathlib").Path(store) / "zarr.json").write_text("{}")  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(ngff_zarr, "to_ngff_zarr", crash)
    with pytest.raises(KeyboardInterrupt):
        write_ome_zarr(path, np.zeros((8, 8)), levels=0)
    assert list(tmp_path.iterdir()) == []


def test_ome_zarr_channel_selection(tmp_path):
    import ngff_zarr

    data = np.stack([np.full((2, 8, 8), c, np.float32) for c in range(3)])  # CZYX
    image = ngff_zarr.to_ngff_image(
        data,
        dims=("c", "z", "y", "x"),
        scale={"c": 1.0, "z": 2.0, "y": 0.5, "x": 0.5},
        axes_units={"z": "nanometer", "y": "micrometer", "x": "micrometer"},
    )
    store = tmp_path / "f.ome.zarr"
    ngff_zarr.to_ngff_zarr(str(store), ngff_zarr.to_multiscales(image, scale_factors=[]))
    with pytest.raises(ValueError, match="3 channels"):
        read_ome_zarr(store)
    picked, meta = read_ome_zarr(store, channel=2)
    assert picked.shape == (2, 8, 8) and float(picked[0, 0, 0]) == 2.0
    assert meta.selection == {"C": 2} and meta.source_axes == "CZYX"
    np.testing.assert_allclose(meta.pixel_size, (0.002, 0.5, 0.5))


def test_read_ome_zarr_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ome.zarr: no such file or folder"):
        read_ome_zarr(tmp_path / "nothing.ome.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text(json.dumps({"zarr_format": 3}))
    with pytest.raises(ValueError, match="OME-Zarr"):
        read_ome_zarr(tmp_path / "plain")


def test_lazy_tiff_matches_read_image(tmp_path):
    from jdeconv.io import read_image

    image = (_volume((5, 16, 12)) * 1000).astype(np.uint16)
    path = write_image(
        tmp_path / "a.tif", image, metadata=ImageMetadata("ZYX", (0.5, 0.2, 0.2)), dtype="uint16"
    )
    lazy, meta = read_tiff_lazy(path)
    eager, eager_meta = read_image(path)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.uint16
    np.testing.assert_array_equal(lazy.compute(), eager)
    assert meta == eager_meta


def test_lazy_tiff_channel_axis(tmp_path):
    import tifffile

    data = np.arange(2 * 3 * 8 * 8, dtype=np.uint16).reshape(3, 2, 8, 8)  # ZCYX
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(ValueError, match="2 channels"):
        read_tiff_lazy(tmp_path / "h.tif")
    lazy, meta = read_tiff_lazy(tmp_path / "h.tif", channel=1)
    np.testing.assert_array_equal(lazy.compute(), data[:, 1])
    assert meta.axes == "ZYX" and meta.selection == {"C": 1}
