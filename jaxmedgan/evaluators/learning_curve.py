"""Learning-curve pieces of the downstream study (`studies.downstream`), in numpy on the host.

* Real fractions (`downstream.real_fractions`): each (seed, fold)'s training part is cut to a
  fraction r of its groups (images when every image is its own group), stratified by
  `folds.group_strata` (the class, or a multi-label image's rarest finding): stratum c keeps
  max(1, ceil(r * n_c)) groups. One seeded permutation per (seed, fold) per stratum, of which
  every fraction takes a prefix, so the subsets are nested (10 % inside 25 % inside ...) and do
  not depend on which other fractions are asked for.
* Balanced accuracy: the mean over classes of the recall (sklearn `balanced_accuracy_score`);
  multi-label, the mean over findings of (sensitivity + specificity) / 2.
* Paired bootstrap of a metric difference between two arms scored on the same images: each
  resample draws groups once and scores both arms on it (`metrics.bootstrap_ci` on the
  difference), so the interval reflects the pairing.
* Sample selection: keep synthetic images the real-only classifier assigns to their requested
  class with probability >= a threshold (`filter_keep`); add per class `max_c n_c - n_c` synthetic
  images so the real + synthetic set is class-balanced (`balance_extra`, `first_per_class`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from jaxmedgan.evaluators import metrics

FRACTIONS_KEY = "downstream.real_fractions"
# The scalar metrics a learning-curve row reports (single-label sensitivity / specificity: macro one-vs-rest).
CURVE_METRICS = ("sensitivity", "specificity", "balanced_accuracy", "macro_auc", "accuracy")


def parse_fractions(values: str | float | Sequence, key: str = FRACTIONS_KEY) -> tuple[float, ...]:
    """Fractions in (0, 1], ascending, from a sequence or 'a,b,c'; ValueError naming `key` otherwise."""
    items = values.split(",") if isinstance(values, str) else (
        list(values) if isinstance(values, (list, tuple)) else [values])
    if not items or all(isinstance(v, str) and not v.strip() for v in items):
        raise ValueError(f"{key} is empty; expected fractions of the training fold in (0, 1], e.g. 0.1,0.25,0.5,1.0.")
    out: list[float] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        if isinstance(text, bool):
            raise ValueError(f"{key} entry {item!r} is not a number; expected fractions in (0, 1].")
        try:
            r = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{key} entry {item!r} is not a number; expected fractions in (0, 1], "
                             f"e.g. 0.1,0.25,0.5,1.0.") from None
        if not (math.isfinite(r) and 0 < r <= 1):
            raise ValueError(f"{key} entry {item!r} must be in (0, 1] (a share of each training fold).")
        if r in out:
            raise ValueError(f"{key} lists {r:g} twice.")
        out.append(r)
    return tuple(sorted(out))


def kept_count(n: int, fraction: float) -> int:
    """max(1, ceil(fraction * n)) for n >= 1 (0 for n = 0); rounding guards 0.1 * 30 = 3.0000000000000004."""
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(round(fraction * n, 9))))


def nested_subsets(strata: np.ndarray, fractions: Sequence[float], seed: int, fold: int) -> dict[float, np.ndarray]:
    """{fraction: sorted positions int64 [M_r] into `strata` [U]}: stratified, nested, seeded by (seed, fold).

    strata: int [U], one stratum per unit (a group, or an image); stratum c keeps its first
    `kept_count(n_c, r)` units of one permutation drawn per stratum (in ascending stratum order).
    """
    strata = np.asarray(strata)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(fold), 0x4C43]))  # "LC"
    perms = [rng.permutation(np.flatnonzero(strata == c)) for c in np.unique(strata)]
    return {float(r): np.sort(np.concatenate([p[:kept_count(len(p), r)] for p in perms])).astype(np.int64)
            if perms else np.zeros(0, np.int64) for r in fractions}


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean per-class recall of argmax(probs [N,K]) over the classes present in labels int [N]."""
    labels = np.asarray(labels, np.int64)
    cm = metrics.confusion_matrix(labels, np.argmax(np.asarray(probs), -1), np.asarray(probs).shape[1])
    return balanced_accuracy_from(cm)


