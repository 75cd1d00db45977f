"""Tests for evaluators/quality.py against scipy formulas, explicit loops and hand-computed cases."""
import numpy as np
import pytest
from scipy import linalg

from jaxmedgan.evaluators import quality


def _scipy_fid(a, b):
    """The textbook formula: |mu1 - mu2|² + tr(S1 + S2 - 2 sqrtm(S1 S2)) with scipy's sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fid_matches_scipy_sqrtm_formula(method):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 24))
    b = rng.normal(size=(250, 24)) @ rng.normal(size=(24, 24)) * 0.3 + 0.5
    expected = _scipy_fid(a, b)
    assert expected > 1.0
    np.testing.assert_allclose(quality.fid(a, b, method=method), expected, rtol=1e-6)


def test_fid_is_zero_for_identical_sets_and_positive_otherwise():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(100, 32))
    mu, s = quality.gaussian_stats(a)
    assert quality.frechet_distance(mu, s, mu, s) < 1e-9 * np.trace(s)
    assert quality.fid(a, a + 0.1) == pytest.approx(32 * 0.01, rel=1e-6)  # a pure mean shift


def test_frechet_distance_one_dimensional_closed_form():
    # For 1-D Gaussians d² = (mu1 - mu2)² + (sd1 - sd2)².
    got = quality.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-0.5]), np.array([[0.25]]))
    assert got == pytest.approx(1.5 ** 2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_frechet_distance_rank_deficient_covariances():
    # Fewer samples than dimensions: singular covariances; both methods stay finite and agree.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 40)), rng.normal(size=(10, 40)) + 0.2
    e = quality.fid(a, b, method="eigh")
    s = quality.fid(a, b, method="sqrtm")
    assert np.isfinite(e) and e > 0
    np.testing.assert_allclose(e, s, rtol=1e-4)


def test_frechet_distance_shape_errors():
    with pytest.raises(ValueError, match="covariances"):
        quality.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def _mmd2_loop(x, y):
    """Unbiased MMD² with k(a, b) = (a.b / d + 1)^3, written as explicit O(m²) loops."""
    m, d = x.shape
    k = lambda u, v: (float(np.dot(u, v)) / d + 1.0) ** 3
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / (m * m)


def test_kid_matches_explicit_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) * 1.5 + 0.3
    expected = _mmd2_loop(x, y)
    assert quality.polynomial_mmd2(x, y) == pytest.approx(expected, rel=1e-10)
    # Subsets as large as the sets are permutations: MMD² is invariant, so every subset agrees.
    mean, std = quality.kid(x, y, subset_size=100, num_subsets=3, seed=0)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std < 1e-10 * abs(expected)


def test_kid_subsets_are_seeded_and_near_zero_for_same_distribution():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    r1 = quality.kid(a, b, subset_size=50, num_subsets=20, seed=7)
    assert r1 == quality.kid(a, b, subset_size=50, num_subsets=20, seed=7)
    assert r1 != quality.kid(a, b, subset_size=50, num_subsets=20, seed=8)
    far = quality.kid(a, b + 1.0, subset_size=50, num_subsets=20, seed=7)[0]
    assert abs(r1[0]) < 0.1 * far


REAL = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_prdc_hand_computed_case():
    # k = 1: every real point's nearest neighbour is at distance 1, so the real balls have radius 1.
    # fake (0.5, 0): inside the balls of (0,0) and (1,0) (distance 0.5); not of (0,1), (1,1) (1.118).
    # fake (3, 3):   inside no real ball (nearest real (1,1) at 2.83); its own ball (radius 3.905, the
    #                distance to (0.5, 0)) contains (1,1) 2.83, (1,0) 3.61, (0,1) 3.61, not (0,0) 4.24.
    # fake (0, 0.2): inside the balls of (0,0) (0.2) and (0,1) (0.8); its own radius is 0.539, which
    #                contains (0,0).
    fake = np.array([[0.5, 0.0], [3.0, 3.0], [0.0, 0.2]])
    got = quality.prdc(REAL, fake, k=1)
    assert got["precision"] == pytest.approx(2 / 3)           # (0.5,0) and (0,0.2) are in real balls
    assert got["density"] == pytest.approx((2 + 0 + 2) / 3)   # (1/k) * mean count of real balls
    assert got["recall"] == pytest.approx(1.0)                # the outlier's big ball recalls 3 reals
    # coverage: nearest fakes of (0,0) 0.2, (1,0) 0.5, (0,1) 0.8 are < 1; (1,1)'s nearest is 1.118.
    assert got["coverage"] == pytest.approx(3 / 4)


def test_prdc_hand_computed_disjoint_and_k2():
    far = np.array([[10.0, 10.0], [10.0, 10.1]])
    assert quality.prdc(REAL, far, k=1) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # k = 2: real radii are 1 (second neighbour of each corner is also at distance 1).
    # fake (0.5, 0.5) is at 0.707 of all four corners: in 4 balls; fake (0.5, -0.2) is at 0.539 of
    # (0,0) and (1,0), 1.3 of the others: in 2 balls; fake (5, 5) in none.
    fake = np.array([[0.5, 0.5], [0.5, -0.2], [5.0, 5.0]])
    got = quality.prdc(REAL, fake, k=2)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["density"] == pytest.approx((4 + 2 + 0) / 2 / 3)
    assert got["coverage"] == pytest.approx(1.0)  # every corner has (0.5, 0.5) within 0.707 < 1
    # fake radii (2nd neighbour): (0.5,0.5) -> (5,5) at 6.36; (0.5,-0.2) -> (5,5) at 7.37;
    # (5,5) -> (0.5,-0.2) 6.88. (5,5)'s ball reaches (1,1) 5.66, (1,0) 6.40, (0,1) 6.40, not (0,0) 7.07;
    # (0.5,0.5)'s ball (6.36) contains every corner: recall 1.
    assert got["recall"] == pytest.approx(1.0)


def test_prdc_chunking_matches_unchunked(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.5
    full = quality.prdc(real, fake, k=3)
    monkeypatch.setattr(quality, "_CHUNK", 7)
    assert quality.prdc(real, fake, k=3) == full
    assert 0 < full["precision"] < 1 and 0 < full["coverage"] < 1


def test_compute_names_and_suffix():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(30, 4)), rng.normal(size=(25, 4)) + 0.3
    got = quality.compute(real, fake, "fid,pr", suffix="_domain", k=3)
    assert set(got) == {"fid_domain", "precision_domain", "recall_domain", "density_domain", "coverage_domain"}
    assert got["fid_domain"] == quality.fid(real, fake)
    assert got["coverage_domain"] == quality.prdc(real, fake, k=3)["coverage"]
    kid = quality.compute(real, fake, ["kid"], kid_subset_size=10, kid_subsets=5, seed=2)
    assert (kid["kid"], kid["kid_std"]) == quality.kid(real, fake, subset_size=10, num_subsets=5, seed=2)
    with pytest.raises(ValueError, match="subset of"):
        quality.parse_metrics("fid,is")


def test_class_agreement_counts_and_intervals_by_hand():
    fake_labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    fake_pred = np.array([0, 0, 1, 0, 1, 0, 2, 2, 2, 2])
    real_labels, real_pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    out = quality.class_agreement(fake_pred, fake_labels, real_pred, real_labels, ["a", "b", "c"], num_bootstrap=500)
    assert [out[n]["agreement"] for n in "abc"] == [0.75, 0.5, 1.0]
    assert [out[n]["agreement_real"] for n in "abc"] == [0.5, 1.0, 0.0]
    assert out["c"]["agreement_ci"] == [1.0, 1.0]  # every resample agrees
    lo, hi = out["a"]["agreement_ci"]
    assert 0.0 <= lo < 0.75 < hi <= 1.0
    empty = quality.class_agreement(fake_pred, fake_labels, None, None, ["a", "b", "c", "d"])
    assert np.isnan(empty["d"]["agreement"]) and "agreement_real" not in empty["a"]
