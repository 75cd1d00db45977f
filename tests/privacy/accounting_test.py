"""Accounting against independent references: the analytic Gaussian mechanism, the sampled-Gaussian
RDP formula for integer orders, and epsilons published by Abadi et al. 2016 and TF-Privacy."""
import math

import numpy as np
import pytest
from scipy import optimize, special, stats

from jaxmedgan.privacy import accounting

DELTA = 1e-5


def analytic_gaussian_epsilon(sigma, delta):
    """Exact epsilon of the Gaussian mechanism (sensitivity 1, std sigma) at delta.

    Balle & Wang 2018 (ICML), Thm. 8: delta(eps) = Phi(-eps*sigma + 1/(2 sigma))
    - e^eps Phi(-eps*sigma - 1/(2 sigma)), solved for eps with brentq.
    """
    def delta_of(eps):
        return (stats.norm.cdf(-eps * sigma + 1 / (2 * sigma))
                - math.exp(eps + stats.norm.logcdf(-eps * sigma - 1 / (2 * sigma))))
    return optimize.brentq(lambda e: delta_of(e) - delta, 0.0, 500.0, xtol=1e-12)


def sampled_gaussian_rdp(q, sigma, orders):
    """RDP of the Poisson-sampled Gaussian at integer orders a >= 2 (Mironov, Talwar & Zhang 2019,
    Sec. 3.3): (1/(a-1)) log sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2-k)/(2 sigma^2)), in log space."""
    out = []
    for a in orders:
        k = np.arange(a + 1)
        log_terms = (special.gammaln(a + 1) - special.gammaln(k + 1) - special.gammaln(a - k + 1)
                     + (a - k) * np.log1p(-q) + k * np.log(q) + (k * k - k) / (2 * sigma ** 2))
        out.append(special.logsumexp(log_terms) / (a - 1))
    return np.asarray(out)


def rdp_to_epsilon_classic(rdp, orders, delta):
    """Mironov 2017 Prop. 3: eps = min_a rdp(a) + log(1/delta)/(a-1) (what the papers used)."""
    return float(np.min(rdp + math.log(1 / delta) / (orders - 1)))


def rdp_to_epsilon_improved(rdp, orders, delta):
    """Canonne, Kamath & Steinke 2020 Prop. 12 (used by dp_accounting): a tighter conversion."""
    return float(np.min(rdp + np.log1p(-1 / orders) - (math.log(delta) + np.log(orders)) / (orders - 1)))


INT_ORDERS = np.arange(2, 64)


@pytest.mark.parametrize("sigma,steps", [(1.0, 1), (2.0, 1), (5.0, 10), (20.0, 100)])
def test_pld_matches_analytic_gaussian_without_subsampling(sigma, steps):
    """q = 1: T Gaussian steps of std sigma = one Gaussian of std sigma / sqrt(T) (exact)."""
    exact = analytic_gaussian_epsilon(sigma / math.sqrt(steps), DELTA)  # 4.377, 1.993, 2.594, 1.993
    pld = accounting.epsilon(1.0, sigma, steps, DELTA, accountant="pld")
    assert exact - 1e-6 <= pld <= exact * 1.001 + 1e-4  # PLD is a (tight) upper bound
    rdp = accounting.epsilon(1.0, sigma, steps, DELTA, accountant="rdp")
    assert exact < rdp < exact * 1.15  # RDP is a looser upper bound (e.g. 4.73 vs 4.38 at sigma 1)


def test_abadi_2016_moments_accountant_value():
    """Abadi et al. 2016 (CCS), Sec. 3.1: q=0.01, sigma=4, delta=1e-5, T=10000 -> eps ~ 1.26."""
    q, sigma, steps = 0.01, 4.0, 10_000
    rdp = steps * sampled_gaussian_rdp(q, sigma, INT_ORDERS)
    assert round(rdp_to_epsilon_classic(rdp, INT_ORDERS, DELTA), 2) == 1.26  # reference reproduces paper
    ours = accounting.epsilon(q, sigma, steps, DELTA, accountant="rdp")
    # dp_accounting: same RDP curve (plus fractional orders), tighter conversion -> 1.035.
    improved = rdp_to_epsilon_improved(rdp, INT_ORDERS, DELTA)
    assert improved - 0.01 <= ours <= improved + 1e-9
    assert accounting.epsilon(q, sigma, steps, DELTA, accountant="pld") < ours  # PLD: 0.947


