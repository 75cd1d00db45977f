"""configs/stylegan2_ada_liver.py: the liver StyleGAN2-ADA trains through the CLI on tiny shapes."""
import json
import os

import pytest

from configs import stylegan2_ada_liver
from jaxmedgan import main as cli


def test_config_is_the_spine_stylegan2_on_the_liver_classes():
    c = stylegan2_ada_liver.get_config()
    assert (c.trainer, c.data.source, c.data.image_size, c.model.num_classes) == ("stylegan2", "phantom-liver", 64, 3)
    assert c.loss.r1_gamma == 0.0002 * 64 ** 2 / c.train.batch_size and c.ada.mode == "adaptive"


@pytest.mark.slow  # end to end (~30-50 s on 2 cores): the slow set, which CI also runs
def test_trains_on_tiny_shapes_and_samples_one_row_per_class(tmp_path):
    wd = str(tmp_path / "sg2_liver")
    over = ["--config.data.image_size=16", "--config.model.latent_dim=16", "--config.model.w_dim=16",
            "--config.model.channel_base=128", "--config.model.channel_max=16", "--config.model.d_mapping_layers=2",
            "--config.train.batch_size=8", "--config.train.steps=2", "--config.train.quiet=True",
            "--config.train.fast_compile=True", "--config.samples.every=2",
            "--config.checkpoint.every=2", f"--config.data.data_dir={tmp_path / 'data'}"]
    assert cli.main(["jaxmedgan", "train", "--config", "configs/stylegan2_ada_liver.py", "--workdir", wd, *over]) == 0
    with open(os.path.join(wd, "dataset.json")) as f:
        assert json.load(f)["class_names"] == ["cyst", "metastasis", "hemangioma"]
    assert any(name.endswith(".png") for name in os.listdir(os.path.join(wd, "samples")))
