"""Tests for jaxmedgan/ops/misc.py: minibatch stddev vs a numpy loop, noise injection, equalised lr."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.ops import misc


def _np_minibatch_stddev(x, group_size, num_channels):
    """Explicit loops: example i's group is {j : j % (N // G) == i % (N // G)}, StyleGAN2's strided grouping."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    g = n if group_size is None else min(group_size, n)
    groups = n // g
    block = c // num_channels
    extra = np.zeros((n, h, w, num_channels))
    for i in range(n):
        members = [j for j in range(n) if j % groups == i % groups]
        assert len(members) == g
        std = np.sqrt(np.var(x[members], axis=0) + 1e-8)  # [H, W, C], population variance
        for f in range(num_channels):
            extra[i, :, :, f] = std[:, :, f * block : (f + 1) * block].mean()
    return np.concatenate([x, extra], axis=-1)


@pytest.mark.parametrize("group_size,num_channels", [(4, 1), (2, 1), (2, 2), (8, 1), (None, 4), (1, 1)])
def test_minibatch_stddev_matches_numpy(group_size, num_channels):
    x = np.random.default_rng(0).standard_normal((4, 3, 3, 4)).astype(np.float32)
    got = misc.minibatch_stddev(jnp.asarray(x), group_size, num_channels)
    assert got.shape == (4, 3, 3, 4 + num_channels) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), _np_minibatch_stddev(x, group_size, num_channels), rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_group_size_one_is_constant_and_uncoupled():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 2, 2, 3)), jnp.float32)
    y = misc.minibatch_stddev(x, group_size=1)
    np.testing.assert_allclose(np.asarray(y[..., -1]), 1e-4, rtol=1e-4)  # sqrt(0 + 1e-8)
    # d out[i] / d x[j] must vanish for i != j: per-example DP gradients rely on it.
    jac = np.asarray(jax.jacobian(lambda v: misc.minibatch_stddev(v, group_size=1))(x))  # [N,H,W,C+1, N,H,W,C]
    for i in range(4):
        for j in range(4):
            if i != j:
                assert np.all(jac[i, :, :, :, j] == 0.0), (i, j)


def test_minibatch_stddev_couples_only_group_partners():
    # N=4, G=2 -> 2 groups: {0, 2} and {1, 3} (strided). Only partners influence each other's stddev.
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 2, 2, 3)), jnp.float32)
    jac = np.asarray(jax.jacobian(lambda v: misc.minibatch_stddev(v, group_size=2)[..., -1])(x))  # [N,H,W, N,H,W,C]
    coupled = np.abs(jac).reshape(4, -1, 4, 12).sum(axis=(1, 3)) > 0
    np.testing.assert_array_equal(coupled, np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], bool))


def test_minibatch_stddev_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible by the group size 3"):
        misc.minibatch_stddev(jnp.zeros((4, 2, 2, 4)), group_size=3)
    with pytest.raises(ValueError, match="num_channels=3"):
        misc.minibatch_stddev(jnp.zeros((4, 2, 2, 4)), group_size=2, num_channels=3)


def test_noise_injection_with_given_noise():
    x = jnp.ones((2, 4, 4, 3))
    noise = jnp.arange(32, dtype=jnp.float32).reshape(2, 4, 4, 1)
    got = misc.noise_injection(x, 0.5, noise=noise)
    np.testing.assert_allclose(np.asarray(got), 1.0 + 0.5 * np.broadcast_to(np.asarray(noise), (2, 4, 4, 3)))


def test_noise_injection_with_key():
    x = jnp.zeros((2, 8, 8, 4))
    key = jax.random.key(0)
    y = np.asarray(misc.noise_injection(x, 2.0, key=key))
    # One plane per example shared by all channels, deterministic in the key, scaled by the strength.
    np.testing.assert_array_equal(y, np.broadcast_to(y[..., :1], y.shape))
    np.testing.assert_array_equal(y, np.asarray(misc.noise_injection(x, 2.0, key=key)))
    np.testing.assert_allclose(y[..., 0], 2.0 * np.asarray(jax.random.normal(key, (2, 8, 8, 1)))[..., 0], rtol=1e-6)
    assert not np.allclose(y, np.asarray(misc.noise_injection(x, 2.0, key=jax.random.key(1))))
    assert not np.allclose(y[0], y[1])
    np.testing.assert_array_equal(np.asarray(misc.noise_injection(x + 3.0, 0.0, key=key)), 3.0)
    # A traced (learned) strength works under grad.
    g = jax.grad(lambda s: misc.noise_injection(x, s, key=key).sum())(jnp.float32(0.0))
    np.testing.assert_allclose(float(g), y.sum() / 2.0, rtol=1e-5)


def test_noise_injection_needs_exactly_one_source():
    x = jnp.zeros((1, 2, 2, 1))
    with pytest.raises(ValueError, match="exactly one"):
        misc.noise_injection(x, 1.0)
    with pytest.raises(ValueError, match="exactly one"):
        misc.noise_injection(x, 1.0, key=jax.random.key(0), noise=jnp.zeros((1, 2, 2, 1)))


def test_weight_gain_and_fan_in():
    assert misc.fan_in((3, 3, 16, 32)) == 144 and misc.fan_in((512, 256)) == 512
    assert misc.weight_gain(144) == pytest.approx(1.0 / 12.0)
    assert misc.weight_gain(512, lr_multiplier=0.01) == pytest.approx(0.01 / np.sqrt(512))
    with pytest.raises(ValueError, match="fan_in"):
        misc.weight_gain(0)


def test_weight_gain_gives_unit_variance_outputs():
    # Equalised lr: params ~ N(0, 1/lr_mul^2), scaled at runtime by weight_gain -> He-scaled weights,
    # so unit-variance inputs give (about) unit-variance pre-activations whatever lr_mul is.
    rng = np.random.default_rng(0)
    fan, lr_mul = 256, 0.01
    params = rng.standard_normal((fan, 64)) / lr_mul
    x = rng.standard_normal((2000, fan))
    y = x @ (params * misc.weight_gain(fan, lr_mul))
    assert abs(y.std() - 1.0) < 0.05
