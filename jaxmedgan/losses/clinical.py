"""Clinical loss term: cross-entropy of a frozen domain classifier on generated images.

G's loss gains lambda * CE(classifier(G(z, c)), c): images of class c must look like class c to a
classifier trained on real data. The classifier is frozen (its variables are an input of the
step, never differentiated) and reached through its pure `logits(variables, images) -> [N, K]`;
it is a `models.trained_classifier.LoadedClassifier`, loaded from a classifier training workdir
(the one frozen format; `config.clinical.checkpoint` names it).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def clinical_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy per example: logits [B, K], int labels [B] -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """{class k: accuracy over examples of class k} (classes with no examples are left out)."""
    preds = np.argmax(np.asarray(logits), axis=-1)
    labels = np.asarray(labels)
    return {k: float(np.mean(preds[labels == k] == k)) for k in range(num_classes) if np.any(labels == k)}
