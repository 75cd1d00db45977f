"""Dual GAN on the scikit-image fundus: both stages train into one workdir, stage II respects the
stage-I masks (vessels darker than background), `jaxmedgan sample` writes mask + image pairs; stage
I is the DCGAN (shared fixture) or StyleGAN2 (a tiny 16 px run)."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import dual_gan_retina
from jaxmedgan import main as cli
from jaxmedgan import sampling
from jaxmedgan.trainers import dual_gan, stylegan2

MARGIN = 0.05  # green-channel background - vessel mean, [-1, 1] units (real crops: ~0.14)


def tiny_config(steps1=300, steps2=120):
    c = dual_gan_retina.get_config("gan")  # the DCGAN stage I, whatever the default
    c.mesh.data = 1
    c.mask_threshold = "fraction"  # a 300-step DCGAN's output has not crossed 0 yet
    c.data.image_size, c.data.crop_px, c.data.train_crops, c.data.test_crops = 32, 32, 64, 16
    for stage, steps in (("stage1", steps1), ("stage2", steps2)):
        s = c[stage]
        s.train.steps, s.train.batch_size, s.train.quiet = steps, 8, True
        s.train.log_every = s.train.eval_every = s.checkpoint.every = s.samples.every = steps
        s.samples.per_row = 4
        s.checkpoint.async_save = False
    c.stage1.model.update(latent_dim=8, g_features=8, d_features=8, max_features=16)
    c.stage1.optim.g_lr = c.stage1.optim.d_lr = 5e-4
    c.stage2.model.update(g_features=4, g_max_features=16, d_features=4, d_max_features=16,
                          d_num_strided=1)
    c.stage2.optim.g_lr = c.stage2.optim.d_lr = 2e-3
    return c


@pytest.fixture
def workdir(dual_gan_workdir):
    return dual_gan_workdir  # tests/conftest.py: trained once, shared with tests/export_test.py


def test_workdir_holds_both_stages(workdir):
    assert json.load(open(workdir / "config.json"))["trainer"] == "dual_gan"
    for stage, trainer in (("stage1", "gan"), ("stage2", "pix2pix")):
        assert json.load(open(workdir / stage / "config.json"))["trainer"] == trainer
        assert os.listdir(workdir / stage / "checkpoints")
    assert json.load(open(workdir / "stage2" / "config.json"))["data"]["channels"] == 3


def test_stage_two_output_respects_the_stage_one_mask(workdir):
    drawn = dual_gan.draw(str(workdir), 16, seed=0)
    imgs, masks = drawn["images"], drawn["masks"]
    assert imgs.shape == (16, 32, 32, 3) and masks.shape == (16, 32, 32)
    assert set(np.unique(masks)) <= {0, 1} and 0 < masks.mean() < 0.9
    green = imgs[..., 1].astype(np.float32) / 127.5 - 1.0
    both = [i for i in range(16) if 0 < masks[i].mean() < 1]
    assert len(both) >= 8
    gaps = [green[i][masks[i] == 0].mean() - green[i][masks[i] == 1].mean() for i in both]
    assert np.mean(gaps) > MARGIN, gaps
    assert np.mean(np.asarray(gaps) > 0) >= 0.75  # most pairs individually


def test_sample_command_writes_mask_image_pairs(workdir, tmp_path):
    out = tmp_path / "samples"
    assert cli.main(["jaxmedgan", "sample", "--workdir", str(workdir), "--num", "3", "--out", str(out),
                     "--seed", "1"]) == 0
    npz = np.load(out / "samples.npz")
    assert npz["images"].shape == (3, 32, 32, 3) and npz["masks"].shape == (3, 32, 32)
    assert int(npz["checkpoint_step_stage1"]) == 300 and int(npz["checkpoint_step_stage2"]) == 120
    mask_png = np.asarray(Image.open(out / "000000_mask.png"))
    np.testing.assert_array_equal(mask_png, npz["masks"][0] * 255)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "000000.png")), npz["images"][0])
    assert cli.main(["jaxmedgan", "sample", "--workdir", str(workdir), "--num", "2", "--out",
                     str(tmp_path / "s2"), "--class", "1"]) == 1


def tiny_stylegan2_config(steps1=8):
    """tiny_config with a 16-channel StyleGAN2 stage I (batch 8, fast compile); stage II and data
    as tiny_config, so the shared fixture's stage-II checkpoint resumes into it."""
    c = tiny_config()
    c.stage1_family = "stylegan2"
    s = c.stage1 = dual_gan_retina.stage1_stylegan2()
    s.train.steps, s.train.batch_size, s.train.quiet, s.train.fast_compile = steps1, 8, True, True
    s.train.log_every = s.train.eval_every = s.checkpoint.every = s.samples.every = steps1
    s.samples.per_row = 4
    s.checkpoint.async_save = False
    s.model.update(latent_dim=16, w_dim=16, channel_base=256, channel_max=16)
    s.loss.pl_weight = 0.0  # no path-length phase to compile (tests/trainers/stylegan2_test.py covers it)
    return c


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_stylegan2_stage_one_trains_and_draws_mask_image_pairs(workdir, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(workdir / "stage2", wd / "stage2")  # stage II resumes at its last step: 0 steps
    states = dual_gan.train_and_evaluate(tiny_stylegan2_config(), str(wd))
    assert "g_ema_params" in states["stage1"].extra  # a StyleGAN2 state, not a DCGAN one
    cfg1 = json.load(open(wd / "stage1" / "config.json"))
    assert json.load(open(wd / "config.json"))["stage1_family"] == "stylegan2"
    assert cfg1["trainer"] == "stylegan2" and cfg1["model"]["num_classes"] == 0
    assert cfg1["data"]["channels"] == 1 and cfg1["data"]["image_size"] == 32
    assert cfg1["loss"]["r1_gamma"] == pytest.approx(0.0002 * 32**2 / 8)  # 'auto' resolved
    assert os.listdir(wd / "stage1" / "checkpoints") and os.listdir(wd / "stage1" / "samples")

    drawn = dual_gan.draw(str(wd), 8, seed=3)
    masks, imgs = drawn["masks"], drawn["images"]
    assert masks.shape == (8, 32, 32) and imgs.shape == (8, 32, 32, 3) and imgs.dtype == np.uint8
    assert drawn["step"] == {"stage1": 8, "stage2": 120}
    # The masks are the StyleGAN2 G-EMA images, thresholded at the training vessel fraction.
    cfg, state, _ = sampling.restore_state(str(wd / "stage1"))
    raw, _ = sampling.generate(cfg, state, stylegan2.FAMILY, 8, None, 3)
    x = raw[..., 0].astype(np.float32).reshape(8, -1)
    fraction = json.load(open(wd / dual_gan.MASK_STATS))["vessel_fraction"]
    cut = np.quantile(x, 1.0 - fraction, axis=1)[:, None]
    np.testing.assert_array_equal(masks.reshape(8, -1), (x > cut).astype(np.uint8))
    assert 0 < masks.mean() < 0.5


def test_config_without_stage1_family_means_dcgan(workdir, tmp_path):
    """A workdir written before `stage1_family` existed still samples (as a DCGAN stage I)."""
    wd = tmp_path / "old"
    shutil.copytree(workdir, wd)
    cfg = json.load(open(wd / "config.json"))
    assert cfg.pop("stage1_family") == "gan"
    json.dump(cfg, open(wd / "config.json", "w"))
    old = dual_gan.draw(str(wd), 4, seed=5)
    np.testing.assert_array_equal(old["masks"], dual_gan.draw(str(workdir), 4, seed=5)["masks"])
    cfg["stage1_family"] = "stylegan2"  # contradicts W/stage1 (a DCGAN): refused, naming both
    json.dump(cfg, open(wd / "config.json", "w"))
    with pytest.raises(ValueError, match="stage1_family='stylegan2' but config.stage1 is a 'gan'"):
        dual_gan.draw(str(wd), 2, seed=0)


def test_stage1_family_selects_and_checks_the_stage_one_config():
    sg2 = dual_gan_retina.get_config("stylegan2")
    assert sg2.stage1.trainer == "stylegan2" and dual_gan.stage1_family(sg2) == "stylegan2"
    cfg1 = dual_gan.stage_config(sg2, "stage1")
    assert cfg1.loss.r1_gamma == pytest.approx(0.0002 * 32**2 / sg2.stage1.train.batch_size)
    assert cfg1.model.num_classes == 0 and cfg1.data.channels == 1 and cfg1.ada.mode == "adaptive"
    assert dual_gan_retina.get_config("gan").stage1.trainer == "gan"
    with pytest.raises(ValueError, match="stage-I family must be one of"):
        dual_gan_retina.get_config("pggan")
    mixed = dual_gan_retina.get_config("gan")
    mixed.stage1_family = "stylegan2"
    with pytest.raises(ValueError, match="configs/dual_gan_retina.py:stylegan2"):
        dual_gan.stage_config(mixed, "stage1")
