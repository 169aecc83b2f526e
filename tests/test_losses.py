"""Loss terms: zero at the target, finite gradients, composition, presets, terms as values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdeconv import losses
from jdeconv.losses import LossSpec, Passes, Term, make_loss, register_loss


def _passes(batch=2, shape=(16, 16), seed=0, perfect=False):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
    mask = jnp.asarray(rng.random((batch, *shape)) < 0.1)
    if perfect:
        arrays = [image] * 4
    else:
        arrays = [jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32) for _ in range(4)]
    return Passes(image, mask, *arrays)


def test_terms_against_numpy():
    p = jax.tree.map(lambda a: a[0] if jnp.ndim(a) else a, _passes())
    m = np.asarray(p.mask)
    img, d, r, dm, rm = (np.asarray(a, np.float64) for a in (p.image, *p[2:6]))
    np.testing.assert_allclose(losses.blind_spot(p), ((rm - img) ** 2)[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.reconstruction(p), ((r - img) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.invariance(p), np.sqrt(((r - rm) ** 2)[m].mean()), rtol=1e-5)
    np.testing.assert_allclose(
        losses.invariance_deconvolved(p), np.sqrt(((d - dm) ** 2)[m].mean()), rtol=1e-5
    )
    expected = (np.maximum(-0.5 - r, 0) + np.maximum(r - 0.5, 0)).mean()
    np.testing.assert_allclose(losses.bound(p, lower=-0.5, upper=0.5), expected, rtol=1e-5)
    expected_d = (np.maximum(-0.5 - d, 0) + np.maximum(d - 0.5, 0)).mean()
    np.testing.assert_allclose(
        losses.bound_deconvolved(p, lower=-0.5, upper=0.5), expected_d, rtol=1e-5
    )
    # The same through a composed loss: the bounds are bound into the term as fields.
    loss = make_loss({"bound": 1.0, "bound_d": 1.0}, defaults={"lower": -0.5, "upper": 0.5})
    bound_term = dict((n, t) for n, _, t in loss.terms)["bound"]
    assert dict(bound_term.params) == {"lower": -0.5, "upper": 0.5}
    batched = jax.tree.map(lambda a: a[None], p)
    _, terms = loss(batched)
    np.testing.assert_allclose(terms["bound"], expected, rtol=1e-5)
    np.testing.assert_allclose(terms["bound_d"], expected_d, rtol=1e-5)


@pytest.mark.parametrize("name", ["bsp", "rec", "inv", "inv_d", "bound", "bound_d"])
def test_zero_at_target_with_finite_gradient(name):
    p = _passes(perfect=True)
    loss = make_loss({name: 1.0})
    total, terms = loss(p)
    assert float(total) == 0.0 and float(terms[name]) == 0.0

    def f(pred):
        q = p._replace(deconvolved=pred, reconvolved=pred)
        return loss(q)[0]

    grad = jax.grad(f)(p.image)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_positive_away_from_target():
    p = _passes(seed=1)
    for name in ["bsp", "rec", "inv", "inv_d"]:
        assert float(make_loss({name: 1.0})(p)[0]) > 0


def test_composition_is_weighted_sum_and_jit_agrees():
    p = _passes(seed=2)
    loss = make_loss("noise2same")
    total, terms = loss(p)
    assert set(terms) == {"rec", "inv", "bound"}
    np.testing.assert_allclose(
        total, terms["rec"] + 2 * terms["inv"] + 0.1 * terms["bound"], rtol=1e-6
    )
    jt, _ = jax.jit(loss)(p)
    np.testing.assert_allclose(jt, total, rtol=1e-6)
    # Batch mean equals the mean of per-patch values (vmap over patches).
    single = [
        make_loss("noise2same")(jax.tree.map(lambda a, i=i: a[i : i + 1] if jnp.ndim(a) else a, p))[
            0
        ]
        for i in range(2)
    ]
    np.testing.assert_allclose(total, np.mean(single), rtol=1e-5)


def test_presets_and_needs():
    assert make_loss("noise2self").needs == {"masked"}
    assert make_loss("noise2same").needs == {"masked", "unmasked"}
    assert make_loss("noise2same_d").weights == {"rec": 1.0, "inv_d": 2.0, "bound_d": 0.1}
    assert make_loss({"rec": 1.0}).needs == {"unmasked"}
    # noise2self runs with the unmasked pass absent.
    p = _passes(seed=3)._replace(deconvolved=None, reconvolved=None)
    assert np.isfinite(float(make_loss("noise2self")(p)[0]))


def test_user_registered_term_with_hyper_parameters():
    def tv(p, *, power=1.0):
        d = p.deconvolved
        return sum(jnp.mean(jnp.abs(jnp.diff(d, axis=a)) ** power) for a in range(d.ndim))

    register_loss("tv_test", tv, needs=("unmasked",), overwrite=True)
    assert "tv_test" in losses.registered_losses()
    p = _passes(seed=4)
    loss1 = make_loss({"rec": 1.0, "tv_test": 0.5}, hyper={"tv_test": {"power": 1.0}})
    loss2 = make_loss({"rec": 1.0, "tv_test": 0.5}, hyper={"tv_test": {"power": 2.0}})
    t1, terms1 = loss1(p)
    t2, terms2 = loss2(p)
    assert terms1["tv_test"] != terms2["tv_test"]
    np.testing.assert_allclose(t1, terms1["rec"] + 0.5 * terms1["tv_test"], rtol=1e-6)


def test_bad_compositions():
    with pytest.raises(ValueError, match="unknown loss terms"):
        make_loss({"bsp": 1.0, "nope": 1.0})
    with pytest.raises(ValueError, match="preset"):
        make_loss("noise2everything")
    with pytest.raises(ValueError, match="empty"):
        make_loss({})
    with pytest.raises(ValueError, match="exists"):
        register_loss("bsp", losses.blind_spot)
    with pytest.raises(ValueError, match="needs"):
        register_loss("x_bad", losses.blind_spot, needs=("sideways",))


def test_terms_are_bound_when_the_loss_is_built():
    # Re-registering a name does not change a loss built before: the registry is only
    # read by make_loss, never when a loss is called.
    def first(p):
        return jnp.mean(p.deconvolved) * 0 + 1.0

    def second(p):
        return jnp.mean(p.deconvolved) * 0 + 2.0

    register_loss("rebind_test", first, needs=("unmasked",), overwrite=True)
    loss = make_loss({"rebind_test": 1.0})
    register_loss("rebind_test", second, needs=("unmasked",), overwrite=True)
    p = _passes(seed=5)
    assert float(loss(p)[0]) == 1.0
    assert float(make_loss({"rebind_test": 1.0})(p)[0]) == 2.0


def test_explicit_hyper_parameters_win_over_defaults_and_unknown_ones_fail():
    loss = make_loss(
        [LossSpec("bound_d", 0.1, (("lower", -1.0),))], defaults={"lower": -5.0, "upper": 5.0}
    )
    ((_, _, term),) = loss.terms
    assert dict(term.params) == {"lower": -1.0, "upper": 5.0}
    # Defaults go only to terms that take them.
    ((_, _, rec),) = make_loss({"rec": 1.0}, defaults={"lower": 0.0}).terms
    assert rec.params == ()
    with pytest.raises(ValueError, match="takes no hyper-parameters"):
        make_loss({"rec": 1.0}, hyper={"rec": {"power": 2}})
    with pytest.raises(ValueError, match="not in the loss"):
        make_loss({"rec": 1.0}, hyper={"bsp": {"x": 1}})


def test_negative_weights_need_a_signed_term():
    with pytest.raises(ValueError, match="negative"):
        make_loss({"bsp": -1.0})
    register_loss(
        "reward_test",
        lambda p: jnp.mean(p.deconvolved),
        needs=("unmasked",),
        signed=True,
        overwrite=True,
    )
    assert make_loss({"rec": 1.0, "reward_test": -0.1}).weights["reward_test"] == -0.1
    with pytest.raises(ValueError, match="finite"):
        make_loss({"bsp": float("nan")})


def test_term_and_spec_are_values():
    t = Term(losses.bound, frozenset({"unmasked"})).bind(lower=0.0)
    assert t == Term(losses.bound, frozenset({"unmasked"}), (("lower", 0.0),))
    hash(t)
    spec = LossSpec("bound_d", 0.1, (("upper", 2.0),))
    assert LossSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="finite number"):
        LossSpec("bsp", 1.0, (("x", float("inf")),))
    with pytest.raises(ValueError, match="must be a number"):
        LossSpec("bsp", "1")


def test_prior_is_the_anchor_penalties_per_pixel():
    import scipy.ndimage as ndi

    p = jax.tree.map(lambda a: a[0] if jnp.ndim(a) else a, _passes(seed=7))
    d = np.asarray(p.deconvolved, np.float64)
    lap = ndi.laplace(d, mode="reflect")  # the second difference; the prior squares it
    want = (0.3 * lap**2 + 2 * 0.1 * np.abs(d + 0.5)).mean()
    got = losses.prior_deconvolved(p, lower=-0.5, laplacian_weight=0.3, sparsity=0.1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Defaults bind by name; with none given the term is zero (no penalty).
    ((_, _, term),) = make_loss({"prior": 1.0}, defaults={"lower": -0.5}).terms
    assert dict(term.params) == {"lower": -0.5}
    assert float(make_loss({"prior": 1.0})(jax.tree.map(lambda a: a[None], p))[0]) == 0.0
