"""Clinical term: a classifier trained a few steps on spine phantoms, saved in the one frozen format
(a classifier workdir), reloaded frozen."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import classifier_spine
from jaxmedgan.data import spine_phantoms
from jaxmedgan.losses import clinical
from jaxmedgan.models import classifier as classifier_lib
from jaxmedgan.models import trained_classifier


def _train_classifier(steps=50, size=32):
    x, y = spine_phantoms.generate((16, 16, 16, 16), spine_phantoms.TRAIN_SEED, size)
    module = classifier_lib.Classifier(num_classes=4, features=(8, 16, 32))
    variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 1)))
    tx = optax.adam(3e-3)
    opt = tx.init(variables)

    @jax.jit
    def step(variables, opt, xb, yb):
        def loss_fn(v):
            return jnp.mean(clinical.clinical_loss(module.apply(v, xb, train=True), yb))

        loss, grads = jax.value_and_grad(loss_fn)(variables)
        updates, opt = tx.update(grads, opt, variables)
        return optax.apply_updates(variables, updates), opt, loss

    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        idx = rng.choice(len(x), 32, replace=False)
        variables, opt, loss = step(variables, opt, x[idx], y[idx])
        losses.append(float(loss))
    return module, variables, losses, (x, y)


@pytest.fixture(scope="module")
def trained():
    return _train_classifier()


def test_classifier_learns_spine_classes_in_a_few_steps(trained):
    module, variables, losses, (x, y) = trained
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])  # from about log(4) = 1.39
    logits = jax.jit(functools.partial(classifier_lib.classifier_logits, module))(variables, x)
    acc = np.mean(np.argmax(logits, -1) == y)
    assert acc > 0.5  # chance is 0.25


def test_a_classifier_trained_elsewhere_saved_frozen_drives_the_loss(trained, tmp_path):
    module, variables, _, (x, y) = trained
    config = classifier_spine.get_config()  # the one frozen format: a classifier workdir
    config.model.arch, config.model.features, config.model.num_classes = "cnn", (8, 16, 32), 4
    config.data.image_size, config.data.channels = 32, 1
    state = trained_classifier.init_state(config, jax.random.PRNGKey(1)).replace(params=variables["params"])
    path = trained_classifier.save(str(tmp_path / "clf"), config, state, spine_phantoms.CLASS_NAMES)
    clf, names = trained_classifier.load_classifier(path)
    assert clf.num_classes == 4 and names == clf.class_names == spine_phantoms.CLASS_NAMES
    logits = jax.jit(clf.logits)(clf.variables, x)
    ref = jax.jit(functools.partial(classifier_lib.classifier_logits, module))(variables, x)
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
    # The term is differentiable in the images (this is what reaches G).
    loss = lambda im: jnp.mean(clinical.clinical_loss(clf.logits(clf.variables, im), y))
    grad = jax.jit(jax.grad(loss))(x)
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0
    acc = clinical.per_class_accuracy(np.asarray(logits), y, 4)
    assert sorted(acc) == [0, 1, 2, 3] and np.mean(list(acc.values())) > 0.5
    with pytest.raises(ValueError, match=r"trained on images \(32, 32, 1\)"):
        clf.logits(clf.variables, jnp.zeros((1, 16, 16, 1)))
    with pytest.raises(FileNotFoundError, match="config.json.*classifier training workdir"):
        trained_classifier.load_classifier(str(tmp_path))


def test_clinical_loss_is_softmax_cross_entropy():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = jnp.array([0, 2])
    expected = [-np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))), np.log(3)]
    np.testing.assert_allclose(clinical.clinical_loss(logits, labels), expected, rtol=1e-6)
