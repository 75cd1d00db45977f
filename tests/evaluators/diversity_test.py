"""Intra-class diversity against scipy's pdist, and the ratio's behaviour on known sets."""
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from jaxmedgan.evaluators import diversity


def test_mean_pairwise_distance_matches_scipy():
    x = np.random.default_rng(0).normal(size=(17, 4, 5))
    assert diversity.mean_pairwise_distance(x) == pytest.approx(pdist(x.reshape(17, -1)).mean(), rel=1e-10)
    assert np.isnan(diversity.mean_pairwise_distance(x[:1]))


def test_near_copies_have_a_low_ratio_and_a_ci_that_says_so():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(40, 8, 8))
    labels = np.repeat([0, 1], 20)
    copies = np.concatenate([real[:1] + 0.05 * rng.normal(size=(20, 8, 8)),  # class 0 collapsed
                             rng.normal(size=(20, 8, 8))])  # class 1 as varied as the data
    out = diversity.class_diversity(copies, labels, real, labels, ("a", "b"), num_bootstrap=100)
    a, b = out["per_class"]["a"], out["per_class"]["b"]
    ref_a = pdist(copies[:20].reshape(20, -1)).mean() / pdist(real[:20].reshape(20, -1)).mean()
    assert a["ratio"] == pytest.approx(ref_a, rel=1e-10) and a["ratio"] < 0.1
    assert a["ratio_ci"][0] <= a["ratio"] <= a["ratio_ci"][1] and a["ratio_ci"][1] < 0.2
    assert 0.8 < b["ratio"] < 1.25 and b["ratio_ci"][0] < 1.0 < b["ratio_ci"][1]
    assert out["diversity_ratio"] == pytest.approx((a["ratio"] + b["ratio"]) / 2)
    assert out["diversity_ratio_min"] == a["ratio"]


def test_missing_classes_are_nan_not_errors():
    x = np.zeros((3, 2))
    out = diversity.class_diversity(x, np.array([0, 0, 1]), x, np.array([0, 0, 0]), ("a", "b"), num_bootstrap=0)
    assert np.isnan(out["per_class"]["b"]["ratio"]) and np.isnan(out["per_class"]["a"]["ratio"])  # zero real spread
    with pytest.raises(ValueError, match="differ in shape"):
        diversity.class_diversity(np.zeros((2, 3)), [0, 0], np.zeros((2, 4)), [0, 0], ("a",))
