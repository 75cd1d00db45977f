"""Training on a built dataset by pointing at it: adoption, mismatches, the workdir record, the CLI."""
import json
import os

import numpy as np
import pytest

from configs import dcgan_liver
from jaxmedgan import main as cli
from jaxmedgan import metric_writers
from jaxmedgan.data import datasets, tfds_builders
from tests.data.readers_test import _write_dicom
from tests.trainers.gan_train_test import CONFIG, tiny_overrides


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    """Two classes ('2', '10': natural order) of 16 x 16 CT DICOMs without an extension."""
    root = tmp_path_factory.mktemp("ct")
    rng = np.random.default_rng(0)
    for name in ("10", "2"):
        for i in range(5):
            _write_dicom(str(root / "imgs" / name / f"IM_{i}"), rng.integers(-100, 200, (16, 16)).astype(np.int16),
                         slope=1, intercept=0, center=40, width=400)
    return root / "imgs"


@pytest.fixture(scope="module")
def built(ct_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    return tfds_builders.build_dataset("image-folder", str(out), image_dir=str(ct_folder), image_size=16,
                                       window=(50.0, 350.0), holdout_fraction=0.2)


def test_adopt_copies_the_build_options_and_refuses_explicit_clashes(built):
    c = dcgan_liver.get_config()
    c.data.dataset_dir = built
    c.model.num_classes = 3
    changed = datasets.adopt_built(c)
    assert c.data.source == "image-folder" and c.data.image_size == 16
    assert (c.data.window_center, c.data.window_width) == (50.0, 350.0)
    assert c.data.holdout_fraction == pytest.approx(0.2) and c.model.num_classes == 2
    assert {"data.source", "data.image_size", "model.num_classes"} <= set(changed)
    assert datasets.check_built(c) == os.path.abspath(built)
    c.data.image_size = 32  # a later change is caught where the data is read
    with pytest.raises(ValueError, match=r"does not match config.data: data.image_size=32 \(built: 16\)"):
        datasets.prepare(c)
    c = dcgan_liver.get_config()
    c.data.dataset_dir = built
    c.data.image_size, c.data.window_center = 32, 10.0
    with pytest.raises(ValueError, match=r"data.image_size=32 \(built: 16\); data.window_center=10.0 \(built: 50.0\)"):
        datasets.adopt_built(c, {"data.image_size", "data.window_center"})
    c.data.dataset_dir = os.path.dirname(built)
    with pytest.raises(ValueError, match="holds no jaxmedgan_dataset.json"):
        datasets.adopt_built(c)


def test_cli_trains_on_a_built_dataset_and_records_it(built, tmp_path, jaxmedgan_log):
    wd = tmp_path / "run"
    args = ["jaxmedgan", "train", "--config", CONFIG, "--workdir", str(wd),
            *tiny_overrides(tmp_path / "unused"), f"--config.data.dataset_dir={built}"]
    assert cli.main(args) == 0
    info = datasets.read_info(built)
    assert any(f"fingerprint {info['fingerprint']}" in line for line in jaxmedgan_log)  # the log names the dataset
    record = datasets.workdir_record(str(wd))
    assert record["class_names"] == ["2", "10"] and record["fingerprint"] == info["fingerprint"]
    assert record["intensity"]["class_windows"]["10"] == {"center": 50.0, "width": 350.0, "invert": False}
    config = json.load(open(wd / "config.json"))
    assert config["data"]["image_size"] == 16 and config["model"]["num_classes"] == 2
    assert os.path.isabs(config["data"]["dataset_dir"])
    rows = metric_writers.read_jsonl(wd / "metrics.jsonl")
    assert any("eval/aux_accuracy" in r for r in rows)  # the held-out split feeds the eval
    assert not any(set(r) == {"step"} for r in rows)  # no empty rows
    assert not os.listdir(tmp_path / "unused") if os.path.isdir(tmp_path / "unused") else True  # nothing rebuilt
    # An explicit override that disagrees with the build is a usage error naming the field.
    assert cli.main([*args[:5], *tiny_overrides(tmp_path / "unused"), f"--config.data.dataset_dir={built}",
                     "--config.data.image_size=32", "--workdir", str(tmp_path / "run2")]) == 2


def test_dataset_command_refuses_sizes_no_model_can_use(ct_folder, tmp_path, capsys):
    args = ["jaxmedgan", "dataset", "--source", "image-folder", "--image-dir", str(ct_folder), "--out", str(tmp_path)]
    assert cli.main([*args, "--image-size", "28"]) == 2
    assert "nearest valid: 32" in capsys.readouterr().err
    assert cli.main([*args, "--image-size", "8", "--resize", "area", "--class-window", "2=0/500",
                     "--classes", "2,10"]) == 0
    out = capsys.readouterr().out
    path = out.strip().split()[-1]
    assert "--config.data.dataset_dir=" in out and "fingerprint" in out
    info = datasets.read_info(path)
    assert info["class_names"] == ["2", "10"] and info["resize"] == "area"
    assert info["intensity"]["class_windows"]["2"]["width"] == 500.0
    assert info["intensity"]["window_sources"] == {"class": 5, "tags": 5}
    assert cli.main(["jaxmedgan", "dataset", "--source", "phantom-liver", "--out", str(tmp_path),
                     "--resize", "area"]) == 1
    assert "resize='area' (applies to image-folder, npz, stylegan-folder)" in capsys.readouterr().err


def test_a_new_build_beside_an_old_one_says_which_options_differ(ct_folder, tmp_path, jaxmedgan_log):
    # The reported trap: `dataset --window 40 400 --out D`, then `train --config.data.data_dir=D` without
    # the window built (and used) another dataset silently.
    first = tfds_builders.build_dataset("image-folder", str(tmp_path), image_dir=str(ct_folder), image_size=16,
                                        window=(40.0, 400.0), holdout_fraction=0.1)
    c = dcgan_liver.get_config()
    c.data.source, c.data.image_dir, c.data.image_size, c.data.data_dir = "image-folder", str(ct_folder), 16, str(tmp_path)
    second = datasets.prepare(c)
    assert second != first
    warning = [line for line in jaxmedgan_log if "Built a new dataset" in line]
    assert len(warning) == 1 and "window" in warning[0] and f"--config.data.dataset_dir={first}" in warning[0]
    jaxmedgan_log.clear()
    assert datasets.prepare(c) == second and not any("Built a new" in line for line in jaxmedgan_log)  # reused
