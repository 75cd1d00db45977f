"""Tests for jaxmedgan/ops/bias_act.py against numpy formulas and analytic derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.ops.bias_act import bias_act

_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717
_SQRT2 = np.sqrt(2.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# name -> (f(x, alpha), f'(x, alpha), StyleGAN2 default alpha, default gain), numpy float64.
_NUMPY_ACTS = {
    "linear": (lambda x, a: x, lambda x, a: np.ones_like(x), 0.0, 1.0),
    "relu": (lambda x, a: np.maximum(x, 0), lambda x, a: (x > 0).astype(float), 0.0, _SQRT2),
    "lrelu": (lambda x, a: np.where(x > 0, x, a * x), lambda x, a: np.where(x > 0, 1.0, a), 0.2, _SQRT2),
    "tanh": (lambda x, a: np.tanh(x), lambda x, a: 1 - np.tanh(x) ** 2, 0.0, 1.0),
    "sigmoid": (lambda x, a: _sigmoid(x), lambda x, a: _sigmoid(x) * (1 - _sigmoid(x)), 0.0, 1.0),
    "elu": (lambda x, a: np.where(x > 0, x, np.expm1(x)), lambda x, a: np.where(x > 0, 1.0, np.exp(x)), 0.0, 1.0),
    "selu": (
        lambda x, a: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(x)),
        lambda x, a: _SELU_SCALE * np.where(x > 0, 1.0, _SELU_ALPHA * np.exp(x)),
        0.0,
        1.0,
    ),
    "softplus": (lambda x, a: np.log1p(np.exp(x)), lambda x, a: _sigmoid(x), 0.0, 1.0),
    "swish": (
        lambda x, a: x * _sigmoid(x),
        lambda x, a: _sigmoid(x) + x * _sigmoid(x) * (1 - _sigmoid(x)),
        0.0,
        _SQRT2,
    ),
}


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32) * 2
    b = rng.standard_normal(4).astype(np.float32)
    return x, b


@pytest.mark.parametrize("act", sorted(_NUMPY_ACTS))
def test_defaults_match_numpy(act):
    f, _, alpha, gain = _NUMPY_ACTS[act]
    x, b = _inputs()
    want = f(x.astype(np.float64) + b, alpha) * gain  # bias along the last (channel) axis
    got = bias_act(jnp.asarray(x), jnp.asarray(b), act=act)
    assert got.shape == x.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_no_bias_and_explicit_alpha_gain():
    x, _ = _inputs(1)
    got = bias_act(jnp.asarray(x), act="lrelu", alpha=0.1, gain=3.0)
    want = np.where(x > 0, x, 0.1 * x) * 3.0
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bias_act(jnp.asarray(x))), x)  # linear, gain 1


def test_clamp_applies_after_gain():
    x = jnp.asarray([[-10.0, -1.0, 1.0, 5.0, 10.0]])
    got = np.asarray(bias_act(x, act="lrelu", clamp=4.0))
    # lrelu*sqrt(2): [-2.83, -0.28, 1.41, 7.07, 14.1] -> clip to +-4. Clamping before the gain would
    # give 4*sqrt(2) = 5.66 for the last two.
    want = np.clip(np.where(x > 0, x, 0.2 * x) * _SQRT2, -4.0, 4.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0, -1] == 4.0
    # clamp=None (or negative) leaves values alone.
    assert np.asarray(bias_act(x, act="relu", clamp=None))[0, -1] == pytest.approx(10 * _SQRT2, rel=1e-6)


def test_bias_along_other_axis():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.array([1.0, -2.0, 3.0], np.float32)
    got = bias_act(jnp.asarray(x), jnp.asarray(b), axis=1)
    np.testing.assert_allclose(np.asarray(got), x + b[None, :, None])


@pytest.mark.parametrize("act", sorted(_NUMPY_ACTS))
def test_gradient_matches_analytic(act):
    _, df, alpha, gain = _NUMPY_ACTS[act]
    # Points away from relu/lrelu's kink at 0.
    x = np.array([[-2.5, -0.7, 0.3, 1.9], [-1.1, 0.05, 2.2, -0.2]], np.float32)
    b = np.array([0.1, -0.2, 0.4, 0.3], np.float32)
    gx, gb = jax.grad(lambda x_, b_: jnp.sum(bias_act(x_, b_, act=act)), argnums=(0, 1))(jnp.asarray(x), jnp.asarray(b))
    want = df(x.astype(np.float64) + b, alpha) * gain
    np.testing.assert_allclose(np.asarray(gx), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), want.sum(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", ["tanh", "softplus", "swish", "lrelu"])
def test_gradient_matches_finite_differences(act):
    x = jnp.asarray([-1.3, -0.4, 0.6, 1.7], jnp.float32)
    fn = lambda v: jnp.sum(bias_act(v, act=act, clamp=2.0) * jnp.arange(1.0, 5.0))
    g = np.asarray(jax.grad(fn)(x))
    eps = 1e-2
    fd = np.array([(fn(x.at[i].add(eps)) - fn(x.at[i].add(-eps))) / (2 * eps) for i in range(4)])
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=2e-3)


def test_gradient_at_kink_and_clamp():
    # At exactly 0 relu's slope is 0 and lrelu's is alpha (torch's choice); clamped entries have 0 slope.
    x = jnp.zeros((3,))
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: bias_act(v, act="relu").sum())(x)), 0.0)
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: bias_act(v, act="lrelu").sum())(x)), 0.2 * _SQRT2, rtol=1e-6)
    g = jax.grad(lambda v: bias_act(v, act="linear", clamp=1.0).sum())(jnp.asarray([-3.0, 0.5, 3.0]))
    np.testing.assert_allclose(np.asarray(g), [0.0, 1.0, 0.0])


def test_keeps_dtype_and_rejects_bad_args():
    x = jnp.ones((2, 4), jnp.bfloat16)
    assert bias_act(x, jnp.ones((4,)), act="lrelu").dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="unknown act"):
        bias_act(x, act="gelu_typo")
    with pytest.raises(ValueError, match="bias must be 1-D with 4"):
        bias_act(x, jnp.ones((3,)))
