"""CheXpert and ChestX-ray14 loaders on tiny fixtures written in the exact public layouts."""
import os

import numpy as np
import pytest
from PIL import Image

from jaxmedgan.data import chest, labeled

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")
CXR14_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


def _img(path, value, shape=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _chexpert_row(rel, view, findings: dict, sex="Female", age=60, ap="AP"):
    """One train.csv row; `findings` maps a finding column to its cell ('1.0', '-1.0', '0.0', '')."""
    cells = [findings.get(name, "") for name in chest.CHEXPERT_FINDINGS]
    return ",".join([rel, sex, str(age), view, ap if view == "Frontal" else "", *cells])


def write_chexpert(tmp_path, bad_cell=None):
    """CheXpert-v1.0-small/{train,valid}.csv + JPEGs, Path relative to the root's parent (official)."""
    root = tmp_path / "CheXpert-v1.0-small"
    rows = [
        ("train/patient00001/study1/view1_frontal.jpg", "Frontal", {"Cardiomegaly": "1.0", "Edema": "-1.0"}, 40),
        ("train/patient00001/study1/view2_lateral.jpg", "Lateral", {"Cardiomegaly": "1.0"}, 60),
        ("train/patient00002/study1/view1_frontal.jpg", "Frontal",
         {"No Finding": "1.0", "Pleural Effusion": "0.0", "Atelectasis": "-1"}, 80),
        ("train/patient00003/study2/view1_frontal.jpg", "Frontal",
         {"Pleural Effusion": bad_cell or "1.0", "Consolidation": "-1.0"}, 120),
    ]
    lines = [CHEXPERT_HEADER]
    for rel, view, f, value in rows:
        _img(str(root / rel), value, (14, 11))
        lines.append(_chexpert_row(f"CheXpert-v1.0-small/{rel}", view, f))
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    _img(str(root / "valid/patient64541/study1/view1_frontal.jpg"), 200, (9, 13))
    (root / "valid.csv").write_text(CHEXPERT_HEADER + "\n" + _chexpert_row(
        "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Frontal",
        {"Edema": "1.0", "Atelectasis": "0.0"}) + "\n")
    return str(root)


def write_chestxray14(tmp_path, lists=True, extra_row=None):
    """Data_Entry_2017.csv (trailing-comma header), images in images_001/images/, split lists."""
    root = tmp_path / "cxr14"
    entries = [("00000001_000.png", "Cardiomegaly", 1), ("00000001_001.png", "Cardiomegaly|Emphysema|Effusion", 1),
               ("00000002_000.png", "No Finding", 2), ("00000003_000.png", "Nodule|Pneumothorax", 3),
               ("00000004_000.png", "Hernia", 4)]
    lines = [CXR14_HEADER]
    for i, (name, labels, patient) in enumerate(entries):
        _img(str(root / "images_001" / "images" / name), 20 * i, (16, 16))
        lines.append(f"{name},{labels},{i},{patient},58,M,PA,2682,2749,0.143,0.143")
    if extra_row:
        lines.append(extra_row)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    if lists:
        (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
        (root / "test_list.txt").write_text("00000003_000.png\n00000004_000.png\n")
    return str(root)


def test_chexpert_uncertainty_policies_views_and_patients(tmp_path):
    root = write_chexpert(tmp_path)
    findings = ("Cardiomegaly", "Edema", "Atelectasis", "Consolidation", "Pleural Effusion")
    expect_ones = [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1]]
    uncertain = np.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]], bool)
    for policy in chest.UNCERTAINTY:
        data = labeled.load_chest("chexpert", root, "train", findings=findings, uncertainty=policy, image_size=8)
        assert data.multi_label and data.class_names == findings and data.images.shape == (4, 8, 8, 1)
        want = np.array(expect_ones, np.float32)
        if policy != "u_ones":
            want[uncertain] = 0
        np.testing.assert_array_equal(data.targets, want)
        if policy == "u_ignore":
            np.testing.assert_array_equal(data.mask, (~uncertain).astype(np.float32))
        else:
            assert data.mask is None
        assert data.groups.tolist() == [1, 1, 2, 3]
    np.testing.assert_allclose(data.images[:, 0, 0, 0], np.array([40, 60, 80, 120]) / 127.5 - 1, atol=1e-5)
    frontal = labeled.load_chest("chexpert", root, "train", findings=findings, frontal_only=True, image_size=8)
    assert len(frontal) == 3 and frontal.groups.tolist() == [1, 2, 3]
    valid = labeled.load_chest("chexpert", root, "test", image_size=8)  # default: the 5 competition findings
    assert valid.class_names == chest.DEFAULT_FINDINGS["chexpert"] and valid.groups.tolist() == [64541]
    np.testing.assert_array_equal(valid.targets, [[0, 0, 0, 1, 0]])
    # Path relative to the root itself works too.
    alt = tmp_path / "alt"
    os.makedirs(alt / "train/patient00009/study1")
    os.replace(os.path.join(root, "train/patient00001/study1/view1_frontal.jpg"),
               alt / "train/patient00009/study1/view1_frontal.jpg")
    (alt / "train.csv").write_text(CHEXPERT_HEADER + "\n" + _chexpert_row(
        "train/patient00009/study1/view1_frontal.jpg", "Frontal", {"Edema": "1.0"}) + "\n")
    data = labeled.load_chest("chexpert", str(alt), image_size=8)
    assert data.groups.tolist() == [9] and "test" not in chest.index_splits("chexpert", str(alt))


