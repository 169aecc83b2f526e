"""Property tests (hypothesis) over random shapes: forward-model adjoint, FFT = direct,
and the stratified mask's one pixel per box.

Shapes are small (5-24 pixels per axis in 2D, 5-12 in 3D) so that compiling each new
shape stays cheap; the database is off so running the tests writes no files.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jdeconv.forward import check_adjoint, make_forward
from jdeconv.masks import box_size, stratified_mask

PROPERTY = settings(max_examples=20, deadline=None, database=None)


@jax.jit
def _blur_both_ways(g, x):
    # One compilation per shape and operator kind instead of one per primitive.
    return g(x), g.adjoint(x)


_stratified_mask = jax.jit(stratified_mask, static_argnames=("shape", "fraction"))
SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def images_and_psfs(draw):
    """An image shape (2D or 3D) and an odd PSF shape that fits in it, per axis."""
    ndim = draw(st.sampled_from([2, 3]))
    largest = 24 if ndim == 2 else 12
    shape = tuple(draw(st.integers(5, largest)) for _ in range(ndim))
    # Odd sizes up to the image's (and up to 9, so direct convolution stays quick).
    kshape = tuple(2 * draw(st.integers(0, (min(n, 9) - 1) // 2)) + 1 for n in shape)
    return shape, kshape


def _psf(kshape, seed):
    psf = np.random.default_rng(seed).random(kshape) + 1e-3
    return psf / psf.sum()


@PROPERTY
@given(
    case=images_and_psfs(),
    padding=st.sampled_from(["reflect", "zero", "periodic"]),
    method=st.sampled_from(["fft", "direct"]),
    seed=SEEDS,
)
def test_adjoint_identity(case, padding, method, seed):
    shape, kshape = case
    g = make_forward(_psf(kshape, seed), shape, method=method, padding=padding)
    assert check_adjoint(g, jax.random.key(seed), rtol=1e-4) <= 1e-4


@PROPERTY
@given(case=images_and_psfs(), padding=st.sampled_from(["reflect", "zero", "periodic"]), seed=SEEDS)
def test_fft_equals_direct(case, padding, seed):
    shape, kshape = case
    psf = _psf(kshape, seed)
    x = jnp.asarray(np.random.default_rng(seed).random(shape), jnp.float32)
    fft = make_forward(psf, shape, method="fft", padding=padding)
    direct = make_forward(psf, shape, method="direct", padding=padding)
    for got, expected in zip(_blur_both_ways(fft, x), _blur_both_ways(direct, x), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@PROPERTY
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
        st.tuples(st.integers(1, 16), st.integers(1, 16), st.integers(1, 16)),
    ),
    fraction=st.floats(0.001, 0.99),
    seed=SEEDS,
)
def test_stratified_mask_has_one_pixel_per_box(shape, fraction, seed):
    mask = np.asarray(_stratified_mask(jax.random.key(seed), shape, fraction=fraction))
    assert mask.shape == shape and mask.dtype == bool
    side = box_size(fraction, len(shape))
    counts = [math.ceil(n / side) for n in shape]
    # Pad each axis to whole boxes (the padding holds no masked pixel), then count the
    # masked pixels in each box.
    padded = np.pad(mask, [(0, c * side - n) for c, n in zip(counts, shape, strict=True)])
    boxes = padded.reshape([d for c in counts for d in (c, side)])
    per_box = boxes.sum(axis=tuple(range(1, 2 * len(shape), 2)))
    np.testing.assert_array_equal(per_box, 1)
