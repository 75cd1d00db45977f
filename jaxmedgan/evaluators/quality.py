"""Image-quality metrics on feature vectors: FID, KID, precision / recall / density / coverage.

All functions are host-side numpy (float64) on features [N, D] from any extractor
(`evaluators.features`: the domain classifier -> "FID-domain", or the Inception port -> FID).

* Fréchet distance (Heusel et al. 2017) between Gaussians N(mu1, S1) and N(mu2, S2):
      d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½).
  tr((S1 S2)^½) is computed as the sum of sqrt of the eigenvalues of the symmetric PSD matrix
  S1^½ S2 S1^½ (similar to S1 S2, so the same spectrum), with S1^½ from `eigh` and tiny negative
  round-off eigenvalues clipped to 0: no complex arithmetic, no scipy `sqrtm` iteration, and
  exact 0 behaviour for identical sets. `method="sqrtm"` is the pytorch-fid formula (scipy
  `sqrtm` of the product, eps * I added to both covariances when the result is not finite, the
  imaginary part dropped when it is round-off and an error raised otherwise).
* KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (x·y / d + 1)³, averaged over `num_subsets` random subsets of `subset_size` from each
  set (without replacement within a subset; seeded), as in torch-fidelity / the KID paper code.
* Precision / recall / density / coverage (Naeem et al. 2020, the `prdc` reference definitions):
  r_k(x) is the distance from x to its k-th nearest neighbour in its own set (itself excluded);
      precision = mean_j [exists i: |y_j - x_i| < r_k(x_i)]
      recall    = mean_i [exists j: |x_i - y_j| < r_k(y_j)]
      density   = (1/k) mean_j #{i: |y_j - x_i| < r_k(x_i)}
      coverage  = mean_i [min_j |x_i - y_j| < r_k(x_i)]
  with x = real, y = fake features (strict inequalities, as in `prdc`).
"""
from __future__ import annotations

import numpy as np

# Rows of the real set processed at once in the k-NN code: bounds memory at CHUNK x N float64.
_CHUNK = 1024


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be features [N, D], got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} [{x.shape}] contains NaN or Inf.")
    return x


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean f64 [D], covariance f64 [D, D]) of features [N, D], N >= 2 (unbiased, ddof=1)."""
    feats = _as_features(feats, "features")
    if len(feats) < 2:
        raise ValueError(f"A covariance needs at least 2 feature vectors, got {len(feats)}.")
    return feats.mean(axis=0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix [D, D] (negative round-off clipped)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6, method: str = "eigh") -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (means [D], covs [D, D]).

    method="eigh" (default): tr((S1 S2)^½) = sum sqrt(eig(S1^½ S2 S1^½)), all symmetric.
    method="sqrtm": scipy `sqrtm` of S1 S2 with pytorch-fid's eps / imaginary-part handling.
    The result is clipped at 0 (round-off can make identical Gaussians come out as -1e-13).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance needs means [D] and covariances [D, D] of one D; got mu1 "
                         f"{mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}.")
    diff = mu1 - mu2
    if method == "eigh":
        r1 = _psd_sqrt(sigma1)
        m = r1 @ sigma2 @ r1
        w = np.linalg.eigvalsh((m + m.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    elif method == "sqrtm":
        from scipy import linalg

        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps  # singular product: regularise both covariances
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"sqrtm(S1 S2) has a large imaginary component "
                                 f"{np.max(np.abs(covmean.imag)):.3g}: the covariances are not PSD.")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    else:
        raise ValueError(f"frechet_distance method must be 'eigh' or 'sqrtm', got {method!r}.")
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def fid(feats_a: np.ndarray, feats_b: np.ndarray, **kwargs) -> float:
    """Fréchet distance between Gaussian fits of features [Na, D] and [Nb, D]."""
    mu_a, s_a = gaussian_stats(feats_a)
    mu_b, s_b = gaussian_stats(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"Feature dimensions differ: {mu_a.shape[0]} vs {mu_b.shape[0]}.")
    return frechet_distance(mu_a, s_a, mu_b, s_b, **kwargs)


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of x [m, D], y [m, D] with k(a, b) = (a·b / D + 1)³."""
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise ValueError(f"polynomial_mmd2 needs two sets of the same shape [m >= 2, D]; got {x.shape}, {y.shape}.")
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(same - 2.0 * kxy.sum() / (m * m))


