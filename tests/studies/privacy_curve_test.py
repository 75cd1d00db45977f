"""`jaxmedgan privacy curve`: a tiny DP ACGAN config at epsilon 1 and inf on the 16 px liver phantoms,
scored by FID-domain (random-state domain classifier) and a tiny downstream study; table, plot,
reuse of finished runs, resume of unfinished ones, errors.

Training is replaced by `_stand_in_trainer`, which leaves what `gan.train_and_evaluate` leaves (the
config.json that `privacy.plan.prepare` fills with the calibrated sigma, and a checkpoint of the
trainer's state structure at `train.steps`) without compiling GAN steps: compiling the DP and
non-DP steps took 3.5 of the 4.4 minutes of a real 2-step run on the shared 2-core CI machine. The
real trainer's DP path has its own end-to-end tests (tests/trainers); the curve's sampling, FID and
downstream run for real here.
"""
import functools
import json
import math
import os

import jax
import numpy as np
import pytest
from PIL import Image

from jaxmedgan import checkpointing
from jaxmedgan.data import datasets
from jaxmedgan.privacy import accounting, checks, plan
from jaxmedgan.studies import privacy_cli as cli
from jaxmedgan.studies import privacy_curve as curve
from jaxmedgan.models import trained_classifier
from jaxmedgan.trainers import gan
from tests.studies.quality_cli_test import checkpoint_random
from tests.trainers.classifier_test import tiny_config as tiny_classifier_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GAN_CONFIG = os.path.join(REPO, "configs", "acgan_liver_dp.py")
DOWNSTREAM_CONFIG = os.path.join(REPO, "configs", "downstream_liver.py")


def tiny_gan_flags(data_dir):
    return [f"--config.data.data_dir={data_dir}", "--config.data.image_size=16", "--config.model.g_features=4",
            "--config.model.d_features=4", "--config.model.latent_dim=8", "--config.train.steps=2",
            "--config.train.batch_size=8", "--config.train.log_every=2", "--config.train.eval_every=2",
            "--config.checkpoint.every=2", "--config.samples.every=2", "--config.samples.per_row=2",
            "--config.checkpoint.async_save=False"]


TINY_DOWNSTREAM = ["--downstream_config.data.image_size=16", "--downstream_config.data.counts=(4,4,4)",
                   "--downstream_config.model.features=(4,8)", "--downstream_config.model.stem_stride=1",
                   "--downstream_config.train.batch_size=8", "--downstream_config.train.steps=2",
                   "--downstream_config.mesh.data=1", "--downstream_config.optim.warmup_steps=1",
                   "--downstream_config.downstream.num_folds=2", "--downstream_config.downstream.seeds=(0,)",
                   "--downstream_config.downstream.synthetic_per_class=4",
                   "--downstream_config.downstream.bootstrap_samples=20"]


@pytest.fixture(scope="module")
def classifier_workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("curve_clf")
    checkpoint_random(wd, tiny_classifier_config())  # random weights: the wiring, not the features, is tested
    trained_classifier.write_classes(str(wd), ("cyst", "metastasis", "hemangioma"), False)
    return str(wd)


@pytest.fixture
def trained(monkeypatch):
    """Replaces gan.train_and_evaluate by `_stand_in_trainer`; returns the list of workdirs it trained."""
    calls = []

    def stand_in(config, workdir):
        calls.append(os.path.basename(workdir))
        if checks.dp_enabled(config):  # what trainers.common.fit does before training
            abstract = jax.eval_shape(functools.partial(gan.FAMILY.init_state, config), jax.random.PRNGKey(0))
            plan.prepare(config, abstract.d_variables(), len(datasets.load(config)[0]), jax.device_count())
        if checkpointing.latest_step(workdir) != config.train.steps:  # fit on a finished run trains nothing
            checkpoint_random(workdir, config, step=config.train.steps)

    monkeypatch.setattr(gan, "train_and_evaluate", stand_in)
    return calls


def _ckpt_mtimes(run_dir):
    root = os.path.join(run_dir, "checkpoints")
    return {d: os.path.getmtime(os.path.join(root, d)) for d in os.listdir(root)}


