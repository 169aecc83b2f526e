"""The shared input checks in jdeconv._checks: one image check, one PSF-fits check."""

import numpy as np
import pytest

from jdeconv._checks import check_image, check_psf_fits


def test_check_image_converts_and_keeps_values():
    image = np.arange(12, dtype=np.uint32).reshape(3, 4)
    out = check_image(image)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, image)
    assert check_image(image, dtype=np.float32).dtype == np.float32
    assert check_image(np.ones((2, 3, 4)), ndim=3).shape == (2, 3, 4)
    assert check_image(np.ones((4, 4)), ndim=(2, 3)).shape == (4, 4)


@pytest.mark.parametrize(
    "image,kwargs,match",
    [
        (np.ones((4, 4), bool), {}, "image has unsupported dtype bool"),
        (np.ones((4, 4), complex), {}, "unsupported dtype complex"),
        (np.ones(4), {}, r"must be 2D \(YX\) or 3D \(ZYX\), got 1D"),
        (np.ones((2, 3, 4, 5)), {}, "got 4D"),
        (np.ones((2, 3, 4)), {"ndim": 2}, r"must be 2D \(YX\), got 3D"),
        (np.ones((0, 4)), {}, "empty"),
        (np.full((4, 4), np.nan), {}, "contains 16 NaN or Inf"),
        (np.full((4, 4), 2.0), {"allow_constant": False}, r"constant \(all 2\)"),
        (-np.eye(4), {"allow_negative": False}, "negative values"),
        (np.ones(4), {"name": "psnr: reference"}, "^psnr: reference must be"),
    ],
)
def test_check_image_errors_name_the_problem(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_image(image, **kwargs)


def test_check_psf_fits():
    check_psf_fits((5, 5), (5, 8))
    check_psf_fits((3, 5, 5), (3, 16, 16))
    with pytest.raises(ValueError, match=r"PSF shape \(7, 5\) is larger than the image \(5, 8\)"):
        check_psf_fits((7, 5), (5, 8))
