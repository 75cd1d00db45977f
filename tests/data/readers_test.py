"""Tests for jaxmedgan/data/readers.py: PNG/JPEG/DICOM folders -> [-1, 1] arrays, windowing, errors."""

import os
import shutil

import numpy as np
from PIL import Image
import pydicom
import pydicom.data
from pydicom.uid import CTImageStorage
import pytest

from jaxmedgan.data import readers


def _write_png(path, array: np.ndarray) -> None:
    """Writes uint8 [H,W] / [H,W,3] or uint16 [H,W] to a PNG."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _write_dicom(path, stored: np.ndarray, *, slope=None, intercept=None, center=None, width=None,
                 photometric: str = "MONOCHROME2") -> None:
    """Writes int16 [H,W] stored values as a CT DICOM with optional rescale and window tags."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds = readers.new_dicom(CTImageStorage, *stored.shape, signed=True, photometric=photometric)
    ds.Modality = "CT"
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = stored.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_png_folder_exact_values_sorted_classes(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 8, 8), dtype=np.uint8)
    # Written in reverse order to check that classes and files come back sorted.
    for i, img in enumerate(b):
        _write_png(tmp_path / "zeta" / f"{i}.png", img)
    for i, img in reversed(list(enumerate(a))):
        _write_png(tmp_path / "alpha" / f"{i}.PNG", img)
    (tmp_path / "alpha" / "notes.txt").write_text("ignored")
    images, labels, names = readers.read_image_folder(str(tmp_path), image_size=8, channels=1)
    assert names == ("alpha", "zeta")
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1])
    expected = np.concatenate([a, b]).astype(np.float32)[..., None] / 127.5 - 1.0
    np.testing.assert_allclose(images, expected, atol=1e-6)
    assert images.min() >= -1.0 and images.max() <= 1.0


def test_rgb_and_gray_channel_rules(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    gray = np.random.default_rng(2).integers(0, 256, (8, 8), dtype=np.uint8)
    _write_png(tmp_path / "c" / "rgb.png", rgb)
    _write_png(tmp_path / "c" / "gray_as_rgb.png", np.repeat(gray[..., None], 3, -1))
    _write_png(tmp_path / "c" / "gray.png", gray)
    x = readers.read_image(str(tmp_path / "c" / "rgb.png"), channels=3)
    np.testing.assert_allclose(x, rgb / 127.5 - 1.0, atol=1e-6)
    # A gray image stored as RGB is accepted for channels=1; a gray file is replicated for channels=3.
    x = readers.read_image(str(tmp_path / "c" / "gray_as_rgb.png"), channels=1)
    np.testing.assert_allclose(x[..., 0], gray / 127.5 - 1.0, atol=1e-6)
    x = readers.read_image(str(tmp_path / "c" / "gray.png"), channels=3)
    np.testing.assert_allclose(x, np.repeat(gray[..., None], 3, -1) / 127.5 - 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"rgb\.png.*distinct RGB"):
        readers.read_image(str(tmp_path / "c" / "rgb.png"), channels=1)


def test_16bit_png_uses_full_range(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], np.uint16)
    _write_png(tmp_path / "c" / "a.png", arr)
    x = readers.read_image(str(tmp_path / "c" / "a.png"))
    np.testing.assert_allclose(x[..., 0], arr / 32767.5 - 1.0, atol=1e-6)


def test_jpeg_is_read(tmp_path):
    path = tmp_path / "c" / "a.jpg"
    os.makedirs(path.parent)
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(path, quality=100)
    x = readers.read_image(str(path), image_size=8)
    np.testing.assert_allclose(x, 200 / 127.5 - 1.0, atol=2 / 127.5)


def test_wrong_size_names_file_and_shapes_unless_resize(tmp_path):
    _write_png(tmp_path / "c" / "ok.png", np.zeros((8, 8), np.uint8))
    _write_png(tmp_path / "c" / "big.png", np.full((12, 10), 255, np.uint8))
    with pytest.raises(ValueError, match=r"big\.png: image shape \(12, 10, 1\).*expected \(8, 8, 1\)"):
        readers.read_image_folder(str(tmp_path), image_size=8)
    images, _, _ = readers.read_image_folder(str(tmp_path), image_size=8, resize=True)
    assert images.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(images[0], 1.0, atol=1e-6)  # 'big' sorts first; constant stays constant.


