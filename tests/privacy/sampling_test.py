"""Poisson and shuffled batch sampling: inclusion rates, fixed shapes, masks, overflow bound (scipy)."""
import numpy as np
import pytest
from scipy import stats

from jaxmedgan.privacy import sampling


def test_inclusion_frequency_is_q_for_every_example_and_independent():
    n, q, draws = 40, 0.15, 4000
    rng = np.random.default_rng(0)
    counts = np.zeros(n)
    pair = 0  # co-inclusion of examples 0 and 1: q^2 if independent
    sizes = []
    for _ in range(draws):
        b = sampling.poisson_batch(rng, n, q, max_batch_size=n)
        real = b.indices[b.mask > 0]
        counts[real] += 1
        pair += {0, 1} <= set(real.tolist())
        sizes.append(len(real))
    sd = np.sqrt(q * (1 - q) / draws)  # binomial sd of one example's inclusion frequency
    assert np.all(np.abs(counts / draws - q) < 5 * sd), counts / draws
    assert abs(pair / draws - q * q) < 5 * np.sqrt(q * q * (1 - q * q) / draws)
    # Batch sizes follow Binomial(n, q): compare mean and variance.
    assert abs(np.mean(sizes) - n * q) < 5 * np.sqrt(n * q * (1 - q) / draws)
    np.testing.assert_allclose(np.var(sizes), n * q * (1 - q), rtol=0.1)


def test_fixed_shapes_and_mask_marks_real_examples_first():
    rng = np.random.default_rng(1)
    for _ in range(50):
        b = sampling.poisson_batch(rng, 100, 0.05, max_batch_size=16)
        assert b.indices.shape == (16,) and b.mask.shape == (16,)
        assert b.indices.dtype == np.int64 and b.mask.dtype == np.float32
        k = int(b.mask.sum())
        assert set(np.unique(b.mask)) <= {0.0, 1.0}
        np.testing.assert_array_equal(b.mask, np.r_[np.ones(k), np.zeros(16 - k)])
        real = b.indices[:k]
        assert len(set(real.tolist())) == k and real.min(initial=0) >= 0 and real.max(initial=0) < 100
        assert not b.indices[k:].any()  # padding points at index 0 (valid for gathers)
        assert b.num_dropped == 0


def test_overflow_truncates_to_a_random_subset_and_reports_it():
    rng = np.random.default_rng(2)
    kept = np.zeros(50)
    for _ in range(300):
        b = sampling.poisson_batch(rng, 50, 0.5, max_batch_size=10)  # ~25 drawn, 10 kept
        assert b.mask.sum() == 10 and b.num_dropped > 0
        assert len(set(b.indices.tolist())) == 10
        kept[b.indices] += 1
    # Kept examples are uniform over the dataset: each kept ~ 300 * 10 / 50 = 60 times.
    assert stats.chisquare(kept).pvalue > 1e-3


@pytest.mark.parametrize("n,q,p", [(60000, 256 / 60000, 1e-6), (1000, 0.01, 1e-9), (500, 0.3, 1e-3),
                                   (200, 0.002, 1e-6), (10**6, 1e-3, 1e-12)])
def test_max_batch_size_is_the_binomial_quantile(n, q, p):
    m = sampling.max_batch_size_for(n, q, overflow_prob=p)
    # Reference: scipy's binomial survival function P[X > m].
    assert stats.binom.sf(m, n, q) <= p < stats.binom.sf(m - 1, n, q) or m == 1


def test_max_batch_size_rounds_up_to_device_multiple_and_handles_q_one():
    m = sampling.max_batch_size_for(60000, 256 / 60000, overflow_prob=1e-6, multiple_of=8)
    assert m % 8 == 0 and stats.binom.sf(m, 60000, 256 / 60000) <= 1e-6
    assert m - 8 < sampling.max_batch_size_for(60000, 256 / 60000, overflow_prob=1e-6)
    assert sampling.max_batch_size_for(37, 1.0) == 37


def test_empirical_overflow_rate_matches_bound():
    n, q, p = 200, 0.1, 0.05  # loose p so 2000 draws can see it
    m = sampling.max_batch_size_for(n, q, overflow_prob=p)
    rng = np.random.default_rng(3)
    rate = np.mean([sampling.poisson_batch(rng, n, q, m).num_dropped > 0 for _ in range(2000)])
    exact = stats.binom.sf(m, n, q)
    assert rate < exact + 5 * np.sqrt(exact / 2000) and exact <= p


def test_shuffled_batches_cover_an_epoch_without_repeats():
    rng = np.random.default_rng(4)
    batches = list(sampling.shuffled_batches(rng, 23, 5))
    assert len(batches) == 4 and all(b.shape == (5,) for b in batches)
    seen = np.concatenate(batches)
    assert len(set(seen.tolist())) == 20 and seen.max() < 23
    again = np.concatenate(list(sampling.shuffled_batches(rng, 23, 5)))
    assert not np.array_equal(seen, again)  # a fresh permutation each epoch


def test_errors_name_the_bad_value():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"sampling_rate must be in \(0, 1\], got 1.5"):
        sampling.poisson_batch(rng, 10, 1.5, 4)
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        sampling.poisson_batch(rng, 10, 0.5, 0)
    with pytest.raises(ValueError, match=r"overflow_prob must be in \[0, 0.5\) \(0: pad to the whole dataset\), got 0.7"):
        sampling.max_batch_size_for(10, 0.5, overflow_prob=0.7)
    with pytest.raises(ValueError, match="batch_size 11 exceeds num_examples 10"):
        next(sampling.shuffled_batches(rng, 10, 11))


def test_padding_buckets_are_binomial_quantiles_ending_at_the_padded_size():
    n, q = 10000, 64 / 10000
    m = sampling.max_batch_size_for(n, q, 1e-12, multiple_of=8)
    buckets = sampling.padding_buckets(n, q, m, 3, multiple_of=8)
    assert buckets[-1] == m and list(buckets) == sorted(set(buckets)) and len(buckets) == 3
    for j, b in enumerate(buckets[:-1], start=1):  # smallest multiple of 8 with P[X > b] <= 10^-j
        assert b % 8 == 0 and stats.binom.sf(b, n, q) <= 10.0**-j < stats.binom.sf(b - 8, n, q)
    assert sampling.padding_buckets(n, q, m, 1) == (m,)
