"""The quality benchmark's phantoms in jdeconv.simulate: shape, range, determinism, content."""

import re

import jax
import numpy as np
import pytest

from jdeconv import simulate

PHANTOMS_2D = {
    "puncta_2d": simulate.puncta_2d,
    "nuclei_2d": simulate.nuclei_2d,
    "edges_2d": simulate.edges_2d,
    "filaments_2d": simulate.filaments_2d,
}
PHANTOMS_3D = {"puncta_3d": simulate.puncta_3d, "nuclei_3d": simulate.nuclei_3d}


def _all():
    return [(name, fn, (96, 80)) for name, fn in PHANTOMS_2D.items()] + [
        (name, fn, (12, 40, 36)) for name, fn in PHANTOMS_3D.items()
    ]


@pytest.mark.parametrize("name,fn,shape", _all(), ids=[n for n, _, _ in _all()])
def test_shape_range_determinism(name, fn, shape):
    a = fn(jax.random.key(0), shape)
    assert a.shape == shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0.2, (a.min(), a.max())
    np.testing.assert_array_equal(a, fn(jax.random.key(0), shape))
    assert not np.array_equal(a, fn(jax.random.key(1), shape))


def test_public_and_exported():
    for name in [*PHANTOMS_2D, *PHANTOMS_3D]:
        assert name in simulate.__all__


def test_puncta_are_sparse_points():
    spots = simulate.puncta_2d(jax.random.key(0), (256, 256))
    assert spots.min() == 0.0
    # 300 spots of sigma <= 2 px: under a tenth of the pixels are lit.
    lit = np.mean(spots > 0.02)
    assert 0.02 < lit < 0.15, lit
    # Varied brightness (log-uniform over 0.25-1, times the Gaussian profile).
    peaks = spots[spots > 0.02]
    assert np.percentile(peaks, 95) > 4 * np.percentile(peaks, 5)
    points = simulate.puncta_2d(jax.random.key(1), (64, 64), count=20, sigma_range=(0, 0.2))
    assert np.count_nonzero(points) <= 20


def test_puncta_3d_sparse():
    spots = simulate.puncta_3d(jax.random.key(0), (16, 64, 64), count=40)
    # A 3D spot of sigma 2 lights ~10³ voxels: 40 of them about 7 % of this volume.
    assert 0.01 < np.mean(spots > 0.02) < 0.15


def test_nuclei_are_smooth_textured_blobs():
    blobs = simulate.nuclei_2d(jax.random.key(0), (128, 128), count=6, radius_range=(10, 20))
    inside = blobs > 0.1
    assert 0.05 < inside.mean() < 0.6
    # Texture: the interior varies; soft edges: few pixels jump by more than half.
    assert blobs[inside].std() > 0.05
    jumps = np.abs(np.diff(blobs, axis=1))
    assert np.mean(jumps > 0.5) < 1e-3
    flat = simulate.nuclei_2d(
        jax.random.key(0), (128, 128), count=6, radius_range=(10, 20), texture=0.0
    )
    assert flat[flat > 0.9 * flat.max()].std() < blobs[inside].std()


def test_edges_have_sharp_steps():
    edges = simulate.edges_2d(jax.random.key(0), (128, 128), count=12, background=0.05)
    # Hard edges: many one-pixel jumps of 0.25 or more; a constant background.
    jumps = np.abs(np.diff(edges, axis=1))
    assert np.count_nonzero(jumps > 0.25) > 100
    assert np.mean(np.isclose(edges, 0.05)) > 0.3


def test_counts_scale_the_content():
    few = simulate.puncta_2d(jax.random.key(0), (128, 128), count=5)
    many = simulate.puncta_2d(jax.random.key(0), (128, 128), count=200)
    assert np.count_nonzero(few) < np.count_nonzero(many)
    assert simulate.edges_2d(jax.random.key(0), (32, 32), count=0).max() == pytest.approx(0.05)
    assert simulate.nuclei_2d(jax.random.key(0), (32, 32), count=0).max() == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda k: simulate.puncta_2d(k, (16, 16, 16)), "puncta_2d needs a 2D (Y, X) shape"),
        (lambda k: simulate.puncta_3d(k, (16, 16)), "puncta_3d needs a 3D (Z, Y, X) shape"),
        (lambda k: simulate.puncta_2d(k, (16, 16), count=-1), "count must be a non-negative"),
        (
            lambda k: simulate.puncta_2d(k, (16, 16), intensity_range=(0, 1)),
            "intensity_range must be (low, high) with 0 < low",
        ),
        (
            lambda k: simulate.puncta_2d(k, (16, 16), sigma_range=(2, 1)),
            "sigma_range must be (low, high)",
        ),
        (lambda k: simulate.nuclei_2d(k, (16, 16), texture=2.0), "texture must be in [0, 1]"),
        (
            lambda k: simulate.nuclei_2d(k, (16, 16), radius_range=(0, 4)),
            "radius_range must be (low, high) with 0 < low",
        ),
        (lambda k: simulate.nuclei_3d(k, (16, 16), count=1), "nuclei_3d needs a 3D"),
        (
            lambda k: simulate.nuclei_2d(k, (16, 16), edge_width=0),
            "edge_width (pixels) must be > 0",
        ),
        (lambda k: simulate.edges_2d(k, (16, 16), background=1.5), "background must be in [0, 1]"),
        (lambda k: simulate.edges_2d(k, (16, 16, 16)), "edges_2d needs a 2D (Y, X) shape"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(jax.random.key(0))
