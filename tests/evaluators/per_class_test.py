"""Per-class quality metrics (quality.per_class) and the PRDC bootstrap, against the pooled functions."""
import numpy as np
import pytest

from jaxmedgan.evaluators import diversity, quality


def test_prdc_from_distances_without_copies_is_prdc():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 4)), rng.normal(0.3, 1.2, size=(25, 4))
    d = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))  # noqa: E731 (independent distances)
    got = quality._prdc_from_distances(d(real, real), d(fake, fake), d(real, fake), np.eye(30, dtype=bool),
                                       np.eye(25, dtype=bool), 3)
    want = quality.prdc(real, fake, k=3)
    np.testing.assert_allclose(got, [want[p] for p in quality.PRDC], rtol=1e-12)


def test_prdc_bootstrap_copies_are_not_neighbours_and_intervals_cover():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(40, 3))
    # A resample that draws x twice: with copies excluded the radius of x is its k-th *other* image.
    d = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
    idx = np.array([0, 0, 1, 2, 3, 4])
    same = idx[:, None] == idx[None, :]
    r = quality._radii_excluding(d[np.ix_(idx, idx)], same, 2)
    assert r[0] == r[1] == np.sort(d[0, 1:5])[1]
    fake_good, fake_collapsed = rng.normal(size=(40, 3)), real[:1] + 0.01 * rng.normal(size=(40, 3))
    good = quality.prdc_bootstrap(real, fake_good, 3, num_bootstrap=100, seed=0)
    bad = quality.prdc_bootstrap(real, fake_collapsed, 3, num_bootstrap=100, seed=0)
    point = quality.prdc(real, fake_good, k=3)
    for p in quality.PRDC:
        assert good[p][0] <= good[p][1]
    assert good["recall"][0] <= point["recall"] <= good["recall"][1]
    assert bad["recall"][1] < good["recall"][0] and bad["coverage"][1] < good["coverage"][0]
    assert good == quality.prdc_bootstrap(real, fake_good, 3, num_bootstrap=100, seed=0)  # seeded
    with pytest.raises(ValueError, match="more than k"):
        quality.prdc_bootstrap(real[:3], fake_good, 3)


def test_per_class_matches_the_library_functions_class_by_class():
    rng = np.random.default_rng(2)
    names = ("a", "b", "c")
    real_px, fake_px = rng.normal(size=(36, 4, 4, 1)), rng.normal(size=(24, 4, 4, 1))
    real_y, fake_y = np.repeat([0, 1, 2], 12), np.array([0] * 10 + [1] * 11 + [2] * 3)  # c: too few for k=3 PR
    real_f, fake_f = real_px.reshape(36, -1)[:, :5], fake_px.reshape(24, -1)[:, :5]
    out = quality.per_class(real_f, real_y, fake_f, fake_y, names, "fid,pr,diversity", real_pixels=real_px,
                            fake_pixels=fake_px, k=3, num_bootstrap=30, seed=5)
    px = diversity.class_diversity(fake_px, fake_y, real_px, real_y, names, num_bootstrap=30, seed=5)["per_class"]
    ft = diversity.class_diversity(fake_f, fake_y, real_f, real_y, names, num_bootstrap=30, seed=5)["per_class"]
    for c, name in enumerate(names):
        v = out[name]
        assert (v["num_fake"], v["num_real"]) == ((fake_y == c).sum(), 12)
        assert v["diversity_ratio"] == px[name]["ratio"] and v["diversity_ratio_ci"] == px[name]["ratio_ci"]
        assert v["diversity_ratio_feature"] == ft[name]["ratio"]
        assert v["fid"] == pytest.approx(quality.fid(real_f[real_y == c], fake_f[fake_y == c]), rel=1e-12)
    for c, name in enumerate(names[:2]):
        want = quality.prdc(real_f[real_y == c], fake_f[fake_y == c], k=3)
        cis = quality.prdc_bootstrap(real_f[real_y == c], fake_f[fake_y == c], 3, num_bootstrap=30, seed=(5, c))
        for p in quality.PRDC:
            assert out[name][p] == want[p] and out[name][f"{p}_ci"] == cis[p]
    assert np.isnan(out["c"]["recall"]) and np.isnan(out["c"]["recall_ci"]).all()  # 3 fakes <= k
    assert quality.class_means(out, "recall") == pytest.approx((out["a"]["recall"] + out["b"]["recall"]) / 2)
    with pytest.raises(ValueError, match="within classes"):
        quality.compute(real_f, fake_f, "fid,diversity")
