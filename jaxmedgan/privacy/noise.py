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

Banded matrix-factorization noise (`privacy.mechanism='band_mf'`, Choquette-Choo et al. 2023):
step t adds sigma C (C^{-1} Z)_t instead of sigma C Z_t, where Z_t is step t's i.i.d. draw (the same
key as above) and C is a column-normalised lower-triangular b-banded strategy (jax-privacy's
`ColumnNormalizedBanded.default`, Fichtenberger et al. 2023's coefficients truncated to b bands).
The noise is anti-correlated across steps, so it partly cancels in the parameters' running sum;
`accounting.py` charges it as DP-SGD with ceil(T / b) steps at rate b q (cyclic Poisson
sampling). jax-privacy's `matrix_factorization_privatizer` draws it with a streaming state (the
last b solved noise vectors): that state is SECRET -- with it and two consecutive checkpoints one
could subtract the noise of the latest steps -- so it is kept out of checkpoints: `public_copy`
zeroes it for `orbax`, and the trainer keeps the real one in the private workdir
(`secret.save_noise_state`). b = 1 is DP-SGD's noise, bit for bit.
"""
from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax_privacy import noise_addition
from jax_privacy.matrix_factorization import banded

PyTree = Any


class NoiseState(NamedTuple):
    """What the noise transformation holds: f32 scalars, and the canary scores f32 [K]."""

    noise_multiplier: jax.Array  # sigma
    l2_clip: jax.Array  # C
    expected_batch_size: jax.Array  # E[B] = q N
    canary_scores: jax.Array  # f32 [K]: sum over steps of each canary's noised coordinate (canaries.py); [] if K = 0


class CorrelatedNoiseState(NamedTuple):
    """band_mf's state: the i.i.d. transformation's state plus the strategy's streaming state."""

    noise: NoiseState
    correlated: Any  # (i32 [] step index, per noised leaf f32 [b, *leaf.shape]): SECRET (module docstring)


def gaussian_noise(noise_multiplier: float, l2_clip: float, expected_batch_size: float, *,
                   num_canaries: int = 0, skip_noise: bool = False,
                   strategy: banded.ColumnNormalizedBanded | None = None) -> optax.GradientTransformationExtraArgs:
    """(sum-scale grads + N(0, sigma^2 C^2 I)) / E[B]; `update(..., noise_key=u32[2] key)`.

    num_canaries K > 0: `update(..., canary_sum=f32[K])` appends the canaries' clipped sum to the
    gradient as K more coordinates, noises the joint vector in one draw (`joint`) and accumulates
    those K noised coordinates in the state (the white-box canaries' scores; they never reach the
    optimiser). skip_noise: TEST ONLY (privacy.break_mechanism='no_noise'): add nothing while the
    state still says sigma. strategy: band_mf's banded strategy (`banded_strategy`): the noise is
    then correlated across steps and the state a `CorrelatedNoiseState`."""
    for name, value, low in (("noise_multiplier", noise_multiplier, 0.0), ("l2_clip", l2_clip, None),
                             ("expected_batch_size", expected_batch_size, None)):
        if not isinstance(value, numbers.Real):  # traced (inside jit): checked where it was set
            continue
        if not (value >= low if low is not None else value > 0):
            raise ValueError(f"{name} must be {'>= 0' if low is not None else '> 0'}, got {value}.")

    def init(params: PyTree) -> NoiseState | CorrelatedNoiseState:
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        # Without canaries a scalar placeholder: checkpoints cannot hold zero-size arrays.
        state = NoiseState(f32(noise_multiplier), f32(l2_clip), f32(expected_batch_size),
                           jnp.zeros((num_canaries,) if num_canaries else (), jnp.float32))
        if strategy is None:
            return state
        tree = joint(params, jnp.zeros((num_canaries,), jnp.float32) if num_canaries else None)
        return CorrelatedNoiseState(state, init_correlated(strategy, tree))

    def update(updates: PyTree, state: NoiseState | CorrelatedNoiseState, params: PyTree = None, *,
               noise_key: jax.Array, canary_sum: jax.Array | None = None,
               **extra: Any) -> tuple[PyTree, NoiseState | CorrelatedNoiseState]:
        del params, extra
        if num_canaries and canary_sum is None:
            raise ValueError(f"The noise transformation tracks {num_canaries} canaries: pass canary_sum.")
        base = state if strategy is None else state.noise
        tree = joint(updates, canary_sum if num_canaries else None)
        std = base.noise_multiplier * base.l2_clip
        if strategy is None:
            noised = tree if skip_noise else add_noise(tree, std, noise_key)
        else:  # the stream advances even when broken, so a broken run's state matches a correct one's
            noised, correlated = add_correlated_noise(tree, std, noise_key, strategy, state.correlated)
            noised = tree if skip_noise else noised
        if num_canaries:
            noised, canary_noised = noised
            base = base._replace(canary_scores=base.canary_scores + canary_noised.astype(jnp.float32))
        out = jax.tree.map(lambda x: x / base.expected_batch_size.astype(x.dtype), noised)
        return out, base if strategy is None else CorrelatedNoiseState(base, correlated)

    return optax.GradientTransformationExtraArgs(init, update)


