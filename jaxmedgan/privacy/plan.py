"""A DP training run's privacy plan: sampling rate, delta, noise, padded batch and step budget.

Fixed once at start (host-side) and written back into `config.privacy` (`sampling_rate`,
`delta`, `noise_multiplier`, `overflow_prob`) so `config.json` and every checkpoint record the
parameters the accountant needs: (epsilon, delta') after any step follows from the config alone
(`run_guarantee`). Only the discriminator reads real data, so only its updates are privatised and
the accountant counts D steps (one per training step); G is private by post-processing.

delta'. A Poisson batch is padded to a fixed size m for jit; a draw of more than m examples is
truncated, which the analysed mechanism never does. On that event (probability p per step) the
guarantee can fail, so T steps are (epsilon, delta + T * p * (1 + e^epsilon))-DP (`sampling.py`).
By default (`privacy.overflow_prob = 0`) m is chosen so that delta' <= 1.01 * delta; the exact
per-step p of the chosen m is recorded, and delta' is reported wherever epsilon is.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping

from jaxmedgan.privacy import accounting, checks, sampling
from jaxmedgan.privacy.config import DPConfig, dp_enabled

log = logging.getLogger(__name__)

# What fixes the privacy guarantee of a run; changing any of it on resume is refused (prefixes end
# in '.'). privacy.log_private_metrics only says where monitoring goes, so it may change.
LOCKED_FIELDS = ("privacy.", "seed", "data.", "train.batch_size", "train.steps")
UNLOCKED_FIELDS = ("privacy.log_private_metrics",)
DELTA_SLACK = 0.01  # default padding: delta' <= (1 + DELTA_SLACK) * delta


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the trainer needs to run DP-SGD within budget."""

    sampling_rate: float  # q: each example joins a step's batch with this probability
    delta: float
    noise_multiplier: float  # sigma
    max_batch_size: int  # padded Poisson batch (a multiple of the data-parallel device count)
    max_steps: int  # steps allowed within the epsilon budget (= train.steps without a budget)
    epsilon_at_end: float  # epsilon after max_steps
    overflow_prob: float  # exact P[Poisson draw > max_batch_size] per step
    delta_prime: float  # delta + max_steps * overflow_prob * (1 + e^epsilon_at_end)
    buckets: tuple[int, ...] = ()  # ascending padded sizes, the last max_batch_size (privacy.padding_buckets)

    def bucket_for(self, num_real: int) -> int:
        """The smallest padded size that holds a draw of `num_real` examples (the host picks the
        step's shape from it; padding rows add exactly zero, so the result is the same mechanism)."""
        return next((b for b in self.buckets if b >= num_real), self.max_batch_size)


def prepare(config: Any, d_variables: Mapping[str, Any], num_examples: int, batch_multiple: int) -> Plan:
    """Validates the DP config, calibrates sigma for `privacy.target_epsilon` if set, picks the padded
    batch for delta' <= 1.01 delta (unless `privacy.overflow_prob` > 0), fills in
    `config.privacy.{sampling_rate, delta, noise_multiplier, overflow_prob}` and returns the plan."""
    p = DPConfig.from_config(config)
    checks.check_dp_compatible(config, d_variables)
    if p.sampling != "poisson":
        raise ValueError(f"config.privacy.sampling={p.sampling!r}: the GAN trainers implement Poisson "
                         "sampling (the sampling the accountant analyses); use 'poisson'.")
    q = config.train.batch_size / num_examples
    if not 0 < q <= 1:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} (the expected Poisson batch) "
                         f"must be in (0, {num_examples}] for a dataset of {num_examples} examples.")
    if q * p.cycle_length > 1:
        raise ValueError(f"config.privacy.bands={p.bands}: cyclic Poisson sampling draws the expected batch of "
                         f"{config.train.batch_size} from one of {p.bands} groups of ~{num_examples // p.bands} "
                         "examples; use at most train.batch_size x bands <= dataset size.")
    delta = p.delta or 1.0 / (10 * num_examples)
    if delta >= 1.0 / num_examples:
        log.warning("delta=%.3g is not below 1/N=%.3g: the guarantee is weak.", delta, 1.0 / num_examples)
    steps = config.train.steps
    sigma = p.noise_multiplier
    if p.target_epsilon > 0:
        sigma = accounting.calibrate_noise(p.target_epsilon, delta, q, steps, accountant=p.accountant,
                                           cycle_length=p.cycle_length)
    budget = p.epsilon_budget or p.target_epsilon  # hard stop; 0 = none
    max_steps = steps if budget <= 0 else _steps_within(budget, q, sigma, delta, steps, p.accountant, p.cycle_length)
    eps = (accounting.epsilon(q, sigma, max_steps, delta, accountant=p.accountant, cycle_length=p.cycle_length)
           if max_steps else 0.0)
    target = p.overflow_prob or _overflow_target(delta, max_steps, eps)
    max_batch = sampling.max_batch_size_for(num_examples, q, target, multiple_of=batch_multiple)
    overflow = sampling.overflow_probability(num_examples, q, max_batch)
    section = config.privacy
    section.sampling_rate, section.delta, section.noise_multiplier = q, delta, sigma
    section.overflow_prob = float(overflow)
    d_prime = delta_prime(delta, overflow, max_steps, eps)
    log.info("DP-SGD on D (%s): Poisson sampling q=%.4g (expected batch %d, padded to %d: overflow %.2g per "
             "step), noise multiplier %.4g%s, clip %.3g; epsilon=%.3g at delta'=%.3g (delta %.2g) after "
             "%d steps (%s accountant).", _mechanism_name(p), q, config.train.batch_size, max_batch, overflow, sigma,
             f" (calibrated for epsilon {p.target_epsilon:g})" if p.target_epsilon > 0 else "", p.l2_clip,
             eps, d_prime, delta, max_steps, p.accountant)
    buckets = sampling.padding_buckets(num_examples, q, max_batch, p.padding_buckets, multiple_of=batch_multiple)
    if len(buckets) > 1:
        log.info("Padding buckets %s: each step runs at the smallest that holds its Poisson draw.", buckets)
    return Plan(q, delta, sigma, max_batch, max_steps, eps, overflow, d_prime, buckets)


