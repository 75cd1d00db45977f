"""Latent class optimisation (jaxmedgan/lco.py) and `jaxmedgan sample --labels` on the chest phantoms."""
import contextlib
import csv
import io
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import pdist

from configs import classifier_liver, dcgan_liver
from jaxmedgan import lco, sampling
from jaxmedgan import main as cli
from jaxmedgan.data import chest_phantoms, labeled
from jaxmedgan.models import trained_classifier
from jaxmedgan.trainers import classifier, common, gan

SIZE = 16  # px
FINDINGS = ("cardiomegaly", "effusion")  # the two findings a 16 px phantom shows plainly
LATENT = 16
LCO_STEPS = 60


class _Source:
    """Random-access GAN training source over phantom images f32 [N,H,W,1]."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": np.int32(0)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(GAN workdir, classifier workdir): a briefly trained 16 px DCGAN and a multi-label CNN on chest phantoms."""
    root = tmp_path_factory.mktemp("lco")
    images, targets = chest_phantoms.generate(256, 0, SIZE, (0.5, 0.5, 0.0, 0.0, 0.0))
    images = labeled._quantise(images)
    data = labeled.LabeledSet(images, targets[:, :2], FINDINGS, multi_label=True, source="chest phantoms")

    c = classifier_liver.get_config()
    c.data.image_size, c.data.multi_label, c.model.num_classes = SIZE, True, 2
    c.data.augment = False  # flips, 90-degree turns and 4 px shifts would hide effusion at 16 px
    c.model.arch, c.model.features, c.model.dropout = "cnn", (8, 16), 0.0
    c.optim.lr, c.optim.warmup_steps = 3e-3, 5
    c.train.batch_size, c.train.steps, c.train.quiet = 16, 300, True  # AUC ~1.0 / 0.9 on held-out phantoms
    c.train.log_every = c.checkpoint.every = c.train.steps
    c.mesh.data, c.checkpoint.async_save = 1, False
    clf_wd = str(root / "classifier")
    classifier.fit(c, clf_wd, data)

    g = dcgan_liver.get_config()
    g.data.image_size, g.model.latent_dim = SIZE, LATENT
    g.model.g_features = g.model.d_features = 8
    g.optim.g_lr = g.optim.d_lr = 1e-3
    g.train.batch_size, g.train.steps, g.train.quiet = 16, 300, True  # ~15 ms a step: compiling dominates
    g.train.log_every = g.checkpoint.every = g.train.steps
    g.samples.every = g.train.eval_every = 10**6
    g.mesh.data, g.checkpoint.async_save = 1, False
    g.lco = ml_collections.ConfigDict({"classifier_workdir": clf_wd, "steps": LCO_STEPS})  # the CLI's defaults
    gan_wd = str(root / "gan")
    common.fit(g, gan_wd, gan.FAMILY, data=(_Source(images), None))
    return gan_wd, clf_wd


@pytest.fixture(scope="module")
def models(trained):
    gan_wd, clf_wd = trained
    config, state, _ = sampling.restore_state(gan_wd)
    clf, names = trained_classifier.load_classifier(clf_wd)
    assert names == FINDINGS
    return (lambda s, z: gan.FAMILY.generate(config, s, z, None)), state, clf


def test_prior_bce_agreement_and_diversity_match_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 7)).astype(np.float32)
    sq = (z.astype(np.float64) ** 2).sum(-1) / 7
    np.testing.assert_allclose(lco.prior_penalty(jnp.asarray(z), "shell"), (sq - 1) ** 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lco.prior_penalty(jnp.asarray(z), "gaussian"), 0.5 * sq, rtol=1e-5)
    with pytest.raises(ValueError, match="prior='laplace'"):
        lco.prior_penalty(jnp.asarray(z), "laplace")
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    y = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    ref = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(lco.bce(jnp.asarray(logits), jnp.asarray(y)), ref, rtol=1e-5)
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.5, 0.1]])
    assert lco.agrees(probs, np.array([1.0, 0.0])).tolist() == [True, False, False]  # 0.5 is not > 0.5
    feats = rng.normal(size=(6, 4))
    np.testing.assert_allclose(lco.diversity(feats), pdist(feats).mean(), rtol=1e-9)
    assert np.isnan(lco.diversity(feats[:1]))


