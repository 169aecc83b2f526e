"""Non-negative Tikhonov (projected FISTA) and the anchored network built on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import scipy.ndimage as ndi
import scipy.optimize
import scipy.signal

import jdeconv
from jdeconv import regularized
from jdeconv.config import Config, NetworkConfig, ValidationConfig
from jdeconv.psf import gaussian_psf
from jdeconv.selection import ModelSelector
from jdeconv.unet import UNetConfig, apply_network, init_unet, set_anchor


def _sparse_scene(shape=(12, 12), seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape)
    truth[tuple(rng.integers(2, n - 2, 5) for n in shape)] = 1.0
    psf = gaussian_psf((5, 5), 0.8)
    blurred = ndi.convolve(truth, psf, mode="reflect")
    return (blurred + 0.05 * rng.standard_normal(shape)).astype(np.float32), psf


def _reference(image, psf, weight, lower, sparsity=0.0, boundary="mirror"):
    """The same problem (mirror extension by the PSF size, or a free extension to a fast
    FFT length whose pixels are not in the data term; periodic operators on it), solved
    independently as a dense bound-constrained least-squares problem (with an ℓ1 term,
    ``sparsity Σ x`` on ``x >= lower``: by L-BFGS-B)."""
    k = psf.shape[0]
    if boundary == "mirror":
        pads = [(k, k)] * image.ndim
        ext = np.pad(image.astype(np.float64), pads, mode="symmetric")
    else:
        pads = [(k, scipy.fft.next_fast_len(n + 2 * k, real=True) - n - k) for n in image.shape]
        ext = np.pad(image.astype(np.float64), pads)
    observed = np.pad(np.ones(image.shape, bool), pads).ravel()
    if boundary == "mirror":
        observed[:] = True
    n = ext.size

    def operator(stencil):
        mat = np.empty((n, n))
        for j in range(n):
            e = np.zeros(n)
            e[j] = 1.0
            mat[:, j] = ndi.convolve(e.reshape(ext.shape), stencil, mode="wrap").ravel()
        return mat

    lap = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], float)
    blur = operator(psf.astype(np.float64))[observed]
    a = np.vstack([blur, np.sqrt(weight) * operator(lap)])
    b = np.concatenate([ext.ravel()[observed], np.zeros(n)])
    if sparsity == 0:
        x = scipy.optimize.lsq_linear(a, b, bounds=(lower, np.inf), tol=1e-12).x
    else:
        x = scipy.optimize.minimize(
            lambda v: (
                0.5 * np.sum((a @ v - b) ** 2) + sparsity * v.sum(),
                a.T @ (a @ v - b) + sparsity,
            ),
            np.full(n, max(lower, 0.0)),
            jac=True,
            method="L-BFGS-B",
            bounds=[(lower, None)] * n,
            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 20000},
        ).x
    window = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, image.shape, strict=True))
    return x.reshape(ext.shape)[window]


def _fista(image, psf, weight, lower, sparsity=0.0, boundary="mirror"):
    """project_tikhonov run to convergence (2000 steps) from the linear solution."""
    start = regularized.tikhonov(image, psf, weight=weight)
    return regularized.project_tikhonov(
        jnp.asarray(image)[None],
        jnp.asarray(start)[None],
        jnp.asarray(psf),
        weight,
        lower=lower,
        iterations=2000,
        sparsity=sparsity,
        boundary=boundary,
    )[0]


def test_projected_fista_solves_the_constrained_problem():
    image, psf = _sparse_scene()
    weight, lower = 0.02, 0.0
    got = _fista(image, psf, weight, lower)
    want = _reference(image, psf, weight, lower)
    assert want.min() == pytest.approx(lower, abs=1e-9)  # the bound is active somewhere
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-3 * np.ptp(want))
    # Far from the bound the constraint is inactive: the linear (periodic-extension) solution.
    linear = _reference(image, psf, weight, -1e3)
    loose = _fista(image, psf, weight, -1e3)
    np.testing.assert_allclose(np.asarray(loose), linear, atol=2e-3 * np.ptp(linear))


def test_projected_fista_with_a_free_boundary_solves_its_problem():
    image, psf = _sparse_scene()
    assert min(image.shape) >= 2 * psf.shape[0]  # large enough: "auto" frees the boundary
    weight, lower, sparsity = 0.02, 0.0, 0.05
    got = _fista(image, psf, weight, lower, sparsity, boundary="auto")
    want = _reference(image, psf, weight, lower, sparsity, boundary="free")
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-3 * np.ptp(want))


def test_free_boundary_sees_the_dark_beyond_the_image():
    # Zero outside the image (the papers' 'same' blur with zero fill): a mirror
    # extension puts the border spot's reflection there and dims it; the free one does
    # not. Too small an image for the free boundary ("auto" then mirrors).
    psf = gaussian_psf((7, 7), 1.5)
    truth = np.zeros((32, 32))
    truth[1, 16] = truth[16, 1] = truth[16, 16] = 1.0
    blurred = scipy.signal.convolve2d(truth, psf, mode="same").astype(np.float32)
    light, residual = {}, {}
    for boundary in ("auto", "mirror"):
        x = regularized.nonnegative_tikhonov(
            blurred, psf, weight=1e-4, lower=0.0, boundary=boundary
        )
        light[boundary] = x[:5, 12:21].sum()  # the border spot's light (truth: 1)
        residual[boundary] = np.abs(scipy.signal.convolve2d(x, psf, mode="same") - blurred).max()
    assert abs(light["auto"] - 1.0) < 0.02 and light["mirror"] < 0.95
    assert residual["auto"] < 0.7 * residual["mirror"]
    small = blurred[:12, :12]
    np.testing.assert_array_equal(
        regularized.nonnegative_tikhonov(small, psf, weight=1e-4, lower=0.0),
        regularized.nonnegative_tikhonov(small, psf, weight=1e-4, lower=0.0, boundary="mirror"),
    )
    with pytest.raises(ValueError, match="boundary"):
        regularized.nonnegative_tikhonov(blurred, psf, boundary="periodic")


def test_projected_fista_with_l1_solves_the_penalised_problem():
    image, psf = _sparse_scene()
    weight, lower, sparsity = 0.02, 0.0, 0.05
    got = _fista(image, psf, weight, lower, sparsity)
    want = _reference(image, psf, weight, lower, sparsity)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-3 * np.ptp(want))
    plain = _reference(image, psf, weight, lower)
    # The penalty puts more pixels on the bound and less light above it.
    assert np.sum(want <= lower + 1e-6) > np.sum(plain <= lower + 1e-6)
    assert want.sum() < plain.sum()


def test_choose_sparsity_scales_with_the_image_and_helps_on_sparse_scenes():
    psf = gaussian_psf((9, 9), 1.5)
    truth, noisy = _spots(64, 30, psf, 0.01, seed=1)
    mu = regularized.choose_sparsity(noisy, psf)
    # Intensity units: an offset changes nothing, a gain scales it.
    assert regularized.choose_sparsity(3.0 * noisy + 5.0, psf) == pytest.approx(3 * mu, rel=1e-4)
    # A dense scene of the same mean and noise gets a smaller weight than the sparse one.
    rng = np.random.default_rng(2)
    dense = ndi.convolve(rng.random(truth.shape), psf) * truth.mean() / 0.5
    dense = dense + 0.01 * rng.standard_normal(dense.shape)
    assert regularized.choose_sparsity(dense, psf) < 0.2 * mu
    # Spots of several sizes and brightnesses (the benchmark's puncta phantom, sparser):
    # the penalty cuts the error of the plain constrained solution by a quarter or more.
    spots = np.asarray(jdeconv.simulate.puncta_2d(jax.random.key(0), (64, 64), count=20))
    rng = np.random.default_rng(0)
    blurred = np.clip(ndi.convolve(spots, psf) + 0.05 * rng.standard_normal(spots.shape), 0, None)
    err = lambda x: float(np.mean((x - spots) ** 2))  # noqa: E731
    auto = regularized.nonnegative_tikhonov(blurred, psf, sparsity="auto")
    plain = regularized.nonnegative_tikhonov(blurred, psf)
    assert err(auto) < 0.75 * err(plain)
    # A known camera pedestal as the bound, noise not clipped: the weight is still taken
    # from the image's minimum, so the penalty does no harm (relative to the bound it
    # would be far too large where the noise straddles it).
    raw = 0.2 + ndi.convolve(spots, psf) + 0.1 * rng.standard_normal(spots.shape)
    on_pedestal = lambda **kw: float(  # noqa: E731
        np.mean((regularized.nonnegative_tikhonov(raw, psf, lower=0.2, **kw) - 0.2 - spots) ** 2)
    )
    assert on_pedestal(sparsity="auto") < 1.05 * on_pedestal()
    assert regularized.choose_sparsity(np.ones((16, 16)), psf) == 0.0
    # A PSF that passes every frequency leaves no band to measure the noise in: the
    # Haar MAD is used instead of failing.
    tiny = np.zeros((3, 3))
    tiny[1, 1] = 1.0
    assert regularized.choose_sparsity(noisy, tiny) > 0


def _spots(size, count, psf, noise, seed):
    """Point sources on a dark background, blurred, noisy and clipped at 0."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size))
    truth[rng.integers(4, size - 4, count), rng.integers(4, size - 4, count)] = 1.0
    blurred = ndi.convolve(truth, psf)
    return truth, np.clip(blurred + noise * rng.standard_normal(truth.shape), 0, None)


