"""Segmentation evaluator: Dice vs hand case and numpy formula, grouped bootstrap CIs, loss, tables,
and a tiny end-to-end experiment through `segmentation_command`."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.studies import segmentation as seg


def test_dice_hand_case():
    pred = np.array([[[1, 1], [0, 0]]])
    target = np.array([[[1, 0], [0, 0]]])
    d = seg.dice(pred, target, 3)
    # label 1: |P&T| = 1, |P| = 2, |T| = 1 -> 2/3; label 0: 2 * 2 / (2 + 3) = 0.8; label 2 absent -> NaN.
    assert d[1] == pytest.approx(2 / 3) and d[0] == pytest.approx(0.8) and np.isnan(d[2])


def test_dice_matches_numpy_formula_pooled_over_examples():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 4, (5, 8, 8)), rng.integers(0, 4, (5, 8, 8))
    for k, got in enumerate(seg.dice(pred, target, 4)):
        p, t = pred == k, target == k
        assert got == pytest.approx(2 * np.sum(p & t) / (np.sum(p) + np.sum(t)))
    with pytest.raises(ValueError, match=r"\(5, 8, 8\) and target \(5, 8, 7\)"):
        seg.dice(pred, target[..., :7], 4)


def test_bootstrap_ci_brackets_the_estimate_and_resamples_whole_groups():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, (12, 8, 8))
    pred = np.where(rng.random(target.shape) < 0.8, target, rng.integers(0, 3, target.shape))
    groups = np.repeat(np.arange(6), 2)
    out = seg.dice_with_ci(pred, target, groups, 3, num_samples=200, seed=0)
    for k in range(3):
        assert out[k]["lo"] <= out[k]["dice"] <= out[k]["hi"] and out[k]["hi"] - out[k]["lo"] > 0
    assert out == seg.dice_with_ci(pred, target, groups, 3, num_samples=200, seed=0)  # seeded
    # Identical groups: every resample has the same pooled Dice, so the CI collapses to it.
    same = seg.dice_with_ci(np.tile(pred[:2], (3, 1, 1)), np.tile(target[:2], (3, 1, 1)), np.repeat(np.arange(3), 2),
                            3, num_samples=50)
    assert same[1]["lo"] == pytest.approx(same[1]["dice"]) == pytest.approx(same[1]["hi"])


def test_segmentation_loss_prefers_the_right_answer():
    maps = jnp.asarray(np.random.default_rng(2).integers(0, 3, (2, 4, 4)))
    right = 10.0 * jax.nn.one_hot(maps, 3)
    wrong = 10.0 * jax.nn.one_hot((maps + 1) % 3, 3)
    l_right, l_wrong = (float(seg.segmentation_loss(x, maps, 3, 1.0)) for x in (right, wrong))
    assert l_right < 0.01 < 1.0 < l_wrong


def test_tables_are_written_as_markdown_and_json(tmp_path):
    results = {"num_test": 4, "num_test_groups": 2, "num_train": {"real": 10, "synth": 20},
               "arms": {"real": {"wm": {"dice": 0.9, "lo": 0.8, "hi": 0.95},
                                 "core": {"dice": float("nan"), "lo": float("nan"), "hi": float("nan")}},
                        "synth": {"wm": {"dice": 0.7, "lo": 0.6, "hi": 0.75},
                                  "core": {"dice": 0.5, "lo": 0.4, "hi": 0.6}}}}
    md, js = seg.write_tables(results, str(tmp_path), labels=["wm", "core"])
    text = open(md).read()
    assert "| real | 10 | 0.900 [0.800, 0.950] | n/a |" in text
    assert "| synth | 20 | 0.700 [0.600, 0.750] | 0.500 [0.400, 0.600] |" in text
    back = json.load(open(js))
    assert back["arms"]["real"]["core"]["dice"] is None and back["arms"]["synth"]["wm"]["dice"] == 0.7
    assert sorted(os.listdir(tmp_path)) == ["segmentation.json", "segmentation.md"]


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_tiny_experiment_end_to_end(dual_gan_workdir, tmp_path):
    """The shared dual-GAN fixture's stage II (a retina pix2pix) is the generator; the real pairs
    are its retina crops (the MNI path is the default config, run for the README table)."""
    from configs import segmentation_brain
    from jaxmedgan import checkpointing

    c = segmentation_brain.get_config()
    c.generator_workdir = str(dual_gan_workdir / "stage2")
    c.data = checkpointing.read_config(c.generator_workdir).data
    c.synthetic.num = 8
    c.segmenter.update(features=4, max_features=8, steps=3, batch_size=4)
    c.eval.labels, c.eval.bootstrap_samples = (1,), 20
    results = seg.run_experiment(c, str(tmp_path))
    assert set(results["arms"]) == {"real", "real+synth", "synth"}
    assert results["num_train"] == {"real": 64, "real+synth": 72, "synth": 8}
    assert results["num_test"] == 16 and results["generator_step"] == 120
    vessel = results["arms"]["real"]["vessel"]
    assert 0 <= vessel["dice"] <= 1 and vessel["lo"] <= vessel["hi"]
    text = open(tmp_path / "segmentation.md").read()
    assert "| real+synth | 72 |" in text and "vessel" in text
    assert json.load(open(tmp_path / "segmentation.json"))["class_names"] == ["background", "vessel"]


def test_segmentation_command_errors(tmp_path, capsys):
    cfg = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "segmentation_brain.py")
    assert seg.segmentation_command(["--config", cfg, "--workdir", str(tmp_path), "--config.segmentr.steps=1"]) == 2
    assert "segmentr" in capsys.readouterr().err
    assert seg.segmentation_command(["--config", cfg]) == 2
    assert seg.segmentation_command(["--help"]) == 0
    assert not os.listdir(tmp_path)
