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

Input-space (black-box) canaries, `privacy.input_canaries = M`: M out-of-distribution images
(random +-1 block patterns, `input_canaries`, drawn from the run's secret like their coins) of
which the in-canaries join the real training set (`WithInputCanaries`) and are then sampled,
clipped and noised like any image. Scores come from what a holder of the released artifacts sees:
D's logit on the canary (the final checkpoint) and minus the distance from the canary to its
nearest generated sample (the released G). The accountant counts all M in the dataset size, so
N (public through `privacy.sampling_rate`) says nothing about how many are in.

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
INPUT_TAG = 0x494E5054  # "INPT": input-space canaries' coins, patterns and labels
SIGNIFICANCE = 0.05  # bounds hold with 95 % confidence
FPR = 0.01


def coins(words: tuple[int, ...], num: int) -> np.ndarray:
    """bool [num]: which canaries are in the training set (fair coins from the run's secret words)."""
    return np.random.default_rng(np.random.SeedSequence([*words, CANARY_TAG, int(num)])).random(num) < 0.5


def input_canaries(words: tuple[int, ...], num: int, shape: tuple[int, int, int],
                   num_classes: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images f32 [num, H, W, C] in {-1, 1}, labels i32 [num], in-coins bool [num]) of the input-space
    canaries, all from the run's secret words: each image a random +-1 pattern of square blocks
    (side 1, 2 or 4 px), clearly unlike smooth medical images; labels uniform over num_classes
    (0 without classes)."""
    rng = np.random.default_rng(np.random.SeedSequence([*words, INPUT_TAG, int(num)]))
    is_in = rng.random(num) < 0.5
    labels = rng.integers(0, max(num_classes, 1), num).astype(np.int32)
    height, width, channels = shape
    images = np.empty((num, height, width, channels), np.float32)
    for i in range(num):
        side = int(rng.choice([1, 2, 4]))
        blocks = rng.choice([-1.0, 1.0], size=(-(-height // side), -(-width // side), channels))
        images[i] = np.repeat(np.repeat(blocks, side, 0), side, 1)[:height, :width]
    return images, labels, is_in


class WithInputCanaries:
    """A data source: the real examples, then the in-canaries as {"image", "label"} examples."""

    def __init__(self, source: Any, images: np.ndarray, labels: np.ndarray):
        first = source[0]
        extra = sorted(set(first) - {"image", "label"}) if isinstance(first, dict) else []
        if extra:
            raise ValueError(f"config.privacy.input_canaries needs image + label examples; this dataset's also carry "
                             f"{extra} (e.g. a paired translation task), which a canary image cannot supply.")
        self.source, self.images, self.labels = source, images, labels

    def __len__(self) -> int:
        return len(self.source) + len(self.images)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < len(self.source):
            return self.source[index]
        j = index - len(self.source)
        return {"image": self.images[j], "label": np.int32(self.labels[j])}


def with_input_canaries(source: Any, words: tuple[int, ...], num: int, num_classes: int = 0) -> WithInputCanaries:
    """`source` plus the in-canaries among the run's `num` input-space canaries."""
    shape = tuple(np.asarray(source[0]["image"]).shape)
    images, labels, is_in = input_canaries(words, num, shape, num_classes)
    return WithInputCanaries(source, images[is_in], labels[is_in])


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
