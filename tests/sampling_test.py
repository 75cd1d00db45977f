"""jaxmedgan/sampling.py host-side pieces: atomic output, LCO settings, `sample --labels` refusals (no training)."""
import os

import ml_collections
import pytest

from configs import dcgan_liver
from jaxmedgan import checkpointing, lco, sampling
from jaxmedgan import main as cli
from jaxmedgan.trainers import drawing


def _workdir(tmp_path, **model):
    config = dcgan_liver.get_config()
    for key, value in model.items():
        config.model[key] = value
    wd = tmp_path / "gan"
    checkpointing.write_config(str(wd), config)
    return wd, config


def test_write_atomically_renames_complete_output_and_leaves_nothing_on_failure(tmp_path):
    def write(tmp):
        open(os.path.join(tmp, "a.txt"), "w").write("done")

    out = tmp_path / "out"
    os.makedirs(out)  # an existing empty directory is replaced
    assert sampling._write_atomically(str(out), write) == str(out)
    assert open(out / "a.txt").read() == "done"

    def failing(tmp):
        open(os.path.join(tmp, "half.png"), "w").write("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        sampling._write_atomically(str(tmp_path / "never"), failing)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # neither the output nor the temporary directory


def test_lco_settings_read_the_config_section_over_defaults():
    config = ml_collections.ConfigDict({"model": {}})
    assert sampling.lco_settings(config) == lco.DEFAULTS
    config.lco = ml_collections.ConfigDict({"steps": 7, "lr": 0.02, "classifier_workdir": "runs/clf"})
    assert sampling.lco_settings(config) == {**lco.DEFAULTS, "steps": 7, "lr": 0.02}


def test_labels_refused_for_class_conditional_models_and_without_a_classifier(tmp_path, capsys):
    wd, _ = _workdir(tmp_path, num_classes=3)
    code = cli.main(["jaxmedgan", "sample", "--workdir", str(wd), "--labels", "effusion", "--num", "2",
                     "--out", str(tmp_path / "o"), "--classifier", str(tmp_path / "clf")])
    assert code == 1 and "class-conditional (model.num_classes=3): use --class" in capsys.readouterr().err
    wd2 = tmp_path / "uncond"
    checkpointing.write_config(str(wd2), dcgan_liver.get_config())  # num_classes 0, no lco section
    code = cli.main(["jaxmedgan", "sample", "--workdir", str(wd2), "--labels", "effusion", "--num", "2",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "--classifier CLASSIFIER_WORKDIR" in err and "lco.classifier_workdir" in err
    code = cli.main(["jaxmedgan", "sample", "--workdir", str(wd2), "--labels", "effusion", "--num", "2",
                     "--out", str(tmp_path / "o"), "--classifier", str(wd2)])  # a GAN, not a classifier
    assert code == 1 and "expected a classifier workdir" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_flag_combinations_are_usage_errors(tmp_path, capsys):
    wd, _ = _workdir(tmp_path)
    code = cli.main(["jaxmedgan", "sample", "--workdir", str(wd), "--num", "2", "--out", str(tmp_path / "o"),
                     "--lco-steps", "5"])
    assert code == 2 and "apply to --labels only" in capsys.readouterr().err
    code = cli.main(["jaxmedgan", "sample", "--workdir", str(wd), "--num", "2", "--out", str(tmp_path / "o"),
                     "--labels", "none", "--class", "1"])
    assert code == 2 and "exclude each other" in capsys.readouterr().err


def test_jitted_generator_is_shared_by_equal_configs_and_immune_to_later_edits():
    from configs import dcgan_liver
    from jaxmedgan import sampling

    def fn(config, scale):
        return scale * config.model.g_features

    a, b = dcgan_liver.get_config(), dcgan_liver.get_config()
    first = drawing.jitted_generator(fn, a)
    assert drawing.jitted_generator(fn, b) is first  # equal contents, different objects: one compile
    a.model.g_features = 3  # the caller edits its config afterwards
    assert float(first(2.0)) == 2.0 * b.model.g_features  # the cached copy kept the old value
    other = drawing.jitted_generator(fn, a)
    assert other is not first and float(other(2.0)) == 6.0


def test_resolve_class_takes_a_name_or_an_index_and_names_the_classes_when_wrong():
    names = ["cyst", "metastasis", "hemangioma"]
    assert sampling.resolve_class(None, names) is None
    assert sampling.resolve_class("metastasis", names) == sampling.resolve_class("1", names) == 1
    assert sampling.resolve_class(2, names) == 2
    assert sampling.resolve_class("1", ["0", "1"]) == 1 and sampling.resolve_class("0", ["1", "0"]) == 1  # name first
    with pytest.raises(ValueError, match=r"'nope' is not a class.*0=cyst, 1=metastasis, 2=hemangioma"):
        sampling.resolve_class("nope", names)
    with pytest.raises(ValueError, match=r"--class 7 is out of range.*0\.\.2"):
        sampling.resolve_class("7", names)
    with pytest.raises(ValueError, match="unconditional"):
        sampling.resolve_class("cyst", [])


def test_file_tag_keeps_safe_characters_and_falls_back_to_the_index():
    assert sampling.file_tag("metastasis", 1) == "metastasis"
    assert sampling.file_tag("pleural effusion/left", 0) == "pleural_effusion_left"
    assert sampling.file_tag("v1.2-a_b", 0) == "v1.2-a_b"
    assert sampling.file_tag("Ödem", 0) == "_dem"
    assert sampling.file_tag("", 3) == sampling.file_tag("///", 3) == sampling.file_tag("..", 3) == "class3"


def test_class_names_come_from_the_workdir_record(tmp_path):
    import json

    wd, config = _workdir(tmp_path, num_classes=3)
    assert sampling.class_names(str(wd), config) == ["class0", "class1", "class2"]  # no dataset.json
    json.dump({"class_names": ["cyst", "metastasis", "hemangioma"], "multi_label": False},
              open(wd / "dataset.json", "w"))
    assert sampling.class_names(str(wd), config) == ["cyst", "metastasis", "hemangioma"]
    config.model.num_classes = 0
    assert sampling.class_names(str(wd), config) == []
