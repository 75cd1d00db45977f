"""retina: Frangi vessel mask of skimage's fundus, seeded crops and split, DRIVE/STARE/HRF readers."""
import os

import numpy as np
import pytest
from PIL import Image

from jaxmedgan.data import retina


def test_derived_vessel_mask_of_the_skimage_fundus():
    rgb, vessels, fov = retina.skimage_retina(256)
    assert rgb.shape == (256, 256, 3) and vessels.dtype == bool
    assert not (vessels & ~fov).any()  # vessels only inside the field of view
    assert 0.08 < vessels[fov].mean() < 0.16  # the 88th percentile keeps ~12 % minus small pieces
    green = rgb[..., 1]
    assert green[vessels].mean() < green[fov & ~vessels].mean() - 0.05  # vessels are dark in green
    otsu, _ = retina.derive_vessel_mask(rgb, fov, threshold="otsu")
    assert 0 < otsu.sum() < vessels.sum()  # Otsu keeps the larger vessels only
    with pytest.raises(ValueError, match="threshold must be"):
        retina.derive_vessel_mask(rgb, fov, threshold="mean")


def test_crops_are_seeded_augmented_and_split_by_band():
    rgb, vessels, fov = retina.skimage_retina(256)
    kw = dict(crop_px=32, image_size=16)
    a = retina.random_crops(rgb, vessels, fov, 6, seed=3, band=(0.0, 0.7), **kw)
    b = retina.random_crops(rgb, vessels, fov, 6, seed=3, band=(0.0, 0.7), **kw)
    c = retina.random_crops(rgb, vessels, fov, 6, seed=4, band=(0.0, 0.7), **kw)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (6, 16, 16, 3) and a[1].shape == (6, 16, 16) and set(np.unique(a[1])) <= {0, 1}
    assert a[0].min() >= -1 and a[0].max() <= 1
    # Test band: no test crop holds a pixel of the training band (left 0.7 W, blacked out here).
    marked = rgb.copy()
    marked[:, : int(0.7 * 256)] = 0.0  # left band black (but FOV mask unchanged)
    imgs, _ = retina.random_crops(marked, vessels, fov, 6, seed=3, band=(0.7, 1.0), crop_px=32, image_size=32)
    assert (imgs > -1).any(axis=-1).all()  # no pixel from the blacked-out training band
    with pytest.raises(ValueError, match="found only 0 of 2 crops"):
        retina.random_crops(rgb, vessels, np.zeros_like(fov), 2, seed=0, max_tries=50, **kw)


def _save(path, array, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _fundus(h=40, w=44, seed=0):
    """Tiny RGB fundus: bright disc, dark vertical 'vessel'; (rgb uint8, vessel bool, fov bool)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.45 * min(h, w)) ** 2
    vessel = fov & (np.abs(xx - w // 2) <= 1)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[fov] = (200, 100, 50)
    rgb[vessel] = (120, 40, 20)
    rgb = np.clip(rgb + rng.integers(0, 5, rgb.shape), 0, 255).astype(np.uint8) * fov[..., None]
    return rgb, vessel, fov


def test_drive_stare_hrf_layouts_are_found_and_read(tmp_path):
    rgb, vessel, fov = _fundus()
    u8 = lambda m: (m * 255).astype(np.uint8)
    drive = tmp_path / "DRIVE"
    for i, split in ((21, "training"), (22, "training"), (1, "test")):
        _save(str(drive / split / "images" / f"{i:02d}_{split}.tif"), rgb)
        _save(str(drive / split / "1st_manual" / f"{i:02d}_manual1.gif"), u8(vessel))
        _save(str(drive / split / "mask" / f"{i:02d}_{split}_mask.gif"), u8(fov))
    triples = retina.find_fundus_triples(str(drive))
    assert [t[0] for t in triples] == ["01_test", "21_training", "22_training"]
    assert all(t[3] is not None and t[3].endswith("_mask.gif") for t in triples)
    small, ves, f = retina.read_fundus(triples[0], 22)  # longer side 44 -> 22 px
    assert small.shape == (20, 22, 3) and ves.shape == f.shape == (20, 22)
    assert ves.any() and not (ves & ~f).any()

    stare = tmp_path / "STARE"
    for i in (1, 2):
        _save(str(stare / f"im{i:04d}.ppm"), rgb, "PPM")
        _save(str(stare / "labels" / f"im{i:04d}.ah.ppm"), np.repeat(u8(vessel)[..., None], 3, -1), "PPM")
    triples = retina.find_fundus_triples(str(stare))
    assert [t[0] for t in triples] == ["im0001", "im0002"] and triples[0][3] is None
    _, ves, f = retina.read_fundus(triples[0], 44)  # no FOV file: derived from the red channel
    assert f[20, 22] and not f[0, 0] and ves[20, 22]

    hrf = tmp_path / "HRF"
    for name in ("01_h", "01_dr"):
        _save(str(hrf / "images" / f"{name}.jpg"), rgb, "JPEG")
        _save(str(hrf / "manual1" / f"{name}.tif"), u8(vessel))
        _save(str(hrf / "mask" / f"{name}_mask.tif"), u8(fov))
    triples = retina.find_fundus_triples(str(hrf))
    assert [t[0] for t in triples] == ["01_dr", "01_h"] and triples[0][3].endswith("01_dr_mask.tif")


def test_fundus_folder_errors_name_the_file(tmp_path):
    rgb, vessel, fov = _fundus()
    _save(str(tmp_path / "d" / "03_training.tif"), rgb)
    _save(str(tmp_path / "d" / "04_manual1.gif"), (vessel * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"03_training\.tif: no manual vessel mask 03_manual1\.gif"):
        retina.find_fundus_triples(str(tmp_path / "d"))
    _save(str(tmp_path / "d" / "03_manual1.gif"), (vessel[:10] * 255).astype(np.uint8))
    triple = [t for t in retina.find_fundus_triples(str(tmp_path / "d")) if t[0] == "03_training"][0]
    with pytest.raises(ValueError, match=r"03_manual1\.gif: mask shape \(10, 44\)"):
        retina.read_fundus(triple, 22)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no DRIVE"):
        retina.find_fundus_triples(str(tmp_path / "empty"))


def test_fundus_folder_source_splits_by_image(tmp_path):
    from configs import dual_gan_retina

    u8 = lambda m: (m * 255).astype(np.uint8)
    for i in range(4):
        rgb, vessel, fov = _fundus(64, 64, seed=i)
        _save(str(tmp_path / f"{i + 21}_training.tif"), rgb)
        _save(str(tmp_path / f"{i + 21}_manual1.gif"), u8(vessel))
        _save(str(tmp_path / f"{i + 21}_training_mask.gif"), u8(fov))
    c = dual_gan_retina.get_config()
    c.data.source, c.data.image_dir = "fundus-folder", str(tmp_path)
    c.data.working_size, c.data.crop_px, c.data.image_size = 64, 16, 16
    c.data.train_crops, c.data.test_crops, c.data.holdout_fraction = 12, 4, 0.25
    train, test = retina.load_arrays(c)
    assert train["image"].shape == (12, 16, 16, 3) and test["map"].shape == (4, 16, 16)
    assert train["map"].any() and test["map"].any()
