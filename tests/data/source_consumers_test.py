"""Each user source through each consumer: dataset -> GAN train -> sample / export / evaluate, and
the classifier, all by pointing `data.dataset_dir` at the built dataset (tiny shapes).

One source runs in the default suite (DICOM folder); the others are marked slow.
"""
import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from jaxmedgan import main as cli
from jaxmedgan.data import datasets, stylegan_dataset
from tests.data.readers_test import _write_dicom, _write_png
from tests.trainers.gan_train_test import CONFIG, tiny_overrides

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIFIER = os.path.join(REPO, "configs", "classifier_liver.py")
NAMES = ("benign", "malignant")


def _dicom(root, rng):
    for name in NAMES:
        for i in range(6):
            _write_dicom(str(root / name / f"IM_{i}"), rng.integers(-100, 200, (16, 16)).astype(np.int16),
                         slope=1, intercept=0, center=40, width=400)
    return root, ["--window", "40", "400"]


def _png16(root, rng):
    for name in NAMES:
        for i in range(6):
            _write_png(root / name / f"{i}.png", rng.integers(0, 65535, (16, 16)).astype(np.uint16))
    return root, []


def _npz(root, rng):
    os.makedirs(root)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 14, 14), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(root / "mini.npz", **arrays)
    return root / "mini.npz", ["--resize", "pad", "--classes", ",".join(NAMES)]


def _stylegan(root, rng):
    u8 = rng.integers(0, 256, (12, 16, 16, 1), dtype=np.uint8)
    path = stylegan_dataset.write_stylegan_dataset(str(root) + ".zip", u8, np.arange(12) % 2)
    return path, ["--classes", ",".join(NAMES)]


def _nifti(root, rng):
    for name in NAMES:
        os.makedirs(root / name)
        for v in range(3):
            vol = rng.uniform(0, 500, (16, 16, 3)).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / name / f"case{v}.nii.gz"))
    return root, ["--window", "250", "500"]  # one window: each volume's own min..max would differ


SOURCES = [
    pytest.param("image-folder", _dicom, id="dicom"),
    pytest.param("image-folder", _png16, id="png16", marks=pytest.mark.slow),
    pytest.param("npz", _npz, id="npz", marks=pytest.mark.slow),
    pytest.param("stylegan-folder", _stylegan, id="stylegan", marks=pytest.mark.slow),
    pytest.param("image-folder", _nifti, id="nifti", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("source,make", SOURCES)
def test_source_through_every_consumer(source, make, tmp_path, capsys, monkeypatch):
    image_dir, extra = make(tmp_path / "raw", np.random.default_rng(0))
    holdout = [] if source == "npz" else ["--holdout-fraction", "0.34"]
    assert cli.main(["jaxmedgan", "dataset", "--source", source, "--image-dir", str(image_dir), "--image-size", "16",
                     "--out", str(tmp_path / "ds"), *holdout, *extra]) == 0
    built = capsys.readouterr().out.strip().split()[-1]
    assert datasets.read_info(built)["class_names"] == list(NAMES)
    monkeypatch.chdir(tmp_path)  # later commands run elsewhere: only absolute paths may be used
    # GAN (ACGAN: conditional on the dataset's classes, held-out aux accuracy)
    gan = tmp_path / "gan"
    assert cli.main(["jaxmedgan", "train", "--config", CONFIG, "--workdir", "gan", *tiny_overrides("unused", 2, 2),
                     f"--config.data.dataset_dir={os.path.relpath(built)}"]) == 0
    rows = [json.loads(line) for line in open(gan / "metrics.jsonl")]
    assert any("eval/aux_accuracy" in r for r in rows)
    monkeypatch.chdir(REPO)
    assert cli.main(["jaxmedgan", "sample", "--workdir", str(gan), "--num", "2", "--out", str(tmp_path / "s"),
                     "--class", "malignant"]) == 0
    assert sorted(os.listdir(tmp_path / "s")) == ["000000_malignant.png", "000001_malignant.png", "samples.npz"]
    fmt = "png8" if datasets.read_info(built)["intensity"]["kind"] == "8-bit" else "png16"
    assert cli.main(["jaxmedgan", "export", "--workdir", str(gan), "--num", "4", "--out", str(tmp_path / "e"),
                     "--format", fmt]) == 0
    with open(tmp_path / "e" / "labels.csv") as f:
        assert {r["label_name"] for r in csv.DictReader(f)} <= set(NAMES)
    # Classifier on the same dataset, then image quality of the GAN against the held-out split.
    assert cli.main(["jaxmedgan", "train", "--config", CLASSIFIER, "--workdir", str(tmp_path / "clf"),
                     f"--config.data.dataset_dir={built}", "--config.model.features=(4,8)",
                     "--config.model.stem_stride=1", "--config.train.batch_size=8", "--config.train.steps=2",
                     "--config.train.quiet=True", "--config.train.log_every=1", "--config.train.eval_every=2",
                     "--config.checkpoint.every=2", "--config.optim.warmup_steps=1"]) == 0
    assert json.load(open(tmp_path / "clf" / "config.json"))["model"]["num_classes"] == 2
    assert cli.main(["jaxmedgan", "evaluate", "--workdir", str(gan), "--metrics", "fid", "--num", "4",
                     "--classifier", str(tmp_path / "clf")]) == 0
    report = json.load(open(gan / "eval" / "metrics.json"))
    assert report["runs"]["domain"]["reals"] == "test"  # the held-out split (npz: its own test split)
    assert np.isfinite(report["metrics"]["fid_domain"])