def test_tf_privacy_mnist_tutorial_value():
    """TF-Privacy tutorials/README.md: `compute_dp_sgd_privacy.py --N=60000 --batch_size=256
    --noise_multiplier=1.1 --epochs=60 --delta=1e-5` -> "eps = 3.01" (RDP, classic conversion,
    steps = ceil(60 * 60000 / 256) = 14063)."""
    q, sigma, steps = 256 / 60000, 1.1, math.ceil(60 * 60000 / 256)
    rdp = steps * sampled_gaussian_rdp(q, sigma, INT_ORDERS)
    assert abs(rdp_to_epsilon_classic(rdp, INT_ORDERS, DELTA) - 3.01) < 0.005  # 3.009
    ours = accounting.epsilon(q, sigma, steps, DELTA, accountant="rdp")  # 2.597
    improved = rdp_to_epsilon_improved(rdp, INT_ORDERS, DELTA)  # 2.597
    assert improved - 0.01 <= ours <= improved + 1e-9
    pld = accounting.epsilon(q, sigma, steps, DELTA, accountant="pld")  # 2.38
    assert 0.85 * ours < pld < ours


@pytest.mark.parametrize("target,q,steps,acc", [(3.0, 256 / 60000, 14063, "rdp"), (0.5, 1e-3, 50_000, "rdp"),
                                                (8.0, 1.0, 10, "rdp"), (1.0, 0.02, 200, "pld")])
def test_calibrate_round_trips_within_one_percent(target, q, steps, acc):
    sigma = accounting.calibrate_noise(target, DELTA, q, steps, accountant=acc)
    eps = accounting.epsilon(q, sigma, steps, DELTA, accountant=acc)
    assert 0.99 * target <= eps <= target  # never over budget
    assert accounting.epsilon(q, sigma * 0.99, steps, DELTA, accountant=acc) > target  # and not wasteful


def test_calibrated_sigma_for_q1_matches_analytic_gaussian():
    """Inverse of test (a): with q=1, one step, PLD's sigma for eps=2 solves Balle-Wang exactly."""
    sigma = accounting.calibrate_noise(2.0, DELTA, 1.0, 1, accountant="pld")
    np.testing.assert_allclose(analytic_gaussian_epsilon(sigma, DELTA), 2.0, rtol=1e-3)


def test_monotone_in_steps_sigma_and_rate():
    by_steps = [accounting.epsilon(0.01, 1.0, t, DELTA) for t in (10, 100, 1000, 10_000)]
    by_sigma = [accounting.epsilon(0.01, s, 1000, DELTA) for s in (0.7, 1.0, 1.5, 3.0)]
    by_rate = [accounting.epsilon(q, 1.0, 1000, DELTA) for q in (0.001, 0.01, 0.1)]
    assert np.all(np.diff(by_steps) > 0) and np.all(np.diff(by_sigma) < 0) and np.all(np.diff(by_rate) > 0)
    assert accounting.epsilon(0.01, 1.0, 1000, 1e-7) > accounting.epsilon(0.01, 1.0, 1000, 1e-5)


def test_shuffle_is_accounted_as_poisson_with_q_b_over_n():
    poisson = accounting.epsilon(0.01, 1.2, 500, DELTA)
    assert accounting.epsilon(0.01, 1.2, 500, DELTA, sampling="shuffle") == poisson
    assert "approximation" in accounting.SHUFFLE_NOTE


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"sampling_rate must be in \(0, 1\], got 0"):
        accounting.epsilon(0, 1.0, 10, DELTA)
    with pytest.raises(ValueError, match="noise_multiplier must be > 0, got 0"):
        accounting.epsilon(0.1, 0.0, 10, DELTA)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        accounting.epsilon(0.1, 1.0, 0, DELTA)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\), got 1"):
        accounting.epsilon(0.1, 1.0, 10, 1)
    with pytest.raises(ValueError, match="Unknown accountant 'moments'; expected one of"):
        accounting.epsilon(0.1, 1.0, 10, DELTA, accountant="moments")
    with pytest.raises(ValueError, match="Unknown sampling 'uniform'"):
        accounting.epsilon(0.1, 1.0, 10, DELTA, sampling="uniform")
    with pytest.raises(ValueError, match="target_epsilon must be a finite number > 0, got -1"):
        accounting.calibrate_noise(-1, DELTA, 0.1, 10)
    with pytest.raises(ValueError, match="is met even at noise multiplier"):
        accounting.calibrate_noise(1e5, DELTA, 0.01, 10)
