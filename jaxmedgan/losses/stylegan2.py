"""StyleGAN2-ADA losses and regularisers, per example (each returns a [B] vector), and each phase's loss.

Math of NVlabs/stylegan2-ada-pytorch `training/loss.py::StyleGAN2Loss`:

* main losses: the non-saturating logistic pair of `jaxmedgan.losses.gan`, softplus(-D(G(z))) for G,
  softplus(D(G(z))) + softplus(-D(x)) for D;
* R1 on reals: gamma/2 * ||grad_x D(x)||^2, gradient of the summed logits w.r.t. each real image
  (through the ADA augmentation when D sees augmented reals);
* path-length regulariser: with y ~ N(0, I) / sqrt(H*W), a = ||J_w^T y|| averaged over the ws of a
  sample (sqrt of the mean over ws of the squared norms), penalty (a - pl_mean)^2 where pl_mean is an
  EMA of mean(a) with decay 0.01; weight 2 on a batch shrunk by 2 (the trainer shrinks the batch).

The phases' losses, as `accumulate_gradients` forms them (the trainer, trainers/stylegan2.py, runs
the models, ADA, the optimisers and picks the phases; `interval` is lazy regularisation's gain):

    Gmain  `g_main_loss`   softplus(-D(G(z, c), c)) [+ lambda * CE(clf(G(z, c)), c), losses/clinical.py]
    Greg   `g_reg_loss`    mean path-length penalty * pl_weight * pl_interval
    Dmain  `d_main_loss`   softplus(D(G(z, c), c)) + softplus(-D(x, c))
    Dreg   `d_reg_loss`    mean R1 * r1_interval
    Dboth  `d_both_real_loss` (DP: the real-data term clipped per example) softplus(-D(x)) + r1_interval * R1,
           with `d_fake_loss` as its generated-data term

DP note: `r1_penalty` differentiates the batch sum, so for a D that mixes examples (minibatch
stddev with group > 1) row i also carries the other examples' dependence on x_i, exactly as
StyleGAN2-ADA; `r1_penalty_per_example` vmaps a single-example D and equals it whenever D is
per-example, which is what DP-SGD needs.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxmedgan.losses import clinical
from jaxmedgan.losses.gan import ADVERSARIAL, g_nonsaturating

PL_DECAY = 0.01  # EMA decay of pl_mean
PL_WEIGHT = 2.0
PL_BATCH_SHRINK = 2


def _sum_except_batch(x: jax.Array) -> jax.Array:
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], images: jax.Array, gamma: float) -> jax.Array:
    """gamma/2 * ||d(sum_j D_j)/dx_i||^2 per example i; d_fn: [B,H,W,C] -> logits [B]; returns [B]."""
    return r1_penalty_and_logits(d_fn, images, gamma)[0]


def r1_penalty_and_logits(d_fn: Callable[[jax.Array], jax.Array], images: jax.Array,
                          gamma: float) -> tuple[jax.Array, jax.Array]:
    """(R1 penalty [B], logits D(images) [B]) from one forward and one backward pass."""
    logits, vjp = jax.vjp(d_fn, images)
    (grads,) = vjp(jnp.ones_like(logits))
    return 0.5 * gamma * _sum_except_batch(jnp.square(grads.astype(jnp.float32))), logits


def r1_penalty_per_example(d_fn: Callable[[jax.Array], jax.Array], images: jax.Array,
                           gamma: float) -> jax.Array:
    """R1 with each example through D alone (vmap over [1,H,W,C] batches); [B]. Needs a per-example D."""

    def one(x: jax.Array) -> jax.Array:
        g = jax.grad(lambda y: d_fn(y[None])[0])(x)
        return 0.5 * gamma * jnp.sum(jnp.square(g.astype(jnp.float32)))

    return jax.vmap(one)(images)


def path_length_penalty(synthesis_fn: Callable[[jax.Array], jax.Array], ws: jax.Array, key: jax.Array,
                        pl_mean: jax.Array, decay: float = PL_DECAY) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(penalty [B], path lengths [B], new pl_mean []) for ws [B, num_ws, w_dim].

    synthesis_fn maps ws to images [B,H,W,C]. As StyleGAN2-ADA, the penalty uses the updated mean
    lerp(pl_mean, mean(lengths), decay) with its gradient; store `stop_gradient(new pl_mean)`.
    """
    images, vjp = jax.vjp(synthesis_fn, ws)
    h, w = images.shape[1], images.shape[2]
    noise = jax.random.normal(key, images.shape, jnp.float32) / jnp.sqrt(float(h * w))
    (grads,) = vjp(noise.astype(images.dtype))
    lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads.astype(jnp.float32)), axis=2), axis=1))
    new_mean = pl_mean + decay * (jnp.mean(lengths) - pl_mean)
    return jnp.square(lengths - new_mean), lengths, new_mean


