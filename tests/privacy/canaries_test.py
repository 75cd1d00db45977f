"""White-box canary audit: canary draws, the auditor wrapper, and the audit tested both ways."""
import os

import numpy as np
import pytest

from jaxmedgan import main as cli
from jaxmedgan import sampling
from jaxmedgan.data import pipeline
from jaxmedgan.privacy import canaries, secret
from jaxmedgan.studies import audit
from jaxmedgan.privacy.config import DPConfig

from tests.trainers.gan_train_test import CONFIG, tiny_overrides


def test_canary_coins_and_per_step_draws():
    words = secret.from_seed(1).words
    coins = canaries.coins(words, 2000)
    assert 0.45 < coins.mean() < 0.55 and not np.array_equal(coins, canaries.coins(secret.from_seed(2).words, 2000))
    active = np.mean([canaries.step_active(np.random.default_rng(t), coins, 0.2) for t in range(200)], axis=0)
    assert active[~coins].max() == 0  # out-canaries never take part
    assert abs(active[coins].mean() - 0.2) < 0.01  # in-canaries join with the real examples' q


def test_pipeline_carries_the_steps_active_in_canaries():
    src = pipeline.ArraySource(np.zeros((40, 2, 2, 1), np.float32), np.zeros(40, np.int32))
    run_secret = secret.Secret(tuple(range(3, 11)), "os-csprng")
    ds = pipeline.poisson_train_dataset(src, sampling_rate=0.5, max_batch_size=40, secret=run_secret, seed=0,
                                        augment=False, process_index=0, process_count=1, num_canaries=64)
    coins = canaries.coins(run_secret.words, 64)
    rows = np.stack([ds[k]["dp_canaries"] for k in range(20)])  # [steps, rows, canaries]
    assert rows.shape == (20, 40, 64) and (rows == rows[:, :1]).all()  # the same on every row
    assert rows[:, 0, ~coins].max() == 0 and 0.3 < rows[:, 0, coins].mean() < 0.7


def test_auditor_bounds_from_scores():
    rng = np.random.default_rng(0)
    apart = canaries.audit(np.full(300, 10.0), np.zeros(300), epsilon=1.0, delta=1e-5)
    assert apart["epsilon_lower_bound"] == pytest.approx(apart["max_provable_epsilon"])
    assert apart["epsilon_lower_bound"] > 2 and apart["auroc"] == 1.0 and apart["tpr_at_fpr_0_01"] == 1.0
    assert apart["epsilon_lower_bound_fdp"] == pytest.approx(apart["max_provable_epsilon_fdp"])
    assert apart["max_provable_epsilon_fdp"] > 2
    apart.update(kind="white-box gradient canaries", mechanism="no_noise", steps=3, attacker_view="sums")
    table = "\n".join(audit.canary_markdown([apart, None]))
    assert f"| {apart['epsilon_lower_bound']:.3g} ({apart['max_provable_epsilon']:.3g}) |" in table
    assert "300 in / 300 out, mechanism 'no_noise'" in table and audit.canary_markdown([None]) == []
    alike = canaries.audit(rng.normal(size=300), rng.normal(size=300), epsilon=1.0, delta=1e-5)
    assert alike["epsilon_lower_bound"] < 0.5 and 0.4 < alike["auroc"] < 0.6
    assert alike["ratio_to_epsilon"] == pytest.approx(alike["epsilon_lower_bound"])


def test_input_canaries_are_secret_ood_patterns_that_join_the_training_set():
    words, other = secret.from_seed(1).words, secret.from_seed(2).words
    images, labels, is_in = canaries.input_canaries(words, 200, (16, 16, 1), num_classes=3)
    assert images.shape == (200, 16, 16, 1) and set(np.unique(images)) == {-1.0, 1.0}
    assert set(np.unique(labels)) == {0, 1, 2} and 0.4 < is_in.mean() < 0.6
    again = canaries.input_canaries(words, 200, (16, 16, 1), num_classes=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (images, labels, is_in)))
    assert not np.array_equal(canaries.input_canaries(other, 200, (16, 16, 1), 3)[0], images)
    src = pipeline.ArraySource(np.zeros((40, 16, 16, 1), np.float32), np.zeros(40, np.int32))
    joined = canaries.with_input_canaries(src, words, 200, num_classes=3)
    assert len(joined) == 40 + is_in.sum()
    np.testing.assert_array_equal(joined[40]["image"], images[is_in][0])
    assert int(joined[len(joined) - 1]["label"]) == labels[is_in][-1]
    assert np.array_equal(joined[3]["image"], src[3]["image"])
    paired = [{"image": np.zeros((16, 16, 1)), "label": 0, "cond": np.zeros((16, 16, 2))}]
    with pytest.raises(ValueError, match="also carry \\['cond'\\]"):
        canaries.with_input_canaries(paired, words, 4)


