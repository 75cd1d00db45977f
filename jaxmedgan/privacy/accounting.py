"""Privacy accounting for DP-SGD with dp_accounting (host-side; never inside jit).

One DP-SGD step with sampling rate q and noise multiplier sigma is the sampled Gaussian mechanism
`PoissonSampledDpEvent(q, GaussianDpEvent(sigma))` (the Gaussian's sensitivity is C and its std
sigma*C, so only their ratio sigma matters); a run is that event self-composed `steps` times.
Neighbouring datasets differ by adding or removing one example (dp_accounting's default
ADD_OR_REMOVE_ONE), which is the relation Poisson sampling + division by the expected batch size
in `dp_sgd.py` is analysed under.

Accountants: 'rdp' (Renyi DP; fast, a slightly loose upper bound, conversion to (eps, delta) by
Canonne-Kamath-Steinke 2020 Prop. 12) or 'pld' (privacy-loss distributions; tighter, slower for
many steps). Both are upper bounds on the true epsilon.

Banded matrix-factorization noise (`privacy.mechanism='band_mf'`, b bands) with cyclic Poisson
sampling over b groups (each example eligible every b-th step, at rate b q; `sampling.py`) is
accounted by the reduction of Choquette-Choo et al. 2023 ("(Amplified) Banded Matrix Factorization",
Thm. 4; jax-privacy's `DpsgdTrainingAccountant` with `cycle_length=b`): for a column-normalised
b-banded strategy it is DP-SGD with ceil(T / b) steps at sampling rate b q and the same sigma.
`cycle_length=1` is DP-SGD itself.

sampling='shuffle' (fixed-size batches from a per-epoch permutation) is accounted as Poisson
sampling with q = batch_size / N. This is the common approximation (TF-Privacy's
compute_dp_sgd_privacy, most papers) but it is NOT a proven guarantee for shuffling: Chua et al.
2024 ("How Private are DP-SGD Implementations?", ICML) show shuffled batches can leak
noticeably more at small sigma. Report it as such; use Poisson sampling (`sampling.poisson_batch`)
when the guarantee must be formal.
"""
from __future__ import annotations

import contextlib
import logging
import math

import dp_accounting
from dp_accounting import pld, rdp

ACCOUNTANTS = ("rdp", "pld")
SAMPLINGS = ("poisson", "shuffle")
SHUFFLE_NOTE = ("shuffle is accounted as Poisson sampling with q = batch_size / N: the common "
                "approximation, not a formal guarantee for shuffling (Chua et al. 2024)")


def _check(sampling_rate: float, steps: int, delta: float, accountant: str, sampling: str,
           cycle_length: int = 1) -> None:
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}.")
    if int(cycle_length) != cycle_length or cycle_length < 1:
        raise ValueError(f"cycle_length (bands) must be an integer >= 1, got {cycle_length}.")
    if sampling_rate * cycle_length > 1:
        raise ValueError(f"sampling_rate {sampling_rate:g} x {cycle_length} bands > 1: cyclic Poisson sampling "
                         "draws at rate bands x q from each group; use fewer bands or a smaller batch.")
    if cycle_length > 1 and sampling != "poisson":
        raise ValueError(f"band_mf (cycle_length {cycle_length}) needs sampling='poisson' (cyclic Poisson).")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}.")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}.")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"Unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}.")
    if sampling not in SAMPLINGS:
        raise ValueError(f"Unknown sampling {sampling!r}; expected one of {SAMPLINGS}.")


