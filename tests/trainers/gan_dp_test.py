"""DCGAN/ACGAN under DP-SGD: sharded step equals unsharded, BatchNorm refused, epsilon logged."""
import functools
import os

import jax
import numpy as np
import pytest

from configs import acgan_liver_dp
from jaxmedgan import metric_writers, sharding
from jaxmedgan.privacy import accounting
from jaxmedgan.trainers import common, gan

from tests.trainers.gan_train_test import CONFIG, tiny_overrides
from jaxmedgan import main as cli

from tests.dp_helpers import noise_key_rows, through_noise


def tiny_dp_config():
    c = acgan_liver_dp.get_config()
    c.data.image_size = 16
    c.model.latent_dim = 8
    c.model.g_features = c.model.d_features = 4
    c.train.batch_size = 8
    return c


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones(n, np.float32)
    mask[-3:] = 0  # Poisson padding
    return {"image": rng.uniform(-1, 1, (n, 16, 16, 1)).astype(np.float32),
            "label": rng.integers(0, 3, n).astype(np.int32), "mask": mask,
            "dp_noise_key": noise_key_rows(n, seed)}


def _steps(config, mesh, n=2):
    init = functools.partial(gan.init_state, config)
    shard = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
    state = jax.jit(init, out_shardings=shard)(jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(gan.train_step, config, mesh=mesh),
                   in_shardings=(shard, sharding.batch_sharding(mesh)),
                   out_shardings=(shard, sharding.replicated(mesh)))
    out = []
    for i in range(n):
        state, m = step(state, sharding.shard_batch(_batch(seed=i), mesh))
        out.append(jax.device_get(m))
    return jax.device_get(state), out


