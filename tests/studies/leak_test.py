"""`jaxmedgan evaluate leak` (studies/leak.py): which transforms a config trains with, the CLI on a
tiny workdir, and (slow) two short liver runs -- one with a leak forced on, one without -- that the
report must tell apart."""
import json
import os
import time

import jax.numpy as jnp
import numpy as np
import pytest

from configs import acgan_liver, dcgan_liver, stylegan2_ada_spine
from jaxmedgan import main as cli
from jaxmedgan.augment import leak_transforms
from jaxmedgan.studies import leak

D4 = leak_transforms.D4[1:]


def test_training_transforms_follow_the_config():
    c = acgan_liver.get_config()  # DiffAugment + the classic data augmentation
    used = leak.training_transforms(c)
    assert {t: used[t] for t in ("color", "translate", "cutout")} == {
        "color": "d_augment diffaug:color", "translate": "d_augment diffaug:translation",
        "cutout": "d_augment diffaug:cutout"}
    assert all(used[t] == "data.augment" for t in D4) and len(used) == 3 + 7
    c.d_augment.kind, c.data.augment = "ada", False  # ADA 'bgc' on one channel: no hue / saturation
    assert set(leak.training_transforms(c)) == {*D4, "invert", *(f"ada_{op}" for op in leak_transforms.ADA_OPS
                                                                  if op not in ("hue", "saturation"))}
    c.ada.mode = "none"
    assert leak.training_transforms(c) == {}
    c.d_augment.kind = "leak_test_vflip"
    assert leak.training_transforms(c) == {"vflip": "d_augment leak_test_vflip (test switch)"}
    sg2 = stylegan2_ada_spine.get_config()  # no d_augment: config.ada drives StyleGAN2's D augmentation
    sg2.ada.pipeline = "blit"
    assert set(leak.training_transforms(sg2)) == {*D4, "ada_xint"}


def test_select_transforms_requested_controls_and_errors():
    c = dcgan_liver.get_config()
    c.data.augment = False
    names, sources = leak.select_transforms(c, None)  # nothing used: the controls, marked as such
    assert names == ("identity", *leak.CONTROLS) and set(sources.values()) == {""}
    c.d_augment.kind = "leak_test_hflip"
    names, sources = leak.select_transforms(c, ["invert", "hflip", "invert"])
    assert names == ("identity", "invert", "hflip") and sources == {"invert": "", "hflip": sources["hflip"]}
    assert "test switch" in sources["hflip"]
    with pytest.raises(ValueError, match="Unknown transform.*'mirror'"):
        leak.select_transforms(c, ["mirror"])
    with pytest.raises(ValueError, match="no transform besides 'identity'"):
        leak.select_transforms(c, ["identity"])


def test_classifier_input_is_area_pooled_to_32_px():
    assert [leak.pool_factor(s) for s in (16, 32, 48, 64, 96, 128)] == [1, 1, 1, 2, 3, 4]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    ref = x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(leak._pool(jnp.asarray(x), 2), ref, rtol=1e-6)
    assert leak._pool(jnp.asarray(x), 1) is not None and leak._pool(x, 1) is x


def test_soften_blurs_half_the_images_with_the_binomial_filter():
    from scipy import ndimage

    import jax

    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = np.asarray(leak._soften(jnp.asarray(x), jax.random.PRNGKey(0)))
    kept = np.all(y == x, axis=(1, 2, 3))
    assert 0.3 < kept.mean() < 0.7
    k = np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25])
    ref = np.stack([ndimage.convolve(i[..., 0], k, mode="mirror") for i in x[~kept]])[..., None]
    np.testing.assert_allclose(y[~kept], ref, rtol=1e-5, atol=1e-6)


