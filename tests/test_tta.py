"""Batched test-time augmentation: equal to one network call per transformed copy."""

import jax.numpy as jnp
import numpy as np
import pytest

from jdeconv import predict as predict_module
from jdeconv.predict import make_predictor, predict
from jdeconv.unet import UNetConfig, init_unet


def _reference_tta(net, params, x):
    # Independent of jdeconv's transforms: numpy rot90/flip, one network call per copy,
    # accumulated in float64.
    flip_sets = [(), (0,)] if x.ndim == 2 else [(), (0,), (1,), (0, 1)]
    total = np.zeros(x.shape)
    for k in range(4):
        for flips in flip_sets:
            y = np.rot90(x, k, axes=(-2, -1))
            y = np.flip(y, flips) if flips else y
            out = np.asarray(net(params, jnp.asarray(np.ascontiguousarray(y))), np.float64)
            out = np.flip(out, flips) if flips else out
            total += np.rot90(out, -k, axes=(-2, -1))
    return total / (4 * len(flip_sets))


@pytest.mark.parametrize("shape", [(16, 16), (13, 19), (8, 16, 16), (8, 8, 16)], ids=str)
@pytest.mark.parametrize("max_batch", [None, 2, 1])
def test_batched_tta_equals_one_call_per_copy(shape, max_batch):
    graphdef, params = init_unet(
        0, UNetConfig(ndim=len(shape), depth=1, base_channels=4, norm="group", groups=2)
    )
    net = make_predictor(graphdef)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = _reference_tta(net, params, x)
    got = predict(net, params, x, multiple=2, tta=True, max_batch=max_batch)
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_batched_tta_in_tiles_equals_whole():
    graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=2, base_channels=4, norm="none"))
    net = make_predictor(graphdef)
    x = np.random.default_rng(1).normal(size=(72, 88)).astype(np.float32)
    whole = predict(net, params, x, multiple=4, tta=True)
    tiled = predict(net, params, x, multiple=4, tta=True, tile_size=64, halo=24, blend=8)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4)


def test_batch_size_follows_the_memory_budget(monkeypatch):
    assert predict_module._tta_batch(8, 512 * 512, None) == 8
    assert predict_module._tta_batch(16, 32 * 128 * 128, None) == 8
    assert predict_module._tta_batch(16, 64 * 512 * 512, None) == 1  # large: one per call
    assert predict_module._tta_batch(8, 16, 6) == 4  # a power of two: one batch shape
    monkeypatch.setattr(predict_module, "TTA_BATCH_VOXELS", 3 * 256)
    assert predict_module._tta_batch(8, 256, None) == 2


def test_bad_max_batch_is_rejected():
    graphdef, params = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="max_batch"):
            predict(make_predictor(graphdef), params, np.zeros((8, 8)), tta=True, max_batch=bad)


def test_deconvolve_reports_voxels_per_second():
    import jdeconv
    from jdeconv.psf import gaussian_psf

    cfg = jdeconv.Config(depth=1, base_channels=4, patch_size=8, tta=True)
    _, params = init_unet(0, cfg.unet(2))
    model = jdeconv.FittedModel(params, cfg, 2, gaussian_psf((3, 3), 1.0))
    image = np.random.default_rng(0).random((16, 24))
    out, timings = jdeconv.deconvolve(image, model, return_timings=True)
    np.testing.assert_array_equal(out, jdeconv.deconvolve(image, model))
    assert timings["seconds"] > 0
    assert timings["voxels_per_second"] == pytest.approx(image.size / timings["seconds"])
