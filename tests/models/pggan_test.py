"""PGGAN networks: every level's parameters from init, fade-in in G and D, resampling, pixel norm."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.models import pggan as pg

FAST = {"xla_backend_optimization_level": 0}  # compile-bound tests
KW = dict(resolution=16, channels=1, channel_base=64, channel_max=16)  # 3 levels: 4, 8, 16 px


def _models(mbstd=4):
    return pg.Generator(latent_dim=8, **KW), pg.Discriminator(mbstd_group_size=mbstd, **KW)


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def test_every_level_has_parameters_from_init_and_the_tree_is_fixed():
    g, d = _models()
    key = jax.random.PRNGKey(0)
    z = jnp.zeros((4, 8))
    g0 = jax.eval_shape(lambda k: g.init(k, z, 0), key)["params"]
    g2 = jax.eval_shape(lambda k: g.init(k, z, 2, 0.5), key)["params"]
    d0 = jax.eval_shape(lambda k: d.init(k, jnp.zeros((4, 4, 4, 1)), 0), key)["params"]
    d2 = jax.eval_shape(lambda k: d.init(k, jnp.zeros((4, 16, 16, 1)), 2), key)["params"]
    assert _shapes(g0) == _shapes(g2) and _shapes(d0) == _shapes(d2)
    # Features min(64 // r, 16): 16 at 4 px, 8 at 8 px, 4 at 16 px.
    assert _shapes(g0) == {
        "b4": {"dense": {"weight": (8, 16 * 16), "bias": (256,)}, "conv": {"weight": (3, 3, 16, 16), "bias": (16,)}},
        "b8": {"conv0": {"weight": (3, 3, 16, 8), "bias": (8,)}, "conv1": {"weight": (3, 3, 8, 8), "bias": (8,)}},
        "b16": {"conv0": {"weight": (3, 3, 8, 4), "bias": (4,)}, "conv1": {"weight": (3, 3, 4, 4), "bias": (4,)}},
        "torgb4": {"weight": (1, 1, 16, 1), "bias": (1,)}, "torgb8": {"weight": (1, 1, 8, 1), "bias": (1,)},
        "torgb16": {"weight": (1, 1, 4, 1), "bias": (1,)}}
    assert _shapes(d0) == {
        "fromrgb4": {"weight": (1, 1, 1, 16), "bias": (16,)}, "fromrgb8": {"weight": (1, 1, 1, 8), "bias": (8,)},
        "fromrgb16": {"weight": (1, 1, 1, 4), "bias": (4,)},
        "b16_conv0": {"weight": (3, 3, 4, 4), "bias": (4,)}, "b16_conv1": {"weight": (3, 3, 4, 8), "bias": (8,)},
        "b8_conv0": {"weight": (3, 3, 8, 8), "bias": (8,)}, "b8_conv1": {"weight": (3, 3, 8, 16), "bias": (16,)},
        "b4_conv": {"weight": (3, 3, 17, 16), "bias": (16,)},  # +1: the minibatch-stddev channel
        "b4_fc": {"weight": (16 * 16, 16), "bias": (16,)}, "b4_out": {"weight": (16, 1), "bias": (1,)}}
    with pytest.raises(ValueError, match=r"level must be a Python int in 0..2"):
        jax.eval_shape(lambda k: g.init(k, z, 3), key)
    with pytest.raises(ValueError, match=r"expects images \[N, 8, 8, 1\]"):
        jax.eval_shape(lambda k: d.init(k, jnp.zeros((4, 16, 16, 1)), 1), key)


def test_generator_fade_in_is_the_upsampled_lower_level_at_0_and_the_new_block_at_1():
    g, _ = _models()
    z = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    params = jax.jit(lambda k: pg.init_params(g, k, z, 2))(jax.random.PRNGKey(2))

    @functools.partial(jax.jit, compiler_options=FAST)
    def outputs(p):
        bumped_old = {**p, "torgb8": jax.tree_util.tree_map(lambda a: a + 0.5, p["torgb8"])}
        bumped_new = {**p, "torgb16": jax.tree_util.tree_map(lambda a: a + 0.5, p["torgb16"])}
        run = lambda q, level, alpha: g.apply({"params": q}, z, level, alpha)
        return {"a0": run(p, 2, 0.0), "a1": run(p, 2, 1.0), "a03": run(p, 2, 0.3), "low": run(p, 1, 1.0),
                "a0_new_bumped": run(bumped_new, 2, 0.0), "a1_old_bumped": run(bumped_old, 2, 1.0),
                "full": g.apply({"params": p}, z, 1, 1.0, True)}

    o = jax.device_get(outputs(params))
    assert o["a0"].shape == (4, 16, 16, 1) and o["low"].shape == (4, 8, 8, 1)
    up = np.repeat(np.repeat(o["low"], 2, axis=1), 2, axis=2)  # nearest, by numpy
    np.testing.assert_allclose(o["a0"], up, atol=1e-6)
    np.testing.assert_allclose(o["full"], up, atol=1e-6)
    # alpha = 1 is the new block alone (the old toRGB no longer matters); alpha = 0 ignores the new toRGB.
    np.testing.assert_allclose(o["a1_old_bumped"], o["a1"], atol=1e-6)
    np.testing.assert_allclose(o["a0_new_bumped"], o["a0"], atol=1e-6)
    np.testing.assert_allclose(o["a03"], 0.7 * o["a0"] + 0.3 * o["a1"], atol=1e-5)
    assert np.abs(o["a1"] - o["a0"]).max() > 1e-2


def test_discriminator_fade_in_mirrors_the_generator():
    _, d = _models()
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 16, 16, 1))
    params = jax.jit(lambda k: pg.init_params(d, k, x, 2))(jax.random.PRNGKey(4))

    @functools.partial(jax.jit, compiler_options=FAST)
    def outputs(p):
        bumped_old = {**p, "fromrgb8": jax.tree_util.tree_map(lambda a: a + 0.5, p["fromrgb8"])}
        run = lambda q, img, level, alpha: d.apply({"params": q}, img, level, alpha)
        low = pg.downsample(x)
        return {"a0": run(p, x, 2, 0.0), "low": run(p, low, 1, 1.0), "a1": run(p, x, 2, 1.0),
                "a1_old_bumped": run(bumped_old, x, 2, 1.0)}

    o = jax.device_get(outputs(params))
    assert o["a0"].shape == (4,) and o["a0"].dtype == np.float32
    np.testing.assert_allclose(o["a0"], o["low"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["a1_old_bumped"], o["a1"], rtol=1e-5, atol=1e-6)
    assert np.abs(o["a1"] - o["a0"]).max() > 1e-4


def test_resampling_pixel_norm_and_faded_reals_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    down = x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(pg.downsample(jnp.asarray(x)), down, rtol=1e-6)
    np.testing.assert_allclose(pg.upsample(jnp.asarray(down)), down.repeat(2, 1).repeat(2, 2))
    pn = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(pg.pixel_norm(jnp.asarray(x)), pn, rtol=1e-5)
    # D's reals at level 1 (8 px) from 8 px images: alpha 0 -> the 4 px version upsampled.
    np.testing.assert_allclose(pg.fade_reals(jnp.asarray(x), 1, 0.0), down.repeat(2, 1).repeat(2, 2), rtol=1e-6)
    np.testing.assert_allclose(pg.fade_reals(jnp.asarray(x), 1, 1.0), x, atol=1e-6)
    np.testing.assert_allclose(pg.fade_reals(jnp.asarray(x), 0, 0.3), down, rtol=1e-6)
    assert pg.num_levels(16) == 3 and pg.resolution_at(2) == 16
    with pytest.raises(ValueError, match="power of two"):
        pg.num_levels(24)
