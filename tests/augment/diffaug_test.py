"""DiffAugment: each op against a numpy statement of what it does, per-example independence, gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.augment import diffaug


def _images(n=6, h=8, w=8, c=1, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)), jnp.float32)


def _np_shift(img, dy, dx):
    """Reference: out[r, c] = img[r - dy, c - dx] where inside, else 0."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for r in range(h):
        for c in range(w):
            if 0 <= r - dy < h and 0 <= c - dx < w:
                out[r, c] = img[r - dy, c - dx]
    return out


def test_policy_parsing_names_unknown_ops():
    assert diffaug.parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert diffaug.parse_policy("") == ()
    with pytest.raises(ValueError, match=r"\['flip'\].*expected from"):
        diffaug.parse_policy("color,flip")


def test_shift_matches_numpy_zero_filled_shift():
    x = np.asarray(_images(n=4, h=6, w=7, c=2))
    dy, dx = np.array([0, 2, -3, 6]), np.array([1, -1, 0, -7])
    out = np.asarray(diffaug.shift(jnp.asarray(x), jnp.asarray(dy), jnp.asarray(dx)))
    for i in range(4):
        np.testing.assert_array_equal(out[i], _np_shift(x[i], dy[i], dx[i]))


def test_translation_is_a_zero_filled_shift_within_one_eighth_of_the_size():
    x = np.asarray(_images(n=32, h=16, w=16))
    out = np.asarray(diffaug.translation(jnp.asarray(x), jax.random.PRNGKey(0)))
    seen = set()
    for i in range(len(x)):  # find the shift that explains each output (exactly one in range)
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(out[i], _np_shift(x[i], dy, dx))]
        assert len(found) == 1, i
        seen.add(found[0])
    assert len(seen) > 5  # shifts differ between examples


def test_cutout_zeroes_one_half_size_square_clipped_at_the_edges():
    n, h, w = 200, 16, 12
    mask = np.asarray(diffaug.cutout_mask(n, h, w, jax.random.PRNGKey(1)))[..., 0]
    full = 0
    for m in mask:
        rows, cols = np.nonzero(m == 0)
        assert rows.size > 0
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert (m[r0:r1, c0:c1] == 0).all() and (m == 0).sum() == (r1 - r0) * (c1 - c0)  # one rectangle
        assert r1 - r0 <= 8 and c1 - c0 <= 6
        if (r1 - r0, c1 - c0) == (8, 6):
            full += 1
        else:  # a smaller one was clipped by the border
            assert r0 == 0 or c0 == 0 or r1 == h or c1 == w
    assert full > n // 4
    x = _images(n=3, h=h, w=w)
    out = np.asarray(diffaug.cutout(x, jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(out, np.asarray(x) * np.asarray(diffaug.cutout_mask(3, h, w, jax.random.PRNGKey(1))))


def test_color_on_grayscale_is_a_per_image_affine_map_in_the_reference_ranges():
    # brightness then contrast: y = (x + b - m) * s + m with m = mean(x + b), b in [-0.5, 0.5), s in [0.5, 1.5).
    x = np.asarray(_images(n=16))
    y = np.asarray(diffaug.color(jnp.asarray(x), jax.random.PRNGKey(2)))
    for xi, yi in zip(x, y):
        a, c = np.polyfit(xi.ravel(), yi.ravel(), 1)
        np.testing.assert_allclose(yi, a * xi + c, atol=1e-5)
        assert 0.5 <= a < 1.5
        assert -0.5 <= yi.mean() - xi.mean() < 0.5
    rgb = _images(n=4, c=3)
    y = np.asarray(diffaug.color(rgb, jax.random.PRNGKey(2)))
    assert y.shape == rgb.shape and not np.allclose(y, rgb)


def test_augment_is_per_example_differentiable_and_empty_policy_is_identity():
    x = _images(n=3, h=8, w=8)
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(diffaug.augment(x, key, ()), x)
    jac = jax.jacobian(lambda v: diffaug.augment(v, key))(x)  # [3,8,8,1, 3,8,8,1]
    for i in range(3):
        for j in range(3):
            block = np.abs(np.asarray(jac[i, :, :, :, j])).max()
            assert (block > 0) if i == j else block == 0, (i, j)
    with pytest.raises(ValueError, match="NHWC"):
        diffaug.augment(x[0], key)