def test_curve_writes_table_and_plot_and_reuses_finished_runs(tmp_path, classifier_workdir, trained, capsys):
    out = tmp_path / "curve"
    argv = ["curve", "--config", GAN_CONFIG, *tiny_gan_flags(tmp_path / "data"), "--workdir", str(out),
            "--epsilons", "inf,1", "--classifier", classifier_workdir, "--downstream-config", DOWNSTREAM_CONFIG,
            *TINY_DOWNSTREAM, "--num", "8", "--quiet"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert trained == ["eps_1", "eps_inf"]
    report = json.load(open(out / "curve.json"))
    rows = report["rows"]
    assert [r["run"] for r in rows] == ["eps_1", "eps_inf"]  # sorted, inf last
    dp, nodp = rows
    # sigma: the one calibrated for 2 steps at q = 8/182, delta = 1/(10 N) (accounting, computed directly)
    q, delta = 8 / 182, 1 / 1820
    assert dp["delta"] == pytest.approx(delta)
    assert dp["noise_multiplier"] == pytest.approx(accounting.calibrate_noise(1.0, delta, q, 2), rel=1e-9)
    assert math.isfinite(dp["noise_multiplier"]) and dp["noise_multiplier"] > 0
    assert 0.9 < dp["epsilon_spent"] <= 1.0
    assert nodp["noise_multiplier"] is None and nodp["epsilon_spent"] is None
    for r in rows:
        assert r["steps"] == 2 and not r["reused"]
        assert r["num_fake"] == 8 and r["num_real"] == 8
        assert math.isfinite(r["fid_domain"]) and r["fid_domain"] >= 0
        d = r["downstream"]
        assert d["experiment"] == "synthetic" and 0 <= d["accuracy"] <= 1 and 0 <= d["macro_auc"] <= 1
        ds = json.load(open(out / r["run"] / "downstream" / "report.json"))
        assert ds["experiments"]["synthetic"]["metrics"]["accuracy"] == pytest.approx(d["accuracy"])
        # Leak-free: the study's real images are the held-out split no run's GAN trained on.
        assert ds["design"]["real_split"] == "test" and ds["design"]["leak_free"].startswith("yes")
        assert ds["task"]["num_real"] == 90  # the liver test split (30 per class), not the 12 training lesions
        metrics = json.load(open(out / r["run"] / "eval" / "metrics.json"))
        assert metrics["metrics"]["fid_domain"] == pytest.approx(r["fid_domain"])
    dp_section = json.load(open(out / "eps_1" / "config.json"))["privacy"]
    assert dp_section["enabled"] and dp_section["target_epsilon"] == 1.0
    assert json.load(open(out / "eps_inf" / "config.json"))["privacy"]["enabled"] is False

    md = (out / "curve.md").read_text()
    assert "Leak-free: yes: the study's real images are the held-out test split" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "σ" not in line]
    assert len(table) == 2 and table[0].startswith("| 1 | DP-SGD |")
    assert table[1].startswith("| ∞ | none | 0 (no DP) | 2 |")
    png = Image.open(out / "curve.png")
    assert png.size == (900, 420)
    assert len(np.unique(np.asarray(png).reshape(-1, 3), axis=0)) > 3  # something was drawn

    # Rerun: both runs are reused (no training call, checkpoints untouched), same table.
    before = {r: _ckpt_mtimes(out / r) for r in ("eps_1", "eps_inf")}
    capsys.readouterr()
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert trained == ["eps_1", "eps_inf"]  # no new training call
    assert "reused finished run eps_1" in capsys.readouterr().out
    again = json.load(open(out / "curve.json"))["rows"]
    assert all(r["reused"] for r in again)
    assert {r: _ckpt_mtimes(out / r) for r in ("eps_1", "eps_inf")} == before
    assert [r["fid_domain"] for r in again] == [r["fid_domain"] for r in rows]
    assert (out / "curve.md").read_text() == md

    # A run interrupted before the curve recorded it is handed back to the trainer (which resumes
    # from its last checkpoint); the finished one is not.
    os.remove(out / "eps_inf" / curve.RUN_FILE)
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert trained == ["eps_1", "eps_inf", "eps_inf"]
    assert [r["reused"] for r in json.load(open(out / "curve.json"))["rows"]] == [True, False]

    # Changing the config under the same workdir is refused, naming the run.
    changed = [a.replace("train.steps=2", "train.steps=3") for a in argv]
    assert cli.main(changed) == 1
    assert "eps_1 was trained by the curve with another config" in capsys.readouterr().err