def test_chexpert_errors_name_the_csv_and_row(tmp_path):
    root = write_chexpert(tmp_path, bad_cell="2.0")
    with pytest.raises(ValueError, match=r"train.csv row 5: column 'Pleural Effusion' is '2.0'; expected 1.0, "
                                         r"0.0, -1.0 or blank"):
        chest.index_splits("chexpert", root)
    root = write_chexpert(tmp_path)
    os.remove(os.path.join(root, "train/patient00002/study1/view1_frontal.jpg"))
    with pytest.raises(FileNotFoundError, match=r"train.csv row 4: image .*patient00002.*not found"):
        chest.index_splits("chexpert", root)
    with pytest.raises(ValueError, match=r"unknown \['Effusion'\]"):
        chest.index_splits("chexpert", root, findings=("Effusion",))
    with pytest.raises(ValueError, match="uncertainty='u_maybe'"):
        chest.index_splits("chexpert", root, uncertainty="u_maybe")
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match=r"CheXpert labels file .*x/train.csv' does not exist"):
        chest.index_splits("chexpert", str(tmp_path / "x"))
    (tmp_path / "x" / "train.csv").write_text("Path,Sex,Age\na.jpg,Male,3\n")
    with pytest.raises(ValueError, match=r"train.csv: missing column\(s\) \['Frontal/Lateral', 'Atelectasis'"):
        chest.index_splits("chexpert", str(tmp_path / "x"))


def test_chestxray14_pipe_separated_findings_lists_and_patients(tmp_path):
    root = write_chestxray14(tmp_path)
    findings = ("Effusion", "Cardiomegaly", "Pneumothorax")
    train = labeled.load_chest("chestxray14", root, "train", findings=findings, image_size=8)
    test = labeled.load_chest("chestxray14", root, "test", findings=findings, image_size=8)
    np.testing.assert_array_equal(train.targets, [[0, 1, 0], [1, 1, 0], [0, 0, 0]])  # 'No Finding' = zeros
    np.testing.assert_array_equal(test.targets, [[0, 0, 1], [0, 0, 0]])  # Hernia not selected
    assert train.groups.tolist() == [1, 1, 2] and test.groups.tolist() == [3, 4]
    assert train.multi_label and train.images.shape == (3, 8, 8, 1) and train.mask is None
    np.testing.assert_allclose(test.images[:, 3, 3, 0], np.array([60, 80]) / 127.5 - 1, atol=1e-5)
    every = labeled.load_chest("chestxray14", root, "train", image_size=8)
    assert every.class_names == chest.CXR14_FINDINGS and every.targets.sum() == 4  # Cardio x2, Emph, Eff


