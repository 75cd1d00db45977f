"""Classifier trainer: 8 devices equal 1, class weighting, train/resume/load, multi-label CSV data."""
import functools
import json
import os
import shutil

import jax
import numpy as np
import optax
import pytest
from PIL import Image

from configs import classifier_liver, stylegan2_ada_spine as stylegan2_spine
from jaxmedgan import main as cli
from jaxmedgan import checkpointing, metric_writers, sharding, trainers
from jaxmedgan.data import labeled
from jaxmedgan.models import classifier as classifier_lib
from jaxmedgan.models import trained_classifier
from jaxmedgan.trainers import classifier, stylegan2


def tiny_config(**overrides):
    c = classifier_liver.get_config()
    c.data.image_size = 16
    c.data.counts = (4, 5, 6)
    c.data.test_counts = (2, 2, 2)
    c.model.features = (4, 8)
    c.model.stem_stride = 1
    c.model.dropout = 0.0
    c.train.batch_size = 8
    c.train.steps = 4
    c.train.quiet = True
    c.train.log_every = c.train.eval_every = c.checkpoint.every = 2
    c.optim.warmup_steps = 1
    for key, value in overrides.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


def _batch(config, seed):
    rng = np.random.default_rng(seed)
    s, k = config.data.image_size, config.model.num_classes
    label = rng.integers(0, k, 8).astype(np.int32)
    return {"image": rng.uniform(-1, 1, (8, s, s, 1)).astype(np.float32), "label": label,
            "targets": np.eye(k, dtype=np.float32)[label]}


def _run_steps(config, mesh, n=2):
    init = functools.partial(classifier.init_state, config)
    shard = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
    state = classifier._jitted_init(config, mesh, shard)(jax.random.PRNGKey(0))
    step = classifier._jitted_step(config, mesh, shard)
    history = []
    for i in range(n):
        state, metrics = step(state, sharding.shard_batch(_batch(config, i), mesh))
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


def test_eight_devices_match_one_device():
    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    config = tiny_config()
    s1, h1 = _run_steps(config, sharding.make_mesh(None, jax.devices()[:1]))
    s8, h8 = _run_steps(config, sharding.make_mesh(None, jax.devices()))
    for m1, m8 in zip(h1, h8):
        for k in m1:
            np.testing.assert_allclose(m8[k], m1[k], rtol=2e-4, atol=2e-5, err_msg=k)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(s1), jax.tree_util.tree_leaves(s8)):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5, err_msg=jax.tree_util.keystr(path))
    assert int(s8.step) == 2


def test_inverse_frequency_weights_and_weighted_losses():
    config = tiny_config()
    data = labeled.LabeledSet(np.zeros((10, 4, 4, 1), np.float32), np.array([0] * 5 + [1] * 3 + [2] * 2, np.int32),
                              ("a", "b", "c"))
    w = classifier.class_weights(config, data)
    np.testing.assert_allclose(w, [10 / (3 * 5), 10 / (3 * 3), 10 / (3 * 2)], rtol=1e-6)  # sklearn 'balanced'
    np.testing.assert_allclose(np.mean(w[data.targets]), 1.0, rtol=1e-6)
    config.loss.class_weighting = "none"
    np.testing.assert_allclose(classifier.class_weights(config, data), 1.0)
    config.loss.class_weighting = "sqrt"
    with pytest.raises(ValueError, match="class_weighting='sqrt'"):
        classifier.class_weights(config, data)

    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], np.float32)
    batch = {"label": np.array([0, 2], np.int32), "targets": np.array([[1, 0, 1], [0, 0, 0]], np.float32)}
    weights = np.array([1.0, 2.0, 3.0], np.float32)
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
    got = classifier.per_example_loss(tiny_config(), logits, batch, weights)
    np.testing.assert_allclose(got, ce * [1.0, 3.0], rtol=1e-6)

    multi = tiny_config(data__multi_label=True)
    y = batch["targets"]
    sig = 1 / (1 + np.exp(-logits))
    bce = -(weights * y * np.log(sig) + (1 - y) * np.log(1 - sig)).mean(-1)
    np.testing.assert_allclose(classifier.per_example_loss(multi, logits, batch, weights), bce, rtol=1e-5)
    ml = labeled.LabeledSet(np.zeros((4, 4, 4, 1), np.float32),
                            np.array([[1, 0], [1, 1], [0, 0], [0, 0]], np.float32), ("x", "y"), multi_label=True)
    np.testing.assert_allclose(classifier.class_weights(multi, ml), [2 / 2, 3 / 1])  # n_neg / n_pos


def _final_vars(workdir):
    clf, _ = trained_classifier.load_classifier(str(workdir))
    return clf.step, jax.tree_util.tree_leaves(jax.device_get(clf.variables))


