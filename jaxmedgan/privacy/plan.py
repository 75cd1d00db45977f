"""A DP training run's privacy plan: sampling rate, delta, noise, padded batch and step budget.

Fixed once at start (host-side) and written back into `config.privacy` (`sampling_rate`,
`delta`, `noise_multiplier`) so `config.json` and every checkpoint record the parameters the
accountant needs: epsilon after any step follows from the config alone (`run_epsilon`).
Only the discriminator reads real data, so only its updates are privatised and the accountant
counts D steps (one per training step); G is private by post-processing.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

from jaxmedgan.privacy import accounting, checks, sampling

log = logging.getLogger(__name__)

# Fields that fix the privacy guarantee of a run; changing one on resume is refused.
LOCKED_FIELDS = ("privacy.noise_multiplier", "privacy.l2_clip", "privacy.sampling_rate", "privacy.delta",
                 "privacy.target_epsilon", "privacy.epsilon_budget", "privacy.accountant", "train.batch_size", "train.steps")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the trainer needs to run DP-SGD within budget."""

    sampling_rate: float  # q: each example joins a step's batch with this probability
    delta: float
    noise_multiplier: float  # sigma
    max_batch_size: int  # padded Poisson batch (a multiple of the data-parallel device count)
    max_steps: int  # steps allowed within the epsilon budget (= train.steps without a budget)
    epsilon_at_end: float  # epsilon after max_steps


def prepare(config: Any, d_variables: Mapping[str, Any], num_examples: int, batch_multiple: int) -> Plan:
    """Validates the DP config, calibrates sigma for `privacy.target_epsilon` if set, fills in
    `config.privacy.{sampling_rate, delta, noise_multiplier}` and returns the run's plan."""
    p = config.privacy
    checks.check_dp_compatible(config, d_variables)
    if p.sampling != "poisson":
        raise ValueError(f"config.privacy.sampling={p.sampling!r}: the GAN trainers implement Poisson "
                         "sampling (the sampling the accountant analyses); use 'poisson'.")
    q = config.train.batch_size / num_examples
    if not 0 < q <= 1:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} (the expected Poisson batch) "
                         f"must be in (0, {num_examples}] for a dataset of {num_examples} examples.")
    delta = p.delta or 1.0 / (10 * num_examples)
    if delta >= 1.0 / num_examples:
        log.warning("delta=%.3g is not below 1/N=%.3g: the guarantee is weak.", delta, 1.0 / num_examples)
    steps = config.train.steps
    sigma = p.noise_multiplier
    if p.target_epsilon > 0:
        sigma = accounting.calibrate_noise(p.target_epsilon, delta, q, steps, accountant=p.accountant)
    budget = p.epsilon_budget or p.target_epsilon  # hard stop; 0 = none
    max_steps = steps if budget <= 0 else _steps_within(budget, q, sigma, delta, steps, p.accountant)
    max_batch = sampling.max_batch_size_for(num_examples, q, p.overflow_prob, multiple_of=batch_multiple)
    eps = accounting.epsilon(q, sigma, max_steps, delta, accountant=p.accountant)
    p.sampling_rate, p.delta, p.noise_multiplier = q, delta, sigma
    log.info("DP-SGD on D: Poisson sampling q=%.4g (expected batch %d, padded to %d), noise multiplier "
             "%.4g%s, clip %.3g; epsilon=%.3g at delta=%.2g after %d steps (%s accountant).", q,
             config.train.batch_size, max_batch, sigma,
             f" (calibrated for epsilon {p.target_epsilon:g})" if p.target_epsilon > 0 else "", p.l2_clip,
             eps, delta,
             max_steps, p.accountant)
    return Plan(q, delta, sigma, max_batch, max_steps, eps)


def _steps_within(budget: float, q: float, sigma: float, delta: float, steps: int, accountant: str) -> int:
    """Largest T <= steps with epsilon(T) <= budget (epsilon grows with T: binary search)."""
    eps = lambda t: accounting.epsilon(q, sigma, t, delta, accountant=accountant)
    if eps(steps) <= budget:
        return steps
    lo, hi = 0, steps  # eps(lo) <= budget < eps(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if eps(mid) <= budget else (lo, mid)
    return lo


def run_epsilon(config: Any, step: int) -> float | None:
    """Epsilon spent after `step` D steps of a run whose config.json was filled in by `prepare`;
    None for a non-private run."""
    if not checks.dp_enabled(config) or step <= 0:
        return None if not checks.dp_enabled(config) else 0.0
    p = config.privacy
    if not p.get("sampling_rate"):
        raise ValueError("config.privacy.sampling_rate is not set: this config was not written by a DP run.")
    return accounting.epsilon(p.sampling_rate, p.noise_multiplier, step, p.delta, accountant=p.accountant)


def check_resume(old: Any, new: Any) -> None:
    """Refuses to resume a DP run with different privacy-relevant settings (the guarantee assumes
    one sigma, q and step count throughout)."""
    changed = []
    for path in LOCKED_FIELDS:
        section, key = path.split(".")
        a, b = old[section].get(key), new[section].get(key)
        if a != b:
            changed.append(f"{path}: {a!r} -> {b!r}")
    if changed:
        raise ValueError("Cannot resume this differentially private run with changed privacy settings ("
                         + "; ".join(changed) + "). Start a new workdir.")
