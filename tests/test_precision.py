"""Mixed precision: bfloat16 activations, float32 parameters, loss and forward model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdeconv
from jdeconv import Config
from jdeconv.psf import gaussian_psf
from jdeconv.unet import UNetConfig, apply_network, init_unet

TINY = dict(steps=3, batch_size=2, patch_size=16, patch_size_z=8, base_channels=4, depth=1)


def test_default_is_float32():
    assert Config().network.dtype == Config().compute_dtype == "float32"
    with pytest.raises(ValueError, match="dtype"):
        Config(compute_dtype="float16")


@pytest.mark.parametrize("conv3d", ["stacked", "native"])
def test_bfloat16_network_computes_in_bfloat16_and_returns_float32(conv3d):
    cfg = UNetConfig(ndim=3, depth=1, base_channels=4, norm="group", groups=2, conv3d=conv3d)
    graphdef, params = init_unet(0, cfg)
    graphdef16, params16 = init_unet(0, UNetConfig(**{**cfg.__dict__, "dtype": "bfloat16"}))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))
    x = jax.random.normal(jax.random.key(0), (1, 4, 8, 8))
    jaxpr = str(jax.make_jaxpr(lambda p, a: apply_network(graphdef16, p, a))(params16, x))
    assert "bf16" in jaxpr
    out16, out32 = apply_network(graphdef16, params16, x), apply_network(graphdef, params, x)
    assert out16.dtype == jnp.float32
    # Same parameters, bfloat16 rounding only (8 bits of mantissa).
    np.testing.assert_allclose(out16, out32, atol=0.1 * float(jnp.abs(out32).max()))


@pytest.mark.parametrize("shape,psf", [((32, 32), (3, 3)), ((8, 16, 16), (3, 3, 3))])
def test_bfloat16_fit_runs_finite_with_float32_parameters(shape, psf):
    cfg = Config.preset("noise2same", compute_dtype="bfloat16", validate_every=1, tta=False, **TINY)
    noisy = np.random.default_rng(0).random(shape).astype(np.float32)
    r = jdeconv.fit(noisy, gaussian_psf(psf, 0.8), cfg, verbose=False)
    assert r.deconvolved.dtype == np.float32 and np.all(np.isfinite(r.deconvolved))
    assert all(np.isfinite(r.history["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(r.model.params))
    assert r.model.config.network.dtype == "bfloat16"
