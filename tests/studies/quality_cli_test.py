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
from jaxmedgan.data import datasets
from jaxmedgan.models import trained_classifier
from jaxmedgan.trainers import common
from jaxmedgan.evaluators import diversity, features, quality, training_quality
from jaxmedgan.studies import quality_cli
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
    family = trainers.family(config.trainer)  # the classifier has no step contract: its own init_state
    init = family.init_state if family.has_steps else trainers.get(config.trainer).init_state
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
    trained_classifier.write_classes(str(clf_wd), ("cyst", "metastasis", "hemangioma"), False)
    return gan_wd, clf_wd


@pytest.fixture(scope="module")
def acgan_workdir(workdirs):
    """A tiny class-conditional (ACGAN) workdir on the same phantoms, with its dataset record (class names)."""
    gan_wd, _ = workdirs
    config = tiny_gan_config(gan_wd.parent / "data")
    config.model.num_classes = 3
    wd = gan_wd.parent / "acgan"
    checkpoint_random(wd, config)
    datasets.record_in_workdir(str(wd), datasets.prepare(config))
    return wd


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


PER_CLASS_KEYS = {"diversity_ratio", "diversity_ratio_ci", "diversity_ratio_feature", "diversity_ratio_feature_ci",
                  "diversity_fake", "diversity_real", "fid", "recall", "recall_ci", "coverage", "coverage_ci",
                  "precision", "precision_ci", "density", "density_ci", "num_fake", "num_real"}


def test_per_class_command_scores_each_class_like_the_library(workdirs, acgan_workdir, shared_extractors, capsys):
    _, clf_wd = workdirs
    argv = ["--workdir", str(acgan_workdir), "--metrics", "diversity,pr,fid", "--per-class", "--num", "8",
            "--classifier", str(clf_wd), "--k", "3", "--seed", "1", "--bootstrap", "20", "--save-samples"]
    assert quality_cli.quality_command(argv) == 0
    report = json.load(open(acgan_workdir / "eval" / "metrics.json"))
    names = ["cyst", "metastasis", "hemangioma"]  # from the workdir's dataset record
    assert set(report["per_class"]) == set(names) and report["per_class_features"] == "domain"
    for name in names:
        assert set(report["per_class"][name]) == PER_CLASS_KEYS
    run = report["runs"]["domain/per_class"]
    assert run["per_class"] and run["num_per_class"] == 8 and run["reals"] == "test"
    assert run["class_names"] == names  # label order (metrics.json sorts keys)
    got = report["metrics"]
    assert set(got) == {"diversity_ratio", "diversity_ratio_min", "diversity_ratio_feature_domain",
                        "intra_fid_domain", "fid_domain", "precision_domain", "recall_domain", "density_domain",
                        "coverage_domain"}
    assert run["pooled_metrics"] == ["fid_domain"]

    # Recompute from the saved samples and the same real images through the library functions.
    saved = np.load(acgan_workdir / "eval" / "samples.npz")
    fake, fake_y = saved["images"], saved["labels"]
    assert fake.shape == (24, 16, 16, 1) and fake_y.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert list(saved["class_names"]) == names
    config = checkpointing.read_config(str(acgan_workdir))
    real, real_y = quality_cli.real_images_labelled(config, 8, "test", 2, 3)
    assert np.bincount(real_y).tolist() == [8, 8, 8]  # the phantoms hold out 30 per class
    ex = shared_extractors("domain", classifier=str(clf_wd), inception_weights=None)
    f_real, f_fake = features.extract(ex, real), features.extract(ex, fake)
    fake_px = fake.astype(np.float32) / 127.5 - 1.0
    px = diversity.class_diversity(fake_px, fake_y, real, real_y, names, num_bootstrap=20, seed=1)["per_class"]
    ft = diversity.class_diversity(f_fake, fake_y, f_real, real_y, names, num_bootstrap=20, seed=1)["per_class"]
    for c, name in enumerate(names):
        v, r, f = report["per_class"][name], f_real[real_y == c], f_fake[fake_y == c]
        assert v["num_fake"] == v["num_real"] == 8
        assert v["diversity_ratio"] == pytest.approx(px[name]["ratio"], rel=1e-6)
        np.testing.assert_allclose(v["diversity_ratio_ci"], px[name]["ratio_ci"], rtol=1e-6)
        assert v["diversity_ratio_feature"] == pytest.approx(ft[name]["ratio"], rel=1e-5)
        assert v["fid"] == pytest.approx(quality.fid(r, f), rel=1e-5, abs=1e-9)
        want = quality.prdc(r, f, k=3)
        cis = quality.prdc_bootstrap(r, f, 3, num_bootstrap=20, seed=(1, c))
        for p in quality.PRDC:
            assert v[p] == pytest.approx(want[p]) and v[f"{p}_ci"] == pytest.approx(cis[p]), (name, p)
        assert v["diversity_ratio_ci"][0] <= v["diversity_ratio"] <= v["diversity_ratio_ci"][1]
    per = report["per_class"]
    assert got["diversity_ratio"] == pytest.approx(np.mean([per[n]["diversity_ratio"] for n in names]))
    assert got["recall_domain"] == pytest.approx(np.mean([per[n]["recall"] for n in names]))
    assert got["coverage_domain"] == pytest.approx(np.mean([per[n]["coverage"] for n in names]))
    assert got["intra_fid_domain"] == pytest.approx(np.mean([per[n]["fid"] for n in names]))
    assert got["fid_domain"] == pytest.approx(quality.fid(f_real, f_fake), rel=1e-5)  # pooled over classes
    out = capsys.readouterr().out
    assert "diversity ratio (features)" in out and "hemangioma" in out and "(mean over classes)" in out
    records = metric_writers.read_jsonl(acgan_workdir / "eval" / "metrics.jsonl")
    assert records[-1]["quality_per_class/cyst/diversity_ratio"] == pytest.approx(per["cyst"]["diversity_ratio"])

    # 'diversity' alone on a conditional workdir is scored per class without the flag.
    assert quality_cli.quality_command(["--workdir", str(acgan_workdir), "--metrics", "diversity", "--num", "4",
                                        "--classifier", str(clf_wd), "--bootstrap", "0"]) == 0
    report = json.load(open(acgan_workdir / "eval" / "metrics.json"))
    assert report["per_class"]["cyst"]["num_fake"] == 4 and report["per_class"]["cyst"]["diversity_ratio_ci"] == [
        None, None]  # no resamples, no interval


