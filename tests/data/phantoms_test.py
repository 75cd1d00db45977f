"""Tests for jaxmedgan/data/phantoms.py: determinism, shapes, and radiological class appearance."""

import time

import numpy as np
import pytest

from jaxmedgan.data import phantoms


@pytest.fixture(scope="module")
def train_set() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full study-sized training set with lesion masks."""
    return phantoms.generate_with_masks(phantoms.TRAIN_COUNTS, phantoms.TRAIN_SEED)


def _region_stats(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Centre / ring / lesion / liver statistics of one [H,W] image given its lesion mask."""
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    cy, cx = yy[mask].mean(), xx[mask].mean()
    r_eq = np.sqrt(mask.sum() / np.pi)  # Radius of the disc with the lesion's area.
    d = np.hypot(yy - cy, xx - cx)
    # Lesion interior: mask eroded by 1 px (4-neighbourhood) to leave out the partial-volume margin.
    core = mask.copy()
    core[1:] &= mask[:-1]
    core[:-1] &= mask[1:]
    core[:, 1:] &= mask[:, :-1]
    core[:, :-1] &= mask[:, 1:]
    return {
        "centre": image[d < 0.4 * r_eq].mean(),
        "ring": image[mask & (d > 0.7 * r_eq)].mean(),
        "lesion_std": image[core].std(),
        "lesion_p99": np.percentile(image[mask], 99),
        "liver": np.median(image[~mask & (d > r_eq + 4)]),
    }


def _class_stats(images, labels, masks) -> dict[str, dict[str, np.ndarray]]:
    """Per class name: per-image arrays of each region statistic."""
    out = {}
    for c, name in enumerate(phantoms.CLASS_NAMES):
        rows = [_region_stats(x[..., 0], m) for x, m in zip(images[labels == c], masks[labels == c])]
        out[name] = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return out


def test_shapes_dtypes_range_and_counts(train_set):
    images, labels, masks = train_set
    assert images.shape == (182, 64, 64, 1) and images.dtype == np.float32
    assert labels.shape == (182,) and labels.dtype == np.int32
    assert masks.shape == (182, 64, 64) and masks.dtype == bool
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(labels), phantoms.TRAIN_COUNTS)
    assert np.all(masks.sum(axis=(1, 2)) > 50)  # Every ROI holds a lesion of > 50 px.


def test_generate_matches_generate_with_masks_and_other_sizes():
    x, y = phantoms.generate((1, 2, 0), seed=3, size=32)
    assert x.shape == (3, 32, 32, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 1, 1])
    x2, y2, _ = phantoms.generate_with_masks((1, 2, 0), seed=3, size=32)
    np.testing.assert_array_equal(x, x2)
    empty, empty_labels = phantoms.generate((0, 0, 0), seed=0)
    assert empty.shape == (0, 64, 64, 1) and empty_labels.shape == (0,)


def test_deterministic_by_seed():
    a, la = phantoms.generate((2, 2, 2), seed=7)
    b, lb = phantoms.generate((2, 2, 2), seed=7)
    c, _ = phantoms.generate((2, 2, 2), seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert np.abs(a - c).mean() > 0.05


def test_image_independent_of_other_counts(train_set):
    images, labels, _ = train_set
    small, small_labels = phantoms.generate((3, 3, 3), phantoms.TRAIN_SEED)
    for c in range(3):
        np.testing.assert_array_equal(small[small_labels == c], images[labels == c][:3])


def test_train_and_test_splits_share_no_image(train_set):
    assert phantoms.TRAIN_SEED != phantoms.TEST_SEED
    train = train_set[0].reshape(182, -1)
    test, test_labels = phantoms.generate(phantoms.TEST_COUNTS, phantoms.TEST_SEED)
    np.testing.assert_array_equal(np.bincount(test_labels), phantoms.TEST_COUNTS)
    test = test.reshape(len(test), -1)
    # Closest train/test pair still differs by far more than quantisation (mean |diff| > 0.05).
    dist = np.abs(train[:, None, :] - test[None, :, :]).mean(-1)
    assert dist.min() > 0.05, dist.min()


def test_window_maps_hu_to_unit_range():
    hu = np.array([-1000.0, -125.0, 50.0, 225.0, 3000.0])
    np.testing.assert_allclose(phantoms.window_hu(hu), [-1.0, -1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(phantoms.window_hu(np.array([60.0]), level=60.0, width=100.0), [0.0])
    with pytest.raises(ValueError, match="width"):
        phantoms.window_hu(hu, width=0.0)


def test_liver_background_is_portal_venous_parenchyma(train_set):
    stats = _class_stats(*train_set)
    liver = np.concatenate([s["liver"] for s in stats.values()])
    liver_hu = liver * phantoms.WINDOW_WIDTH / 2 + phantoms.WINDOW_LEVEL
    # Liver at ~+60 HU in the portal venous phase.
    assert 50.0 < np.median(liver_hu) < 70.0, np.median(liver_hu)


def test_classes_follow_radiological_appearance(train_set):
    s = _class_stats(*train_set)
    cyst, met, hem = s["cyst"], s["metastasis"], s["hemangioma"]
    # Cyst: darkest centre (water-like, 0-15 HU ~ window -0.29..-0.2), well below liver.
    assert cyst["centre"].mean() < met["centre"].mean() - 0.05
    assert cyst["centre"].mean() < hem["centre"].mean() - 0.05
    assert -0.35 < cyst["centre"].mean() < -0.15
    assert np.all(cyst["centre"] < cyst["liver"] - 0.1)
    # Cyst: most homogeneous (lowest std inside the lesion).
    assert cyst["lesion_std"].mean() < 0.8 * met["lesion_std"].mean()
    assert cyst["lesion_std"].mean() < 0.8 * hem["lesion_std"].mean()
    # Metastasis: hypodense centre, enhancing rim brighter than its centre in every image.
    assert np.all(met["centre"] < met["liver"])
    assert np.all(met["ring"] > met["centre"])
    assert (met["ring"] - met["centre"]).mean() > 0.1
    # Hemangioma: peripheral globules brighter than liver (blood-pool density).
    assert (hem["ring"] > hem["liver"]).mean() > 0.9
    assert (hem["ring"] - hem["liver"]).mean() > 0.05
    assert (hem["lesion_p99"] - hem["liver"]).mean() > 0.3
    assert (hem["lesion_p99"] - hem["liver"]).mean() > (met["lesion_p99"] - met["liver"]).mean() + 0.1


def test_fast_enough():
    start = time.perf_counter()
    phantoms.generate(phantoms.TRAIN_COUNTS, seed=1)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"counts": (1, 2), "seed": 0}, "one count per class"),
        ({"counts": (1, -1, 0), "seed": 0}, ">= 0"),
        ({"counts": (1, 1, 1), "seed": 0, "size": 8}, "size"),
        ({"counts": (1, 1, 1), "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        phantoms.generate(**kwargs)
