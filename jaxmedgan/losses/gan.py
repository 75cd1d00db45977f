"""Shared GAN loss terms, written per example (each returns a [B] vector) so DP code can vmap them;
`d2dce` also returns [B], but row i reads the whole batch (refused under DP).

Logits are pre-sigmoid discriminator outputs; `softplus(-x) = -log sigmoid(x)`.

Layout of `losses/` (one file per family's loss math, as NVlabs' `training/loss.py`; the trainers
run the models, optimisers, phases and DP around them): this file holds the terms the families
share; `dcgan.py` the DCGAN / ACGAN objective (trainer `gan`), `pix2pix.py`, `pggan.py` and
`stylegan2.py` those families'; the other files hold non-adversarial terms (`clinical.py`: the
clinical-classifier term StyleGAN2's G may add).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def g_nonsaturating(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating G loss per example: softplus(-D(G(z))) = -log sigmoid(D(G(z))); [B]."""
    return jax.nn.softplus(-fake_logits)


def g_hinge(fake_logits: jax.Array) -> jax.Array:
    """Hinge G loss per example: -D(G(z)); [B]."""
    return -fake_logits


# loss name -> (D's real term, D's fake term, G's term), each per example [B] -> [B].
ADVERSARIAL = {
    "nonsaturating": (lambda r: jax.nn.softplus(-r), jax.nn.softplus, g_nonsaturating),
    "hinge": (lambda r: jax.nn.relu(1.0 - r), lambda f: jax.nn.relu(1.0 + f), g_hinge),
}


def class_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy per example; logits [B, K], labels int [B] -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def tac_generator_class_loss(aux_logits: jax.Array, twin_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """TAC-GAN's G class term per example (Gong et al. 2019): CE(aux) - CE(twin) on generated images; [B].

    The aux head is fitted to real images' labels and the twin to generated ones', so G pulls its
    images towards the real class-conditional distribution and away from its own (the twin
    term is what stops ACGAN's collapse onto easily classified images).
    """
    return class_cross_entropy(aux_logits, labels) - class_cross_entropy(twin_logits, labels)


def d2dce(embed: jax.Array, proxies: jax.Array, labels: jax.Array, *, temperature: float = 0.5,
          m_p: float = 0.98) -> jax.Array:
    """ReACGAN's data-to-data cross-entropy (D2D-CE, Kang et al. 2021), one value per sample; f32 [B].

    embed f32 [B, E]: D's embedding f_i of each image; proxies f32 [K, E]: the class proxies v_k;
    labels int [B]. Both are compared by cosine similarity (normalised here, as D normalises them).
    With s_ip = cos(f_i, v_{y_i}), s_ij = cos(f_i, f_j), T = `temperature` and m_n = 1 - m_p:

      loss_i = -log( e^{-p_i} / (e^{-p_i} + sum_{j: y_j != y_i} e^{[s_ij - m_n]_+ / T}) ),
      p_i = [m_p - s_ip]_+ / T,

    i.e. a cross-entropy of the sample-to-proxy similarity against the sample-to-sample
    similarities of the batch's other-class samples: same-class samples are not negatives (the
    false-negative removal), a proxy closer than m_p and a negative farther than m_n exert no
    pull or push (the margins). StudioGAN's `Data2DataCrossEntropyLoss` also subtracts the
    (detached) row maximum from the negatives' logits "for numerical stability", which changes the
    value since the positive term is not shifted; here the formula is evaluated exactly, by
    logsumexp. NOT per example: sample i's loss reads every other sample of the batch (DP refuses it).
    """
    unit = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
    f, v = unit(embed.astype(jnp.float32)), unit(proxies.astype(jnp.float32))
    pos = jax.nn.relu(m_p - jnp.sum(f * v[labels], axis=-1)) / temperature  # p_i [B]
    neg = jax.nn.relu(f @ f.T - (1.0 - m_p)) / temperature  # [B, B]
    negative = labels[:, None] != labels[None, :]  # other classes only (excludes i itself)
    logits = jnp.concatenate([-pos[:, None], jnp.where(negative, neg, -jnp.inf)], axis=1)
    return pos + jax.nn.logsumexp(logits, axis=1)


def mode_seeking(images_a: jax.Array, images_b: jax.Array, z_a: jax.Array, z_b: jax.Array,
                 eps: float = 1e-5) -> jax.Array:
    """MSGAN's mode-seeking term (Mao et al. 2019), a scalar: 1 / (mean|G(z_a) - G(z_b)| / mean|z_a - z_b| + eps).

    images_a/b [B, ...] = G(z_a, y), G(z_b, y) with the same labels y; z_a/b [B, latent_dim].
    Minimising it pushes G to map distinct latents to distinct images. A batch-level term (not per
    example): it touches only G, never real data, so DP does not need it per example.
    """
    return 1.0 / (mode_seeking_ratio(images_a, images_b, z_a, z_b) + eps)


def mode_seeking_ratio(images_a: jax.Array, images_b: jax.Array, z_a: jax.Array, z_b: jax.Array) -> jax.Array:
    """mean|G(z_a) - G(z_b)| / mean|z_a - z_b|, a scalar: image change per unit of latent change."""
    return jnp.mean(jnp.abs(images_a - images_b)) / jnp.mean(jnp.abs(z_a - z_b))