def test_cli_writes_json_and_markdown_on_a_tiny_workdir(tmp_path, capsys):
    from tests.studies.quality_cli_test import checkpoint_random, tiny_gan_config

    wd, out = tmp_path / "gan", tmp_path / "report"
    checkpoint_random(wd, tiny_gan_config(tmp_path / "data"))
    assert cli.main(["jaxmedgan", "evaluate", "leak", "--workdir", str(wd), "--num", "12", "--out", str(out),
                     "--transforms", "hflip,invert", "--classifier-steps", "4"]) == 0
    report = json.load(open(out / "leak.json"))
    assert [r["transform"] for r in report["transforms"]] == ["identity", "hflip", "invert"]
    inv = report["transforms"][2]
    assert inv["num_fake"] == 12 and inv["num_real"] == report["num_heldout"] == 90  # the liver 'test' split
    assert report["num_train"] == 182 and report["step"] == 2 and report["ada"]["level"] == "none"
    assert set(report["summary"]) == {"leaking_transforms", "control_excess", "not_identifiable", "ada_p_flag",
                                      "verdict"}
    assert "| invert | control |" in open(out / "leak.md").read()
    assert "Verdict:" in capsys.readouterr().out
    assert cli.main(["jaxmedgan", "evaluate", "leak", "--workdir", str(wd), "--num", "2", "--out", str(out),
                     "--transforms", "flipz"]) == 1


@pytest.mark.slow  # two short GAN runs + two reports: ~80 s on 2 CPU cores
def test_forced_leak_run_is_flagged_and_the_plain_run_is_not(tmp_path):
    from jaxmedgan.trainers import gan

    def config(kind):
        c = acgan_liver.get_config()
        c.data.data_dir, c.data.image_size = str(tmp_path / "data"), 32
        c.model.g_features = c.model.d_features = 8
        c.model.latent_dim, c.model.num_classes = 32, 0  # unconditional: no per-class evaluation to pay for
        c.train.steps, c.train.batch_size, c.train.quiet = 150, 16, True
        c.train.log_every, c.train.eval_every = 100, 10_000
        c.checkpoint.every = c.samples.every = 150
        c.checkpoint.async_save = False
        c.mesh.data = 1  # one device: 8 forced CPU devices on 2 busy cores only slow this down
        c.d_augment.kind = kind
        return c

    reports, t0 = {}, time.time()
    # The liver phantoms have no canonical orientation (random lesion angle), so a geometric flip
    # is unidentifiable there (J ~ 0, the report says so); intensity inversion -- ADA's luma flip --
    # is the identifiable flip of these images: forced on D's reals, G must learn inverted lesions.
    for kind in ("leak_test_invert", "none"):
        wd = tmp_path / kind
        gan.train_and_evaluate(config(kind), str(wd))
        reports[kind] = leak.run(str(wd), 200, str(tmp_path / f"report_{kind}"), transforms=["invert", "hflip"],
                                 classifier_steps=100)
    rows = {kind: {r["transform"]: r for r in rep["transforms"]} for kind, rep in reports.items()}
    forced, plain = rows["leak_test_invert"]["invert"], rows["none"]["invert"]
    assert forced["identifiable"] and forced["leak"] and forced["rate_fake"] > 0.5, forced
    assert forced["source"] == "d_augment leak_test_invert (test switch)"
    assert plain["identifiable"] and not plain["leak"] and plain["rate_fake"] < 0.2, plain
    assert forced["difference_ci"][0] > plain["difference_ci"][1]  # told apart by their intervals
    assert reports["leak_test_invert"]["summary"]["verdict"] == "leak"
    assert reports["none"]["summary"]["verdict"] == "no leak detected"
    assert not rows["none"]["hflip"]["identifiable"]  # rotation-invariant phantoms: a flip cannot be read
    assert os.path.isfile(tmp_path / "report_none" / "leak.md")
    print(f"two runs + reports: {time.time() - t0:.0f} s; invert rate forced {forced['rate_fake']:.2f} "
          f"plain {plain['rate_fake']:.2f} real {plain['rate_real']:.2f}; J {forced['youden_j']:.2f}")
