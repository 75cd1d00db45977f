"""Labelled sets: labels CSV (single/multi-label, groups), bad files named, relabel, phantoms."""
import numpy as np
import pytest
from PIL import Image

from configs import classifier_liver
from jaxmedgan.data import labeled, phantoms


def _write(tmp_path, rows, size=8):
    for name in {r.split(",")[0] for r in rows[1:]}:
        Image.fromarray(np.full((size, size), 128, np.uint8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "labels.csv")


def test_single_and_multi_label_csv_with_groups(tmp_path):
    path = _write(tmp_path, ["file,label,group", "a.png,cyst,p1", "b.png,hemangioma,p1", "c.png,cyst,p2"])
    data = labeled.read_labels_csv(path, ("cyst", "metastasis", "hemangioma"), image_size=8)
    assert data.targets.tolist() == [0, 2, 0] and data.groups.tolist() == [0, 0, 1]
    assert data.images.shape == (3, 8, 8, 1) and abs(float(data.images.mean()) - (128 / 127.5 - 1)) < 1e-6
    path = _write(tmp_path, ["file,label", "a.png,effusion|nodule", "b.png,", "c.png,nodule"])
    data = labeled.read_labels_csv(path, ("effusion", "nodule"), multi_label=True)
    np.testing.assert_array_equal(data.targets, [[1, 1], [0, 0], [0, 1]])
    assert data.groups is None and data.group_ids().tolist() == [0, 1, 2]
    assert data.class_counts().tolist() == [1, 2]


def test_bad_csv_files_are_named(tmp_path):
    path = _write(tmp_path, ["file,label", "a.png,cyst", "b.png,adenoma"])
    with pytest.raises(ValueError, match=r"labels.csv row 3: unknown class name 'adenoma'; expected one of "
                                         r"\['cyst', 'metastasis', 'hemangioma'\]"):
        labeled.read_labels_csv(path, phantoms.CLASS_NAMES)
    (tmp_path / "bad.csv").write_text("image,class\na.png,cyst\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['file', 'label'\]"):
        labeled.read_labels_csv(str(tmp_path / "bad.csv"), phantoms.CLASS_NAMES)
    path = _write(tmp_path, ["file,label", "a.png,cyst"])
    with pytest.raises(ValueError, match=r"a.png: image shape \(8, 8, 1\).*\(16, 16, 1\)"):
        labeled.read_labels_csv(path, phantoms.CLASS_NAMES, image_size=16)
    (tmp_path / "missing.csv").write_text("file,label\nnope.png,cyst\n")
    with pytest.raises(FileNotFoundError, match="missing.csv row 2: image .*nope.png"):
        labeled.read_labels_csv(str(tmp_path / "missing.csv"), phantoms.CLASS_NAMES)


def test_phantom_sets_match_the_tfds_copy_and_relabel():
    c = classifier_liver.get_config()
    c.data.image_size = 16
    c.data.counts = (2, 3, 1)
    data = labeled.load(c, "train")
    raw, labels = phantoms.generate((2, 3, 1), phantoms.TRAIN_SEED, 16)
    assert data.targets.tolist() == labels.tolist()
    np.testing.assert_allclose(data.images, raw, atol=1 / 127.5)  # uint8 round trip, as stored on disk
    assert np.allclose(data.images * 127.5 + 127.5, np.round(data.images * 127.5 + 127.5), atol=1e-3)
    merged = labeled.relabel(data, "benign:cyst,hemangioma;malignant:metastasis")
    assert merged.class_names == ("benign", "malignant") and merged.targets.tolist() == [0, 0, 1, 1, 1, 0]
    with pytest.raises(ValueError, match=r"leaves classes \['hemangioma'\] unmapped"):
        labeled.relabel(data, "benign:cyst;malignant:metastasis")
    with pytest.raises(ValueError, match="unknown class 'adenoma'"):
        labeled.relabel(data, "x:cyst,adenoma;y:metastasis,hemangioma")


def test_phantom_chest_is_multi_label_and_matches_its_tfds_copy(tmp_path):
    from configs import classifier_chest
    from jaxmedgan.data import chest_phantoms, tfds_builders

    c = classifier_chest.get_config()
    c.data.image_size, c.data.num_train, c.data.num_test = 16, 6, 3
    c.data.data_dir = str(tmp_path)
    train, test = labeled.load(c, "train"), labeled.load(c, "test")
    assert train.multi_label and train.class_names == chest_phantoms.FINDING_NAMES
    assert train.targets.shape == (6, 5) and len(test) == 3 and labeled.has_split(c, "test")
    ref, ref_t = chest_phantoms.generate(6, chest_phantoms.TRAIN_SEED, 16)
    np.testing.assert_array_equal(train.targets, ref_t)
    np.testing.assert_allclose(train.images, ref, atol=1 / 127.5)
    d = tfds_builders.build_dataset("phantom-chest", str(tmp_path), image_size=16, num_examples=(6, 3))
    tf_images, tf_targets = tfds_builders.load_arrays(d, "phantom-chest", "test")
    np.testing.assert_array_equal(tf_images, test.images)  # the same uint8 round trip
    np.testing.assert_array_equal(tf_targets, test.targets)
    assert not np.allclose(train.images[:3], test.images)  # distinct seeds
    c.data.findings = ("nodule", "cardiomegaly")
    sub = labeled.load(c, "train")
    np.testing.assert_array_equal(sub.targets, ref_t[:, [2, 0]])
    c.data.findings = ("nodule", "fracture")
    with pytest.raises(ValueError, match=r"unknown phantom-chest finding\(s\) \['fracture'\]"):
        labeled.load(c, "train")


def test_label_mask_follows_subset_and_concat():
    images = np.zeros((3, 4, 4, 1), np.float32)
    targets = np.array([[1, 0], [0, 0], [1, 1]], np.float32)
    mask = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    a = labeled.LabeledSet(images, targets, ("a", "b"), multi_label=True, mask=mask)
    np.testing.assert_array_equal(a.subset(np.array([2, 0])).mask, mask[[2, 0]])
    b = labeled.LabeledSet(images[:1], targets[:1], ("a", "b"), multi_label=True)
    np.testing.assert_array_equal(labeled.concat(a, b).target_mask(), np.concatenate([mask, np.ones((1, 2))]))
    with pytest.raises(ValueError, match=r"Label mask must be \[N,K\]"):
        labeled.LabeledSet(images, targets, ("a", "b"), multi_label=True, mask=mask[:2])