def test_nonnegative_tikhonov_is_bounded_and_beats_linear_on_sparse_image():
    psf = gaussian_psf((9, 9), 1.5)
    truth, noisy = _spots(64, 30, psf, 0.01, seed=1)
    weight = regularized.choose_weight(noisy, psf)
    linear = regularized.tikhonov(noisy, psf, weight=weight)
    positive = regularized.nonnegative_tikhonov(noisy, psf)  # same GCV weight, lower = min
    assert positive.dtype == np.float32 and positive.shape == noisy.shape
    assert positive.min() >= noisy.min() - 1e-6 and linear.min() < noisy.min()
    err = lambda x: float(np.mean((x - truth) ** 2))  # noqa: E731
    assert err(positive) < 0.9 * err(linear)
    lifted = regularized.nonnegative_tikhonov(noisy, psf, weight=weight, lower=0.1)
    assert lifted.min() >= 0.1 - 1e-6


def test_nonnegative_tikhonov_rejects_bad_input():
    image, psf = _sparse_scene()
    with pytest.raises(ValueError, match="iterations"):
        regularized.nonnegative_tikhonov(image, psf, weight=0.1, iterations=-1)
    with pytest.raises(ValueError, match="lower"):
        regularized.nonnegative_tikhonov(image, psf, weight=0.1, lower=float("nan"))
    with pytest.raises(ValueError, match="weight"):
        regularized.nonnegative_tikhonov(image, psf, weight=-1.0)
    with pytest.raises(ValueError, match="NaN|finite"):
        regularized.nonnegative_tikhonov(np.full((12, 12), np.nan), psf, weight=0.1)
    for bad in (-0.1, float("nan"), True, "sparse"):
        with pytest.raises(ValueError, match="sparsity"):
            regularized.nonnegative_tikhonov(image, psf, weight=0.1, sparsity=bad)
    with pytest.raises(ValueError, match="noise_std"):
        regularized.choose_sparsity(image, psf, noise_std=-1.0)


