"""Resume with a changed config: refused with a diff, unless mutable or named; every change recorded."""
import json
import os

import pytest

from configs import acgan_liver, acgan_liver_dp
from jaxmedgan import config_drift
from jaxmedgan import main as cli
from tests.trainers.gan_train_test import train


def _workdir_with_checkpoint(tmp_path, config):
    wd = tmp_path / "run"
    (wd / "checkpoints" / "4").mkdir(parents=True)
    (wd / "config.json").write_text(config.to_json_best_effort())
    return str(wd)


def test_diff_names_each_changed_field_and_mutable_ones_pass(tmp_path):
    old = acgan_liver.get_config()
    wd = _workdir_with_checkpoint(tmp_path, old)
    new = acgan_liver.get_config()
    new.train.steps, new.checkpoint.every = 5000, 10  # declared mutable
    assert config_drift.check_resume(wd, new) == {"checkpoint.every": (250, 10), "train.steps": (1000, 5000)}
    new.optim.d_lr, new.seed, new.model.d_features = 1e-3, 7, 32
    with pytest.raises(config_drift.ConfigDriftError) as e:
        config_drift.check_resume(wd, new)
    msg = str(e.value)
    assert "model.d_features: 16 -> 32" in msg and "optim.d_lr: 0.0002 -> 0.001" in msg and "seed: 0 -> 7" in msg
    assert "train.steps" not in msg and "--allow-config-change=model.d_features,optim.d_lr,seed" in msg
    # Named fields are accepted, recorded and written into config.json (other fields untouched).
    config_drift.accept_on_resume(wd, new, ["optim.d_lr", "seed", "model.d_features"])
    cfg = json.load(open(os.path.join(wd, "config.json")))
    assert (cfg["optim"]["d_lr"], cfg["seed"], cfg["train"]["steps"]) == (1e-3, 7, 1000)
    (entry,) = [json.loads(l) for l in open(os.path.join(wd, config_drift.HISTORY_FILE))]
    assert entry["step"] == 4 and entry["accepted_by"] == "--allow-config-change"
    assert entry["changes"] == {"model.d_features": [16, 32], "optim.d_lr": [2e-4, 1e-3], "seed": [0, 7]}
    assert config_drift.check_resume(wd, new) == {"train.steps": (1000, 5000), "checkpoint.every": (250, 10)}


def test_allow_config_change_cannot_unlock_a_dp_runs_guarantee(tmp_path):
    old = acgan_liver_dp.get_config()
    wd = _workdir_with_checkpoint(tmp_path, old)
    new = acgan_liver_dp.get_config()
    new.seed, new.optim.d_lr = 7, 1e-3
    with pytest.raises(config_drift.ConfigDriftError, match=r"seed: 0 -> 7 cannot change, even with --allow-config"):
        config_drift.accept_on_resume(wd, new, ["optim.d_lr", "seed"])
    assert json.load(open(os.path.join(wd, "config.json")))["seed"] == 0  # nothing applied
    new.seed = 0
    config_drift.accept_on_resume(wd, new, ["optim.d_lr"])  # a learning rate is not part of the guarantee
    assert json.load(open(os.path.join(wd, "config.json")))["optim"]["d_lr"] == 1e-3


def test_fields_added_since_the_run_started_are_accepted_and_recorded(tmp_path):
    old = acgan_liver.get_config()
    wd = _workdir_with_checkpoint(tmp_path, old)
    saved = json.load(open(os.path.join(wd, "config.json")))
    del saved["loss"]["mode_seeking"]  # a run from before that field existed
    saved["model"]["retired_field"] = 3  # ... and with one a newer version dropped
    json.dump(saved, open(os.path.join(wd, "config.json"), "w"))
    new = acgan_liver.get_config()
    with pytest.raises(config_drift.ConfigDriftError, match="model.retired_field: 3 -> '<absent>'") as e:
        config_drift.check_resume(wd, new)
    assert "loss.mode_seeking" not in str(e.value)  # the added field is not what is refused
    del saved["model"]["retired_field"]
    json.dump(saved, open(os.path.join(wd, "config.json"), "w"))
    changes = config_drift.check_resume(wd, new)
    assert changes == {"loss.mode_seeking": ("<absent>", new.loss.mode_seeking)}
    config_drift.record_accepted(wd, changes)
    (entry,) = [json.loads(l) for l in open(os.path.join(wd, config_drift.HISTORY_FILE))]
    assert entry["accepted_by"].startswith("added since the run started")
    assert entry["changes"] == {"loss.mode_seeking": ["<absent>", new.loss.mode_seeking]}


def test_fresh_workdir_or_no_checkpoint_is_not_a_resume(tmp_path):
    config = acgan_liver.get_config()
    assert config_drift.check_resume(str(tmp_path / "none"), config) == {}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"seed": 3}))
    assert config_drift.check_resume(str(tmp_path / "run"), config) == {}


@pytest.mark.slow  # two tiny trainings (~35 s on 2 cores)
def test_cli_resume_with_changed_lr_is_refused_then_allowed_and_recorded(tmp_path, capsys):
    wd, dd = tmp_path / "run", tmp_path / "data"
    assert train(wd, dd, steps=2, every=2) == 0
    before = (wd / "config.json").read_text()
    assert train(wd, dd, "--config.optim.d_lr=0.001", "--config.model.d_features=8", steps=3, every=2) == 1
    err = capsys.readouterr().err
    assert "optim.d_lr: 0.0002 -> 0.001" in err and "model.d_features: 4 -> 8" in err
    assert "partial_restore" not in err and "Traceback" not in err
    assert (wd / "config.json").read_text() == before  # never overwritten by a refused run
    assert not (wd / config_drift.HISTORY_FILE).exists()
    assert train(wd, dd, "--config.optim.d_lr=0.001", "--allow-config-change=optim.d_lr", steps=3, every=2) == 0
    assert json.load(open(wd / "config.json"))["optim"]["d_lr"] == 0.001
    entries = [json.loads(l) for l in open(wd / config_drift.HISTORY_FILE)]
    assert [e["changes"] for e in entries] == [{"optim.d_lr": [2e-4, 1e-3]}, {"train.steps": [2, 3]}]
    assert sorted(os.listdir(wd / "checkpoints")) == ["2", "3"]
