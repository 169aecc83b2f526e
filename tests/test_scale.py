"""Bounded-memory training (jdeconv.sampling) and blockwise reblurring on tiny data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv.forward import make_forward
from jdeconv.psf import gaussian_psf
from jdeconv.sampling import (
    BOUNDED_TRAINING_VOXELS,
    RegionSampler,
    RegionSampling,
    patch_corners,
    use_regions,
)
from jdeconv.stages import reconvolve


class Recorder:
    """An array that records every slice read from it (what a lazy store would load)."""

    def __init__(self, data):
        self.data, self.reads = data, []

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


def _slice_shape(index):
    return tuple(s.stop - s.start for s in index)


@pytest.mark.parametrize("shape,patch", [((300, 260), (16, 16)), ((40, 200, 180), (8, 16, 16))])
def test_sampler_reads_only_the_coming_patches(shape, patch):
    image = Recorder((np.random.default_rng(0).random(shape) * 1000).astype(np.uint16))
    settings = RegionSampling(refresh_every=3)
    sampler = RegionSampler(
        image,
        patch,
        offset=500.0,
        scale=300.0,
        key=jax.random.key(1),
        batch_size=4,
        validation_key=jax.random.key(2),
        validation_fraction=0.05,
        settings=settings,
    )
    # Construction reads the validation window once, and nothing else.
    assert [_slice_shape(r) for r in image.reads] == [_slice_shape(sampler.window)]
    image.reads.clear()
    for refresh in range(4):
        stack = sampler.regions(refresh)
        assert stack.shape == (3 * 4, *patch) and stack.dtype == np.float32
        reads, image.reads = image.reads, []
        # One read per patch of the 3 coming steps, at its corner, inside the image.
        assert [tuple(s.start for s in r) for r in reads] == [
            tuple(c) for c in sampler.corners(refresh)
        ]
        assert all(_slice_shape(r) == tuple(patch) for r in reads)
        assert all(
            0 <= s.start and s.stop <= n for r in reads for s, n in zip(r, shape, strict=True)
        )
        assert sum(np.prod(_slice_shape(r)) for r in reads) == sampler.voxels < image.data.size
    assert not np.array_equal(sampler.corners(0), sampler.corners(1))
    np.testing.assert_array_equal(sampler.corners(2), sampler.corners(2))


def test_corners_are_those_the_train_step_draws():
    # The step draws patch j of step t with fold_in(key, t), the first half of its keys,
    # and sample_patch's crop key: an unaugmented sample_patch reveals the corner.
    from jdeconv.train import sample_patch

    key, batch, shape, patch = jax.random.key(3), 3, (40, 30), (8, 8)
    image = jnp.arange(40 * 30, dtype=jnp.float32).reshape(shape)
    corners = patch_corners(key, [0, 5], shape, patch, batch_size=batch)
    for row, step in enumerate([0, 5]):
        keys = jnp.split(jax.random.split(jax.random.fold_in(key, step), 2 * batch), 2)[0]
        for j, k in enumerate(keys):
            crop = np.asarray(sample_patch(k, image, patch, augment=False))
            y, x = corners[row, j]
            np.testing.assert_array_equal(crop, np.asarray(image[y : y + 8, x : x + 8]))


def test_held_out_pixels_never_reach_training():
    data = np.random.default_rng(0).random((96, 96)) * 100
    sampler = RegionSampler(
        data,
        (32, 32),
        offset=0.0,
        scale=1.0,
        key=jax.random.key(0),
        batch_size=8,
        validation_key=jax.random.key(1),
        validation_fraction=0.2,
        settings=RegionSampling(refresh_every=2),
    )
    x_train, x, held = sampler.validation()
    assert held.any() and np.array_equal(x, data.astype(np.float32))
    hidden = 0
    for refresh in range(3):
        for corner, crop in zip(sampler.corners(refresh), sampler.regions(refresh), strict=True):
            y, xx = (slice(int(c), int(c) + 32) for c in corner)
            # Every held-out pixel inside a crop carries the hidden (training) value.
            mask = held[y, xx]
            np.testing.assert_array_equal(crop[mask], x_train[y, xx][mask])
            assert not np.any(crop[mask] == x[y, xx][mask])
            hidden += int(mask.sum())
    assert hidden > 0


def test_use_regions_threshold_and_choices():
    assert not use_regions(np.zeros((64, 64)), None)
    big = np.lib.stride_tricks.as_strided(np.zeros(1), (BOUNDED_TRAINING_VOXELS + 1,), (0,))
    assert use_regions(big, None)
    assert use_regions(np.zeros((8, 8)), RegionSampling())
    assert not use_regions(big, "whole")
    with pytest.raises(ValueError, match="sampling must be"):
        use_regions(np.zeros((8, 8)), "tiles")
    with pytest.raises(ValueError, match="refresh_every"):
        RegionSampling(refresh_every=0)


@pytest.mark.parametrize("shape", [(37, 29), (23, 20, 18)])
def test_reconvolve_in_slabs_equals_the_whole_blur(shape):
    # Reference: the forward model applied to the whole image at once.
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    psf = gaussian_psf((5,) * len(shape), 1.2)
    whole = np.asarray(make_forward(psf, shape)(jnp.asarray(x)))
    slabbed = reconvolve(x, psf, slab_voxels=1)  # slabs of the PSF's depth
    np.testing.assert_allclose(slabbed, whole, rtol=0, atol=1e-5)


def test_blur_dask_equals_the_whole_blur():
    da = pytest.importorskip("dask.array")
    from jdeconv.lazy import blur_dask

    x = np.random.default_rng(1).random((30, 41)).astype(np.float32)
    psf = gaussian_psf((7, 7), 1.5)
    whole = np.asarray(make_forward(psf, x.shape)(jnp.asarray(x)))
    lazy = blur_dask(da.from_array(x, chunks=(10, 9)), psf)
    np.testing.assert_allclose(lazy.compute(scheduler="sync"), whole, rtol=0, atol=1e-5)


def _tiny_cfg(**changes):
    return jdeconv.Config(
        steps=6,
        batch_size=2,
        patch_size=16,
        depth=2,
        base_channels=4,
        tta=False,
        tile_halo=28,
        **changes,
    )


@pytest.mark.parametrize("fraction", [0.0, 0.05])
def test_region_training_is_whole_array_training(fraction):
    # The two see the same patches, masks, augmentations and held-out pixels: the same
    # losses and images up to the float rounding of the statistics.
    image = (np.random.default_rng(0).random((64, 72)) * 1000).astype(np.uint16)
    psf = gaussian_psf((5, 5), 1.0)
    cfg = _tiny_cfg(validation_fraction=fraction, validate_every=3)
    whole = jdeconv.fit(image, psf, cfg, verbose=False, sampling="whole")
    regions = jdeconv.fit(image, psf, cfg, verbose=False, sampling=RegionSampling(refresh_every=4))
    np.testing.assert_allclose(regions.history["loss"], whole.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(regions.history["val_loss"], whole.history["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(regions.deconvolved, whole.deconvolved, rtol=1e-4, atol=1e-2)


def test_fit_from_regions_numpy_and_dask_agree_and_train(monkeypatch):
    da = pytest.importorskip("dask.array")
    read = []
    original = RegionSampler.regions

    def regions(self, refresh):
        read.append(refresh)
        return original(self, refresh)

    monkeypatch.setattr(RegionSampler, "regions", regions)
    image = (np.random.default_rng(0).random((64, 72)) * 1000).astype(np.uint16)
    psf = gaussian_psf((5, 5), 1.0)
    cfg = _tiny_cfg(validate_every=3)
    sampling = RegionSampling(refresh_every=2)
    eager = jdeconv.fit(image, psf, cfg, verbose=False, sampling=sampling)
    assert read == [0, 1, 2]  # 6 steps, a new set every 2: each set read once, in order
    lazy = jdeconv.fit(da.from_array(image, chunks=32), psf, cfg, verbose=False, sampling=sampling)
    assert isinstance(lazy.deconvolved, da.Array) and lazy.timings["voxels_per_second"] is None
    np.testing.assert_allclose(lazy.history["loss"], eager.history["loss"], rtol=1e-5)
    assert len(eager.history["val_loss"]) == 2
    np.testing.assert_allclose(lazy.deconvolved.compute(), eager.deconvolved, atol=1e-2)
    np.testing.assert_allclose(lazy.reconvolved.compute(), eager.reconvolved, atol=1e-2)
    assert eager.deconvolved.shape == image.shape and eager.deconvolved.dtype == np.float32
