"""StyleGAN2-ADA trainer: lazy schedule, optimiser/EMA constants, clinical lambda=0, fit on 8 devices."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import stylegan2_ada_spine
from jaxmedgan import metric_writers
from jaxmedgan.data import pipeline, spine_phantoms
from jaxmedgan.losses import clinical
from jaxmedgan.models import classifier as classifier_lib
from jaxmedgan.trainers import stylegan2 as tr


def tiny_config(**overrides):
    c = stylegan2_ada_spine.get_config()
    c.data.image_size = 16
    c.model.latent_dim = 16
    c.model.w_dim = 16
    c.model.channel_base = 128
    c.model.channel_max = 16
    c.model.d_mapping_layers = 2
    c.train.batch_size = 8
    c.train.quiet = True
    c.train.fast_compile = True  # XLA opt level 0 for the phase jits: these tests are compile-bound
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def _batch(n=8, size=16, seed=0):
    x, y = spine_phantoms.generate((2, 2, 2, 2), seed, size)
    return {"image": jnp.asarray(x[:n]), "label": jnp.asarray(y[:n])}


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A randomly initialised 16 px, 4-class classifier saved in the clinical format."""
    module = classifier_lib.Classifier(num_classes=4, features=(4, 8))
    variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
    path = str(tmp_path_factory.mktemp("clf") / "spine_classifier")
    return clinical.save_classifier(path, module, variables, image_size=16, channels=1,
                                    class_names=spine_phantoms.CLASS_NAMES)


def test_lazy_regularisation_schedule():
    c = tiny_config()
    plan = [tr.phases_at(c, s) for s in range(17)]
    assert plan[0] == ("Gmain", "Greg", "Dmain", "Dreg")
    assert plan[4] == plan[8] == plan[12] == ("Gmain", "Greg", "Dmain")
    assert plan[1] == plan[15] == ("Gmain", "Dmain")
    assert plan[16] == ("Gmain", "Greg", "Dmain", "Dreg")
    c.loss.pl_weight = 0.0
    c.loss.r1_gamma = 0.0
    assert tr.phases_at(c, 0) == ("Gmain", "Dmain")


def test_adam_rescaled_for_lazy_regularisation_and_ema_rampup():
    c = tiny_config()
    g_tx, d_tx = tr.build_optimizers(c)
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    for tx, interval in ((g_tx, 4), (d_tx, 16)):
        ratio = interval / (interval + 1)
        updates, state = tx.update(grads, tx.init(params), params)
        # beta1 = 0: the first Adam step is -lr * g / |g| (bias-corrected) = -lr * mb_ratio * sign(g).
        np.testing.assert_allclose(updates["w"], -0.0025 * ratio * np.sign(grads["w"]), rtol=1e-5)
        updates, _ = tx.update({"w": jnp.ones(3)}, state, params)
        b2 = 0.99**ratio
        v = b2 * (1 - b2) * np.array([1.0, 4.0, 0.25]) + (1 - b2) * 1.0
        expected = -0.0025 * ratio * 1.0 / (np.sqrt(v / (1 - b2**2)) + 1e-8)
        np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)
    # EMA half-life 10 kimg * 8/32 = 2500 images, ramped up to 5 % of images seen.
    assert float(tr.ema_beta(c, jnp.int32(0))) == 0.0
    np.testing.assert_allclose(tr.ema_beta(c, jnp.int32(10)), 0.5 ** (8 / (10 * 8 * 0.05)), rtol=1e-6)
    np.testing.assert_allclose(tr.ema_beta(c, jnp.int32(100000)), 0.5 ** (8 / 2500), rtol=1e-6)


def test_clinical_weight_zero_gives_the_plain_stylegan2_generator_step(classifier_dir):
    batch = _batch()
    simple = {"ada.mode": "none", "loss.style_mixing_prob": 0.0}  # cheaper compiles; not under test here
    plain = tiny_config(**simple)
    with_clf = tiny_config(**simple, **{"clinical.checkpoint": classifier_dir})
    state = tr.init_state(plain, jax.random.PRNGKey(0))
    fast = {"xla_backend_optimization_level": 0}
    new_plain, m_plain = jax.jit(functools.partial(tr.g_main_step, plain), compiler_options=fast)(state, batch)
    new_clf, m_clf = jax.jit(functools.partial(tr.g_main_step, with_clf), compiler_options=fast)(state, batch)
    for a, b in zip(jax.tree_util.tree_leaves(new_plain.g_params), jax.tree_util.tree_leaves(new_clf.g_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "clinical_ce" not in m_plain and float(m_clf["clinical_ce"]) > 0  # evaluated, not trained on
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(state.g_params),
                                                         jax.tree_util.tree_leaves(new_plain.g_params))]
    assert any(changed)
    with pytest.raises(ValueError, match="needs config.clinical.checkpoint"):
        tr.g_main_step(tiny_config(**{"clinical.weight": 0.5}), state, batch)


def test_fit_conditional_on_spine_phantoms_on_8_devices(tmp_path, classifier_dir):
    from jaxmedgan.trainers import common

    assert jax.device_count() == 8
    c = tiny_config(**{"train.steps": 4, "train.log_every": 2, "train.eval_every": 4,
                       "checkpoint.every": 2, "samples.every": 4, "samples.per_row": 2,
                       "ada.kimg": 0.01,  # p moves by 8 * 4 / 10 per update: visible after 4 steps
                       "clinical.checkpoint": classifier_dir, "clinical.weight": 0.1,
                       "clinical.eval_per_class": 2})
    train_x, train_y = spine_phantoms.generate((4, 4, 4, 4), spine_phantoms.TRAIN_SEED, 16)
    eval_data = spine_phantoms.generate((1, 1, 1, 1), spine_phantoms.TEST_SEED, 16)
    state = common.fit(c, str(tmp_path), tr.FAMILY, data=(pipeline.ArraySource(train_x, train_y), eval_data))
    assert int(state.step) == 4
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    records = metric_writers.read_jsonl(tmp_path / "metrics.jsonl")
    train = {r["step"]: r for r in records if "d_loss" in r}
    assert sorted(train) == [2, 4]
    for key in ("g_loss", "d_loss", "r1_penalty", "pl_penalty", "clinical_ce", "ada_p", "images_per_sec"):
        assert key in train[2], key
    assert "ada_r_t" in train[4] and "ada_r_t" not in train[2]  # p updated every 4 steps, on the host
    p = float(jax.device_get(state.extra["ada_p"]))
    assert p in (0.0, pytest.approx(0.032 * 100, abs=1.0)) or 0.0 <= p <= 1.0
    evals = [r for r in records if "eval/clinical_acc_generated" in r]
    assert evals and all(f"eval/clinical_acc_generated_class{k}" in evals[-1] for k in range(4))
    assert os.path.isfile(tmp_path / "samples" / "step_0000004.png")
    # The EMA generator is what samples: it moved away from the initial G but is not G itself.
    ema, g = jax.tree_util.tree_leaves(state.extra["g_ema_params"]), jax.tree_util.tree_leaves(state.g_params)
    assert any(not np.allclose(a, b) for a, b in zip(ema, g))


def test_dp_refuses_example_mixing_minibatch_stddev_and_is_not_wired_yet():
    c = tiny_config()
    c.privacy = {"enabled": True}
    with pytest.raises(ValueError, match="minibatch-stddev mixes examples"):
        tr.init_state(c, jax.random.PRNGKey(0))
    c.model.mbstd_group_size = 1
    with pytest.raises(NotImplementedError, match="DP-SGD is not implemented for the stylegan2 trainer"):
        tr.init_state(c, jax.random.PRNGKey(0))
