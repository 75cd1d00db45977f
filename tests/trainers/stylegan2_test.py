"""StyleGAN2-ADA trainer: lazy schedule, optimiser/EMA constants, clinical classifier (lambda=0, trainer
workdirs, class checks), StyleGAN-format data, bf16 fit on 8 devices."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import classifier_liver, stylegan2_ada_spine
from jaxmedgan import metric_writers
from jaxmedgan.data import spine_phantoms, stylegan_dataset
from jaxmedgan.models import trained_classifier
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


def _classifier_workdir(path, names, arch="resnet", size=16):
    """A classifier-trainer workdir as training leaves it (init only), in the one frozen format."""
    c = classifier_liver.get_config()
    c.data.image_size = size
    c.model.arch, c.model.num_classes, c.model.features = arch, len(names), (4, 8)
    c.model.stem_stride, c.model.dropout = 1, 0.0
    state = jax.jit(functools.partial(trained_classifier.init_state, c))(jax.random.PRNGKey(0))
    return trained_classifier.save(str(path), c, state, names)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A randomly initialised 16 px, 4-class plain-CNN classifier on the spine classes."""
    return _classifier_workdir(tmp_path_factory.mktemp("clf") / "spine_classifier", spine_phantoms.CLASS_NAMES,
                               arch="cnn")


@pytest.fixture(scope="module")
def classifier_workdir(tmp_path_factory):
    """A 16 px, 4-class ResNet classifier-trainer workdir on the spine classes."""
    return _classifier_workdir(tmp_path_factory.mktemp("clf_run") / "run", spine_phantoms.CLASS_NAMES)


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


def test_clinical_weight_zero_gives_the_plain_stylegan2_generator_step(classifier_workdir):
    # The classifier is a classifier-trainer workdir (ResNet); the fit test below uses the
    # losses.clinical directory format.
    batch = _batch()
    simple = {"ada.mode": "none", "loss.style_mixing_prob": 0.0}  # cheaper compiles; not under test here
    plain = tiny_config(**simple)
    with_clf = tiny_config(**simple, **{"clinical.checkpoint": classifier_workdir})
    state = jax.jit(functools.partial(tr.init_state, plain))(jax.random.PRNGKey(0))
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


def test_classifier_workdir_is_checked_against_the_gans_conditions(classifier_workdir, tmp_path):
    c = tiny_config(**{"clinical.checkpoint": classifier_workdir})
    clf = tr._frozen_classifier(c)
    x = jnp.asarray(_batch(4)["image"])
    assert clf.num_classes == 4 and clf.class_names == spine_phantoms.CLASS_NAMES
    np.testing.assert_allclose(jax.jit(clf.logits)(clf.variables, x), clf(x), rtol=1e-5, atol=1e-6)
    tr.check_clinical_classes(c, spine_phantoms.CLASS_NAMES)  # the phantom-spine data's classes
    tr.check_clinical_classes(c, None)  # StyleGAN datasets: integer labels, count only
    swapped = spine_phantoms.CLASS_NAMES[::-1]
    with pytest.raises(ValueError, match=r"has classes \['normal'.*conditions .* are \['sclerotic_lesion'"):
        tr.check_clinical_classes(c, swapped)
    three = _classifier_workdir(tmp_path / "three", ("normal", "fracture", "lesion"), arch="cnn")
    with pytest.raises(ValueError, match=r"has 3 classes \['normal', 'fracture', 'lesion'\].*num_classes=4"):
        tr._frozen_classifier(tiny_config(**{"clinical.checkpoint": three}))
    with pytest.raises(ValueError, match=r"takes 16x16x1 images but the GAN makes 32x32x1"):
        tr._frozen_classifier(tiny_config(**{"clinical.checkpoint": classifier_workdir, "data.image_size": 32}))


@pytest.fixture(scope="module")
def stylegan_folder(tmp_path_factory):
    """16 px spine phantoms (4 per class) in StyleGAN2-ADA's dataset format: folder and zip."""
    x, y = spine_phantoms.generate((4, 4, 4, 4), spine_phantoms.TRAIN_SEED, 16)
    u8 = np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)
    root = tmp_path_factory.mktemp("sgds")
    return (stylegan_dataset.write_stylegan_dataset(str(root / "spine"), u8, y),
            stylegan_dataset.write_stylegan_dataset(str(root / "spine.zip"), u8, y), u8, y)


