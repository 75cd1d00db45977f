"""White-box gradient canaries: an empirical lower bound on a DP run's epsilon from the same run.

With `privacy.canaries = M`, M Dirac canaries ride along with D's DP-SGD steps:
  * canary j owns coordinate j of an M-vector appended to D's gradient (a direction no real
    example's gradient touches, so nothing but the mechanism blurs its signal);
  * a secret fair coin (`coins`, from the run's CSPRNG secret in WORKDIR/private) decides whether
    canary j is in the training set;
  * at every step an *in* canary joins the batch with the same Poisson probability q as a real
    example (drawn from the step's secret membership stream after the real examples,
    data/pipeline.py) and then contributes the gradient `canary_norm * C * e_j`, clipped like any
    example (to C), to the clipped sum (`dp_sgd.d_gradient`);
  * the noise transformation (`noise.gaussian_noise`) noises gradient and canary coordinates in one
    draw and accumulates the noised canary coordinates over steps: canary j's score,
    <e_j, sum_t noised sum_t>, the view the accountant already grants an attacker. Canaries are
    examples like any other (sensitivity C on the joint vector): the guarantee covers them, so a
    correct mechanism keeps every lower bound at or below the reported epsilon.

`audit(in_scores, out_scores, ...)` turns the scores into jax-privacy's `CanaryScoreAuditor`
bounds (one-run, Steinke-Nasr-Jagielski 2023; one-run f-DP, Mahloujifar et al. 2024), AUROC and TPR
at FPR 0.01, plus the largest bound M canaries could prove at all (perfectly separated scores).

`privacy.break_mechanism` (tests and the audit study only) breaks the mechanism on purpose while
the accountant still reports the intended epsilon: 'no_noise' (sigma = 0 in the noise
transformation) or 'no_clipping' (C = inf when clipping; the noise keeps sigma C). A third break,
noise from the public seed, is `privacy.secure_rng=False`: the audit then replays the noise from
config.seed, as anyone holding the config could, and subtracts it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

CANARY_TAG = 0x43414E41  # "CANA"
SIGNIFICANCE = 0.05  # bounds hold with 95 % confidence
FPR = 0.01


def coins(words: tuple[int, ...], num: int) -> np.ndarray:
    """bool [num]: which canaries are in the training set (fair coins from the run's secret words)."""
    return np.random.default_rng(np.random.SeedSequence([*words, CANARY_TAG, int(num)])).random(num) < 0.5


def step_active(rng: np.random.Generator, in_coins: np.ndarray, sampling_rate: float) -> np.ndarray:
    """f32 [M]: 1 for the in-canaries this step's Poisson draw includes (the same q as real examples)."""
    return (in_coins & (rng.random(len(in_coins)) < sampling_rate)).astype(np.float32)


def audit(in_scores: np.ndarray, out_scores: np.ndarray, *, epsilon: float, delta: float) -> dict[str, Any]:
    """Empirical lower bounds from canary scores (higher = "in"), beside the reported epsilon."""
    from jax_privacy import auditing

    in_scores, out_scores = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    auditor = auditing.CanaryScoreAuditor(in_scores, out_scores)
    perfect = auditing.CanaryScoreAuditor(np.ones(len(in_scores)), np.zeros(len(out_scores)))
    bounds = {"epsilon_lower_bound": auditor.epsilon_one_run(SIGNIFICANCE, delta),
              "epsilon_lower_bound_fdp": auditor.epsilon_one_run_fdp(SIGNIFICANCE, delta),
              "max_provable_epsilon": perfect.epsilon_one_run(SIGNIFICANCE, delta),
              "max_provable_epsilon_fdp": perfect.epsilon_one_run_fdp(SIGNIFICANCE, delta)}
    out = {k: float(v) for k, v in bounds.items()}
    out.update(auroc=float(auditor.attack_auroc()), tpr_at_fpr_0_01=float(auditor.tpr_at_given_fpr(FPR)),
               num_in=int(len(in_scores)), num_out=int(len(out_scores)), confidence=1 - SIGNIFICANCE,
               epsilon=float(epsilon), delta=float(delta),
               ratio_to_epsilon=float(out["epsilon_lower_bound"] / epsilon) if epsilon > 0 else None)
    return out
