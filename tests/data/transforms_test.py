"""Tests for jaxmedgan/data/transforms.py: each op against numpy/scipy, and the grain RandomMap."""

import pickle

import grain
import numpy as np
import pytest

from jaxmedgan.data import transforms


def _image(h: int = 12, w: int = 12, c: int = 1, seed: int = 0) -> np.ndarray:
    """Random float32 [h, w, c] in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (h, w, c)).astype(np.float32)


def test_flip_matches_np_flip():
    x = _image(6, 8, 2)
    np.testing.assert_array_equal(transforms.flip(x, True, False), np.flip(x, axis=1))
    np.testing.assert_array_equal(transforms.flip(x, False, True), np.flip(x, axis=0))
    np.testing.assert_array_equal(transforms.flip(x, True, True), np.flip(x, axis=(0, 1)))
    np.testing.assert_array_equal(transforms.flip(x, False, False), x)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotate90_matches_np_rot90(k):
    x = _image(8, 8, 3)
    np.testing.assert_array_equal(transforms.rotate90(x, k), np.rot90(x, k, axes=(0, 1)))


@pytest.mark.parametrize("dy, dx", [(0, 0), (2, -3), (-4, 1)])
@pytest.mark.parametrize("mode", transforms.PAD_MODES)
def test_translate_matches_roll_inside_and_pad_mode_outside(dy, dx, mode):
    x = _image(10, 9, 2)
    out = transforms.translate(x, dy, dx, mode)
    assert out.shape == x.shape
    # Inside: a plain shift (np.roll) wherever the source pixel exists.
    rolled = np.roll(x, (dy, dx), axis=(0, 1))
    ys = slice(max(dy, 0), 10 + min(dy, 0))
    xs = slice(max(dx, 0), 9 + min(dx, 0))
    np.testing.assert_array_equal(out[ys, xs], rolled[ys, xs])
    # Everywhere: the crop of the np.pad-ed image.
    m = 5
    ref = np.pad(x, ((m, m), (m, m), (0, 0)), mode=mode)[m - dy: m - dy + 10, m - dx: m - dx + 9]
    np.testing.assert_array_equal(out, ref)


def test_scale_identity_and_linear_ramp():
    x = _image(9, 11, 1)
    np.testing.assert_array_equal(transforms.scale(x, 1.0), x)
    # Bilinear interpolation is exact on a linear ramp: zoom 1.25 about the centre scales the slope.
    yy, xx = np.mgrid[0:9, 0:11].astype(np.float32)
    ramp = (0.1 * yy - 0.05 * xx)[..., None]
    out = transforms.scale(ramp, 1.25)
    cy, cx = 4.0, 5.0
    expected = 0.1 * ((yy - cy) / 1.25 + cy) - 0.05 * ((xx - cx) / 1.25 + cx)
    np.testing.assert_allclose(out[..., 0], expected, atol=1e-6)


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.75])
@pytest.mark.parametrize(
    "mode, scipy_mode", [("reflect", "mirror"), ("edge", "nearest"), ("symmetric", "reflect")])
def test_scale_matches_scipy_map_coordinates(factor, mode, scipy_mode):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _image(16, 14, 2, seed=3)
    out = transforms.scale(x, factor, mode)
    cy, cx = 7.5, 6.5
    yy, xx = np.mgrid[0:16, 0:14].astype(np.float64)
    coords = [(yy - cy) / factor + cy, (xx - cx) / factor + cx]
    for c in range(2):
        ref = ndimage.map_coordinates(x[..., c].astype(np.float64), coords, order=1, mode=scipy_mode)
        np.testing.assert_allclose(out[..., c], ref, atol=1e-5)


def test_adjust_intensity_formula():
    x = _image(5, 5, 2)
    out = transforms.adjust_intensity(x, 0.1, 1.2)
    mean = x.mean(axis=(0, 1))
    np.testing.assert_allclose(out, (x - mean) * 1.2 + mean + 0.1, atol=1e-6)
    np.testing.assert_allclose(transforms.adjust_intensity(x, 0.0, 1.0), x, atol=1e-6)


def test_augment_is_a_grain_random_map_deterministic_by_rng_seed():
    aug = transforms.Augment()
    assert isinstance(aug, grain.transforms.RandomMap)
    pickle.loads(pickle.dumps(aug))  # grain worker processes pickle transforms.
    element = {"image": _image(16, 16, 1), "label": np.int32(2)}
    a = aug.random_map(element, np.random.default_rng(5))
    b = aug.random_map(element, np.random.default_rng(5))
    c = aug.random_map(element, np.random.default_rng(6))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    for out in (a, c):
        assert out["image"].shape == (16, 16, 1) and out["image"].dtype == np.float32
        assert out["image"].min() >= -1.0 and out["image"].max() <= 1.0
        assert out["label"] == 2
    np.testing.assert_array_equal(element["image"], _image(16, 16, 1))  # Input left untouched.


def test_augment_composition_matches_ops_with_same_draws():
    aug = transforms.Augment(max_translate_px=3, scale_range=(0.9, 1.1), brightness=0.1,
                             contrast_range=(0.8, 1.2), pad_mode="edge")
    x = _image(12, 12, 1, seed=9)
    out = aug.random_map({"image": x, "label": 0}, np.random.default_rng(11))["image"]
    rng = np.random.default_rng(11)  # Replay the draws in Augment's documented order.
    lr, ud = rng.random(2) < 0.5
    k = int(rng.integers(4))
    dy, dx = rng.integers(-3, 4, size=2)
    zoom, offset, gain = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1), rng.uniform(0.8, 1.2)
    ref = transforms.scale(x, zoom, "edge")
    ref = np.rot90(ref, k, axes=(0, 1))
    if lr:
        ref = np.flip(ref, axis=1)
    if ud:
        ref = np.flip(ref, axis=0)
    ref = transforms.translate(ref, int(dy), int(dx), "edge")
    ref = np.clip(transforms.adjust_intensity(ref, offset, gain), -1, 1)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_augment_all_off_is_identity_up_to_rounding():
    aug = transforms.Augment(flip=False, rotate90=False, max_translate_px=0, scale_range=(1.0, 1.0),
                             brightness=0.0, contrast_range=(1.0, 1.0))
    x = _image(8, 8, 3)
    np.testing.assert_allclose(aug.random_map({"image": x}, np.random.default_rng(0))["image"], x, atol=1e-6)


def test_non_square_images_keep_their_shape():
    aug = transforms.Augment()
    for seed in range(8):
        out = aug.random_map({"image": _image(8, 12, 1)}, np.random.default_rng(seed))
        assert out["image"].shape == (8, 12, 1)


def test_augment_rejects_bad_inputs_and_config():
    aug = transforms.Augment()
    bad_dtype = r"element\['image'\] float32 \[H, W, C\]; got ndarray uint8 \(8, 8, 1\)"
    with pytest.raises(ValueError, match=bad_dtype):
        aug.random_map({"image": np.zeros((8, 8, 1), np.uint8)}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="missing"):
        aug.random_map({"label": 1}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="pad_mode"):
        transforms.Augment(pad_mode="wrap")
    with pytest.raises(ValueError, match="scale_range"):
        transforms.Augment(scale_range=(1.1, 0.9))
