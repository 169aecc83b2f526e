"""Training augmentation and TTA use only the rotations/flips that leave the PSF unchanged."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

import jdeconv
from jdeconv import regularized
from jdeconv.predict import make_predictor, predict
from jdeconv.psf import gaussian_psf
from jdeconv.symmetry import candidate_transforms, psf_symmetries
from jdeconv.train import sample_patch
from jdeconv.unet import UNetConfig, init_unet


def _z_skewed_psf(shape=(7, 7, 7)):
    """A 3D PSF symmetric in YX (all 8 symmetries of the square) but not along Z, like
    a widefield PSF with spherical aberration: its planes widen faster below focus."""
    z = np.arange(shape[0]) - shape[0] // 2
    yy, xx = np.mgrid[: shape[1], : shape[2]] - shape[1] // 2
    widths = np.where(z < 0, 0.8 + 0.6 * -z, 0.8 + 0.15 * z)
    psf = np.exp(-(yy**2 + xx**2)[None] / (2 * widths[:, None, None] ** 2))
    # Each plane's mass symmetric in Z (centred), its shape not.
    psf *= (np.exp(-(z**2) / 8.0) / psf.sum(axis=(1, 2)))[:, None, None]
    return (psf / psf.sum()).astype(np.float32)


def test_symmetries_of_model_and_measured_like_psfs():
    assert psf_symmetries(gaussian_psf((9, 9), 1.5)) == candidate_transforms(2)
    assert psf_symmetries(gaussian_psf((5, 9, 9), 1.5)) == candidate_transforms(3)
    skewed = psf_symmetries(_z_skewed_psf())
    assert len(skewed) == 8 and all(0 not in flips for _, flips in skewed)
    # An elongated PSF in a non-square crop: no quarter turns, both flips.
    assert psf_symmetries(gaussian_psf((9, 15), (1.0, 2.0))) == (
        (0, ()),
        (0, (0,)),
        (2, ()),
        (2, (0,)),
    )
    # Noise well below the tolerance does not remove a symmetry; a shifted centre does.
    noisy = gaussian_psf((9, 9), 1.5) * (1 + 0.01 * np.random.default_rng(0).normal(size=(9, 9)))
    assert len(psf_symmetries(noisy)) == 8
    off = np.roll(gaussian_psf((9, 9), 1.0), 1, axis=1)
    assert psf_symmetries(off) == ((0, ()), (0, (0,)))  # Y flips survive, X does not


def test_gibson_lanni_psfs_have_no_z_flip(shared_data):
    for name in ("gl_3d_17", "gl_3d_31"):
        psf = np.load(Path(shared_data) / "psf" / f"{name}.npy")
        kept = psf_symmetries(psf)
        assert len(kept) == 8 and all(0 not in flips for _, flips in kept), name


def test_sample_patch_draws_only_the_given_transforms():
    image = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 6)), jnp.float32)
    allowed = ((0, ()), (2, (1,)))
    ref = [np.asarray(image), np.flip(np.rot90(np.asarray(image), 2, axes=(1, 2)), 1)]
    seen = set()
    for i in range(24):
        patch = np.asarray(sample_patch(jax.random.key(i), image, (4, 6, 6), augment=allowed))
        matches = [j for j, r in enumerate(ref) if np.array_equal(patch, r)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1}
    # The full set as a sequence draws exactly as augment=True (results of symmetric PSFs
    # do not change).
    full = candidate_transforms(3)
    for i in range(8):
        key = jax.random.key(100 + i)
        a = sample_patch(key, image, (4, 6, 6), augment=full)
        np.testing.assert_array_equal(a, sample_patch(key, image, (4, 6, 6)))


def test_tta_with_given_transforms_averages_those_copies():
    graphdef, params = init_unet(0, UNetConfig(ndim=3, depth=1, base_channels=4, norm="none"))
    net = make_predictor(graphdef)
    x = np.random.default_rng(2).normal(size=(8, 8, 8)).astype(np.float32)
    allowed = ((0, ()), (1, ()), (0, (1,)))
    want = np.zeros(x.shape)
    for k, flips in allowed:
        y = np.rot90(x, k, axes=(1, 2))
        y = np.flip(y, flips) if flips else y
        out = np.asarray(net(params, jnp.asarray(np.ascontiguousarray(y))), np.float64)
        out = np.flip(out, flips) if flips else out
        want += np.rot90(out, -k, axes=(1, 2)) / len(allowed)
    got = predict(net, params, x, multiple=2, tta=allowed)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tta", [True, False])
def test_anchored_3d_fit_with_a_z_skewed_psf_returns_the_classical_solution(tta):
    # With TTA over Z flips the anchor deconvolved flipped copies with the unflipped PSF,
    # and step 0 was no longer the non-negative Tikhonov solution.
    psf = _z_skewed_psf()
    rng = np.random.default_rng(3)
    truth = np.zeros((16, 24, 24))
    truth[tuple(rng.integers(3, n - 3, 12) for n in truth.shape)] = 1.0
    noisy = np.clip(ndi.convolve(truth, psf) + 0.01 * rng.normal(size=truth.shape), 0, None)
    cfg = jdeconv.Config.default(
        3, steps=1, patch_size=16, patch_size_z=16, batch_size=1, validate_every=1, tta=tta
    ).replace(selection_z=1e9)  # nothing trained can be significantly better: step 0
    result = jdeconv.fit(noisy.astype(np.float32), psf, cfg, verbose=False)
    assert result.best_step == 0
    net = result.model.config.network
    want = regularized.nonnegative_tikhonov(noisy, psf, weight=net.anchor_weight, sparsity="auto")
    np.testing.assert_allclose(result.deconvolved, want, atol=2e-3 * np.ptp(want))


def test_anchored_3d_fit_with_a_gibson_lanni_psf_returns_the_classical_solution(shared_data):
    # FISTA inside the network started from the truncated Tikhonov filter: with this
    # axially long PSF its 50 steps ended 0.63 dB short of the classical solution on
    # quality3d's filament volume (24.93 against 25.56 dB); it now starts from the
    # classical function's own start, the linear solution on its grid.
    psf = np.load(Path(shared_data) / "psf" / "gl_3d_17.npy")
    key = jax.random.fold_in(jax.random.key(0), 2000)  # quality3d.ground_truth("filaments")
    truth = np.asarray(jdeconv.simulate.filaments_3d(key, (32, 96, 96), count=12), np.float64)
    truth = ((truth - truth.min()) / (truth.max() - truth.min())).astype(np.float32)
    noise = dict(alpha=0.001, sigma=0.1, salt_pepper=0.0, bits=10)
    noise_key = jax.random.fold_in(jax.random.key(0), 1)  # its first case
    noisy = jdeconv.simulate.degrade(noise_key, truth, psf, normalize=False, **noise)
    noisy = np.asarray(noisy, np.float32)
    cfg = jdeconv.Config.default(3, steps=1, validate_every=1, tta=False).replace(selection_z=1e9)
    result = jdeconv.fit(noisy, psf, cfg, verbose=False)
    assert result.best_step == 0
    classical = regularized.nonnegative_tikhonov(noisy, psf, sparsity="auto")
    got = jdeconv.metrics.psnr(truth, result.deconvolved, data_range=1.0)
    want = jdeconv.metrics.psnr(truth, classical, data_range=1.0)
    assert abs(got - want) < 0.01, (got, want)
