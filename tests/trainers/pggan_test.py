"""PGGAN trainer: growing schedule, config errors, two levels end to end on 8 devices, mid-phase resume."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pggan_chest
from jaxmedgan import images, metric_writers, sampling, trainers
from jaxmedgan.data import chest_phantoms, pipeline
from jaxmedgan.models import pggan as pg
from jaxmedgan.trainers import common
from jaxmedgan.trainers import pggan as tr


def tiny_config(**overrides):
    c = pggan_chest.tiny()  # 16 px, 16 images per phase, batch 8 at 4 and 8 px, 4 at 16 px
    c.train.log_every = 1  # every step's alpha and level reach metrics.jsonl
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def test_schedule_fades_then_stabilises_each_level():
    c = tiny_config()
    phases = [tr.schedule(c, n) for n in range(0, 96, 4)]
    got = [(p.level, round(p.alpha, 4), p.name) for p in phases]
    expected = ([(0, 1.0, "stable")] * 4 + [(1, a, "fade") for a in (0, 0.25, 0.5, 0.75)]
                + [(1, 1.0, "stable")] * 4 + [(2, a, "fade") for a in (0, 0.25, 0.5, 0.75)]
                + [(2, 1.0, "stable")] * 8)  # the last level stays stable
    assert got == expected
    # 16 images at 4 px, 32 at 8 px (batch 8), 32 at 16 px (batch 4): 2 + 4 + 8 steps.
    assert tr.steps_for_schedule(c) == 14
    assert [tr.batch_size_at(c, level) for level in range(3)] == [8, 8, 4]
    c.schedule.fade_kimg = 0.0  # no fade: straight to alpha 1
    assert tr.schedule(c, 16) == tr.Phase(1, 1.0, "stable", 0)
    assert trainers.get("pggan") is tr


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"batch_sizes.r16=16 must be in 1..config.train.batch_size=8"):
        tr._check_config(_with_batch(tiny_config(), r16=16))
    with pytest.raises(ValueError, match="mbstd_group_size"):
        tr._check_config(_with_batch(tiny_config(), r16=6))
    dp = tiny_config(**{"privacy.enabled": True})
    with pytest.raises(ValueError, match="minibatch-stddev mixes examples"):
        tr._check_config(dp)
    dp.model.mbstd_group_size = 0
    with pytest.raises(ValueError, match=r"config.train.batch_sizes.r16=4"):
        tr._check_config(dp)


def _with_batch(c, **sizes):
    for k, v in sizes.items():
        c.train.batch_sizes[k] = v
    return c


def test_bfloat16_computes_in_bf16_and_keeps_float32_parameters():
    c = tiny_config(**{"train.dtype": "bfloat16"})
    state = jax.eval_shape(functools.partial(tr.init_state, c), jax.random.PRNGKey(0))
    batch = {"image": jax.ShapeDtypeStruct((8, 16, 16, 1), jnp.float32),
             "label": jax.ShapeDtypeStruct((8,), jnp.int32)}
    new, metrics = jax.eval_shape(functools.partial(tr.level_step, c, level=1), state, batch, jnp.float32(0.5))
    dtypes = {a.dtype for a in jax.tree_util.tree_leaves((new.g_params, new.d_params, new.extra["g_ema_params"]))}
    assert dtypes == {jnp.dtype(jnp.float32)} and metrics["d_loss"].dtype == jnp.float32
    g, _ = tr.build_models(c)
    out = jax.eval_shape(lambda p, z: g.apply({"params": p}, z, 1, 0.5), state.g_params,
                         jax.ShapeDtypeStruct((2, 16), jnp.float32))
    assert g.dtype == jnp.bfloat16 and out.shape == (2, 8, 8, 1) and out.dtype == jnp.float32


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Chest phantoms at 16 px: run A trains 3 steps then resumes to 6 (mid-fade at step 3);
    run B trains 6 steps uninterrupted. Both pass levels 0 (steps 1-2) and 1 (fade 3-4, stable 5-6)."""
    x, _ = chest_phantoms.generate(32, chest_phantoms.TRAIN_SEED, 16)
    data = (pipeline.ArraySource(x, np.zeros((len(x),), np.int32)), None)
    root = tmp_path_factory.mktemp("pggan")
    wd_a, wd_b = str(root / "a"), str(root / "b")
    first = tr.train_and_evaluate(tiny_config(**{"train.steps": 3, "samples.every": 3}), wd_a, data=data)
    first_extra = {k: np.asarray(first.extra[k]) for k in ("level", "alpha", "images_seen")}
    resumed = tr.train_and_evaluate(tiny_config(**{"train.steps": 6, "samples.every": 3}), wd_a, data=data)
    straight = tr.train_and_evaluate(tiny_config(**{"train.steps": 6, "checkpoint.every": 100}), wd_b, data=data)
    return {"a": wd_a, "b": wd_b, "first_extra": first_extra, "resumed": resumed, "straight": straight}


