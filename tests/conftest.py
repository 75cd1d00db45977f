"""Session-wide fixtures shared by several test modules (trained once per test session)."""
import pytest


@pytest.fixture(scope="session")
def dual_gan_workdir(tmp_path_factory):
    """A briefly trained 32 px dual-GAN workdir (tests/trainers/dual_gan_test.py:tiny_config):
    W (dual_gan), W/stage1 (a DCGAN workdir) and W/stage2 (a pix2pix workdir)."""
    from tests.trainers.dual_gan_test import tiny_config
    from jaxmedgan.trainers import dual_gan

    wd = tmp_path_factory.mktemp("dual") / "run"
    dual_gan.train_and_evaluate(tiny_config(), str(wd))
    return wd
