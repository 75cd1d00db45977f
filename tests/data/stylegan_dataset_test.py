"""StyleGAN2-ADA dataset format: folder and zip fixtures, labels, conversions and errors."""
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from jaxmedgan.data import pipeline, stylegan_dataset as sgd


def _fixture_folder(root, n=5, size=8, labels=True, mode="L"):
    """Writes PNGs the way dataset_tool.py names them, plus dataset.json; returns (images, labels)."""
    rng = np.random.default_rng(0)
    shape = (size, size) if mode == "L" else (size, size, 3)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    ys = rng.integers(0, 3, n)
    os.makedirs(root / "00000")
    for i, im in enumerate(images):
        Image.fromarray(im, mode=None).save(root / "00000" / f"img{i:08d}.png")
    if labels:
        meta = {"labels": [[f"00000/img{i:08d}.png", int(y)] for i, y in enumerate(ys)]}
        (root / "dataset.json").write_text(json.dumps(meta))
    return images, ys


def test_folder_and_zip_read_the_same_images_and_labels(tmp_path):
    images, ys = _fixture_folder(tmp_path / "ds")
    with zipfile.ZipFile(tmp_path / "ds.zip", "w") as z:
        for root, _, files in os.walk(tmp_path / "ds"):
            for f in files:
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, tmp_path / "ds"))
    for path in (tmp_path / "ds", tmp_path / "ds.zip"):
        ds = sgd.StyleGANImageDataset(str(path))
        x, y = ds.arrays()
        assert ds.has_labels and len(ds) == 5 and ds.image_shape == (8, 8, 1)
        np.testing.assert_array_equal(x[..., 0], images)
        np.testing.assert_array_equal(y, ys)
        assert ds.class_count == ys.max() + 1
        example = pipeline.to_model_example(ds[2])  # usable by the training pipeline as is
        np.testing.assert_allclose(example["image"][..., 0], images[2] / 127.5 - 1, atol=1e-6)


def test_write_then_read_round_trip_and_channel_conversion(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    path = sgd.write_stylegan_dataset(str(tmp_path / "out.zip"), rgb, np.array([2, 0, 1]))
    ds = sgd.StyleGANImageDataset(path)
    np.testing.assert_array_equal(ds.arrays()[0], rgb)
    assert ds.names[0] == "00000/img00000000.png" and list(ds.labels) == [2, 0, 1]
    gray = sgd.StyleGANImageDataset(path, channels=1)
    expected = np.asarray([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    np.testing.assert_array_equal(gray.arrays()[0][..., 0], expected)
    folder = sgd.write_stylegan_dataset(str(tmp_path / "folder"), rgb[..., :1])
    unlabelled = sgd.StyleGANImageDataset(folder)
    assert not unlabelled.has_labels and unlabelled.class_count == 0 and list(unlabelled.labels) == [0, 0, 0]


def test_one_hot_labels_and_unlabelled_datasets(tmp_path):
    _fixture_folder(tmp_path / "a", n=2, labels=False)
    (tmp_path / "a" / "dataset.json").write_text(json.dumps(
        {"labels": [["00000/img00000000.png", [0, 0, 1]], ["00000/img00000001.png", [1, 0, 0]]]}))
    assert list(sgd.StyleGANImageDataset(str(tmp_path / "a")).labels) == [2, 0]
    _fixture_folder(tmp_path / "b", n=2, labels=False)
    assert not sgd.StyleGANImageDataset(str(tmp_path / "b")).has_labels


def test_errors_name_the_file_and_the_expectation(tmp_path):
    _fixture_folder(tmp_path / "a", n=2, labels=False)
    (tmp_path / "a" / "dataset.json").write_text(json.dumps({"labels": [["00000/img00000000.png", 1]]}))
    with pytest.raises(ValueError, match=r"no label for 1 image\(s\), e.g. \['00000/img00000001.png'\]"):
        sgd.StyleGANImageDataset(str(tmp_path / "a"))
    _fixture_folder(tmp_path / "b", n=2, labels=False)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b" / "00000" / "img00000002.png")
    ds = sgd.StyleGANImageDataset(str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"img00000002.png has shape \(4, 4, 1\).*expected \(8, 8, 1\)"):
        ds[2]
    with pytest.raises(FileNotFoundError, match="neither a directory nor a .zip"):
        sgd.StyleGANImageDataset(str(tmp_path / "missing"))
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="No image files"):
        sgd.StyleGANImageDataset(str(tmp_path / "c"))
