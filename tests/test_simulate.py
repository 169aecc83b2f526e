"""Tests for jdeconv.simulate: degradation model and filament phantoms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jdeconv import simulate
from jdeconv.forward import ForwardModel
from jdeconv.psf import gaussian_psf

NO_NOISE = dict(alpha=0.0, sigma=0.0, salt_pepper=0.0, bits=None, clip=False)


def _clean(shape, seed=0):
    return np.random.default_rng(seed).random(shape) * 7.0 + 3.0


def test_normalize_minmax():
    x = np.array([[2.0, 4.0], [3.0, 6.0]])
    out = simulate.normalize_minmax(x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, (x - 2) / 4, rtol=1e-6)
    assert float(jnp.max(simulate.normalize_minmax(np.ones((3, 3))))) == 0.0
    jitted = jax.jit(simulate.normalize_minmax)(x)
    np.testing.assert_array_equal(jitted, out)


@pytest.mark.parametrize("shape,psf_shape", [((40, 33), (7, 7)), ((12, 20, 17), (5, 5, 3))])
def test_noise_free_degrade_is_normalised_zero_fill_blur(shape, psf_shape):
    # Reference: scipy.signal.convolve(mode="same") fills with zeros, as the papers did.
    clean = _clean(shape)
    psf = gaussian_psf(psf_shape, 1.2)
    out = simulate.degrade(jax.random.key(0), clean, psf, **NO_NOISE)
    normalised = (clean - clean.min()) / np.ptp(clean)
    expected = scipy.signal.convolve(normalised, psf.astype(np.float64), mode="same")
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, expected, atol=2e-6)
    # Without normalisation the image is blurred as it is.
    raw = simulate.degrade(jax.random.key(0), clean, psf, normalize=False, **NO_NOISE)
    np.testing.assert_allclose(raw, scipy.signal.convolve(clean, psf, mode="same"), rtol=1e-5)


def test_reproducible_and_key_dependent():
    clean = _clean((32, 32))
    psf = gaussian_psf((5, 5), 1.0)
    a = simulate.degrade(jax.random.key(3), clean, psf)
    b = simulate.degrade(jax.random.key(3), clean, psf)
    c = simulate.degrade(jax.random.key(4), clean, psf)
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.5
    # Legacy uint32 keys work too.
    d = simulate.degrade(jax.random.PRNGKey(3), clean, psf)
    np.testing.assert_array_equal(d, simulate.degrade(jax.random.PRNGKey(3), clean, psf))


def test_default_output_range_and_levels():
    clean = _clean((64, 64))
    out = simulate.degrade(jax.random.key(0), clean, gaussian_psf((9, 9), 2.0))
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # 10-bit quantisation: every value is k / 1023 for an integer k.
    k = out.astype(np.float64) * 1023
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)


@pytest.mark.parametrize("alpha,sigma", [(0.001, 0.1), (0.05, 0.01), (0.0, 0.2)])
def test_poisson_gaussian_statistics(alpha, sigma):
    # Two constant halves: the per-half std must be sqrt(alpha x + sigma²).
    x = np.zeros((256, 512), np.float32)
    x[:, :256] = 0.2
    x[:, 256:] = 0.8
    y = np.asarray(
        simulate.add_noise(
            jax.random.key(1), x, alpha=alpha, sigma=sigma, salt_pepper=0.0, bits=None, clip=False
        )
    )
    for value, part in ((0.2, y[:, :256]), (0.8, y[:, 256:])):
        expected = np.sqrt(alpha * value + sigma**2)
        # 65536 samples: the std estimate has a relative error of ~0.3 %.
        assert part.std() == pytest.approx(expected, rel=0.02)
        assert part.mean() == pytest.approx(value, abs=4 * expected / 256)


def test_negative_variance_is_clipped_not_nan():
    y = simulate.add_noise(
        jax.random.key(0), -np.ones((8, 8)), alpha=1.0, sigma=0.1, bits=None, clip=False
    )
    assert np.all(np.isfinite(np.asarray(y)))


@pytest.mark.parametrize("fraction", [0.01, 0.2])
def test_salt_and_pepper_fraction(fraction):
    x = np.full((256, 256), 0.3, np.float32)
    y = np.asarray(
        simulate.add_noise(
            jax.random.key(2), x, alpha=0.0, sigma=0.0, salt_pepper=fraction, bits=None, clip=False
        )
    )
    replaced = y != np.float32(0.3)
    n = x.size
    assert abs(replaced.sum() - fraction * n) < 4 * np.sqrt(n * fraction * (1 - fraction))
    # Replacements are Uniform(0, 1): mean 1/2, all in [0, 1).
    assert y[replaced].min() >= 0 and y[replaced].max() < 1
    assert y[replaced].mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("bits", [1, 4, 10])
def test_quantisation_levels(bits):
    x = np.linspace(0, 1, 4096, dtype=np.float32).reshape(64, 64)
    y = np.asarray(simulate.add_noise(jax.random.key(0), x, sigma=0.05, bits=bits))
    levels = 2**bits - 1
    n_unique = len(np.unique(y))
    assert n_unique <= levels + 1
    if bits <= 4:
        assert n_unique == levels + 1  # a ramp with noise reaches every level
    np.testing.assert_allclose(y * levels, np.round(y * levels), atol=1e-3)


def test_clip_flag():
    x = np.full((64, 64), 0.5, np.float32)
    noisy = dict(alpha=0.0, sigma=1.0, salt_pepper=0.0, bits=None)
    unclipped = np.asarray(simulate.add_noise(jax.random.key(0), x, clip=False, **noisy))
    clipped = np.asarray(simulate.add_noise(jax.random.key(0), x, clip=True, **noisy))
    assert unclipped.min() < 0 and unclipped.max() > 1
    np.testing.assert_array_equal(clipped, np.clip(unclipped, 0, 1))


def test_add_noise_jit_vmap_and_traced_parameters():
    x = jnp.asarray(_clean((16, 16)) / 10)
    key = jax.random.key(5)
    eager = simulate.add_noise(key, x)
    jitted = jax.jit(simulate.add_noise, static_argnames=("bits",))(key, x, clip=True)
    # Same draws; XLA may fold the constant quantisation step differently (1 ulp).
    np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-7)
    # Noise levels may be traced (e.g. swept under vmap).
    sweep = jax.vmap(lambda s: simulate.add_noise(key, x, sigma=s, bits=None, clip=False))
    out = sweep(jnp.array([0.0, 0.1]))
    np.testing.assert_allclose(out[0], simulate.add_noise(key, x, sigma=0.0, bits=None, clip=False))
    assert float(jnp.std(out[1] - x)) > 0.05
    # Batched over keys: independent noise per image.
    keys = jax.random.split(key, 3)
    batch = jax.vmap(lambda k: simulate.add_noise(k, x))(keys)
    assert batch.shape == (3, 16, 16) and not np.array_equal(batch[0], batch[1])


def test_degrade_without_psf_and_other_paddings():
    clean = _clean((24, 24))
    out = simulate.degrade(jax.random.key(0), clean, None, **NO_NOISE)
    np.testing.assert_allclose(out, (clean - clean.min()) / np.ptp(clean), atol=1e-6)
    # Reflect padding keeps a constant image constant, zero fill darkens its border.
    flat = np.full((24, 24), 0.5)
    psf = gaussian_psf((5, 5), 1.0)
    kw = dict(normalize=False, **NO_NOISE)
    reflect = simulate.degrade(jax.random.key(0), flat, psf, padding="reflect", **kw)
    zero = simulate.degrade(jax.random.key(0), flat, psf, padding="zero", **kw)
    np.testing.assert_allclose(reflect, 0.5, atol=1e-6)
    assert zero[0, 0] < 0.4


def test_degrade_errors():
    key = jax.random.key(0)
    psf = gaussian_psf((5, 5), 1.0)
    with pytest.raises(ValueError, match="constant"):
        simulate.degrade(key, np.ones((16, 16)), psf)
    with pytest.raises(ValueError, match="2D"):
        simulate.degrade(key, np.ones(16), None)
    bad = _clean((16, 16))
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        simulate.degrade(key, bad, psf)
    with pytest.raises(ValueError, match="rank"):
        simulate.degrade(key, _clean((8, 16, 16)), psf)
    with pytest.raises(ValueError, match="salt_pepper"):
        simulate.degrade(key, _clean((16, 16)), psf, salt_pepper=1.5)
    with pytest.raises(ValueError, match="bits"):
        simulate.degrade(key, _clean((16, 16)), psf, bits=0)
    with pytest.raises(ValueError, match="alpha"):
        simulate.degrade(key, _clean((16, 16)), psf, alpha=-1.0)
    with pytest.raises(TypeError):
        simulate.degrade(key, _clean((16, 16)), psf, 0.001)  # keyword-only


@pytest.mark.parametrize("shape,count", [((16, 32, 24), 3), ((64, 128, 128), 30)])
def test_filaments_3d_shape_range_and_sparsity(shape, count):
    vol = simulate.filaments_3d(jax.random.key(0), shape, count=count)
    assert vol.shape == shape and vol.dtype == np.float32
    assert vol.min() >= 0.0 and vol.max() <= 1.0
    # Sparse thin tubes: mostly background, yet bright along the filaments.
    assert 0.001 < np.mean(vol > 0.1) < 0.2
    assert vol.max() > 0.5


def test_filaments_reproducible_count_and_thickness():
    key = jax.random.key(7)
    shape = (24, 48, 48)
    a = simulate.filaments_3d(key, shape, count=6)
    np.testing.assert_array_equal(a, simulate.filaments_3d(key, shape, count=6))
    assert not np.array_equal(a, simulate.filaments_3d(jax.random.key(8), shape, count=6))
    assert np.all(simulate.filaments_3d(key, shape, count=0) == 0)
    # More filaments and thicker tubes fill more of the volume.
    more = simulate.filaments_3d(key, shape, count=24)
    thick = simulate.filaments_3d(key, shape, count=6, thickness=2.5)
    assert np.mean(more > 0.1) > 2 * np.mean(a > 0.1)
    assert np.mean(thick > 0.1) > 2 * np.mean(a > 0.1)


def test_filament_profile_is_gaussian_with_requested_brightness():
    # A single nearly straight filament: the cross-section across it must be a Gaussian of
    # the requested sigma, peaking near the drawn brightness.
    img = simulate.filaments_2d(
        jax.random.key(0),
        (96, 96),
        count=1,
        thickness=2.0,
        persistence=1e6,
        intensity_range=(0.8, 0.8),
    )
    assert img.max() == pytest.approx(0.8, rel=0.1)
    # Mass per unit length of a Gaussian line of peak p: p * sqrt(2 pi) sigma. Summing
    # over the image and dividing by the peak gives the visible length times that width.
    ys, xs = np.nonzero(img > 0.4)
    length = np.hypot(np.ptp(ys), np.ptp(xs))
    width = img.sum() / (0.8 * length)
    assert width == pytest.approx(np.sqrt(2 * np.pi) * 2.0, rel=0.15)


def test_filaments_2d_and_errors():
    img = simulate.filaments_2d(jax.random.key(1), (64, 80), count=5)
    assert img.shape == (64, 80) and img.dtype == np.float32
    assert 0 <= img.min() and img.max() <= 1
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="3D"):
        simulate.filaments_3d(key, (32, 32))
    with pytest.raises(ValueError, match="2D"):
        simulate.filaments_2d(key, (8, 32, 32))
    with pytest.raises(ValueError, match="thickness"):
        simulate.filaments_3d(key, (8, 16, 16), thickness=0.0)
    with pytest.raises(ValueError, match="count"):
        simulate.filaments_3d(key, (8, 16, 16), count=-1)
    with pytest.raises(ValueError, match="intensity_range"):
        simulate.filaments_3d(key, (8, 16, 16), intensity_range=(0.5, 1.5))


def test_new_psf_of_the_same_shape_reuses_the_compiled_blur(monkeypatch):
    # The blur takes the forward model as an argument: a second PSF of the same shape
    # does not trace it again. Tracing calls ForwardModel.__call__; count those calls.
    calls = []
    blur = ForwardModel.__call__

    def counted(self, z):
        calls.append(self.shape)
        return blur(self, z)

    monkeypatch.setattr(ForwardModel, "__call__", counted)
    clean = _clean((27, 22))  # a shape no other test uses
    first = simulate.degrade(jax.random.key(0), clean, gaussian_psf((5, 5), 1.0), **NO_NOISE)
    assert len(calls) == 1
    second = simulate.degrade(jax.random.key(0), clean, gaussian_psf((5, 5), 2.0), **NO_NOISE)
    assert len(calls) == 1
    expected = scipy.signal.convolve(
        (clean - clean.min()) / np.ptp(clean), gaussian_psf((5, 5), 2.0), mode="same"
    )
    np.testing.assert_allclose(second, expected, atol=2e-6)
    assert not np.allclose(first, second)
