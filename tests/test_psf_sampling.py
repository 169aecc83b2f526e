"""PSF sampling: resampling to the image's grid, the rules of match_psf_to_image, the
warnings for PSFs of unknown sampling, and the command line's PSF choice (no training).

The reference is jdeconv's own Gibson-Lanni model evaluated at every pixel's radius
(``radial_oversampling=None``), so the comparison measures the resampling alone.
"""

import argparse
import warnings

import numpy as np
import pytest

from jdeconv.cli._psf import PsfProvider
from jdeconv.io import ImageMetadata, write_image
from jdeconv.psf import (
    check_psf_sampling,
    gaussian_psf,
    gibson_lanni_psf,
    match_psf_to_image,
    resample_psf,
)


def _gl(shape, **kw):
    return gibson_lanni_psf(shape, radial_oversampling=None, **kw)


def test_psf_at_twice_the_pixel_size_is_resampled_to_the_generated_one():
    # 2D: NA 0.8, 0.6 µm light; the PSF is given at 0.2 µm, the image has 0.1 µm pixels.
    given = _gl((17, 17), pixel_size_xy=0.2)
    expected = _gl((33, 33), pixel_size_xy=0.1)
    psf, notice = match_psf_to_image(
        given, (64, 64), psf_pixel_size=(0.2, 0.2), pixel_size=(0.1, 0.1)
    )
    assert psf.shape == (33, 33) and "resampled" in notice
    assert float(psf.sum()) == pytest.approx(1.0, abs=1e-5)
    # Tolerance: 4 % of the peak at any pixel. 0.2 µm is barely above Nyquist for this
    # PSF (lambda / 4 NA = 0.19 µm), so cubic interpolation misses by 2.9 % of the peak at
    # most here, and by 4.4 % in the L2 norm.
    assert np.abs(psf - expected).max() < 0.04 * expected.max()
    assert np.linalg.norm(psf - expected) < 0.05 * np.linalg.norm(expected)


def test_3d_psf_with_twice_the_z_step_is_resampled_along_z_only():
    given = _gl((9, 17, 17), pixel_size_xy=0.1, pixel_size_z=0.4)
    expected = _gl((17, 17, 17), pixel_size_xy=0.1, pixel_size_z=0.2)
    psf, notice = match_psf_to_image(
        given, (40, 64, 64), psf_pixel_size=(0.4, 0.1, 0.1), pixel_size=(0.2, 0.1, 0.1)
    )
    assert psf.shape == (17, 17, 17)
    assert "(Z)" in notice
    assert np.abs(psf - expected).max() < 0.01 * expected.max()  # 0.7 % in our runs


def test_finer_psf_is_sampled_at_the_image_pixels():
    # Every other pixel of a PSF at 0.05 µm is the PSF at 0.1 µm: point sampling is exact.
    fine = _gl((33, 33), pixel_size_xy=0.05)
    psf = resample_psf(fine, 0.05, 0.1)
    np.testing.assert_allclose(psf, _gl((17, 17), pixel_size_xy=0.1), atol=1e-6)


