"""Real data sizes: the memory budget; tiled inference holds O(one tile) besides its result."""

import re
import tracemalloc

import numpy as np
import pytest

import jdeconv
from jdeconv.predict import (
    _fft_friendly,
    _windows,
    choose_tile_size,
    fft_extension,
    make_predictor,
    memory_budget,
    parse_bytes,
    predict,
    tile_bytes_per_pixel,
)
from jdeconv.psf import gaussian_psf
from jdeconv.unet import UNetConfig, init_unet

# A depth-1 U-Net sees 10 pixels on each side (measured: the response to one bright pixel
# spreads -9..+10), so a halo of 12 makes tiles and blocks exact.
HALO = 12


def _model(ndim, *, depth=1, halo=HALO):
    cfg = jdeconv.Config(
        depth=depth,
        base_channels=4,
        patch_size=8,
        patch_size_z=8,
        norm="none",
        tta=False,
        tile_halo=halo,
    )
    params = init_unet(0, cfg.unet(ndim))[1]
    return jdeconv.FittedModel(params, cfg, ndim, gaussian_psf((3,) * ndim, 1.0))


def _raw(shape, seed=0):
    return (np.random.default_rng(seed).random(shape) * 4000 + 100).astype(np.uint16)


# ----------------------------------------------------------------------------- budget