def test_stylegan_folder_data_source(stylegan_folder):
    # A StyleGAN2-ADA folder / zip is a registry source like any other: built once, read windowed.
    folder, zipped, u8, y = stylegan_folder
    for path in (folder, zipped):
        c = tiny_config(**{"data.source": "stylegan-folder", "data.image_dir": path, "data.holdout_fraction": 0.0,
                           "model.num_classes": 4})
        train, eval_arrays, names, _ = tr.load_data(c)
        assert len(train) == 16 and eval_arrays is None and names == ("0", "1", "2", "3")
        np.testing.assert_allclose(np.stack([train[i]["image"] for i in range(16)]), u8 / 127.5 - 1, atol=1e-6)
        np.testing.assert_array_equal([train[i]["label"] for i in range(16)], y)
    c = tiny_config(**{"data.source": "stylegan-folder", "data.image_dir": folder, "data.holdout_fraction": 0.25})
    train, (held_x, held_y), _, _ = tr.load_data(c)
    assert len(train) == 12 and np.bincount(held_y).tolist() == [1, 1, 1, 1]  # stratified hold-out
    with pytest.raises(ValueError, match=r"image shape \(16, 16, 1\).*expected \(32, 32, 1\).*--resize"):
        tr.load_data(tiny_config(**{"data.source": "stylegan-folder", "data.image_dir": folder, "data.image_size": 32}))
    with pytest.raises(ValueError, match=r"has 4 classes.*--config.model.num_classes=4"):
        tr.load_data(tiny_config(**{"data.source": "stylegan-folder", "data.image_dir": folder, "model.num_classes": 3}))
    with pytest.raises(ValueError, match="'stylegan-folder' needs image_dir"):
        tr.load_data(tiny_config(**{"data.source": "stylegan-folder"}))


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_bf16_fit_on_a_stylegan_folder_on_8_devices(tmp_path, classifier_dir, stylegan_folder):
    # End to end through train_and_evaluate: StyleGAN-format data, bfloat16 compute (params and
    # Adam state stay float32; fit raises on any non-finite metric), clinical term, lazy phases.
    assert jax.device_count() == 8
    c = tiny_config(**{"train.steps": 4, "train.log_every": 2, "train.eval_every": 4,
                       "checkpoint.every": 2, "samples.every": 4, "samples.per_row": 2,
                       "ada.kimg": 0.01,  # p moves by 8 * 4 / 10 per update: visible after 4 steps
                       "clinical.checkpoint": classifier_dir, "clinical.weight": 0.1,
                       "clinical.eval_per_class": 2, "train.dtype": "bfloat16",
                       "data.source": "stylegan-folder", "data.image_dir": stylegan_folder[1],
                       # StyleGAN labels are bare indices: name them as the clinical classifier does.
                       "data.classes": ",".join(spine_phantoms.CLASS_NAMES)})
    state = tr.train_and_evaluate(c, str(tmp_path))
    assert int(state.step) == 4
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    records = metric_writers.read_jsonl(tmp_path / "metrics.jsonl")
    train = {r["step"]: r for r in records if "d_loss" in r}
    assert sorted(train) == [2, 4]
    for key in ("g_loss", "d_loss", "r1_penalty", "pl_penalty", "clinical_ce", "ada_p", "images_per_sec"):
        assert key in train[2], key
    assert "ada_r_t" in train[4] and "ada_r_t" not in train[2]  # p updated every 4 steps, on the host
    assert 0.0 <= float(jax.device_get(state.extra["ada_p"])) <= 1.0
    evals = [r for r in records if "eval/clinical_acc_generated" in r]
    assert evals and all(f"eval/clinical_acc_generated_class{k}" in evals[-1] for k in range(4))
    assert os.path.isfile(tmp_path / "samples" / "step_0000004.png")
    for name in ("g_params", "d_params", "g_opt_state", "d_opt_state"):
        leaves = [l for l in jax.tree_util.tree_leaves(getattr(state, name)) if jnp.issubdtype(l.dtype, jnp.floating)]
        assert leaves and all(l.dtype == jnp.float32 for l in leaves), name
    _, d = tr.build_models(c)
    assert d.dtype == jnp.bfloat16
    # The EMA generator is what samples: it moved away from the initial G but is not G itself.
    ema, g = jax.tree_util.tree_leaves(state.extra["g_ema_params"]), jax.tree_util.tree_leaves(state.g_params)
    assert any(not np.allclose(a, b) for a, b in zip(ema, g))


@pytest.mark.slow  # end-to-end: a classifier run and two GAN runs (~3 min on 2 CPU cores)
def test_clinical_term_raises_generated_class_accuracy_above_lambda_zero(tmp_path):
    # The evidence that the term works: a classifier trained by the project's classifier
    # trainer on the spine phantoms, frozen; two short conditional runs that differ only in lambda.
    # Measured here (16 px, 60 steps, 8 CPU devices): accuracy on generated images 0.24 at
    # lambda 0, 0.51 at lambda 10.
    from configs import classifier_spine
    from jaxmedgan.trainers import classifier

    data_dir = str(tmp_path / "data")
    c = classifier_spine.get_config()
    c.data.data_dir, c.data.image_size, c.model.features = data_dir, 16, (8, 16, 32)
    c.train.steps = c.train.eval_every = c.checkpoint.every = 150
    c.train.quiet = True
    classifier.train_and_evaluate(c, str(tmp_path / "clf"))
    acc = {}
    for lam in (0.0, 10.0):
        g = tiny_config(**{"data.data_dir": data_dir, "train.steps": 60, "train.batch_size": 16,
                           "train.eval_every": 60, "train.log_every": 60, "checkpoint.every": 60,
                           "samples.every": 60, "clinical.checkpoint": str(tmp_path / "clf"),
                           "clinical.weight": lam, "clinical.eval_per_class": 32})
        g.train.fast_compile = False  # 60 steps: optimised steps beat the faster compile
        workdir = tmp_path / f"lam{lam:g}"
        tr.train_and_evaluate(g, str(workdir))
        evals = [r for r in metric_writers.read_jsonl(workdir / "metrics.jsonl")
                 if "eval/clinical_acc_generated" in r]
        assert [r["step"] for r in evals] == [60]
        acc[lam] = evals[-1]["eval/clinical_acc_generated"]
    # 128 generated images per run: a gap of 0.1 is > 2 binomial standard errors.
    assert acc[10.0] > acc[0.0] + 0.1, acc
