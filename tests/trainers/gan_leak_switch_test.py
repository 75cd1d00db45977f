"""The forced-leak test switch (`d_augment.kind='leak_test_<t>'`, augment/policy.py) in the DCGAN /
ACGAN step: it transforms D's real inputs and nothing else."""
import functools

import jax
import numpy as np
import pytest

from jaxmedgan.trainers import gan

from tests.trainers.gan_cond_test import _batch, tiny_config


@pytest.mark.slow  # three train-step compiles (~30 s idle, ~75 s on 2 shared cores)
def test_leak_switch_equals_feeding_transformed_reals_to_a_plain_step():
    leak_cfg, plain_cfg = tiny_config(), tiny_config()
    leak_cfg.d_augment.kind, plain_cfg.d_augment.kind = "leak_test_invert", "none"
    leak_cfg.ema.enabled = plain_cfg.ema.enabled = False
    state = gan.init_state(plain_cfg, jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(
        gan.init_state(leak_cfg, jax.random.PRNGKey(0)))
    batch = _batch()
    flipped = {**batch, "image": -batch["image"]}
    s_leak, m_leak = jax.jit(functools.partial(gan.train_step, leak_cfg))(state, batch)
    s_plain, m_plain = jax.jit(functools.partial(gan.train_step, plain_cfg))(state, flipped)
    # Same keys, same generated images (never transformed): only the reals were inverted.
    for k in m_plain:
        np.testing.assert_allclose(m_leak[k], m_plain[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves((s_leak.g_params, s_leak.d_params)),
                    jax.tree_util.tree_leaves((s_plain.g_params, s_plain.d_params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    _, m_raw = jax.jit(functools.partial(gan.train_step, plain_cfg))(state, batch)
    assert float(m_raw["d_real_logit"]) != pytest.approx(float(m_leak["d_real_logit"]), rel=1e-3)