def _scene_2d():
    image, psf = _sparse_scene((16, 16))
    return image, psf, 0.05, 0.0, 50, 0.0


def _scene_3d():
    image = np.random.default_rng(3).random((8, 16, 16)).astype(np.float32)
    return image, gaussian_psf((3, 5, 5), 1.0), 0.1, 0.2, 20, 0.05


@pytest.mark.parametrize("scene", [_scene_2d, _scene_3d], ids=["2d", "3d"])
def test_nonneg_anchored_network_starts_as_nonnegative_tikhonov(scene):
    image, psf, weight, lower, iterations, sparsity = scene()
    kernel = regularized.tikhonov_kernel(psf, weight)
    cfg = UNetConfig(
        ndim=image.ndim,
        depth=1,
        base_channels=4,
        norm="none",
        anchor_shape=kernel.shape,
        anchor_psf_shape=psf.shape,
        anchor_weight=weight,
        anchor_lower=lower,
        anchor_iterations=iterations,
        anchor_sparsity=sparsity,
    )
    graphdef, params = init_unet(0, cfg)
    with pytest.raises(ValueError, match="needs a PSF"):
        set_anchor(params, kernel)
    params = set_anchor(params, kernel, psf=psf)
    got = np.asarray(apply_network(graphdef, params, jnp.asarray(image)[None]))[0]
    # FISTA from the linear solution (not from the truncated filter, which only records
    # the anchor's reach) ...
    want = regularized.project_tikhonov(
        jnp.asarray(image)[None],
        None,
        jnp.asarray(psf),
        weight,
        lower=lower,
        iterations=iterations,
        sparsity=sparsity,
    )[0]
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)
    # ... which is the classical function's own start and iterations: the same result up
    # to float32 (its start is a float64 solve). The network once started from the linear
    # solution on FISTA's grid instead (this test then allowed 1e-2 of the range): 0.12
    # and 1.39 dB short after 50 steps on two 32-plane volumes with the 31³ PSF.
    classical = regularized.nonnegative_tikhonov(
        image, psf, weight=weight, lower=lower, iterations=iterations, sparsity=sparsity
    )
    np.testing.assert_allclose(got, classical, atol=1e-4 * np.ptp(classical))
    assert got.min() >= lower - 1e-6 and got.shape == image.shape
    _, plain = init_unet(
        0,
        UNetConfig(
            ndim=image.ndim, depth=1, base_channels=4, norm="none", anchor_shape=kernel.shape
        ),
    )
    with pytest.raises(ValueError, match="has no PSF"):
        set_anchor(plain, kernel, psf=psf)