def test_train_resume_and_load(tmp_path):
    config = tiny_config()
    config.mesh.data = 1  # the 8-device step is tested above; one device compiles faster
    config.checkpoint.async_save = False
    wd = tmp_path / "run"
    classifier.train_and_evaluate(config, str(wd))
    step, uninterrupted = _final_vars(wd)
    assert step == 4 and sorted(os.listdir(wd / "checkpoints")) == ["2", "4"]
    records = metric_writers.read_jsonl(wd / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert any("eval/macro_auc" in r for r in records)
    assert json.load(open(wd / "classes.json"))["class_names"] == ["cyst", "metastasis", "hemangioma"]
    # In memory (no workdir) the same run gives the same parameters.
    state = classifier.fit(config, None, labeled.load(config, "train"))
    for a, b in zip(uninterrupted, jax.tree_util.tree_leaves(jax.device_get(state.variables()))):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # Lose the last checkpoint (a run killed between 2 and 4): the rerun resumes at 2, re-reads
    # the batches of steps 3-4 (data is a function of the step) and lands on the same parameters.
    shutil.rmtree(wd / "checkpoints" / "4")
    classifier.train_and_evaluate(config, str(wd))
    step, resumed = _final_vars(wd)
    assert step == 4
    for a, b in zip(uninterrupted, resumed):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in metric_writers.read_jsonl(wd / "metrics.jsonl") if "loss" in r] == [2, 4, 4]

    clf, names = trained_classifier.load_classifier(str(wd))
    x = np.zeros((3, 16, 16, 1), np.float32)
    assert names == ("cyst", "metastasis", "hemangioma") and clf.num_classes == 3
    assert clf(x).shape == (3, 3) and clf.features(x).shape == (3, 8)
    g = jax.grad(lambda im: clf.logits(clf.variables, im)[:, 0].sum())(x)  # clinical-loss use
    assert g.shape == x.shape and np.isfinite(g).all()
    with pytest.raises(ValueError, match=r"trained on images \(16, 16, 1\).*\(32, 32, 1\)"):
        clf(np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(FileNotFoundError, match="config.json"):
        trained_classifier.load_classifier(str(tmp_path / "nowhere"))


def test_cnn_workdir_serves_features_and_logits_saved_from_any_state(tmp_path):
    # A 'cnn' (models/classifier.py) state saved in the one frozen format (init only: the CLI test
    # below trains a cnn, and a train-step compile would cost ~10 s here).
    config = tiny_config(model__arch="cnn")
    mesh = sharding.make_mesh(None, jax.devices()[:1])
    init = functools.partial(classifier.init_state, config)
    shard = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
    state = classifier._jitted_init(config, mesh, shard)(jax.random.PRNGKey(0))
    wd = trained_classifier.save(str(tmp_path / "cnn"), config, state, ("cyst", "metastasis", "hemangioma"))
    with pytest.raises(ValueError, match="2 class names for config.model.num_classes=3"):
        trained_classifier.save(str(tmp_path / "bad"), config, state, ("cyst", "metastasis"))

    clf, names = trained_classifier.load_classifier(wd)
    assert isinstance(clf.module, classifier_lib.Classifier) and clf.step == 0
    assert names == ("cyst", "metastasis", "hemangioma") and not clf.multi_label
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (3, 16, 16, 1)))
    feats, logits = np.asarray(clf.features(x)), np.asarray(clf(x))
    head = clf.variables["params"]["head"]
    assert feats.shape == (3, 8)  # the pooled last stage feeds the head
    np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)
    reference = classifier_lib.classifier_logits(clf.module, jax.device_get(state.variables()), x)
    np.testing.assert_allclose(jax.jit(clf.logits)(clf.variables, x), reference, rtol=1e-5, atol=1e-6)


def test_cli_trains_multi_label_cnn_on_a_csv_with_groups(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["file,label,group"]
    for i in range(12):
        findings = [n for n, p in (("effusion", i % 2), ("nodule", i % 3 == 0)) if p]
        img = rng.integers(0, 256, (16, 16), np.uint8)
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'|'.join(findings)},patient{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert trainers.get("classifier") is classifier
    cfg = os.path.join(os.path.dirname(classifier_liver.__file__), "classifier_liver.py")
    wd = tmp_path / "run"
    args = ["jaxmedgan", "train", "--config", cfg, "--workdir", str(wd), "--config.data.source=labels-csv",
            f"--config.data.labels_csv={tmp_path / 'labels.csv'}", "--config.data.class_names=('effusion','nodule')",
            "--config.data.multi_label=True", "--config.model.num_classes=2", "--config.data.image_size=16",
            "--config.model.features=(4,8)", "--config.train.batch_size=8", "--config.train.steps=2",
            "--config.train.quiet=True", "--config.data.flip=False", "--config.model.arch=cnn"]
    assert cli.main(args) == 0
    clf, names = trained_classifier.load_classifier(str(wd))
    assert names == ("effusion", "nodule") and clf.multi_label
    assert clf(np.zeros((2, 16, 16, 1), np.float32)).shape == (2, 2)
    gan = stylegan2_spine.get_config()  # the clinical loss takes single-label classifiers only
    gan.model.num_classes, gan.data.image_size, gan.clinical.checkpoint = 2, 16, str(wd)
    with pytest.raises(ValueError, match="multi-label"):
        stylegan2.check_clinical_classes(gan, ("effusion", "nodule"))
    data = labeled.load(checkpointing.read_config(str(wd)), "train")
    assert data.multi_label and data.targets.shape == (12, 2) and len(np.unique(data.groups)) == 6