def test_agreement_is_the_share_of_samples_the_classifier_labels_as_requested(workdirs, acgan_workdir,
                                                                               shared_extractors, capsys):
    _, clf_wd = workdirs
    argv = ["--workdir", str(acgan_workdir), "--metrics", "agreement", "--num", "8", "--classifier", str(clf_wd),
            "--seed", "1", "--bootstrap", "50", "--save-samples"]
    assert quality_cli.quality_command(argv) == 0  # 'agreement' alone turns per-class on
    report = json.load(open(acgan_workdir / "eval" / "metrics.json"))
    saved = np.load(acgan_workdir / "eval" / "samples.npz")
    clf, clf_names = trained_classifier.load_classifier(str(clf_wd))
    names = ["cyst", "metastasis", "hemangioma"]
    assert list(clf_names) == names
    pred = np.argmax(np.asarray(clf(saved["images"].astype(np.float32) / 127.5 - 1.0)), -1)  # independent path
    config = checkpointing.read_config(str(acgan_workdir))
    real, real_y = quality_cli.real_images_labelled(config, 8, "test", 2, 3)
    real_pred = np.argmax(np.asarray(clf(real)), -1)
    for c, name in enumerate(names):
        v = report["per_class"][name]
        assert v["agreement"] == pytest.approx(np.mean(pred[saved["labels"] == c] == c))
        assert v["agreement_real"] == pytest.approx(np.mean(real_pred[real_y == c] == c))
        assert v["agreement_ci"][0] <= v["agreement"] <= v["agreement_ci"][1]
    per = [report["per_class"][n]["agreement"] for n in names]
    assert report["metrics"]["class_agreement"] == pytest.approx(np.mean(per))
    assert report["metrics"]["class_agreement_min"] == pytest.approx(min(per))
    assert "classifier agrees" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no classifier head"):
        quality_cli._predict_as(features.Extractor("inception", lambda x: x, "", "stub"), real, names, 8)


def _periodic(config, eval_data):
    """The training loop's quality callback (`trainers.common.fit`) for `config.trainer`'s family."""
    return training_quality.periodic_metrics(config, eval_data, trainers.get(config.trainer).FAMILY.generate,
                                             common.latent_batch)