def test_default_fit_records_the_nonneg_anchor_and_step_zero_is_the_classical_solution():
    psf = gaussian_psf((7, 7), 1.5)
    _, noisy = _spots(48, 20, psf, 0.02, seed=0)
    cfg = Config.default(2, steps=2, patch_size=32, batch_size=2, validate_every=1, tta=False)
    # An impossible threshold: no trained model can be significantly better, so step 0
    # is kept and the result is the non-negative Tikhonov solution.
    cfg = cfg.replace(selection_z=1e9)
    result = jdeconv.fit(noisy, psf, cfg, verbose=False)
    net = result.model.config.network
    assert net.anchor == "nonneg_tikhonov" and net.anchor_psf_shape == (7, 7)
    prepared = jdeconv.stages.prepare(noisy, psf, cfg)
    assert net.anchor_lower == pytest.approx((noisy.min() - prepared.offset) / prepared.scale)
    # The ℓ1 weight, chosen on the standardised image, is the image's own in its units.
    sparsity = regularized.choose_sparsity(noisy, psf)
    assert sparsity > 0
    assert net.anchor_sparsity == pytest.approx(sparsity / prepared.scale, rel=1e-3)
    assert result.best_step == 0
    want = regularized.nonnegative_tikhonov(noisy, psf, weight=net.anchor_weight, sparsity="auto")
    np.testing.assert_allclose(result.deconvolved, want, atol=2e-3 * np.ptp(want))


