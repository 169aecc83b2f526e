"""Lazy inference on dask arrays: equal to the in-memory tiled result, locally or on a cluster."""

import numpy as np
import pytest

import jdeconv
from jdeconv.psf import gaussian_psf
from jdeconv.unet import init_unet

pytest.importorskip("dask.array", reason="the 'dask' package is not installed")

# A depth-1 U-Net sees 10 pixels on each side (measured: the response to one bright pixel
# spreads -9..+10), a depth-2 one 25: halos of 12 and 28 (multiples of 2 and 4) cover them.
HALO = {1: 12, 2: 28}


def _model(ndim, *, depth=1):
    cfg = jdeconv.Config(
        depth=depth,
        base_channels=4,
        patch_size=8,
        patch_size_z=8,
        norm="none",
        tta=False,
        tile_halo=HALO[depth],
    )
    params = init_unet(0, cfg.unet(ndim))[1]
    return jdeconv.FittedModel(params, cfg, ndim, gaussian_psf((3,) * ndim, 1.0))


def _raw(shape, seed=0):
    return (np.random.default_rng(seed).random(shape) * 4000 + 100).astype(np.uint16)


# ----------------------------------------------------------------------------- dask


@pytest.mark.parametrize(
    "shape,chunks,depth",
    [((40, 44), (14, 16), 1), ((64, 60), (20, 24), 2), ((30, 28, 26), (10, 12, 12), 1)],
)
def test_dask_matches_in_memory_tiled(shape, chunks, depth):
    import dask.array as da

    model = _model(len(shape), depth=depth)
    image = _raw(shape)
    tile = 32 if depth == 1 else 64
    expected = jdeconv.deconvolve(image, model, tile_size=tile)
    # The blocks are windows of the same side (whatever the input's chunks).
    lazy = jdeconv.deconvolve(da.from_array(image, chunks=chunks), model, tile_size=tile)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32
    assert lazy.numblocks != (1,) * len(shape)  # really blockwise
    result = lazy.compute(scheduler="sync")
    assert result.shape == shape
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_dask_statistics_and_errors():
    import dask.array as da

    model = _model(2)
    with pytest.raises(ValueError, match="2D but the image is 3D"):
        jdeconv.deconvolve(da.zeros((4, 8, 8)) + da.arange(8), model)
    with pytest.raises(ValueError, match="constant"):
        jdeconv.deconvolve(da.ones((16, 16), chunks=8), model)
    bad = da.from_array(np.where(np.eye(16) > 0, np.nan, 1.0), chunks=8)
    with pytest.raises(ValueError, match="NaN"):
        jdeconv.deconvolve(bad, model)


def test_model_enters_the_graph_once():
    import dask.array as da

    model = _model(2)
    # Windows of 16 + 2 × 12 (the halo): 3 × 3 blocks.
    lazy = jdeconv.deconvolve(da.from_array(_raw((48, 48)), chunks=16), model, tile_size=40)
    graph = dict(lazy.__dask_graph__())
    shipped = [
        k for k, v in graph.items() if "FittedModel" in type(getattr(v, "value", v)).__name__
    ]
    assert len(shipped) == 1 and lazy.npartitions == 9


def test_dask_on_a_two_worker_local_cluster():
    pytest.importorskip("distributed", reason="the 'distributed' package is not installed")
    import dask.array as da
    from distributed import Client, LocalCluster

    model = _model(2)
    image = _raw((48, 52))
    expected = jdeconv.deconvolve(da.from_array(image, chunks=16), model, tile_size=40).compute(
        scheduler="sync"
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        lazy = jdeconv.deconvolve(da.from_array(image, chunks=16), model, tile_size=40)
        assert lazy.npartitions > 1
        result = client.compute(lazy).result()
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_blocks_follow_the_memory_budget_not_the_storage_chunks():
    import dask.array as da

    from jdeconv.lazy import block_budget, block_chunks

    model = _model(2)
    image = da.zeros((200, 300), chunks=8)  # tiny storage chunks: not the blocks
    assert block_chunks(image.shape, model, max_memory="1GB") == ((200,), (300,))
    small = block_chunks(image.shape, model, max_memory=60 * 60 * 200)
    assert 1 < len(small[0]) < 200 // 8 and all(c % 2 == 0 for c in small[0][:-1])
    assert block_budget(max_memory="2GB") == 2**31


def test_default_block_budget_is_shared_by_parallel_tasks_with_room_for_the_scheduler(
    monkeypatch,
):
    from jdeconv import lazy

    monkeypatch.setattr(lazy, "memory_budget", lambda: 6 * 2**30)
    monkeypatch.setattr(lazy, "_parallel_tasks", lambda: 2)
    # Two blocks at once and a third of the rest for what the scheduler holds: 2 GB each.
    assert lazy.block_budget() == 2 * 2**30
    monkeypatch.setattr(lazy, "_parallel_tasks", lambda: 1)
    assert lazy.block_budget() == 4 * 2**30
