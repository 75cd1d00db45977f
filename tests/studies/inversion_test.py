"""GAN inversion: the pure pieces against independent formulas, recovery of a generator's own images
(DCGAN/ACGAN in z here; StyleGAN2 in W and W+ with noise, slow), held-out reals, and `jaxmedgan project`
end to end with resume."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxmedgan import main as cli
from jaxmedgan import trainers
from jaxmedgan.data import datasets, phantoms
from jaxmedgan.studies import inversion
from tests.studies.quality_cli_test import checkpoint_random, tiny_gan_config


def random_state(config, scale, zero_bias=False):
    """A state of the trainer's structure with N(0, scale^2) floats (BatchNorm variances 1; biases 0
    if zero_bias): a generator whose images depend strongly on z (DCGAN: scale 0.5; PGGAN: 2 with
    zero biases), without compiling init."""
    module = trainers.get(config.trainer)
    abstract = jax.eval_shape(functools.partial(module.FAMILY.init_state, config), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        if not np.issubdtype(leaf.dtype, np.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        if "var" in jax.tree_util.keystr(path):
            return np.ones(leaf.shape, leaf.dtype)
        if zero_bias and "bias" in jax.tree_util.keystr(path):
            return np.zeros(leaf.shape, leaf.dtype)
        return (scale * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _numpy_noise_penalty(plane):
    """NVlabs' penalty for one plane [r, r] by explicit sums over pixels (no np.roll)."""
    total, p = 0.0, np.asarray(plane, np.float64)
    while True:
        r = p.shape[0]
        down = sum(p[i, j] * p[(i - 1) % r, j] for i in range(r) for j in range(r)) / r**2
        right = sum(p[i, j] * p[i, (j - 1) % r] for i in range(r) for j in range(r)) / r**2
        total += down**2 + right**2
        if r <= 8:
            return total
        p = np.array([[p[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for j in range(r // 2)] for i in range(r // 2)])


def test_noise_penalty_matches_explicit_sums_and_punishes_structure():
    rng = np.random.default_rng(0)
    planes = [rng.standard_normal((2, r, r, 1)).astype(np.float32) for r in (4, 16)]
    got = np.asarray(inversion.noise_regulariser([jnp.asarray(p) for p in planes]))
    want = [sum(_numpy_noise_penalty(p[b, ..., 0]) for p in planes) for b in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # A constant plane is perfectly correlated with its shifts: 1 per axis per pyramid level (16, 8 px).
    flat = inversion.noise_regulariser([jnp.ones((1, 16, 16, 1))])
    np.testing.assert_allclose(flat, [4.0], rtol=1e-6)
    assert float(inversion.noise_regulariser([jnp.asarray(planes[1])]).max()) < 0.05  # white noise
    normed = inversion.normalise_planes([jnp.asarray(3.0 + 2.0 * planes[1])])[0]
    np.testing.assert_allclose(np.mean(normed, axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.mean(np.square(normed), axis=(1, 2, 3)), 1.0, rtol=1e-4)


def test_learning_rate_ramps_up_then_down_and_latent_noise_decays():
    s = inversion.Settings(steps=100, lr=0.1, lr_rampup=0.05, lr_rampdown=0.25)
    lr = inversion.learning_rate(s)
    assert float(lr(0)) == 0.0 and float(lr(2)) == pytest.approx(0.04)  # linear over 5 steps
    assert float(lr(50)) == pytest.approx(0.1)
    assert float(lr(100 - 12.5)) == pytest.approx(0.05, abs=1e-6)  # cosine half-way down
    assert float(inversion.latent_noise_scale(s, 0)) == pytest.approx(0.05)
    assert float(inversion.latent_noise_scale(s, 75)) == 0.0


@pytest.fixture(scope="module")
def acgan():
    config = tiny_gan_config("/nonexistent")  # the projector reads no data
    config.model.num_classes = 3
    return config, random_state(config, 0.5)


def test_z_inversion_recovers_the_generators_own_images(acgan):
    config, state = acgan
    labels = np.array([0, 1, 2, 0, 1, 2])
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (6, config.model.latent_dim)))
    made = np.asarray(trainers.get("gan").generate(config, state, jnp.asarray(z), jnp.asarray(labels)))
    projector = inversion.Projector(config, state, inversion.Settings(steps=150, batch_size=6, init_pool=32))
    r = projector(made, labels, inversion.LABEL)
    assert r.latents.shape == (6, 8) and r.noise == [] and r.labels.tolist() == labels.tolist()
    # From the best of 32 random latents to under 1 % of that error: a broken optimiser stays near the start.
    assert np.mean(r.initial_distance) > 0.01
    assert np.all(r.pixel_mse < 0.01 * r.initial_distance) and np.mean(r.pixel_mse) < 1e-4
    assert np.max(np.linalg.norm(r.latents - z, axis=1) / np.linalg.norm(z, axis=1)) < 0.15
    np.testing.assert_allclose(r.distance, r.pixel_mse)  # no extractor: the pixel term alone
    # Search tries every class and keeps the smallest final distance.
    s = projector(made[:3], labels[:3], inversion.SEARCH, indices=np.arange(3))
    assert s.class_distance.shape == (3, 3)
    np.testing.assert_allclose(s.distance, s.class_distance.min(axis=1), rtol=1e-6)
    assert s.labels.tolist() == labels[:3].tolist()  # the class each image was made with
    assert np.all(s.distance < 1e-4) and np.all(np.sort(s.class_distance, axis=1)[:, 1] > 1e-3)


def test_held_out_reals_with_a_perceptual_term(acgan):
    config, state = acgan
    x, y = phantoms.generate((2, 2, 2), phantoms.TEST_SEED, 16)
    extractor = random_conv_extractor()
    projector = inversion.Projector(config, state, inversion.Settings(steps=60, batch_size=6, init_pool=32),
                                    extractor=extractor)
    r = projector(x, y, inversion.LABEL)
    assert np.all(r.perceptual > 0) and np.all(r.distance < r.initial_distance)
    assert np.mean(r.distance) < 0.9 * np.mean(r.initial_distance)  # a random G cannot draw phantoms well
    np.testing.assert_allclose(r.distance, r.pixel_mse + r.perceptual, rtol=1e-5)
    with pytest.raises(ValueError, match=r"must be \[N, 16, 16, 1\]"):
        projector(x[..., :8, :], y, inversion.LABEL)
    with pytest.raises(ValueError, match="--class label needs"):
        projector(x, None, inversion.LABEL)
    with pytest.raises(ValueError, match="exists for stylegan2 only"):
        inversion.Projector(config, state, inversion.Settings(space="w"))


def random_conv_extractor():
    """A fixed random conv feature map (any size, 1 channel): a stand-in for the domain classifier."""
    from jaxmedgan.evaluators import features

    w = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 1, 8)) / 3.0
    conv = lambda x: jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return features.Extractor("domain", lambda x: jnp.mean(jnp.tanh(conv(x)), axis=(1, 2)), "_domain",
                              "random conv (test)", channels=1)


def test_images_load_from_folders_and_npz_with_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(tmp_path / f"{i + 1}.png")
    Image.fromarray(imgs[0]).save(tmp_path / "10.png")  # natural order: 1, 2, 3, 10
    x, labels = inversion.load_images(str(tmp_path), 16, 1)
    assert x.shape == (4, 16, 16, 1) and labels is None
    np.testing.assert_allclose(x[1, ..., 0], imgs[1] / 127.5 - 1.0, atol=1e-6)
    np.savez(tmp_path / "s.npz", images=imgs[..., None], labels=np.array([2, 0, 1]))
    x, labels = inversion.load_images(str(tmp_path / "s.npz"), 16, 1)
    assert x.shape == (3, 16, 16, 1) and labels.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"s.npz: images are \(16, 16, 1\).*makes \(32, 32, 1\)"):
        inversion.load_images(str(tmp_path / "s.npz"), 32, 1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "11.png")
    with pytest.raises(ValueError, match=r"11.png is \(8, 8, 1\)"):
        inversion.load_images(str(tmp_path), 16, 1)


def random_acgan_workdir(root):
    """ROOT/acgan: a random-weight 16 px ACGAN checkpoint on the liver phantoms (ROOT/data), with
    its dataset record (class names), as `quality_cli_test` builds its workdirs; no training."""
    config = tiny_gan_config(root / "data")
    config.model.num_classes = 3
    checkpoint_random(root / "acgan", config)
    datasets.record_in_workdir(str(root / "acgan"), datasets.prepare(config))
    return root / "acgan"


@pytest.fixture(scope="module")
def acgan_workdir(tmp_path_factory):
    return random_acgan_workdir(tmp_path_factory.mktemp("project"))


def test_project_command_writes_outputs_and_resumes(acgan_workdir, tmp_path, capsys):
    out = tmp_path / "proj"
    argv = ["jaxmedgan", "project", "--workdir", str(acgan_workdir), "--split", "heldout", "--num", "5",
            "--chunk", "2", "--steps", "8", "--batch-size", "4", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "Projected 5 images in z" in capsys.readouterr().out
    npz = np.load(out / "latents.npz")
    assert npz["latents"].shape == (5, 8) and npz["reconstructions"].shape == (5, 16, 16, 1)
    assert npz["targets"].dtype == np.uint8 and npz["class_distance"].shape == (5, 3)  # --class search (default)
    assert npz["index"].tolist() == list(range(5))
    records = json.load(open(out / "distances.json"))
    assert len(records) == 5 and records[0]["class"] in phantoms.CLASS_NAMES
    assert set(records[0]["class_distance"]) == set(phantoms.CLASS_NAMES)
    summary = json.load(open(out / "inversion.json"))
    assert summary["chunks_projected"] == 3 and summary["source"]["split"] == "heldout"
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (2 * 18 + 2, 3 * 34 + 2)  # 5 target | reconstruction pairs in 2 rows

    # Interrupted after two chunks: rerunning projects only the missing one, with the same result.
    os.remove(out / "chunks" / "chunk_000004.json")
    assert cli.main(argv) == 0
    summary = json.load(open(out / "inversion.json"))
    assert summary["chunks_projected"] == 1 and summary["chunks_skipped"] == 2
    again = np.load(out / "latents.npz")
    np.testing.assert_allclose(again["latents"], npz["latents"], rtol=1e-5, atol=1e-6)
    # Other settings into the same folder are refused, naming what differs.
    assert cli.main(argv[:-2] + ["--class", "cyst", "--out", str(out)]) == 1
    assert "differing: class_mode" in capsys.readouterr().err
    assert cli.main(["jaxmedgan", "project", "--workdir", str(acgan_workdir), "--split", "train", "--num", "2",
                     "--space", "w+", "--out", str(tmp_path / "w")]) == 1
    assert "use --space z" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# StyleGAN2: W and W+, noise planes, class search (compiles StyleGAN2's gradient: slow on 2 cores).


@pytest.fixture(scope="module")
def stylegan():
    """A tiny 16 px, 4-class StyleGAN2 with G-EMA from G's own initialiser plus noise strengths of 0.2
    (so the noise planes matter); the rest of the state random (unused by the projector)."""
    from tests.trainers.stylegan2_test import tiny_config

    config = tiny_config()
    tr = trainers.get("stylegan2")
    state = random_state(config, 1.0)
    g, _ = tr.build_models(config)
    v = jax.jit(lambda: g.init({"params": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)},
                               jnp.zeros((1, config.model.latent_dim)), jnp.zeros((1,), jnp.int32)))()
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.full_like(a, 0.2) if "noise_strength" in jax.tree_util.keystr(p) else a, v["params"])
    state = state.replace(g_stats=v["stats"], extra={**state.extra, "g_ema_params": params})
    return config, state, g


@pytest.mark.slow
def test_noise_planes_reach_the_synthesis_network(stylegan):
    config, state, g = stylegan
    variables = {"params": state.extra["g_ema_params"], "stats": state.g_stats}
    ws = g.apply(variables, jnp.ones((2, config.model.latent_dim)), jnp.array([0, 1]), method=g.map)
    planes = [jnp.zeros((2, r, r, 1)) for r in inversion.noise_plane_sizes(16)]
    none = g.apply(variables, ws, "none", method=g.synthesize)
    np.testing.assert_allclose(inversion._synthesis_with_noise(g, variables, ws, planes), none, atol=1e-5)
    const = g.apply(variables, ws, "const", method=g.synthesize)
    assert float(jnp.max(jnp.abs(const - none))) > 1e-3  # the noise matters in this model


@pytest.mark.slow
@pytest.mark.parametrize("space,noise,ratio", [("w", "const", 0.02), ("w+", "optimise", 0.2)])
def test_w_inversion_recovers_the_generators_own_images(stylegan, space, noise, ratio):
    """With the model's own const planes the image is recovered almost exactly; with the planes
    optimised from a random start (regularised to stay noise, as NVlabs') the fixed planes the
    image was drawn with are not recovered, so only most of the error goes."""
    config, state, _ = stylegan
    labels = np.array([0, 1, 2, 3])
    z = jax.random.normal(jax.random.PRNGKey(5), (4, config.model.latent_dim))
    made = np.asarray(trainers.get("stylegan2").generate(config, state, z, jnp.asarray(labels)))
    settings = inversion.Settings(space=space, steps=120, batch_size=4, w_avg_samples=256, noise=noise)
    r = inversion.Projector(config, state, settings)(made, labels, inversion.SEARCH)
    num_ws = trainers.get("stylegan2").build_models(config)[0].num_ws
    assert r.latents.shape == ((4, 16) if space == "w" else (4, num_ws, 16))
    assert r.class_distance.shape == (4, 4)
    assert np.mean(r.initial_distance) > 0.3  # from the class's mean w
    assert np.mean(r.distance) < ratio * np.mean(r.initial_distance)
    if noise == "const":
        assert r.noise == [] and np.median(r.distance) < 0.01
        return
    assert [p.shape[1] for p in r.noise] == [4, 8, 8, 16, 16]
    for p in r.noise:  # the optimised planes stay unit-variance noise (renormalised every step)
        np.testing.assert_allclose(np.mean(np.square(p), axis=(1, 2, 3)), 1.0, rtol=1e-3)


@pytest.mark.slow
def test_pggan_z_inversion_recovers_its_own_images():
    from tests.trainers.pggan_test import tiny_config

    config = tiny_config()
    state = random_state(config, 2.0, zero_bias=True)
    state = state.replace(extra={**state.extra, "level": np.int32(2), "alpha": np.float32(1.0)})  # 16 px
    z = jax.random.normal(jax.random.PRNGKey(2), (4, config.model.latent_dim))
    made = np.asarray(trainers.get("pggan").generate(config, state, z))
    r = inversion.Projector(config, state, inversion.Settings(steps=150, batch_size=4, init_pool=32))(made)
    assert r.labels.tolist() == [-1] * 4 and r.class_distance is None
    # A random 16 px PGGAN is rugged in z: some images end in a local minimum, most are recovered.
    assert np.mean(r.initial_distance) > 0.1 and np.mean(r.pixel_mse) < 0.25 * np.mean(r.initial_distance)
    assert np.sum(r.pixel_mse < 1e-3) >= 2
