"""`jaxmedgan evaluate --metrics ...` (quality_cli) end to end on a tiny DCGAN and a tiny domain
classifier trained on the 16 px liver phantoms, plus the periodic-metrics hook for training."""
import functools
import json
import os

import jax
import numpy as np
import pytest

from configs import dcgan_liver
from jaxmedgan import checkpointing, metric_writers, sampling, trainers
from jaxmedgan.trainers import classifier
from jaxmedgan.evaluators import features, quality, quality_cli
from tests.trainers.classifier_test import tiny_config as tiny_classifier_config


def tiny_gan_config(data_dir):
    c = dcgan_liver.get_config()
    c.data.data_dir = str(data_dir)
    c.data.image_size = 16
    c.model.g_features = c.model.d_features = 4
    c.model.latent_dim = 8
    c.train.steps = 2
    c.train.batch_size = 8
    c.train.quiet = True
    c.train.log_every = c.train.eval_every = c.checkpoint.every = c.samples.every = 2
    c.samples.per_row = 2
    c.checkpoint.async_save = False
    return c


def checkpoint_random(workdir, config, step=2):
    """A workdir holding checkpoint `step` of a random state of the trainer's state structure (from
    `eval_shape` of its init): what training writes, without compiling init or train steps (a minute
    each on a busy 2-core CPU); the metrics' wiring does not need trained networks."""
    module = trainers.get(config.trainer)
    init = module.FAMILY.init_state if hasattr(module, "FAMILY") else module.init_state
    abstract = jax.eval_shape(functools.partial(init, config), jax.random.PRNGKey(config.seed))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        if not np.issubdtype(leaf.dtype, np.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        if "var" in jax.tree_util.keystr(path):  # BatchNorm running variances stay positive
            return np.ones(leaf.shape, leaf.dtype)
        return (0.2 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    state = jax.tree_util.tree_map_with_path(fill, abstract)
    checkpointing.write_config(str(workdir), config)
    mngr = checkpointing.manager(str(workdir), async_save=False)
    checkpointing.save(mngr, step, state, config)
    mngr.wait_until_finished()


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    gan_wd, clf_wd = root / "gan", root / "clf"
    checkpoint_random(gan_wd, tiny_gan_config(root / "data"))
    clf_config = tiny_classifier_config()
    checkpoint_random(clf_wd, clf_config)
    classifier.write_classes(str(clf_wd), ("cyst", "metastasis", "hemangioma"), False)
    return gan_wd, clf_wd


@pytest.fixture
def shared_extractors(monkeypatch):
    """features.make memoised, so the test's recomputation reuses the command's compiled extractor."""
    made, real_make = {}, features.make

    def make(kind, **kwargs):
        key = (kind, tuple(sorted(kwargs.items())))
        if key not in made:
            made[key] = real_make(kind, **kwargs)
        return made[key]

    monkeypatch.setattr(features, "make", make)
    return make


def test_quality_command_writes_domain_metrics(workdirs, shared_extractors, capsys):
    gan_wd, clf_wd = workdirs
    argv = ["--workdir", str(gan_wd), "--metrics", "fid,kid,pr", "--num", "20", "--classifier", str(clf_wd),
            "--kid-subset-size", "10", "--kid-subsets", "4", "--k", "3", "--seed", "1", "--save-samples"]
    assert quality_cli.quality_command(argv) == 0
    report = json.load(open(gan_wd / "eval" / "metrics.json"))
    assert report["checkpoint_step"] == 2
    got = report["metrics"]
    names = {"fid_domain", "kid_domain", "kid_std_domain", "precision_domain", "recall_domain",
             "density_domain", "coverage_domain"}
    assert set(got) == names  # never a bare "fid" from domain features
    run = report["runs"]["domain"]
    assert run["num_fake"] == 20 and run["num_real"] == 20
    assert run["reals"] == "test"  # auto: the phantoms' held-out split, not the training images

    # Recompute from the same samples and real images through the library functions.
    saved = np.load(gan_wd / "eval" / "samples.npz")
    fake = saved["images"]
    assert fake.shape == (20, 16, 16, 1) and fake.dtype == np.uint8 and int(saved["step"]) == 2
    assert len(np.unique(fake.reshape(20, -1), axis=0)) == 20  # 20 different samples were scored
    real = quality_cli.real_images(checkpointing.read_config(str(gan_wd)), 20, "test", 2)
    ex = shared_extractors("domain", classifier=str(clf_wd), inception_weights=None)
    want = quality.compute(features.extract(ex, real), features.extract(ex, fake), "fid,kid,pr",
                           suffix="_domain", kid_subset_size=10, kid_subsets=4, k=3, seed=1)
    for name in names:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-9), name
    assert got["fid_domain"] > 0 and 0 <= got["coverage_domain"] <= 1

    records = metric_writers.read_jsonl(gan_wd / "eval" / "metrics.jsonl")
    assert records[-1]["step"] == 2 and records[-1]["quality/fid_domain"] == pytest.approx(got["fid_domain"])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(gan_wd / "eval" / "tensorboard"))
    assert "fid_domain" in capsys.readouterr().out


def test_quality_command_errors_name_the_missing_input(workdirs, tmp_path):
    gan_wd, clf_wd = workdirs
    with pytest.raises(ValueError, match="--classifier"):
        quality_cli.quality_command(["--workdir", str(gan_wd)])
    with pytest.raises(ValueError, match="inception_convert"):
        quality_cli.quality_command(["--workdir", str(gan_wd), "--features", "inception"])
    with pytest.raises(ValueError, match="expected a comma-separated subset"):
        quality_cli.quality_command(["--workdir", str(gan_wd), "--classifier", str(clf_wd), "--metrics", "is"])
    np.savez(tmp_path / "reals.npz", pictures=np.zeros((4, 16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match="no 'images' array"):
        quality_cli.quality_command(["--workdir", str(gan_wd), "--classifier", str(clf_wd), "--num", "4",
                                     "--reals", str(tmp_path / "reals.npz")])


def test_periodic_metrics_for_training(workdirs):
    gan_wd, clf_wd = workdirs
    config, state, _ = sampling.restore_state(str(gan_wd))
    config.eval = {"quality_every": 2, "quality_classifier": str(clf_wd), "quality_num": 12,
                   "quality_metrics": "fid,kid"}
    eval_images = quality_cli.real_images(config, 12, "test", 0)
    measure = quality_cli.periodic_metrics(config, (eval_images, None))
    first = measure(state)
    assert set(first) == {"quality/fid_domain", "quality/kid_domain", "quality/kid_std_domain"}
    assert first == measure(state)  # fixed latents: the same G gives the same value
    assert first["quality/fid_domain"] > 0
    with pytest.raises(ValueError, match="quality_classifier"):
        del config.eval["quality_classifier"]
        quality_cli.periodic_metrics(config, (eval_images, None))
