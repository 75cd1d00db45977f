"""The image classifier's loss and accuracy (`trainers/classifier.py` trains with them).

Single-label: softmax cross-entropy with label smoothing, weighted per example by its class's
weight. Multi-label: binary cross-entropy per finding with a positive weight per finding,
averaged over the findings whose label is known (`target_mask` f32 [B,K], 1 = known; absent: all
known). The weights come from the training set (`trainers.classifier.class_weights`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def per_example_loss(logits: jax.Array, batch: dict, weights: jax.Array, *, multi_label: bool,
                     smoothing: float = 0.0) -> jax.Array:
    """Weighted loss f32 [B] for logits [B,K].

    batch: "label" i32 [B] (single-label) or "targets" f32 [B,K] in {0, 1} and optionally
    "target_mask" f32 [B,K] (multi-label). weights f32 [K]: w[label] scales a single-label
    example's CE; w[k] scales finding k's positive term. Smoothing moves one-hot targets towards
    uniform (1/K) and binary targets towards 1/2.
    """
    logits = logits.astype(jnp.float32)
    if multi_label:
        y = batch["targets"]
        y_s = y * (1 - smoothing) + 0.5 * smoothing
        bce = -(weights * y_s * jax.nn.log_sigmoid(logits) + (1 - y_s) * jax.nn.log_sigmoid(-logits))
        if "target_mask" not in batch:
            return jnp.mean(bce, axis=-1)
        m = batch["target_mask"].astype(jnp.float32)
        # where(): a masked entry's bce (even inf/nan from an extreme logit) never reaches the sum.
        return jnp.sum(jnp.where(m > 0, bce * m, 0.0), -1) / jnp.maximum(jnp.sum(m, -1), 1.0)
    k = logits.shape[-1]
    onehot = jax.nn.one_hot(batch["label"], k) * (1 - smoothing) + smoothing / k
    return optax.softmax_cross_entropy(logits, onehot) * weights[batch["label"]]


def accuracy(logits: jax.Array, batch: dict, *, multi_label: bool) -> jax.Array:
    """f32 []: top-1 accuracy (single-label) or element accuracy of logit > 0 over known labels."""
    if multi_label:
        right = (logits > 0) == (batch["targets"] > 0.5)
        if "target_mask" not in batch:
            return jnp.mean(right)
        m = batch["target_mask"].astype(jnp.float32)
        return jnp.sum(right * m) / jnp.maximum(jnp.sum(m), 1.0)
    return jnp.mean(jnp.argmax(logits, -1) == batch["label"])