def test_curve_compares_noise_mechanisms_at_the_same_epsilon(tmp_path, classifier_workdir, trained, capsys):
    out = tmp_path / "curve"
    argv = ["curve", "--config", GAN_CONFIG, *tiny_gan_flags(tmp_path / "data"), "--workdir", str(out),
            "--epsilons", "1,inf", "--classifier", classifier_workdir, "--num", "8", "--quiet",
            "--mechanisms", "dpsgd,band_mf", "--bands", "2"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert trained == ["eps_1", "band_mf2_eps_1", "eps_inf"]  # the no-DP run once
    report = json.load(open(out / "curve.json"))
    assert report["config"]["mechanisms"] == ["dpsgd", "band_mf"] and report["config"]["bands"] == 2
    dpsgd, band, nodp = report["rows"]
    assert (dpsgd["mechanism"], band["mechanism"], nodp["mechanism"]) == ("dpsgd", "band_mf", "none")
    q, delta = 8 / 182, 1 / 1820  # each sigma calibrated by its own mechanism's accountant for epsilon 1
    assert dpsgd["noise_multiplier"] == pytest.approx(accounting.calibrate_noise(1.0, delta, q, 2), rel=1e-9)
    assert band["noise_multiplier"] == pytest.approx(
        accounting.calibrate_noise(1.0, delta, q, 2, cycle_length=2), rel=1e-9)
    assert band["noise_multiplier"] != dpsgd["noise_multiplier"]
    assert 0.9 < band["epsilon_spent"] <= 1.0
    trained_privacy = json.load(open(out / "band_mf2_eps_1" / "config.json"))["privacy"]
    assert trained_privacy["mechanism"] == "band_mf" and trained_privacy["bands"] == 2
    for r in report["rows"]:
        assert r["kid_domain_std"] > 0 and math.isfinite(r["kid_domain"])
        metrics = json.load(open(out / r["run"] / "eval" / "metrics.json"))["metrics"]
        assert metrics["kid_domain"] == pytest.approx(r["kid_domain"])
    md = (out / "curve.md").read_text()
    assert "| 1 | DP-SGD |" in md and "| 1 | band MF (b=2) |" in md and "| ∞ | none |" in md
    assert cli.main(argv[:-4] + ["--mechanisms", "dpsgd,sgd"]) == 2
    assert "--mechanisms must list distinct names" in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [
    ("", "--epsilons is empty"),
    ("1,abc", "entry 'abc' is not a number"),
    ("0,1", "entry '0' must be > 0"),
    ("-3", "entry '-3' must be > 0"),
    ("1,1.0", "lists '1.0' twice"),
    ("nan", "entry 'nan' must be > 0"),
])
def test_bad_epsilon_lists_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        curve.parse_epsilons(text)


def test_parse_and_name_epsilons():
    assert curve.parse_epsilons(" inf, 10,1,3 ") == [1.0, 3.0, 10.0, math.inf]
    assert [curve.run_name(e) for e in (0.5, 1.0, 10.0, math.inf)] == ["eps_0.5", "eps_1", "eps_10", "eps_inf"]


def test_command_errors_name_the_problem(tmp_path, classifier_workdir, capsys):
    base = ["curve", "--workdir", str(tmp_path / "c"), "--classifier", classifier_workdir]
    assert cli.main(base + ["--config", GAN_CONFIG, "--epsilons", "1,x"]) == 2
    assert "--epsilons entry 'x' is not a number" in capsys.readouterr().err
    no_privacy = os.path.join(REPO, "configs", "classifier_liver.py")
    assert cli.main(base + ["--config", no_privacy]) == 2
    assert "no privacy section" in capsys.readouterr().err
    missing = ["curve", "--workdir", str(tmp_path / "c"), "--config", GAN_CONFIG, "--classifier",
               str(tmp_path / "nowhere")]
    assert cli.main(missing) == 2
    assert "nowhere' is not a classifier workdir" in capsys.readouterr().err
    assert cli.main(base + ["--config", GAN_CONFIG, "--config.train.nosuchkey=1"]) == 2
    assert "could not load a config" in capsys.readouterr().err
    assert cli.main(base + ["--config", GAN_CONFIG, "--downstream-config", DOWNSTREAM_CONFIG,
                            "--downstream-experiment", "real"]) == 2
    assert "--downstream-experiment must be one of" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "c")  # nothing was started


def test_downstream_needs_a_class_conditional_gan(tmp_path, classifier_workdir):
    from configs import dcgan_liver

    config = dcgan_liver.get_config()  # unconditional: no labels for the downstream classifier
    with pytest.raises(ValueError, match="class-conditional GAN"):
        curve.curve(config, str(tmp_path / "c"), [1.0], classifier=classifier_workdir,
                    downstream_config=curve.downstream_for(downstream_liver_config(), "synthetic"))
    assert not os.path.exists(tmp_path / "c")


def downstream_liver_config():
    from configs import downstream_liver

    return downstream_liver.get_config()
