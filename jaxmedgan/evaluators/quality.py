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

Within classes (`per_class`, for class-conditional models; `jaxmedgan evaluate --per-class`):
every metric above is computed on the samples of class c against the real images of class c,
plus the intra-class diversity ratio (`evaluators.diversity`: mean pairwise distance of the
samples / of the real images, in pixels and in features). 95 % intervals are percentile
bootstraps (`num_bootstrap` resamples, seeded): for precision / recall / density / coverage both
sets are resampled independently with replacement and the k-NN radii are taken over the *distinct*
original images of a resample (a drawn copy of x is not its own nearest neighbour, which would
shrink every radius to 0), the same convention as the diversity intervals; resamples with no more
than k distinct images in a set are dropped. FID gets no interval (its bootstrap is biased
upward at per-class sizes).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxmedgan.evaluators import diversity

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


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(_sq_dists(a, b))


def _radii_excluding(d: np.ndarray, same: np.ndarray, k: int) -> np.ndarray:
    """k-th nearest-neighbour distance per row of d [n, n], entries where `same` [n, n] is True
    (the point itself and its bootstrap copies) left out."""
    return np.partition(np.where(same, np.inf, d), k - 1, axis=1)[:, k - 1]


def _prdc_from_distances(d_rr: np.ndarray, d_ff: np.ndarray, d_rf: np.ndarray, same_r: np.ndarray,
                         same_f: np.ndarray, k: int) -> np.ndarray:
    """[precision, recall, density, coverage] from real-real [N,N], fake-fake [M,M], real-fake [N,M] distances."""
    r_real, r_fake = _radii_excluding(d_rr, same_r, k), _radii_excluding(d_ff, same_f, k)
    inside = d_rf < r_real[:, None]  # [N, M]: fake j in real i's ball
    return np.array([inside.any(0).mean(), (d_rf < r_fake[None, :]).any(1).mean(), inside.sum(0).mean() / k,
                     (d_rf.min(1) < r_real).mean()])


def _percentile_ci(values: np.ndarray, level: float) -> list[float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    alpha = (1.0 - level) / 2.0
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))]


PRDC = ("precision", "recall", "density", "coverage")


def prdc_bootstrap(real: np.ndarray, fake: np.ndarray, k: int = 5, *, num_bootstrap: int = 200,
                   seed: int | Sequence[int] = 0, level: float = 0.95) -> dict[str, list[float]]:
    """{"precision": [lo, hi], ...}: percentile-bootstrap intervals of `prdc` (module docstring).

    Holds the [N, N], [M, M] and [N, M] distance matrices in memory: per-class sizes (thousands).
    """
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Feature dimensions differ: real {real.shape[1]} vs fake {fake.shape[1]}.")
    n, m = len(real), len(fake)
    if min(n, m) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than k samples per set, got {n} real and {m} fake.")
    d_rr, d_ff, d_rf = _pairwise(real, real), _pairwise(fake, fake), _pairwise(real, fake)
    rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0x50524443])  # "PRDC"
    boot = np.full((num_bootstrap, len(PRDC)), np.nan)
    for b in range(num_bootstrap):
        ri, fi = rng.integers(0, n, n), rng.integers(0, m, m)
        if len(np.unique(ri)) <= k or len(np.unique(fi)) <= k:
            continue  # no k distinct neighbours: the radii are undefined
        boot[b] = _prdc_from_distances(d_rr[np.ix_(ri, ri)], d_ff[np.ix_(fi, fi)], d_rf[np.ix_(ri, fi)],
                                       ri[:, None] == ri[None, :], fi[:, None] == fi[None, :], k)
    return {name: _percentile_ci(boot[:, i], level) for i, name in enumerate(PRDC)}


# "pr": precision, recall, density and coverage together; "agreement": a classifier's label of the
# samples of class c is c (per class only; needs a classifier).
METRICS = ("fid", "kid", "pr", "diversity", "agreement")
CLASS_METRICS = ("fid", "pr", "diversity")  # computed within each class from features by `per_class`


