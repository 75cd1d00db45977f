"""StyleGAN2-ADA losses and regularisers, per example (each returns a [B] vector).

Math of NVlabs/stylegan2-ada-pytorch `training/loss.py::StyleGAN2Loss`:

* main losses: the non-saturating logistic pair of `jaxmedgan.losses.gan` (re-exported here);
* R1 on reals: gamma/2 * ||grad_x D(x)||^2, gradient of the summed logits w.r.t. each real image
  (through the ADA augmentation when D sees augmented reals);
* path-length regulariser: with y ~ N(0, I) / sqrt(H*W), a = ||J_w^T y|| averaged over the ws of a
  sample (sqrt of the mean over ws of the squared norms), penalty (a - pl_mean)^2 where pl_mean is an
  EMA of mean(a) with decay 0.01; weight 2 on a batch shrunk by 2 (the trainer applies both).

DP note: `r1_penalty` differentiates the batch sum, so for a D that mixes examples (minibatch
stddev with group > 1) row i also carries the other examples' dependence on x_i, exactly as
StyleGAN2-ADA; `r1_penalty_per_example` vmaps a single-example D and equals it whenever D is
per-example, which is what DP-SGD needs.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxmedgan.losses.gan import d_logistic, g_nonsaturating  # noqa: F401  (re-exported)

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
