"""The ``jdeconv`` command line, through ``jdeconv.cli.main`` and as a subprocess.

A fit compiles for tens of seconds on a CPU, so one module-scoped run of ``deconvolve``
(which also saves its model) serves every test that needs a trained model; the demo runs
once with ``--quick``. Everything else (psf, simulate, bad input, usage) needs no fit.
"""

import collections
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import assert_one_line_error, run

import jdeconv.api
import jdeconv.io
from jdeconv import cli
from jdeconv.config import Config
from jdeconv.io import ImageMetadata, read_image, write_image
from jdeconv.psf import gaussian_psf, gibson_lanni_psf

FAST = ["--steps", "2", "--patch-size", "32", "--batch-size", "2", "--no-tta"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Small inputs written through the CLI's own psf and simulate commands."""
    d = tmp_path_factory.mktemp("cli")
    code, _, err = run(
        ["psf", "--model", "gaussian", "--size", "9", "--sigma", "1.5", "-o", d / "psf.tif"]
    )
    assert code == 0, err
    rng = np.random.default_rng(0)
    clean = np.zeros((32, 32))
    clean[rng.integers(4, 28, 12), rng.integers(4, 28, 12)] = 1.0
    clean[10:20, 14:16] = 0.7
    np.save(d / "clean.npy", clean)
    code, _, err = run(
        [
            "simulate",
            d / "clean.npy",
            "--psf",
            d / "psf.tif",
            "-o",
            d / "noisy.tif",
            "--clean-out",
            d / "clean01.tif",
            "--quiet",
        ]
    )
    assert code == 0, err
    noisy, _ = read_image(d / "noisy.tif")
    # The deconvolution input: uint16 ImageJ TIFF with a 0.1 µm pixel size.
    counts = np.round(noisy * 4000 + 100).astype(np.uint16)
    write_image(d / "cells.tif", counts, metadata=ImageMetadata("YX", (0.1, 0.1)), like=counts)
    return d


@pytest.fixture(scope="module")
def trained(data):
    """One CLI deconvolution with --save-model, shared by the tests that need a model."""
    out = data / "cells_deconv.tif"
    model = data / "model"
    before = (data / "cells.tif").read_bytes()
    result = run(
        [
            "deconvolve",
            data / "cells.tif",
            "--psf",
            data / "psf.tif",
            "-o",
            out,
            "--save-model",
            model,
            "--seed",
            "0",
            *FAST,
        ]
    )
    return {"result": result, "out": out, "model": model, "input_bytes": before}


def test_deconvolve_writes_float32_with_metadata_and_a_summary(data, trained):
    code, stdout, stderr = trained["result"]
    assert code == 0, stderr
    image, meta = read_image(trained["out"])
    assert image.dtype == np.float32 and image.shape == (32, 32)
    assert np.all(np.isfinite(image))
    assert meta.axes == "YX" and meta.pixel_size == pytest.approx((0.1, 0.1))
    summary = [line for line in stdout.splitlines() if line.strip()]
    assert len(summary) == 1
    line = summary[0]
    for fragment in ("cells.tif ->", "cells_deconv.tif", "final loss", "kept step", "compile"):
        assert fragment in line, line
    assert sorted(p.name for p in trained["model"].iterdir()) == [
        "config.json",
        "params.npz",
        "psf.npy",
    ]
    # The input is untouched and no temporary files were left behind.
    assert (data / "cells.tif").read_bytes() == trained["input_bytes"]
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]


