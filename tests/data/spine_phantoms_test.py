"""Spine radiograph phantoms: determinism, shapes, and the documented appearance of each class."""
import numpy as np
import pytest

from jaxmedgan.data import spine_phantoms as sp


@pytest.fixture(scope="module")
def sample():
    return sp.generate_with_info((6, 6, 6, 6), seed=1, size=64)


def test_shapes_ranges_and_labels_for_several_sizes():
    for size in (16, 32, 64, 128):
        x, y = sp.generate((1, 1, 1, 1), seed=0, size=size)
        assert x.shape == (4, size, size, 1) and x.dtype == np.float32
        assert -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
        np.testing.assert_array_equal(y, [0, 1, 2, 3])
    for bad in (8, 48):
        with pytest.raises(ValueError, match="power of two >= 16"):
            sp.generate((1, 0, 0, 0), seed=0, size=bad)
    with pytest.raises(ValueError, match="one count per class"):
        sp.generate((1, 1, 1), seed=0)


def test_images_depend_only_on_seed_class_and_index():
    a, _ = sp.generate((2, 3, 1, 2), seed=5, size=32)
    b, _ = sp.generate((3, 3, 3, 3), seed=5, size=32)
    np.testing.assert_array_equal(a[:2], b[:2])  # first normals
    np.testing.assert_array_equal(a[2:5], b[3:6])  # first fractures
    c, _ = sp.generate((2, 0, 0, 0), seed=6, size=32)
    assert not np.allclose(a[:2], c)


def test_bone_is_brighter_than_soft_tissue(sample):
    x, _, info = sample
    for img, inf in zip(x[..., 0], info):
        assert img[inf["body"]].mean() > np.median(img) + 0.15


def test_compression_fracture_is_a_wedge_with_lower_anterior_height(sample):
    x, y, info = sample
    pixel_ratio = {0: [], 1: []}
    for label, inf in zip(y, info):
        ratio = inf["anterior_height"] / inf["posterior_height"]
        if label == 1:
            assert 0.25 <= inf["wedge_loss"] <= 0.45 and ratio < 0.82, ratio
        else:
            assert inf["wedge_loss"] == 0.0 and ratio > 0.93, ratio
        if label in (0, 1):  # the same seen in the rendered mask: anterior vs posterior fifth
            body, u, w = inf["body"], inf["u"], inf["width"]
            pixel_ratio[label].append((body & (u < -0.3 * w)).sum() / (body & (u > 0.3 * w)).sum())
    assert np.mean(pixel_ratio[1]) < np.mean(pixel_ratio[0]) - 0.15


def test_lytic_focus_is_lucent_and_sclerotic_focus_is_dense(sample):
    x, y, info = sample
    for img, label, inf in zip(x[..., 0], y, info):
        lesion, rest = inf["lesion"], inf["body"] & ~inf["lesion"]
        if label in (0, 1):
            assert not lesion.any()
            continue
        assert lesion.sum() >= 3
        contrast = img[lesion].mean() - img[rest].mean()
        assert (contrast < -0.1) if label == 2 else (contrast > 0.1), (label, contrast)


def test_tfds_phantom_spine_round_trip(tmp_path):
    from jaxmedgan.data import tfds_builders

    data_dir = tfds_builders.build_dataset("phantom-spine", str(tmp_path), image_size=32,
                                           phantom_counts=((2, 1, 1, 1), (1, 1, 1, 1)))
    assert tfds_builders.class_names(data_dir, "phantom-spine") == sp.CLASS_NAMES
    images, labels = tfds_builders.load_arrays(data_dir, "phantom-spine", "train")
    ref, ref_labels = sp.generate((2, 1, 1, 1), sp.TRAIN_SEED, 32)
    np.testing.assert_array_equal(labels, ref_labels)
    assert images.shape == (5, 32, 32, 1) and np.abs(images - ref).max() <= 1 / 255 + 1e-6
    assert len(tfds_builders.load_split(data_dir, "phantom_spine", "test")) == 4
    with pytest.raises(ValueError, match=r"'phantom-spine' takes phantom_counts .*got window"):
        tfds_builders.build_dataset("phantom-spine", str(tmp_path), window=(0.0, 1.0))
    with pytest.raises(ValueError, match="power of two >= 16"):
        tfds_builders.build_dataset("phantom-spine", str(tmp_path), image_size=24)