def joint(updates: PyTree, canary_sum: jax.Array | None) -> PyTree:
    """The vector one noise draw covers: the gradient, plus the canaries' K coordinates when given."""
    return updates if canary_sum is None else (updates, canary_sum)


def add_noise(tree: PyTree, stddev: jax.Array, noise_key: jax.Array) -> PyTree:
    """tree + N(0, stddev^2) per coordinate, drawn by jax-privacy's gaussian_privatizer from `noise_key`
    (the one place noise is drawn; the canary audit replays it for public-seed runs)."""
    privatizer = noise_addition.gaussian_privatizer(stddev=stddev, prng_key=noise_key)
    return privatizer.update(tree, privatizer.init(tree))[0]


def _correlated_privatizer(strategy: banded.ColumnNormalizedBanded, stddev: Any,
                           noise_key: jax.Array) -> optax.GradientTransformation:
    return noise_addition.matrix_factorization_privatizer(strategy.inverse_as_streaming_matrix(), stddev=stddev,
                                                          prng_key=noise_key)


def init_correlated(strategy: banded.ColumnNormalizedBanded, tree: PyTree) -> Any:
    """The strategy's streaming state before step 0 for noise shaped like `tree` (zeros)."""
    return _correlated_privatizer(strategy, 0.0, jnp.zeros(2, jnp.uint32)).init(tree)[1]


def add_correlated_noise(tree: PyTree, stddev: jax.Array, noise_key: jax.Array,
                         strategy: banded.ColumnNormalizedBanded, correlated: Any) -> tuple[PyTree, Any]:
    """(tree + stddev (C^{-1} Z)_t, the advanced streaming state): step t of band_mf's noise, Z_t drawn
    from `noise_key` exactly as `add_noise` draws it (jax-privacy's matrix_factorization_privatizer)."""
    privatizer = _correlated_privatizer(strategy, stddev, noise_key)
    noised, (_, correlated) = privatizer.update(tree, (noise_key, correlated))
    return noised, correlated


def banded_strategy(steps: int, bands: int) -> banded.ColumnNormalizedBanded:
    """The b-banded, column-normalised strategy for `steps` noised steps (jax-privacy's default:
    Fichtenberger et al. 2023's square-root coefficients truncated to b bands)."""
    if int(bands) != bands or not 1 <= bands <= steps:
        raise ValueError(f"bands must be an integer in [1, steps={steps}], got {bands}.")
    return banded.ColumnNormalizedBanded.default(int(steps), int(bands))


def private(tx: optax.GradientTransformation, dp: Any, expected_batch_size: float,
            steps: int = 0) -> optax.GradientTransformation:
    """`tx` with the noise chained in front when `dp` (a DPConfig) is enabled; `tx` unchanged otherwise.
    steps: the number of noised steps (train.steps), which sizes band_mf's strategy."""
    if not dp.enabled:
        return tx
    strategy = None
    if dp.mechanism == "band_mf":
        if steps < 1:
            raise ValueError("band_mf noise needs the run's step count (train.steps) to size its strategy.")
        strategy = banded_strategy(steps, dp.bands)
    noise = gaussian_noise(dp.noise_multiplier, dp.l2_clip, expected_batch_size, num_canaries=dp.canaries,
                           skip_noise=dp.break_mechanism == "no_noise", strategy=strategy)
    return optax.chain(noise, tx)


def noise_state(opt_state: Any) -> NoiseState | None:
    """The `NoiseState` inside an optimiser state (either mechanism), None if there is none."""
    for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, (NoiseState, CorrelatedNoiseState))):
        if isinstance(s, CorrelatedNoiseState):
            return s.noise
        if isinstance(s, NoiseState):
            return s
    return None


def _is_correlated(x: Any) -> bool:
    return isinstance(x, CorrelatedNoiseState)


def secret_part(tree: PyTree) -> list | None:
    """The band_mf streaming states inside `tree` (e.g. a TrainState), in tree order; None if none."""
    parts = [x.correlated for x in jax.tree.leaves(tree, is_leaf=_is_correlated) if _is_correlated(x)]
    return parts or None


def with_secret_part(tree: PyTree, parts: list | None) -> PyTree:
    """`tree` with its band_mf streaming states replaced by `parts` (in `secret_part` order); None:
    zeros of the same shapes and shardings, the copy a checkpoint may hold (`public_copy`)."""
    fill = iter(parts) if parts is not None else None

    def swap(x: Any) -> Any:
        if not _is_correlated(x):
            return x
        zeros = lambda a: jnp.zeros(a.shape, a.dtype, device=getattr(a, "sharding", None))
        return x._replace(correlated=next(fill) if fill is not None else jax.tree.map(zeros, x.correlated))

    return jax.tree.map(swap, tree, is_leaf=_is_correlated)


def public_copy(tree: PyTree) -> PyTree:
    """`tree` safe to checkpoint: any band_mf streaming state zeroed (the real one is secret)."""
    return tree if secret_part(tree) is None else with_secret_part(tree, None)
