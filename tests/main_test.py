"""CLI commands other than train (tested in tests/trainers): help, dataset."""
import os

import numpy as np
from PIL import Image

from jaxmedgan import main as cli
from jaxmedgan.data import tfds_builders


def test_help_lists_commands(capsys):
    assert cli.main(["jaxmedgan", "--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "sample", "dataset"):
        assert cmd in out
    assert cli.main(["jaxmedgan"]) == 2


def test_dataset_command_builds_phantoms(tmp_path, capsys):
    assert cli.main(["jaxmedgan", "dataset", "--source", "phantom-liver", "--out", str(tmp_path)]) == 0
    path = capsys.readouterr().out.strip().split()[-1]
    images, labels = tfds_builders.load_arrays(path, "phantom-liver", "train")
    assert images.shape == (182, 64, 64, 1)
    assert np.bincount(labels).tolist() == [53, 64, 65]
    test_images, _ = tfds_builders.load_arrays(path, "phantom-liver", "test")
    assert len(test_images) == 90


def test_dataset_command_builds_an_image_folder_and_names_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("normal", "lesion"):
        os.makedirs(tmp_path / "imgs" / name)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    args = ["jaxmedgan", "dataset", "--source", "image-folder", "--image-dir", str(tmp_path / "imgs"),
            "--image-size", "16", "--out", str(tmp_path / "ds")]
    assert cli.main(args) == 0
    path = capsys.readouterr().out.strip().split()[-1]
    assert tfds_builders.class_names(path, "image-folder") == ("lesion", "normal")
    images, labels = tfds_builders.load_arrays(path, "image-folder", "train")
    assert images.shape == (6, 16, 16, 1)

    bad = tmp_path / "imgs" / "lesion" / "big.png"
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(bad)
    assert cli.main(args[:-1] + [str(tmp_path / "ds2")]) == 1
    err = capsys.readouterr().err
    assert "big.png" in err and "(20, 16" in err
    bad.write_bytes(b"not a png")
    assert cli.main(args[:-1] + [str(tmp_path / "ds3")]) == 1
    assert "big.png" in capsys.readouterr().err


def test_dataset_command_requires_image_dir(capsys):
    assert cli.main(["jaxmedgan", "dataset", "--source", "image-folder", "--out", "x"]) == 2
    assert "--image-dir" in capsys.readouterr().err


def test_privacy_and_reader_study_commands_are_wired(capsys):
    assert cli.main(["jaxmedgan", "privacy", "epsilon", "--sampling-rate", "0.01", "--noise-multiplier",
                     "1.1", "--steps", "100", "--delta", "1e-5"]) == 0
    assert capsys.readouterr().out.startswith("epsilon = ")
    assert cli.main(["jaxmedgan", "privacy", "epsilon", "--sampling-rate", "1.5", "--noise-multiplier",
                     "1", "--steps", "1", "--delta", "1e-5"]) == 2
    assert cli.main(["jaxmedgan", "reader-study", "report", "/nonexistent-study"]) != 0


def test_export_and_evaluate_commands_are_wired(capsys):
    assert cli.main(["jaxmedgan", "evaluate"]) == 2
    assert "downstream|segmentation|quality" in capsys.readouterr().err
    assert cli.main(["jaxmedgan", "evaluate", "frechet"]) == 2
    assert cli.main(["jaxmedgan", "export", "--workdir", "/nonexistent", "--num", "1", "--out", "/tmp/x-none"]) != 0
    assert cli.main(["jaxmedgan", "evaluate", "downstream", "--config", "/nonexistent.py", "--out", "/tmp/x"]) != 0

    # `evaluate --workdir ...` (no subcommand) is the image-quality command.
    assert cli.main(["jaxmedgan", "evaluate", "--workdir", "/nonexistent-gan", "--metrics", "fid", "--num", "2"]) == 1
    assert "--classifier CLASSIFIER_WORKDIR" in capsys.readouterr().err.splitlines()[-1]


def test_dataset_command_builds_chest_phantoms_and_checks_chest_flags(tmp_path, capsys):
    assert cli.main(["jaxmedgan", "dataset", "--source", "phantom-chest", "--out", str(tmp_path), "--image-size",
                     "16", "--num-train", "6", "--num-test", "3"]) == 0
    path = capsys.readouterr().out.strip().split()[-1]
    images, labels = tfds_builders.load_arrays(path, "phantom-chest", "train")
    assert images.shape == (6, 16, 16, 1) and labels.shape == (6, 5)  # multi-hot findings
    assert set(np.unique(labels)) <= {0, 1}
    assert cli.main(["jaxmedgan", "dataset", "--source", "chexpert", "--out", str(tmp_path)]) == 2
    assert "--image-dir" in capsys.readouterr().err
    assert cli.main(["jaxmedgan", "dataset", "--source", "phantom-chest", "--out", str(tmp_path),
                     "--num-train", "6"]) == 2