def kid(feats_a: np.ndarray, feats_b: np.ndarray, *, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased polynomial-kernel MMD² (KID) of [Na, D], [Nb, D].

    The subset size is min(subset_size, Na, Nb); each subset draws without replacement, with
    `np.random.default_rng(seed)`.
    """
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature dimensions differ: {a.shape[1]} vs {b.shape[1]}.")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}.")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}.")
    rng = np.random.default_rng(seed)
    values = np.array([polynomial_mmd2(a[rng.choice(len(a), m, replace=False)],
                                       b[rng.choice(len(b), m, replace=False)]) for _ in range(num_subsets)])
    return float(values.mean()), float(values.std())


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [len(x), len(y)], clipped at 0."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of feats [N, D] to its k-th nearest neighbour in feats, itself excluded ([N])."""
    feats = _as_features(feats, "features")
    if not 1 <= k < len(feats):
        raise ValueError(f"k={k} nearest neighbours need more than k samples, got {len(feats)}.")
    out = np.empty(len(feats))
    for s in range(0, len(feats), _CHUNK):
        d = _sq_dists(feats[s:s + _CHUNK], feats)
        # index k of the sorted row: index 0 is the point itself (distance 0)
        out[s:s + _CHUNK] = np.partition(d, k, axis=1)[:, k]
    return np.sqrt(out)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """{"precision", "recall", "density", "coverage"} of fake [M, D] against real [N, D] (k-NN balls)."""
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Feature dimensions differ: real {real.shape[1]} vs fake {fake.shape[1]}.")
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    in_real_balls = np.zeros(len(fake), np.int64)  # per fake: how many real balls contain it
    recalled = np.zeros(len(real), bool)
    covered = np.zeros(len(real), bool)
    for s in range(0, len(real), _CHUNK):
        d = np.sqrt(_sq_dists(real[s:s + _CHUNK], fake))  # [chunk, M]
        rr = r_real[s:s + _CHUNK, None]
        in_real_balls += (d < rr).sum(0)
        recalled[s:s + _CHUNK] = (d < r_fake[None, :]).any(1)
        covered[s:s + _CHUNK] = d.min(1) < rr[:, 0]
    return {"precision": float((in_real_balls > 0).mean()), "recall": float(recalled.mean()),
            "density": float(in_real_balls.mean() / k), "coverage": float(covered.mean())}


METRICS = ("fid", "kid", "pr")  # "pr": precision, recall, density and coverage together


def parse_metrics(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """('fid', 'kid', 'pr') from 'fid,kid,pr' (or a sequence); unknown names are an error."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"Unknown or no metrics {unknown or spec!r}; expected a comma-separated subset of {METRICS}.")
    return tuple(dict.fromkeys(names))


def compute(real: np.ndarray, fake: np.ndarray, metrics: tuple[str, ...] | str = METRICS, *,
            suffix: str = "", kid_subset_size: int = 1000, kid_subsets: int = 100, k: int = 5,
            seed: int = 0) -> dict[str, float]:
    """{name + suffix: value} for `metrics` of fake [M, D] against real [N, D] features.

    Names: fid; kid (mean over subsets), kid_std; precision, recall, density, coverage.
    `suffix` is "_domain" for domain-classifier features so they are never mistaken for FID.
    """
    out: dict[str, float] = {}
    for name in parse_metrics(metrics):
        if name == "fid":
            out["fid"] = fid(real, fake)
        elif name == "kid":
            out["kid"], out["kid_std"] = kid(real, fake, num_subsets=kid_subsets, subset_size=kid_subset_size,
                                             seed=seed)
        else:
            out.update(prdc(real, fake, k=k))
    return {f"{n}{suffix}": v for n, v in out.items()}
