"""pix2pix trainer: exact L1 weighting, DP gradient = plain gradient without noise/clipping,
DP refusals, and a short run on MNI slices lowering held-out L1 below its initial value."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pix2pix_brain
from jaxmedgan.data import paired
from jaxmedgan.trainers import pix2pix

from tests.dp_helpers import noise_key_rows, through_noise


def tiny_config(size=16, num_labels=3, channels=1, **model):
    c = pix2pix_brain.get_config()
    c.data.image_size, c.data.num_labels, c.data.channels = size, num_labels, channels
    c.model.g_features, c.model.g_max_features = 4, 8
    c.model.d_features, c.model.d_max_features = 4, 8
    c.model.d_num_strided = 2
    c.model.update(model)
    c.train.batch_size = 4
    c.mesh.data = 1
    return c


def _batch(c, n=4, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    s = c.data.image_size
    maps = jax.random.randint(k1, (n, s, s), 0, c.data.num_labels)
    return {"cond": jax.nn.one_hot(maps, c.data.num_labels),
            "image": jnp.tanh(jax.random.normal(k2, (n, s, s, c.data.channels))),
            "label": jnp.zeros((n,), jnp.int32), "mask": jnp.ones((n,), jnp.float32),
            "dp_noise_key": noise_key_rows(n)}


def test_l1_weight_enters_the_generator_loss_exactly():
    c = tiny_config()
    state = pix2pix.init_state(c, jax.random.PRNGKey(0))
    batch = _batch(c)

    def loss(weight):
        c.loss.l1_weight = weight
        total, (metrics, _) = pix2pix.g_loss(c, state.g_params, state.g_stats, state.d_variables(), batch,
                                             jax.random.PRNGKey(3))
        return float(total), {k: float(v) for k, v in metrics.items()}

    t0, m0 = loss(0.0)
    t100, m100 = loss(100.0)
    assert m0 == m100  # same dropout key: same fake, same adversarial and L1 terms
    assert t0 == pytest.approx(m0["g_loss"], rel=1e-6)
    assert t100 - t0 == pytest.approx(100.0 * m0["g_l1"], rel=1e-5)
    assert m0["g_l1"] > 0.1


def test_private_update_equals_plain_gradients_without_noise_or_clipping():
    """sigma = 0 and a huge clip: the joint DP gradient is grad_D of the mean D loss and grad_G of
    the mean G loss at the pre-step parameters (dropout off, so both see the same fakes)."""
    c = tiny_config(dropout=0.0)
    c.privacy.enabled, c.privacy.noise_multiplier, c.privacy.l2_clip = True, 0.0, 1e9
    state = pix2pix.init_state(c, jax.random.PRNGKey(0))
    batch = _batch(c)
    d_grads, g_grads, metrics = jax.jit(
        lambda s, b: pix2pix._private_update(c, s, b, jax.random.PRNGKey(5), None))(state, batch)
    d_grads, g_grads = through_noise((d_grads, g_grads), c)  # the optimisers' noise (sigma = 0): / E[B]
    g, _ = pix2pix.build_models(c)
    fake = g.apply(state.g_variables(), batch["cond"], train=True)
    want_d = jax.grad(lambda p: pix2pix.d_loss(c, p, {}, batch, fake)[0])(state.d_params)
    want_g = jax.grad(lambda p: pix2pix.g_loss(c, p, {}, state.d_variables(), batch,
                                               jax.random.PRNGKey(0))[0])(state.g_params)
    for got, want in ((d_grads, want_d), (g_grads, want_g)):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert float(metrics["dp_clip_fraction"]) == 0.0 and float(metrics["dp_num_examples"]) == 4


@pytest.mark.slow  # ~25 s; the default suite checks ghost sums here (no clipping) and ghost norms on D alone
def test_private_update_ghost_clipping_equals_vmap_with_clipping_active():
    """auto resolves to ghost for pix2pix: D's two calls per example, G's transposed convs and
    instance norms, and D's stop_gradient-ed call in G's term give vmap's clipped sums and norms."""
    assert pix2pix.private_config(tiny_config()).clip_method == "ghost"
    out = {}
    for method in ("vmap", "ghost"):
        c = tiny_config()
        c.privacy.enabled, c.privacy.noise_multiplier, c.privacy.l2_clip = True, 0.0, 0.05
        c.privacy.clip_method = method
        state = pix2pix.init_state(c, jax.random.PRNGKey(0))
        batch = _batch(c)
        batch["image"] = batch["image"] * jnp.asarray([0.1, 1.0, 3.0, 0.5])[:, None, None, None]
        out[method] = jax.device_get(jax.jit(
            lambda s, b: pix2pix._private_update(c, s, b, jax.random.PRNGKey(5), None))(state, batch))
    (vd, vg, vm), (gd, gg, gm) = out["vmap"], out["ghost"]
    for a, b in zip(jax.tree_util.tree_leaves((gd, gg)), jax.tree_util.tree_leaves((vd, vg))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gm["dp_grad_norm_mean"], vm["dp_grad_norm_mean"], rtol=1e-5)
    assert float(vm["dp_clip_fraction"]) == 1.0  # every example clipped: the norms decide the sums


