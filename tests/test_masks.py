"""Masks: fraction, stratification, reproducibility, replacement, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdeconv.masks import (
    bernoulli_mask,
    box_size,
    mask_and_replace,
    replace_masked,
    stratified_mask,
)


def test_box_size_matches_papers():
    # Noise2Same / Papkov: p = 0.5 % gives boxes of 14 (2D) and 6 (3D).
    assert box_size(0.005, 2) == 14
    assert box_size(0.005, 3) == 6
    with pytest.raises(ValueError, match="fraction"):
        box_size(0.0, 2)


@pytest.mark.parametrize("shape", [(56, 70), (60, 61), (24, 30, 36), (13, 25, 7)])
@pytest.mark.parametrize("fraction", [0.005, 0.02])
def test_stratified_one_pixel_per_box(shape, fraction):
    mask = np.asarray(stratified_mask(jax.random.key(0), shape, fraction=fraction))
    side = box_size(fraction, len(shape))
    counts = [-(-n // side) for n in shape]
    assert mask.sum() == np.prod(counts)
    # Every box (cut at the border) holds exactly one masked pixel.
    padded = np.zeros([c * side for c in counts], dtype=int)
    padded[tuple(slice(0, n) for n in shape)] = mask
    blocks = padded.reshape([x for c in counts for x in (c, side)])
    per_box = blocks.sum(axis=tuple(range(1, 2 * len(shape), 2)))
    assert np.all(per_box == 1)


def test_stratified_fraction_close_to_target():
    shape = (140, 140)
    mask = stratified_mask(jax.random.key(1), shape, fraction=0.005)
    assert abs(float(mask.mean()) - 1 / 14**2) < 1e-9  # exact when boxes tile the image


def test_positions_are_spread_within_boxes():
    # Over many keys, each offset inside a box is hit: positions are uniform, not fixed.
    side = box_size(0.04, 2)  # 5
    masks = jax.vmap(lambda k: stratified_mask(k, (side, side), fraction=0.04))(
        jax.random.split(jax.random.key(2), 2000)
    )
    hits = np.asarray(masks).sum(axis=0)
    assert hits.min() > 0.5 * 2000 / side**2


def test_same_key_same_mask_and_different_keys_differ():
    a = stratified_mask(jax.random.key(3), (64, 64))
    b = stratified_mask(jax.random.key(3), (64, 64))
    c = stratified_mask(jax.random.key(4), (64, 64))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bernoulli_fraction():
    mask = bernoulli_mask(jax.random.key(5), (200, 200), fraction=0.05)
    assert abs(float(mask.mean()) - 0.05) < 0.005


def test_plain_jit_vmap_agree():
    keys = jax.random.split(jax.random.key(6), 3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32, 32)), jnp.float32)

    def one(k, xi):
        return mask_and_replace(k, xi, fraction=0.01)

    plain = [one(k, xi) for k, xi in zip(keys, x, strict=True)]
    batched = jax.jit(jax.vmap(one))(keys, x)
    for i, (xm, m) in enumerate(plain):
        np.testing.assert_allclose(batched[0][i], xm, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(batched[1][i], m)


def test_replacements():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(64, 64)) + 10, jnp.float32)
    mask = stratified_mask(jax.random.key(7), x.shape, fraction=0.01)
    zero = replace_masked(jax.random.key(8), x, mask, replacement="zero")
    assert np.all(np.asarray(zero)[np.asarray(mask)] == 0)
    np.testing.assert_array_equal(
        np.asarray(zero)[~np.asarray(mask)], np.asarray(x)[~np.asarray(mask)]
    )
    noise = replace_masked(jax.random.key(8), x, mask, replacement="noise", noise_std=0.2)
    vals = np.asarray(noise)[np.asarray(mask)]
    assert abs(vals.mean()) < 0.1 and 0.1 < vals.std() < 0.3
    # Local mean: on a linear ramp the neighbour mean equals the centre value.
    ramp = jnp.add.outer(jnp.arange(16.0), 2 * jnp.arange(16.0))
    inner = jnp.zeros((16, 16), bool).at[5, 7].set(True)
    local = replace_masked(jax.random.key(9), ramp, inner, replacement="local_mean")
    np.testing.assert_allclose(local, ramp, rtol=1e-6)
    cube = jnp.arange(5.0**3).reshape(5, 5, 5)
    inner3 = jnp.zeros((5, 5, 5), bool).at[2, 2, 2].set(True)
    np.testing.assert_allclose(replace_masked(None, cube, inner3, replacement="local_mean"), cube)


def test_bad_kind_and_replacement():
    x = jnp.zeros((16, 16))
    with pytest.raises(ValueError, match="mask kind"):
        mask_and_replace(jax.random.key(0), x, kind="checkerboard")
    with pytest.raises(ValueError, match="replacement"):
        mask_and_replace(jax.random.key(0), x, replacement="median")
