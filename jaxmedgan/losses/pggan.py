"""PGGAN losses: WGAN-GP (Gulrajani et al. 2017) with PGGAN's drift penalty, per example.

For example i with real x_i, fake x~_i and eps_i ~ U[0, 1]:

    d_loss_i = D(x~_i) - D(x_i) + lambda * (||grad_x D(x^_i)||_2 - 1)^2 + drift * D(x_i)^2,
    x^_i = eps_i * x_i + (1 - eps_i) * x~_i                    (lambda = 10, drift = 0.001)
    g_loss_i = -D(G(z_i))

Everything is returned per example so DP-SGD can clip it (vmapped over single examples), and the
batched forms equal the per-example ones whenever D itself treats examples independently.
Under DP the loss splits into the part that touches real x_i (`d_wgan_gp_real`: -D(x_i), the
drift on D(x_i) and the penalty on x^_i, which blends x_i in) -- clipped per example and noised --
and the pure-fake part D(x~_i), which sees no private data: d_wgan_gp = d_wgan_gp_real + D(x~).

Where the penalty is taken (`gp_on`, config.loss.gp_on):
  'interpolates'  at x^_i, as WGAN-GP (the default). Under DP it is part of the clipped real term, a
                  gradient of D's input gradient, which only vmap clipping handles.
  'fake'          at the generated x~_i instead: lambda * (||grad_x D(x~_i)|| - 1)^2, the Lipschitz
                  constraint enforced where G puts its mass (the place of Mescheder et al. 2018's R2).
                  It reads no real image, so under DP it is a public term: not clipped, not noised,
                  and the clipped real term is first-order in D, which ghost clipping covers.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

GP_WEIGHT = 10.0  # lambda
DRIFT_WEIGHT = 0.001  # epsilon_drift: keeps D(real) near 0 (the WGAN score has no anchor)

GP_ON = ("interpolates", "fake")  # where the gradient penalty is taken (module docstring)

DFn = Callable[[jax.Array], jax.Array]  # images [N,H,W,C] -> scores [N]


def interpolate(real: jax.Array, fake: jax.Array, eps: jax.Array) -> jax.Array:
    """x^ = eps * real + (1 - eps) * fake, eps [N] broadcast over H, W, C; dtype of real."""
    e = eps.reshape((-1,) + (1,) * (real.ndim - 1)).astype(real.dtype)
    return fake + (real - fake) * e


def penalty_at(d_fn: DFn, x: jax.Array, weight: float = GP_WEIGHT,
               target: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(weight * (||grad D(x_i)|| - target)^2 / target^2 f32 [N], grad norms f32 [N]) at images x [N,H,W,C].

    The gradient is of sum_i D(x_i), so row i is example i's own gradient when D has no
    cross-example layers (minibatch stddev couples them slightly, as in PGGAN's code).
    """
    grads = jax.grad(lambda v: jnp.sum(d_fn(v).astype(jnp.float32)))(x)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.astype(jnp.float32)), axis=tuple(range(1, grads.ndim))))
    return weight * jnp.square(norms - target) / target**2, norms


