"""FID validation under corruptions: the corruptions themselves, and the table on small phantom sets."""
import numpy as np
import pytest
from scipy import ndimage

from jaxmedgan.studies import fid_validation as fv
from jaxmedgan.evaluators import quality


def _images(n=6, size=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, size, size, 1)).astype(np.float32)


def test_corruptions_at_zero_strength_are_identity():
    x = _images()
    for name in fv.STRENGTHS:
        np.testing.assert_array_equal(fv.corrupt(name, x, 0.0, other=_images(seed=1), seed=0), x)


def test_noise_blur_swirl_mix_do_what_they_say():
    x = _images(n=40, size=32)
    noisy = fv.corrupt("noise", np.zeros_like(x), 0.1, other=None, seed=0)
    assert noisy.std() == pytest.approx(0.1, rel=0.05)
    blurred = fv.corrupt("blur", x, 2.0, other=None, seed=0)  # sigma 2 px at 64 px = 1 px at 32 px
    np.testing.assert_allclose(blurred[3, ..., 0], ndimage.gaussian_filter(x[3, ..., 0], 1.0, mode="reflect"),
                               atol=1e-6)
    assert blurred.std() < 0.6 * x.std()
    # Swirl moves pixels around without changing their range; the centre pixel stays put.
    ramp = np.tile(np.linspace(-1, 1, 33, dtype=np.float32), (33, 1))[None, ..., None]
    sw = fv.corrupt("swirl", ramp, 2.0, other=None, seed=0)
    assert np.abs(sw - ramp).max() > 0.3 and sw.min() >= -1 and sw.max() <= 1
    assert sw[0, 16, 16, 0] == pytest.approx(ramp[0, 16, 16, 0], abs=1e-6)
    other = np.full((40, 32, 32, 1), 5.0, np.float32)
    mixed = fv.corrupt("mix", x, 0.25, other=other, seed=0)
    assert int((mixed.reshape(40, -1) == 5.0).all(1).sum()) == 10
    with pytest.raises(ValueError, match="another source"):
        fv.corrupt("mix", x, 0.5, other=None, seed=0)


def test_validate_table_on_phantoms_with_pixel_features():
    # A fixed random projection of the pixels stands in for the classifier's features.
    real = fv.phantom_images("chest", 80, 16, seed=3)
    other = fv.phantom_images("spine", 40, 16, seed=4)
    proj = np.random.default_rng(0).normal(size=(16 * 16, 12)) / 16
    embed = lambda x: x.reshape(len(x), -1) @ proj
    strengths = {"noise": (0.0, 0.2, 0.6), "mix": (0.0, 0.5, 1.0)}
    result = fv.validate(real[:40], real[40:], embed, other=other, strengths=strengths, kid_subset_size=20)
    rows = result["rows"]
    assert [(r["corruption"], r["strength"]) for r in rows] == [
        ("noise", 0.0), ("noise", 0.2), ("noise", 0.6), ("mix", 0.0), ("mix", 0.5), ("mix", 1.0)]
    assert rows[0]["fid"] == pytest.approx(quality.fid(embed(real[:40]), embed(real[40:])))
    assert rows[0]["fid"] == rows[3]["fid"]  # strength 0: the same baseline for every corruption
    assert result["monotonic"] == {"noise": True, "mix": True}
    md = fv.render_markdown(result)
    assert "| noise | 0.6 std |" in md and "noise yes, mix yes" in md
    # Repeats: mean and sd per cell; two identical runs have sd 0 and are both monotonic.
    twice = fv.aggregate([result, result])
    assert twice["rows"][2]["fid"] == rows[2]["fid"] and twice["rows"][2]["fid_sd"] == 0
    assert twice["monotonic_runs"] == {"noise": 2, "mix": 2}
    assert "mean ± sd over 2 repeats" in fv.render_markdown(twice)


def test_rank_checkpoints_scores_every_saved_step_like_the_evaluate_command(tmp_path):
    import jax

    from jaxmedgan import checkpointing, sampling
    from jaxmedgan.evaluators import features
    from jaxmedgan.studies import quality_cli
    from jaxmedgan.models import trained_classifier
    from tests.studies.quality_cli_test import checkpoint_random, tiny_gan_config
    from tests.trainers.classifier_test import tiny_config as tiny_classifier_config

    gan_wd, clf_wd = tmp_path / "gan", tmp_path / "clf"
    config = tiny_gan_config(tmp_path / "data")
    config.checkpoint.keep = 5
    checkpoint_random(gan_wd, config, step=2)
    checkpoint_random(clf_wd, tiny_classifier_config())
    trained_classifier.write_classes(str(clf_wd), ("cyst", "metastasis", "hemangioma"), False)
    extractor = features.domain(str(clf_wd))
    with pytest.raises(ValueError, match="at least 2"):
        fv.rank_checkpoints(str(gan_wd), extractor, num=12)
    _, state, _ = sampling.restore_state(str(gan_wd))
    later = state.replace(g_params=jax.tree_util.tree_map(lambda p: 0.5 * p, state.g_params))
    mngr = checkpointing.manager(str(gan_wd), max_to_keep=5, async_save=False)
    checkpointing.save(mngr, 4, later, config)
    mngr.wait_until_finished()

    result = fv.rank_checkpoints(str(gan_wd), extractor, num=12, reals="train", seed=3)
    assert [r["step"] for r in result["rows"]] == [2, 4]
    assert result["rows"][0]["fid_domain"] != result["rows"][1]["fid_domain"]
    # The latest checkpoint's value equals what `jaxmedgan evaluate` computes on the same seeds.
    report = quality_cli.evaluate(str(gan_wd), metrics="fid", num=12, extractor=extractor, reals="train", seed=3)
    assert result["rows"][1]["fid_domain"] == pytest.approx(report["metrics"]["fid_domain"], rel=1e-6)
    assert abs(result["spearman_step_fid"]) == pytest.approx(1.0)
    assert "| 4 | " in fv.render_ranking(result)
