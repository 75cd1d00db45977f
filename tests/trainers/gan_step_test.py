"""DCGAN/ACGAN train step: sharded over 8 devices equals 1 device; the losses do what they say."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import acgan_liver
from jaxmedgan import sharding
from jaxmedgan.trainers import gan

from tests.dp_helpers import noise_key_rows, through_noise


def tiny_config(**model):
    # The classic ACGAN step (aux head, raw images to D): these are unit tests of the step's terms;
    # the data-efficient options are tested in gan_data_efficient_test.py, the default end to end
    # in gan_train_test.py.
    c = acgan_liver.classic(acgan_liver.get_config())
    c.data.image_size = 16
    c.model.latent_dim = 8
    c.model.g_features = 4
    c.model.d_features = 4
    c.train.batch_size = 8
    for k, v in model.items():
        c.model[k] = v
    return c


def _batch(config, n=8, seed=0):
    rng = np.random.default_rng(seed)
    s = config.data.image_size
    return {"image": rng.uniform(-1, 1, (n, s, s, 1)).astype(np.float32),
            "label": rng.integers(0, 3, n).astype(np.int32)}


def _run_steps(config, mesh, n_steps=3):
    init = functools.partial(gan.init_state, config)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    shard = sharding.tree_shardings(abstract, mesh)
    state = jax.jit(init, out_shardings=shard)(jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(gan.train_step, config),
                   in_shardings=(shard, sharding.batch_sharding(mesh)),
                   out_shardings=(shard, sharding.replicated(mesh)), donate_argnums=(0,))
    history = []
    for i in range(n_steps):
        state, metrics = step(state, sharding.shard_batch(_batch(config, seed=i), mesh))
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


@pytest.mark.parametrize("g_norm,d_norm", [("batch", "layer"), pytest.param("batch", "batch", marks=pytest.mark.slow)])
def test_eight_devices_match_one_device(g_norm, d_norm):
    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    config = tiny_config(g_norm=g_norm, d_norm=d_norm)
    s1, h1 = _run_steps(config, sharding.make_mesh(None, jax.devices()[:1]))
    s8, h8 = _run_steps(config, sharding.make_mesh(None, jax.devices()))
    for m1, m8 in zip(h1, h8):
        for k in m1:
            np.testing.assert_allclose(m8[k], m1[k], rtol=2e-4, atol=2e-5, err_msg=k)
    flat1 = jax.tree_util.tree_leaves_with_path(s1)
    flat8 = jax.tree_util.tree_leaves(s8)
    for (path, a), b in zip(flat1, flat8):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5, err_msg=jax.tree_util.keystr(path))


def test_step_counts_and_changes_both_networks():
    config = tiny_config()
    state = gan.init_state(config, jax.random.PRNGKey(0))
    new, metrics = jax.jit(functools.partial(gan.train_step, config))(state, _batch(config))
    assert int(new.step) == 1
    for name in ("g_params", "d_params"):
        before = jax.tree_util.tree_leaves(getattr(state, name))
        after = jax.tree_util.tree_leaves(getattr(new, name))
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), name
    # At initialisation D is near chance: logistic loss ~ 2 log 2, G loss ~ log 2.
    assert abs(float(metrics["d_loss"]) - 2 * np.log(2)) < 0.1
    assert abs(float(metrics["g_loss"]) - np.log(2)) < 0.1
    assert abs(float(metrics["d_aux_loss"]) - np.log(3)) < 0.1
    assert set(metrics) >= {"d_real_acc", "d_fake_acc", "aux_real_acc", "d_grad_norm", "g_grad_norm"}


def test_d_step_reduces_discriminator_loss_on_fixed_data():
    # Repeating steps on one batch, D must learn to separate it from the (moving) fakes.
    config = tiny_config()
    config.optim.d_lr = 2e-3
    config.optim.g_lr = 0.0
    state = gan.init_state(config, jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(gan.train_step, config))
    batch = _batch(config)
    first = None
    for _ in range(30):
        state, m = step(state, batch)
        first = first if first is not None else float(m["d_loss"])
    assert float(m["d_loss"]) < 0.5 * first
    assert float(m["aux_real_acc"]) == 1.0  # memorises 8 labelled examples


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32_losses():
    config = tiny_config()
    state = gan.init_state(config, jax.random.PRNGKey(0))
    _, m32 = jax.jit(functools.partial(gan.train_step, config))(state, _batch(config))
    config.train.dtype = "bfloat16"
    state16 = gan.init_state(config, jax.random.PRNGKey(0))
    step16 = jax.jit(functools.partial(gan.train_step, config))
    new16, m16 = step16(state16, _batch(config))
    hlo = step16.lower(state16, _batch(config)).as_text()
    assert "bf16" in hlo and "convolution" in hlo  # the convolutions really run in bfloat16
    assert {x.dtype for x in jax.tree_util.tree_leaves(new16.g_params)} == {jnp.dtype("float32")}
    assert {x.dtype for x in jax.tree_util.tree_leaves(new16.d_opt_state)} <= {jnp.dtype("float32"), jnp.dtype("int32")}
    for k in ("d_loss", "g_loss", "d_aux_loss"):
        assert abs(float(m16[k]) - float(m32[k])) < 0.05 * abs(float(m32[k])), k  # bf16: ~3 digits
    z = jnp.ones((2, config.model.latent_dim))
    hidden = jax.eval_shape(lambda: gan.build_models(config)[0].apply(
        {"params": new16.g_params, "batch_stats": new16.g_stats}, z, jnp.zeros((2,), jnp.int32), train=False))
    assert hidden.dtype == jnp.float32  # outputs are cast back to float32 at the model boundary


def test_r1_penalty_matches_a_per_example_loop_and_is_the_same_under_dp():
    config = tiny_config(num_classes=0, d_norm="layer", mbstd_group_size=0)  # a per-example D
    config.loss.r1_gamma = 2.0
    state = gan.init_state(config, jax.random.PRNGKey(0))
    batch = _batch(config)
    _, d = gan.build_models(config)
    # Independent reference: one example at a time, gamma/2 * ||dD(x_i)/dx_i||^2.
    grad_one = jax.jit(jax.grad(lambda x: d.apply({"params": state.d_params}, x[None], train=False)[0][0]))
    expected = np.mean([np.sum(np.square(grad_one(x))) for x in batch["image"]])
    fake = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, batch["image"].shape), jnp.float32)
    grads, m, _, _ = jax.jit(functools.partial(gan._d_update, config))(state, batch, fake, None, jax.random.PRNGKey(3))
    np.testing.assert_allclose(m["d_r1"], 0.5 * 2.0 * expected, rtol=1e-4)
    assert m["d_r1"] > 0
    # DP with no noise and no clipping: the per-example R1 inside the clipped loss gives the same gradient.
    config.privacy.enabled, config.privacy.noise_multiplier, config.privacy.l2_clip = True, 0.0, 1e9
    config.privacy.clip_fake = False
    dp_batch = {**batch, "mask": np.ones(8, np.float32), "dp_noise_key": noise_key_rows(8)}
    private = lambda c: jax.jit(lambda *a: gan._d_update_private(c, *a, None, jax.random.PRNGKey(3), None))
    dp_grads = through_noise(private(config)(state, dp_batch, fake)[0], config)  # sigma = 0: / E[B]
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(dp_grads)):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6)
    config.loss.r1_gamma = 0.0
    no_r1 = through_noise(private(config)(state, dp_batch, fake)[0], config)
    diff = optax.tree.norm(jax.tree_util.tree_map(jnp.subtract, no_r1, dp_grads))
    assert diff > 1e-3 * optax.tree.norm(dp_grads)  # the R1 term really is in the DP gradient