def test_dp_refuses_batch_norm_in_either_net():
    from jaxmedgan.privacy import checks

    c = tiny_config(d_norm="batch")
    c.privacy.enabled = True
    state = jax.eval_shape(lambda: pix2pix.init_state(c, jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="d_norm='batch'"):
        checks.check_dp_compatible(c, state.d_variables())
    c = tiny_config(g_norm="batch")
    c.privacy.enabled = True
    with pytest.raises(ValueError, match="g_norm='batch'.*instance"):
        pix2pix.train_and_evaluate(c, "/nonexistent")
    c.privacy.enabled, c.data.augment = False, True
    with pytest.raises(ValueError, match="augment=False"):
        pix2pix.train_and_evaluate(c, "/nonexistent")


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_short_run_lowers_held_out_l1_on_mni_slices(tmp_path):
    c = tiny_config(size=32, num_labels=6)
    c.data.variants = 1
    c.train.steps, c.train.log_every, c.train.eval_every = 60, 30, 60
    c.checkpoint.every, c.samples.every, c.samples.per_row = 60, 60, 4
    c.train.quiet = True
    c.optim.g_lr = c.optim.d_lr = 1e-3
    source, test = paired.load(c)
    assert source[0]["cond"].shape == (32, 32, 6) and test["map"].max() == 5
    init = pix2pix.init_state(c, jax.random.PRNGKey(c.seed))
    l1_init = pix2pix.evaluate(c, init, test)["eval/l1"]
    pix2pix.train_and_evaluate(c, str(tmp_path), data=(source, test))
    records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    l1_end = [r["eval/l1"] for r in records if "eval/l1" in r][-1]
    assert l1_end < 0.6 * l1_init, (l1_init, l1_end)
    assert os.path.exists(tmp_path / "samples" / "step_0000060.png")  # rows map | fake | real


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_short_dp_run_completes_and_logs_epsilon(tmp_path):
    from jaxmedgan import checkpointing

    c = tiny_config()
    c.privacy.enabled, c.privacy.noise_multiplier, c.privacy.l2_clip = True, 1.0, 1.0
    c.train.steps, c.train.log_every, c.train.eval_every = 3, 1, 3
    c.checkpoint.every, c.samples.every, c.samples.per_row, c.train.quiet = 3, 3, 2, True
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 3, (32, 16, 16)).astype(np.uint8)
    imgs = np.tanh(rng.normal(size=(32, 16, 16, 1))).astype(np.float32)
    source = paired.PairSource(imgs, maps, 3)
    test = {"image": imgs[:4], "map": maps[:4]}
    pix2pix.train_and_evaluate(c, str(tmp_path), data=(source, test))
    eps = [json.loads(l)["dp/epsilon"] for l in open(tmp_path / "metrics.jsonl") if "dp/epsilon" in l]
    assert len(eps) == 3 and 0 < eps[0] < eps[1] < eps[2] and np.isfinite(eps[2])
    mngr = checkpointing.manager(str(tmp_path), async_save=False)
    assert checkpointing.read_meta(mngr, 3)["dp_epsilon"] == pytest.approx(eps[2])
    cfg = checkpointing.read_config(str(tmp_path))
    assert cfg.privacy.sampling_rate == pytest.approx(4 / 32)  # q = expected batch / N, recorded
    # White-box canaries ride on D's half of the joint vector. With the noise from the public seed the
    # audit's replay subtracts it exactly: out-canaries score 0, in-canaries C x (steps they joined).
    from jaxmedgan import sampling
    from jaxmedgan.studies import audit

    c.privacy.canaries, c.privacy.secure_rng = 40, False
    wd = tmp_path / "canaries"
    pix2pix.train_and_evaluate(c, str(wd), data=(source, test))
    config, state, step = sampling.restore_state(str(wd))
    scores, in_coins, mechanism = audit.canary_scores(config, state, step, str(wd))
    assert mechanism == "public_noise" and step == 3
    np.testing.assert_allclose(scores[~in_coins], 0.0, atol=1e-3)
    np.testing.assert_allclose(scores[in_coins], np.round(scores[in_coins]), atol=1e-3)  # C = 1: integers
    assert scores[in_coins].max() > 0.99 and scores[in_coins].min() > -1e-3
