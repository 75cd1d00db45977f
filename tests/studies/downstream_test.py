"""Downstream study: a tiny run of every experiment on the liver phantoms, synthetic sources, bad inputs."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from configs import acgan_liver, downstream_liver
from jaxmedgan import checkpointing, images
from jaxmedgan import main as cli
from jaxmedgan.data import labeled, phantoms
from jaxmedgan.evaluators import diversity, folds
from jaxmedgan.studies import downstream, synthetic
from tests.studies.inversion_test import random_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "downstream_liver.py")
TINY = ["--config.data.image_size=16", "--config.data.counts=(6,6,6)", "--config.model.features=(4,8)",
        "--config.model.stem_stride=1", "--config.train.batch_size=8", "--config.train.steps=4",
        "--config.mesh.data=1", "--config.optim.warmup_steps=1", "--config.downstream.num_folds=2",
        "--config.downstream.seeds=(0,1)", "--config.downstream.synthetic_per_class=4",
        "--config.downstream.bootstrap_samples=40", "--config.train.quiet=True"]


def tiny_config():
    c = downstream_liver.get_config()
    c.data.image_size, c.data.counts = 16, (6, 6, 6)
    c.model.features, c.model.stem_stride = (4, 8), 1
    c.train.batch_size, c.train.steps, c.optim.warmup_steps = 8, 4, 1
    c.mesh.data = 1
    c.downstream.num_folds, c.downstream.seeds = 2, (0, 1)
    c.downstream.synthetic_per_class, c.downstream.bootstrap_samples = 4, 40
    c.train.quiet = True
    return c


def _samples_npz(path, size=16, per_class=5, seed=777, **extra):
    x, y = phantoms.generate((per_class,) * 3, seed, size)  # stand-in "GAN" samples: other phantoms
    np.savez(path, images=images.to_uint8(x), labels=y.astype(np.int64), **extra)
    return str(path)


def _real():
    return labeled.load(tiny_config(), "train")


def test_tiny_run_of_every_experiment_writes_a_full_report(tmp_path, capsys):
    syn = _samples_npz(tmp_path / "samples.npz")
    dp = _samples_npz(tmp_path / "dp.npz", seed=778)
    out = tmp_path / "report"
    code = downstream.downstream_command(["downstream", "--config", CONFIG, *TINY, "--synthetic", syn,
                                          "--synthetic-dp", dp, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "Report:" in printed and "synthetic diversity ratio per class (pixels" in printed
    report = json.load(open(out / "report.json"))
    assert set(report["experiments"]) == {"real", "real+synthetic", "synthetic", "real+synthetic_dp"}
    for name, r in report["experiments"].items():
        m = r["metrics"]
        assert m["n"] == 2 * 18  # every real image predicted once per seed
        assert set(m["sensitivity"]) == set(m["specificity"]) == set(m["auc"]) == set(phantoms.CLASS_NAMES)
        assert np.asarray(m["confusion_matrix"]).sum() == 36
        for key in ("accuracy", "macro_sensitivity", "macro_specificity", "macro_auc", "sensitivity/cyst",
                    "specificity/hemangioma", "auc/metastasis"):
            lo, hi = r["ci95"][key]
            assert lo is None or lo <= hi, (name, key)
        assert len(r["fold_scores"]) == 2 and len(r["fold_scores"][0]) == 2 and len(r["per_seed"]) == 2
        for fig in [report["figures"][name]["roc"], *report["figures"][name]["confusion"]]:
            assert Image.open(out / fig).size[0] > 300
    assert report["experiments"]["real"]["train_size_mean"] == 9  # half of 18 per fold
    assert report["experiments"]["real+synthetic"]["train_size_mean"] == 9 + 12
    assert report["experiments"]["synthetic"]["train_size_mean"] == 12
    for key in ("real+synthetic vs real", "real+synthetic_dp vs real"):
        c = report["comparisons"][key]
        assert 0 <= c["mcnemar"]["p_value"] <= 1 and 0 <= c["permutation"]["p_value"] <= 1
        assert c["mcnemar"]["n"] == 18 and c["permutation"]["n"] == 4  # 2 seeds x 2 folds
    rows = report["reference"]["rows"]
    assert rows["real"]["theirs"] == {"sensitivity": 0.786, "specificity": 0.884}
    assert rows["real+synthetic"]["theirs"] == {"sensitivity": 0.857, "specificity": 0.924}
    assert rows["real"]["ours"]["sensitivity"] == report["experiments"]["real"]["metrics"]["macro_sensitivity"]
    assert report["synthetic"]["class_counts"] == [4, 4, 4] and not report["synthetic"]["per_fold"]
    assert any("leaked" in w for w in report["warnings"])
    md = (out / "report.md").read_text()
    for text in ("(a) real, classic augmentation", "(d) real + DP synthetic", "McNemar", "78.6", "92.4",
                 "roc_real_plus_synthetic.png", "| hemangioma |", "intra-class diversity ratio (pixel space",
                 "| class | diversity ratio | range | synthetic images | real training images |"):
        assert text in md, text

    # Diversity ratio per class of each source, recomputed for every (seed, fold) from the same sets.
    c = tiny_config()
    real = _real()
    used = synthetic.load(syn, real, c.downstream.synthetic_per_class, c.downstream.synthetic_seed)
    div = report["synthetic"]["diversity"]
    assert set(div["per_class"]) == set(phantoms.CLASS_NAMES) and len(div["per_fold"]) == 4  # 2 seeds x 2 folds
    want = {name: [] for name in phantoms.CLASS_NAMES}
    for seed in (0, 1):
        for f, (train_idx, _) in enumerate(folds.stratified_group_kfold(real.targets, real.groups, 2, seed)):
            train = real.subset(train_idx)
            ref = diversity.class_diversity(used.images, used.targets, train.images, train.targets,
                                            real.class_names, num_bootstrap=0)["per_class"]
            row = next(r for r in div["per_fold"] if (r["seed"], r["fold"]) == (seed, f))
            for name in want:
                assert row["per_class"][name]["ratio"] == pytest.approx(ref[name]["ratio"], rel=1e-9)
                want[name].append(ref[name]["ratio"])
    for name, ratios in want.items():
        v = div["per_class"][name]
        assert v["ratio"] == pytest.approx(np.mean(ratios)) and v["ratio_range"] == pytest.approx(
            [min(ratios), max(ratios)])
        assert v["num_synthetic"] == 4 and v["num_real"] == 3  # half of 6 per class per fold
        assert f"| {name} | {v['ratio']:.2f} |" in md
    assert div["diversity_ratio"] == pytest.approx(np.mean([v["ratio"] for v in div["per_class"].values()]))
    assert report["synthetic_dp"]["diversity"]["per_class"]["cyst"]["ratio"] > 0  # the DP source: its own table
    assert md.count("| class | diversity ratio |") == 2


def test_per_fold_sources_merged_classes_and_real_only_run(tmp_path):
    for f in range(2):
        os.makedirs(tmp_path / "syn" / f"fold{f}")
        _samples_npz(tmp_path / "syn" / f"fold{f}" / "samples.npz", seed=700 + f)
    c = tiny_config()
    c.downstream.seeds = (0,)
    c.downstream.experiments = ("real", "real+synthetic", "synthetic")
    # Two-class task from three source classes (as spine abnormal vs normal): the synthetic labels
    # (source classes) are merged by the same rule as the real ones.
    c.data.relabel = "benign:cyst,hemangioma;malignant:metastasis"
    c.model.num_classes = 2
    report = downstream.run(c, str(tmp_path / "syn"), str(tmp_path / "out"))
    assert report["task"]["class_names"] == ["benign", "malignant"] and report["task"]["class_counts"] == [12, 6]
    assert report["synthetic"]["per_fold"] and report["synthetic"]["num_images"] == [12, 12]
    assert report["synthetic"]["class_counts"] == [8, 4]
    # Diversity is measured in the source classes the GAN was conditioned on, per fold's source.
    div = report["synthetic"]["diversity"]
    assert set(div["per_class"]) == {"cyst", "metastasis", "hemangioma"} and len(div["per_fold"]) == 2
    assert all(0 < v["ratio"] for v in div["per_class"].values())
    assert not report["warnings"] and set(report["experiments"]) == {"real", "real+synthetic", "synthetic"}
    c.downstream.gan_config = ""  # no fold GANs either (tests/evaluators/learning_curve_test.py trains them)
    report = downstream.run(c, None, str(tmp_path / "out2"))  # nothing synthetic: (a) alone
    assert set(report["experiments"]) == {"real"} and report["comparisons"] == {}
    assert set(report["skipped"]) == {"real+synthetic", "synthetic"}
    assert (tmp_path / "out2" / "confusion_real.png").exists()


def _tiny_acgan_workdir(tmp_path, size=16):
    """An ACGAN workdir as `jaxmedgan train` leaves it (config.json + an orbax checkpoint).

    Its weights are random (N(0, 0.02), BatchNorm variances 1): sampling per class does not care
    how long G trained, and compiling GAN init or train steps costs 10-20 s on 2 CPU cores.
    """
    c = acgan_liver.get_config()
    c.data.image_size = size
    c.model.latent_dim, c.model.g_features, c.model.d_features = 8, 4, 4
    state = random_state(c, 0.02)
    wd = str(tmp_path / "acgan")
    mngr = checkpointing.manager(wd, async_save=False)
    checkpointing.save(mngr, 1, state, c)
    mngr.wait_until_finished()
    checkpointing.write_config(wd, c)
    return wd


def test_synthetic_sources_workdir_npz_and_folder(tmp_path):
    real = _real()
    wd = _tiny_acgan_workdir(tmp_path)
    assert synthetic.kind(wd) == "workdir"
    drawn = synthetic.load(wd, real, per_class=3, seed=0)
    assert drawn.images.shape == (9, 16, 16, 1) and drawn.targets.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert -1 <= drawn.images.min() and drawn.images.max() <= 1

    npz = _samples_npz(tmp_path / "s.npz", per_class=6)
    from_npz = synthetic.load(npz, real, per_class=4, seed=0)
    assert from_npz.class_counts().tolist() == [4, 4, 4]
    # Exported folder: images/*.png + labels.csv (file,label) holds the same images.
    folder = tmp_path / "export"
    os.makedirs(folder / "images")
    rows = ["file,label"]
    for i, (img, lab) in enumerate(zip(images.to_uint8(from_npz.images), from_npz.targets)):
        Image.fromarray(img[..., 0]).save(folder / "images" / f"{i:04d}.png")
        rows.append(f"{i:04d}.png,{phantoms.CLASS_NAMES[lab]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    from_folder = synthetic.load(str(folder), real, per_class=4, seed=0)
    np.testing.assert_allclose(np.sort(from_folder.images.ravel()), np.sort(from_npz.images.ravel()), atol=1e-6)
    # The layout `jaxmedgan export` writes (image,mask,label,label_name) reads the same.
    (folder / "labels.csv").write_text("image,mask,label,label_name\n" + "".join(
        f"images/{i:04d}.png,,{lab},{phantoms.CLASS_NAMES[lab]}\n" for i, lab in enumerate(from_npz.targets)))
    exported = synthetic.load(str(folder), real, per_class=4, seed=0)
    np.testing.assert_array_equal(exported.images, from_folder.images)
    np.testing.assert_array_equal(exported.targets, from_folder.targets)
    # class_names in the npz remap label ids by name.
    renamed = _samples_npz(tmp_path / "r.npz", class_names=np.array(["hemangioma", "metastasis", "cyst"]))
    remapped = synthetic.load(renamed, real, per_class=5)
    assert remapped.class_counts().tolist() == [5, 5, 5]
    np.testing.assert_array_equal(remapped.images[remapped.targets == 2], synthetic.load(npz, real, 6).images[:5])

    # A GAN trained at another size is refused, naming the workdir and both shapes.
    c = tiny_config()
    c.data.image_size = 32
    with pytest.raises(ValueError, match=r"acgan \(config.data\) are \(16, 16, 1\).*real images .* are \(32, 32, 1\)"):
        synthetic.load(wd, labeled.load(c, "train"), per_class=2)


def test_bad_inputs_fail_with_clear_messages(tmp_path, capsys):
    real = _real()
    big = _samples_npz(tmp_path / "big.npz", size=32)
    with pytest.raises(ValueError, match=r"big.npz are \(32, 32, 1\) \(H, W, C\) but the real images "
                                         r"\(phantom-liver train\) are \(16, 16, 1\)"):
        synthetic.load(big, real, per_class=2)
    folder = tmp_path / "export"
    os.makedirs(folder / "images")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "images" / "a.png")
    (folder / "labels.csv").write_text("file,label\na.png,cyst\na.png,adenoma\n")
    with pytest.raises(ValueError, match=r"labels.csv row 3: unknown class name 'adenoma'; expected one of "
                                         r"\['cyst', 'metastasis', 'hemangioma'\]"):
        synthetic.load(str(folder), real, per_class=2)
    (folder / "labels.csv").write_text("file,label\na.png,7\n")
    with pytest.raises(ValueError, match=r"labels.csv row 2: class id 7 is out of range"):
        synthetic.load(str(folder), real, per_class=2)
    bad_names = _samples_npz(tmp_path / "n.npz", class_names=np.array(["cyst", "adenoma", "hemangioma"]))
    with pytest.raises(ValueError, match=r"n.npz: unknown class name\(s\) \['adenoma'\]"):
        synthetic.load(bad_names, real, per_class=2)
    np.savez(tmp_path / "uncond.npz", images=np.zeros((3, 16, 16, 1), np.uint8), labels=np.full(3, -1))
    with pytest.raises(ValueError, match="unconditional"):
        synthetic.load(str(tmp_path / "uncond.npz"), real, per_class=2)
    with pytest.raises(FileNotFoundError, match="is none of: a GAN workdir"):
        synthetic.load(str(tmp_path), real, per_class=2)
    # Through the CLI: bad input -> exit 1 with the message; usage errors -> exit 2.
    code = cli.main(["jaxmedgan", "evaluate", "downstream", "--config", CONFIG, *TINY, "--synthetic", big,
                     "--out", str(tmp_path / "o")])
    assert code == 1 and "(32, 32, 1)" in capsys.readouterr().err
    assert downstream.downstream_command(["--config", CONFIG, "--synthetic", big]) == 2
    assert "--out" in capsys.readouterr().err
    assert downstream.downstream_command(["--config", CONFIG, "--config.downstream.foldz=3", "--out", "x"]) == 2
    assert "foldz" in capsys.readouterr().err
