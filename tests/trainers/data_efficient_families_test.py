"""Data-efficient training for PGGAN and pix2pix (issue #18): D augmentation (DiffAugment, ADA) of
what D sees, pix2pix's joint (map, image) augmentation, G EMA, resize-conv decoder, hinge loss;
with and without DP. Tiny shapes; the steps compile at XLA opt level 0."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pggan_chest, pggan_chest_dp
from jaxmedgan import sharding
from jaxmedgan.augment import ada, diffaug, policy
from jaxmedgan.losses import pggan as pg_losses
from jaxmedgan.trainers import pggan, pix2pix

from tests.dp_helpers import noise_key_rows
from tests.trainers import pix2pix_test

FAST = {"xla_backend_optimization_level": 0}  # compile time dominates these few-step runs
LEVEL, ALPHA = 1, 0.5  # PGGAN at 8 px, fading in


def _finite(history):
    for m in history:
        bad = {k: v for k, v in m.items() if np.ndim(v) == 0 and not np.isfinite(v)}
        assert not bad, bad


def _leaves_close(a, b, **tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), **tol)


# ----------------------------------------------------------------------------------------------
# PGGAN


def _pggan_config(kind="diffaug", dp=False, **ada_fields):
    c = pggan_chest_dp.tiny() if dp else pggan_chest.tiny()
    c.d_augment.kind = kind
    c.ada.update(ada_fields)
    return c


def _pggan_batch(seed=0, dp=False):
    rng = np.random.default_rng(seed)
    batch = {"image": rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32), "label": np.zeros((8,), np.int32)}
    if dp:
        batch.update(mask=np.ones((8,), np.float32), dp_noise_key=noise_key_rows(8, seed))
    return batch


def _pggan_run(config, n=2):
    state = pggan.init_state(config, jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(pggan.level_step, config, level=LEVEL), compiler_options=FAST)
    first, history = state, []
    for i in range(n):
        state, m = step(state, _pggan_batch(i, bool(config.privacy.enabled)), jnp.float32(ALPHA))
        history.append(jax.device_get(m))
    return first, state, history


def test_pggan_diffaug_d_sees_augmented_reals_and_fakes_and_the_penalty_sits_between_them():
    config = _pggan_config("diffaug")
    state, end, history = _pggan_run(config)
    _finite(history)
    assert int(end.step) == 2 and set(end.extra) == {"g_ema_params", "images_seen", "level", "alpha"}
    # D's first loss by hand: WGAN-GP + drift on DiffAugment(faded reals), DiffAugment(G(z)), the
    # penalty at eps x_aug + (1 - eps) x~_aug; keys as the step draws them.
    g, d = pggan.build_models(config)
    rng = jax.random.fold_in(state.rng, state.step)
    k_dz, k_eps, _ = jax.random.split(rng, 3)
    k_real, k_fake, _ = jax.random.split(jax.random.fold_in(rng, 1), 3)
    real = pggan.pg.fade_reals(jnp.asarray(_pggan_batch(0)["image"]), LEVEL, ALPHA)
    fake = jax.jit(lambda p, z: g.apply({"params": p}, z, LEVEL, ALPHA))(
        state.g_params, jax.random.normal(k_dz, (8, config.model.latent_dim)))
    eps = jax.random.uniform(k_eps, (8,))

    @jax.jit
    def losses(params, real, fake):
        d_fn = lambda x: d.apply({"params": params}, x, LEVEL, ALPHA)
        loss = lambda r, f: jnp.mean(pg_losses.d_wgan_gp(d_fn, r, f, eps)[0])
        return loss(diffaug.augment(real, k_real), diffaug.augment(fake, k_fake)), loss(real, fake)

    want, raw = map(float, losses(state.d_params, real, fake))
    assert history[0]["d_loss"] == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert history[0]["d_loss"] != pytest.approx(raw, rel=1e-3)  # kind 'none' sees raw images


def test_pggan_adaptive_ada_moves_p_in_the_step_and_is_refused_under_dp():
    # p moves by b * interval / (kimg * 1000) = 8 / 8 = 1 per step: to 0 or 1 after the first.
    config = _pggan_config("ada", mode="adaptive", p=0.5, interval=1, kimg=0.008)
    _, end, history = _pggan_run(config, n=1)
    _finite(history)
    assert history[0]["aug_p"] in (0.0, 1.0) and float(end.extra["aug_p"]) == history[0]["aug_p"]
    assert "aug_p" in pggan.FAMILY.dp_public_metrics
    with pytest.raises(ValueError, match="config.ada.mode='adaptive'"):
        pggan.init_state(_pggan_config("ada", dp=True), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="config.d_augment.kind='flip'"):
        pggan.init_state(_pggan_config("flip"), jax.random.PRNGKey(0))


def test_pggan_private_step_with_fixed_ada_trains():
    config = _pggan_config("ada", dp=True, mode="fixed", p=0.5)
    _, end, history = _pggan_run(config)
    _finite(history)
    assert history[-1]["aug_p"] == pytest.approx(0.5) and int(end.step) == 2


def _sharded_steps(init, step_fn, batches, mesh, extra_args=()):
    """Init born sharded on `mesh`, then the jitted step on each batch; returns (state, last metrics)."""
    shard = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
    state = jax.jit(init, out_shardings=shard)(jax.random.PRNGKey(0))
    rep = sharding.replicated(mesh)
    step = jax.jit(functools.partial(step_fn, mesh=mesh),
                   in_shardings=(shard, sharding.batch_sharding(mesh)) + (rep,) * len(extra_args),
                   out_shardings=(shard, rep), compiler_options=FAST)
    for batch in batches:
        state, m = step(state, sharding.shard_batch(batch, mesh), *extra_args)
    return jax.device_get(state), jax.device_get(m)


def _same_on_8_devices_as_on_1(run):
    s1, m1 = run(sharding.make_mesh(None, jax.devices()[:1]))
    s8, m8 = run(sharding.make_mesh(None, jax.devices()))
    _finite([m1])
    for k in m1:
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-4, atol=1e-5, err_msg=k)
    _leaves_close((s1.g_params, s1.d_params, s1.extra), (s8.g_params, s8.d_params, s8.extra), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_pggan_private_step_with_diffaug_is_the_same_on_8_devices_as_on_1():
    config = _pggan_config("diffaug", dp=True)
    init = functools.partial(pggan.init_state, config)
    step = functools.partial(pggan.level_step, config, level=LEVEL)
    _same_on_8_devices_as_on_1(lambda mesh: _sharded_steps(
        init, step, [_pggan_batch(i, dp=True) for i in range(2)], mesh, (jnp.float32(ALPHA),)))


# ----------------------------------------------------------------------------------------------
# pix2pix: the joint (map, image) augmentation


def _pair(n=6, size=8, k=3, c=1, seed=0):
    rng = np.random.default_rng(seed)
    m = jax.nn.one_hot(rng.integers(0, k, (n, size, size)), k)
    x = jnp.asarray(rng.uniform(-1, 1, (n, size, size, c)), jnp.float32)
    return m, x


def test_diffaug_pair_translation_moves_map_and_image_by_the_same_offset():
    m, x = _pair()
    out_m, out_x = diffaug.augment_pair(m, x, jax.random.PRNGKey(3), ("translation",))
    moved = 0
    for i in range(len(x)):  # find example i's offset from the image, then check the map moved by it
        offsets = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)
                   if np.array_equal(diffaug.shift(x[i:i + 1], jnp.array([dy]), jnp.array([dx])), out_x[i:i + 1])]
        assert len(offsets) == 1, offsets
        (dy, dx), = offsets
        moved += (dy, dx) != (0, 0)
        np.testing.assert_array_equal(out_m[i:i + 1], diffaug.shift(m[i:i + 1], jnp.array([dy]), jnp.array([dx])))
    assert moved  # some example did move


@pytest.mark.parametrize("channels", [1, 3])
def test_diffaug_pair_colours_the_image_only_and_keeps_the_map_one_hot(channels):
    m, x = _pair(c=channels)
    key = jax.random.PRNGKey(1)
    out_m, out_x = diffaug.augment_pair(m, x, key)
    np.testing.assert_array_equal(out_x, diffaug.augment(x, key))  # the image: plain DiffAugment, same draws
    out_m = np.asarray(out_m)
    assert set(np.unique(out_m)) <= {0.0, 1.0}  # no colour jitter on the map
    total = out_m.sum(-1)
    assert set(np.unique(total)) == {0.0, 1.0}  # one-hot, or all zero where zero-filled
    np.testing.assert_array_equal(np.asarray(out_x)[total == 0], 0.0)  # same zero-filled pixels (cut/shifted in)
    # The policy's pair is this function; its image part is what the unconditional families' D sees.
    aug = policy.DAugment(kind="diffaug")
    for a, b in zip(aug.pair(m, x, key, {}), (out_m, out_x)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(aug(x, key, {}), out_x)
    with pytest.raises(ValueError, match="same"):
        diffaug.augment_pair(m[:, :4], x, key)


def test_ada_pair_applies_one_geometric_transform_to_both_and_colour_to_the_image():
    m, x = _pair(n=4, c=3)
    key, p = jax.random.PRNGKey(2), 1.0
    # Pixel blitting (flips, 90-degree turns, integer shifts): map and image get the same transform.
    blit = ada.pipeline("blit")
    out_m, out_x = policy.ada_pair(m, x, key, p, blit)
    np.testing.assert_allclose(out_x, ada.augment(x, key, p, blit), atol=1e-6)
    np.testing.assert_allclose(out_m, ada.augment(m, key, p, blit), atol=1e-6)
    assert not np.allclose(out_x, x)
    # Integer translation moves the map exactly: it stays one-hot.
    shift = ada.AugmentConfig(xint=1.0)
    out_m, _ = policy.ada_pair(m, x, key, p, shift)
    assert not np.allclose(out_m, m)
    np.testing.assert_allclose(out_m, np.round(out_m), atol=1e-4)
    np.testing.assert_allclose(np.asarray(out_m).sum(-1), 1.0, atol=1e-4)
    # The default 'bgc': the image exactly as ada.augment; the map's colour is untouched (brightness,
    # contrast, hue... would shift its values off {0, 1} where the geometry is the identity).
    bgc = ada.pipeline("bgc")
    out_m, out_x = policy.ada_pair(m, x, key, p, bgc)
    np.testing.assert_allclose(out_x, ada.augment(x, key, p, bgc), atol=1e-5)
    geometric_only = ada.pipeline("bg")
    np.testing.assert_allclose(out_m, ada.augment(m, key, p, geometric_only), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# pix2pix: training


def _p2p_config(kind="diffaug", dp=False, batch=4, ema=False, upsample="transpose", loss="nonsaturating",
                **ada_fields):
    c = pix2pix_test.tiny_config(size=8)  # U-Net depth 3, 2x2 PatchGAN logits
    c.train.batch_size = batch
    c.d_augment.kind, c.ema.enabled, c.model.g_upsample, c.loss.kind = kind, ema, upsample, loss
    c.ada.update(ada_fields)
    if dp:
        c.privacy.enabled, c.privacy.noise_multiplier, c.privacy.l2_clip = True, 1.0, 1.0
    return c


def _p2p_run(config, n=2, mesh=None):
    state = pix2pix.init_state(config, jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(pix2pix.train_step, config, mesh=mesh), compiler_options=FAST)
    states, history = [state], []
    for i in range(n):
        state, m = step(state, pix2pix_test._batch(config, n=config.train.batch_size, seed=i))
        states.append(state)
        history.append(jax.device_get(m))
    return states, history


def test_pix2pix_augmentation_changes_what_d_and_g_see_and_d_sees_the_jointly_augmented_pairs():
    none, diff = _p2p_config("none"), _p2p_config("diffaug")
    state = pix2pix.init_state(none, jax.random.PRNGKey(0))
    assert state.extra == {}  # no new state without the options
    batch = pix2pix_test._batch(none)
    g, d = pix2pix.build_models(none)
    key = jax.random.PRNGKey(7)

    @jax.jit
    def losses(state, batch):
        fake = g.apply(state.g_variables(), batch["cond"], train=False)
        d_plain = pix2pix.d_loss(none, state.d_params, {}, batch, fake)[0]
        d_aug = pix2pix.d_loss(diff, state.d_params, {}, batch, fake, aug_key=key, extra={})[0]
        # By hand: the real and the generated pair each through augment_pair with its half of the key.
        k_real, k_fake = jax.random.split(key)
        logit = lambda k, x: d.apply({"params": state.d_params}, *diffaug.augment_pair(batch["cond"], x, k),
                                     train=True)
        want = jnp.mean(jax.nn.softplus(-logit(k_real, batch["image"]))) + jnp.mean(jax.nn.softplus(logit(k_fake, fake)))
        g_term = lambda c, **kw: pix2pix.g_loss(c, state.g_params, {}, state.d_variables(), batch, key, **kw)[1][0]
        return d_plain, d_aug, want, g_term(none)["g_loss"], g_term(diff, aug_key=key, extra={})["g_loss"]

    d_plain, d_aug, want, g_plain, g_aug = map(float, losses(state, batch))
    # At initialisation D's logits are near 0 (losses near log 2): the views differ by ~1e-4 relative.
    assert d_aug != pytest.approx(d_plain, rel=1e-5) and g_aug != pytest.approx(g_plain, rel=1e-5)
    assert d_aug == pytest.approx(want, rel=1e-5)
    fake = jnp.zeros_like(batch["image"])
    with pytest.raises(ValueError, match="config.d_augment.kind='diffaug'.*aug_key"):
        pix2pix.d_loss(diff, state.d_params, {}, batch, fake)


def test_pix2pix_diffaug_ema_resize_hinge_trains_and_generate_uses_the_ema():
    config = _p2p_config("diffaug", ema=True, upsample="fir", loss="hinge")
    config.ema.kimg, config.ema.rampup = 0.004, 0.0  # half-life = one batch of 4: beta = 0.5
    states, history = _p2p_run(config)
    _finite(history)
    assert history[0]["ema_beta"] == pytest.approx(0.5) and "aug_p" not in history[0]
    p0, p1 = states[0].g_params, states[1].g_params
    want = jax.tree_util.tree_map(lambda e, p: p + 0.5 * (e - p), p0, p1)
    _leaves_close(want, states[1].extra["g_ema_params"], rtol=1e-6, atol=1e-7)
    end = states[-1]
    maps = pix2pix_test._batch(config)["cond"]
    g, _ = pix2pix.build_models(config)
    assert g.upsample == "fir" and end.g_params["up1"]["Conv_0"]["kernel"].shape[:2] == (3, 3)
    ema_out = g.apply({"params": end.extra["g_ema_params"]}, maps, train=False)
    np.testing.assert_allclose(pix2pix.generate(config, end, maps), ema_out, rtol=1e-6, atol=1e-7)
    assert not np.allclose(g.apply({"params": end.g_params}, maps, train=False), ema_out, atol=1e-4)
    assert {"aug_p", "ema_beta"} <= set(pix2pix.FAMILY.dp_public_metrics)


def test_pix2pix_adaptive_ada_moves_p_and_is_refused_under_dp():
    # p moves by B * interval / (kimg * 1000) = 4 / 4 = 1 per step.
    config = _p2p_config("ada", mode="adaptive", p=0.5, interval=1, kimg=0.004)
    states, history = _p2p_run(config, n=1)
    _finite(history)
    assert history[0]["aug_p"] in (0.0, 1.0) and float(states[-1].extra["aug_p"]) == history[0]["aug_p"]
    with pytest.raises(ValueError, match="config.ada.mode='adaptive'"):
        pix2pix.init_state(_p2p_config("ada", dp=True), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="config.loss.kind='wasserstein'"):
        pix2pix.init_state(_p2p_config(loss="wasserstein"), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="config.model.g_upsample='bilinear'"):
        pix2pix.init_state(_p2p_config(upsample="bilinear"), jax.random.PRNGKey(0))


@pytest.mark.slow  # end to end (~30-50 s on 2 cores): the slow set, which CI also runs
def test_pix2pix_private_step_with_fixed_ada_trains_on_8_devices():
    # ADA's p rides per example into the clipped loss that runs in shard_map.
    config = _p2p_config("ada", dp=True, batch=8, mode="fixed", p=0.5)
    states, history = _p2p_run(config, mesh=sharding.make_mesh(None, jax.devices()))
    _finite(history)
    assert history[-1]["aug_p"] == pytest.approx(0.5) and int(states[-1].step) == 2


@pytest.mark.slow  # end to end (~30-50 s on 2 cores): the slow set, which CI also runs
def test_pix2pix_private_step_with_diffaug_is_the_same_on_8_devices_as_on_1():
    config = _p2p_config("diffaug", dp=True, batch=8, ema=True, upsample="nearest", loss="hinge")
    init = functools.partial(pix2pix.init_state, config)
    step = functools.partial(pix2pix.train_step, config)
    batches = [pix2pix_test._batch(config, n=8, seed=i) for i in range(2)]
    _same_on_8_devices_as_on_1(lambda mesh: _sharded_steps(init, step, batches, mesh))
