"""DP-SGD's Gaussian noise as an optax transformation chained before the optimiser.

    private_tx = optax.chain(gaussian_noise(sigma, C, E[B]), adam)
    updates, state = private_tx.update(sum_scale_grads, state, params, noise_key=key)

The input is a *sum-scale* gradient (`dp_sgd.d_gradient`): the sum over real examples of their
clipped gradients, plus public terms already multiplied by E[B]. The transformation adds one draw of
N(0, sigma^2 C^2) per coordinate and divides by the expected batch size E[B] = q N (a constant; the
realised Poisson batch size is private). sigma, C and E[B] are values the optimiser state holds (set
at init from the run's privacy plan), not constants baked into a jitted step.

The noise itself is drawn by jax-privacy's `noise_addition.gaussian_privatizer` (i.i.d. Gaussian).
Its key is passed per step (`noise_key`, from the run's secret, `secret.py`) instead of being
carried in the optimiser state: the state is checkpointed, and a key in a checkpoint would let
anyone holding it regenerate the noise. Keys: one draw per step, the same on every device.
"""
from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax_privacy import noise_addition

PyTree = Any


class NoiseState(NamedTuple):
    """What the noise transformation holds: f32 scalars."""

    noise_multiplier: jax.Array  # sigma
    l2_clip: jax.Array  # C
    expected_batch_size: jax.Array  # E[B] = q N


def gaussian_noise(noise_multiplier: float, l2_clip: float,
                   expected_batch_size: float) -> optax.GradientTransformationExtraArgs:
    """(sum-scale grads + N(0, sigma^2 C^2 I)) / E[B]; `update(..., noise_key=u32[2] key)`."""
    for name, value, low in (("noise_multiplier", noise_multiplier, 0.0), ("l2_clip", l2_clip, None),
                             ("expected_batch_size", expected_batch_size, None)):
        if not isinstance(value, numbers.Real):  # traced (inside jit): checked where it was set
            continue
        if not (value >= low if low is not None else value > 0):
            raise ValueError(f"{name} must be {'>= 0' if low is not None else '> 0'}, got {value}.")

    def init(params: PyTree) -> NoiseState:
        del params
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        return NoiseState(f32(noise_multiplier), f32(l2_clip), f32(expected_batch_size))

    def update(updates: PyTree, state: NoiseState, params: PyTree = None, *, noise_key: jax.Array,
               **extra: Any) -> tuple[PyTree, NoiseState]:
        del params, extra
        privatizer = noise_addition.gaussian_privatizer(stddev=state.noise_multiplier * state.l2_clip,
                                                        prng_key=noise_key)
        noised, _ = privatizer.update(updates, privatizer.init(updates))
        return jax.tree.map(lambda x: x / state.expected_batch_size.astype(x.dtype), noised), state

    return optax.GradientTransformationExtraArgs(init, update)


def private(tx: optax.GradientTransformation, dp: Any, expected_batch_size: float) -> optax.GradientTransformation:
    """`tx` with the noise chained in front when `dp` (a DPConfig) is enabled; `tx` unchanged otherwise."""
    if not dp.enabled:
        return tx
    return optax.chain(gaussian_noise(dp.noise_multiplier, dp.l2_clip, expected_batch_size), tx)