def test_predict_with_saved_model_globs_and_cast_back(data, trained, tmp_path):
    # Two inputs, one given as a glob pattern the shell did not expand (as on Windows).
    inputs = tmp_path / "in"
    inputs.mkdir()
    counts, meta = read_image(data / "cells.tif")
    write_image(inputs / "a.tif", counts, metadata=meta, like=meta)
    write_image(inputs / "b.tif", counts[::-1].copy(), metadata=meta, like=meta)
    outdir = tmp_path / "results" / "nested"  # created by --output-dir
    code, stdout, stderr = run(
        [
            "predict",
            "--model",
            trained["model"],
            inputs / "*.tif",
            "--output-dir",
            outdir,
            "--dtype",
            "input",
            "--no-tta",
        ]
    )
    assert code == 0, stderr
    assert sorted(p.name for p in outdir.iterdir()) == ["a_deconv.tif", "b_deconv.tif"]
    assert stdout.count(" -> ") == 2
    a, a_meta = read_image(outdir / "a_deconv.tif")
    assert a.dtype == np.uint16 and a_meta.pixel_size == pytest.approx((0.1, 0.1))
    # The same model and image as the training run give the same result (up to rounding).
    trained_out, _ = read_image(trained["out"])
    np.testing.assert_allclose(a, np.clip(np.rint(trained_out), 0, 65535), atol=1)

    # Tiled inference gives the same result (tiles are exact with the default norm="none").
    code, _, stderr = run(
        [
            "predict",
            "--model",
            trained["model"],
            inputs / "a.tif",
            "-o",
            tmp_path / "tiled.npy",
            "--tile",
            "16",
            "--no-tta",
        ]
    )
    assert code == 0, stderr
    a_float, _ = read_image(trained["out"])
    np.testing.assert_allclose(np.load(tmp_path / "tiled.npy"), a_float, rtol=1e-4, atol=1e-2)

    # A 3D image with a 2D model is bad input.
    np.save(tmp_path / "vol.npy", np.random.default_rng(0).random((4, 32, 32)))
    code, _, stderr = run(
        [
            "predict",
            "--model",
            trained["model"],
            tmp_path / "vol.npy",
            "-o",
            tmp_path / "vol_out.tif",
        ]
    )
    assert_one_line_error(code, stderr, "vol.npy", "2D", "3D")
    code, _, stderr = run(
        ["predict", "--model", tmp_path / "nope", data / "cells.tif", "-o", tmp_path / "x.tif"]
    )
    assert_one_line_error(code, stderr, "nope", "no such model")


def test_each_input_file_is_read_once(data, trained, tmp_path, monkeypatch):
    # Counts every read through jdeconv.io.read_image, the one reader the CLI uses.
    reads = collections.Counter()
    real_read = jdeconv.io.read_image

    def counting_read(path, **options):
        reads[Path(path).name] += 1
        return real_read(path, **options)

    fitted = []

    def fake_fit(image, psf, cfg=None, **kwargs):  # no training: only what was read matters
        fitted.append(np.asarray(image))
        return types.SimpleNamespace(
            deconvolved=np.asarray(image, np.float32),
            model=types.SimpleNamespace(config=Config.default(image.ndim)),
            history={"loss": [1.0]},
            timings={"total": 0.0, "compile": 0.0, "steps": 1, "seconds_per_step": 0.0},
            best_step=1,
        )

    monkeypatch.setattr(jdeconv.io, "read_image", counting_read)
    monkeypatch.setattr(jdeconv.api, "fit", fake_fit)
    counts, meta = real_read(data / "cells.tif")
    write_image(tmp_path / "a.tif", counts, metadata=meta, like=meta)
    np.save(tmp_path / "b.npy", counts[::-1])
    inputs = [tmp_path / "a.tif", tmp_path / "b.npy"]

    code, _, stderr = run(
        ["deconvolve", *inputs, "--psf", data / "psf.tif", "--output-dir", tmp_path / "d"]
    )
    assert code == 0, stderr
    assert reads == {"a.tif": 1, "b.npy": 1, "psf.tif": 1}
    np.testing.assert_array_equal(fitted[0], counts)  # the images read are those fitted
    np.testing.assert_array_equal(fitted[1], counts[::-1])

    reads.clear()
    code, _, stderr = run(
        ["predict", "--model", trained["model"], *inputs, "--output-dir", tmp_path / "p"]
    )
    assert code == 0, stderr
    assert reads == {"a.tif": 1, "b.npy": 1}

    reads.clear()
    code, _, stderr = run(
        ["simulate", data / "clean.npy", "--psf", data / "psf.tif", "-o", tmp_path / "n.tif"]
    )
    assert code == 0, stderr
    assert reads == {"clean.npy": 1, "psf.tif": 1}