def test_chestxray14_without_lists_holds_out_whole_patients(tmp_path):
    root = write_chestxray14(tmp_path, lists=False)
    assert list(chest.index_splits("chestxray14", root)) == ["train"]
    for seed in range(4):
        splits = chest.index_splits("chestxray14", root, holdout_fraction=0.5, seed=seed)
        train, test = set(splits["train"].patients), set(splits["test"].patients)
        assert not train & test and train | test == {1, 2, 3, 4} and len(test) == 2
    a = chest.index_splits("chestxray14", root, holdout_fraction=0.5, seed=1)["test"].patients
    b = chest.index_splits("chestxray14", root, holdout_fraction=0.5, seed=1)["test"].patients
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="has its own test split"):
        chest.index_splits("chestxray14", write_chestxray14(tmp_path / "l"), holdout_fraction=0.5)


def test_chestxray14_errors_name_the_csv_and_row(tmp_path):
    root = write_chestxray14(tmp_path, extra_row="00000005_000.png,Cardiomegaly|Pneumonitis,0,5,3,F,AP,1,1,1,1")
    with pytest.raises(ValueError, match=r"Data_Entry_2017.csv row 7: unknown finding 'Pneumonitis'"):
        chest.index_splits("chestxray14", root)
    root = write_chestxray14(tmp_path / "b", extra_row="00000009_000.png,No Finding,0,9,3,F,AP,1,1,1,1")
    with pytest.raises(FileNotFoundError, match=r"row 7: image '00000009_000.png' not found"):
        chest.index_splits("chestxray14", root)
    root = write_chestxray14(tmp_path / "c")
    with open(os.path.join(root, "test_list.txt"), "a") as f:
        f.write("99999999_000.png\n")
    with pytest.raises(ValueError, match=r"test_list.txt: 1 file name\(s\) not in .*Data_Entry_2017.csv"):
        chest.index_splits("chestxray14", root)


def test_config_sources_build_a_tfds_copy_with_groups_and_masks(tmp_path):
    """labeled.load / datasets.load with config.data.source = 'chexpert' | 'chestxray14'."""
    from configs import classifier_chest
    from jaxmedgan.data import datasets, labeled

    c = classifier_chest.get_config()
    c.data.source, c.data.image_dir, c.data.data_dir = "chexpert", write_chexpert(tmp_path), str(tmp_path / "tfds")
    c.data.image_size, c.data.uncertainty = 8, "u_ignore"
    c.data.findings = ("Edema", "Consolidation")
    data = labeled.load(c, "train")
    assert c.data.frontal_only  # the config's default
    direct = labeled.load_chest("chexpert", c.data.image_dir, findings=c.data.findings, uncertainty="u_ignore",
                        frontal_only=True, image_size=8)
    assert len(direct) == 3 and (direct.mask == 0).sum() == 2
    assert data.multi_label and data.class_names == ("Edema", "Consolidation")
    np.testing.assert_array_equal(data.targets, direct.targets)
    np.testing.assert_array_equal(data.mask, direct.mask)
    np.testing.assert_array_equal(data.groups, direct.groups)
    assert np.abs(data.images - direct.images).max() <= 1 / 255 + 1e-6  # uint8 storage
    assert labeled.has_split(c, "test") and len(labeled.load(c, "test")) == 1
    c.data.source, c.data.image_dir, c.data.findings = "chestxray14", write_chestxray14(tmp_path), ()
    c.model.num_classes = 0
    train, (images, labels) = datasets.load(c)
    assert len(train) == 3 and images.shape == (2, 8, 8, 1) and labels.shape == (2, 14)
    assert train[1]["label"].tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