def dp_sgd_event(sampling_rate: float, noise_multiplier: float, steps: int,
                 cycle_length: int = 1) -> dp_accounting.DpEvent:
    """The DpEvent of `steps` DP-SGD steps: Poisson(q)-sampled Gaussian(sigma), self-composed; with
    cycle_length b > 1 (band_mf) the reduction's ceil(steps / b) steps at rate b q."""
    rate = sampling_rate * cycle_length
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    step = gaussian if rate >= 1 else dp_accounting.PoissonSampledDpEvent(rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(step, -(-int(steps) // int(cycle_length)))


def make_accountant(accountant: str = "rdp") -> dp_accounting.PrivacyAccountant:
    """A fresh dp_accounting accountant: 'rdp' (default orders) or 'pld' (1e-4 discretisation)."""
    if accountant == "rdp":
        return rdp.RdpAccountant()
    if accountant == "pld":
        return pld.PLDAccountant()
    raise ValueError(f"Unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}.")


def epsilon(sampling_rate: float, noise_multiplier: float, steps: int, delta: float,
            accountant: str = "rdp", sampling: str = "poisson", cycle_length: int = 1) -> float:
    """epsilon (float, an upper bound) of `steps` DP-SGD steps at rate q, noise sigma, given delta.

    sampling='shuffle' uses the Poisson event with q = B/N (see module docstring); cycle_length
    b > 1: banded MF noise with b bands and cyclic Poisson sampling (q is still E[B] / N).
    """
    _check(sampling_rate, steps, delta, accountant, sampling, cycle_length)
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}.")
    acc = make_accountant(accountant)
    with _quiet_order_warnings():
        acc.compose(dp_sgd_event(sampling_rate, noise_multiplier, steps, cycle_length))
        return float(acc.get_epsilon(delta))


class _DropOrderWarnings(logging.Filter):
    """dp_accounting warns for every fractional RDP order whose series does not converge; it then
    excludes that order, so the bound stays valid (only possibly looser). Keep the log readable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


@contextlib.contextmanager
def _quiet_order_warnings():
    logger, filt = logging.getLogger("absl"), _DropOrderWarnings()
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


# Below this sigma a PLD grid gets huge (memory ~ 1/sigma^2) and the noise is negligible anyway.
MIN_NOISE_MULTIPLIER = 0.05


def _bracket(eps_at, target_epsilon: float, guess: float) -> tuple[float, float]:
    """(lo, hi) with eps_at(lo) > target >= eps_at(hi), by doubling / halving from `guess`."""
    hi = guess
    while eps_at(hi) > target_epsilon:
        hi *= 2
        if hi > 2.0**20:
            raise ValueError(f"No noise multiplier up to {hi:g} reaches target_epsilon={target_epsilon}.")
    lo = hi / 2
    while eps_at(lo) <= target_epsilon:
        hi, lo = lo, lo / 2
        if lo < MIN_NOISE_MULTIPLIER:
            raise ValueError(f"target_epsilon={target_epsilon} is met even at noise multiplier "
                             f"{hi:g}; below {MIN_NOISE_MULTIPLIER} DP noise is negligible -- "
                             "is the target epsilon meant to be this large?")
    return lo, hi


def calibrate_noise(target_epsilon: float, delta: float, sampling_rate: float, steps: int,
                    accountant: str = "rdp", sampling: str = "poisson", tol: float = 1e-4,
                    cycle_length: int = 1) -> float:
    """Smallest noise multiplier sigma (to within `tol`) with epsilon(q, sigma, steps, delta) <= target.

    dp_accounting.calibrate_dp_mechanism (Brent's method) inside a bracket found by doubling; the
    returned sigma is on the private side of the optimum, so its epsilon never exceeds the target.
    For 'pld' the (cheap, looser) RDP answer is the starting guess.
    """
    _check(sampling_rate, steps, delta, accountant, sampling, cycle_length)
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon}.")
    guess = 1.0 if accountant == "rdp" else calibrate_noise(target_epsilon, delta, sampling_rate, steps,
                                                           "rdp", sampling, tol, cycle_length)
    eps_at = lambda sigma: epsilon(sampling_rate, sigma, steps, delta, accountant, sampling, cycle_length)
    lo, hi = _bracket(eps_at, target_epsilon, guess)
    with _quiet_order_warnings():
        return float(dp_accounting.calibrate_dp_mechanism(
            lambda: make_accountant(accountant),
            lambda sigma: dp_sgd_event(sampling_rate, sigma, steps, cycle_length),
            target_epsilon, delta, bracket_interval=dp_accounting.ExplicitBracketInterval(lo, hi), tol=tol))
