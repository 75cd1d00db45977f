"""Multi-label downstream study (configs/downstream_chest.py): multi-hot synthetic sources, per-finding AUC."""
import csv
import json
import os

import numpy as np
import pytest

from configs import downstream_chest
from jaxmedgan import images
from jaxmedgan.data import chest_phantoms, labeled
from jaxmedgan.evaluators import metrics
from jaxmedgan.studies import downstream, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "downstream_chest.py")
FINDINGS = chest_phantoms.FINDING_NAMES
TINY = ["--config.data.image_size=16", "--config.data.num_train=24", "--config.model.features=(4,)",
        "--config.model.stem_stride=1", "--config.model.dropout=0.0", "--config.train.batch_size=8",
        "--config.train.steps=2", "--config.mesh.data=1", "--config.optim.warmup_steps=1",
        "--config.downstream.num_folds=2", "--config.downstream.seeds=(0,)",
        "--config.downstream.experiments=('real','real+synthetic','synthetic')",
        "--config.downstream.synthetic_per_class=3", "--config.downstream.bootstrap_samples=20",
        "--config.train.quiet=True"]


def _real(num=24):
    c = downstream_chest.get_config()
    c.data.image_size, c.data.num_train = 16, num
    return labeled.load(c, "train")


def _lco_npz(path, n=12, seed=4242, names=FINDINGS, success=None):
    """An LCO-style archive: other phantom chests (a different seed), multi-hot f32 labels, class_names."""
    x, y = chest_phantoms.generate(n, seed, 16)
    columns = [FINDINGS.index(f) for f in names]
    extra = {} if success is None else {"success": np.asarray(success, bool)}
    np.savez(path, images=images.to_uint8(x), labels=y[:, columns], class_names=np.asarray(names), **extra)
    return str(path), y


def test_tiny_chest_study_reports_per_finding_auc_for_every_finding(tmp_path, capsys):
    syn, _ = _lco_npz(tmp_path / "samples.npz", names=FINDINGS[::-1])  # columns named, in another order
    out = tmp_path / "report"
    code = downstream.downstream_command(["downstream", "--config", CONFIG, *TINY, "--synthetic", syn,
                                          "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "per-finding AUC: cardiomegaly" in captured.out
    report = json.load(open(out / "report.json"))
    assert report["task"]["multi_label"] and report["task"]["class_names"] == list(FINDINGS)
    assert set(report["experiments"]) == {"real", "real+synthetic", "synthetic"}
    assert report["design"]["synthetic_per_class_means"] == "images per distinct label vector"
    syn_info = report["synthetic"]
    assert sum(syn_info["label_vectors"].values()) == syn_info["num_images"]
    assert max(syn_info["label_vectors"].values()) <= 3  # synthetic_per_class caps each label vector
    real = _real()
    sizes = report["design"]["test_sizes"][0]
    assert sum(sizes) == len(real)
    for name, r in report["experiments"].items():
        auc = r["metrics"]["auc"]
        assert set(auc) == set(FINDINGS), name
        for f in FINDINGS:
            assert auc[f] is not None and 0.0 <= auc[f] <= 1.0, (name, f)
            assert len(r["ci95"][f"auc/{f}"]) == 2
        assert r["metrics"]["macro_auc"] == pytest.approx(np.mean([auc[f] for f in FINDINGS]))
        assert len(r["metrics"]["confusion_matrix"]) == len(FINDINGS)
        assert len(report["figures"][name]["confusion"]) == len(FINDINGS)
    assert report["experiments"]["real+synthetic"]["train_size_mean"] == pytest.approx(
        len(real) / 2 + syn_info["num_images"])
    md = open(out / "report.md").read()
    assert "## Per-finding AUC" in md
    for f in FINDINGS:
        row = next(line for line in md.splitlines() if line.startswith(f"| {f} |"))
        assert row.count("|") == 5  # the finding and one AUC per experiment
    assert "positives per finding" in md and "per distinct label vector" in md
    assert "multi-label" in syn_info["diversity"]["skipped"]  # no class to measure diversity within
    assert "Synthetic source diversity: not computed (multi-label" in md
    assert os.path.isfile(out / report["figures"]["real"]["roc"])


def test_multi_hot_npz_columns_follow_the_real_findings_and_success_filter(tmp_path):
    real = _real(8)
    path, y = _lco_npz(tmp_path / "s.npz", n=10, names=FINDINGS[::-1], success=[1, 0] * 5)
    got = synthetic.load(path, real, per_class=100)
    np.testing.assert_array_equal(got.targets, y)  # columns reordered back to the real set's order
    assert got.multi_label and got.class_names == FINDINGS and len(got) == 10
    kept = synthetic.load(path, real, per_class=100, success_only=True)
    np.testing.assert_array_equal(kept.targets, y[::2])
    # A real set over two findings picks those columns from the 5-finding archive.
    two = labeled.LabeledSet(real.images, real.targets[:, [2, 0]], ("nodule", "cardiomegaly"), multi_label=True)
    np.testing.assert_array_equal(synthetic.load(path, two, per_class=100).targets, y[:, [2, 0]])


def test_per_class_caps_each_distinct_label_vector(tmp_path):
    real = _real(8)
    x, _ = chest_phantoms.generate(9, 1, 16)
    vectors = np.array([[0, 0, 0, 0, 0]] * 5 + [[1, 1, 0, 0, 0]] * 3 + [[0, 0, 1, 0, 0]], np.float32)
    np.savez(tmp_path / "v.npz", images=images.to_uint8(x), labels=vectors)
    got = synthetic.load(str(tmp_path / "v.npz"), real, per_class=2)
    assert synthetic.label_vectors(got) == {"none": 2, "cardiomegaly+effusion": 2, "nodule": 1}
    assert synthetic.load(str(tmp_path / "v.npz"), real, per_class=5, seed=3).targets.shape == (9, 5)


def test_multi_label_folder_reads_lco_labels_csv(tmp_path):
    real = _real(8)
    x, y = chest_phantoms.generate(4, 9, 16)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "target", "success"])
        for i in range(4):
            images.save_png(str(tmp_path / f"{i:06d}.png"), images.to_uint8(x[i]))
            w.writerow([f"{i:06d}.png", "|".join(n for n, on in zip(FINDINGS, y[i]) if on), "t", i % 2])
    got = synthetic.load(str(tmp_path), real, per_class=10)
    assert synthetic.kind(str(tmp_path)) == "folder"
    np.testing.assert_array_equal(got.targets, y)  # subsampling keeps the file order
    np.testing.assert_allclose(got.images, images.to_uint8(x) / 127.5 - 1.0, atol=1e-6)
    assert len(synthetic.load(str(tmp_path), real, per_class=10, success_only=True)) == 2