def test_psf_command_2d_3d_and_gaussian(tmp_path):
    code, stdout, stderr = run(
        [
            "psf",
            "--model",
            "gibson-lanni",
            "--size",
            "17",
            "--defocus",
            "-3.045",
            "-o",
            tmp_path / "ring.tif",
        ]
    )
    assert code == 0, stderr
    assert "17x17" in stdout
    ring, meta = read_image(tmp_path / "ring.tif")
    np.testing.assert_allclose(ring, gibson_lanni_psf((17, 17), defocus=-3.045), rtol=1e-6)
    assert meta.pixel_size == pytest.approx((0.406, 0.406))

    code, _, stderr = run(
        [
            "psf",
            "--model",
            "gibson-lanni",
            "--size",
            "9",
            "15",
            "15",
            "--pixel-size-z",
            "0.2",
            "--na",
            "1.0",
            "-o",
            tmp_path / "gl3.npy",
        ]
    )
    assert code == 0, stderr
    psf3 = np.load(tmp_path / "gl3.npy")
    expected = gibson_lanni_psf((9, 15, 15), numerical_aperture=1.0, pixel_size_z=0.2)
    np.testing.assert_allclose(psf3, expected, rtol=1e-6)

    code, _, stderr = run(
        ["psf", "--model", "gaussian", "--sigma", "1.5", "--ndim", "3", "-o", tmp_path / "g.tif"]
    )
    assert code == 0, stderr
    g, g_meta = read_image(tmp_path / "g.tif")
    assert g.shape == (13, 13, 13) and g_meta.axes == "ZYX"
    np.testing.assert_allclose(g, gaussian_psf((13, 13, 13), 1.5), rtol=1e-6)
    assert float(g.sum()) == pytest.approx(1.0, rel=1e-5)

    code, _, stderr = run(["psf", "--model", "gaussian", "-o", tmp_path / "x.tif"])
    assert_one_line_error(code, stderr, "--psf-sigma")
    code, _, stderr = run(
        ["psf", "--model", "gaussian", "--sigma", "1", "--size", "8", "-o", tmp_path / "x.tif"]
    )
    assert_one_line_error(code, stderr, "odd")


def test_simulate_is_seeded_and_writes_the_clean_image(data, tmp_path):
    args = ["simulate", data / "clean.npy", "--psf", data / "psf.tif", "--seed", "3"]
    code, stdout, stderr = run(
        [*args, "-o", tmp_path / "n1.tif", "--clean-out", tmp_path / "c.npy"]
    )
    assert code == 0, stderr
    assert "PSNR vs clean" in stdout
    code, _, _ = run([*args, "-o", tmp_path / "n2.tif", "--quiet"])
    n1, _ = read_image(tmp_path / "n1.tif")
    n2, _ = read_image(tmp_path / "n2.tif")
    np.testing.assert_array_equal(n1, n2)
    assert n1.dtype == np.float32 and 0 <= n1.min() and n1.max() <= 1
    levels = n1 * 1023
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # 10-bit quantised
    c = np.load(tmp_path / "c.npy")
    assert c.min() == 0 and c.max() == 1

    # 3D with a model PSF: no salt-and-pepper by default, --bits 0 switches quantisation off.
    np.save(tmp_path / "vol.npy", np.random.default_rng(1).random((8, 20, 20)))
    code, stdout, stderr = run(
        [
            "simulate",
            tmp_path / "vol.npy",
            "--psf-model",
            "gaussian",
            "--psf-sigma",
            "1",
            "--psf-size",
            "5",
            "--bits",
            "0",
            "--sigma",
            "0.05",
            "-o",
            tmp_path / "v.tif",
        ]
    )
    assert code == 0, stderr
    assert "salt-and-pepper 0.0" in stdout
    v, meta = read_image(tmp_path / "v.tif")
    assert v.shape == (8, 20, 20) and meta.axes == "ZYX"

    code, _, stderr = run(
        ["simulate", data / "clean.npy", "--psf", data / "psf.tif", "-o", data / "clean.npy"]
    )
    assert_one_line_error(code, stderr, "clean.npy", "never overwrites")


@pytest.fixture(scope="module")
def bad_inputs(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (d / "garbage.tif").write_bytes(b"definitely not a TIFF")
    np.save(d / "rank4.npy", rng.random((2, 3, 32, 32)))
    np.save(d / "image.npy", rng.random((32, 32)))
    np.save(d / "small.npy", rng.random((6, 6)))
    nan = rng.random((32, 32))
    nan[5, 5] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "empty.npy", np.zeros((0, 32)))
    np.save(d / "constant.npy", np.ones((32, 32)))
    np.save(d / "psf3d.npy", gaussian_psf((5, 5, 5), 1.0))
    np.save(d / "psf_sum2.npy", 2 * gaussian_psf((5, 5), 1.0))
    tifffile.imwrite(
        d / "channels.tif",
        rng.random((2, 32, 32)).astype(np.float32),
        imagej=True,
        metadata={"axes": "CYX"},
    )
    import skimage.io

    skimage.io.imsave(d / "colour.png", rng.integers(0, 255, (32, 32, 3)).astype(np.uint8))
    return d