def test_periodic_metrics_per_class_during_training(workdirs, acgan_workdir):
    _, clf_wd = workdirs
    config, state, _ = sampling.restore_state(str(acgan_workdir))
    config.eval = {"quality_every": 2, "quality_classifier": str(clf_wd), "quality_num": 9,
                   "quality_metrics": "fid,pr", "quality_per_class": True}
    real, real_y = quality_cli.real_images_labelled(config, 7, "test", 0, 3)  # 21 > quality_num: all are used
    measure = _periodic(config, (real, real_y))
    got = measure(state)
    per_class = {f"quality/{key}_domain_class{c}" for c in range(3) for key in ("fid", *quality.PRDC)}
    agreement = {f"quality/agreement_class{c}" for c in range(3)}
    assert per_class | agreement | {"quality/class_agreement"} <= set(got)
    assert got["quality/class_agreement"] == pytest.approx(np.mean([got[k] for k in sorted(agreement)]))
    assert all(0.0 <= got[k] <= 1.0 for k in agreement)
    assert all(np.isfinite(got[k]) for k in per_class)  # 7 reals and 9 samples per class > k = 5
    np.testing.assert_equal(got, measure(state))  # fixed latents


def test_labelled_reals_from_train_and_npz(acgan_workdir, tmp_path):
    config = checkpointing.read_config(str(acgan_workdir))
    x, y = quality_cli.real_images_labelled(config, 4, "train", 0, 3)
    assert x.shape == (12, 16, 16, 1) and np.bincount(y).tolist() == [4, 4, 4] and -1 <= x.min() <= x.max() <= 1
    train, _ = datasets.load(config)
    by_image = {train[i]["image"].tobytes(): int(train[i]["label"]) for i in range(len(train))}
    assert [by_image[np.round((img + 1) * 127.5).astype(np.uint8).tobytes()] for img in x] == y.tolist()
    np.savez(tmp_path / "r.npz", images=np.zeros((5, 16, 16, 1), np.uint8), labels=np.array([0, 0, 1, 2, 2]))
    x, y = quality_cli.real_images_labelled(config, 1, str(tmp_path / "r.npz"), 0, 3)
    assert y.tolist() == [0, 1, 2] and x.dtype == np.float32 and (x == -1).all()
    np.savez(tmp_path / "n.npz", images=np.zeros((2, 16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match="needs 'images' and 'labels'"):
        quality_cli.real_images_labelled(config, 1, str(tmp_path / "n.npz"), 0, 3)


def test_per_class_needs_a_class_conditional_workdir(workdirs):
    gan_wd, clf_wd = workdirs
    with pytest.raises(ValueError, match=r"--per-class needs a class-conditional GAN workdir .*num_classes=0"):
        quality_cli.quality_command(["--workdir", str(gan_wd), "--classifier", str(clf_wd), "--per-class"])
    with pytest.raises(ValueError, match=r"'diversity' metric \(within classes\) needs a class-conditional"):
        quality_cli.quality_command(["--workdir", str(gan_wd), "--classifier", str(clf_wd), "--metrics", "diversity"])


def test_periodic_metrics_for_training(workdirs):
    gan_wd, clf_wd = workdirs
    config, state, _ = sampling.restore_state(str(gan_wd))
    config.eval = {"quality_every": 2, "quality_classifier": str(clf_wd), "quality_num": 12,
                   "quality_metrics": "fid,kid"}
    eval_images = quality_cli.real_images(config, 12, "test", 0)
    measure = _periodic(config, (eval_images, None))
    first = measure(state)
    assert set(first) == {"quality/fid_domain", "quality/kid_domain", "quality/kid_std_domain"}
    assert first == measure(state)  # fixed latents: the same G gives the same value
    assert first["quality/fid_domain"] > 0
    with pytest.raises(ValueError, match="quality_classifier"):
        del config.eval["quality_classifier"]
        _periodic(config, (eval_images, None))


def test_write_npz_is_atomic_and_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    import numpy as np
    import pytest as _pytest

    from jaxmedgan import atomic_io

    path = tmp_path / "sub" / "a.npz"
    atomic_io.write_npz(str(path), {"x": np.arange(3)})
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(3))

    def torn(file, **arrays):  # writes part of the file, then fails (a full disk, a crash)
        with open(file, "wb") as f:
            f.write(b"PK")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", torn)
    with _pytest.raises(OSError, match="disk full"):
        atomic_io.write_npz(str(path), {"x": np.arange(2)}, compressed=False)
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(3))  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npz"]  # no temporary left
