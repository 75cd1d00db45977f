"""Learning curve of the downstream study: leak-free fold GANs, nested stratified fractions, the
sample-selection arms, and the new statistics against independent references (sklearn, hand cases)."""
import json
import math
import os

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from jaxmedgan.data import labeled
from jaxmedgan.evaluators import folds, learning_curve, metrics, plots
from jaxmedgan.studies import downstream
from jaxmedgan.studies import fold_gans
from tests.studies.downstream_test import TINY, _samples_npz, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "downstream_liver.py")
COUNTS = (8, 6, 4)  # unequal classes: the balanced arm has something to add
ARMS = ("real", "real+synthetic", "synthetic", "real+synthetic_filtered", "real+synthetic_balanced")
# A tiny ACGAN at the classifier's 16 px; train.steps=8 is overridden by --gan-steps 4.
GAN_OVERRIDES = ("data.image_size=16", "model.latent_dim=8", "model.g_features=4", "model.d_features=4",
                 "train.steps=8", "train.batch_size=4", "mesh.data=1", "checkpoint.async_save=False")


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """Every fold GAN's `common.fit` jits afresh (10-20 s on 2 CPU cores); XLA's persistent cache makes
    the runs after the first of each shape about 1 s. Restored afterwards."""
    keys = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla_cache")),
            "jax_persistent_cache_min_compile_time_secs": 0, "jax_persistent_cache_min_entry_size_bytes": -1}
    old = {k: getattr(jax.config, k) for k in keys}
    for k, v in keys.items():
        jax.config.update(k, v)
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


def _flags(overrides=GAN_OVERRIDES, experiments=ARMS):
    tiny = [a for a in TINY if not a.startswith("--config.data.counts")]
    return tiny + [f"--config.data.counts={COUNTS}", f"--config.downstream.experiments={tuple(experiments)}",
                   f"--config.downstream.gan_overrides={tuple(overrides)}"]


def _mtimes(root):
    return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
            for d, _, files in os.walk(root) for f in files}