def balanced_accuracy_from(cm: np.ndarray) -> float:
    """Mean recall over the rows (true classes) of a confusion matrix [K,K] that have examples; NaN if none."""
    cm = np.asarray(cm, np.float64)
    rows = cm.sum(1)
    present = rows > 0
    return float(np.mean(np.diag(cm)[present] / rows[present])) if present.any() else float("nan")


def curve_scalars(m: dict, multi_label: bool) -> dict[str, float]:
    """The CURVE_METRICS of a `metrics.single_label_metrics`-style dict (or the multi-label one)."""
    if multi_label:
        halves = [(m["sensitivity"][n] + m["specificity"][n]) / 2 for n in m["sensitivity"]]
        finite = [v for v in halves if np.isfinite(v)]
        bacc = float(np.mean(finite)) if finite else float("nan")
    else:
        bacc = balanced_accuracy_from(m["confusion_matrix"])
    return {"sensitivity": m["macro_sensitivity"], "specificity": m["macro_specificity"], "balanced_accuracy": bacc,
            "macro_auc": m["macro_auc"], "accuracy": m["accuracy"]}


def paired_bootstrap(stat_a: Callable[[np.ndarray], dict], stat_b: Callable[[np.ndarray], dict], groups: np.ndarray,
                     keys: Sequence[str], *, num_samples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """{key: {'difference': b - a, 'ci95': [lo, hi], 'excludes_zero': bool}} for two arms on the same examples.

    stat_a / stat_b map an int index [M] into the pooled examples to a dict holding `keys`;
    `groups` int [N] clusters them (a resample draws whole groups, the same draw for both arms).
    """
    everything = np.arange(len(np.asarray(groups)))
    full_a, full_b = stat_a(everything), stat_b(everything)

    def difference(index: np.ndarray) -> dict:
        a, b = stat_a(index), stat_b(index)
        return {k: b[k] - a[k] for k in keys}

    ci = metrics.bootstrap_ci(difference, groups, num_samples=num_samples, seed=seed, alpha=alpha)
    out = {}
    for k in keys:
        lo, hi = ci[k]
        out[k] = {"difference": float(full_b[k] - full_a[k]), "ci95": [lo, hi],
                  "excludes_zero": bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))}
    return out


def filter_keep(probs: np.ndarray, targets: np.ndarray, threshold: float) -> np.ndarray:
    """bool [M]: the classifier's probability of image i's requested class targets[i] is >= threshold."""
    probs, targets = np.asarray(probs), np.asarray(targets, np.int64)
    if probs.shape != (len(targets), probs.shape[-1]) or probs.ndim != 2:
        raise ValueError(f"probs must be [M={len(targets)}, K]; got {probs.shape}.")
    return probs[np.arange(len(targets)), targets] >= threshold


def balance_extra(counts: np.ndarray) -> np.ndarray:
    """int64 [K]: images to add per class so every class reaches the largest count (max_c n_c - n_c)."""
    counts = np.asarray(counts, np.int64)
    return counts.max() - counts if counts.size else counts


def first_per_class(targets: np.ndarray, counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(index int64 [sum], available int64 [K]): the first counts[c] images of each class c, in order.

    available[c] is how many class-c images there are (fewer than asked: all of them are taken).
    """
    targets = np.asarray(targets, np.int64)
    picks, available = [], []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(targets == c)
        available.append(len(idx))
        picks.append(idx[:max(int(n), 0)])
    index = np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
    return index.astype(np.int64), np.asarray(available, np.int64)


def fitted_batch(batch: int, num_examples: int, multiple: int, what: str) -> int:
    """The global batch for a training set of `num_examples`: `batch`, or when that exceeds the set (a
    small real fraction) the largest multiple of `multiple` (devices, minibatch-stddev group) that fits."""
    if batch <= num_examples:
        return int(batch)
    fitted = (num_examples // multiple) * multiple
    if fitted < 1:
        raise ValueError(f"{what} has {num_examples} training images, fewer than the {multiple} a batch needs "
                         f"(a multiple of the mesh's data devices / minibatch-stddev group); raise the smallest "
                         f"{FRACTIONS_KEY} entry or use fewer devices (config.mesh.data).")
    return int(fitted)
