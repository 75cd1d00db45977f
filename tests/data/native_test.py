"""User sources at native intensity: 16-bit PNG, DICOM HU, per-class windows, npz / StyleGAN folders.

Reference values are computed here with plain numpy from the pixels written to disk; the library's
windowing is checked against the formula y = clip((v - (c - w/2)) / w, 0, 1), x = 2y - 1.
"""
import json
import os
import zipfile

import numpy as np
from PIL import Image
import pytest

from jaxmedgan.data import intensity, native, readers, stylegan_dataset, tfds_builders
from tests.data.readers_test import _write_dicom, _write_png


def _window(v, c, w):
    return 2.0 * np.clip((np.asarray(v, np.float64) - (c - w / 2.0)) / w, 0.0, 1.0) - 1.0


def _build(tmp_path, image_dir, source="image-folder", **kw):
    kw.setdefault("image_size", 8)
    return tfds_builders.build_dataset(source, str(tmp_path / "out"), image_dir=str(image_dir), **kw)


def _images(data_dir, source="image-folder", split="train"):
    return tfds_builders.load_arrays(data_dir, source, split)


def test_16_bit_png_keeps_16_bits_and_takes_a_window(tmp_path):
    rng = np.random.default_rng(0)
    u16 = rng.integers(1000, 1400, (4, 8, 8)).astype(np.uint16)  # 400 levels: 8 bits would keep ~2
    for i, img in enumerate(u16):
        _write_png(tmp_path / "imgs" / "ct" / f"{i}.png", img)
    data_dir = _build(tmp_path, tmp_path / "imgs")
    x, _ = _images(data_dir)
    np.testing.assert_allclose(x[..., 0], u16 / 32767.5 - 1.0, atol=1e-6)  # bit-depth window
    assert len(np.unique(x)) == len(np.unique(u16))
    # An explicit window applies to PNGs too (it was ignored before).
    data_dir = _build(tmp_path, tmp_path / "imgs", window=(1200.0, 400.0))
    x, _ = _images(data_dir)
    np.testing.assert_allclose(x[..., 0], _window(u16, 1200.0, 400.0), atol=1e-6)
    info = json.load(open(os.path.join(data_dir, tfds_builders.INFO_FILE)))
    assert info["intensity"]["kind"] == "16-bit"
    assert info["intensity"]["class_windows"] == {"ct": {"center": 1200.0, "width": 400.0, "invert": False}}
    assert info["intensity"]["window_sources"] == {"argument": 4}


def test_dicom_hu_stored_natively_per_class_windows_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    ct = rng.integers(-200, 300, (3, 8, 8)).astype(np.int16)  # stored; HU = stored - 24 (intercept)
    mr = rng.integers(0, 1200, (3, 8, 8)).astype(np.int16)
    for i in range(3):
        _write_dicom(str(tmp_path / "imgs" / "ct" / f"IM_{i:04d}"), ct[i], slope=1, intercept=-24,
                     center=40, width=400)  # no extension: DICOM by content
        _write_dicom(str(tmp_path / "imgs" / "mr" / f"{i}.dcm"), mr[i], center=500, width=1000)
    data_dir = _build(tmp_path, tmp_path / "imgs", class_windows="mr=600/1200")
    x, y = _images(data_dir)
    hu_ct = ct.astype(np.float64) - 24
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(x[:3, ..., 0], _window(hu_ct, 40, 400), atol=1e-6)  # CT: its tags
    np.testing.assert_allclose(x[3:, ..., 0], _window(mr, 600, 1200), atol=1e-6)  # MR: class window
    info = json.load(open(os.path.join(data_dir, tfds_builders.INFO_FILE)))
    cw = info["intensity"]["class_windows"]
    assert cw == {"ct": {"center": 40.0, "width": 400.0, "invert": False},
                  "mr": {"center": 600.0, "width": 1200.0, "invert": False}}
    assert info["intensity"]["window_sources"] == {"class": 3, "tags": 3}
    # Back to HU through the recorded window: within 1 HU inside the window (float32 storage).
    back = intensity.from_model_range(x[:3, ..., 0], cw["ct"]["center"], cw["ct"]["width"])
    inside = (hu_ct > -160) & (hu_ct < 240)
    assert inside.sum() > 50
    assert np.abs(back - hu_ct)[inside].max() < 1e-2


def test_minmax_fallback_is_announced_and_recorded(tmp_path, jaxmedgan_log):
    img = np.arange(64, dtype=np.int16).reshape(8, 8) * 10
    _write_dicom(str(tmp_path / "imgs" / "a" / "0.dcm"), img)  # no window tags
    data_dir = _build(tmp_path, tmp_path / "imgs")
    assert any("no window tags" in line and "0.dcm" in line for line in jaxmedgan_log), jaxmedgan_log
    info = json.load(open(os.path.join(data_dir, tfds_builders.INFO_FILE)))
    assert info["intensity"]["window_sources"] == {"minmax": 1}
    x, _ = _images(data_dir)
    np.testing.assert_allclose(x[0, ..., 0], _window(img, 315.0, 630.0), atol=1e-6)


