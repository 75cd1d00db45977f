"""Metrics against scikit-learn / statsmodels / scipy on fixed predictions; folds and bootstrap."""
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from statsmodels.stats.contingency_tables import mcnemar

from jaxmedgan.evaluators import folds, metrics

NAMES = ("cyst", "metastasis", "hemangioma")


def _fixed_predictions(n=60, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs = np.round(probs, 2)  # ties, as real predictions have
    return labels, probs / probs.sum(1, keepdims=True)


def test_single_label_metrics_match_sklearn():
    labels, probs = _fixed_predictions()
    m = metrics.single_label_metrics(labels, probs, NAMES)
    preds = probs.argmax(1)
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(labels, preds, labels=[0, 1, 2]))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    sens = skm.recall_score(labels, preds, average=None, labels=[0, 1, 2])
    mcm = skm.multilabel_confusion_matrix(labels, preds, labels=[0, 1, 2])  # [[TN, FP], [FN, TP]] per class
    spec = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])
    np.testing.assert_allclose(list(m["sensitivity"].values()), sens)
    np.testing.assert_allclose(list(m["specificity"].values()), spec)
    assert m["macro_sensitivity"] == pytest.approx(sens.mean())
    assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    for c, name in enumerate(NAMES):
        assert m["auc"][name] == pytest.approx(skm.roc_auc_score(labels == c, probs[:, c]))


def test_roc_curve_matches_sklearn_and_integrates_to_auc():
    labels, probs = _fixed_predictions(seed=1)
    y, s = labels == 1, probs[:, 1]
    fpr, tpr, thr = metrics.roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(y, s))
    assert np.isnan(metrics.roc_auc(np.ones(4, bool), np.arange(4.0)))  # undefined, not 0 or 1


def test_multi_label_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    targets = (rng.random((50, 3)) < [0.2, 0.5, 0.3]).astype(np.float32)
    probs = np.clip(0.6 * targets + 0.5 * rng.random((50, 3)), 0, 1).round(2)
    m = metrics.multi_label_metrics(targets, probs, ("effusion", "nodule", "cardiomegaly"))
    np.testing.assert_allclose(list(m["auc"].values()), skm.roc_auc_score(targets, probs, average=None))
    assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(targets, probs, average="macro"))
    called = probs >= 0.5
    np.testing.assert_allclose(list(m["sensitivity"].values()), skm.recall_score(targets, called, average=None))
    mcm = skm.multilabel_confusion_matrix(targets, called)
    np.testing.assert_array_equal(m["confusion_matrix"]["nodule"], mcm[1])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(targets, called))  # exact match (subset)


def test_mcnemar_and_binomial_match_statsmodels_and_scipy():
    rng = np.random.default_rng(3)
    a = rng.random(80) < 0.7
    b = np.where(rng.random(80) < 0.3, ~a, a)
    r = metrics.mcnemar_exact(a, b)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert r["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    for k, n in [(0, 5), (3, 10), (7, 10), (12, 30), (15, 30)]:
        assert metrics.binomial_two_sided_p(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue)
    assert metrics.mcnemar_exact(a, a)["p_value"] == 1.0


def test_paired_permutation_test_exact_and_sampled():
    x = np.array([0.70, 0.72, 0.68, 0.75])
    y = x + np.array([0.05, 0.03, 0.04, 0.06])  # every difference positive
    r = metrics.paired_permutation_test(x, y)
    assert r["exact"] and r["p_value"] == pytest.approx(2 / 16)  # all + or all - of 2^4 patterns
    r = metrics.paired_permutation_test(np.zeros(20), np.full(20, 0.1), num_permutations=2000, seed=1)
    assert not r["exact"] and r["p_value"] < 0.01


def test_bootstrap_is_seeded_and_resamples_whole_groups():
    labels, probs = _fixed_predictions()
    correct = probs.argmax(1) == labels
    groups = np.arange(60) // 2

    def acc(idx):
        return float(correct[idx].mean())

    ci = metrics.bootstrap_ci(acc, groups, num_samples=300, seed=4)[""]
    assert ci == metrics.bootstrap_ci(acc, groups, num_samples=300, seed=4)[""]
    assert ci[0] < correct.mean() < ci[1]
    sizes = set()
    metrics.bootstrap_ci(lambda idx: sizes.add(len(idx)) or 0.0, groups, num_samples=20)
    assert sizes == {60}  # 30 groups of 2 drawn: always 60 examples
    multi = metrics.bootstrap_ci(lambda idx: {"acc": acc(idx), "nan": float("nan")}, groups, num_samples=50)
    assert set(multi) == {"acc", "nan"} and np.isnan(multi["nan"][0])


def test_folds_are_disjoint_cover_and_stratified():
    labels = np.array([0] * 53 + [1] * 64 + [2] * 65)  # the study's 182 lesions
    splits = folds.stratified_group_kfold(labels, None, 3, seed=0)
    tests = [t for _, t in splits]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(182))
    for train, test in splits:
        assert not set(train) & set(test) and len(train) + len(test) == 182
    counts = np.array([np.bincount(labels[t], minlength=3) for t in tests])
    assert (counts.max(0) - counts.min(0) <= 1).all(), counts
    other = folds.stratified_group_kfold(labels, None, 3, seed=1)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(splits, other))
    again = folds.stratified_group_kfold(labels, None, 3, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_groups_are_never_split_and_folds_stay_balanced():
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(40), rng.integers(1, 5, 40))  # patients with 1-4 images
    group_label = rng.integers(0, 2, 40)
    labels = group_label[groups]
    labels[::7] = 1 - labels[::7]  # some patients have images of both classes
    splits = folds.stratified_group_kfold(labels, groups, 4, seed=0)
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    sizes = [len(t) for _, t in splits]
    assert max(sizes) - min(sizes) <= 8, sizes
    for _, test in splits:
        assert 0.2 < labels[test].mean() < 0.8
    multi = np.stack([labels, labels[::-1]], 1).astype(np.float32)
    for train, test in folds.stratified_group_kfold(multi, groups, 3, seed=0, multi_label=True):
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(ValueError, match=r"num_folds=50 must be in \[2, 40\]"):
        folds.stratified_group_kfold(labels, groups, 50, seed=0)