def gradient_penalty(d_fn: DFn, real: jax.Array, fake: jax.Array, eps: jax.Array,
                     weight: float = GP_WEIGHT, target: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """WGAN-GP's penalty at the interpolates x^_i (`interpolate`): `penalty_at` there."""
    return penalty_at(d_fn, interpolate(real, fake, eps), weight, target)


def check_gp_on(gp_on: str) -> str:
    """`gp_on` itself if it is one of GP_ON; else a ValueError naming config.loss.gp_on."""
    if gp_on not in GP_ON:
        raise ValueError(f"config.loss.gp_on={gp_on!r} must be one of {GP_ON}.")
    return gp_on


def d_wgan_gp_real(d_fn: DFn, real: jax.Array, fake: jax.Array, eps: jax.Array, *,
                   gp_weight: float = GP_WEIGHT, drift_weight: float = DRIFT_WEIGHT,
                   gp_on: str = "interpolates") -> tuple[jax.Array, dict]:
    """The terms of D's loss that touch real x_i, f32 [N]: -D(x_i) + gp(x^_i) + drift * D(x_i)^2
    (no gp with gp_on='fake': it is then a term on generated images, `d_wgan_gp_fake`), and their
    parts {real_score, gp, grad_norm, drift} [N]. DP-SGD clips this per example."""
    check_gp_on(gp_on)
    real_score = d_fn(real).astype(jnp.float32)
    if gp_weight and gp_on == "interpolates":
        gp, norms = gradient_penalty(d_fn, real, fake, eps, gp_weight)
    else:  # no penalty: no input gradient in the loss (ghost clipping can then clip it)
        gp = norms = jnp.zeros_like(real_score)
    drift = drift_weight * jnp.square(real_score)
    loss = gp + drift - real_score
    return loss, {"real_score": real_score, "gp": gp, "grad_norm": norms, "drift": drift}


def d_wgan_gp_fake(d_fn: DFn, fake: jax.Array, *, gp_weight: float = GP_WEIGHT,
                   gp_on: str = "interpolates") -> tuple[jax.Array, dict]:
    """The terms of D's loss on generated x~_i only, f32 [N]: D(x~_i), + the penalty at x~_i when
    gp_on='fake'; parts {fake_score, gp, grad_norm} [N] (gp, grad_norm 0 with 'interpolates')."""
    check_gp_on(gp_on)
    fake_score = d_fn(fake).astype(jnp.float32)
    if gp_weight and gp_on == "fake":
        gp, norms = penalty_at(d_fn, fake, gp_weight)
    else:
        gp = norms = jnp.zeros_like(fake_score)
    return fake_score + gp, {"fake_score": fake_score, "gp": gp, "grad_norm": norms}


def d_wgan_gp(d_fn: DFn, real: jax.Array, fake: jax.Array, eps: jax.Array, *,
              gp_weight: float = GP_WEIGHT, drift_weight: float = DRIFT_WEIGHT,
              gp_on: str = "interpolates") -> tuple[jax.Array, dict]:
    """D's per-example loss f32 [N] and its parts {real_score, fake_score, gp, grad_norm, drift} [N]
    (gp and grad_norm of the penalty wherever `gp_on` takes it)."""
    real_loss, parts = d_wgan_gp_real(d_fn, real, fake, eps, gp_weight=gp_weight, drift_weight=drift_weight,
                                      gp_on=gp_on)
    fake_loss, fake_parts = d_wgan_gp_fake(d_fn, fake, gp_weight=gp_weight, gp_on=gp_on)
    if gp_on == "fake":
        parts = {**parts, "gp": fake_parts["gp"], "grad_norm": fake_parts["grad_norm"]}
    return fake_loss + real_loss, {**parts, "fake_score": fake_parts["fake_score"]}


def _single(batched: Callable, d_fn: DFn, real: jax.Array, fake: jax.Array, eps: jax.Array,
            **kwargs) -> tuple[jax.Array, dict]:
    loss, parts = batched(d_fn, real[None], fake[None], jnp.reshape(eps, (1,)), **kwargs)
    return loss[0], jax.tree_util.tree_map(lambda v: v[0], parts)


def d_wgan_gp_single(d_fn: DFn, real: jax.Array, fake: jax.Array, eps: jax.Array,
                     **kwargs) -> tuple[jax.Array, dict]:
    """`d_wgan_gp` for ONE example (real, fake [H,W,C], eps scalar) -> (loss scalar, parts)."""
    return _single(d_wgan_gp, d_fn, real, fake, eps, **kwargs)


def d_wgan_gp_real_single(d_fn: DFn, real: jax.Array, fake: jax.Array, eps: jax.Array,
                          **kwargs) -> tuple[jax.Array, dict]:
    """`d_wgan_gp_real` for ONE example (real, fake [H,W,C], eps scalar) -> (loss scalar, parts):
    the form DP-SGD vmaps to get per-example gradients of the real-touching terms."""
    return _single(d_wgan_gp_real, d_fn, real, fake, eps, **kwargs)


def g_wgan(fake_score: jax.Array) -> jax.Array:
    """G's per-example loss -D(G(z)) f32 [N]."""
    return -fake_score.astype(jnp.float32)
