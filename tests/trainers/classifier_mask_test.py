"""Classifier U-Ignore: masked multi-label entries take no part in loss, gradient, weights or AUC."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from configs import classifier_chest
from jaxmedgan.data import chest_phantoms, labeled
from jaxmedgan import sharding
from jaxmedgan.evaluators import metrics
from jaxmedgan.trainers import classifier

K = 5


def tiny_config():
    c = classifier_chest.get_config()
    c.data.image_size, c.data.num_train, c.data.num_test = 16, 16, 8
    c.model.features, c.model.stem_stride, c.model.dropout = (4,), 1, 0.0  # one stage: compiles in half the time
    c.train.batch_size, c.train.steps, c.train.quiet = 8, 2, True
    c.optim.warmup_steps = 1
    c.mesh.data = 1
    return c


def _batch(seed, b=8):
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(-1, 1, (b, 16, 16, 1)).astype(np.float32),
            "label": np.zeros(b, np.int32),
            "targets": (rng.uniform(size=(b, K)) < 0.4).astype(np.float32)}


def test_masked_loss_matches_numpy_formula_and_ones_mask_is_bit_identical():
    config = tiny_config()
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4, K)).astype(np.float32)
    batch = _batch(1, b=4)
    w = np.array([1.0, 2.0, 0.5, 3.0, 1.5], np.float32)
    old = classifier.per_example_loss(config, jnp.asarray(logits), batch, jnp.asarray(w))
    ones = classifier.per_example_loss(config, jnp.asarray(logits), {**batch, "target_mask": np.ones((4, K), np.float32)},
                                       jnp.asarray(w))
    np.testing.assert_array_equal(np.asarray(ones), np.asarray(old))
    mask = np.array([[1, 1, 1, 1, 1], [0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], np.float32)
    got = classifier.per_example_loss(config, jnp.asarray(logits), {**batch, "target_mask": mask}, jnp.asarray(w))
    y = batch["targets"].astype(np.float64)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    bce = -(w * y * np.log(p) + (1 - y) * np.log(1 - p))
    expected = (bce * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    assert float(got[2]) == 0.0  # nothing known: no loss at all
    np.testing.assert_allclose(np.asarray(old), bce.mean(-1), rtol=1e-5)


def test_train_step_ones_mask_is_bit_identical_and_masked_targets_change_nothing():
    config = tiny_config()
    # The trainer's own jitted init and step (shared with the fit test below: one compile each).
    mesh = sharding.make_mesh(config.get("mesh"))
    init = functools.partial(classifier.init_state, config)
    shardings = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
    state = classifier._jitted_init(config, mesh, shardings)(jax.random.PRNGKey(0))
    state = state.replace(class_weights=jax.device_put(np.array([1.0, 2.0, 0.5, 3.0, 1.5], np.float32),
                                                       shardings.class_weights))
    jitted = classifier._jitted_step(config, mesh, shardings)

    def step(state, batch):  # the step donates its state: hand it a copy
        return jitted(jax.tree_util.tree_map(jnp.copy, state), sharding.shard_batch(batch, mesh))

    batch = _batch(2)
    leaves = lambda tree: [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]

    def assert_same(a, b):
        for x, y in zip(leaves(a), leaves(b)):
            np.testing.assert_array_equal(x, y)

    s_old, m_old = step(state, batch)  # no target_mask key: the behaviour before U-Ignore
    s_ones, m_ones = step(state, {**batch, "target_mask": np.ones((8, K), np.float32)})
    assert_same((s_old, m_old), (s_ones, m_ones))

    mask = np.ones((8, K), np.float32)
    mask[0, 1] = mask[2, 3] = mask[3, 0] = mask[5, :] = 0.0
    flipped = batch["targets"].copy()
    for i, k in zip(*np.nonzero(mask == 0)):
        flipped[i, k] = 1.0 - flipped[i, k]  # change the target of every masked entry
    s_a, m_a = step(state, {**batch, "target_mask": mask})
    s_b, m_b = step(state, {**batch, "targets": flipped, "target_mask": mask})
    assert_same((s_a, m_a), (s_b, m_b))  # params, opt state, loss, grad norm, accuracy
    # Control: the same flip without the mask does change the loss and the gradient.
    s_c, m_c = step(state, {**batch, "targets": flipped, "target_mask": np.ones((8, K), np.float32)})
    assert float(m_c["loss"]) != float(m_a["loss"])
    assert float(m_c["grad_norm"]) != float(m_a["grad_norm"])


def test_class_weights_count_only_known_labels():
    config = tiny_config()
    targets = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]], np.float32)
    mask = np.array([[1, 1], [0, 1], [1, 0], [1, 1], [1, 1]], np.float32)
    data = labeled.LabeledSet(np.zeros((5, 4, 4, 1), np.float32), targets, ("a", "b"), multi_label=True, mask=mask)
    # finding a known on rows 0,2,3,4: positives 0,4 -> 2, negatives 2,3 -> 2; finding b known on
    # rows 0,1,3,4: positive 1, negatives 0,3,4 -> 3.
    np.testing.assert_allclose(classifier.class_weights(config, data), [2 / 2, 3 / 1], rtol=1e-6)
    plain = labeled.LabeledSet(data.images, targets, ("a", "b"), multi_label=True)
    ones = labeled.LabeledSet(data.images, targets, ("a", "b"), multi_label=True, mask=np.ones_like(mask))
    np.testing.assert_array_equal(classifier.class_weights(config, ones), classifier.class_weights(config, plain))
    np.testing.assert_allclose(classifier.class_weights(config, plain), [2 / 3, 3 / 2], rtol=1e-6)


def test_source_carries_target_mask_for_multi_label_only():
    targets = np.array([[1, 0], [0, 1]], np.float32)
    mask = np.array([[1, 0], [1, 1]], np.float32)
    multi = classifier._Source(labeled.LabeledSet(np.zeros((2, 4, 4, 1), np.float32), targets, ("a", "b"),
                                                  multi_label=True, mask=mask))
    np.testing.assert_array_equal(multi[0]["target_mask"], [1, 0])
    assert "mask" not in multi[0]  # "mask" is the DP padding mask of a batch
    single = classifier._Source(labeled.LabeledSet(np.zeros((2, 4, 4, 1), np.float32), np.array([0, 1], np.int32),
                                                   ("a", "b")))
    assert "target_mask" not in single[0]


def test_masked_metrics_skip_unknown_labels_like_sklearn_on_known_rows():
    rng = np.random.default_rng(3)
    n = 40
    targets = (rng.uniform(size=(n, 3)) < 0.4).astype(np.float32)
    probs = rng.uniform(size=(n, 3))
    names = ("a", "b", "c")
    np.testing.assert_equal(classifier.multi_label_metrics(targets, probs, names, np.ones((n, 3))),
                            metrics.multi_label_metrics(targets, probs, names))
    mask = (rng.uniform(size=(n, 3)) < 0.7).astype(np.float32)
    m = classifier.multi_label_metrics(targets, probs, names, mask)
    for c, name in enumerate(names):
        rows = mask[:, c] > 0
        assert m["auc"][name] == pytest.approx(roc_auc_score(targets[rows, c], probs[rows, c]), abs=1e-12)
        tp = np.sum((probs[rows, c] >= 0.5) & (targets[rows, c] > 0))
        assert m["sensitivity"][name] == pytest.approx(tp / targets[rows, c].sum())
    assert m["macro_auc"] == pytest.approx(np.mean(list(m["auc"].values())))
    right = ((probs >= 0.5) == (targets > 0.5)) | (mask == 0)
    assert m["accuracy"] == pytest.approx(np.mean(right.all(1)))
    assert m["num_unknown_labels"] == int((mask == 0).sum())


def test_fit_on_masked_chest_phantoms_ignores_masked_targets():
    config = tiny_config()
    images, targets = chest_phantoms.generate(16, 5, 16)  # 16 images, seed 5, 16 px
    mask = np.ones_like(targets)
    mask[::3, 1] = mask[1::4, 4] = 0.0
    flipped = np.where(mask > 0, targets, 1.0 - targets)
    a = labeled.LabeledSet(images, targets, chest_phantoms.FINDING_NAMES, multi_label=True, mask=mask)
    b = labeled.LabeledSet(images, flipped, chest_phantoms.FINDING_NAMES, multi_label=True, mask=mask)
    sa, sb = classifier.fit(config, None, a), classifier.fit(config, None, b)
    for x, y in zip(jax.tree_util.tree_leaves(jax.device_get(sa.params)), jax.tree_util.tree_leaves(jax.device_get(sb.params))):
        np.testing.assert_array_equal(x, y)
    ev = classifier.evaluate(config, sa, a)
    assert set(ev) >= {f"eval/auc_{f}" for f in chest_phantoms.FINDING_NAMES}
    assert np.isfinite(ev["eval/macro_auc"])