def _train_records(workdir):
    return {r["step"]: r for r in metric_writers.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "d_loss" in r}


def test_fit_grows_through_two_levels_on_8_devices(runs):
    assert jax.device_count() == 8
    records = _train_records(runs["b"])
    assert sorted(records) == [1, 2, 3, 4, 5, 6]
    # alpha before step s from images seen 8 (s - 1): fade over 16 images at level 1.
    assert [records[s]["level"] for s in range(1, 7)] == [0, 0, 1, 1, 1, 1]
    assert [records[s]["alpha"] for s in range(1, 7)] == [1, 1, 0, 0.5, 1, 1]
    assert [round(records[s]["kimg"] * 1000) for s in range(1, 7)] == [8, 16, 24, 32, 40, 48]
    for key in ("d_loss", "g_loss", "gp", "drift", "wasserstein", "d_grad_norm"):
        assert np.isfinite(records[6][key]), key
    state = runs["straight"]
    assert int(state.step) == 6 and int(state.extra["level"]) == 1 and float(state.extra["alpha"]) == 1.0
    assert int(state.extra["images_seen"]) == 48
    assert os.path.exists(os.path.join(runs["b"], "samples", "step_0000006.png"))
    # The 16 px level was never trained: its layers never moved, so their EMA (initialised to a copy)
    # still equals them exactly, while a trained layer's EMA lags behind it.
    ema = state.extra["g_ema_params"]
    np.testing.assert_array_equal(state.g_params["torgb16"]["weight"], ema["torgb16"]["weight"])
    np.testing.assert_array_equal(state.g_params["b16"]["conv0"]["weight"], ema["b16"]["conv0"]["weight"])
    assert not np.array_equal(state.g_params["torgb8"]["weight"], ema["torgb8"]["weight"])


def test_resume_mid_phase_continues_the_alpha_schedule(runs):
    assert runs["first_extra"] == {"level": 1, "alpha": 0.0, "images_seen": 24}
    a, b = _train_records(runs["a"]), _train_records(runs["b"])
    assert sorted(a) == [1, 2, 3, 4, 5, 6]
    for s in range(1, 7):
        assert (a[s]["level"], a[s]["alpha"], a[s]["kimg"]) == (b[s]["level"], b[s]["alpha"], b[s]["kimg"]), s
    assert sorted(os.listdir(os.path.join(runs["a"], "checkpoints"))) == ["3", "6"]
    resumed, straight = runs["resumed"], runs["straight"]
    for name in ("g_params", "d_params"):
        for x, y in zip(jax.tree_util.tree_leaves(getattr(resumed, name)),
                        jax.tree_util.tree_leaves(getattr(straight, name))):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    for x, y in zip(jax.tree_util.tree_leaves(resumed.extra), jax.tree_util.tree_leaves(straight.extra)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_generate_and_sample_to_dir_render_the_last_level_at_full_size(runs, tmp_path):
    out = sampling.sample_to_dir(runs["a"], 3, str(tmp_path / "samples"), seed=1)
    npz = np.load(os.path.join(out, "samples.npz"))
    assert npz["images"].shape == (3, 16, 16, 1) and npz["images"].dtype == np.uint8
    assert int(npz["checkpoint_step"]) == 6 and npz["labels"].tolist() == [-1] * 3
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 3
    # The same latents through the EMA generator at level 1 (8 px), alpha 1, nearest-upsampled by numpy.
    config, state, step = sampling.restore_state(runs["a"])
    assert step == 6 and config.trainer == "pggan" and pg.num_levels(config.data.image_size) == 3
    _, key = jax.random.split(jax.random.PRNGKey(1))  # what sampling.generate draws its first batch with
    z, _ = common.latent_batch(config, key, 64)
    g, _ = tr.build_models(config)
    low = np.asarray(jax.jit(lambda p, z: g.apply({"params": p}, z, 1, 1.0))(state.extra["g_ema_params"], z[:3]))
    expected = images.to_uint8(np.clip(low.repeat(2, 1).repeat(2, 2), -1, 1))
    assert np.abs(expected.astype(int) - npz["images"].astype(int)).max() <= 1