def test_parse_targets_names_none_and_several():
    names = ("cardiomegaly", "effusion", "nodule")
    t, shown = lco.parse_targets("effusion, cardiomegaly;none;;nodule|effusion", names)
    np.testing.assert_array_equal(t, [[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 1, 1]])
    assert shown == ["cardiomegaly+effusion", "none", "none", "effusion+nodule"]
    t, shown = lco.parse_targets("", names)
    np.testing.assert_array_equal(t, [[0, 0, 0]])
    assert shown == ["none"]
    with pytest.raises(ValueError, match=r"unknown finding name\(s\) \['efusion'\].*'cardiomegaly', 'effusion'"):
        lco.parse_targets("cardiomegaly,efusion", names)


# ----------------------------------------------------------------------------------------------
# A toy generator and classifier with hand-written gradients: an independent numpy reference of
# LCO's objective and Adam steps, run latent by latent.

D, K, PIX = 6, 3, 4  # latent dim, findings, pixels of a 2x2 image


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, PIX)).astype(np.float32) * 0.8
    b = rng.normal(size=(PIX, K)).astype(np.float32) * 1.5
    c = rng.normal(size=(K,)).astype(np.float32) * 0.3
    generate = lambda g, z: jnp.tanh(z @ g).reshape(-1, 2, 2, 1)
    logits = lambda p, x: x.reshape(x.shape[0], -1) @ p["b"] + p["c"]
    return generate, logits, jnp.asarray(a), {"b": jnp.asarray(b), "c": jnp.asarray(c)}


def _numpy_lco(a, b, c, z, y, steps, lr, lam, confidence=1.0):
    """Adam (optax defaults) on one latent z [D] towards y [K]; returns (z, objective before each step + after)."""
    cap = np.inf if confidence >= 1 else np.log(confidence / (1 - confidence))
    a, b, c, z, y = (np.asarray(v, np.float64) for v in (a, b, c, z, y))
    m, v, history = np.zeros(D), np.zeros(D), []
    for t in range(steps + 1):
        x = np.tanh(z @ a)
        l = x @ b + c
        p = 1 / (1 + np.exp(-l))
        s = z @ z / D
        active = np.where(y > 0.5, l, -l) < cap  # findings not yet confidently right
        history.append(-np.mean(active * (y * np.log(p) + (1 - y) * np.log(1 - p))) + lam * (s - 1) ** 2)
        if t == steps:
            break
        grad = (((p - y) * active / K) @ b.T * (1 - x ** 2)) @ a.T + lam * 2 * (s - 1) * 2 * z / D
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad ** 2
        z = z - lr * (m / (1 - 0.9 ** (t + 1))) / (np.sqrt(v / (1 - 0.999 ** (t + 1))) + 1e-8)
    return z, np.asarray(history)