def test_if_better_selection_keeps_step_zero_unless_significantly_better():
    rng = np.random.default_rng(0)
    base = rng.random(2000) + 1.0
    sel = ModelSelector(z=2.0, patience=2, keep_params=False, rule="if_better")
    sel.update(0, base, None)
    sel.update(25, base - 1e-4 + 1e-2 * rng.standard_normal(2000), None)  # not significant
    assert sel.kept_step == 0 and sel.worse == 0
    sel.update(50, base + 0.05, None)  # significantly worse
    assert sel.kept_step == 0 and sel.worse == 1 and not sel.should_stop()
    sel.update(75, base - 0.05, None)  # significantly better
    assert sel.kept_step == 75 and sel.worse == 0
    sel.update(100, base + 0.01, None)
    sel.update(125, base + 0.01, None)
    assert sel.kept_step == 75 and sel.should_stop()
    # The historical rule keeps the not-significant later model.
    old = ModelSelector(z=2.0, patience=None, keep_params=False)
    old.update(0, base, None)
    old.update(25, base + 1e-4 + 1e-2 * rng.standard_normal(2000), None)
    assert old.kept_step == 25
    with pytest.raises(ValueError, match="rule"):
        ModelSelector(z=2.0, patience=None, keep_params=False, rule="best")


def test_config_checks_nonneg_fields():
    with pytest.raises(ValueError, match="selection"):
        ValidationConfig(selection="best")
    with pytest.raises(ValueError, match="anchor_iterations"):
        NetworkConfig(anchor="nonneg_tikhonov", anchor_iterations=-1)
    with pytest.raises(ValueError, match="anchor_psf_shape"):
        NetworkConfig(anchor_psf_shape=(4, 4))
    with pytest.raises(ValueError, match="anchor_psf_shape needs"):
        UNetConfig(ndim=2, anchor_psf_shape=(3, 3), anchor_weight=0.1)
    cfg = Config.default(2).replace(
        network=NetworkConfig(
            anchor="nonneg_tikhonov",
            anchor_weight=0.1,
            anchor_shape=(9, 9),
            anchor_psf_shape=(5, 5),
            anchor_lower=-0.5,
        )
    )
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg and again.network.anchor_psf_shape == (5, 5)


def test_anchored_tiles_equal_the_whole_image():
    # Tiles get the anchor's reach as context (Config.tile_context), so tiled inference
    # of the non-negative anchor equals whole-image inference.
    psf = gaussian_psf((9, 9), 1.5)
    _, noisy = _spots(96, 40, psf, 0.02, seed=2)
    cfg = Config.default(2, steps=1, patch_size=32, batch_size=2, tta=False, tile_halo=8)
    model = jdeconv.fit(noisy, psf, cfg, verbose=False).model
    assert model.config.tile_context() > 8
    whole = jdeconv.deconvolve(noisy, model)
    tiled = jdeconv.deconvolve(noisy, model, tile_size=64)
    np.testing.assert_allclose(tiled, whole, atol=1e-3 * np.ptp(whole))


def test_prior_term_takes_the_anchor_weights_and_needs_an_anchor():
    psf = gaussian_psf((7, 7), 1.5)
    _, noisy = _spots(48, 20, psf, 0.02, seed=0)
    weights = {"rec": 1.0, "prior": 1.0}
    cfg = Config.default(2, steps=2, patch_size=32, batch_size=2, loss_weights=weights)
    prepared = jdeconv.stages.prepare(noisy, psf, cfg)
    net = prepared.cfg.network
    term = dict((name, t) for name, _, t in prepared.loss.terms)["prior"]
    assert dict(term.params) == {
        "lower": pytest.approx(net.anchor_lower),
        "laplacian_weight": net.anchor_weight,
        "sparsity": net.anchor_sparsity,
    }
    with pytest.raises(ValueError, match="anchor='nonneg_tikhonov'"):
        jdeconv.stages.prepare(noisy, psf, cfg.replace(anchor="none"))
    # Given explicitly, the term needs no anchor.
    explicit = {"prior": {"laplacian_weight": 0.5}}
    plain = Config(steps=2, patch_size=32, batch_size=2, loss_weights=weights)
    plain = plain.replace(loss=jdeconv.losses.loss_specs(weights, hyper=explicit))
    term = dict((n, t) for n, _, t in jdeconv.stages.prepare(noisy, psf, plain).loss.terms)
    assert dict(term["prior"].params)["laplacian_weight"] == 0.5