def test_mixed_modalities_and_mixed_sizes_name_the_files(tmp_path):
    _write_png(tmp_path / "a" / "x" / "p.png", np.zeros((8, 8), np.uint8))
    _write_dicom(str(tmp_path / "a" / "x" / "q.dcm"), np.zeros((8, 8), np.int16), center=0, width=10)
    with pytest.raises(ValueError, match=r"mixed modalities.*p\.png is 8-bit.*q\.dcm is dicom"):
        _build(tmp_path, tmp_path / "a")
    _write_png(tmp_path / "b" / "x" / "p.png", np.zeros((8, 8), np.uint8))
    _write_png(tmp_path / "b" / "x" / "r.png", np.zeros((8, 12), np.uint8))
    with pytest.raises(ValueError, match=r"r\.png: image shape \(8, 12, 1\).*--resize"):
        _build(tmp_path, tmp_path / "b")


def test_natural_class_order_and_chosen_classes(tmp_path):
    for name in ("10", "2", "1"):
        _write_png(tmp_path / "imgs" / name / "a.png", np.full((8, 8), int(name), np.uint8))
    names, _ = readers.list_image_folder(str(tmp_path / "imgs"))
    assert names == ("1", "2", "10")
    data_dir = _build(tmp_path, tmp_path / "imgs", classes=("10", "1"))
    assert tfds_builders.class_names(data_dir, "image-folder") == ("10", "1")
    x, y = _images(data_dir)
    np.testing.assert_allclose(x[:, 0, 0, 0], np.array([10, 1]) / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(y, [0, 1])
    with pytest.raises(ValueError, match=r"no folder for \['3'\].*class folders are \['1', '2', '10'\]"):
        _build(tmp_path, tmp_path / "imgs", classes=("3",))


@pytest.mark.parametrize("mode,expected", [
    # 4 x 8 image of two vertical halves (0 | 100) -> 4 x 4.
    ("area", np.array([0.0, 0.0, 100.0, 100.0])),
    ("crop", np.array([0.0, 0.0, 100.0, 100.0])),
])
def test_resize_modes_on_native_values(mode, expected):
    img = np.zeros((4, 8, 1), np.float32)
    img[:, 4:] = 100.0
    out = readers.resize_native(img, (4, 4), mode)
    assert out.shape == (4, 4, 1)
    if mode == "area":  # box filter over 2 columns each
        np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-4)
    else:  # centre 4 x 4 = columns 2..5 -> 0, 0, 100, 100
        np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-4)


def test_resize_pad_pads_with_the_minimum():
    img = np.full((2, 4, 1), 50.0, np.float32)
    out = readers.resize_native(img, (4, 4), "pad")
    np.testing.assert_allclose(out[:, 0, 0], [50, 50, 50, 50])
    padded = readers.resize_native(np.concatenate([img, img * 0 + 10], 0)[:3], (4, 4), "pad")
    assert padded.min() == pytest.approx(10.0)


def _medmnist(path, n=(6, 2, 3), size=28, k=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % k).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


def test_npz_source_keeps_its_splits_and_names(tmp_path):
    arrays = _medmnist(tmp_path / "mini.npz")
    data_dir = _build(tmp_path, tmp_path / "mini.npz", source="npz", image_size=32, resize="pad",
                      classes=("adipose", "debris", "mucus"))
    assert tfds_builders.split_names(data_dir, "npz") == ("test", "train", "validation")
    assert tfds_builders.class_names(data_dir, "npz") == ("adipose", "debris", "mucus")
    x, y = _images(data_dir, "npz", "validation")
    assert x.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(y, arrays["val_labels"][:, 0])
    x, _ = _images(data_dir, "npz", "train")
    # pad 28 -> 32 is 2 px of the minimum each side, no resampling: the middle is exact.
    np.testing.assert_allclose(x[0, 2:30, 2:30, 0], arrays["train_images"][0] / 127.5 - 1, atol=1e-5)
    with pytest.raises(ValueError, match=r"labels span classes 0..2 but 2 class names"):
        _build(tmp_path, tmp_path / "mini.npz", source="npz", image_size=32, resize="area", classes=("a", "b"))
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"bad\.npz: no train_images"):
        _build(tmp_path, tmp_path / "bad.npz", source="npz", image_size=4)


def test_stylegan_zip_source(tmp_path):
    u8 = np.random.default_rng(2).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    path = stylegan_dataset.write_stylegan_dataset(str(tmp_path / "ds.zip"), u8, np.array([0, 1, 0, 1, 0, 1]))
    assert zipfile.is_zipfile(path)
    data_dir = _build(tmp_path, path, source="stylegan-folder", classes=("normal", "fracture"),
                      holdout_fraction=0.34)
    x, y = _images(data_dir, "stylegan-folder", "train")
    xt, yt = _images(data_dir, "stylegan-folder", "test")
    assert len(x) == 4 and sorted(yt.tolist()) == [0, 1]
    assert tfds_builders.class_names(data_dir, "stylegan-folder") == ("normal", "fracture")


