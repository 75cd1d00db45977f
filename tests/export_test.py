"""export: dataset layout, manifest round trip, DP epsilon, atomicity, for dual-GAN, DCGAN and
pix2pix workdirs (one briefly trained dual GAN provides all three: W, W/stage1 (gan), W/stage2 (pix2pix))."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

import jaxmedgan
from jaxmedgan import checkpointing, export, images
from jaxmedgan.privacy import accounting


@pytest.fixture
def workdir(dual_gan_workdir):
    return dual_gan_workdir  # tests/conftest.py: 300 + 120 steps at 32 px, 64 training crops


def _read(out):
    manifest = json.load(open(out / "manifest.json"))
    rows = list(csv.DictReader(open(out / "labels.csv")))
    return manifest, rows


def test_dual_gan_export_layout_and_manifest(workdir, tmp_path):
    out = tmp_path / "ds"
    assert export.export_command(["--workdir", str(workdir), "--num", "5", "--out", str(out), "--seed", "3"]) == 0
    manifest, rows = _read(out)
    assert sorted(os.listdir(out)) == ["images", "labels.csv", "manifest.json", "masks"]
    assert len(os.listdir(out / "images")) == len(os.listdir(out / "masks")) == len(rows) == 5
    assert manifest["jaxmedgan_version"] == jaxmedgan.__version__
    assert manifest["trainer"] == "dual_gan" and manifest["seed"] == 3 and manifest["num_images"] == 5
    assert manifest["checkpoint_step"] == {"stage1": 300, "stage2": 120}
    assert manifest["config"] == checkpointing.read_config(str(workdir)).to_dict()
    assert manifest["privacy"] is None and manifest["mask_classes"] == ["background", "vessel"]
    assert manifest["image_shape"] == [32, 32, 3] and manifest["format"] == "png8"
    assert manifest["class_names"] == manifest["label_names"] == ["no_vessel", "vessel"]
    img = np.asarray(Image.open(out / rows[0]["image"]))
    mask = np.asarray(Image.open(out / rows[0]["mask"]))
    assert img.shape == (32, 32, 3) and mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
    assert rows[0]["label"] in ("0", "1") and rows[0]["label_name"] in ("no_vessel", "vessel")
    # Same seed -> same dataset.
    again = tmp_path / "again"
    export.export(str(workdir), 5, str(again), seed=3)
    np.testing.assert_array_equal(np.asarray(Image.open(again / rows[0]["image"])), img)


def test_dcgan_and_pix2pix_workdirs_export(workdir, tmp_path):
    out = tmp_path / "gan"
    export.export(str(workdir / "stage1"), 3, str(out))
    manifest, rows = _read(out)
    assert sorted(os.listdir(out)) == ["images", "labels.csv", "manifest.json"]  # no masks
    assert manifest["trainer"] == "gan" and manifest["checkpoint_step"] == 300 and manifest["num_masks"] == 0
    assert [r["label"] for r in rows] == ["-1"] * 3 and rows[0]["mask"] == ""
    assert np.asarray(Image.open(out / rows[0]["image"])).shape == (32, 32)

    out = tmp_path / "p2p"
    export.export(str(workdir / "stage2"), 4, str(out))
    manifest, rows = _read(out)
    assert manifest["trainer"] == "pix2pix" and len(os.listdir(out / "masks")) == 4
    with pytest.raises(ValueError, match="--class applies"):
        export.export(str(workdir / "stage2"), 1, str(tmp_path / "x"), class_id=1)
    with pytest.raises(ValueError, match="--format dicom.*png8 only"):  # map-conditioned: 8-bit draws only
        export.export(str(workdir / "stage2"), 1, str(tmp_path / "x"), fmt="dicom")
    with pytest.raises(ValueError, match="--format 'tiff'"):
        export.export(str(workdir / "stage1"), 1, str(tmp_path / "x"), fmt="tiff")
    assert not (tmp_path / "x").exists()


def test_dp_epsilon_is_recomputed_from_the_privacy_config(workdir, tmp_path):
    """Flip privacy.enabled in a copy of the stage-II config and check the manifest's privacy block
    against the accountant at the checkpoint step. (A DP state also holds the noise transformation's
    optimiser state, so the flipped copy is scored through `export._privacy`, which reads configs
    only; a real DP run exports end to end in tests/privacy/trust_test.py.)"""
    import shutil

    wd = tmp_path / "dual_dp"
    shutil.copytree(workdir, wd)
    cfg = json.load(open(wd / "stage2" / "config.json"))
    cfg["privacy"].update(enabled=True, noise_multiplier=1.3, delta=1e-5)
    json.dump(cfg, open(wd / "stage2" / "config.json", "w"))
    stage2 = lambda: export._privacy(checkpointing.read_config(str(wd / "stage2")), str(wd / "stage2"), 120)
    privacy = stage2()
    n = 64  # training crops
    want = accounting.epsilon(8 / n, 1.3, 120, 1e-5, accountant="rdp", sampling="poisson")
    assert privacy["num_examples"] == n and privacy["steps"] == 120
    assert privacy["epsilon"] == pytest.approx(want) and privacy["sampling_rate"] == 0.125
    # q and delta recorded in config.json by privacy.plan (a real DP run) take precedence over N.
    cfg["privacy"].update(sampling_rate=0.2, delta=1e-6)
    json.dump(cfg, open(wd / "stage2" / "config.json", "w"))
    privacy = stage2()
    assert privacy["num_examples"] is None and privacy["sampling_rate"] == 0.2 and privacy["delta"] == 1e-6
    assert privacy["epsilon"] == pytest.approx(accounting.epsilon(0.2, 1.3, 120, 1e-6, accountant="rdp"))
    stage1_step = checkpointing.manager(str(wd / "stage1"), async_save=False).latest_step()
    privacy = export._privacy(checkpointing.read_config(str(wd)), str(wd), {"stage1": stage1_step, "stage2": 120})
    assert privacy["epsilon"] is None and "not private" in privacy["note"]
    assert privacy["stages"]["stage2"]["sampling_rate"] == 0.2 and privacy["stages"]["stage1"] is None


def test_export_is_atomic_and_refuses_bad_outputs(workdir, tmp_path, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(FileExistsError, match="full"):
        export.export(str(workdir), 2, str(tmp_path / "full"))
    assert export.export_command(["--workdir", str(workdir), "--num", "0", "--out", str(tmp_path / "z")]) == 1
    assert export.export_command(["--workdir", str(tmp_path / "nope"), "--num", "1", "--out",
                                  str(tmp_path / "z")]) == 1
    calls = []
    real_save = images.save_png

    def failing_save(path, image):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_save(path, image)

    monkeypatch.setattr(images, "save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export.export(str(workdir), 4, str(tmp_path / "partial"))
    assert sorted(os.listdir(tmp_path)) == ["full"]  # no output, no temporary directory left