def test_parse_bytes():
    assert parse_bytes("2GB") == parse_bytes("2 GiB") == 2 * 2**30
    assert parse_bytes("1.5k") == 1536 and parse_bytes(100) == 100
    for bad, message in (
        ("lots", "cannot read 'lots' as a memory size; write e.g. '512MB'"),
        ("-1GB", "must be positive, got '-1GB'"),
        (0, "must be positive, got 0"),
        (True, "must be bytes or a string like '2GB', got True"),
        (None, "must be bytes or a string like '2GB', got None"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_bytes(bad)
    assert memory_budget(max_memory="64MB") == 2**26 and memory_budget() > 0


def test_default_budget_does_not_follow_small_changes_of_free_memory(monkeypatch):
    # An eighth of the available RAM, rounded down to a power of two: the tiles (and an
    # anchor's last digits) stay the same whether 18 or 31 GB are free.
    from jdeconv import predict as p

    monkeypatch.setattr(p, "_free_device_memory", lambda: None)
    budgets = set()
    for available in (18e9, 21.5e9, 31e9):
        monkeypatch.setattr(p, "_available_host_memory", lambda a=available: int(a))
        budgets.add(memory_budget())
    assert budgets == {2 * 2**30}
    monkeypatch.setattr(p, "_available_host_memory", lambda: int(40e9))
    assert memory_budget() == 4 * 2**30
    monkeypatch.setattr(p, "_free_device_memory", lambda: int(70e9))  # an accelerator
    assert memory_budget() == 32 * 2**30


@pytest.mark.parametrize("shape", [(32, 1024, 1024), (3000, 2000), (100, 70, 90)])
@pytest.mark.parametrize("budget", [2**24, 2**28])
def test_tile_size_fits_the_budget(shape, budget):
    bpp, multiple, halo, blend = 500, 8, 24, 16
    kw = dict(multiple=multiple, halo=halo, blend=blend, bytes_per_pixel=bpp)
    tile = choose_tile_size(shape, budget=budget, **kw)
    if tile is None:  # the whole image fits
        assert np.prod(shape) * bpp <= budget
        return
    assert tile % multiple == 0
    held = np.prod([min(tile, n + (-n) % multiple) for n in shape])
    assert held * bpp <= budget or tile == 2 * halo + blend + multiple
    bigger = np.prod([min(tile + multiple, n + (-n) % multiple) for n in shape])
    assert bigger * bpp > budget or tile + multiple > max(shape)
    # More memory never means smaller tiles.
    larger = choose_tile_size(shape, budget=4 * budget, **kw)
    assert larger is None or larger >= tile


def test_tile_size_prefers_fft_friendly_anchor_grids():
    # The default 3D network on a 16x1024² volume: the largest window that fits 2.6 GiB
    # is 448 (grid 448 + 34 = 482 = 2·241 in YX); with the anchor's extension it takes
    # the largest smaller one whose grid has no prime factor above 7 (416 + 34 = 450).
    kw = dict(multiple=8, halo=64, blend=0, budget=int(2.6 * 2**30), bytes_per_pixel=856)
    plain = choose_tile_size((16, 1024, 1024), **kw)
    assert plain == 448
    net = UNetConfig(
        ndim=3, anchor_shape=(69,) * 3, anchor_psf_shape=(7, 17, 17), anchor_weight=1.0
    )
    ext = fft_extension(net)
    assert ext == (14, 34, 34)
    friendly = choose_tile_size((16, 1024, 1024), fft_extension=ext, **kw)
    assert friendly == 416 and _fft_friendly(friendly + 34) and not _fft_friendly(plain + 34)
    assert [_fft_friendly(n) for n in (450, 480, 490, 482, 458)] == [True] * 3 + [False] * 2
    # No extension: no change. No friendly size within 3/4 of the largest: the largest
    # (here the only one, 24, with a grid of 24 + 13 = 37).
    assert choose_tile_size((16, 1024, 1024), fft_extension=(0, 0, 0), **kw) == plain
    small = dict(kw, halo=8, budget=16 * 24 * 24 * 856)
    assert choose_tile_size((16, 1024, 1024), fft_extension=(14, 13, 13), **small) == 24


@pytest.mark.parametrize("n,window,halo,blend", [(100, 40, 8, 8), (75, 30, 4, 12), (9, 30, 4, 8)])
def test_blend_weights_sum_to_one(n, window, halo, blend):
    # With the weights summing to one along each axis, tiles are added straight into the
    # result (no array of weight totals, no division at the end).
    total = np.zeros(n)
    for _, c0, c1, w in _windows(n, 2, window, halo, blend):
        total[c0:c1] += w
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------- memory


def _peak_numpy_bytes(fn):
    """Peak of the bytes allocated through Python's allocator (NumPy arrays included)
    while ``fn`` runs, above what was allocated before; XLA's buffers are not counted."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


def test_tiled_inference_memory_is_bounded_by_a_few_tiles():
    model = _model(2)
    image = _raw((1024, 1024))  # 2 MiB as uint16; 8 MiB as float64
    max_memory = "4MB"
    window = choose_tile_size(
        image.shape,
        multiple=2,
        halo=HALO,
        blend=16,
        budget=parse_bytes(max_memory),
        bytes_per_pixel=tile_bytes_per_pixel(model.config.unet(2)),
    )
    assert window is not None and window < 400  # the budget forces tiling
    # Compile every tile shape first: Python's allocations while tracing count in the
    # peak (a 64² warm-up left the edge tiles' compilation inside the measurement, and a
    # CI run measured 5 KB over the bound).
    jdeconv.deconvolve(image, model, max_memory=max_memory)

    out, peak = _peak_numpy_bytes(lambda: jdeconv.deconvolve(image, model, max_memory=max_memory))
    assert out.shape == image.shape and out.dtype == np.float32
    tile64 = window**2 * 8  # one window as float64
    # The float32 result plus a few windows: no full-size float64 image or accumulator
    # (the previous code peaked above 5 float64 images' worth here).
    assert peak < out.nbytes + 6 * tile64, (peak, out.nbytes, tile64)
    assert peak < image.size * 8

    # The same through predict on a standardised image held by the caller.
    net = make_predictor(model.graphdef)
    x = np.random.default_rng(1).normal(size=(512, 512)).astype(np.float32)

    def run():
        return predict(net, model.params, x, multiple=2, tile_size=128, halo=HALO)

    run()  # compile first, as above
    y, peak = _peak_numpy_bytes(run)
    assert peak < y.nbytes + 6 * 128**2 * 8, peak


def test_streamed_standardisation_matches_whole_and_old_frame():
    # Standardising per tile gives what standardising the whole image in float64 gave.
    model = _model(2)
    image = _raw((70, 90))
    arr = image.astype(np.float64)
    offset, scale = float(arr.mean()), float(arr.std())
    x = ((arr - offset) / scale).astype(np.float32)
    reference = jdeconv.stages.destandardise(
        predict(make_predictor(model.graphdef), model.params, x, multiple=2), offset, scale
    )
    whole = jdeconv.deconvolve(image, model, tile_size=1024)
    tiled = jdeconv.deconvolve(image, model, tile_size=40)
    assert np.abs(whole - reference).max() <= 1e-5 * np.abs(reference).max()
    assert np.abs(tiled - reference).max() <= 1e-5 * np.abs(reference).max()
