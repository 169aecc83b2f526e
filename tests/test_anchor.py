"""The anchored network: a fixed Tikhonov filter plus a U-Net correction that starts at 0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

import jdeconv
from jdeconv import regularized
from jdeconv.config import Config, InferenceConfig, NetworkConfig
from jdeconv.psf import gaussian_psf
from jdeconv.train import init_state, make_optimizer, make_train_step
from jdeconv.unet import UNetConfig, anchor_filter, apply_network, init_unet, set_anchor


@pytest.mark.parametrize("shape, kshape", [((2, 12, 13), (5, 7)), ((1, 6, 9, 8), (3, 5, 5))])
def test_anchor_filter_is_mirror_extended_convolution(shape, kshape):
    rng = np.random.default_rng(0)
    x = rng.random(shape).astype(np.float32)
    k = rng.random(kshape).astype(np.float32)
    got = np.asarray(anchor_filter(jnp.asarray(k), jnp.asarray(x)))
    want = np.stack([ndi.convolve(a, k, mode="reflect") for a in x])
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())


def test_tikhonov_kernel_reproduces_tikhonov():
    psf = gaussian_psf((9, 9), 1.5)
    # A smooth periodic image: convolution with the kernel (wrapped) against the
    # periodic closed-form solution.
    yy, xx = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    image = np.sin(2 * np.pi * yy / 16) * np.cos(2 * np.pi * xx / 32) + 0.1 * np.cos(
        2 * np.pi * (yy + xx) / 8
    )
    for weight in (1.0, 0.01):
        kernel = regularized.tikhonov_kernel(psf, weight)
        assert all(n % 2 == 1 for n in kernel.shape)
        assert kernel.sum() == pytest.approx(1.0, abs=1e-3)  # the Laplacian keeps the mean
        got = ndi.convolve(image, kernel.astype(np.float64), mode="wrap")
        want = regularized.tikhonov(image, psf, weight=weight, padding="periodic")
        np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max())


def test_tikhonov_kernel_rejects_bad_input():
    psf = gaussian_psf((5, 5), 1.0)
    with pytest.raises(ValueError, match="weight must be > 0"):
        regularized.tikhonov_kernel(psf, 0.0)
    with pytest.raises(ValueError, match="odd sizes"):
        regularized.tikhonov_kernel(psf, 0.1, shape=(4, 5))
    with pytest.raises(ValueError, match="positive sum"):
        regularized.tikhonov_kernel(np.zeros((5, 5)), 0.1)


def _anchored(ndim=2):
    cfg = UNetConfig(ndim=ndim, depth=1, base_channels=4, norm="none", anchor_shape=(5,) * ndim)
    graphdef, params = init_unet(0, cfg)
    kernel = np.random.default_rng(1).random((5,) * ndim).astype(np.float32)
    return graphdef, set_anchor(params, kernel), kernel


def test_anchored_network_starts_as_its_filter():
    graphdef, params, kernel = _anchored()
    x = np.random.default_rng(2).random((3, 16, 16)).astype(np.float32)
    got = np.asarray(apply_network(graphdef, params, jnp.asarray(x)))
    want = np.stack([ndi.convolve(a, kernel, mode="reflect") for a in x])
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_set_anchor_checks_shape_and_copies():
    graphdef, params, kernel = _anchored()
    with pytest.raises(ValueError, match="shape"):
        set_anchor(params, np.ones((3, 3)))
    new = set_anchor(params, np.zeros((5, 5)))
    assert float(jnp.abs(params["anchor"].get_value() - kernel).max()) == 0.0
    assert float(jnp.abs(new["anchor"].get_value()).max()) == 0.0
    _, plain = init_unet(0, UNetConfig(ndim=2, depth=1, base_channels=4, norm="none"))
    with pytest.raises(ValueError, match="no anchor"):
        set_anchor(plain, kernel)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_training_never_changes_the_anchor(optimizer):
    graphdef, params, kernel = _anchored()
    cfg = Config.preset("noise2self", steps=3, optimizer=optimizer, weight_decay=0.1)
    tx = make_optimizer(cfg)
    loss = jdeconv.losses.make_loss(cfg.loss)
    step = make_train_step(graphdef, loss, tx, batch_size=2, masks=cfg.masks, crop_border=False)
    g = jdeconv.make_forward(gaussian_psf((3, 3), 1.0), (16, 16))
    image = jnp.asarray(np.random.default_rng(3).random((32, 32)), jnp.float32)
    state = init_state(params, tx)
    head0 = np.asarray(params["head"]["kernel"].get_value())
    for _ in range(3):
        state, _ = step(jax.random.key(0), state, image, g)
    np.testing.assert_array_equal(np.asarray(state.params["anchor"].get_value()), kernel)
    assert np.abs(np.asarray(state.params["head"]["kernel"].get_value()) - head0).max() > 0


def test_default_fit_is_anchored_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.zeros((48, 48))
    truth[rng.integers(4, 44, 20), rng.integers(4, 44, 20)] = 1.0
    psf = gaussian_psf((7, 7), 1.5)
    noisy = np.asarray(
        jdeconv.simulate.degrade(
            jax.random.key(0), truth, psf, normalize=False, alpha=0.001, sigma=0.02
        )
    )
    cfg = Config.default(2, steps=4, patch_size=32, batch_size=2, validate_every=2, tta=False)
    assert cfg.network.anchor == "nonneg_tikhonov" and cfg.validation.restore_best
    assert cfg.validation.selection == "if_better"
    result = jdeconv.fit(noisy, psf, cfg, verbose=False)
    net = result.model.config.network
    assert net.anchor_weight > 0 and len(net.anchor_shape) == 2
    assert result.history["val_step"][0] == 0  # the Tikhonov solution is a candidate
    assert result.deconvolved.min() >= noisy.min()  # clip_output="below"
    jdeconv.save_model(result.model, tmp_path / "m")
    again = jdeconv.deconvolve(noisy, jdeconv.load_model(tmp_path / "m"))
    np.testing.assert_allclose(again, result.deconvolved, atol=1e-5)


def test_given_anchor_weight_is_used_and_step_zero_is_tikhonov():
    rng = np.random.default_rng(1)
    image = ndi.gaussian_filter(rng.random((40, 40)), 2) + 0.05 * rng.random((40, 40))
    psf = gaussian_psf((5, 5), 1.0)
    cfg = Config.default(
        2, steps=1, patch_size=32, batch_size=2, tta=False, anchor="tikhonov", anchor_weight=0.05
    )
    cfg = cfg.replace(clip_output=False)
    prepared = jdeconv.stages.prepare(image, psf, cfg)
    assert prepared.cfg.network.anchor_weight == 0.05
    graphdef, params = init_unet(0, prepared.cfg.unet(2))
    params = set_anchor(params, prepared.anchor)
    model = jdeconv.FittedModel(params, prepared.cfg, 2, prepared.psf)
    out = prepared.destandardise(jdeconv.stages.predict_standardised(model, prepared.x))
    want = regularized.tikhonov(image, psf, weight=0.05)
    # The kernel keeps all but 1e-6 of the filter's energy; the rest is the border.
    np.testing.assert_allclose(out[6:-6, 6:-6], want[6:-6, 6:-6], atol=2e-3 * np.ptp(want))


def test_config_checks_anchor_fields():
    with pytest.raises(ValueError, match="anchor must be one of"):
        NetworkConfig(anchor="wiener")
    with pytest.raises(ValueError, match="anchor_weight"):
        NetworkConfig(anchor_weight=0.0)
    with pytest.raises(ValueError, match="anchor_shape"):
        NetworkConfig(anchor_shape=(4, 5))
    with pytest.raises(ValueError, match="clip_output"):
        InferenceConfig(clip_output="above")
    assert Config().network.anchor == "none"  # a bare Config is the papers' network
    cfg = Config.default(2).replace(anchor_weight=0.3)
    assert Config.from_dict(cfg.to_dict()) == cfg
    shaped = cfg.replace(network=NetworkConfig(anchor="tikhonov", anchor_shape=(5, 5)))
    assert Config.from_dict(shaped.to_dict()).network.anchor_shape == (5, 5)


@pytest.mark.parametrize(
    "ndim, anchor",
    [(2, "tikhonov"), (3, "nonneg_tikhonov")],
)
def test_a_zero_branch_runs_the_anchor_alone_with_the_same_result(ndim, anchor, monkeypatch):
    # jdeconv.fit's step 0 (a zero head) is the anchor alone: inference skips the U-Net
    # (anchor_only), takes only the anchor's reach as context, and the result is the
    # full network's; once the head moves the full network runs again.
    from jdeconv.predict import tile_bytes_per_pixel

    psf = gaussian_psf((5,) * ndim, 1.0)
    net = NetworkConfig(
        anchor=anchor,
        anchor_weight=0.05,
        anchor_shape=(9,) * ndim,
        anchor_psf_shape=(5,) * ndim if anchor == "nonneg_tikhonov" else (),
    )
    cfg = Config(depth=2, base_channels=8, network=net, tile_halo=32, tta=False)
    _, params = init_unet(0, cfg.unet(ndim))
    params = set_anchor(
        params,
        np.full((9,) * ndim, 1.0 / 9**ndim, np.float32),
        psf=psf if anchor == "nonneg_tikhonov" else None,
    )
    model = jdeconv.FittedModel(params, cfg, ndim, psf)
    assert model.anchor_only and model.network.anchor_only and model.multiple == 1
    assert set(model.inference_params.keys()) <= {"anchor", "anchor_psf"}
    assert model.tile_context() == cfg.tile_context(anchor_only=True) < cfg.tile_context()
    assert tile_bytes_per_pixel(model.network) < tile_bytes_per_pixel(cfg.unet(ndim))
    x = np.random.default_rng(0).random((12, 20, 22)[-ndim:]).astype(np.float32)
    # model.graphdef stays the whole network's, on all parameters.
    full = np.asarray(apply_network(model.graphdef, model.params, jnp.asarray(x)[None])[0])
    alone = jdeconv.stages.predict_standardised(model, x)
    np.testing.assert_allclose(alone, full, rtol=1e-5, atol=1e-5)
    # With TTA on, the anchor alone is not augmented (it commutes with the symmetries).
    monkeypatch.setattr(jdeconv.stages, "psf_symmetries", None)
    with_tta = jdeconv.FittedModel(params, cfg.replace(tta=True), ndim, psf)
    np.testing.assert_array_equal(jdeconv.stages.predict_standardised(with_tta, x), alone)
    monkeypatch.undo()

    params["head"]["bias"].set_value(jnp.full_like(params["head"]["bias"].get_value(), 0.1))
    moved = jdeconv.FittedModel(params, cfg, ndim, psf)
    assert not moved.anchor_only and not moved.network.anchor_only and moved.multiple == 4
    assert moved.tile_context() == cfg.tile_context()
    np.testing.assert_allclose(
        jdeconv.stages.predict_standardised(moved, x), full + 0.1, rtol=1e-5, atol=1e-5
    )


def test_anchor_only_needs_an_anchor():
    with pytest.raises(ValueError, match="anchor_only needs"):
        UNetConfig(ndim=2, anchor_only=True)
