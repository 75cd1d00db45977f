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


@pytest.fixture
def jaxmedgan_log():
    """Messages logged on the 'jaxmedgan' logger during the test (it stops propagating to the root
    logger, so caplog misses it, once a CLI command has set up logging in this process)."""
    import logging

    lines: list[str] = []
    log = logging.getLogger("jaxmedgan")
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(min(old_level or logging.INFO, logging.INFO))
    yield lines
    log.removeHandler(handler)
    log.setLevel(old_level)