@pytest.mark.parametrize("factor", [0.7, 1.3, 2.5])
@pytest.mark.parametrize("shape", [(15, 15), (7, 11, 11)])
def test_resampled_psf_is_odd_centred_non_negative_and_normalised(factor, shape):
    psf = resample_psf(gaussian_psf(shape, 1.5), 1.0, 1.0 / factor)
    assert all(n % 2 == 1 for n in psf.shape)
    assert psf.min() >= 0 and float(psf.sum()) == pytest.approx(1.0, abs=1e-5)
    grids = np.indices(psf.shape)
    centre = [float((g * psf).sum()) for g in grids]
    np.testing.assert_allclose(centre, [n // 2 for n in psf.shape], atol=1e-3)


def test_resampled_psf_is_cut_to_the_image():
    psf, notice = match_psf_to_image(
        gaussian_psf((17, 17), 2.0), (21, 40), psf_pixel_size=(0.4, 0.4), pixel_size=(0.1, 0.1)
    )
    assert psf.shape == (21, 39) and "cut to the image" in notice  # 65x65 uncut


def test_no_resampling_when_sizes_agree_or_are_unknown():
    psf = gaussian_psf((9, 9), 1.5)
    same, notice = match_psf_to_image(
        psf, (32, 32), psf_pixel_size=(0.1, 0.1), pixel_size=(0.1005, 0.1005)
    )
    assert notice is None and same is psf
    unknown, notice = match_psf_to_image(psf, (32, 32), psf_pixel_size=None, pixel_size=(0.1, 0.1))
    assert notice is None and unknown is psf


def test_badly_sampled_psf_of_unknown_size_warns():
    flat = np.zeros((3, 9, 9))
    flat[1] = gaussian_psf((9, 9), 1.5)  # one plane: no axial blur at all
    with pytest.warns(UserWarning, match="axial FWHM"):
        match_psf_to_image(flat, (40, 64, 64))
    delta = np.zeros((5, 5))
    delta[2, 2], delta[2, 1], delta[2, 3] = 0.98, 0.01, 0.01
    with pytest.warns(UserWarning, match="narrower than a pixel"):
        check_psf_sampling(delta, (64, 64))
    # A well sampled widefield PSF and a thin stack are fine.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_psf_sampling(gibson_lanni_psf((17, 17, 17)), (40, 64, 64))
        check_psf_sampling(flat, (8, 64, 64))


def _args(**kw):
    base = dict(
        psf=None,
        psf_model=None,
        psf_size=None,
        psf_sigma=None,
        na=0.8,
        wavelength=[0.6],
        magnification=16.0,
        ni=1.33,
        ns=1.33,
        pixel_size_xy=None,
        pixel_size_z=None,
        defocus=0.0,
        particle_depth=0.0,
        normalize_psf=False,
        center_psf=False,
        pixel_size=None,
        psf_pixel_size=None,
        quiet=False,
    )
    base.update(kw)
    return argparse.Namespace(**base)


def test_cli_resamples_a_psf_file_with_a_notice(tmp_path, capsys):
    given = _gl((17, 17), pixel_size_xy=0.2)
    write_image(tmp_path / "psf.tif", given, metadata=ImageMetadata("YX", (0.2, 0.2)))
    provider = PsfProvider(_args(psf=[str(tmp_path / "psf.tif")]))
    image = np.random.default_rng(0).random((64, 64))
    psf = provider.checked(tmp_path / "cells.tif", image, ImageMetadata("YX", (0.1, 0.1)))
    assert psf.shape == (33, 33)
    np.testing.assert_allclose(psf, resample_psf(given, 0.2, 0.1), rtol=1e-5, atol=1e-8)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PSF resampled from 0.2 x 0.2 to 0.1 x 0.1" in err[0]
    # --psf-pixel-size overrides the file's metadata (here: same as the image, no change).
    provider = PsfProvider(_args(psf=[str(tmp_path / "psf.tif")], psf_pixel_size=[0.1]))
    assert provider.checked("c.tif", image, ImageMetadata("YX", (0.1, 0.1))).shape == (17, 17)


def test_cli_model_psf_uses_the_image_voxel_size():
    provider = PsfProvider(_args(psf_model="gibson-lanni", psf_size=[9, 17, 17]))
    image = np.random.default_rng(0).random((24, 40, 40))
    psf = provider.checked("stack.tif", image, ImageMetadata("ZYX", (0.3, 0.1, 0.1)))
    expected = gibson_lanni_psf((9, 17, 17), pixel_size_xy=0.1, pixel_size_z=0.3)
    np.testing.assert_allclose(psf, expected, rtol=1e-5, atol=1e-9)
    # --pixel-size overrides the file's metadata.
    provider = PsfProvider(
        _args(psf_model="gibson-lanni", psf_size=[9, 17, 17], pixel_size=[0.5, 0.2, 0.2])
    )
    psf = provider.checked("stack.tif", image, ImageMetadata("ZYX", (0.3, 0.1, 0.1)))
    expected = gibson_lanni_psf((9, 17, 17), pixel_size_xy=0.2, pixel_size_z=0.5)
    np.testing.assert_allclose(psf, expected, rtol=1e-5, atol=1e-9)
