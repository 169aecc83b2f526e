"""Tests for jdeconv.psf: validation, centring, Gaussian and Gibson-Lanni models."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import scipy.stats

from jdeconv.psf import center_psf, gaussian_psf, gibson_lanni_psf, validate_psf

# The project's reference data lives beside the repository (../shared/data), never in
# it; from a git worktree (<repo>/../wt/<name>) it is one level further up.
PSF_DIR = next(
    (
        base / "shared" / "data" / "psf"
        for base in Path(__file__).resolve().parents[2:4]
        if (base / "shared" / "data" / "psf").is_dir()
    ),
    Path(__file__).resolve().parents[2] / "shared" / "data" / "psf",
)

# SSI reference PSFs (royerlab/ssi-code SimpleMicroscopePSF(M=16, NA=0.8, n=1.33,
# wd=3000), wavelength 0.6 µm, generate_xyz_psf(dxy=0.406, dz=0.406, xy_size=N,
# z_size=N)): plane i is at z = (i - (N - 2) / 2) * dz, half a plane before our centred
# convention, hence defocus = dz / 2 for the stacks; the 2D kernel is plane 0 of 17³.
DZ = 0.406
SSI_3D_DEFOCUS = DZ / 2
SSI_2D_DEFOCUS = -7.5 * DZ


def load_reference(name: str) -> np.ndarray:
    path = PSF_DIR / name
    if not path.is_file():
        pytest.skip(f"reference PSF {path} not found (expected in ../shared/data/psf)")
    return np.load(path).astype(np.float64)


def rel_max_error(psf, ref) -> float:
    return float(np.abs(np.asarray(psf, np.float64) - ref).max() / ref.max())


def correlation(psf, ref) -> float:
    return float(np.corrcoef(np.ravel(psf), np.ravel(ref))[0, 1])


# --------------------------------------------------------------------------- validate_psf


@pytest.mark.parametrize(
    "psf, kwargs, match",
    [
        (np.ones((3, 3)) / 9, {"ndim": 3}, "does not match the image rank 3"),
        (np.ones((3, 3, 3)) / 27, {"ndim": 2}, "does not match the image rank 2"),
        (np.ones(5) / 5, {}, "must be 2D or 3D"),
        (np.ones((1, 3, 3, 3)) / 27, {}, "must be 2D or 3D"),
        (np.ones((4, 3)) / 12, {}, "even size"),
        (np.ones((3, 3, 2)) / 18, {}, "even size"),
        (np.full((3, 3), np.nan), {}, "NaN or Inf"),
        (np.where(np.eye(3) > 0, np.inf, 0.0), {"normalize": True}, "NaN or Inf"),
        (np.array([[0, 0, 0], [0, 1.5, 0], [0, 0, -0.5]]), {}, "negative values"),
        (np.zeros((3, 3)), {"normalize": True}, "sums to zero"),
        (np.ones((3, 3)), {}, "not 1"),
        (np.ones((3, 3), dtype=bool), {"normalize": True}, "unsupported dtype bool"),
        (np.ones((3, 3), dtype=complex) / 9, {}, "unsupported dtype complex"),
    ],
)
def test_validate_psf_errors_name_the_problem(psf, kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_psf(psf, **kwargs)


def test_validate_psf_normalize_returns_float32_sum_one():
    raw = np.arange(1, 10, dtype=np.int64).reshape(3, 3)
    with pytest.warns(UserWarning, match="cropped too tight"):  # mostly at its border
        psf = validate_psf(raw, normalize=True)
    assert psf.dtype == np.float32
    np.testing.assert_allclose(psf.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(psf, raw / raw.sum(), rtol=1e-6)


def test_validate_psf_accepts_a_valid_psf_unchanged():
    psf = gaussian_psf((5, 7, 9), 1.2)
    out = validate_psf(psf, ndim=3)
    np.testing.assert_allclose(out, psf, rtol=1e-6)


# --------------------------------------------------------------------------- center_psf


def test_center_psf_pads_to_odd_sizes_around_the_centre_of_mass():
    arr = np.zeros((8, 10))
    arr[2, 6] = 1.0
    arr[1, 5] = 0.5
    out = center_psf(arr)
    # Centre of mass (1.67, 5.67) rounds to (2, 6); padding puts it in the middle and the
    # zero margins padding made on both sides are trimmed again.
    assert out.shape == (3, 3)
    assert out[1, 1] == 1.0 and out[0, 0] == 0.5
    assert out.sum() == arr.sum()  # padded, never cropped: no mass lost
    out[0, 0] = 7.0
    assert arr.max() == 1.0  # a copy, not a view


def test_off_centre_psf_is_refused_and_center_psf_fixes_it():
    # The reliability review's case: a 9x9 PSF whose peak is at (1, 1).
    centred = gaussian_psf((9, 9), 1.0).astype(np.float64)
    shifted = np.zeros((9, 9))
    shifted[:6, :6] = centred[3:, 3:]
    shifted /= shifted.sum()
    with pytest.raises(ValueError, match=r"off-centre.*center_psf.*--center-psf"):
        validate_psf(shifted)
    fixed = validate_psf(center_psf(shifted), normalize=True)
    # Back in the middle of a 9x9 array, with every pixel it had (the part the shift
    # had cut off stays zero).
    assert fixed.shape == (9, 9)
    np.testing.assert_allclose(fixed[3:, 3:], shifted[:6, :6], rtol=1e-6)
    assert np.unravel_index(np.argmax(fixed), fixed.shape) == (4, 4)
    # 3D, off along z only; a forward operator may still use any kernel.
    volume = np.zeros((5, 5, 5))
    volume[0, 2, 2] = 1.0
    with pytest.raises(ValueError, match=r"\(-2, 0, 0\) pixels from the middle"):
        validate_psf(volume)
    validate_psf(volume, check_centre=False)


def test_half_a_pixel_off_is_still_centred():
    psf = np.zeros((3, 3))
    psf[1, 1] = psf[1, 2] = 0.5  # centre of mass 0.5 px right of the middle: accepted
    validate_psf(psf)
    psf[1, 1], psf[1, 2] = 0.4, 0.6  # 0.6 px: refused
    with pytest.raises(ValueError, match="off-centre"):
        validate_psf(psf)


def test_psf_cropped_too_tight_warns():
    with pytest.warns(UserWarning, match=r"cropped too tight: 80%"):
        validate_psf(gaussian_psf((3, 3), 1.0))
    with pytest.warns(UserWarning, match="cropped too tight"):
        validate_psf(gaussian_psf((5, 5, 5), 2.0))


def test_reference_and_model_psfs_pass_the_layout_checks():
    # Centred and well cropped: no error and no warning, including the defocused ring
    # (peak on the ring, mass in the middle) and the SSI stacks (focus half a plane off).
    psfs = [load_reference(name) for name in ("ssi_2d_17.npy", "gl_3d_17.npy", "gl_3d_31.npy")]
    psfs += [
        gibson_lanni_psf((17, 17), defocus=SSI_2D_DEFOCUS),
        gibson_lanni_psf((17, 17), defocus=-8.0),
        gibson_lanni_psf((17, 17, 17), defocus=SSI_3D_DEFOCUS),
        gibson_lanni_psf((9, 15, 15), numerical_aperture=1.0, pixel_size_z=0.2),
        gaussian_psf((9, 9), 1.5),
        gaussian_psf((5, 5), 1.0),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for psf in psfs:
            validate_psf(psf, normalize=True)


def test_center_psf_keeps_a_centred_psf():
    psf = gaussian_psf((7, 9, 11), (1.0, 1.5, 2.0))
    np.testing.assert_array_equal(center_psf(psf), psf.astype(np.float64))


# --------------------------------------------------------------------------- gaussian_psf


@pytest.mark.parametrize(
    "shape, sigma",
    [((17, 17), 1.5), ((9, 15), (1.0, 2.5)), ((7, 9, 11), (0.8, 1.3, 2.0)), ((5, 5, 5), 1.0)],
)
def test_gaussian_psf_matches_scipy_normal_pdf(shape, sigma):
    psf = gaussian_psf(shape, sigma)
    assert psf.shape == shape and psf.dtype == np.float32
    np.testing.assert_allclose(psf.sum(), 1.0, rtol=1e-6)
    # Independent reference: a product of scipy.stats.norm pdfs, renormalised.
    sig = np.broadcast_to(sigma, (len(shape),))
    ref = np.ones(())
    for size, s in zip(shape, sig, strict=True):
        ref = np.multiply.outer(ref, scipy.stats.norm.pdf(np.arange(size) - size // 2, scale=s))
    np.testing.assert_allclose(psf, ref / ref.sum(), rtol=1e-5, atol=1e-9)
    for axis in range(len(shape)):
        np.testing.assert_allclose(psf, np.flip(psf, axis), rtol=1e-6)
    assert np.unravel_index(np.argmax(psf), shape) == tuple(s // 2 for s in shape)
    validate_psf(psf, ndim=len(shape))


@pytest.mark.parametrize(
    "shape, sigma, match",
    [((4, 5), 1.0, "odd sizes"), ((5,), 1.0, "odd sizes"), ((5, 5), 0.0, "positive")],
)
def test_gaussian_psf_rejects_bad_arguments(shape, sigma, match):
    with pytest.raises(ValueError, match=match):
        gaussian_psf(shape, sigma)


# --------------------------------------------------------------------------- gibson_lanni_psf
#
# Tolerances vs the SSI reference files. With radial_oversampling=2 we follow the same
# sampling as the reference (radial profile every dxy/2, linear interpolation to the
# pixels) and agree to float32 round-off (measured: 0 for all three files, i.e. identical
# float32 values), so the test allows 1e-6 of the peak. The reference evaluates the pupil
# integral with Li-Xue-Blu's 100-term Fourier-Bessel series, we with Gauss-Legendre
# quadrature; the agreement shows the series is exact to float32 for these parameters.
# Evaluated exactly at each pixel (radial_oversampling=None) the model differs from the
# reference by 2.0 % (17³), 0.7 % (31³) and 3.1 % (2D) of the peak (correlation > 0.998):
# that is the reference's interpolation error on the steep central lobe.


@pytest.mark.parametrize("name, size", [("gl_3d_17.npy", 17), ("gl_3d_31.npy", 31)])
def test_gibson_lanni_matches_ssi_stacks(name, size):
    ref = load_reference(name)
    psf = gibson_lanni_psf((size,) * 3, defocus=SSI_3D_DEFOCUS)
    assert rel_max_error(psf, ref) < 1e-6
    assert correlation(psf, ref) > 1 - 1e-10
    # The SSI stack's focus lies between planes (N-2)/2 and N/2: equal twins, the argmax
    # (first of a tie) is plane 7 of 17 and 14 of 31.
    peaks = ref.max(axis=(1, 2))
    assert int(np.argmax(peaks)) == (size - 3) // 2
    np.testing.assert_allclose(peaks[(size - 3) // 2], peaks[(size - 1) // 2], rtol=1e-6)


def test_gibson_lanni_matches_ssi_2d_kernel():
    ref = load_reference("ssi_2d_17.npy")
    psf = gibson_lanni_psf((17, 17), defocus=SSI_2D_DEFOCUS)
    assert rel_max_error(psf, ref) < 1e-6
    assert correlation(psf, ref) > 1 - 1e-10
    # The kernel is the first plane of the stack, renormalised (intensity is even in z
    # for matched indices, so +3.045 µm gives it too).
    plane0 = gibson_lanni_psf((17, 17, 17), defocus=SSI_3D_DEFOCUS)[0]
    np.testing.assert_allclose(psf, plane0 / plane0.sum(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(gibson_lanni_psf((17, 17), defocus=-SSI_2D_DEFOCUS), psf)


@pytest.mark.parametrize(
    "name, shape, defocus, max_error",
    [
        ("gl_3d_17.npy", (17, 17, 17), SSI_3D_DEFOCUS, 0.025),
        ("gl_3d_31.npy", (31, 31, 31), SSI_3D_DEFOCUS, 0.01),
        ("ssi_2d_17.npy", (17, 17), SSI_2D_DEFOCUS, 0.035),
    ],
)
def test_gibson_lanni_exact_sampling_differs_only_by_interpolation(name, shape, defocus, max_error):
    ref = load_reference(name)
    exact = gibson_lanni_psf(shape, defocus=defocus, radial_oversampling=None)
    assert rel_max_error(exact, ref) < max_error
    assert correlation(exact, ref) > 0.998
    # Finer radial sampling converges to the exact evaluation.
    errors = [
        rel_max_error(gibson_lanni_psf(shape, defocus=defocus, radial_oversampling=s), exact)
        for s in (2, 8, 32)
    ]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 5e-4


def test_gibson_lanni_in_focus_is_the_airy_pattern():
    # Independent formula: with no aberration the in-focus plane is (2 J1(v) / v)², with
    # v = k NA' r and NA' = NA M / sqrt(M² + NA²) (Li et al.'s back-aperture radius).
    psf = gibson_lanni_psf((33, 33), radial_oversampling=None, normalize=False)
    na_lateral = 0.8 * 16 / np.hypot(16, 0.8)
    y, x = np.mgrid[:33, :33] - 16
    v = 2 * np.pi / 0.6 * na_lateral * 0.406 * np.hypot(y, x)
    airy = np.ones_like(v)
    airy[v > 0] = (2 * scipy.special.j1(v[v > 0]) / v[v > 0]) ** 2
    np.testing.assert_allclose(psf, airy, atol=1e-6)
    assert psf[16, 16] == pytest.approx(1.0, abs=1e-6)  # Strehl units


@pytest.mark.parametrize("shape", [(17, 17), (9, 21), (17, 17, 17), (11, 15, 15)])
def test_gibson_lanni_physical_properties(shape):
    psf = gibson_lanni_psf(shape)
    assert psf.shape == shape and psf.dtype == np.float32
    assert np.all(psf >= 0) and np.all(np.isfinite(psf))
    np.testing.assert_allclose(psf.sum(dtype=np.float64), 1.0, rtol=1e-6)
    validate_psf(psf, ndim=len(shape))
    # Rotational symmetry about the optical axis: mirror in y and x, transpose if square.
    np.testing.assert_array_equal(psf, np.flip(psf, -1))
    np.testing.assert_array_equal(psf, np.flip(psf, -2))
    if shape[-1] == shape[-2]:
        np.testing.assert_array_equal(psf, np.swapaxes(psf, -1, -2))
    # Centred: the peak is the middle voxel, and (matched indices: pure defocus, even in
    # z) the stack is mirror-symmetric about the middle plane.
    assert np.unravel_index(np.argmax(psf), shape) == tuple(s // 2 for s in shape)
    if len(shape) == 3:
        np.testing.assert_allclose(psf, psf[::-1], rtol=1e-5, atol=1e-10)
        assert np.all(np.diff(psf.sum(axis=(1, 2))[: shape[0] // 2 + 1]) > 0)


def test_gibson_lanni_aberration_terms_cancel_for_matched_indices():
    base = gibson_lanni_psf((9, 15, 15))
    same = gibson_lanni_psf(
        (9, 15, 15), working_distance=150.0, tg=190.0, tg0=190.0, particle_depth=25.0
    )
    np.testing.assert_allclose(same, base, rtol=1e-4, atol=1e-9)


def test_gibson_lanni_index_mismatch_shifts_focus_deeper():
    # Water objective into a denser sample (ns > ni) 20 µm deep: spherical aberration
    # breaks the z symmetry and the best focus lies beyond the nominal one (paraxially
    # at 20 µm · ns / ni, about 1.8 µm deeper).
    psf = gibson_lanni_psf(
        (41, 15, 15), ns=1.45, particle_depth=20.0, pixel_size_z=0.4, normalize=True
    )
    peak_plane = int(np.argmax(psf.max(axis=(1, 2))))
    assert 20 < peak_plane < 35
    assert not np.allclose(psf, psf[::-1], rtol=1e-2)


@pytest.mark.parametrize(
    "shape, kwargs, match",
    [
        ((16, 16), {}, "odd positive sizes"),
        ((17,), {}, "odd positive sizes"),
        ((17, 17), {"numerical_aperture": 0.0}, "numerical_aperture must be positive"),
        ((17, 17), {"wavelength": float("nan")}, "wavelength must be positive"),
        ((17, 17), {"defocus": float("inf")}, "defocus must be finite"),
        ((17, 17), {"tg": -1.0}, "tg is a thickness"),
        ((17, 17), {"radial_oversampling": 0}, "radial_oversampling"),
    ],
)
def test_gibson_lanni_rejects_bad_arguments(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gibson_lanni_psf(shape, **kwargs)