@pytest.mark.parametrize("clip_fake", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_private_step_on_8_devices_equals_1_device_noise_included(clip_fake):
    config = tiny_dp_config()
    config.privacy.clip_fake = clip_fake
    s1, m1 = _steps(config, sharding.make_mesh(None, jax.devices()[:1]))
    s8, m8 = _steps(config, sharding.make_mesh(None, jax.devices()))
    for a, b in zip(m1, m8):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(s1.d_params), jax.tree_util.tree_leaves(s8.d_params)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    # The padded examples are not counted; every real example's gradient is clipped.
    assert m1[0]["dp_num_examples"] == 5
    assert m1[0]["dp_noise_std"] == pytest.approx(config.privacy.noise_multiplier * config.privacy.l2_clip / 8)


def test_private_d_gradient_is_noised_and_bounded():
    # Before noise, the mean D gradient is <= C * (#real) / E[B] + C (clipped real sum, clipped fake
    # mean); the optimiser's noise transformation then moves D by a key-dependent amount.
    config = tiny_dp_config()
    config.privacy.clip_fake = True
    bound = config.privacy.l2_clip * 5 / 8 + config.privacy.l2_clip  # real term + clipped fake mean

    def step(sigma, key_seed):
        config.privacy.noise_multiplier = sigma  # held by D's optimiser state: init after setting it
        state = gan.init_state(config, jax.random.PRNGKey(0))
        return jax.jit(functools.partial(gan.train_step, config))(state, _batch(seed=0) | {
            "dp_noise_key": noise_key_rows(8, key_seed)})

    (quiet_a, m), (quiet_b, _) = step(0.0, 1), step(0.0, 2)
    assert float(m["d_grad_norm"]) <= bound + 1e-4
    same = jax.tree_util.tree_leaves(quiet_a.d_params), jax.tree_util.tree_leaves(quiet_b.d_params)
    assert all(np.array_equal(x, y) for x, y in zip(*same))  # sigma 0: the key does nothing
    (noisy_a, _), (noisy_b, _) = step(10.0, 1), step(10.0, 2)
    moved = jax.tree_util.tree_leaves(noisy_a.d_params), jax.tree_util.tree_leaves(noisy_b.d_params)
    assert any(not np.allclose(x, y) for x, y in zip(*moved))  # the noise follows the batch's secret key
    sum_scale = {"w": np.zeros((1000,), np.float32)}
    config.privacy.noise_multiplier = 10.0
    noised = through_noise(sum_scale, config)["w"]
    np.testing.assert_allclose(np.std(noised), 10.0 * config.privacy.l2_clip / 8, rtol=0.1)


def test_batchnorm_discriminator_is_refused_under_dp(tmp_path):
    config = tiny_dp_config()
    config.data.image_size = 64
    config.data.data_dir = str(tmp_path / "data")
    config.model.d_norm = "batch"
    with pytest.raises(ValueError, match="d_norm='batch'"):
        common.fit(config, str(tmp_path / "run"), gan.FAMILY)


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_dp_training_logs_the_accountants_epsilon(tmp_path):
    dp_config = os.path.join(os.path.dirname(CONFIG), "acgan_liver_dp.py")
    args = ["jaxmedgan", "train", "--config", dp_config, "--workdir", str(tmp_path / "run"),
            *tiny_overrides(tmp_path / "data", steps=4, every=2), "--config.privacy.log_private_metrics=True"]
    assert cli.main(args) == 0
    records = [r for r in metric_writers.read_jsonl(tmp_path / "run" / "metrics.jsonl") if "dp/epsilon" in r]
    assert [r["step"] for r in records] == [2, 4]
    q = 8 / 182
    expected = accounting.epsilon(q, 1.0, 4, 1 / 1820, accountant="rdp")
    assert records[-1]["dp/epsilon"] == pytest.approx(expected)
    # Real-data monitoring is private: only in the private log, asked for above.
    private = metric_writers.read_jsonl(tmp_path / "run" / "private" / "metrics_private.jsonl")
    assert [r["step"] for r in private] == [2, 4] and not {"dp/num_dropped", "dp_num_examples"} & set(records[-1])
    assert private[-1]["dp/num_dropped"] == 0
    assert 0 < private[-1]["dp_num_examples"] < 40


def _dp_args(tmp_path, workdir, *extra, steps=4):
    dp_config = os.path.join(os.path.dirname(CONFIG), "acgan_liver_dp.py")
    return ["jaxmedgan", "train", "--config", dp_config, "--workdir", str(workdir),
            *tiny_overrides(tmp_path / "data", steps=steps, every=2), *extra]


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_target_epsilon_calibrates_sigma_and_is_recorded(tmp_path):
    import json

    from jaxmedgan import checkpointing, sampling
    from jaxmedgan.privacy import noise, plan

    wd = tmp_path / "run"
    assert cli.main(_dp_args(tmp_path, wd, "--config.privacy.target_epsilon=3.0")) == 0
    saved = json.load(open(wd / "config.json"))["privacy"]
    q, delta = 8 / 182, 1 / 1820
    assert saved["sampling_rate"] == pytest.approx(q) and saved["delta"] == pytest.approx(delta)
    assert saved["noise_multiplier"] == pytest.approx(accounting.calibrate_noise(3.0, delta, q, 4))
    eps = accounting.epsilon(q, saved["noise_multiplier"], 4, delta)
    assert 0.99 * 3.0 <= eps <= 3.0
    meta = checkpointing.read_meta(checkpointing.manager(str(wd), async_save=False), 4)
    assert meta["dp_epsilon"] == pytest.approx(eps)
    assert plan.run_epsilon(checkpointing.read_config(str(wd)), 4) == pytest.approx(eps)
    # The noise D's optimiser adds is the calibrated one, not the config's pre-calibration default.
    _, state, _ = sampling.restore_state(str(wd))
    held = [s for s in state.d_opt_state if isinstance(s, noise.NoiseState)][0]
    assert float(held.noise_multiplier) == pytest.approx(saved["noise_multiplier"], rel=1e-6)
    assert abs(saved["noise_multiplier"] - 1.0) > 0.01  # calibrated away from the default
    # Resuming with different privacy settings is refused; the same command resumes (no-op).
    assert cli.main(_dp_args(tmp_path, wd, "--config.privacy.target_epsilon=3.0", steps=6,
                             )) == 1
    assert cli.main(_dp_args(tmp_path, wd, "--config.privacy.target_epsilon=3.0")) == 0


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_epsilon_budget_stops_training_before_it_is_exceeded(tmp_path, caplog):
    q, delta = 8 / 182, 1 / 1820
    budget = accounting.epsilon(q, 1.0, 3, delta) * 1.001  # allows exactly 3 of the 6 steps
    wd = tmp_path / "run"
    assert cli.main(_dp_args(tmp_path, wd, f"--config.privacy.epsilon_budget={budget}", steps=6)) == 0
    records = [r for r in metric_writers.read_jsonl(wd / "metrics.jsonl") if "dp/epsilon" in r]
    assert records[-1]["step"] == 3 and records[-1]["dp/epsilon"] <= budget
    assert sorted(os.listdir(wd / "checkpoints")) == ["2", "3"]


@pytest.mark.slow  # two compiles of the DP step (~40 s on 2 cores); CI runs it after the default suite
def test_a_smaller_padding_bucket_is_the_same_step():
    """privacy.padding_buckets: a step at a smaller padded size (padding rows cut off, the real rows
    kept) updates D and G as at the full size -- fakes, keys and augmentation draws must not
    depend on the row count, or the bucket (a function of the private batch size) would leak."""
    config = tiny_dp_config()
    config.data.augment = False
    config.d_augment.kind = "diffaug"  # per-row random draws: must not depend on the row count
    mesh = sharding.make_mesh(None, jax.devices()[:1])
    state = jax.jit(functools.partial(gan.init_state, config))(jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(gan.train_step, config, mesh=mesh))
    full = _batch(n=16)
    full["mask"][:] = 0
    full["mask"][:5] = 1  # 5 real examples first, then padding (as the pipeline lays them out)
    got = [jax.device_get(step(state, common.bucket_rows(full, rows))[1]) for rows in (16, 8)]
    # The metrics hold every loss and both nets' gradient norms (the new parameters differ only where
    # Adam's first step, lr * g / |g|, meets float noise in a gradient entry that is ~0).
    assert set(got[0]) == set(got[1]) and {"d_loss", "g_loss", "d_grad_norm", "g_grad_norm"} <= set(got[0])
    for k in got[0]:
        np.testing.assert_allclose(got[1][k], got[0][k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert float(got[1]["dp_num_examples"]) == 5