def test_bad_multi_label_synthetic_inputs_fail_clearly(tmp_path):
    real = _real(8)
    x, y = chest_phantoms.generate(3, 2, 16)
    np.savez(tmp_path / "p.npz", images=images.to_uint8(x), labels=y * 0.7)
    with pytest.raises(ValueError, match="0/1 multi-hot"):
        synthetic.load(str(tmp_path / "p.npz"), real, per_class=5)
    np.savez(tmp_path / "m.npz", images=images.to_uint8(x), labels=y[:, :2], class_names=np.asarray(FINDINGS[:2]))
    with pytest.raises(ValueError, match=r"findings \['nodule', 'consolidation', 'pneumothorax'\]"):
        synthetic.load(str(tmp_path / "m.npz"), real, per_class=5)
    np.savez(tmp_path / "k.npz", images=images.to_uint8(x), labels=y[:, :3])
    with pytest.raises(ValueError, match=r"multi-hot \[N, K=5\]"):
        synthetic.load(str(tmp_path / "k.npz"), real, per_class=5)


def test_masked_real_labels_are_skipped_by_the_study_metrics():
    real = _real(12)
    mask = np.ones_like(real.targets)
    mask[::2, 0] = 0.0
    masked = labeled.LabeledSet(real.images, real.targets, real.class_names, True, mask=mask)
    probs = np.random.default_rng(0).uniform(size=real.targets.shape)
    m = downstream._metrics(real.targets, probs, masked, mask)
    ref = metrics.multi_label_metrics(real.targets[1::2, :1], probs[1::2, :1], FINDINGS[:1])
    assert m["auc"]["cardiomegaly"] == pytest.approx(ref["auc"]["cardiomegaly"])
    # Flipping predictions where labels are unknown changes no "correct" decision of McNemar.
    flipped = np.where(mask > 0, probs, 1 - probs)
    np.testing.assert_array_equal(downstream._correct(masked, probs), downstream._correct(masked, flipped))
