"""Data-efficient DCGAN / ACGAN training: D augmentation (DiffAugment, ADA), G EMA, resize-conv
up-sampling, hinge loss; each with and without DP where it applies."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan import sharding
from jaxmedgan.trainers import common, gan

from tests.trainers.gan_cond_test import _batch, tiny_config
from tests.trainers.gan_dp_test import _steps


def _configure(c, kind="diffaug", ema=True, upsample="nearest", loss="nonsaturating", **ada):
    c.d_augment.kind, c.ema.enabled, c.model.g_upsample, c.loss.kind = kind, ema, upsample, loss
    for k, v in ada.items():
        c.ada[k] = v
    return c


def _run(config, dp=False, n=3):
    state = gan.init_state(config, jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(gan.train_step, config))
    params, history = [state.g_params], []
    for i in range(n):
        state, m = step(state, _batch(seed=i, dp=dp))
        params.append(state.g_params)
        history.append(jax.device_get(m))
    return state, params, history


@pytest.mark.parametrize("dp", [False, True], ids=["nondp", "dp"])
@pytest.mark.parametrize("kind,upsample,loss,ada", [
    ("diffaug", "nearest", "hinge", {}),
    ("ada", "fir", "nonsaturating", {"mode": "fixed", "p": 0.5}),
])
def test_options_train_and_stay_finite(kind, upsample, loss, ada, dp):
    config = _configure(tiny_config(dp=dp), kind, True, upsample, loss, **ada)
    config.loss.r1_gamma = 1.0
    state, _, history = _run(config, dp)
    assert int(state.step) == 3
    for m in history:
        bad = {k: v for k, v in m.items() if np.ndim(v) == 0 and not np.isfinite(v)}
        assert not bad, bad
    assert ("aug_p" in history[-1]) == (kind == "ada") and "ema_beta" in history[-1]
    assert {"aug_p", "ema_beta"} <= set(gan.FAMILY.dp_public_metrics)


def test_augmentation_changes_what_d_sees_and_none_does_not():
    # Same state and batch: with augmentation D's loss differs from the raw-image loss.
    plain = _configure(tiny_config(), "none", ema=False, upsample="transpose")
    diff = _configure(tiny_config(), "diffaug", ema=False, upsample="transpose")
    state = gan.init_state(plain, jax.random.PRNGKey(0))
    m_plain = jax.jit(functools.partial(gan.train_step, plain))(state, _batch())[1]
    m_aug = jax.jit(functools.partial(gan.train_step, diff))(state, _batch())[1]
    assert float(m_aug["d_loss"]) != pytest.approx(float(m_plain["d_loss"]), rel=1e-3)
    assert gan.init_state(plain, jax.random.PRNGKey(0)).extra == {}  # no new state without the options


def test_ema_is_the_ramped_average_of_g_weights_and_generate_uses_it():
    config = _configure(tiny_config(), "none", ema=True, upsample="transpose")
    state, params, _ = _run(config, n=3)
    # Reference: e_0 = p_0; e_t = p_t + beta(t-1) (e_{t-1} - p_t), beta from the formula by hand.
    batch, ema_nimg = config.train.batch_size, config.train.batch_size * 10 / 32 * 1000
    ema = params[0]
    for t in range(1, 4):
        nimg = min(ema_nimg, (t - 1) * batch * config.ema.rampup)
        beta = 0.5 ** (batch / max(nimg, 1e-8))
        ema = jax.tree_util.tree_map(lambda e, p: p + beta * (e - p), ema, params[t])
    for a, b in zip(jax.tree_util.tree_leaves(ema), jax.tree_util.tree_leaves(state.extra["g_ema_params"])):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(state.g_params),
                                                     jax.tree_util.tree_leaves(state.extra["g_ema_params"])))
    z, labels = jnp.ones((2, config.model.latent_dim)), jnp.array([0, 1])
    g, _ = gan.build_models(config)
    expected = g.apply({"params": state.extra["g_ema_params"], "batch_stats": state.g_stats}, z, labels, train=False)
    np.testing.assert_allclose(gan.generate(config, state, z, labels), expected, rtol=1e-6)
    assert common.ema_beta(config, jnp.int32(0)) == 0.0


def test_hinge_terms_match_their_formulas():
    obj = gan.Objective.from_config(_configure(tiny_config(), loss="hinge"))
    logit = np.array([-2.0, -0.5, 0.0, 0.7, 3.0], np.float32)
    np.testing.assert_allclose(obj.d_real(logit), np.maximum(0, 1 - logit))
    np.testing.assert_allclose(obj.d_fake(logit), np.maximum(0, 1 + logit))
    np.testing.assert_allclose(obj.g_adv(logit), -logit)
    ns = gan.Objective.from_config(tiny_config())
    np.testing.assert_allclose(ns.d_real(logit), np.log1p(np.exp(-logit)), rtol=1e-6)
    np.testing.assert_allclose(ns.g_adv(logit), np.log1p(np.exp(-logit)), rtol=1e-6)
    with pytest.raises(ValueError, match="config.loss.kind='wasserstein'"):
        gan.Objective.from_config(_configure(tiny_config(), loss="wasserstein"))
    with pytest.raises(ValueError, match="config.model.g_upsample='bicubic'"):
        gan.build_models(_configure(tiny_config(), upsample="bicubic"))


def test_adaptive_ada_moves_p_in_the_step_and_is_refused_under_dp():
    config = _configure(tiny_config(), "ada", ema=False, upsample="transpose", mode="adaptive", p=0.5,
                        interval=1, kimg=0.008)  # p moves by 8 * 1 / 8 = 1 per step: to 0 or 1
    state, _, history = _run(config, n=2)
    assert float(state.extra["aug_p"]) in (0.0, 1.0)
    with pytest.raises(ValueError, match="config.ada.mode='adaptive'"):
        gan.init_state(_configure(tiny_config(dp=True), "ada", mode="adaptive"), jax.random.PRNGKey(0))


@pytest.mark.slow  # end to end (~30-50 s on 2 cores): the slow set, which CI also runs
def test_private_step_with_diffaug_is_the_same_on_8_devices_as_on_1():
    # The augmentation keys come from the state's key, not from the device layout.
    config = _configure(tiny_config(dp=True), "diffaug", ema=True, upsample="nearest")

    s1, (*_, m1) = _steps(config, sharding.make_mesh(None, jax.devices()[:1]))
    s8, (*_, m8) = _steps(config, sharding.make_mesh(None, jax.devices()))
    for k in m1:
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves(s1.extra), jax.tree_util.tree_leaves(s8.extra)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
