"""Privacy audits: AUC and nearest neighbours vs references; copying is detected; CLI end to end."""
import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxmedgan import main as cli
from jaxmedgan.studies import audit
from tests.studies.inversion_test import random_acgan_workdir, random_conv_extractor
from tests.trainers.gan_train_test import train


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 5, 40).astype(float)
    neg = rng.integers(0, 4, 30).astype(float)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[pos, neg])
    assert audit.roc_auc(pos, neg) == pytest.approx(expected)


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(7, 3, 3, 1)), rng.normal(size=(11, 3, 3, 1))
    d, i = audit.nearest(q, r, chunk=3)
    brute = np.linalg.norm(q.reshape(7, 1, -1) - r.reshape(1, 11, -1), axis=-1)
    np.testing.assert_array_equal(i, brute.argmin(1))
    np.testing.assert_allclose(d, brute.min(1), rtol=1e-9)


def test_a_copying_generator_is_flagged_and_a_fresh_one_is_not():
    rng = np.random.default_rng(2)
    train, heldout = rng.normal(size=(60, 4, 4, 1)), rng.normal(size=(60, 4, 4, 1))
    copies = train[rng.integers(0, 60, 40)] + 0.01 * rng.normal(size=(40, 4, 4, 1))
    fresh = rng.normal(size=(40, 4, 4, 1))
    copied = audit.memorisation(copies, train, heldout)
    clean = audit.memorisation(fresh, train, heldout)
    assert copied["ratio_quantiles"]["p50"] < 0.1 and copied["fraction_closer_to_train"] > 0.95
    assert 0.7 < clean["ratio_quantiles"]["p50"] < 1.3 and 0.25 < clean["fraction_closer_to_train"] < 0.75
    # About half the training images were copied (40 draws of 60): AUC ~ 0.5 + 0.49 / 2.
    assert audit.membership_inference(train, heldout, copies)["distance_attack_auc"] > 0.65
    assert 0.3 < audit.membership_inference(train, heldout, fresh)["distance_attack_auc"] < 0.7


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_audit_command_on_a_trained_workdir(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train(wd, tmp_path / "data", steps=2, every=2) == 0
    out = tmp_path / "audit"
    assert cli.main(["jaxmedgan", "privacy", "audit", "--workdir", str(wd), "--num", "40", "--out", str(out)]) == 0
    report = json.load(open(out / "audit.json"))
    assert report["dp_epsilon"] is None and report["checkpoint_step"] == 2
    assert report["memorisation"]["reference_size"] == 90  # held-out phantoms; train subsampled to match
    assert 0 <= report["membership_inference"]["d_score_attack_auc"] <= 1
    assert os.path.exists(out / "closest_pairs.png") and "Membership inference" in capsys.readouterr().out


def test_auc_interval_covers_the_estimate_and_separates_a_copier():
    rng = np.random.default_rng(3)
    same = audit.auc_with_ci(rng.normal(size=60), rng.normal(size=60), num_bootstrap=200)
    assert same["ci95"][0] < 0.5 < same["ci95"][1] and same["ci95"][0] <= same["auc"] <= same["ci95"][1]
    # Members reproduced with smaller distances (score = minus the distance): AUC 1, interval [1, 1].
    apart = audit.auc_with_ci(-rng.uniform(0, 1, 30), -rng.uniform(2, 3, 30), num_bootstrap=100)
    assert apart == {"auc": 1.0, "ci95": [1.0, 1.0]}


def test_audit_with_feature_neighbours_and_inversion(tmp_path, capsys):
    """Random-weight tiny ACGAN (no training): the report's new sections and grids, old keys kept."""
    acgan_workdir = random_acgan_workdir(tmp_path)
    out = tmp_path / "audit"
    report = audit.audit(str(acgan_workdir), str(out), num=16, num_pairs=4, extractor=random_conv_extractor(),
                         inversion_steps=5, inversion_num=6, num_bootstrap=50)
    assert {"memorisation", "membership_inference", "canary_audit", "dp_epsilon"} <= set(report)
    f = report["feature_memorisation"]
    assert f["features"] == "random conv (test)" and f["reference_size"] == 90 and 0 <= f["fraction_closer_to_train"] <= 1
    v = report["inversion"]
    assert v["num_each"] == 6 and v["space"] == "z" and v["class_mode"] == "label" and v["steps"] == 5
    for key in ("auc_distance", "auc_pixel_mse"):
        lo, hi = v[key]["ci95"]
        assert 0 <= lo <= v[key]["auc"] <= hi <= 1
    best = [b["distance"] for b in v["best_reproduced_train"]]
    assert len(best) == 4 and best == sorted(best)
    assert v["distance_train"]["mean"] < v["initial_distance_train"]["mean"]
    saved = json.load(open(out / "audit.json"))
    assert saved["inversion"]["auc_distance"]["auc"] == pytest.approx(v["auc_distance"]["auc"])
    for png in ("closest_pairs.png", "feature_pairs.png", "inversion_best.png"):
        assert os.path.exists(out / png), png
    assert "Is it copying?" in open(out / "audit.md").read()
    # The CLI without a feature extractor: inversion on pixels only, no feature section.
    assert cli.main(["jaxmedgan", "privacy", "audit", "--workdir", str(acgan_workdir), "--num", "8", "--out",
                     str(tmp_path / "cli"), "--inversion-steps", "2", "--inversion-num", "3"]) == 0
    saved = json.load(open(tmp_path / "cli" / "audit.json"))
    assert saved["feature_memorisation"] is None and saved["inversion"]["features"] is None
    assert "Membership-inference AUC" in capsys.readouterr().out
