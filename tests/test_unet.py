"""U-Net: shapes (odd sizes), parameter counts, the 3D convolution layouts agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdeconv.predict import tile_bytes_per_pixel
from jdeconv.unet import (
    UNet,
    UNetConfig,
    apply_network,
    count_params,
    for_inference,
    init_unet,
)


@pytest.mark.parametrize(
    "ndim,shape", [(2, (2, 37, 50)), (2, (1, 64, 64)), (3, (1, 9, 20, 13)), (3, (2, 8, 16, 16))]
)
def test_any_size_in_same_size_out(ndim, shape):
    model = UNet(UNetConfig(ndim=ndim, depth=2, base_channels=8), rngs=nnx.Rngs(0))
    out = model(jnp.ones((*shape, 1)))
    assert out.shape == (*shape, 1)
    assert np.all(np.isfinite(np.asarray(out)))


def test_default_parameter_counts_match_docstring():
    # The module docstring states 0.56 M (2D) and 1.63 M (3D) for the defaults.
    assert round(count_params(UNet(UNetConfig(ndim=2), rngs=nnx.Rngs(0))) / 1e6, 2) == 0.56
    assert round(count_params(UNet(UNetConfig(ndim=3), rngs=nnx.Rngs(0))) / 1e6, 2) == 1.63


@pytest.mark.parametrize("layout", ["shifted", "native"])
def test_3d_convolution_layouts_share_parameters_and_results(layout):
    cfg = UNetConfig(ndim=3, depth=2, base_channels=8, norm="group")
    stacked = UNet(cfg, rngs=nnx.Rngs(0))
    other = UNet(UNetConfig(**{**cfg.__dict__, "conv3d": layout}), rngs=nnx.Rngs(0))
    g_s, params = nnx.split(stacked, nnx.Param)
    g_o, params_o = nnx.split(other, nnx.Param)
    assert jax.tree.structure(params) == jax.tree.structure(params_o)
    x = jax.random.normal(jax.random.key(0), (2, 12, 16, 20, 1))
    np.testing.assert_allclose(
        nnx.merge(g_s, params)(x), nnx.merge(g_o, params)(x), rtol=1e-4, atol=1e-4
    )


def test_inference_layout_needs_less_memory_and_the_estimate_covers_it():
    # XLA's own accounting of the compiled forward pass on a 3D window: the "shifted"
    # layout that inference uses needs less than the training layout, and the tile
    # estimate (what choose_tile_size budgets with) is not below it.
    cfg = UNetConfig(ndim=3, depth=2, base_channels=8)
    shape = (1, 8, 32, 32)
    temp = {}
    for layout in ("stacked", "shifted"):
        graphdef, params = init_unet(0, UNetConfig(**{**cfg.__dict__, "conv3d": layout}))
        forward = jax.jit(lambda p, x, g=graphdef: apply_network(g, p, x))
        compiled = forward.lower(params, jnp.zeros(shape)).compile()
        temp[layout] = compiled.memory_analysis().temp_size_in_bytes / np.prod(shape)
    assert for_inference(cfg).conv3d == "shifted"
    assert temp["shifted"] < 0.85 * temp["stacked"]
    assert tile_bytes_per_pixel(cfg) >= temp["shifted"]


def test_rejects_bad_config_and_input():
    with pytest.raises(ValueError, match="ndim"):
        UNetConfig(ndim=4)
    with pytest.raises(ValueError, match="multiple of groups"):
        UNetConfig(base_channels=12, groups=8, norm="group")
    with pytest.raises(ValueError, match="conv3d"):
        UNetConfig(ndim=3, conv3d="fft")
    model = UNet(UNetConfig(ndim=2, depth=1, base_channels=8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="expects"):
        model(jnp.ones((16, 16)))


def test_init_unet_is_seeded_and_scaled():
    cfg = UNetConfig(ndim=2, depth=2, base_channels=8)
    g, a = init_unet(0, cfg)
    _, b = init_unet(jax.random.key(0), cfg)
    _, b0 = init_unet(jax.random.key(0), cfg)
    _, c = init_unet(1, cfg)
    leaves_a, leaves_b, leaves_c = (jax.tree.leaves(t) for t in (a, b, c))
    leaves_b0 = jax.tree.leaves(b0)
    assert all(np.array_equal(x, y) for x, y in zip(leaves_b, leaves_b0, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_c, strict=True))
    _, d = init_unet(jax.random.key(7), cfg)
    leaves_d = jax.tree.leaves(d)
    assert not all(np.array_equal(x, y) for x, y in zip(leaves_b, leaves_d, strict=True))
    model = nnx.merge(g, a)
    kernel = np.asarray(model.encoders[1].conv1.kernel[...])
    fan_in = np.prod(kernel.shape[:-1])
    assert abs(kernel.std() * np.sqrt(fan_in) - 1.0) < 0.1  # LeCun scaling
    assert np.abs(kernel).max() <= 2 / 0.8796 / np.sqrt(fan_in) + 1e-6  # truncated at 2 std
    assert count_params(model) == count_params(UNet(cfg, rngs=nnx.Rngs(0)))


def test_init_unet_old_argument_order_is_deprecated_but_works():
    cfg = UNetConfig(ndim=2, depth=1, base_channels=4, norm="none")
    with pytest.warns(DeprecationWarning, match="init_unet"):
        _, old = init_unet(cfg, seed=3)
    _, new = init_unet(3, cfg)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
    )
