"""Intra-class diversity: how different the images of one class are from each other, synthetic vs real.

diversity(S) = mean over pairs i != j of ||s_i - s_j||_2 (Euclidean, on flattened pixels or on
feature vectors), the mean pairwise distance of a set. The *diversity ratio* of a class is
diversity(synthetic images of class c) / diversity(real images of class c): 1 = as varied as
the data, well below 1 = near-copies within the class (an AC-GAN's known failure), above 1 =
more varied than the data (often noise). Classes with fewer than 2 images on either side give NaN.

Confidence intervals: percentile bootstrap (`num_bootstrap` resamples, seeded) that resamples
each set with replacement and averages the pairwise distances over pairs of *distinct* original
images (so a drawn duplicate does not add a spurious zero distance); synthetic and real sets are
resampled independently. All host-side numpy, float64.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x.reshape(len(x), -1)


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix f64 [N, N] of x [N, ...] (flattened per row)."""
    f = _flat(x)
    sq = np.einsum("ij,ij->i", f, f)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean over pairs i != j of ||x_i - x_j||_2 for x [N, ...]; NaN when N < 2."""
    n = len(x)
    if n < 2:
        return float("nan")
    return float(pairwise_distances(x).sum() / (n * (n - 1)))


def _bootstrap_means(dist: np.ndarray, rng: np.random.Generator, num: int) -> np.ndarray:
    """Mean pairwise distance of `num` bootstrap resamples of a set with distance matrix [N, N]."""
    n = len(dist)
    out = np.empty(num)
    for b in range(num):
        idx = rng.integers(0, n, n)
        sub = dist[np.ix_(idx, idx)]
        distinct = idx[:, None] != idx[None, :]
        out[b] = sub[distinct].mean() if distinct.any() else np.nan
    return out


def class_diversity(synthetic: np.ndarray, synthetic_labels: np.ndarray, real: np.ndarray,
                    real_labels: np.ndarray, class_names: Sequence[str], *, num_bootstrap: int = 200,
                    seed: int = 0, level: float = 0.95) -> dict:
    """Per-class diversity of synthetic vs real and their ratio, with bootstrap CIs.

    synthetic [M, ...], synthetic_labels int [M]; real [N, ...], real_labels int [N] (pixels or
    features; the two sets must have the same trailing shape). Returns
    {"per_class": {name: {"synthetic", "real", "ratio", "ratio_ci": [lo, hi], "num_synthetic",
    "num_real"}}, "diversity_ratio": mean of the per-class ratios (NaN classes skipped),
    "diversity_ratio_min": the worst class's ratio}.
    """
    synthetic, real = np.asarray(synthetic), np.asarray(real)
    if synthetic.shape[1:] != real.shape[1:]:
        raise ValueError(f"synthetic {synthetic.shape[1:]} and real {real.shape[1:]} items differ in shape")
    rng = np.random.default_rng([seed, 0x44495653])  # "DIVS"
    alpha = (1.0 - level) / 2.0
    per_class, ratios = {}, []
    for k, name in enumerate(class_names):
        s, r = synthetic[np.asarray(synthetic_labels) == k], real[np.asarray(real_labels) == k]
        entry = {"num_synthetic": int(len(s)), "num_real": int(len(r)), "synthetic": float("nan"),
                 "real": float("nan"), "ratio": float("nan"), "ratio_ci": [float("nan"), float("nan")]}
        if len(s) >= 2 and len(r) >= 2:
            ds, dr = pairwise_distances(s), pairwise_distances(r)
            entry["synthetic"] = float(ds.sum() / (len(s) * (len(s) - 1)))
            entry["real"] = float(dr.sum() / (len(r) * (len(r) - 1)))
            entry["ratio"] = entry["synthetic"] / entry["real"] if entry["real"] > 0 else float("nan")
            if num_bootstrap:
                boot = _bootstrap_means(ds, rng, num_bootstrap) / _bootstrap_means(dr, rng, num_bootstrap)
                boot = boot[np.isfinite(boot)]
                if len(boot):
                    entry["ratio_ci"] = [float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))]
            ratios.append(entry["ratio"])
        per_class[name] = entry
    finite = [r for r in ratios if np.isfinite(r)]
    return {"per_class": per_class, "diversity_ratio": float(np.mean(finite)) if finite else float("nan"),
            "diversity_ratio_min": float(np.min(finite)) if finite else float("nan")}