def parse_metrics(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """('fid', 'kid', 'pr', 'diversity') from 'fid,kid,pr,diversity' (or a sequence); unknown names are an error."""
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
        if name == "diversity":
            raise ValueError("'diversity' is measured within classes of a class-conditional model "
                             "(quality.per_class, `jaxmedgan evaluate --per-class`), not on a pooled set.")
        if name == "fid":
            out["fid"] = fid(real, fake)
        elif name == "kid":
            out["kid"], out["kid_std"] = kid(real, fake, num_subsets=kid_subsets, subset_size=kid_subset_size,
                                             seed=seed)
        else:
            out.update(prdc(real, fake, k=k))
    return {f"{n}{suffix}": v for n, v in out.items()}


def _nan_entry(keys) -> dict:
    return {key: ([float("nan")] * 2 if key.endswith("_ci") else float("nan")) for key in keys}


def per_class(real_feats: np.ndarray, real_labels: np.ndarray, fake_feats: np.ndarray, fake_labels: np.ndarray,
              class_names: Sequence[str], metrics: tuple[str, ...] | str = CLASS_METRICS, *,
              real_pixels: np.ndarray | None = None, fake_pixels: np.ndarray | None = None, k: int = 5,
              num_bootstrap: int = 200, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """{class name: {...}} of the fakes of class c against the reals of class c (labels int index class_names).

    Features real [N, D] / fake [M, D]; pixels (for "diversity", images [N,H,W,C] / [M,H,W,C] in
    one range) optional. Per class: num_fake, num_real, and for the requested metrics
      diversity: diversity_ratio (+ _ci), diversity_fake, diversity_real (pixels; mean pairwise
                 L2 distance), diversity_ratio_feature (+ _ci) (features);
      fid:       fid (features);
      pr:        precision, recall, density, coverage, each with its _ci.
    "kid" is not computed per class (subset sizes would be a handful); a class with too few
    images for a metric (< 2; <= k for pr) gets NaN there. Intervals: module docstring.
    """
    names = [n for n in parse_metrics(metrics) if n in CLASS_METRICS]
    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    real_feats, fake_feats = _as_features(real_feats, "real features"), _as_features(fake_feats, "fake features")
    if len(real_labels) != len(real_feats) or len(fake_labels) != len(fake_feats):
        raise ValueError(f"labels ({len(real_labels)} real, {len(fake_labels)} fake) and features "
                         f"({len(real_feats)}, {len(fake_feats)}) differ in length.")
    out: dict[str, dict] = {name: {"num_fake": int((fake_labels == c).sum()), "num_real": int((real_labels == c).sum())}
                            for c, name in enumerate(class_names)}
    if "diversity" in names:
        if real_pixels is None or fake_pixels is None:
            raise ValueError("'diversity' per class needs real_pixels and fake_pixels.")
        pixel = diversity.class_diversity(fake_pixels, fake_labels, real_pixels, real_labels, class_names,
                                          num_bootstrap=num_bootstrap, seed=seed, level=level)["per_class"]
        feature = diversity.class_diversity(fake_feats, fake_labels, real_feats, real_labels, class_names,
                                            num_bootstrap=num_bootstrap, seed=seed, level=level)["per_class"]
        for name in class_names:
            p, f = pixel[name], feature[name]
            out[name].update(diversity_ratio=p["ratio"], diversity_ratio_ci=p["ratio_ci"],
                             diversity_fake=p["synthetic"], diversity_real=p["real"],
                             diversity_ratio_feature=f["ratio"], diversity_ratio_feature_ci=f["ratio_ci"])
    for c, name in enumerate(class_names):
        r, f = real_feats[real_labels == c], fake_feats[fake_labels == c]
        if "fid" in names:
            out[name]["fid"] = fid(r, f) if min(len(r), len(f)) >= 2 else float("nan")
        if "pr" in names:
            if min(len(r), len(f)) <= k:
                out[name].update(_nan_entry([*PRDC, *(f"{p}_ci" for p in PRDC)]))
                continue
            out[name].update(prdc(r, f, k=k))
            cis = prdc_bootstrap(r, f, k, num_bootstrap=num_bootstrap, seed=(seed, c), level=level)
            out[name].update({f"{p}_ci": cis[p] for p in PRDC})
    return out


def class_agreement(fake_pred: np.ndarray, fake_labels: np.ndarray, real_pred: np.ndarray | None,
                    real_labels: np.ndarray | None, class_names: Sequence[str], *, num_bootstrap: int = 200,
                    seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """{class name: {agreement, agreement_ci[, agreement_real]}}: the share of class-c samples a
    classifier labels c (fake_pred / fake_labels int [M]), with a percentile-bootstrap interval over
    the samples; `agreement_real` the same classifier's recall of class c on real images (the
    ceiling a faithful generator can reach), when real_pred / real_labels int [N] are given."""
    fake_pred, fake_labels = np.asarray(fake_pred), np.asarray(fake_labels)
    rng = np.random.default_rng([seed, 17])
    out: dict[str, dict] = {}
    for c, name in enumerate(class_names):
        hit = (fake_pred[fake_labels == c] == c).astype(np.float64)
        if not len(hit):
            out[name] = {"agreement": float("nan"), "agreement_ci": [float("nan")] * 2}
        else:
            boot = hit[rng.integers(0, len(hit), (num_bootstrap, len(hit)))].mean(1)
            out[name] = {"agreement": float(hit.mean()), "agreement_ci": _percentile_ci(boot, level)}
        if real_pred is not None:
            mask = np.asarray(real_labels) == c
            out[name]["agreement_real"] = float(np.mean(np.asarray(real_pred)[mask] == c)) if mask.any() else float("nan")
    return out


def class_means(per_class_values: dict[str, dict], key: str) -> float:
    """Mean over classes of per_class_values[c][key], NaN classes skipped (NaN if none is finite)."""
    values = [v[key] for v in per_class_values.values() if key in v and np.isfinite(v[key])]
    return float(np.mean(values)) if values else float("nan")