@pytest.mark.parametrize("confidence", [1.0, 0.75])
def test_lco_matches_numpy_reference_and_vmap_over_targets_equals_per_target_loop(confidence):
    generate, logits, g, cp = _toy()
    targets = np.array([[0, 0, 0], [1, 0, 1], [1, 1, 1]], np.float32)
    z0 = np.random.default_rng(1).normal(size=(3, 2, D)).astype(np.float32)
    fn = lco.make_optimiser(generate, logits, steps=25, lr=0.05, prior_weight=0.5, confidence=confidence)
    z, losses = fn(g, cp, z0, targets)
    for t in range(3):  # per-target loop through the same jitted optimiser (T = 1)
        z_t, losses_t = fn(g, cp, z0[t:t + 1], targets[t:t + 1])
        np.testing.assert_allclose(np.asarray(z_t[0]), np.asarray(z[t]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(losses_t[:, 0]), np.asarray(losses[:, t]), rtol=1e-5, atol=1e-6)
        ref = [_numpy_lco(g, cp["b"], cp["c"], z0[t, n], targets[t], 25, 0.05, 0.5, confidence) for n in range(2)]
        for n in range(2):  # each latent on its own, in float64: batching changes nothing
            np.testing.assert_allclose(np.asarray(z[t, n]), ref[n][0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(losses[:, t]), np.mean([r[1] for r in ref], 0), rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(losses)[-1] < np.asarray(losses)[0])
    mask = lco.confidence_mask(logits(cp, generate(g, jnp.asarray(z0.reshape(6, D)))), np.repeat(targets, 2, 0),
                               confidence)
    assert (np.asarray(mask).min() == 0) == (confidence < 1)  # the cap already silences some findings at the start


# ----------------------------------------------------------------------------------------------
# The trained chest-phantom models, through `jaxmedgan sample --labels` (one LCO run, shared).

LABELS = "none;cardiomegaly;effusion;cardiomegaly,effusion"
NAMES = ["none", "cardiomegaly", "effusion", "cardiomegaly+effusion"]
NUM = 8


@pytest.fixture(scope="module")
def archive(trained, tmp_path_factory):
    """(out dir, printed text) of `jaxmedgan sample --labels` with the classifier from config.lco."""
    gan_wd, _ = trained
    out = tmp_path_factory.mktemp("archive") / "labelled"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["jaxmedgan", "sample", "--workdir", gan_wd, "--labels", LABELS, "--num", str(NUM),
                         "--out", str(out), "--baseline-num", "128"])
    assert code == 0
    return out, printed.getvalue()


def test_lco_loss_decreases(archive):
    npz = np.load(archive[0] / "samples.npz")
    losses = npz["lco_losses"]
    assert losses.shape == (LCO_STEPS + 1, 4) and np.all(np.isfinite(losses))
    assert np.all(losses[-1] < losses[0] - 0.02), losses[[0, -1]]
    # the shell prior keeps the latents in distribution: ||z||^2 / d near 1
    assert np.all(np.abs((npz["latents"] ** 2).mean(-1) - 1) < 0.5)


def test_lco_agreement_well_above_random_sampling_on_chest_phantoms(archive):
    out, printed = archive
    summary = json.load(open(out / "summary.json"))
    rows = summary["targets"]
    assert [r["target"] for r in rows] == NAMES and summary["baseline_draws"] == 128
    table = lco.format_table(rows)
    lco_rate = np.mean([r["lco_success_rate"] for r in rows])
    random_rate = np.mean([r["random_success_rate"] for r in rows])
    # The four targets partition the classifier's verdicts, so random sampling averages <= 0.25;
    # an optimiser that leaves z where it started scores the random rate.
    assert random_rate <= 0.25 + 1e-9
    assert lco_rate >= random_rate + 0.4, table  # measured 0.88-1.0 vs 0.25 over three LCO seeds
    assert sum(r["lco_success_rate"] >= r["random_success_rate"] + 0.5 for r in rows) >= 2, table
    npz = np.load(out / "samples.npz")
    assert np.mean(npz["success"]) == pytest.approx(lco_rate)
    assert table in printed and f"success rate LCO {lco_rate:.3f} vs random + filter {random_rate:.3f}" in printed


def test_cli_writes_labelled_archive(archive, models):
    out, _ = archive
    npz = np.load(out / "samples.npz")
    n = 4 * NUM
    assert npz["images"].shape == (n, SIZE, SIZE, 1) and npz["images"].dtype == np.uint8
    np.testing.assert_array_equal(npz["labels"], np.repeat([[0, 0], [1, 0], [0, 1], [1, 1]], NUM, axis=0))
    assert npz["probabilities"].shape == (n, 2) and npz["success"].dtype == bool
    assert int(npz["lco_steps"]) == LCO_STEPS and npz["class_names"].tolist() == list(FINDINGS)
    # probabilities and success are the classifier's verdict on the saved (uint8) images
    _, _, clf = models
    probs, _ = lco.classify_uint8(clf, npz["images"])
    np.testing.assert_allclose(probs, npz["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(npz["success"], lco.agrees(npz["probabilities"], npz["labels"]))
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label", "target", "p_cardiomegaly", "p_effusion", "success"]
    assert [r["label"] for r in rows[::NUM]] == ["", "cardiomegaly", "effusion", "cardiomegaly|effusion"]
    assert rows[0]["file"] == "000000_none.png" and rows[-1]["file"] == f"{n - 1:06d}_cardiomegaly+effusion.png"
    assert [int(r["success"]) for r in rows] == npz["success"].astype(int).tolist()
    np.testing.assert_allclose([float(r["p_effusion"]) for r in rows], npz["probabilities"][:, 1], atol=1e-4)
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == [r["file"] for r in rows]
    np.testing.assert_array_equal(np.asarray(Image.open(out / pngs[3])), npz["images"][3, ..., 0])
    # the archive reads back as a multi-label labels-csv set
    back = labeled.read_labels_csv(str(out / "labels.csv"), FINDINGS, multi_label=True)
    np.testing.assert_array_equal(back.targets, npz["labels"])


def test_cli_unknown_finding_fails_with_the_classifier_names(trained, tmp_path, capsys):
    gan_wd, clf_wd = trained
    out = tmp_path / "never"
    code = cli.main(["jaxmedgan", "sample", "--workdir", gan_wd, "--labels", "cardiomegaly,pneumonia",
                     "--num", "2", "--out", str(out), "--classifier", clf_wd, "--lco-steps", "3"])
    err = capsys.readouterr().err
    assert code == 1
    assert "'pneumonia'" in err and "['cardiomegaly', 'effusion']" in err
    assert not out.exists()
