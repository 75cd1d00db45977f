"""PGGAN under DP-SGD: the private D gradient (no noise, no clipping) equals the plain WGAN-GP one,
on 8 devices; a short DP run grows a level and logs the accountant's epsilon; bad configs refused."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pggan_chest_dp
from jaxmedgan import checkpointing, metric_writers, sharding
from jaxmedgan.data import chest_phantoms, pipeline
from jaxmedgan.privacy import accounting
from jaxmedgan.trainers import pggan as tr

from tests.dp_helpers import through_noise

LEVEL, ALPHA = 1, 0.5  # 8 px, fading in: reals and D both blend two resolutions


def _inputs(n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, 16, 16, 1)).astype(np.float32)
    real = np.asarray(tr.pg.fade_reals(jnp.asarray(images), LEVEL, ALPHA))
    fake = rng.uniform(-1, 1, real.shape).astype(np.float32)
    eps = rng.uniform(size=(n,)).astype(np.float32)
    return real, fake, eps


@pytest.mark.parametrize("gp_on", ["interpolates", "fake"])
def test_private_d_gradient_without_noise_or_clipping_equals_the_plain_gradient(gp_on):
    """gp_on='fake': the penalty is the public term at the fakes (unclipped) and 'auto' clips by ghost."""
    c = pggan_chest_dp.tiny()
    c.privacy.l2_clip = 1e6  # never reached: clipping is the identity
    c.privacy.noise_multiplier = 0.0
    c.loss.gp_on = gp_on
    assert tr.private_config(c).clip_method == ("vmap" if gp_on == "interpolates" else "ghost")
    state = tr.init_state(c, jax.random.PRNGKey(0))
    real, fake, eps = _inputs()
    mask = np.ones((8,), np.float32)  # a full batch of 8 = train.batch_size (the expected batch)
    _, d = tr.build_models(c)

    def reference_loss(p):  # WGAN-GP + drift written out on the whole batch, mean over 8
        score = lambda x: d.apply({"params": p}, x, LEVEL, ALPHA)
        x_hat = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
        grad_x = jax.grad(lambda x: jnp.sum(score(x)))(x_hat if gp_on == "interpolates" else fake)
        norm = jnp.sqrt(jnp.sum(grad_x**2, axis=(1, 2, 3)))
        d_real = score(real)
        return jnp.mean(score(fake) - d_real + 10.0 * (norm - 1.0) ** 2 + 0.001 * d_real**2)

    expected_loss, expected = jax.device_get(jax.jit(jax.value_and_grad(reference_loss))(state.d_params))

    def private(params, real, fake, eps, mask, mesh):
        grads, metrics = tr.d_private_grads(c, params, real, fake, eps, mask, jnp.float32(ALPHA), level=LEVEL,
                                            mesh=mesh)
        return through_noise(grads, c), metrics  # sigma = 0: / E[B]

    # On 8 devices: each device clips its own example inside shard_map, then one psum and one noise draw.
    mesh = sharding.make_mesh(None, jax.devices())
    assert mesh.size == 8
    shard = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
    got, metrics = jax.device_get(jax.jit(functools.partial(private, mesh=mesh))(
        state.d_params, shard(real), shard(fake), shard(eps), shard(mask)))
    for (path, e), a in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree_util.tree_leaves(got)):
        scale = np.max(np.abs(e)) + 1e-6
        np.testing.assert_allclose(a / scale, e / scale, atol=1e-4, err_msg=jax.tree_util.keystr(path))
    assert metrics["dp_num_examples"] == 8 and metrics["dp_clip_fraction"] == 0.0
    np.testing.assert_allclose(metrics["d_loss"], expected_loss, rtol=1e-4)


def test_penalty_at_the_fakes_clipped_by_ghost_equals_vmap_clipping():
    """With clipping active (C below most examples' norms), gp_on='fake' under ghost clipping gives the
    gradient vmap clipping gives: the clipped real term alike, the public penalty added as is."""
    c = pggan_chest_dp.tiny()
    c.privacy.noise_multiplier = 0.0
    c.loss.gp_on = "fake"
    state = tr.init_state(c, jax.random.PRNGKey(0))
    real, fake, eps = _inputs(seed=1)
    mask = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # two padding rows

    def grads(method, l2_clip):
        c.privacy.clip_method, c.privacy.l2_clip = method, l2_clip
        g, m = jax.jit(lambda p: tr.d_private_grads(c, p, real, fake, eps, mask, jnp.float32(ALPHA), level=LEVEL))(
            state.d_params)
        return jax.device_get((g, m))

    _, probe = grads("vmap", 1e6)
    clip = float(probe["dp_grad_norm_mean"]) / 2  # most examples clipped
    (want, wm), (got, gm) = grads("vmap", clip), grads("ghost", clip)
    assert 0 < gm["dp_clip_fraction"] <= 1 and gm["dp_num_examples"] == 6
    np.testing.assert_allclose(gm["gp"], wm["gp"], rtol=1e-5)
    assert gm["gp"] > 0
    for (path, e), a in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree_util.tree_leaves(got)):
        scale = np.max(np.abs(e)) + 1e-6
        np.testing.assert_allclose(a / scale, e / scale, atol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_dp_run_grows_a_level_and_logs_the_accountants_epsilon(tmp_path):
    c = pggan_chest_dp.tiny()  # batch 8 at every level; sigma calibrated for epsilon 10 over the run
    c.train.steps, c.train.log_every = 3, 1  # levels 0 (steps 1-2) and 1 (fading in at step 3)
    c.privacy.log_private_metrics = True  # D's real-data metrics go to the private log
    x, _ = chest_phantoms.generate(32, chest_phantoms.TRAIN_SEED, 16)
    data = (pipeline.ArraySource(x, np.zeros((len(x),), np.int32)), None)
    workdir = str(tmp_path / "run")
    state = tr.train_and_evaluate(c, workdir, data=data)
    saved = checkpointing.read_config(workdir).privacy  # filled in at start by privacy.plan
    assert saved.sampling_rate == pytest.approx(8 / 32) and saved.delta == pytest.approx(1 / 320)
    assert 0.1 < saved.noise_multiplier < 5  # calibrated, not the default 1.0 left as is
    records = [r for r in metric_writers.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "g_loss" in r]
    private = metric_writers.read_jsonl(os.path.join(workdir, "private", "metrics_private.jsonl"))
    assert [r["step"] for r in records] == [1, 2, 3] and [r["level"] for r in records] == [0, 0, 1]
    assert [r["step"] for r in private] == [1, 2, 3]
    for r, p in zip(records, private):
        expected = accounting.epsilon(8 / 32, saved.noise_multiplier, r["step"], 1 / 320, accountant="rdp")
        assert r["dp/epsilon"] == pytest.approx(expected, rel=1e-6)
        assert not {"d_loss", "gp", "dp_num_examples", "d_real_score"} & set(r)  # private: not published
        assert 0 < p["dp_num_examples"] <= 32 and np.isfinite(p["d_loss"]) and np.isfinite(p["gp"])
    assert records[-1]["dp/epsilon"] < 10.0 + 1e-6  # within the target
    assert int(state.step) == 3 and int(state.extra["images_seen"]) == 24
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree_util.tree_leaves(state.d_params))
    # The audit's D score: D at the state's level 1 and alpha on reals faded as in training.
    alpha = float(state.extra["alpha"])
    _, d = tr.build_models(c)
    expected = d.apply({"params": state.d_params}, tr.pg.fade_reals(jnp.asarray(x[:4]), 1, alpha), 1, alpha)
    np.testing.assert_allclose(tr.discriminate(c, state, jnp.asarray(x[:4])), expected, rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_and_unequal_level_batches_are_refused_under_dp():
    c = pggan_chest_dp.tiny()
    tr._check_config(c)  # the preset itself is accepted
    c.model.mbstd_group_size = 4
    with pytest.raises(ValueError, match=r"config.model.mbstd_group_size=4"):
        tr._check_config(c)
    c = pggan_chest_dp.tiny()
    c.train.batch_sizes.r16 = 4
    with pytest.raises(ValueError, match=r"config.train.batch_sizes.r16=4.*set them to 8"):
        tr._check_config(c)
    c = pggan_chest_dp.tiny()
    assert c.loss.gp_on == "fake" and tr.private_config(c).clip_method == "ghost"  # the DP config's placement
    c.privacy.clip_method, c.loss.gp_on = "ghost", "interpolates"  # the penalty inside the clipped loss
    with pytest.raises(ValueError, match=r"clip_method='ghost': the pggan trainer .*gradient penalty"):
        tr._check_config(c)
    c.privacy.clip_method, c.loss.gp_weight = "auto", 0.0  # no penalty: D's layers are ghost-clippable
    assert tr.private_config(c).clip_method == "ghost"
    c = pggan_chest_dp.tiny()
    c.privacy.clip_method, c.loss.gp_on = "ghost", "fake"  # the penalty outside the clipped loss
    tr._check_config(c)
    c.loss.gp_on = "reals"
    with pytest.raises(ValueError, match=r"config.loss.gp_on='reals' must be one of"):
        tr._check_config(c)


def test_lazy_gradient_penalty_schedule_weight_and_clip_method():
    """loss.gp_interval = k: the penalty on steps 0, k, 2k, ... with weight x k; under DP the other
    steps' clipped loss holds no input gradient, so 'auto' ghost-clips them."""
    c = pggan_chest_dp.tiny()
    c.loss.gp_on = "interpolates"  # WGAN-GP's placement: the penalty inside the clipped loss
    assert c.loss.gp_interval == 1 and all(tr.penalty_step(c, s) for s in range(3))
    c.loss.gp_interval = 4
    assert [tr.penalty_step(c, s) for s in range(6)] == [True, False, False, False, True, False]
    assert tr.gp_weight(c, True) == 4 * c.loss.gp_weight and tr.gp_weight(c, False) == 0.0
    assert tr.private_config(c, with_gp=True).clip_method == "vmap"
    assert tr.private_config(c, with_gp=False).clip_method == "ghost"
    c.loss.gp_interval = 0
    with pytest.raises(ValueError, match=r"config.loss.gp_interval=0 must be >= 1"):
        tr._check_config(c)
    # A step without the penalty: no gp in the loss, so no input-gradient in what ghost clips.
    c.loss.gp_interval = 4
    state = tr.init_state(c, jax.random.PRNGKey(0))
    real, fake, eps = _inputs()
    mask = np.ones((8,), np.float32)
    grads, m = jax.jit(functools.partial(tr.d_private_grads, c, level=LEVEL, with_gp=False))(
        state.d_params, real, fake, eps, mask, jnp.float32(ALPHA))
    assert float(m["gp"]) == 0.0 and float(m["dp_num_examples"]) == 8
    assert np.isfinite(np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(grads)])).all()
