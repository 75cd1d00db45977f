"""One unconditional GAN per class: trained per class, sampled / exported like a conditional model."""
import csv
import json
import os

import numpy as np
import pytest

from jaxmedgan import main as cli
from jaxmedgan import sampling, trainers
from tests.trainers.gan_train_test import REPO, tiny_overrides

DCGAN = os.path.join(REPO, "configs", "dcgan_liver.py")
NAMES = ["cyst", "metastasis", "hemangioma"]


@pytest.fixture(scope="module")
def per_class_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("per_class")
    wd = root / "run"
    args = ["jaxmedgan", "train", "--config", DCGAN, "--workdir", str(wd), *tiny_overrides(root / "data", 2, 2),
            "--config.data.image_size=16", "--config.train.per_class=True", "--config.model.mbstd_group_size=0"]
    args = [a for a in args if "latent_dim" not in a] + ["--config.model.latent_dim=16"]
    assert cli.main(args) == 0
    return root, wd


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_trains_one_run_per_class_on_that_class_only(per_class_run):
    _, wd = per_class_run
    index = json.load(open(wd / "per_class.json"))
    assert index["family"] == "gan" and index["classes"] == NAMES
    for name in NAMES:
        sub = wd / index["workdirs"][name]
        assert sorted(os.listdir(sub / "checkpoints")) == ["2"]
        assert json.load(open(sub / "config.json"))["model"]["num_classes"] == 0
    top = json.load(open(wd / "config.json"))
    assert top["trainer"] == "per_class" and top["family"] == "gan"
    assert json.load(open(wd / "dataset.json"))["class_names"] == NAMES


def test_samples_and_exports_like_a_conditional_model(per_class_run):
    root, wd = per_class_run
    imgs, labels, steps = sampling.generate_from_workdir(str(wd), 7, None, seed=0)
    assert imgs.shape == (7, 16, 16, 1) and labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert steps == {name: 2 for name in NAMES}
    assert cli.main(["jaxmedgan", "sample", "--workdir", str(wd), "--num", "2", "--out", str(root / "s"),
                     "--class", "hemangioma"]) == 0
    assert sorted(os.listdir(root / "s"))[:2] == ["000000_hemangioma.png", "000001_hemangioma.png"]
    assert cli.main(["jaxmedgan", "export", "--workdir", str(wd), "--num", "6", "--out", str(root / "e")]) == 0
    with open(root / "e" / "labels.csv") as f:
        assert [r["label_name"] for r in csv.DictReader(f)] == ["cyst"] * 2 + ["metastasis"] * 2 + ["hemangioma"] * 2
    # Each class's images come from that class's GAN: the same draw as sampling that run alone.
    alone, _ = sampling.generate(*sampling.restore_state(str(wd / "classes" / "metastasis"))[:2],
                                 trainers.family("gan"), 2, None, 0 + 1000 * 1)
    np.testing.assert_array_equal(sampling.generate_from_workdir(str(wd), 2, 1, seed=0)[0], alone)


def test_refuses_conditional_models_and_dp(tmp_path):
    base = ["jaxmedgan", "train", "--config", DCGAN, "--workdir", str(tmp_path / "w"), *tiny_overrides(tmp_path, 2, 2),
            "--config.train.per_class=True"]
    assert cli.main([*base, "--config.model.num_classes=3"]) == 1
    assert cli.main([*base, "--config.privacy.enabled=True"]) == 1
