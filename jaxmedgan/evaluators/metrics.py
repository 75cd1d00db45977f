"""Classification metrics for downstream studies, in numpy (host-side; no scipy/sklearn needed).

Conventions: single-label predictions are probabilities f32 [N,K] with int labels [N]; the
predicted class is the argmax. Multi-label predictions are per-finding probabilities [N,K] with
multi-hot targets [N,K]; a finding is called positive at probability >= `threshold` (0.5).
Per-class sensitivity / specificity are one-vs-rest: sens_k = TP_k / (TP_k + FN_k),
spec_k = TN_k / (TN_k + FP_k). AUC is the Mann-Whitney statistic with mid-ranks for ties
(equal to the trapezoidal area under the ROC curve, and to sklearn's `roc_auc_score`); the macro
AUC averages the one-vs-rest AUCs of the classes present (sklearn `multi_class='ovr'`).
A metric that is undefined (no positives, say) is NaN, never silently 0.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K,K]: rows = true class, columns = predicted class."""
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} must have the same shape.")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def sensitivity_specificity(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest (sensitivity [K], specificity [K]) from a confusion matrix [K,K] (NaN if undefined)."""
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x [n], ties given the mean of the ranks they span (float64 [n])."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    ranks_sorted = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of ranks start+1..end
    ranks = np.empty(len(x), np.float64)
    ranks[order] = ranks_sorted
    return ranks


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: positive bool [N], scores f [N]; NaN without both classes."""
    positive = np.asarray(positive).astype(bool)
    scores = np.asarray(scores, np.float64)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _midranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr [M], tpr [M], thresholds [M]) at every distinct score, from (0, 0) (threshold +inf) to (1, 1)."""
    positive = np.asarray(positive).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return (np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, s[last]])


def _nanmean(x: Sequence[float]) -> float:
    x = np.asarray(x, np.float64)
    return float(np.mean(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else float("nan")


def single_label_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, per-class sensitivity/specificity/AUC, their macro means, confusion matrix."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    k = len(class_names)
    if probs.shape != (len(labels), k):
        raise ValueError(f"probs must be [N={len(labels)}, K={k}]; got {probs.shape}.")
    cm = confusion_matrix(labels, np.argmax(probs, -1), k)
    sens, spec = sensitivity_specificity(cm)
    aucs = [roc_auc(labels == c, probs[:, c]) for c in range(k)]
    return {
        "n": int(len(labels)),
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)) if len(labels) else float("nan"),
        "sensitivity": dict(zip(class_names, map(float, sens))),
        "specificity": dict(zip(class_names, map(float, spec))),
        "auc": dict(zip(class_names, map(float, aucs))),
        "macro_sensitivity": _nanmean(sens),
        "macro_specificity": _nanmean(spec),
        "macro_auc": _nanmean(aucs),
        "confusion_matrix": cm.tolist(),
    }


def multi_label_metrics(targets: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                        threshold: float = 0.5) -> dict:
    """Per-finding sensitivity/specificity (at `threshold`)/AUC, macro means, exact-match accuracy,
    element-wise accuracy and per-finding 2x2 confusion matrices [[TN, FP], [FN, TP]]."""
    targets = np.asarray(targets) > 0.5
    probs = np.asarray(probs, np.float64)
    if probs.shape != targets.shape or probs.shape[1:] != (len(class_names),):
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} must both be [N, K={len(class_names)}].")
    called = probs >= threshold
    sens, spec, aucs, cms = [], [], [], {}
    for c, name in enumerate(class_names):
        cm = confusion_matrix(targets[:, c].astype(int), called[:, c].astype(int), 2)
        s, p = sensitivity_specificity(cm)
        sens.append(float(s[1]))
        spec.append(float(p[1]))
        aucs.append(roc_auc(targets[:, c], probs[:, c]))
        cms[name] = cm.tolist()
    n = len(targets)
    return {
        "n": int(n),
        "accuracy": float(np.mean(np.all(called == targets, axis=1))) if n else float("nan"),  # exact match
        "element_accuracy": float(np.mean(called == targets)) if n else float("nan"),
        "sensitivity": dict(zip(class_names, sens)),
        "specificity": dict(zip(class_names, spec)),
        "auc": dict(zip(class_names, map(float, aucs))),
        "macro_sensitivity": _nanmean(sens),
        "macro_specificity": _nanmean(spec),
        "macro_auc": _nanmean(aucs),
        "confusion_matrix": cms,
        "threshold": float(threshold),
    }


