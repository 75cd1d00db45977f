"""The leak transforms (augment/leak_transforms.py) against numpy, and the forced-leak test switch
of augment/policy.py (`d_augment.kind='leak_test_<t>'`): D's real inputs only."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmedgan.augment import leak_transforms, policy

X = np.random.default_rng(0).uniform(-1, 1, (3, 6, 6, 2)).astype(np.float32)


@pytest.mark.parametrize("name,ref", [
    ("identity", lambda x: x),
    ("hflip", lambda x: x[:, :, ::-1]),
    ("vflip", lambda x: x[:, ::-1]),
    ("rot90", lambda x: np.stack([np.rot90(i) for i in x])),  # counter-clockwise, as data/transforms.rotate90
    ("rot180", lambda x: np.stack([np.rot90(i, 2) for i in x])),
    ("rot270", lambda x: np.stack([np.rot90(i, 3) for i in x])),
    ("transpose", lambda x: np.stack([np.transpose(i, (1, 0, 2)) for i in x])),
    ("antitranspose", lambda x: np.stack([i[::-1, ::-1].transpose(1, 0, 2) for i in x])),  # out[i,j] = x[W-1-j, H-1-i]
    ("invert", lambda x: -x),
])
def test_fixed_transforms_match_numpy(name, ref):
    np.testing.assert_array_equal(leak_transforms.apply(name, jnp.asarray(X)), ref(X))


def test_d4_is_the_eight_distinct_symmetries():
    outs = [np.asarray(leak_transforms.apply(n, jnp.asarray(X))) for n in leak_transforms.D4]
    assert len(outs) == 8 and all(not np.array_equal(a, b) for i, a in enumerate(outs) for b in outs[i + 1:])


_ADA = sorted(n for n in leak_transforms.RANDOM if n.startswith("ada_"))  # ~10 s of ADA compiles: slow suite


@pytest.mark.parametrize("name", ["translate", "cutout", "color",
                                  *(pytest.param(n, marks=pytest.mark.slow) for n in _ADA)])
def test_random_transforms_keep_shape_and_change_the_images(name):
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32))  # RGB: hue too
    y = leak_transforms.apply(name, x, jax.random.PRNGKey(3))
    assert y.shape == x.shape and y.dtype == x.dtype
    changed = np.any(np.abs(np.asarray(y) - np.asarray(x)) > 1e-6, axis=(1, 2, 3))
    assert changed.any(), name
    if name in ("translate", "cutout"):
        assert changed.all(), name  # a translation is never (0, 0)


def test_apply_labelled_picks_each_rows_transform():
    names = ("identity", "hflip", "invert")
    labels = jnp.array([2, 0, 1])
    y = np.asarray(leak_transforms.apply_labelled(names, jnp.asarray(X), labels, jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(y, np.stack([-X[0], X[1], X[2][:, ::-1]]))


def test_check_names_unknown_and_non_square():
    with pytest.raises(ValueError, match="Unknown transform.*'flip'.*known: identity"):
        leak_transforms.check(["flip"])
    with pytest.raises(ValueError, match=r"\['rot90'\] need square images; got 4x6"):
        leak_transforms.apply("rot90", jnp.zeros((1, 4, 6, 1)))
    with pytest.raises(ValueError, match="random: pass a PRNG key"):
        leak_transforms.apply("cutout", jnp.zeros((1, 4, 4, 1)))
    assert leak_transforms.apply("rot180", jnp.zeros((1, 4, 6, 1))).shape == (1, 4, 6, 1)


# ------------------------------------------------------------------------------------------------
# The test switch.


def _aug(kind):
    return policy.DAugment.from_config(ml_collections.ConfigDict({"d_augment": {"kind": kind}}))


def test_leak_test_switch_transforms_reals_only():
    aug = _aug("leak_test_hflip")
    key, x = jax.random.PRNGKey(0), jnp.asarray(X)
    assert aug.active and aug.leak_test == "hflip" and aug.init_extra() == {}
    np.testing.assert_array_equal(aug(x, key, {}, real=True), X[:, :, ::-1])
    np.testing.assert_array_equal(aug(x, key, {}, real=False), X)
    assert set(policy.LEAK_TEST_KINDS) == {f"leak_test_{t}" for t in leak_transforms.FIXED if t != "identity"}
    assert _aug("diffaug").leak_test is None and _aug("none").leak_test is None


def test_leak_test_switch_refuses_trainers_that_do_not_say_what_is_real():
    aug, key, x = _aug("leak_test_invert"), jax.random.PRNGKey(0), jnp.asarray(X)
    with pytest.raises(ValueError, match="leak_test_invert.*transforms D's real inputs only.*trainers/gan.py"):
        aug(x, key, {})
    with pytest.raises(ValueError, match="not available for \\(condition map, image\\) pairs"):
        aug.pair(jnp.zeros((3, 6, 6, 2)), x, key, {})
    with pytest.raises(ValueError, match="config.d_augment.kind='leak_test_mirror' must be one of"):
        _aug("leak_test_mirror")
    # The other kinds ignore `real`: the same images for reals and fakes.
    d = _aug("diffaug")
    np.testing.assert_array_equal(d(x, key, {}, real=True), d(x, key, {}))
