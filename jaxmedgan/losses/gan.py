"""GAN losses, written per example (each returns a [B] vector) so DP code can vmap them.

Logits are pre-sigmoid discriminator outputs; `softplus(-x) = -log sigmoid(x)`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def d_logistic(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Non-saturating logistic D loss per example: softplus(-D(x)) + softplus(D(G(z))); [B]."""
    return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)


def g_nonsaturating(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating G loss per example: softplus(-D(G(z))) = -log sigmoid(D(G(z))); [B]."""
    return jax.nn.softplus(-fake_logits)


def class_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy per example; logits [B, K], labels int [B] -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
