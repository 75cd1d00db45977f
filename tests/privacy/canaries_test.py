"""White-box canary audit: canary draws, the auditor wrapper, and the audit tested both ways."""
import os

import numpy as np
import pytest

from jaxmedgan import main as cli
from jaxmedgan import sampling
from jaxmedgan.data import pipeline
from jaxmedgan.privacy import audit, canaries, secret
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
    table = "\n".join(audit.canary_markdown(apart))
    assert f"| {apart['epsilon_lower_bound']:.3g} ({apart['max_provable_epsilon']:.3g}) |" in table
    assert "300 in / 300 out, mechanism 'no_noise'" in table and audit.canary_markdown(None) == []
    alike = canaries.audit(rng.normal(size=300), rng.normal(size=300), epsilon=1.0, delta=1e-5)
    assert alike["epsilon_lower_bound"] < 0.5 and 0.4 < alike["auroc"] < 0.6
    assert alike["ratio_to_epsilon"] == pytest.approx(alike["epsilon_lower_bound"])


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
