"""The command line with OME-Zarr inputs and outputs, --max-memory and --workers (tiny)."""

import numpy as np
import pytest
from cli_helpers import one_error_line, run

from jdeconv.io import ImageMetadata, write_image
from jdeconv.psf import gaussian_psf

pytest.importorskip("ngff_zarr", reason="the 'ngff-zarr' package is not installed")
from jdeconv.zarr_io import read_ome_zarr, write_ome_zarr  # noqa: E402

FAST = [
    "--steps", "2", "--patch-size", "16", "--batch-size", "2", "--no-tta", "--quiet",
    "--set", "depth=2", "--set", "base_channels=4", "--set", "tile_halo=28",
]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("zarr")
    rng = np.random.default_rng(0)
    image = (rng.random((48, 40)) * 3000 + 100).astype(np.uint16)
    meta = ImageMetadata("YX", (0.2, 0.1))
    write_ome_zarr(d / "in.ome.zarr", image, metadata=meta, dtype="uint16", chunks=16, levels=0)
    write_image(d / "psf.tif", gaussian_psf((5, 5), 1.0))
    return d


def test_zarr_in_zarr_out_keeps_axes_pixel_sizes_and_chunks(store):
    out = store / "out.ome.zarr"
    code, _, err = run(["deconvolve", store / "in.ome.zarr", "--psf", store / "psf.tif",
                        "-o", out, "--max-memory", "64MB", *FAST])  # fmt: skip
    assert code == 0, err
    result, meta = read_ome_zarr(out)
    assert meta.axes == "YX" and meta.pixel_size == pytest.approx((0.2, 0.1))
    assert result.shape == (48, 40) and result.chunksize == (16, 16) and meta.dtype == "float32"
    assert np.isfinite(result.compute()).all()
    assert sorted(p.name for p in store.iterdir()) == ["in.ome.zarr", "out.ome.zarr", "psf.tif"]

    # The output is refused if it exists (no --overwrite), is the input, or is inside it.
    again = ["deconvolve", store / "in.ome.zarr", "--psf", store / "psf.tif", *FAST]
    for output, extra, fragments in (
        (out, [], ("already exists", "--overwrite")),
        (store / "in.ome.zarr", [], ("never overwrites",)),
        (store / "in.ome.zarr" / "x.ome.zarr", [], ("inside",)),
        (store / "o.tif", ["--max-memory", "lots"], ("--max-memory", "'512MB'")),
    ):
        code, _, err = run([*again, "-o", output, *extra])
        one_error_line(code, err, *fragments)


def test_two_local_workers_give_the_same_image(store):
    pytest.importorskip("distributed", reason="the 'distributed' package is not installed")
    args = ["deconvolve", store / "in.ome.zarr", "--psf", store / "psf.tif", *FAST]
    code, _, err = run([*args, "-o", store / "one.ome.zarr"])
    assert code == 0, err
    code, _, err = run([*args, "-o", store / "two.ome.zarr", "--workers", "2"])
    assert code == 0, err
    one, _ = read_ome_zarr(store / "one.ome.zarr")
    two, _ = read_ome_zarr(store / "two.ome.zarr")
    np.testing.assert_array_equal(one.compute(), two.compute())