@pytest.mark.slow  # end to end (~30-50 s on 2 cores): the slow set, which CI also runs
def test_leak_free_learning_curve_with_fold_gans_and_selection_arms(tmp_path, capsys, jaxmedgan_log):
    out = tmp_path / "study"
    code = downstream.downstream_command(["downstream", "--config", CONFIG, *_flags(), "--out", str(out),
                                          "--gan-config", "configs/acgan_liver.py", "--gan-steps", "4",
                                          "--real-fractions", "0.5,1.0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Leak-free: yes: one GAN per (fraction, seed, fold)" in captured.out
    assert any(line.startswith("Training gan for 4 steps on 5 real images") and line.endswith(
        os.path.join("gans", "frac0.5", "seed1", "fold0") + ".") for line in jaxmedgan_log)
    assert any(line.startswith("Classifier real+synthetic_balanced (fraction 1, seed 0, fold 1)") for line in jaxmedgan_log)
    report = json.load(open(out / "report.json"))
    design = report["design"]
    assert design["leak_free"].startswith("yes")
    assert design["synthetic_design"] == "one GAN per (fraction, seed, fold), trained on that fold's training images only"
    assert design["gan"]["steps"] == 4 and design["gan"]["eval_data"].startswith("none")  # --gan-steps wins
    assert design["real_fractions"] == [0.5, 1.0] and design["main_fraction"] == 1.0
    assert not report["warnings"]

    # Every fold GAN trained on its (seed, fold)'s training subset only: disjoint from the test fold
    # (recomputed here), nested across fractions, stratified per class.
    c = tiny_config()
    c.data.counts = COUNTS
    real = labeled.load(c, "train")
    assert len(report["learning_curve"]["gans"]) == 2 * 2 * 2
    for seed in (0, 1):
        for f, (train_idx, test_idx) in enumerate(folds.stratified_group_kfold(real.targets, None, 2, seed)):
            recs = {r: fold_gans.read_record(out / "gans" / f"frac{r:g}" / f"seed{seed}" / f"fold{f}") for r in (0.5, 1.0)}
            for r, rec in recs.items():
                idx = np.asarray(rec["train_indices"])
                assert rec["finished"] and rec["steps"] == 4 and rec["test_indices"] == test_idx.tolist()
                assert not np.intersect1d(idx, test_idx).size, (seed, f, r)
                assert set(idx) <= set(train_idx)
                n_c = np.bincount(real.targets[train_idx], minlength=3)
                assert rec["class_counts"] == [max(1, math.ceil(r * n)) for n in n_c], (seed, f, r)
                assert rec["class_counts"] == np.bincount(real.targets[idx], minlength=3).tolist()
            assert set(recs[0.5]["train_indices"]) < set(recs[1.0]["train_indices"]) == set(train_idx.tolist())
            gan_cfg = json.load(open(out / "gans" / "frac0.5" / f"seed{seed}" / f"fold{f}" / "config.json"))
            assert gan_cfg["train"]["steps"] == 4 and gan_cfg["data"]["image_size"] == 16

    lc = report["learning_curve"]
    assert lc["fractions"] == [0.5, 1.0] and lc["experiments"] == list(ARMS)
    for row in lc["per_fraction"]:
        assert set(row["experiments"]) == set(ARMS)
        for e, x in row["experiments"].items():
            for key in ("sensitivity", "specificity", "balanced_accuracy", "macro_auc"):
                lo, hi = x["ci95"][key]
                assert 0 <= lo <= x["metrics"][key] <= hi <= 1, (row["fraction"], e, key)
            if e == "real":
                assert x["vs_real"] is None
                continue
            assert 0 <= x["vs_real"]["mcnemar"]["p_value"] <= 1
            for key in ("balanced_accuracy", "macro_auc"):
                b = x["vs_real"]["paired_bootstrap"][key]
                diff = x["metrics"][key] - row["experiments"]["real"]["metrics"][key]
                assert b["difference"] == pytest.approx(diff, abs=1e-12)
                assert b["ci95"][0] <= b["ci95"][1] and isinstance(b["excludes_zero"], bool)
        # (e) keeps at most every synthetic image it is offered (4 per class per (seed, fold)).
        flt = row["filter"]
        assert all(v["offered"] == 4 * 2 * 2 and 0 <= v["kept"] <= v["offered"] for v in flt["per_class"].values())
        # (f) tops every class up to the largest: per (seed, fold), max_c n_c - n_c synthetic images.
        recs = [fold_gans.read_record(out / "gans" / f"frac{row['fraction']:g}" / f"seed{s}" / f"fold{f}")
                for s in (0, 1) for f in (0, 1)]
        extra = [max(rec["class_counts"]) - np.asarray(rec["class_counts"]) for rec in recs]
        assert list(row["balance"]["per_class_added"].values()) == np.sum(extra, 0).tolist()
        assert sum(row["balance"]["per_class_added"].values()) > 0
        balanced = row["experiments"]["real+synthetic_balanced"]["train_size_mean"]
        assert balanced == pytest.approx(np.mean([3 * max(rec["class_counts"]) for rec in recs]))
    assert report["experiments"]["real"]["train_size_mean"] == 9  # top level: the largest fraction (1.0)
    assert set(report["comparisons"]) == {f"{e} vs real" for e in ARMS if e not in ("real", "synthetic")}
    png = Image.open(out / lc["figure"])
    assert png.size == (960, 440) and len(np.unique(np.asarray(png).reshape(-1, 3), axis=0)) > 10
    md = (out / "report.md").read_text()
    for text in ("## Learning curve", "| 0.5 | 5 | (f) real + synthetic to class balance |", "(e) filter at p >= 0.5",
                 "Synthetic images: one GAN per (fraction, seed, fold)", "![learning curve](learning_curve.png)"):
        assert text in md, text

    # Rerun (the largest fraction, two arms): the finished fold GANs are reused, their files untouched.
    before = _mtimes(out / "gans")
    jaxmedgan_log.clear()
    code = downstream.downstream_command(["downstream", "--config", CONFIG, *_flags(experiments=("real", "synthetic")),
                                          "--out", str(out), "--gan-steps", "4"])
    assert code == 0, capsys.readouterr().err
    assert _mtimes(out / "gans") == before
    again = json.load(open(out / "report.json"))["learning_curve"]["gans"]
    assert len(again) == 4 and all(g["reused"] for g in again)
    assert sum("Reusing the finished GAN" in line for line in jaxmedgan_log) == 4
    # Another GAN config under the same OUT is refused, not overwritten.
    code = downstream.downstream_command(["downstream", "--config", CONFIG, *_flags(experiments=("real", "synthetic")),
                                          "--out", str(out), "--gan-steps", "5"])
    assert code == 1 and "holds a GAN trained with another GAN config" in capsys.readouterr().err
    assert _mtimes(out / "gans") == before


def test_per_fold_sources_are_leak_free_for_one_seed_at_most(tmp_path):
    for f in range(2):
        os.makedirs(tmp_path / "syn" / f"fold{f}")
        _samples_npz(tmp_path / "syn" / f"fold{f}" / "samples.npz", seed=700 + f)
    c = tiny_config()
    c.downstream.experiments = ("real", "real+synthetic")
    report = downstream.run(c, str(tmp_path / "syn"), str(tmp_path / "two_seeds"))  # seeds (0, 1)
    assert report["design"]["leak_free"].startswith("no: folds are redrawn per seed")
    assert report["design"]["synthetic_design"] == "one source per fold (fold<f>), reused for every seed and fraction"
    assert any("redrawn per seed" in w for w in report["warnings"])
    c.downstream.seeds = (0,)
    report = downstream.run(c, str(tmp_path / "syn"), str(tmp_path / "one_seed"))
    assert report["design"]["leak_free"].startswith("only if") and not report["warnings"]
    shared = downstream.run(c, str(tmp_path / "syn" / "fold0" / "samples.npz"), str(tmp_path / "shared"))
    assert shared["design"]["leak_free"].startswith("no: one synthetic source")
    assert shared["design"]["synthetic_design"] == "one shared source"


def test_nested_subsets_are_nested_stratified_and_seeded():
    strata = np.repeat([0, 1, 2], [30, 7, 1])  # 0.1 * 30 = 3.0000000000000004 must keep 3, not 4
    fractions = (0.1, 0.25, 0.5, 1.0)
    subs = learning_curve.nested_subsets(strata, fractions, seed=3, fold=1)
    for r in fractions:
        counts = np.bincount(strata[subs[r]], minlength=3)
        assert counts.tolist() == [max(1, math.ceil(round(r * n, 9))) for n in (30, 7, 1)], r
        assert counts.tolist()[2] == 1  # at least one of every class
    assert subs[0.1].tolist() != [] and np.bincount(strata[subs[0.1]]).tolist() == [3, 1, 1]
    for small, big in zip(fractions, fractions[1:]):
        assert set(subs[small]) < set(subs[big])
    assert subs[1.0].tolist() == list(range(len(strata)))
    # Independent of the other fractions asked for; deterministic per (seed, fold); differs across folds.
    alone = learning_curve.nested_subsets(strata, (0.25,), seed=3, fold=1)
    np.testing.assert_array_equal(alone[0.25], subs[0.25])
    np.testing.assert_array_equal(learning_curve.nested_subsets(strata, fractions, 3, 1)[0.5], subs[0.5])
    assert learning_curve.nested_subsets(strata, (0.5,), 3, 2)[0.5].tolist() != subs[0.5].tolist()


def test_fraction_subsets_keep_groups_whole():
    targets = np.repeat([0, 1], 12)
    groups = np.repeat(np.arange(8), 3)  # 3 images per patient; patients 0-3 class 0, 4-7 class 1
    raw = labeled.LabeledSet(np.zeros((24, 4, 4, 1), np.float32), targets.astype(np.int32), ("a", "b"), groups=groups)
    train_idx = np.arange(24)
    subs = downstream._fraction_subsets(raw, train_idx, (0.5, 1.0), seed=0, fold=0)
    kept_groups = np.unique(groups[subs[0.5]])
    assert len(subs[0.5]) == 12 and all((groups[subs[0.5]] == g).sum() == 3 for g in kept_groups)
    assert np.bincount(targets[subs[0.5]]).tolist() == [6, 6]


@pytest.mark.parametrize("value, message", [
    ((0.0, 1.0), r"entry 0.0 must be in \(0, 1\]"), ((1.5,), r"entry 1.5 must be in \(0, 1\]"),
    (("abc",), r"entry 'abc' is not a number"), ("0.1,x", r"entry 'x' is not a number"), ((), "is empty"),
    ((0.5, 0.5), "lists 0.5 twice"), ((float("nan"),), "must be in")])
def test_bad_real_fractions_are_refused_naming_the_key(value, message):
    with pytest.raises(ValueError, match=r"downstream\.real_fractions.*" + message):
        learning_curve.parse_fractions(value)
    c = tiny_config()
    c.downstream.real_fractions = value if not isinstance(value, str) else tuple(value.split(","))
    with pytest.raises(ValueError, match=r"config\.downstream\.real_fractions"):
        downstream.Options.from_config(c)


def test_cli_refuses_bad_fractions_and_steps(tmp_path, capsys):
    base = ["downstream", "--config", CONFIG, "--out", str(tmp_path / "o")]
    assert downstream.downstream_command(base + ["--real-fractions", "0,1"]) == 1
    assert "--real-fractions (config.downstream.real_fractions) entry '0' must be in (0, 1]" in capsys.readouterr().err
    assert downstream.downstream_command(base + ["--gan-steps", "0"]) == 1
    assert "--gan-steps 0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_gan_config_overrides_parse_and_unknown_keys_are_named(tmp_path):
    c = fold_gans.load_gan_config("configs/acgan_liver.py", ("train.steps=7", "model.cond=projection",
                                                             "train.quiet=True"))
    assert c.train.steps == 7 and c.model.cond == "projection" and c.train.quiet is True and c.model.num_classes == 3
    with pytest.raises(ValueError, match=r"downstream.gan_overrides entry 'train.stepz=3': unknown key 'train.stepz'"
                                         r".*did you mean 'train.steps'"):
        fold_gans.load_gan_config("configs/acgan_liver.py", ("train.steps=7", "train.stepz=3"))
    with pytest.raises(ValueError, match=r"entry 'train.steps' is not 'key=value'"):
        fold_gans.load_gan_config("configs/acgan_liver.py", ("train.steps",))
    with pytest.raises(ValueError, match=r"downstream.gan_overrides: .*train.steps=abc"):
        fold_gans.load_gan_config("configs/acgan_liver.py", ("train.steps=abc",))
    with pytest.raises(FileNotFoundError, match=r"downstream.gan_config='configs/nope.py'"):
        fold_gans.load_gan_config("configs/nope.py")
    # Through the study: refused before anything is trained; a GAN at another size names the fix.
    cfg = tiny_config()
    cfg.downstream.experiments = ("real", "synthetic")
    cfg.downstream.gan_overrides = ("model.nosuch=1",)
    with pytest.raises(ValueError, match="unknown key 'model.nosuch'"):
        downstream.run(cfg, None, str(tmp_path / "a"))
    cfg.downstream.gan_overrides = ()
    with pytest.raises(ValueError, match=r"\(64, 64, 1\).*\(16, 16, 1\); add 'data.image_size=16' to "
                                         r"downstream.gan_overrides"):
        downstream.run(cfg, None, str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a" / "gans") and not os.path.exists(tmp_path / "b" / "gans")


def test_balanced_accuracy_and_macro_auc_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert learning_curve.balanced_accuracy(labels, probs) == pytest.approx(
        balanced_accuracy_score(labels, probs.argmax(1)), abs=1e-12)
    m = metrics.single_label_metrics(labels, probs, ("a", "b", "c"))
    scalars = learning_curve.curve_scalars(m, multi_label=False)
    assert scalars["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, probs.argmax(1)), abs=1e-12)
    assert scalars["macro_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"),
                                                 abs=1e-12)
    # Multi-label: the mean over findings of (sensitivity + specificity) / 2, by hand.
    targets = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    probs_ml = np.array([[0.9, 0.2], [0.4, 0.7], [0.1, 0.6], [0.3, 0.8]])  # finding 0: sens 1/2 spec 1; 1: 1, 1/2
    ml = metrics.multi_label_metrics(targets, probs_ml, ("x", "y"))
    assert learning_curve.curve_scalars(ml, multi_label=True)["balanced_accuracy"] == pytest.approx(0.75)


def test_paired_bootstrap_of_a_difference():
    n = 400
    rng = np.random.default_rng(1)
    right_a = rng.random(n) < 0.7
    right_b = right_a.copy()
    flip = rng.choice(n, 60, replace=False)
    right_b[flip[:45]] = True  # b fixes up to 45 of a's images and breaks 15
    right_b[flip[45:]] = False

    def acc(right):
        return lambda idx: {"acc": float(np.mean(right[idx]))}

    out = learning_curve.paired_bootstrap(acc(right_a), acc(right_b), np.arange(n), ("acc",), num_samples=4000)["acc"]
    d = right_b.astype(float) - right_a.astype(float)
    assert out["difference"] == pytest.approx(d.mean())
    se = d.std() / np.sqrt(n)  # the normal approximation of the bootstrap of a mean of paired differences
    lo, hi = out["ci95"]
    assert lo == pytest.approx(d.mean() - 1.96 * se, abs=0.3 * se) and hi == pytest.approx(d.mean() + 1.96 * se,
                                                                                           abs=0.3 * se)
    assert out["excludes_zero"] == (lo > 0 or hi < 0)
    # The same resample scores both arms: identical arms differ by exactly 0 in every resample.
    same = learning_curve.paired_bootstrap(acc(right_a), acc(right_a), np.arange(n), ("acc",), num_samples=200)["acc"]
    assert same["ci95"] == [0.0, 0.0] and not same["excludes_zero"]
    # Whole groups are drawn: b gains one image and loses the other of every pair, so every resample is 0.
    pair_a, pair_b = np.tile([True, False], 50), np.tile([False, True], 50)
    groups = np.repeat(np.arange(50), 2)
    paired = learning_curve.paired_bootstrap(acc(pair_a), acc(pair_b), groups, ("acc",), num_samples=200)["acc"]
    assert paired["difference"] == 0 and paired["ci95"] == [0.0, 0.0]
    # b right wherever a is and on more: the interval lies above zero.
    better = learning_curve.paired_bootstrap(acc(right_a), acc(right_a | (rng.random(n) < 0.3)), np.arange(n),
                                             ("acc",), num_samples=500)["acc"]
    assert better["ci95"][0] > 0 and better["excludes_zero"]


def test_filter_and_balance_rules():
    probs = np.array([[0.6, 0.4], [0.5, 0.5], [0.7, 0.3], [0.2, 0.8]])
    targets = np.array([0, 1, 1, 1])
    keep = learning_curve.filter_keep(probs, targets, 0.5)
    assert keep.tolist() == [True, True, False, True]  # p >= threshold (inclusive)
    assert learning_curve.filter_keep(probs, targets, 0.0).all() and not learning_curve.filter_keep(probs, targets,
                                                                                                     1.01).any()
    extra = learning_curve.balance_extra(np.array([5, 3, 1]))
    assert extra.tolist() == [0, 2, 4] and (np.array([5, 3, 1]) + extra == 5).all()
    idx, available = learning_curve.first_per_class(np.array([2, 0, 1, 2, 1, 1, 2]), [0, 2, 4])
    assert idx.tolist() == [0, 2, 3, 4, 6] and available.tolist() == [1, 3, 3]  # class 2: 3 of the 4 asked
    assert learning_curve.fitted_batch(32, 100, 8, "x") == 32 and learning_curve.fitted_batch(32, 14, 4, "x") == 12
    with pytest.raises(ValueError, match="x has 3 training images, fewer than the 4"):
        learning_curve.fitted_batch(32, 3, 4, "x")


def test_learning_curve_figure_draws_one_or_several_fractions():
    many = [("real", [(0.1, 0.5, 0.4, 0.6), (1.0, 0.8, 0.7, 0.9)], [(0.1, 0.6, 0.5, 0.7), (1.0, 0.9, 0.85, 0.95)]),
            ("real+synthetic", [(0.1, 0.55, None, None), (1.0, float("nan"), 0.1, 0.2)], [(0.1, 0.7, 0.6, 0.8)])]
    img = plots.learning_curve_figure(many)
    assert img.shape == (440, 960, 3) and img.dtype == np.uint8
    one = plots.learning_curve_figure([("real", [(1.0, 0.8, 0.7, 0.9)], [(1.0, 0.9, 0.8, 1.0)])])
    assert len(np.unique(one.reshape(-1, 3), axis=0)) > 3


@pytest.mark.slow  # end to end: one tiny unconditional GAN per (fold, class)
def test_one_gan_per_class_per_fold_is_leak_free_and_drawn_per_class(tmp_path, capsys, jaxmedgan_log):
    out = tmp_path / "per_class"
    overrides = tuple(o for o in GAN_OVERRIDES if not o.startswith("train.batch_size")) + (
        "train.per_class=True", "train.batch_size=2")
    flags = [a for a in _flags(overrides, ("real", "synthetic")) if not a.startswith("--config.downstream.seeds")]
    code = downstream.downstream_command(["downstream", "--config", CONFIG, *flags, "--config.downstream.seeds=(0,)",
                                          "--out", str(out), "--gan-config", "configs/dcgan_liver.py",
                                          "--gan-steps", "2"])
    assert code == 0, capsys.readouterr().err
    report = json.load(open(out / "report.json"))
    assert report["design"]["leak_free"].startswith("yes") and not report["warnings"]
    c = tiny_config()
    c.data.counts = COUNTS
    real = labeled.load(c, "train")
    for f, (train_idx, test_idx) in enumerate(folds.stratified_group_kfold(real.targets, None, 2, 0)):
        wd = out / "gans" / "frac1" / "seed0" / f"fold{f}"
        rec = fold_gans.read_record(wd)
        assert rec["finished"] and sorted(rec["train_indices"]) == sorted(train_idx.tolist())
        assert not np.intersect1d(rec["train_indices"], test_idx).size
        index = json.load(open(wd / "per_class.json"))
        assert index["classes"] == list(real.class_names) and index["family"] == "gan"
        for k, name in enumerate(real.class_names):  # each class's GAN saw that class's training images only
            n_k = int(np.sum(real.targets[train_idx] == k))
            assert any(line.startswith(f"per_class: training gan on class {name!r} ({n_k} images)")
                       and line.endswith(os.path.join(f"fold{f}", index["workdirs"][name])) for line in jaxmedgan_log)
    assert report["synthetic"]["class_counts"] == [4, 4, 4]  # synthetic_per_class from each class's GAN


def test_fold_gans_accept_one_gan_per_class_and_refuse_a_conditional_one():
    cfg = tiny_config()
    real = labeled.load(cfg, "train")
    gan = fold_gans.load_gan_config("configs/dcgan_liver.py", ("data.image_size=16", "train.per_class=True"))
    fold_gans.check_compatible(gan, real, "configs/dcgan_liver.py")  # unconditional, one per class: fine
    assert fold_gans.run_size(gan, real.subset(np.arange(10))) == int(real.subset(np.arange(10)).class_counts().min())
    with pytest.raises(ValueError, match=r"model.num_classes=0.*train.per_class=True"):
        fold_gans.check_compatible(fold_gans.load_gan_config("configs/dcgan_liver.py", ("data.image_size=16",)),
                                   real, "configs/dcgan_liver.py")
    conditional_per_class = fold_gans.load_gan_config("configs/acgan_liver.py", (
        "data.image_size=16", "train.per_class=True"))
    with pytest.raises(ValueError, match=r"set --config.model.num_classes=0"):
        fold_gans.check_compatible(conditional_per_class, real, "configs/acgan_liver.py")