# ----------------------------------------------------------------------------------------------
# The phases' losses.


# D's terms per example, f32 [B] -> [B]: softplus(-D(x)) on reals, softplus(D(G(z))) on generated
# images -- the non-saturating logistic pair of losses/gan.py.
d_real_loss, d_fake_loss, _ = ADVERSARIAL["nonsaturating"]


def g_main_loss(fake_logits: jax.Array, clf_logits: jax.Array | None = None, labels: jax.Array | None = None, *,
                clinical_weight: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Gmain per example f32 [B]: softplus(-D(G(z, c), c)) [+ clinical_weight * CE(clf(G(z, c)), c)].

    fake_logits f32 [B]: D on the (augmented) generated images; clf_logits f32 [B, K]: the frozen
    clinical classifier on them (None: no classifier), labels int [B] the classes they were drawn
    for. Parts: "adversarial" [B], and "clinical_ce" [B] whenever clf_logits is given (a weight of 0
    reports it but leaves the loss, and its gradient, exactly plain StyleGAN2-ADA's).
    """
    adversarial = g_nonsaturating(fake_logits)
    loss, parts = adversarial, {"adversarial": adversarial}
    if clf_logits is None:
        if clinical_weight > 0:
            raise ValueError(f"clinical_weight={clinical_weight} > 0 needs the clinical classifier's logits.")
        return loss, parts
    ce = clinical.clinical_loss(clf_logits, labels)
    if clinical_weight > 0:
        loss = loss + clinical_weight * ce
    return loss, {**parts, "clinical_ce": ce}


def g_reg_loss(synthesis_fn: Callable[[jax.Array], jax.Array], ws: jax.Array, key: jax.Array,
               pl_mean: jax.Array, *, weight: float = PL_WEIGHT, interval: int = 1,
               decay: float = PL_DECAY) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Greg, a scalar: mean path-length penalty (`path_length_penalty` of ws [B, num_ws, w_dim]) * weight
    * interval. Parts {"penalty" [B], "lengths" [B], "pl_mean" [] (the updated mean, with gradient)}."""
    penalty, lengths, new_mean = path_length_penalty(synthesis_fn, ws, key, pl_mean, decay=decay)
    return jnp.mean(penalty) * weight * interval, {"penalty": penalty, "lengths": lengths, "pl_mean": new_mean}


def d_main_loss(real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Dmain per example f32 [B]: softplus(D(G(z))) + softplus(-D(x)), from D's logits f32 [B] on the
    (augmented) generated and real images; parts {"fake", "real"} [B]."""
    fake, real = d_fake_loss(fake_logits), d_real_loss(real_logits)
    return fake + real, {"fake": fake, "real": real}


def d_reg_loss(d_fn: Callable[[jax.Array], jax.Array], images: jax.Array, gamma: float,
               interval: int = 1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Dreg, a scalar: mean R1 (`r1_penalty_and_logits` on real images [B,H,W,C]) * interval.
    Parts {"penalty" [B], "logits" [B]: D's logits on the images}."""
    penalty, logits = r1_penalty_and_logits(d_fn, images, gamma)
    return jnp.mean(penalty) * interval, {"penalty": penalty, "logits": logits}


def d_both_real_loss(real_logits: jax.Array, r1: jax.Array, interval: int = 1) -> jax.Array:
    """Dboth's real-data term per example: softplus(-D(x)) + interval * R1 (R1 = 0 off the R1 steps);
    f32 [B] (or one example's scalar) -- what DP-SGD clips per example."""
    return d_real_loss(real_logits) + interval * r1