_O = ["-o", "{d}/o.tif"]
BAD_INPUTS = [
    ("missing file", ["{d}/missing.tif", "--psf", "{psf}", *_O], ["missing.tif", "no such"]),
    ("unreadable", ["{d}/garbage.tif", "--psf", "{psf}", *_O], ["garbage.tif", "TIFF"]),
    ("wrong rank", ["{d}/rank4.npy", "--psf", "{psf}", *_O], ["rank4.npy", "--axes"]),
    ("psf rank", ["{d}/image.npy", "--psf", "{d}/psf3d.npy", *_O], ["psf3d.npy", "rank"]),
    ("psf larger", ["{d}/small.npy", "--psf", "{psf}", *_O], ["small.npy", "larger"]),
    ("psf sum", ["{d}/image.npy", "--psf", "{d}/psf_sum2.npy", *_O], ["--normalize-psf"]),
    ("nan", ["{d}/nan.npy", "--psf", "{psf}", *_O], ["nan.npy", "NaN"]),
    ("empty", ["{d}/empty.npy", "--psf", "{psf}", *_O], ["empty.npy", "empty"]),
    ("constant", ["{d}/constant.npy", "--psf", "{psf}", *_O], ["constant.npy", "constant"]),
    # A file with channels is deconvolved whole (tests/test_files.py), with one PSF per
    # channel or one for all.
    (
        "psf per channel",
        ["{d}/channels.tif", "--psf", "{psf}", "{psf}", "{psf}", *_O],
        ["channels.tif", "3 --psf files were given for 2 channels"],
    ),
    (
        "channel range",
        ["{d}/channels.tif", "--psf", "{psf}", "--channel", "5", *_O],
        ["channels.tif", "out of range"],
    ),
    ("colour", ["{d}/colour.png", "--psf", "{psf}", *_O], ["colour.png", "greyscale"]),
    ("no out dir", ["{d}/image.npy", "--psf", "{psf}", "-o", "{d}/no/o.tif"], ["does not exist"]),
    ("out = in", ["{d}/image.npy", "--psf", "{psf}", "-o", "{d}/./image.npy"], ["never overwri"]),
    ("out = psf", ["{d}/image.npy", "--psf", "{psf}", "-o", "{psf}"], ["psf.tif", "never overw"]),
    ("out type", ["{d}/image.npy", "--psf", "{psf}", "-o", "{d}/o.png"], ["o.png", "unsupported"]),
    ("-o, 2 inputs", ["{d}/image.npy", "{d}/nan.npy", "--psf", "{psf}", *_O], ["--output-dir"]),
    ("no glob match", ["{d}/*.nothing", "--psf", "{psf}", *_O], ["*.nothing", "no files"]),
    ("missing psf", ["{d}/image.npy", "--psf", "{d}/nope.tif", *_O], ["nope.tif", "no such"]),
    ("psf params", ["{d}/image.npy", "--psf-model", "gaussian", *_O], ["--psf-sigma"]),
    ("bad setting", ["{d}/image.npy", "--psf", "{psf}", *_O, "--patch-size", "12"], ["2**"]),
]


@pytest.mark.parametrize(
    "case, fragments",
    [pytest.param(argv, fragments, id=name) for name, argv, fragments in BAD_INPUTS],
)
def test_bad_input_is_one_line_and_exit_code_2(data, bad_inputs, case, fragments, monkeypatch):
    def no_fit(*args, **kwargs):  # every case must be caught before training starts
        raise AssertionError("fit was called")

    monkeypatch.setattr(jdeconv.api, "fit", no_fit)
    argv = [a.format(d=bad_inputs, psf=data / "psf.tif") for a in case]
    before = {p: p.read_bytes() for p in bad_inputs.iterdir() if p.is_file()}
    code, stdout, stderr = run(["deconvolve", *argv])
    assert_one_line_error(code, stderr, *fragments)
    assert stdout == ""
    assert {p: p.read_bytes() for p in bad_inputs.iterdir() if p.is_file()} == before
    assert not (bad_inputs / "o.tif").exists()


def test_output_that_is_a_link_to_the_input_is_refused(data, tmp_path):
    link = tmp_path / "link.tif"
    os.symlink(data / "cells.tif", link)
    before = (data / "cells.tif").read_bytes()
    code, _, stderr = run(["predict", "--model", tmp_path, data / "cells.tif", "-o", link])
    assert_one_line_error(code, stderr, "link.tif", "never overwrites")
    assert (data / "cells.tif").read_bytes() == before


