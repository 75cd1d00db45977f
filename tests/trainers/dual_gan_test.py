"""Dual GAN on the scikit-image fundus: both stages train into one workdir, stage II respects the
stage-I masks (vessels darker than background), `jaxmedgan sample` writes mask + image pairs."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from configs import dual_gan_retina
from jaxmedgan import main as cli
from jaxmedgan.trainers import dual_gan

MARGIN = 0.05  # green-channel background - vessel mean, [-1, 1] units (real crops: ~0.14)


def tiny_config(steps1=300, steps2=120):
    c = dual_gan_retina.get_config()
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
