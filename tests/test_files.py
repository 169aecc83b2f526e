"""Whole files (jdeconv.files and ``jdeconv deconvolve`` on them): channels, time points,
axes order and metadata kept, one PSF per channel, the patch depth from the voxel size.

Fits are tiny (2 steps, 4-channel depth-2 networks) and there are three in all: the CLI
test fits one model per channel of a 3D time-lapse, the Python test one 2D model.
"""

import contextlib
import io as _stringio

import numpy as np
import pytest

import jdeconv
from jdeconv import cli
from jdeconv.files import (
    Hyperstack,
    config_for_voxels,
    deconvolve_stack,
    read_hyperstack,
    write_hyperstack,
)
from jdeconv.io import write_image
from jdeconv.model import load_model
from jdeconv.psf import gaussian_psf

TINY = ["--steps", "2", "--patch-size", "16", "--batch-size", "2", "--no-tta"]
TINY_NET = ["--set", "depth=2", "--set", "base_channels=4"]


def run(argv):
    out, err = _stringio.StringIO(), _stringio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def timelapse(tmp_path_factory):
    """A 3-time-point x 2-channel ZYX OME-TIFF (uint16, 0.1 x 0.1 x 0.3 µm, 2 s) and two PSFs."""
    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    data = (rng.random((3, 12, 2, 24, 24)) * 1000 + 100).astype(np.uint16)
    write_hyperstack(
        d / "tl.ome.tif",
        data,
        axes="TZCYX",
        pixel_size={"X": 0.1, "Y": 0.1, "Z": 0.3},
        time_interval=2.0,
        dtype="uint16",
    )
    write_image(d / "green.tif", gaussian_psf((5, 7, 7), 1.0))
    write_image(d / "red.tif", gaussian_psf((5, 7, 7), (1.0, 1.5, 1.5)))
    return d


def test_cli_deconvolves_every_channel_and_time_point_with_its_psf(timelapse):
    d = timelapse
    before = (d / "tl.ome.tif").read_bytes()
    code, stdout, stderr = run(
        [
            "deconvolve",
            d / "tl.ome.tif",
            "--psf",
            d / "green.tif",
            d / "red.tif",
            "-o",
            d / "out.ome.tif",
            "--save-model",
            d / "models",
            "--patch-size-z",
            "8",
            *TINY,
            *TINY_NET,
        ]
    )
    assert code == 0, stderr
    out = read_hyperstack(d / "out.ome.tif")
    assert out.axes == "TZCYX" and out.data.shape == (3, 12, 2, 24, 24)
    assert out.data.dtype == np.float32 and np.all(np.isfinite(out.data))
    assert out.pixel_size == pytest.approx({"X": 0.1, "Y": 0.1, "Z": 0.3})
    assert out.time_interval == pytest.approx(2.0)
    # One model per channel, each trained with its own PSF, fitted on the middle time point.
    for c, name in enumerate(["green.tif", "red.tif"]):
        model = load_model(d / "models" / f"channel{c}")
        np.testing.assert_allclose(model.psf, jdeconv.io.read_image(d / name)[0], rtol=1e-5)
    assert "fitted on time point 1" in stdout
    assert (d / "tl.ome.tif").read_bytes() == before  # the input is untouched
    # Time points other than the fitted one went through the same model.
    model0 = load_model(d / "models" / "channel0")
    t0 = read_hyperstack(d / "tl.ome.tif").image(channel=0, time=0)
    np.testing.assert_allclose(
        out.data[0, :, 0], jdeconv.deconvolve(t0, model0), rtol=1e-4, atol=1e-3
    )


def test_cli_refuses_a_psf_count_that_does_not_match_the_channels(timelapse):
    d = timelapse
    code, _, stderr = run(
        [
            "deconvolve",
            d / "tl.ome.tif",
            "--psf",
            d / "green.tif",
            d / "red.tif",
            d / "red.tif",
            "-o",
            d / "never.tif",
            *TINY,
        ]
    )
    assert code == 2 and "3 --psf files were given for 2 channels" in stderr
    assert not (d / "never.tif").exists()


def test_python_selection_keeps_the_other_axes():
    rng = np.random.default_rng(1)
    stack = Hyperstack(rng.random((2, 3, 32, 32)).astype(np.float32), "CTYX", {"X": 0.2})
    cfg = jdeconv.Config(steps=2, batch_size=2, patch_size=16, depth=2, base_channels=4, tta=False)
    result = deconvolve_stack(stack, gaussian_psf((5, 5), 1.0), cfg=cfg, channel=1, verbose=False)
    assert result.axes == "TYX" and result.deconvolved.shape == (3, 32, 32)
    assert result.fit_time == 1 and result.channels == (1,) and len(result.models) == 1
    assert result.pixel_size == {"X": 0.2}
    with pytest.raises(ValueError, match="3 PSFs were given for 2 channels; give one PSF for all"):
        deconvolve_stack(stack, [gaussian_psf((5, 5), 1.0)] * 3, cfg=cfg, verbose=False)


@pytest.mark.parametrize(
    "name,axes,kind",
    [("a.tif", "TZCYX", "imagej"), ("b.tif", "CTYX", "ome"), ("c.ome.tif", "TCYX", "ome")],
)
def test_hyperstack_round_trip_keeps_axes_order_and_sizes(tmp_path, name, axes, kind):
    import tifffile

    shape = {"T": 2, "Z": 3, "C": 2, "Y": 8, "X": 9}
    data = np.arange(np.prod([shape[a] for a in axes]), dtype=np.float32).reshape(
        [shape[a] for a in axes]
    )
    sizes = {"X": 0.1, "Y": 0.1, "Z": 0.5} if "Z" in axes else {"X": 0.1, "Y": 0.1}
    write_hyperstack(tmp_path / name, data, axes=axes, pixel_size=sizes)
    with tifffile.TiffFile(tmp_path / name) as tif:
        assert (tif.is_imagej, tif.is_ome) == (kind == "imagej", kind == "ome")
    back = read_hyperstack(tmp_path / name)
    assert back.axes == axes
    np.testing.assert_array_equal(back.data, data)
    assert back.pixel_size == pytest.approx(sizes)
    replace = "already exists and was not replaced; pass overwrite=True"
    with pytest.raises(FileExistsError, match=replace):
        write_hyperstack(tmp_path / name, data, axes=axes)


def test_npy_hyperstack_needs_its_axes(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="--axes"):
        read_hyperstack(tmp_path / "x.npy")
    assert read_hyperstack(tmp_path / "x.npy", axes="TCYX").size("C") == 3


def test_patch_depth_follows_the_voxel_size():
    cfg = jdeconv.Config(patch_size=48, patch_size_z=32, depth=2)
    # dz = 6 dxy: 48 px across ~ 8 planes, raised to the PSF's 8 + 8 of interior (grid of 4).
    assert config_for_voxels(cfg, (0.6, 0.1, 0.1), psf_shape=(9, 17, 17)).patch_size_z == 16
    assert config_for_voxels(cfg, (0.3, 0.1, 0.1), psf_shape=(3, 9, 9)).patch_size_z == 16
    # Near-isotropic, finer Z, unknown sizes, 2D: unchanged; never deeper than configured.
    for sizes in [(0.14, 0.1, 0.1), (0.05, 0.1, 0.1), (None, 0.1, 0.1), (0.1, 0.1)]:
        assert config_for_voxels(cfg, sizes) is cfg
    with pytest.warns(UserWarning, match="square pixels"):
        config_for_voxels(cfg, (0.3, 0.1, 0.2))