def test_window_and_parse_errors():
    with pytest.raises(ValueError, match="width must be > 0"):
        intensity.Window(0.0, 0.0)
    with pytest.raises(ValueError, match=r"'liver=60': expected NAME=CENTER/WIDTH"):
        intensity.parse_class_windows("liver=60")
    with pytest.raises(ValueError, match=r"'kidney'.*classes \['liver'\]"):
        intensity.parse_class_windows("kidney=1/2", ("liver",))
    assert intensity.parse_class_windows("a=1/2; b=-3/4") == {"a": (1.0, 2.0), "b": (-3.0, 4.0)}
    x = np.linspace(-1, 1, 11)
    np.testing.assert_allclose(intensity.to_model_range(intensity.from_model_range(x, 40, 400, True), 40, 400, True),
                               x, atol=1e-6)


def test_corrupt_extensionless_dicom_is_skipped_only_if_not_dicom(tmp_path):
    _write_png(tmp_path / "imgs" / "a" / "ok.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "imgs" / "a" / "README").write_text("not an image")
    names, files = readers.list_image_folder(str(tmp_path / "imgs"))
    assert [os.path.basename(f) for f, _ in files] == ["ok.png"]
    bad = bytearray(200)
    bad[128:132] = b"DICM"
    (tmp_path / "imgs" / "a" / "IM_0002").write_bytes(bytes(bad))  # marker but no data set
    with pytest.raises(ValueError, match=r"IM_0002: cannot read DICOM"):
        native.read_image_folder(str(tmp_path / "imgs"), image_size=8, progress=False)


def test_pipeline_feeds_windowed_float_images(tmp_path):
    from jaxmedgan.data import pipeline

    u16 = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    _write_png(tmp_path / "imgs" / "a" / "0.png", u16)
    Image.fromarray(u16).save(tmp_path / "imgs" / "a" / "1.png")
    data_dir = _build(tmp_path, tmp_path / "imgs")
    src = tfds_builders.load_split(data_dir, "image-folder", "train")
    ds = pipeline.train_dataset(src, global_batch_size=2, seed=0, augment=False, process_index=0, process_count=1)
    batch = ds[0]
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (2, 8, 8, 1)
    np.testing.assert_allclose(np.sort(batch["image"][0].ravel()), np.sort(u16.ravel() / 32767.5 - 1), atol=1e-6)


def test_nifti_volumes_in_class_folders_give_slices_and_keep_volumes_in_one_split(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(3)
    for name in ("healthy", "tumour"):
        for v in range(3):
            vol = rng.uniform(100, 900, (8, 8, 5)).astype(np.float32)
            vol[..., 0] = 0.0  # an empty slice: skipped
            os.makedirs(tmp_path / "vols" / name, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "vols" / name / f"case{v}.nii.gz"))
    data_dir = _build(tmp_path, tmp_path / "vols", holdout_fraction=0.34)
    x, y = _images(data_dir)
    xt, yt = _images(data_dir, split="test")
    assert len(x) + len(xt) == 2 * 3 * 4  # 4 non-empty slices per volume
    assert len(xt) == 2 * 4 and sorted(yt.tolist()) == [0] * 4 + [1] * 4  # one whole volume per class
    info = json.load(open(os.path.join(data_dir, tfds_builders.INFO_FILE)))
    assert info["intensity"]["kind"] == "nifti" and info["intensity"]["window_sources"] == {"minmax": 24}
    # The volume's min..max window: its 0-valued slice was the minimum.
    vol = nib.load(str(tmp_path / "vols" / "healthy" / "case0.nii.gz")).get_fdata()
    slices, index = readers.read_nifti_slices(str(tmp_path / "vols" / "healthy" / "case0.nii.gz"))
    assert index == [1, 2, 3, 4]
    np.testing.assert_allclose(intensity.to_model_range(slices[0].pixels, slices[0].window.center,
                                                        slices[0].window.width)[..., 0],
                               _window(vol[..., 1], vol.max() / 2, vol.max()), atol=1e-5)


def test_multi_hot_npz_gives_a_multi_label_dataset(tmp_path):
    rng = np.random.default_rng(4)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 8, 8), dtype=np.uint8) for s, n in (("train", 6), ("test", 3))}
    arrays.update({f"{s}_labels": rng.integers(0, 2, (n, 3)).astype(np.uint8) for s, n in (("train", 6), ("test", 3))})
    np.savez(tmp_path / "chest.npz", **arrays)
    data_dir = _build(tmp_path, tmp_path / "chest.npz", source="npz", classes=("effusion", "mass", "nodule"))
    assert tfds_builders.is_multi_label(data_dir, "npz")
    assert tfds_builders.class_names(data_dir, "npz") == ("effusion", "mass", "nodule")
    x, y = _images(data_dir, "npz", "test")
    np.testing.assert_array_equal(y, arrays["test_labels"].astype(np.float32))
    np.testing.assert_allclose(x[..., 0], arrays["test_images"] / 127.5 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="multi-label"):
        _build(tmp_path, tmp_path / "chest.npz", source="npz", class_windows="mass=1/2")
    with pytest.raises(ValueError, match=r"columns 0..2 but 2 class names"):
        _build(tmp_path, tmp_path / "chest.npz", source="npz", classes=("a", "b"))
