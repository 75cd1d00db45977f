"""Host-side (numpy) batch sampling for DP-SGD: Poisson subsampling padded to a fixed shape.

Poisson sampling -- every example joins a step's batch independently with probability q -- is what
the privacy accountant (`accounting.py`, sampling='poisson') analyses; the draw itself is
jax-privacy's (`jax_privacy.batch_selection.CyclicPoissonSampling`, cycle length 1), driven by the
numpy Generator the caller passes (the run's secret sampling stream, `secret.py`). Its batch size is random
(Binomial(N, q)), but jit wants static shapes, so a batch is padded to `max_batch_size` with a mask
(padding has mask 0 and contributes exactly zero to the clipped gradient sum).

Overflow policy: if a draw holds more than `max_batch_size` examples, a uniformly random
`max_batch_size` of them are kept and `num_dropped` reports how many were not; the caller should
count these. Choose `max_batch_size = max_batch_size_for(N, q, overflow_prob)` so that this
happens with probability <= overflow_prob per step. Truncation makes the mechanism differ from
the analysed one only on that event, so over T steps the guarantee holds with
delta' = delta + T * overflow_prob * (1 + e^epsilon) (a coupling argument). `privacy.plan` picks
the padded size so that delta' <= 1.01 delta by default and reports delta' wherever it reports
epsilon (max_batch_size grows only like sqrt(log(1/p))).

Cyclic Poisson sampling (banded MF noise, b bands): a secret partition puts every example in one
of b groups, independently and uniformly (`cyclic_groups`; jax-privacy's INDEPENDENT partition,
the one add-or-remove-one adjacency is analysed under), and step t draws only from group t mod b,
at rate b q (`poisson_batch(..., population=group)`). Each example is then in a step's batch with
probability q, independently of the others, so a step's batch size is Binomial(N, q) as before and
the padding and delta' above carry over unchanged.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy as np
from jax_privacy import batch_selection


class PoissonBatch(NamedTuple):
    """A fixed-shape Poisson batch: real examples first, then padding."""

    indices: np.ndarray  # int64 [max_batch_size]: dataset indices; padding points at index 0
    mask: np.ndarray  # float32 [max_batch_size]: 1 for real examples, 0 for padding
    num_dropped: int  # examples drawn but dropped because the draw exceeded max_batch_size


def _check_rate(sampling_rate: float) -> None:
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}.")


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")


def poisson_batch(rng: np.random.Generator, num_examples: int, sampling_rate: float,
                  max_batch_size: int, *, population: np.ndarray | None = None) -> PoissonBatch:
    """Includes each of `num_examples` independently with prob q; pads/truncates to max_batch_size.
    `population`: int [P] indices eligible this step (cyclic sampling: the step's group); the
    draw is then Poisson(q) over those only. None: all of range(num_examples)."""
    _check_count("num_examples", num_examples)
    _check_rate(sampling_rate)
    _check_count("max_batch_size", max_batch_size)
    # jax-privacy's Poisson sampler (cycle length 1, untruncated: we truncate and count drops below).
    strategy = batch_selection.CyclicPoissonSampling(sampling_prob=sampling_rate, iterations=1)
    if population is None:
        chosen = np.sort(next(iter(strategy.batch_iterator(num_examples, rng)))).astype(np.int64)
    else:
        population = np.asarray(population, np.int64)
        if population.size == 0:  # an empty group (tiny datasets): an all-padding step
            chosen = np.zeros(0, np.int64)
        else:
            chosen = np.sort(population[next(iter(strategy.batch_iterator(len(population), rng)))])
    dropped = max(len(chosen) - max_batch_size, 0)
    if dropped:  # overflow: keep a uniformly random subset (see module docstring)
        chosen = np.sort(rng.choice(chosen, size=max_batch_size, replace=False))
    indices = np.zeros(max_batch_size, np.int64)
    indices[: len(chosen)] = chosen
    mask = np.zeros(max_batch_size, np.float32)
    mask[: len(chosen)] = 1.0
    return PoissonBatch(indices, mask, dropped)


def cyclic_groups(rng: np.random.Generator, num_examples: int, cycle_length: int) -> np.ndarray:
    """int64 [num_examples]: each example's group in 0..cycle_length-1, independent and uniform (the
    secret partition of cyclic Poisson sampling; step t samples group t mod cycle_length)."""
    _check_count("num_examples", num_examples)
    _check_count("cycle_length", cycle_length)
    return rng.integers(0, cycle_length, size=num_examples, dtype=np.int64)


def _binomial_log_sf(num_examples: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    """(k, log P[Binomial(N, q) > k]) for k from floor(mean) to a point where the tail is < 1e-300."""
    n = num_examples
    mean, sd = n * q, math.sqrt(n * q * (1 - q))
    lo = int(math.floor(mean))
    hi = min(n, int(math.ceil(mean + 40 * sd + 80)))  # tail beyond is below any useful overflow_prob
    ks = np.arange(lo, hi + 1)
    log_q, log_1mq = math.log(q), math.log1p(-q)
    log_pmf = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                        + k * log_q + (n - k) * log_1mq for k in ks])
    # log P[X >= k] by a right-to-left log-sum-exp; P[X > k] = P[X >= k + 1].
    log_ge = np.logaddexp.accumulate(log_pmf[::-1])[::-1]
    log_sf = np.append(log_ge[1:], -np.inf)
    return ks, log_sf


def max_batch_size_for(num_examples: int, sampling_rate: float, overflow_prob: float = 1e-6,
                       multiple_of: int = 1) -> int:
    """Smallest size m (a multiple of `multiple_of`, e.g. the device count) with
    P[Binomial(num_examples, q) > m] <= overflow_prob: the Poisson batch rarely overflows."""
    _check_count("num_examples", num_examples)
    _check_rate(sampling_rate)
    _check_count("multiple_of", multiple_of)
    if not 0 <= overflow_prob < 0.5:
        raise ValueError(f"overflow_prob must be in [0, 0.5) (0: pad to the whole dataset), got {overflow_prob}.")
    if sampling_rate == 1 or overflow_prob == 0:  # only the whole dataset never overflows
        m = num_examples
    else:
        ks, log_sf = _binomial_log_sf(num_examples, sampling_rate)
        m = int(ks[np.argmax(log_sf <= math.log(overflow_prob))])
    m = max(m, 1)
    return -(-m // multiple_of) * multiple_of


def padding_buckets(num_examples: int, sampling_rate: float, max_batch_size: int, count: int,
                    multiple_of: int = 1) -> tuple[int, ...]:
    """`count` ascending padded sizes ending at max_batch_size: the Binomial(N, q) batch size's
    1 - 10^-j quantiles (j = 1, 2, ...; each a multiple of `multiple_of`, duplicates dropped), so
    a step can run at the smallest size that holds its draw instead of always at max_batch_size."""
    _check_count("count", count)
    sizes = [max_batch_size_for(num_examples, sampling_rate, 10.0 ** -j, multiple_of=multiple_of)
             for j in range(1, count)]
    return tuple(sorted({min(s, max_batch_size) for s in sizes} | {max_batch_size}))


def overflow_probability(num_examples: int, sampling_rate: float, max_batch_size: int) -> float:
    """P[Binomial(num_examples, q) > max_batch_size]: the per-step chance that a padded Poisson batch
    truncates (exact binomial tail; 0 when max_batch_size >= num_examples)."""
    _check_count("num_examples", num_examples)
    _check_rate(sampling_rate)
    _check_count("max_batch_size", max_batch_size)
    if max_batch_size >= num_examples or sampling_rate == 1:
        return 0.0
    ks, log_sf = _binomial_log_sf(num_examples, sampling_rate)
    if max_batch_size < ks[0]:  # below the mean: sum the pmf directly
        k = np.arange(max_batch_size + 1, num_examples + 1)
        log_pmf = np.array([math.lgamma(num_examples + 1) - math.lgamma(j + 1) - math.lgamma(num_examples - j + 1)
                            + j * math.log(sampling_rate) + (num_examples - j) * math.log1p(-sampling_rate)
                            for j in k])
        return float(min(1.0, np.exp(np.logaddexp.reduce(log_pmf))))
    if max_batch_size > ks[-1]:
        return 0.0
    return float(np.exp(log_sf[max_batch_size - ks[0]]))


def shuffled_batches(rng: np.random.Generator, num_examples: int, batch_size: int) -> Iterator[np.ndarray]:
    """One epoch of fixed-size batches: int64 [batch_size] index arrays from one permutation.

    The last num_examples % batch_size examples of the permutation are dropped (fixed shapes);
    they differ every epoch. Privacy accounting of shuffling: see `accounting.epsilon`.
    """
    _check_count("num_examples", num_examples)
    _check_count("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds num_examples {num_examples}.")
    order = rng.permutation(num_examples)
    for start in range(0, num_examples - batch_size + 1, batch_size):
        yield order[start: start + batch_size]