def _mechanism_name(p: DPConfig) -> str:
    return ("i.i.d. Gaussian noise" if p.mechanism == "dpsgd"
            else f"banded MF noise, {p.bands} bands, cyclic Poisson over {p.bands} groups")


def delta_prime(delta: float, overflow_prob: float, steps: int, epsilon: float) -> float:
    """min(1, delta + steps * overflow_prob * (1 + e^epsilon)): the delta that holds with truncated
    padding (1 = no guarantee)."""
    if overflow_prob == 0 or steps == 0:
        return float(delta)
    log_extra = math.log(steps) + math.log(overflow_prob) + _log1p_exp(epsilon)
    return float(min(1.0, delta + math.exp(min(log_extra, 0.0))))


def _log1p_exp(x: float) -> float:
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def _overflow_target(delta: float, steps: int, epsilon: float) -> float:
    """Per-step overflow probability p with steps * p * (1 + e^eps) = DELTA_SLACK * delta (0: pad to N)."""
    if steps == 0:
        return 0.5 - 1e-9
    log_p = math.log(DELTA_SLACK * delta) - math.log(steps) - _log1p_exp(epsilon)
    return math.exp(log_p) if log_p > -690 else 0.0  # below float range: pad to the whole dataset


def _steps_within(budget: float, q: float, sigma: float, delta: float, steps: int, accountant: str,
                  cycle_length: int = 1) -> int:
    """Largest T <= steps with epsilon(T) <= budget (epsilon grows with T: binary search)."""
    eps = lambda t: accounting.epsilon(q, sigma, t, delta, accountant=accountant, cycle_length=cycle_length)
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
    guarantee = run_guarantee(config, step)
    return None if guarantee is None else guarantee[0]


def run_guarantee(config: Any, step: int) -> tuple[float, float] | None:
    """(epsilon, delta') after `step` D steps of a run whose config.json was filled in by `prepare`;
    None for a non-private run."""
    p = DPConfig.from_config(config)
    if not p.enabled:
        return None
    if step <= 0:
        return 0.0, p.delta
    if not p.sampling_rate:
        raise ValueError("config.privacy.sampling_rate is not set: this config was not written by a DP run.")
    eps = accounting.epsilon(p.sampling_rate, p.noise_multiplier, step, p.delta, accountant=p.accountant,
                             cycle_length=p.cycle_length)
    return eps, delta_prime(p.delta, p.overflow_prob, step, eps)


def flatten(config: Any) -> dict[str, Any]:
    """{dotted key: value} of a ConfigDict or nested dict (empty sections drop out)."""
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        else:
            out[prefix[:-1]] = node

    walk("", tree)
    return out


def is_locked(key: str) -> bool:
    """True if the dotted config key fixes a DP run's guarantee (may never change on resume)."""
    return key not in UNLOCKED_FIELDS and any(key.startswith(f) if f.endswith(".") else key == f
                                              for f in LOCKED_FIELDS)


def check_resume(old: Any, new: Any) -> None:
    """Refuses to resume a run that was or would be differentially private with any change to the
    privacy settings (DP switched off included), the seed, the dataset (`data.*`), the batch size
    or the step count: the guarantee assumes one mechanism, one dataset and one sampling
    throughout. `old`: the workdir's config.json; `new`: the config after `prepare`."""
    if not (dp_enabled(old) or dp_enabled(new)):
        return
    a, b = flatten(old), flatten(new)
    defaults = {f"privacy.{f.name}": f.default for f in dataclasses.fields(DPConfig)}
    # A privacy field added after the run started, at its default, is the mechanism the run used.
    added_at_default = lambda key: key not in a and key in defaults and b.get(key) == defaults[key]
    changed = [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
               if is_locked(key) and a.get(key) != b.get(key) and not added_at_default(key)]
    if changed:
        raise ValueError("Cannot resume this differentially private run with changed privacy settings, seed, "
                         "dataset or sampling (" + "; ".join(changed) + "): the guarantee holds for one mechanism "
                         "on one dataset. Start a new workdir.")
