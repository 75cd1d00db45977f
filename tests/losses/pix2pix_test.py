"""pix2pix losses (losses/pix2pix.py) on tiny PatchGAN logits against numpy formulas."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmedgan.losses import pix2pix as L

SOFTPLUS = lambda x: np.logaddexp(0, x)


def _arrays(b=2, seed=0):
    rng = np.random.default_rng(seed)
    real_logit, fake_logit, g_logit = (rng.normal(size=(b, 3, 3)).astype(np.float32) for _ in range(3))
    fake, real = (rng.uniform(-1, 1, (b, 4, 4, 2)).astype(np.float32) for _ in range(2))
    return real_logit, fake_logit, g_logit, fake, real


def _config(**loss):
    return ml_collections.ConfigDict({"loss": {"l1_weight": 100.0, **loss}})


def test_objective_reads_kind_and_l1_weight_and_names_a_bad_kind():
    assert L.Objective.from_config(_config()) == L.Objective("nonsaturating", 100.0)  # kind absent: old runs
    assert L.Objective.from_config(_config(kind="hinge", l1_weight=10)) == L.Objective("hinge", 10.0)
    with pytest.raises(ValueError, match=r"config.loss.kind='wasserstein' must be one of \['hinge', 'nonsaturating'\]"):
        L.Objective.from_config(_config(kind="wasserstein"))


def test_patch_mean_and_l1():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(L.patch_mean(jnp.asarray(x)), [5.5, 17.5])
    np.testing.assert_allclose(L.l1(jnp.ones((2, 2)), jnp.asarray([[0.0, 3.0], [1.0, -1.0]])), (1 + 2 + 0 + 2) / 4)


@pytest.mark.parametrize("kind", ["nonsaturating", "hinge"])
def test_d_and_g_losses_equal_numpy(kind):
    real_logit, fake_logit, g_logit, fake, real = _arrays()
    obj = L.Objective(adversarial=kind, l1_weight=7.0)
    if kind == "nonsaturating":
        d_expected = SOFTPLUS(-real_logit).mean(axis=(1, 2)) + SOFTPLUS(fake_logit).mean(axis=(1, 2))
        g_adv = SOFTPLUS(-g_logit).mean(axis=(1, 2))
    else:
        d_expected = np.maximum(0, 1 - real_logit).mean(axis=(1, 2)) + np.maximum(0, 1 + fake_logit).mean(axis=(1, 2))
        g_adv = (-g_logit).mean(axis=(1, 2))
    np.testing.assert_allclose(obj.d_loss(jnp.asarray(real_logit), jnp.asarray(fake_logit)), d_expected, rtol=1e-5)
    np.testing.assert_allclose(obj.g_adversarial(jnp.asarray(g_logit)), g_adv, rtol=1e-5, atol=1e-6)
    l1 = np.abs(fake - real).mean()
    total, parts = obj.g_loss(jnp.asarray(g_logit), jnp.asarray(fake), jnp.asarray(real))
    np.testing.assert_allclose(parts["adversarial"], g_adv.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["l1"], l1, rtol=1e-6)
    np.testing.assert_allclose(total, g_adv.mean() + 7.0 * l1, rtol=1e-5)
    np.testing.assert_allclose(obj.g_total(2.0, 0.5), 2.0 + 7.0 * 0.5)


def test_example_loss_is_one_examples_d_plus_g_loss():
    real_logit, fake_logit, g_logit, fake, real = _arrays(b=1, seed=1)
    obj = L.Objective(l1_weight=100.0)
    d = SOFTPLUS(-real_logit).mean() + SOFTPLUS(fake_logit).mean()
    g, l1 = SOFTPLUS(-g_logit).mean(), np.abs(fake - real).mean()
    loss, parts = obj.example_loss(*(jnp.asarray(a) for a in (real_logit, fake_logit, g_logit, fake, real)))
    assert np.shape(loss) == () and all(np.shape(v) == () for v in parts.values())
    np.testing.assert_allclose([parts["d_loss"], parts["g_loss"], parts["g_l1"]], [d, g, l1], rtol=1e-5)
    np.testing.assert_allclose(loss, d + g + 100.0 * l1, rtol=1e-5)
