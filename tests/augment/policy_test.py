"""The D augmentation policy shared by GAN families: config reading, the in-graph adaptive p
against the host controller, DP refusal."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jaxmedgan.augment import controller, policy


def _config(kind="diffaug", **ada):
    c = ml_collections.ConfigDict()
    c.d_augment = common.d_augment(kind)
    c.ada = common.ada(**ada)
    return c


def test_from_config_reads_kinds_and_names_bad_values():
    assert policy.DAugment.from_config(ml_collections.ConfigDict()).kind == "none"  # runs before the key
    aug = policy.DAugment.from_config(_config("diffaug"))
    assert aug.active and aug.ops == ("color", "translation", "cutout") and aug.init_extra() == {}
    with pytest.raises(ValueError, match="config.d_augment.kind='flip'"):
        policy.DAugment.from_config(_config("flip"))
    c = _config("diffaug")
    c.d_augment.policy = "color,zoom"
    with pytest.raises(ValueError, match="zoom"):
        policy.DAugment.from_config(c)
    with pytest.raises(ValueError, match="ada.mode"):
        policy.DAugment.from_config(_config("ada", mode="sometimes"))
    with pytest.raises(ValueError, match="pipeline"):
        policy.DAugment.from_config(_config("ada", pipeline="nope"))
    assert not policy.DAugment.from_config(_config("ada", mode="fixed", p=0.0)).active
    assert set(policy.DAugment.from_config(_config("ada")).init_extra()) == {"aug_p", "aug_sign_sum", "aug_sign_count"}
    assert set(policy.DAugment.from_config(_config("ada", mode="fixed", p=0.3)).init_extra()) == {"aug_p"}


def test_in_graph_adaptive_p_follows_the_host_controller():
    aug = policy.DAugment.from_config(_config("ada", p=0.1, interval=3, kimg=0.05))
    batch = 8
    ctl = controller.AdaController(aug.ada_settings, batch)
    extra = aug.init_extra()
    update = jax.jit(lambda e, logits, step: aug.update_p(e, logits, step, batch))
    rng = np.random.default_rng(0)
    p_host, sums, count = 0.1, 0.0, 0
    for step in range(1, 25):
        logits = rng.normal(0.3 if step < 12 else -0.5, 1.0, batch).astype(np.float32)
        extra = update(extra, jnp.asarray(logits), jnp.int32(step))
        sums, count = sums + np.sign(logits).sum(), count + batch
        if ctl.due(step):
            p_host, _ = ctl.update(p_host, sums, count)
            sums, count = 0.0, 0
        assert float(extra["aug_p"]) == pytest.approx(p_host, abs=1e-6), step
    assert p_host != 0.1  # the trajectory moved


def test_adaptive_p_is_refused_under_dp_fixed_and_diffaug_are_not():
    with pytest.raises(ValueError, match="config.ada.mode='adaptive'"):
        policy.DAugment.from_config(_config("ada")).check_dp(True)
    policy.DAugment.from_config(_config("ada", mode="fixed", p=0.2)).check_dp(True)
    policy.DAugment.from_config(_config("diffaug")).check_dp(True)


def test_call_applies_the_chosen_pipeline():
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)), jnp.float32)
    key = jax.random.PRNGKey(0)
    none = policy.DAugment.from_config(_config("none"))
    np.testing.assert_array_equal(none(x, key, {}), x)
    fixed = policy.DAugment.from_config(_config("ada", mode="fixed", p=1.0))
    assert not np.allclose(fixed(x, key, fixed.init_extra()), x)
    zero = {"aug_p": jnp.float32(0.0)}
    np.testing.assert_array_equal(fixed(x, key, zero), x)  # ADA with p = 0 is the identity
