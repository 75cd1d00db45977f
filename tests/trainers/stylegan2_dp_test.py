"""StyleGAN2-ADA under DP-SGD: the private D gradient, refusals, and a short private run."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import stylegan2_ada_spine_dp
from jaxmedgan import metric_writers, sharding
from jaxmedgan.augment import ada
from jaxmedgan.data import pipeline, spine_phantoms
from jaxmedgan.losses import stylegan2 as sg_losses
from jaxmedgan.privacy import accounting
from jaxmedgan.trainers import common
from jaxmedgan.trainers import stylegan2 as tr

from tests.dp_helpers import through_noise

from tests.trainers.stylegan2_test import tiny_config


def tiny_dp_config(**overrides):
    c = tiny_config(**overrides)
    dp = stylegan2_ada_spine_dp.get_config()
    c.privacy = dp.privacy
    c.model.mbstd_group_size = dp.model.mbstd_group_size
    c.ada.mode, c.ada.p = dp.ada.mode, dp.ada.p
    return c


def test_dp_refuses_minibatch_stddev_and_adaptive_ada():
    c = tiny_dp_config()
    assert c.privacy.enabled and c.model.mbstd_group_size == 0 and c.ada.mode == "fixed"
    c.model.mbstd_group_size = 4
    with pytest.raises(ValueError, match=r"minibatch-stddev mixes examples.*mbstd_group_size=4"):
        tr.init_state(c, jax.random.PRNGKey(0))
    c.model.mbstd_group_size = None  # the whole batch: also mixes
    with pytest.raises(ValueError, match=r"minibatch-stddev .*mbstd_group_size=None = the whole batch"):
        tr.init_state(c, jax.random.PRNGKey(0))
    c.model.mbstd_group_size = 1
    c.ada.mode = "adaptive"
    with pytest.raises(ValueError, match=r"ada.mode='adaptive'.*--config.ada.mode=fixed"):
        tr.init_state(c, jax.random.PRNGKey(0))
    # One DP step of D per training step: R1 is folded into the clipped loss ('Dboth').
    c.ada.mode = "fixed"
    assert [tr.phases_at(c, s) for s in (0, 1, 16)] == [
        ("Gmain", "Greg", "Dboth"), ("Gmain", "Dmain"), ("Gmain", "Greg", "Dboth")]


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_private_d_gradient_without_clipping_or_noise_equals_the_plain_gradient():
    # C huge, sigma 0: DP-SGD's D gradient on an 8-device mesh must equal the ordinary gradient of
    #   sum_i mask_i [softplus(-D(aug_i(x_i))) + r1_interval * gamma/2 ||d D(aug_i(x_i))/d x_i||^2] / E[B]
    #   + mean_j softplus(D(fake_j))
    # computed here on the whole batch at once (batch D, one jax.grad, no vmap/clip/shard_map).
    c = tiny_dp_config(**{"loss.style_mixing_prob": 0.0})
    c.privacy.l2_clip, c.privacy.noise_multiplier = 1e6, 0.0
    c.ada.p = 0.5
    c.loss.r1_gamma = 5.0  # make R1's share of the gradient visible
    state = jax.jit(functools.partial(tr.init_state, c))(jax.random.PRNGKey(0))
    _, d = tr.build_models(c)
    rng = np.random.default_rng(0)
    x, y = spine_phantoms.generate((2, 2, 2, 2), 0, 16)
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 0], np.float32)  # Poisson padding: rows 2, 6, 7
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(y), "mask": jnp.asarray(mask)}
    fake = jnp.asarray(rng.uniform(-1, 1, (8, 16, 16, 1)), jnp.float32)
    fake_c = jnp.asarray(rng.integers(0, 4, 8), jnp.int32)
    p = jnp.float32(0.5)
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    mesh = sharding.make_mesh(None, jax.devices())
    assert mesh.size == 8
    fn = jax.jit(functools.partial(tr.d_private_grads, c, with_r1=True, mesh=mesh))
    grads, m = fn(state.d_params, sharding.shard_batch(batch, mesh), fake, fake_c, p, keys)
    grads = through_noise(grads, c)  # the optimiser's noise transformation (sigma = 0): / E[B]

    cfg = ada.pipeline(c.ada.pipeline)
    aug = jax.vmap(lambda xi, k: ada.augment(xi[None], k, p, cfg)[0])  # example i with its own key

    def reference(d_params):
        d_fn = lambda im: d.apply({"params": d_params}, aug(im, keys), batch["label"])
        r1, logits = sg_losses.r1_penalty_and_logits(d_fn, batch["image"], c.loss.r1_gamma)
        real = jnp.sum(mask * (jax.nn.softplus(-logits) + c.loss.r1_interval * r1)) / c.train.batch_size
        return real + jnp.mean(jax.nn.softplus(d.apply({"params": d_params}, fake, fake_c))), r1

    (_, r1), ref = jax.jit(jax.value_and_grad(reference, has_aux=True))(state.d_params)
    assert float(m["dp_num_examples"]) == 5 and float(m["dp_clip_fraction"]) == 0
    np.testing.assert_allclose(m["r1_penalty"], np.sum(mask * r1) / 5, rtol=1e-4)
    assert float(m["r1_penalty"]) * c.loss.r1_interval > 1e-3  # R1 is part of what is compared
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_private_run_on_8_devices_logs_the_accountants_epsilon(tmp_path):
    # Wiring and accounting only (the gradient is checked above): R1 every step, so D compiles one
    # phase ('Dboth'); no path-length phase, no style mixing, no ADA, unclipped fake term.
    c = tiny_dp_config(**{"train.steps": 2, "train.log_every": 2, "checkpoint.every": 2, "samples.every": 2,
                          "samples.per_row": 1, "loss.pl_weight": 0.0, "loss.r1_interval": 1,
                          "loss.style_mixing_prob": 0.0, "ada.mode": "none"})
    c.privacy.clip_fake, c.privacy.log_private_metrics = False, True
    x, y = spine_phantoms.generate((8, 8, 8, 8), spine_phantoms.TRAIN_SEED, 16)
    state = common.fit(c, str(tmp_path), tr.FAMILY, data=(pipeline.ArraySource(x, y), None))
    assert int(state.step) == 2
    records = [r for r in metric_writers.read_jsonl(tmp_path / "metrics.jsonl") if "g_loss" in r]
    private = metric_writers.read_jsonl(tmp_path / "private" / "metrics_private.jsonl")
    assert [r["step"] for r in records] == [2] and [r["step"] for r in private] == [2]
    q, delta = 8 / 32, 1 / 320
    expected = accounting.epsilon(q, c.privacy.noise_multiplier, 2, delta, accountant="rdp")
    assert records[0]["dp/epsilon"] == pytest.approx(expected)
    assert records[0]["dp_noise_std"] == pytest.approx(1.0 / 8) and np.isfinite(records[0]["g_loss"])
    assert not {"d_loss", "r1_penalty", "d_real_logit", "dp_num_examples"} & set(records[0])  # private
    assert "r1_penalty" in private[0] and np.isfinite(private[0]["d_loss"])
    assert 0 < private[0]["dp_num_examples"] <= 32


@pytest.mark.slow  # ~30 s: tests/privacy/ghost_test.py checks the same D (no ADA) in the default suite
def test_dmain_ghost_clipping_equals_vmap_and_r1_phases_stay_on_vmap():
    """'auto': ghost for Dmain (through the per-example ADA pipeline, the equalised-lr convs, FIR
    down-sampling and the projection head), vmap where R1 is in the clipped loss; an explicit
    'ghost' is refused there (its norms would be wrong)."""
    c = tiny_dp_config()
    assert c.privacy.clip_method == "auto"
    assert tr.private_config(c).clip_method == "ghost"
    assert tr.private_config(c, with_r1=True).clip_method == "vmap"
    c.privacy.clip_method = "ghost"
    with pytest.raises(ValueError, match=r"clip_method='ghost': StyleGAN2's regularised D phases .*R1"):
        tr.private_config(c, with_r1=True)
    x, y = spine_phantoms.generate((2, 2, 2, 2), 0, 16)
    x = x * np.array([0.1, 1, 3, 0.5, 2, 1, 0.3, 4], np.float32)[:, None, None, None]
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(y),
             "mask": jnp.asarray([1, 1, 0, 1, 1, 1, 1, 0], np.float32)}
    rng = np.random.default_rng(1)
    fake = jnp.asarray(rng.uniform(-1, 1, (8, 16, 16, 1)), jnp.float32)
    fake_c = jnp.asarray(rng.integers(0, 4, 8), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(2), 8)
    out = {}
    for method in ("vmap", "ghost"):
        c.privacy.clip_method, c.privacy.l2_clip = method, 0.02
        state = jax.jit(functools.partial(tr.init_state, c))(jax.random.PRNGKey(0))
        out[method] = jax.device_get(jax.jit(functools.partial(tr.d_private_grads, c, with_r1=False))(
            state.d_params, batch, fake, fake_c, jnp.float32(0.5), keys))
    (vg, vm), (gg, gm) = out["vmap"], out["ghost"]
    assert 0 < float(vm["dp_clip_fraction"]) <= 1
    np.testing.assert_allclose(gm["dp_grad_norm_mean"], vm["dp_grad_norm_mean"], rtol=1e-5)
    np.testing.assert_allclose(gm["dp_clip_fraction"], vm["dp_clip_fraction"])
    for a, b in zip(jax.tree_util.tree_leaves(gg), jax.tree_util.tree_leaves(vg)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
