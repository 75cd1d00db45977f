"""Class-conditional DCGAN family: aux / projection / tac / proj_aux / d2dce discriminators, mode seeking, DP, and the
held-out diversity ratio logged by `evaluate` (DCGAN family and conditional StyleGAN2)."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.special import log_softmax

from configs import acgan_liver, acgan_liver_dp
from jaxmedgan.losses import gan as gan_losses
from jaxmedgan.models import dcgan
from jaxmedgan.trainers import common, gan

from tests.dp_helpers import noise_key_rows, through_noise

CONDS = ("aux", "projection", "tac", "proj_aux", "d2dce")
DP_CONDS = tuple(c for c in CONDS if c != "d2dce")  # d2dce is not per example: refused under DP


def tiny_config(cond="aux", dp=False, **loss):
    c = (acgan_liver_dp if dp else acgan_liver).get_config()
    c.data.image_size = 16
    c.model.latent_dim = 8
    c.model.g_features = c.model.d_features = 4
    c.model.cond = cond
    c.train.batch_size = 8
    for k, v in loss.items():
        c.loss[k] = v
    return c


def _batch(n=8, seed=0, dp=False):
    rng = np.random.default_rng(seed)
    b = {"image": rng.uniform(-1, 1, (n, 16, 16, 1)).astype(np.float32),
         "label": rng.integers(0, 3, n).astype(np.int32)}
    if dp:
        mask = np.ones(n, np.float32)
        mask[-2:] = 0  # Poisson padding
        b.update(mask=mask, dp_noise_key=noise_key_rows(n, seed))
    return b


def _ce(logits, labels):
    return -log_softmax(np.asarray(logits, np.float64), -1)[np.arange(len(labels)), labels]


# ------------------------------------------------------------------------------------------------
# Model


@pytest.mark.parametrize("cond,heads_shape,names", [
    ("aux", (6, 3), {"aux"}), ("projection", None, {"class_embed"}), ("tac", (6, 2, 3), {"aux", "twin"}),
    ("proj_aux", (6, 3), {"class_embed", "aux"}), ("d2dce", (6, 1 + 3, 128), {"embed", "proxies"})])
def test_discriminator_outputs_and_heads_per_cond(cond, heads_shape, names):
    d = dcgan.Discriminator(image_size=16, base_features=4, num_classes=3, cond=cond, norm="layer")
    x, y = jnp.zeros((6, 16, 16, 1)), jnp.arange(6) % 3
    v = d.init(jax.random.PRNGKey(0), x, y, train=False)
    logit, heads = d.apply(v, x, y, train=False)
    assert logit.shape == (6,) and logit.dtype == jnp.float32
    assert (heads is None) if heads_shape is None else heads.shape == heads_shape
    assert set(v["params"]) == {"down0", "down1", "adv"} | names
    if cond in ("projection", "proj_aux"):  # one embedding row per class, the size of phi(x) = 4*4*8
        assert v["params"]["class_embed"]["kernel"].shape == (3, 4 * 4 * 8)
        with pytest.raises(ValueError, match="pass labels"):
            d.apply(v, x, train=False)
    if cond == "d2dce":  # unit f(x) per row, then the K unit proxies, the same in every row; no labels read
        assert v["params"]["proxies"].shape == (3, 128) and heads.dtype == jnp.float32
        x = jax.random.normal(jax.random.PRNGKey(1), x.shape)
        heads = d.apply(v, x, train=False)[1]
        np.testing.assert_allclose(np.linalg.norm(heads, axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(heads[:, 1:], np.broadcast_to(heads[0, 1:], (6, 3, 128)))
    with pytest.raises(ValueError, match="cond='bogus'"):
        dcgan.Discriminator(image_size=8, num_classes=3, cond="bogus").init(jax.random.PRNGKey(0), x[:, :8, :8])


def test_projection_logit_is_the_unconditional_logit_plus_the_embedding_inner_product():
    # logit(x, y) = psi(phi(x)) + <e_y, phi(x)>: psi(phi(x)) from the unconditional D with the same
    # trunk and adv weights; phi(x) (one example) = d psi / d adv kernel, since psi = phi W + b.
    proj = dcgan.Discriminator(image_size=8, base_features=4, num_classes=3, cond="projection", norm="none")
    plain = dcgan.Discriminator(image_size=8, base_features=4, norm="none")
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
    y = jnp.array([0, 2, 1, 2])
    params = proj.init(jax.random.PRNGKey(1), x, y, train=False)["params"]
    params = {**params, "class_embed": {"kernel": jax.random.normal(jax.random.PRNGKey(2), (3, 4 * 4 * 4))}}
    trunk = {k: v for k, v in params.items() if k != "class_embed"}
    psi = lambda p, xi: plain.apply({"params": p}, xi[None], train=False)[0][0]
    got = np.asarray(proj.apply({"params": params}, x, y, train=False)[0])
    embed = np.asarray(params["class_embed"]["kernel"])
    for i in range(4):
        phi = np.asarray(jax.grad(psi)(trunk, x[i])["adv"]["kernel"][:, 0])
        expected = float(psi(trunk, x[i])) + float(embed[int(y[i])] @ phi)
        assert got[i] == pytest.approx(expected, rel=1e-5, abs=1e-5)


# ------------------------------------------------------------------------------------------------
# Losses


def test_tac_class_terms_and_generator_sign():
    rng = np.random.default_rng(0)
    aux, twin = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    heads, logit = jnp.stack([aux, twin], 1), jnp.zeros(5)
    obj = gan.Objective(num_classes=3, cond="tac")
    # G: + CE of the aux head (fitted to real labels) - CE of the twin (fitted to G's labels).
    np.testing.assert_allclose(obj.g_class_loss(logit, heads, y), _ce(aux, y) - _ce(twin, y), rtol=1e-5)
    np.testing.assert_allclose(gan_losses.tac_generator_class_loss(aux, twin, y), _ce(aux, y) - _ce(twin, y),
                               rtol=1e-5)
    # A twin more sure of G's label lowers G's loss: G is pushed away from what the twin recognises.
    sharper = twin.copy()
    sharper[np.arange(5), y] += 3.0
    assert np.all(np.asarray(obj.g_class_loss(logit, jnp.stack([aux, sharper], 1), y))
                  > np.asarray(obj.g_class_loss(logit, heads, y)))
    # D: aux head on real images, twin head on generated ones.
    np.testing.assert_allclose(obj.d_class_loss(logit, heads, y, real=True), _ce(aux, y), rtol=1e-5)
    np.testing.assert_allclose(obj.d_class_loss(logit, heads, y, real=False), _ce(twin, y), rtol=1e-5)
    aux_obj = gan.Objective(num_classes=3, cond="aux")
    np.testing.assert_allclose(aux_obj.d_class_loss(logit, jnp.asarray(aux), y, real=False), _ce(aux, y), rtol=1e-5)
    np.testing.assert_allclose(aux_obj.g_class_loss(logit, jnp.asarray(aux), y), _ce(aux, y), rtol=1e-5)
    proj = gan.Objective(num_classes=3, cond="projection")
    assert not np.any(np.asarray(proj.d_class_loss(logit, None, y, real=True)))
    assert not np.any(np.asarray(proj.g_class_loss(logit, None, y)))
    # proj_aux: the aux head is fitted to real images only; G is fitted to it.
    hybrid = gan.Objective(num_classes=3, cond="proj_aux")
    assert hybrid.projection and hybrid.aux_head and hybrid.d_labels(y) is y
    np.testing.assert_allclose(hybrid.d_class_loss(logit, jnp.asarray(aux), y, real=True), _ce(aux, y), rtol=1e-5)
    assert not np.any(np.asarray(hybrid.d_class_loss(logit, jnp.asarray(aux), y, real=False)))
    np.testing.assert_allclose(hybrid.g_class_loss(logit, jnp.asarray(aux), y), _ce(aux, y), rtol=1e-5)


def test_d2dce_class_terms_real_only_for_d_and_generated_for_g():
    from tests.losses.gan_test import d2dce_reference

    rng = np.random.default_rng(4)
    f = rng.normal(size=(6, 5))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    v = rng.normal(size=(3, 5))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    heads = jnp.asarray(np.concatenate([f[:, None], np.broadcast_to(v, (6, 3, 5))], 1), jnp.float32)
    y, logit = np.array([0, 1, 2, 1, 0, 2]), jnp.zeros(6)
    obj = gan.Objective(num_classes=3, cond="d2dce", d2dce_temperature=0.25, d2dce_margin=0.9)
    assert obj.d2dce and not (obj.aux_head or obj.projection) and obj.d_labels(y) is None
    expected = d2dce_reference(f, v, y, 0.25, 0.9)
    np.testing.assert_allclose(obj.d_class_loss(logit, heads, y, real=True), expected, rtol=1e-5)
    assert not np.any(np.asarray(obj.d_class_loss(logit, heads, y, real=False)))  # D: real images only
    np.testing.assert_allclose(obj.g_class_loss(logit, heads, y), expected, rtol=1e-5)
    # D's class prediction is the nearest proxy: cos(f, v_k) / T.
    np.testing.assert_allclose(obj.class_logits(heads), f @ v.T / 0.25, rtol=1e-5, atol=1e-6)


def test_mode_seeking_term_matches_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-1, 1, (4, 8, 8, 1)), rng.uniform(-1, 1, (4, 8, 8, 1))
    za, zb = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    ratio = np.mean(np.abs(a - b)) / np.mean(np.abs(za - zb))
    f32 = lambda *xs: [jnp.asarray(x, jnp.float32) for x in xs]
    assert float(gan_losses.mode_seeking_ratio(*f32(a, b, za, zb))) == pytest.approx(ratio, rel=1e-5)
    assert float(gan_losses.mode_seeking(*f32(a, b, za, zb))) == pytest.approx(1 / (ratio + 1e-5), rel=1e-5)
    assert float(gan_losses.mode_seeking(*f32(a, a, za, zb))) == pytest.approx(1e5, rel=1e-4)  # collapse: huge


def test_objective_reads_the_config_and_names_bad_values():
    c = tiny_config("tac", mode_seeking=0.5)
    obj = gan.Objective.from_config(c)
    assert (obj.cond, obj.mode_seeking, obj.aux_weight, obj.tac, obj.aux_head) == ("tac", 0.5, 1.0, True, True)
    del c.model["cond"], c.loss["mode_seeking"]  # a workdir's config.json written before the keys existed
    assert gan.Objective.from_config(c) == gan.Objective(num_classes=3, cond="aux")
    c.model.cond = "proj"
    with pytest.raises(ValueError, match="config.model.cond='proj'"):
        gan.Objective.from_config(c)
    c = tiny_config(mode_seeking=-1.0)
    with pytest.raises(ValueError, match="config.loss.mode_seeking=-1.0"):
        gan.Objective.from_config(c)
    c = tiny_config("d2dce", d2dce_temperature=0.1, d2dce_margin=0.5)
    obj = gan.Objective.from_config(c)
    assert (obj.d2dce_temperature, obj.d2dce_margin) == (0.1, 0.5)
    del c.loss["d2dce_temperature"], c.loss["d2dce_margin"]  # absent: ReACGAN's values
    assert gan.Objective.from_config(c) == gan.Objective(num_classes=3, cond="d2dce")
    assert acgan_liver.get_config().loss.d2dce_temperature == 0.5 and acgan_liver.get_config().loss.d2dce_margin == 0.98
    for key, value, match in (("d2dce_temperature", 0.0, "must be > 0"), ("d2dce_margin", 1.5, r"in \[0, 1\]")):
        with pytest.raises(ValueError, match=f"config.loss.{key}={value}.*{match}"):
            gan.Objective.from_config(tiny_config("d2dce", **{key: value}))


# ------------------------------------------------------------------------------------------------
# Training steps


def _two_steps(config, dp=False):
    state = gan.init_state(config, jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(gan.train_step, config))
    history = []
    for i in range(2):
        state, m = step(state, _batch(seed=i, dp=dp))
        history.append(jax.device_get(m))
    return state, history


@pytest.mark.parametrize("dp", [False, True], ids=["nondp", "dp"])
@pytest.mark.parametrize("cond", CONDS)
def test_each_cond_trains_two_steps(cond, dp):
    if dp and cond not in DP_CONDS:
        pytest.skip("refused under DP: test_d2dce_is_refused_under_dp")
    config = tiny_config(cond, dp=dp, mode_seeking=1.0 if cond == "tac" else 0.0)
    assert config.model.mbstd_group_size == (0 if dp else 4)
    state, history = _two_steps(config, dp)
    assert int(state.step) == 2
    for m in history:
        bad = {k: v for k, v in m.items() if np.ndim(v) == 0 and not np.isfinite(v)}
        assert not bad, bad
    keys = set(history[-1])
    assert ("aux_real_acc" in keys) == (cond != "projection")
    assert ("g_aux_loss" in keys) == (cond not in ("projection", "d2dce"))
    assert ("d_twin_loss" in keys) == ("g_twin_loss" in keys) == (cond == "tac")
    assert ("d_d2dce_loss" in keys) == ("g_d2dce_loss" in keys) == (cond == "d2dce")
    if cond == "d2dce":  # aux_weight 1: D's total = adversarial + D2DCE on the reals; G's alike on its batch
        m = history[-1]
        assert m["d_total_loss"] == pytest.approx(m["d_loss"] + m["d_d2dce_loss"], rel=1e-5)
        assert m["g_total_loss"] == pytest.approx(m["g_loss"] + m["g_d2dce_loss"], rel=1e-5)
        assert 0 <= m["aux_real_acc"] <= 1 and m["d_d2dce_loss"] > 0
    assert ("g_ms_ratio" in keys) == (cond == "tac") and ("dp_clip_fraction" in keys) == dp
    # Mode seeking's G metric is G-only: public under DP, as D's term on generated images (twin).
    assert {"g_aux_loss", "g_twin_loss", "g_ms_ratio", "d_twin_loss"} <= set(gan.FAMILY.dp_public_metrics)


@pytest.mark.parametrize("cond", ["projection", "tac", "proj_aux"])
def test_dp_d_gradient_without_noise_or_clipping_equals_the_batch_gradient(cond):
    # The per-example terms DP clips are the batch loss's terms: with sigma 0, C huge and no fake
    # clipping, the DP gradient (ghost clipping, 'auto') equals the non-private one.
    config = tiny_config(cond, dp=True)
    config.privacy.noise_multiplier, config.privacy.l2_clip, config.privacy.clip_fake = 0.0, 1e9, False
    assert gan.private_config(config).clip_method == "ghost"
    state = gan.init_state(config, jax.random.PRNGKey(0))
    batch = _batch(dp=True)
    batch["mask"][:] = 1.0
    rng = np.random.default_rng(5)
    fake = jnp.asarray(rng.uniform(-1, 1, batch["image"].shape), jnp.float32)
    fake_labels = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)
    plain = {k: batch[k] for k in ("image", "label")}
    grads, m, _, _ = jax.jit(functools.partial(gan._d_update, config))(state, plain, fake, fake_labels,
                                                                     jax.random.PRNGKey(3))
    private = jax.jit(lambda s, b, f, y: gan._d_update_private(config, s, b, f, y, jax.random.PRNGKey(3), None))
    dp_grads, dp_m, _, _ = private(state, batch, fake, fake_labels)
    dp_grads = through_noise(dp_grads, config)  # sigma 0: / E[B]
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(dp_grads)):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    assert dp_m["d_loss"] == pytest.approx(float(m["d_loss"]), rel=1e-4)
    if cond in ("projection", "proj_aux"):  # the class embedding is trained, by both paths
        assert np.abs(np.asarray(grads["class_embed"]["kernel"])).max() > 0
    if cond == "proj_aux":  # the aux head learns from the real images' labels, in both paths
        assert np.abs(np.asarray(grads["aux"]["kernel"])).max() > 0
        assert dp_m["aux_real_acc"] == pytest.approx(float(m["aux_real_acc"]))
    if cond == "tac":
        assert dp_m["d_twin_loss"] == pytest.approx(float(m["d_twin_loss"]), rel=1e-4)


def test_minibatch_stddev_is_refused_under_dp_and_the_default_group_divides_the_batch():
    # Default liver configs: groups of 4 without DP (the train batch and the 8-device test batch
    # are multiples of 4), off under DP; asking for it under DP fails before anything is built.
    assert acgan_liver.get_config().model.mbstd_group_size == 4
    assert acgan_liver.get_config().train.batch_size % 4 == 0
    assert acgan_liver_dp.get_config().model.mbstd_group_size == 0
    for cond in DP_CONDS:
        config = tiny_config(cond, dp=True)
        config.model.mbstd_group_size = 4
        with pytest.raises(ValueError, match="mbstd_group_size=4"):
            gan.init_state(config, jax.random.PRNGKey(0))
        config.model.mbstd_group_size = 1  # per example: allowed
        jax.eval_shape(functools.partial(gan.init_state, config), jax.random.PRNGKey(0))


def test_d2dce_is_refused_under_dp():
    # Each real image's D2DCE term reads the batch's other images: no per-example loss to clip.
    config = tiny_config("d2dce", dp=True)
    with pytest.raises(ValueError, match=r"config\.model\.cond='d2dce' is not per example") as err:
        gan.init_state(config, jax.random.PRNGKey(0))
    assert "\n" not in str(err.value) and "config.privacy.enabled=True" in str(err.value)
    with pytest.raises(ValueError, match=r"config\.model\.cond='d2dce'"):  # the step refuses it too
        gan._d_update_private(config, None, {}, None, None, None, None)
    config.privacy.enabled = False
    jax.eval_shape(functools.partial(gan.init_state, config), jax.random.PRNGKey(0))
    config.model.num_classes = 0  # unconditional: cond is not read, DP is fine
    config.privacy.enabled = True
    jax.eval_shape(functools.partial(gan.init_state, config), jax.random.PRNGKey(0))


def test_mode_seeking_adds_its_term_to_the_generator_loss():
    # Same D update; G's total differs from plain by lambda / (ratio + 1e-5), ratio logged.
    config = tiny_config("aux", mode_seeking=2.0)
    state = gan.init_state(config, jax.random.PRNGKey(0))
    _, m = jax.jit(functools.partial(gan.train_step, config))(state, _batch())
    ratio = float(m["g_ms_ratio"])
    assert ratio > 0
    adv_and_class = float(m["g_loss"]) + float(m["g_aux_loss"])  # aux_weight 1: the mean over 2B images
    assert float(m["g_total_loss"]) == pytest.approx(adv_and_class + 2.0 / (ratio + 1e-5), rel=1e-4)


# ------------------------------------------------------------------------------------------------
# Evaluation: held-out class accuracy and diversity ratio


def _eval_data(counts=(40, 5, 1), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), counts).astype(np.int32)
    return rng.uniform(-1, 1, (len(labels), 16, 16, 1)).astype(np.float32), labels


@pytest.mark.parametrize("cond", CONDS)
def test_evaluate_logs_class_accuracy_and_diversity_ratio(cond):
    config = tiny_config(cond)
    state = gan.init_state(config, jax.random.PRNGKey(0))
    images, labels = _eval_data()
    out = gan.evaluate(config, state, (images, labels))
    assert 0.0 <= out["eval/aux_accuracy"] <= 1.0
    # Class 2 has a single held-out image: no diversity for it; the mean is over classes 0 and 1.
    assert {k for k in out if "diversity" in k} == {"eval/diversity_ratio", "eval/diversity_ratio_class0",
                                                    "eval/diversity_ratio_class1"}
    assert out["eval/diversity_ratio"] == pytest.approx(
        (out["eval/diversity_ratio_class0"] + out["eval/diversity_ratio_class1"]) / 2)
    if cond == "aux":
        # Class 0 against an independent recomputation: 32 (of 40) real images and the first 32
        # images G makes for class 0 from the fixed latents.
        z, y = common.latent_batch(config, jax.random.PRNGKey(config.samples.seed + 1), 96,
                                       np.repeat(np.arange(3), 32))
        fake = np.asarray(gan.generate(config, state, z, y))[:32]
        expected = pdist(fake.reshape(32, -1)).mean() / pdist(images[:32].reshape(32, -1)).mean()
        assert out["eval/diversity_ratio_class0"] == pytest.approx(expected, rel=1e-5)
        # Fixed latents and one batch shape: the same value and no recompilation on the next call.
        cached = gan._generate_jit._cache_size()
        again = gan.evaluate(config, state, (images, labels))
        assert again["eval/diversity_ratio"] == out["eval/diversity_ratio"]
        assert gan._generate_jit._cache_size() == cached
    if cond == "proj_aux":  # the accuracy is the aux head's; the marginal logit is over D(x, k)
        heads = np.asarray(gan._d_eval(config, state, jnp.asarray(images), jnp.zeros(46, jnp.int32))[1])
        np.testing.assert_allclose(np.asarray(gan.classify(config, state, jnp.asarray(images))), heads, rtol=1e-6)
        per_class = np.stack([np.asarray(gan.discriminate(config, state, jnp.asarray(images), np.full(46, k)))
                              for k in range(3)], -1)
        marginal = np.log(np.mean(np.exp(per_class.astype(np.float64)), -1))
        np.testing.assert_allclose(gan.discriminate(config, state, jnp.asarray(images)), marginal, rtol=1e-4, atol=1e-5)
    if cond == "d2dce":  # the accuracy is the nearest proxy's: argmax_k cos(f(x), v_k)
        heads = np.asarray(gan._d_eval(config, state, jnp.asarray(images), None)[1])
        logits = np.asarray(gan.classify(config, state, jnp.asarray(images)))
        np.testing.assert_allclose(logits, np.einsum("ne,nke->nk", heads[:, 0], heads[:, 1:]) / 0.5, rtol=1e-5,
                                   atol=1e-6)
        assert out["eval/aux_accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == labels))
    if cond == "projection":  # the accuracy is argmax_k D(x, k)
        logits = np.asarray(gan.classify(config, state, jnp.asarray(images)))
        per_class = [np.asarray(gan.discriminate(config, state, jnp.asarray(images), np.full(46, k)))
                     for k in range(3)]
        np.testing.assert_allclose(logits, np.stack(per_class, -1), rtol=1e-5, atol=1e-6)
        assert out["eval/aux_accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == labels))


def test_unconditional_evaluate_is_empty_and_discriminate_pads_minibatch_stddev_groups():
    config = tiny_config()
    config.model.num_classes = 0
    state = gan.init_state(config, jax.random.PRNGKey(0))
    assert gan.evaluate(config, state, _eval_data()) == {}
    images = jnp.asarray(_eval_data()[0][:10])  # 10 rows: not a multiple of the group size 4
    logits = gan.discriminate(config, state, images)
    assert logits.shape == (10,)
    # Rows 0 and 1 are repeated to fill the last group (a group's rows see each other's statistics).
    _, d = gan.build_models(config)
    padded = d.apply(state.d_variables(), jnp.concatenate([images, images[:2]]), train=False)[0]
    np.testing.assert_allclose(logits, padded[:10], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by the group size 4"):
        d.apply(state.d_variables(), images, train=False)


def test_stylegan2_evaluate_logs_the_diversity_ratio_without_a_clinical_classifier():
    from tests.trainers.stylegan2_test import tiny_config as sg2_tiny_config
    from jaxmedgan.data import spine_phantoms
    from jaxmedgan.trainers import stylegan2

    config = sg2_tiny_config()
    assert config.model.num_classes == 4 and not config.clinical.checkpoint
    state = jax.jit(functools.partial(stylegan2.init_state, config))(jax.random.PRNGKey(0))
    x, y = spine_phantoms.generate((3, 3, 3, 3), 0, 16)
    out = stylegan2.evaluate(config, state, (np.asarray(x, np.float32), np.asarray(y)))
    assert set(out) == {"eval/diversity_ratio", *(f"eval/diversity_ratio_class{k}" for k in range(4))}
    assert all(np.isfinite(v) and v > 0 for v in out.values())
    config.model.num_classes = 0
    assert stylegan2.evaluate(config, state, (x, y)) == {}


def test_frozen_config_is_what_the_jitted_helpers_take():
    # evaluate passes a FrozenConfigDict (hashable: the jit cache key); build_models reads it alike.
    frozen = ml_collections.FrozenConfigDict(tiny_config("tac"))
    assert hash(frozen) == hash(ml_collections.FrozenConfigDict(tiny_config("tac")))
    _, d = gan.build_models(frozen)
    assert d.cond == "tac" and d.mbstd_group_size == 4