def correct(targets: np.ndarray, probs: np.ndarray, multi_label: bool, threshold: float = 0.5) -> np.ndarray:
    """bool [N]: argmax equals the label (single-label) or every finding called right (multi-label)."""
    probs = np.asarray(probs)
    if multi_label:
        return np.all((probs >= threshold) == (np.asarray(targets) > 0.5), axis=1)
    return np.argmax(probs, -1) == np.asarray(targets)


def bootstrap_ci(statistic: Callable[[np.ndarray], float | dict], groups: np.ndarray, *,
                 num_samples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Percentile bootstrap (1 - alpha) intervals, resampling whole groups with replacement.

    `statistic(index)` maps an int index [M] into the pooled examples to a number or a flat dict
    of numbers; `groups` int [N] clusters the examples (a patient, or an image with all its
    repeated-seed predictions), so correlated examples are drawn together. Resamples where a
    statistic is NaN (e.g. AUC with no positives) are left out of that statistic's interval.
    Returns {name: (lo, hi)} (name '' for a scalar statistic).
    """
    groups = np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = np.argsort(inverse, kind="mergesort")
    bounds = np.r_[0, np.cumsum(np.bincount(inverse, minlength=len(uniq)))]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x424F4F54]))  # "BOOT"
    draws: dict[str, list[float]] = {}
    for _ in range(num_samples):
        picked = rng.integers(0, len(uniq), len(uniq))
        index = np.concatenate([members[bounds[g]:bounds[g + 1]] for g in picked])
        value = statistic(index)
        for name, v in (value.items() if isinstance(value, dict) else (("", value),)):
            draws.setdefault(name, []).append(float(v))
    out = {}
    for name, values in draws.items():
        v = np.asarray(values)
        v = v[~np.isnan(v)]
        out[name] = ((float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))) if len(v)
                     else (float("nan"), float("nan")))
    return out


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n Bernoulli(1/2) trials: min(1, 2 P[X <= min(k, n-k)])."""
    if n == 0:
        return 1.0
    m = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(m + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on paired bool [N] outcomes of two classifiers on the same images.

    b = a right & b wrong, c = a wrong & b right; under H0 b ~ Binomial(b + c, 1/2).
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"Paired outcomes must have the same shape; got {a.shape} and {b.shape}.")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return {"test": "McNemar exact (binomial)", "n": int(a.size), "a_only_correct": only_a,
            "b_only_correct": only_b, "p_value": binomial_two_sided_p(only_a, only_a + only_b)}


def paired_permutation_test(x: np.ndarray, y: np.ndarray, *, num_permutations: int = 10000,
                            seed: int = 0) -> dict:
    """Two-sided sign-flip test of mean(y - x) = 0 on paired values (e.g. per-fold accuracies).

    Enumerates all 2^n sign patterns when 2^n <= num_permutations, else samples them (seeded);
    p = P[|mean(s * d)| >= |mean(d)|] including the observed pattern.
    """
    d = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    n = d.size
    if n == 0:
        return {"test": "paired sign-flip permutation", "n": 0, "mean_difference": float("nan"), "p_value": 1.0}
    if 2 ** n <= num_permutations:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        exact = True
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5045524D]))  # "PERM"
        signs = rng.choice([-1, 1], size=(num_permutations, n))
        signs[0] = 1
        exact = False
    observed = abs(d.mean())
    null = np.abs((signs * d).mean(1))
    p = float(np.mean(null >= observed - 1e-12))
    return {"test": "paired sign-flip permutation", "n": int(n), "exact": exact,
            "mean_difference": float(d.mean()), "p_value": p}