def test_input_canary_audit_scores_d_and_g_and_sees_a_copying_generator(tmp_path, monkeypatch):
    # A DP config as a run leaves it (plan filled in) and the run's secret; G and D are stand-ins:
    # a G whose samples are its in-canaries (it copied them) and a D that recognises them.
    from configs import acgan_liver_dp
    from jaxmedgan.privacy import plan

    config = acgan_liver_dp.get_config()
    config.train.steps, config.train.batch_size, config.privacy.input_canaries = 50, 16, 400
    config.privacy.target_epsilon = 1.0
    plan.prepare(config, {}, 182 + 400, 1)
    run_secret = secret.load_or_create(str(tmp_path), secure=True, seed=0, resuming=False)
    images, labels, is_in = canaries.input_canaries(run_secret.words, 400, (32, 32, 1), 3)

    def copying_generator(config, state, trainer, num, class_id, seed):
        copies = images[is_in & (labels == class_id)]
        return np.round((copies + 1) * 127.5).astype(np.uint8), None

    monkeypatch.setattr(sampling, "generate", copying_generator)
    recognise = lambda x: np.array([float(any(np.array_equal(i, c) for c in images[is_in])) for i in x])
    d_report, g_report = audit.input_canary_audit(config, None, 50, str(tmp_path), None, (32, 32, 1), recognise)
    for report in (d_report, g_report):
        assert report["num_in"] + report["num_out"] == 400 and report["auroc"] == 1.0
        assert report["epsilon"] <= 1.0 + 1e-6
        # The attack separates in from out perfectly: the bound reaches the most 400 canaries can show.
        assert report["epsilon_lower_bound"] == pytest.approx(report["max_provable_epsilon"])
    assert g_report["kind"].endswith("G nearest sample") and d_report["kind"].endswith("D logit")
    blind = lambda x: np.zeros(len(x))  # a D that learned nothing about the canaries
    assert audit.input_canary_audit(config, None, 50, str(tmp_path), None, (32, 32, 1), blind)[0]["auroc"] == 0.5


def test_break_switches_are_validated():
    assert DPConfig.from_config({"privacy": {"break_mechanism": "no_noise"}}).break_mechanism == "no_noise"
    with pytest.raises(ValueError, match="config.privacy.break_mechanism='typo' must be one of"):
        DPConfig.from_config({"privacy": {"break_mechanism": "typo"}})
    assert DPConfig.from_config({"privacy": {"break_mechanism": "no_clipping"}}).clip_bound == float("inf")


@pytest.mark.slow  # four tiny DP runs (~2 min on 2 cores); CI runs it after the default suite
def test_canary_audit_holds_for_the_mechanism_and_catches_each_break(tmp_path):
    dp_config = os.path.join(os.path.dirname(CONFIG), "acgan_liver_dp.py")

    def audited(name, *extra):
        wd = tmp_path / name
        args = ["jaxmedgan", "train", "--config", dp_config, "--workdir", str(wd),
                *tiny_overrides(tmp_path / "data", steps=30, every=30), "--config.train.batch_size=32",
                "--config.privacy.target_epsilon=1.0", "--config.privacy.canaries=400", *extra]
        assert cli.main(args) == 0
        config, state, step = sampling.restore_state(str(wd))
        return audit.canary_audit(config, state, step, str(wd))

    correct = audited("correct")
    assert correct["mechanism"] == "correct" and correct["epsilon"] <= 1.0 + 1e-6
    assert correct["epsilon_lower_bound"] <= correct["epsilon"]
    assert correct["epsilon_lower_bound_fdp"] <= correct["epsilon"]
    assert correct["max_provable_epsilon"] > 2 * correct["epsilon"]  # the audit could have shown a break
    for name, extra in (("no_noise", "--config.privacy.break_mechanism=no_noise"),
                        ("no_clipping", "--config.privacy.break_mechanism=no_clipping"),
                        ("public_noise", "--config.privacy.secure_rng=False")):
        broken = audited(name, extra)
        assert broken["mechanism"] == name and broken["epsilon"] == pytest.approx(correct["epsilon"])
        assert broken["epsilon_lower_bound"] > broken["epsilon"], (name, broken)


@pytest.mark.slow  # one tiny DP run with input-space canaries, audited end to end
def test_input_canaries_train_with_the_run_and_their_audit_stays_below_epsilon(tmp_path):
    dp_config = os.path.join(os.path.dirname(CONFIG), "acgan_liver_dp.py")
    wd, out = tmp_path / "run", tmp_path / "audit"
    args = ["jaxmedgan", "train", "--config", dp_config, "--workdir", str(wd),
            *tiny_overrides(tmp_path / "data", steps=20, every=20), "--config.train.batch_size=32",
            "--config.privacy.target_epsilon=2.0", "--config.privacy.input_canaries=60"]
    assert cli.main(args) == 0
    config = sampling.restore_state(str(wd))[0]
    assert config.privacy.sampling_rate == pytest.approx(32 / (182 + 60))  # every canary counts in N
    assert cli.main(["jaxmedgan", "privacy", "audit", "--workdir", str(wd), "--out", str(out), "--num", "32"]) == 0
    import json

    reports = json.load(open(out / "audit.json"))["input_canary_audit"]
    assert [r["kind"] for r in reports] == ["input-space canaries: D logit", "input-space canaries: G nearest sample"]
    for r in reports:
        assert r["num_in"] + r["num_out"] == 60 and r["epsilon_lower_bound"] <= r["epsilon"] <= 2.0 + 1e-6
    assert "input-space canaries: G nearest sample |" in (out / "audit.md").read_text()
