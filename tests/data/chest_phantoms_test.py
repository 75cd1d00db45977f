"""Chest radiograph phantoms: determinism, multi-label targets, and the documented appearance rules."""
import numpy as np
import pytest

from jaxmedgan.data import chest_phantoms as cp

K = len(cp.FINDING_NAMES)


@pytest.fixture(scope="module")
def pairs():
    """The same 12 chests rendered without findings and with each single finding (32 px)."""
    n = 12
    base = cp.generate_with_info(n, seed=7, image_size=32, targets=np.zeros((n, K)))
    with_finding = {}
    for k, name in enumerate(cp.FINDING_NAMES):
        t = np.zeros((n, K), np.float32)
        t[:, k] = 1
        with_finding[name] = cp.generate_with_info(n, seed=7, image_size=32, targets=t)
    return base, with_finding


def test_shapes_range_determinism_and_prefix():
    for size in (16, 32, 48):
        x, y = cp.generate(5, seed=0, image_size=size)
        assert x.shape == (5, size, size, 1) and x.dtype == np.float32 and y.shape == (5, K)
        assert -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.2
    a, ya = cp.generate(70, seed=3, image_size=16)  # crosses a chunk boundary
    b, yb = cp.generate(3, seed=3, image_size=16)
    np.testing.assert_array_equal(a[:3], b)
    np.testing.assert_array_equal(ya[:3], yb)
    c, _ = cp.generate(3, seed=4, image_size=16)
    assert np.abs(a[:3] - c).mean() > 0.05  # another seed, other chests
    with pytest.raises(ValueError, match=">= 16 px"):
        cp.generate(1, 0, 8)
    with pytest.raises(ValueError, match="one probability in"):
        cp.generate(1, 0, 16, prevalence=(0.5, 0.5))


def test_targets_are_multi_hot_with_the_configured_prevalence():
    p = (0.0, 0.5, 1.0, 0.2, 0.5)
    _, y = cp.generate(256, seed=1, image_size=16, prevalence=p)
    assert set(np.unique(y)) <= {0.0, 1.0} and y.dtype == np.float32
    freq = y.mean(0)
    assert freq[0] == 0 and freq[2] == 1
    np.testing.assert_allclose(freq[[1, 3, 4]], [0.5, 0.2, 0.5], atol=0.1)  # binomial sd <= 0.031
    both = (y[:, 1] * y[:, 4]).mean()  # drawn independently, so they co-occur: P = 0.25
    assert abs(both - 0.25) < 0.08 and (y.sum(1) >= 3).any()
    _, none = cp.generate(20, seed=1, image_size=16, prevalence=(0.0,) * K)
    assert not none.any()  # 'no finding' = all-zero row


def test_lungs_are_dark_and_heart_is_bright(pairs):
    (x, _, info), _ = pairs
    img = x[..., 0]
    for i in range(len(img)):
        lung, heart = img[i][info["aerated"][i]], img[i][info["heart"][i]]
        assert lung.mean() < heart.mean() - 0.5, (lung.mean(), heart.mean())


def test_cardiomegaly_means_cardiothoracic_ratio_above_half(pairs):
    (x0, _, i0), found = pairs
    x1, _, i1 = found["cardiomegaly"]
    assert (i0["ctr"] < 0.5).all() and (i1["ctr"] > 0.5).all()
    # Measured on the rendered heart mask: widest heart row / inner thoracic width (2 W).
    for info, big in ((i0, False), (i1, True)):
        px = info["heart"].any(1).sum(-1) / (2 * info["wall"] * 32 / 2)
        assert ((px > 0.5) == big).all(), px
    # ... and seen in the image: more bright pixels inside the thorax.
    bright0 = (x0[..., 0] > 0.0).sum((1, 2))
    bright1 = (x1[..., 0] > 0.0).sum((1, 2))
    assert (bright1 > bright0).all()


def test_effusion_fills_the_costophrenic_angle_with_fluid(pairs):
    (x0, _, i0), found = pairs
    x1, _, i1 = found["effusion"]
    fluid = i1["fluid"]
    assert fluid.sum((1, 2)).min() > 5  # at least one side holds fluid
    assert not i0["fluid"].any()
    diff = (x1 - x0)[..., 0]
    assert np.mean([diff[i][fluid[i]].mean() for i in range(len(diff))]) > 0.3  # opaque fluid
    # The lowest lateral lung pixels (the angle) are aerated without effusion, fluid with it.
    assert (i1["aerated"].sum((1, 2)) < i0["aerated"].sum((1, 2))).all()


def test_nodule_and_consolidation_are_opacities_in_the_lung(pairs):
    (x0, _, i0), found = pairs
    for name, min_rise in (("nodule", 0.3), ("consolidation", 0.2)):
        x1, _, i1 = found[name]
        mask = i1[name]
        assert mask.sum((1, 2)).min() >= 1 and not i0[name].any()
        diff = (x1 - x0)[..., 0]
        rises = [diff[i][mask[i]].mean() for i in range(len(diff))]
        assert np.mean(rises) > min_rise, (name, rises)
        outside = [np.abs(diff[i][~mask[i] & ~i1["lung"][i]]).mean() for i in range(len(diff))]
        assert np.mean(outside) < 0.05  # only Poisson noise changes away from the finding


def test_pneumothorax_rim_is_lucent_without_markings(pairs):
    (x0, _, i0), found = pairs
    x1, _, i1 = found["pneumothorax"]
    rim = i1["rim"]
    assert rim.sum((1, 2)).min() > 3 and not i0["rim"].any()
    for i in range(len(x1)):
        before, after = x0[i, ..., 0][rim[i]], x1[i, ..., 0][rim[i]]
        assert after.mean() < before.mean() - 0.05  # darker than the lung it replaced
    # The left/right of the rim follows the drawn side: x0 + side * something.
    cols = np.arange(32) - 15.5
    for i in range(len(x1)):
        centre_col = cols[rim[i].any(0)].mean() / 16.0
        assert np.sign(centre_col - i1["x0"][i]) == i1["pneumothorax_side"][i]
