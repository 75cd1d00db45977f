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
    """What the noise transformation holds: f32 scalars, and the canary scores f32 [K]."""

    noise_multiplier: jax.Array  # sigma
    l2_clip: jax.Array  # C
    expected_batch_size: jax.Array  # E[B] = q N
    canary_scores: jax.Array  # f32 [K]: sum over steps of each canary's noised coordinate (canaries.py); [] if K = 0


def gaussian_noise(noise_multiplier: float, l2_clip: float, expected_batch_size: float, *,
                   num_canaries: int = 0, skip_noise: bool = False) -> optax.GradientTransformationExtraArgs:
    """(sum-scale grads + N(0, sigma^2 C^2 I)) / E[B]; `update(..., noise_key=u32[2] key)`.

    num_canaries K > 0: `update(..., canary_sum=f32[K])` appends the canaries' clipped sum to the
    gradient as K more coordinates, noises the joint vector in one draw (`joint`) and accumulates
    those K noised coordinates in the state (the white-box canaries' scores; they never reach the
    optimiser). skip_noise: TEST ONLY (privacy.break_mechanism='no_noise'): add nothing while the
    state still says sigma."""
    for name, value, low in (("noise_multiplier", noise_multiplier, 0.0), ("l2_clip", l2_clip, None),
                             ("expected_batch_size", expected_batch_size, None)):
        if not isinstance(value, numbers.Real):  # traced (inside jit): checked where it was set
            continue
        if not (value >= low if low is not None else value > 0):
            raise ValueError(f"{name} must be {'>= 0' if low is not None else '> 0'}, got {value}.")

    def init(params: PyTree) -> NoiseState:
        del params
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        # Without canaries a scalar placeholder: checkpoints cannot hold zero-size arrays.
        return NoiseState(f32(noise_multiplier), f32(l2_clip), f32(expected_batch_size),
                          jnp.zeros((num_canaries,) if num_canaries else (), jnp.float32))

    def update(updates: PyTree, state: NoiseState, params: PyTree = None, *, noise_key: jax.Array,
               canary_sum: jax.Array | None = None, **extra: Any) -> tuple[PyTree, NoiseState]:
        del params, extra
        if num_canaries and canary_sum is None:
            raise ValueError(f"The noise transformation tracks {num_canaries} canaries: pass canary_sum.")
        tree = joint(updates, canary_sum if num_canaries else None)
        noised = tree if skip_noise else add_noise(tree, state.noise_multiplier * state.l2_clip, noise_key)
        if num_canaries:
            noised, canary_noised = noised
            state = state._replace(canary_scores=state.canary_scores + canary_noised.astype(jnp.float32))
        return jax.tree.map(lambda x: x / state.expected_batch_size.astype(x.dtype), noised), state

    return optax.GradientTransformationExtraArgs(init, update)


def joint(updates: PyTree, canary_sum: jax.Array | None) -> PyTree:
    """The vector one noise draw covers: the gradient, plus the canaries' K coordinates when given."""
    return updates if canary_sum is None else (updates, canary_sum)


def add_noise(tree: PyTree, stddev: jax.Array, noise_key: jax.Array) -> PyTree:
    """tree + N(0, stddev^2) per coordinate, drawn by jax-privacy's gaussian_privatizer from `noise_key`
    (the one place noise is drawn; the canary audit replays it for public-seed runs)."""
    privatizer = noise_addition.gaussian_privatizer(stddev=stddev, prng_key=noise_key)
    return privatizer.update(tree, privatizer.init(tree))[0]


def private(tx: optax.GradientTransformation, dp: Any, expected_batch_size: float) -> optax.GradientTransformation:
    """`tx` with the noise chained in front when `dp` (a DPConfig) is enabled; `tx` unchanged otherwise."""
    if not dp.enabled:
        return tx
    noise = gaussian_noise(dp.noise_multiplier, dp.l2_clip, expected_batch_size, num_canaries=dp.canaries,
                           skip_noise=dp.break_mechanism == "no_noise")
    return optax.chain(noise, tx)
