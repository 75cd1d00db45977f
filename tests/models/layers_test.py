"""Shared layers: norms against numpy formulas, activation table, apply() with BatchNorm."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.models import layers


def _x():
    return np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 6)) * 3 + 1, np.float32)


def test_instance_norm_matches_numpy():
    x = _x()
    norm = layers.make_norm("instance", train=True)
    v = norm.init(jax.random.PRNGKey(0), x)
    y = norm.apply(v, x)
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)


def test_layer_norm_matches_numpy():
    x = _x()
    norm = layers.make_norm("layer", train=True)
    v = norm.init(jax.random.PRNGKey(0), x)
    y = norm.apply(v, x)
    mu = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)


def test_group_norm_picks_a_divisor_of_the_channels():
    x = _x()  # 6 channels: 8 groups impossible, falls back to 6
    norm = layers.make_norm("group", train=True, groups=8)
    v = norm.init(jax.random.PRNGKey(0), x)
    y = norm.apply(v, x)
    inst = layers.make_norm("instance", train=True)
    np.testing.assert_allclose(y, inst.apply(inst.init(jax.random.PRNGKey(0), x), x), atol=1e-5)


def test_unknown_norm_and_activation_fail_clearly():
    with pytest.raises(ValueError, match="'bogus'"):
        layers.make_norm("bogus", train=True)
    with pytest.raises(ValueError, match="'swishy'"):
        layers.activation("swishy")


def test_apply_returns_updated_batch_stats_in_training_only():
    block = layers.ConvBlock(3, strides=1, norm="batch")
    x = _x()
    v = block.init(jax.random.PRNGKey(0), x, train=False)
    _, new_stats = layers.apply(block, v, x, train=True)
    assert not np.allclose(new_stats["BatchNorm_0"]["mean"], v["batch_stats"]["BatchNorm_0"]["mean"])
    _, same = layers.apply(block, v, x, train=False)
    np.testing.assert_array_equal(same["BatchNorm_0"]["mean"], v["batch_stats"]["BatchNorm_0"]["mean"])
    assert layers.modules_using(v) == ["BatchNorm_0"]


def test_upsample_nearest_and_fir_match_numpy_and_scipy():
    from scipy import signal

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 5, 4, 3)), np.float32)
    np.testing.assert_array_equal(layers.upsample(jnp.asarray(x), 2, "nearest"), x.repeat(2, 1).repeat(2, 2))
    # FIR: zero insertion + [1,3,3,1]/8 per axis, gain 2 per axis (scipy.signal.upfirdn, full output,
    # centred: the samples 1 .. 2n of the 2n+2).
    h = np.array([1, 3, 3, 1], np.float64) / 4
    ref = signal.upfirdn(h, x.astype(np.float64), up=2, axis=1)[:, 1:11]
    ref = signal.upfirdn(h, ref, up=2, axis=2)[:, :, 1:9]
    np.testing.assert_allclose(layers.upsample(jnp.asarray(x), 2, "fir"), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="upsample mode 'cubic'"):
        layers.upsample(jnp.asarray(x), 2, "cubic")


@pytest.mark.parametrize("mode", layers.UPSAMPLES)
def test_conv_block_upsample_modes_double_the_size(mode):
    block = layers.ConvBlock(5, transpose=True, upsample=mode, norm="none", activation="linear")
    x = jnp.ones((1, 4, 4, 2))
    v = block.init(jax.random.PRNGKey(0), x, train=False)
    assert block.apply(v, x, train=False).shape == (1, 8, 8, 5)
    kernel = v["params"]["ConvTranspose_0" if mode == "transpose" else "Conv_0"]["kernel"]
    assert kernel.shape == ((4, 4, 2, 5) if mode == "transpose" else (3, 3, 2, 5))
    with pytest.raises(ValueError, match="Unknown upsample 'pixel'"):
        layers.ConvBlock(5, transpose=True, upsample="pixel").init(jax.random.PRNGKey(0), x, train=False)