def test_default_output_name_cannot_clobber_an_input(tmp_path, data):
    # x.tif's default output x_deconv.tif is itself one of the inputs.
    counts, meta = read_image(data / "cells.tif")
    write_image(tmp_path / "x.tif", counts, metadata=meta, like=meta)
    write_image(tmp_path / "x_deconv.tif", counts, metadata=meta, like=meta)
    code, _, stderr = run(
        [
            "deconvolve",
            tmp_path / "x.tif",
            tmp_path / "x_deconv.tif",
            "--psf",
            data / "psf.tif",
            "--output-dir",
            tmp_path,
        ]
    )
    assert_one_line_error(code, stderr, "x_deconv.tif", "never overwrites")


def test_failure_while_running_is_exit_code_1(data, tmp_path, monkeypatch):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("the accelerator caught fire")

    monkeypatch.setattr(jdeconv.api, "fit", broken_fit)
    argv = [
        "deconvolve",
        data / "cells.tif",
        "--psf",
        data / "psf.tif",
        "-o",
        tmp_path / "o.tif",
        "--quiet",
    ]
    code, _, stderr = run(argv)
    assert_one_line_error(code, stderr, "RuntimeError", "caught fire", "--debug", expected_code=1)
    code, _, stderr = run([*argv, "--debug"])
    assert code == 1 and "Traceback" in stderr
    assert not (tmp_path / "o.tif").exists()


def test_usage_and_help(capsys):
    assert cli.main(["--help"]) == 0
    assert "deconvolve" in capsys.readouterr().out
    for command in ("deconvolve", "predict", "psf", "simulate", "demo"):
        assert cli.main([command, "--help"]) == 0
        assert "usage: jdeconv " + command in capsys.readouterr().out
    assert cli.main([]) == 2  # no command: the usage, then what to start with
    out = capsys.readouterr()
    assert "usage: jdeconv" in out.out + out.err and "jdeconv demo --quick" in out.out + out.err
    for argv, fragments in (
        (["frobnicate"], ("invalid choice: 'frobnicate'", "see jdeconv --help")),
        (["deconvolve"], ("required: INPUT", "see jdeconv deconvolve --help")),
        (["psf", "--model", "airy", "-o", "x.tif"], ("--model: invalid choice: 'airy'",)),
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error" in err, err
        assert all(f in err for f in fragments), (fragments, err)
    assert cli.main(["--version"]) == 0


def test_console_script_and_python_m(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jdeconv",
            "psf",
            "--model",
            "gaussian",
            "--sigma",
            "1",
            "-o",
            tmp_path / "p.npy",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "p.npy").shape == (9, 9)

    script = Path(sys.executable).parent / "jdeconv"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "jdeconv"]
    proc = subprocess.run(
        [
            *command,
            "deconvolve",
            tmp_path / "missing.tif",
            "--psf",
            tmp_path / "p.npy",
            "-o",
            tmp_path / "o.tif",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"jdeconv: error: {tmp_path}/missing.tif: no such file."
    ]


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    code, stdout, stderr = run(["demo", "--quick", "--output-dir", out, "--quiet"])
    assert code == 0, stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "demo.png",
            "demo.md",
            "ground_truth.tif",
            "noisy.tif",
            "psf.tif",
            "richardson_lucy.tif",
            "jdeconv.tif",
        ]
    )
    import matplotlib.image

    figure = matplotlib.image.imread(out / "demo.png")
    assert figure.shape[1] > 2 * figure.shape[0]  # four panels side by side
    table = (out / "demo.md").read_text()
    rows = ("| input", "| Richardson-Lucy", "| jdeconv", "| non-negative Tikhonov")
    for row in (*rows, "| non-negative sparse Tikhonov"):
        assert row in table
    truth, _ = read_image(out / "ground_truth.tif")
    assert truth.shape == (48, 48) and truth.min() == 0 and truth.max() == 1


def test_training_options_keep_fits_defaults_for_the_dimensionality():
    from jdeconv.cli.deconvolve import make_config
    from jdeconv.config import Config

    parser = cli.build_parser()

    def config(*options, ndim):
        args = parser.parse_args(["deconvolve", "x.tif", "--psf", "p.tif", "-o", "y.tif", *options])
        return make_config(args, ndim)

    assert config(ndim=3) is None  # fit(cfg=None)
    assert config("--steps", "5", ndim=3) == Config.default(3, steps=5)
    assert config("--steps", "5", "--seed", "2", ndim=2) == Config.default(2, steps=5, seed=2)
    cfg = config("--preset", "noise2same_d", "--tile", "64", "--no-tta", ndim=2)
    assert cfg == Config.preset("noise2same_d", tta=False, tile_size=64)
