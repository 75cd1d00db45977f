"""Config and workdir problems: one line each, no traceback, exit 2, nothing written."""
import os

import pytest

from configs import acgan_liver, pggan_chest, stylegan2_ada_spine
from jaxmedgan import config_validation, trainers
from jaxmedgan import main as cli
from tests.trainers.gan_train_test import CONFIG, train


def _errors(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(l.startswith("jaxmedgan train: error: ") for l in lines), err
    return lines


def test_every_bad_value_is_named_on_its_own_line_and_nothing_is_written(tmp_path, capsys):
    wd = tmp_path / "run"
    code = train(wd, tmp_path / "data", "--config.train.steps=-5", "--config.train.batch_size=-8",
                 "--config.data.image_size=60", "--config.optim.d_lr=0")
    lines = _errors(capsys)
    assert code == 2
    assert any("config.train.steps=-5" in l and "positive" in l for l in lines)
    assert any("config.train.batch_size=-8" in l for l in lines)
    assert any("config.data.image_size=60" in l and "nearest valid: 64" in l for l in lines)
    assert any("config.optim.d_lr=0" in l for l in lines)
    assert len(lines) == 4 and not wd.exists()


@pytest.mark.parametrize("module,size,nearest", [(stylegan2_ada_spine, 2048, 1024), (pggan_chest, 3, 4),
                                                 (acgan_liver, 24, 32)])
def test_image_sizes_the_model_cannot_build_suggest_the_nearest(module, size, nearest):
    c = module.get_config()
    c.data.image_size = size
    (line,) = [p for p in config_validation.problems(c, image_sizes=trainers.image_sizes) if "image_size" in p]
    assert f"nearest valid: {nearest}" in line
    c.data.image_size = nearest
    assert config_validation.problems(c, image_sizes=trainers.image_sizes) == []


def test_workdir_that_is_a_file_or_not_writable(tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    assert train(f, tmp_path / "data") == 2
    assert "is a file" in _errors(capsys)[0]
    assert train(f / "sub", tmp_path / "data") == 2
    assert "cannot be created" in _errors(capsys)[0]
    monkeypatch.setattr(config_validation.os, "access", lambda path, mode: False)  # root ignores chmod
    assert train(tmp_path / "ro" / "run", tmp_path / "data") == 2
    assert "not writable" in _errors(capsys)[0]
    assert not (tmp_path / "ro").exists()


def test_batch_larger_than_the_dataset_is_refused_before_training(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train(wd, tmp_path / "data", "--config.train.batch_size=4096") == 2
    err = capsys.readouterr().err  # INFO logs and the dataset build come first
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("jaxmedgan train: error: ")
    assert "config.train.batch_size=4096 is larger than the training set" in line
    assert not (wd / "checkpoints").exists() and not (wd / "config.json").exists()


def test_unknown_key_and_missing_get_config_are_plain_messages(tmp_path, capsys):
    assert train(tmp_path / "run", tmp_path / "data", "--config.train.stepz=3") == 2
    (line,) = _errors(capsys)
    assert "Unknown config key 'stepz'" in line and 'Did you mean "steps"' in line and "\\" not in line
    cfg = tmp_path / "noget.py"
    cfg.write_text("def make():\n    return None\n")
    assert cli.main(["jaxmedgan", "train", "--config", str(cfg), "--workdir", str(tmp_path / "w")]) == 2
    (line,) = _errors(capsys)
    assert "noget.py defines no get_config()" in line and "Unknown config key" not in line