def test_corrupt_files_name_the_file(tmp_path):
    os.makedirs(tmp_path / "c")
    (tmp_path / "c" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken\.png: cannot read image"):
        readers.read_image_folder(str(tmp_path))
    os.remove(tmp_path / "c" / "broken.png")
    (tmp_path / "c" / "broken.dcm").write_bytes(b"no dicom here" * 20)
    with pytest.raises(ValueError, match=r"broken\.dcm: cannot read DICOM"):
        readers.read_image_folder(str(tmp_path))


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        readers.read_image_folder(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no class sub-folders"):
        readers.read_image_folder(str(tmp_path))
    _write_png(tmp_path / "full" / "a.png", np.zeros((8, 8), np.uint8))
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty.*holds no images"):
        readers.read_image_folder(str(tmp_path), image_size=8)


def test_dicom_rescale_and_explicit_window(tmp_path):
    stored = np.array([[0, 100], [200, 600]], np.int16)
    path = str(tmp_path / "c" / "a.dcm")
    # HU = 2 * stored - 1024 -> [[-1024, -824], [-624, 176]]; file window is ignored when one is given.
    _write_dicom(path, stored, slope=2, intercept=-1024, center=-600, width=1000)
    x = readers.read_image(path, window=(-700.0, 400.0))  # [-900, -500] HU
    hu = stored * 2.0 - 1024.0
    expected = np.clip((hu + 900.0) / 400.0, 0, 1) * 2 - 1
    np.testing.assert_allclose(x[..., 0], expected, atol=1e-6)
    np.testing.assert_allclose(x[..., 0], [[-1.0, -0.62], [0.38, 1.0]], atol=1e-6)


def test_dicom_window_from_tags_multivalued(tmp_path):
    stored = np.array([[-100, 0], [40, 300]], np.int16)
    path = str(tmp_path / "c" / "a.dcm")
    _write_dicom(path, stored, slope=1, intercept=0, center=[40, 300], width=[400, 1500])
    x = readers.read_image(path)  # First window: 40 / 400 -> [-160, 240] HU.
    expected = np.clip((stored + 160.0) / 400.0, 0, 1) * 2 - 1
    np.testing.assert_allclose(x[..., 0], expected, atol=1e-6)


def test_dicom_minmax_fallback_and_monochrome1(tmp_path):
    stored = np.array([[10, 20], [30, 50]], np.int16)
    _write_dicom(str(tmp_path / "c" / "m2.dcm"), stored)
    _write_dicom(str(tmp_path / "c" / "m1.dcm"), stored, photometric="MONOCHROME1")
    x2 = readers.read_image(str(tmp_path / "c" / "m2.dcm"))
    x1 = readers.read_image(str(tmp_path / "c" / "m1.dcm"))
    np.testing.assert_allclose(x2[..., 0], [[-1.0, -0.5], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(x1, -x2, atol=1e-6)


def test_pydicom_ct_small_in_folder_with_png(tmp_path):
    ct = pydicom.data.get_testdata_file("CT_small.dcm")  # 128x128, int16, no window tags.
    os.makedirs(tmp_path / "ct")
    shutil.copy(ct, tmp_path / "ct" / "slice.dcm")
    _write_png(tmp_path / "png" / "a.png", np.zeros((128, 128), np.uint8))
    images, labels, names = readers.read_image_folder(str(tmp_path), image_size=128)
    assert names == ("ct", "png") and images.shape == (2, 128, 128, 1)
    np.testing.assert_array_equal(labels, [0, 1])
    assert images[0].min() == -1.0 and images[0].max() == 1.0  # min..max window
    ds = pydicom.dcmread(ct)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = (hu - hu.min()) / (hu.max() - hu.min()) * 2 - 1
    np.testing.assert_allclose(images[0, ..., 0], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"slice\.dcm: image shape \(128, 128, 1\).*expected \(64, 64, 1\)"):
        readers.read_image_folder(str(tmp_path), image_size=64)


def test_bad_window_width_names_file(tmp_path):
    path = str(tmp_path / "c" / "a.dcm")
    _write_dicom(path, np.zeros((2, 2), np.int16), center=40, width=0)
    with pytest.raises(ValueError, match=r"a\.dcm: window width .*WindowCenter/WindowWidth"):
        readers.read_image(path)
