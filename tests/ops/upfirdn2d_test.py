"""Tests for jaxmedgan/ops/upfirdn2d.py against scipy.signal and hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu
from scipy import signal

from jaxmedgan.ops import upfirdn2d as ufd


def _reference_upfirdn2d(x, f, up=1, down=1, padding=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """StyleGAN2's definition step by step in numpy/scipy: zero-stuff, pad/crop, convolve, subsample."""
    x = np.asarray(x, np.float64)
    f = np.asarray(f, np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    n, h, w, c = x.shape
    x0, x1, y0, y1 = padding
    z = np.zeros((n, h * up, w * up, c))
    z[:, ::up, ::up, :] = x  # up-1 zeros after every sample, including the last
    z = np.pad(z, ((0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0)), (0, 0)))
    z = z[:, max(-y0, 0) : z.shape[1] - max(-y1, 0), max(-x0, 0) : z.shape[2] - max(-x1, 0), :]
    op = signal.correlate2d if flip_filter else signal.convolve2d
    out = np.stack(
        [np.stack([op(z[i, :, :, j], f * gain, mode="valid") for j in range(c)], axis=-1) for i in range(n)]
    )
    return out[:, ::down, ::down, :]


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_setup_filter_default_is_normalised_outer_product():
    f = ufd.setup_filter([1, 3, 3, 1])
    k = np.array([1, 3, 3, 1], np.float64)
    np.testing.assert_allclose(f, np.outer(k, k) / 64.0, rtol=1e-7)
    assert f.dtype == np.float32 and f.shape == (4, 4)


def test_setup_filter_options():
    # >= 8 taps stay separable by default, as in StyleGAN2.
    assert ufd.setup_filter(np.ones(8)).shape == (8,)
    assert ufd.setup_filter([1, 2, 3], separable=True, normalize=False).tolist() == [1, 2, 3]
    np.testing.assert_allclose(ufd.setup_filter([1, 2, 3], normalize=False, flip_filter=True)[0], [9, 6, 3])
    # A 2-D filter takes the gain once; a separable one sqrt(gain) per axis.
    np.testing.assert_allclose(ufd.setup_filter([1, 1], gain=4.0), np.full((2, 2), 1.0), rtol=1e-7)
    np.testing.assert_allclose(ufd.setup_filter([1, 1], gain=4.0, separable=True), [1.0, 1.0], rtol=1e-7)
    assert ufd.setup_filter(None).shape == (1, 1)


@pytest.mark.parametrize(
    "up,down,padding,flip_filter,gain,taps",
    [
        (1, 1, (0, 0, 0, 0), False, 1.0, [1, 2, 3]),
        (2, 1, (2, 1, 2, 1), False, 4.0, [1, 3, 3, 1]),
        (1, 2, (1, 1, 1, 1), False, 1.0, [1, 3, 3, 1]),
        (2, 2, (1, 2, 0, 3), True, 2.5, [1, 2, 5]),
        (3, 1, (-1, 2, 1, -2), False, 9.0, [1, 4, 2, 1, 3]),  # negative padding crops
        (1, 3, (0, -1, 2, 0), True, 1.0, [2, 1]),
        (2, 1, 1, False, 1.0, [1, 3, 3, 1]),  # int padding
    ],
)
@pytest.mark.parametrize("path", ["slices", "conv"])
def test_upfirdn2d_matches_scipy(up, down, padding, flip_filter, gain, taps, path):
    x = _rand((2, 7, 8, 3), seed=up * 10 + down)
    # A non-symmetric 2-D filter so flips and axis order matter.
    f = np.outer(np.asarray(taps, np.float32), np.arange(1, len(taps) + 2, dtype=np.float32))
    pad4 = ufd.parse_padding(padding)
    want = _reference_upfirdn2d(x, f, up, down, pad4, flip_filter, gain)
    run = lambda x_, f_: ufd.upfirdn2d(x_, f_, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    # A concrete (numpy) filter takes the slice path; a traced one the depthwise convolution.
    got = run(jnp.asarray(x), f) if path == "slices" else jax.jit(run)(jnp.asarray(x), jnp.asarray(f))
    assert got.shape == want.shape
    assert got.shape == (
        2,
        (7 * up + pad4[2] + pad4[3] - len(taps)) // down + 1,
        (8 * up + pad4[0] + pad4[1] - (len(taps) + 1)) // down + 1,
        3,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_upfirdn2d_separable_filter_equals_outer_product():
    x = jnp.asarray(_rand((2, 8, 8, 4)))
    f_sep = ufd.setup_filter([1, 3, 3, 1], separable=True, gain=4.0)
    f_2d = ufd.setup_filter([1, 3, 3, 1], gain=4.0)
    got = ufd.upfirdn2d(x, f_sep, up=2, padding=(2, 1, 2, 1))
    want = ufd.upfirdn2d(x, f_2d, up=2, padding=(2, 1, 2, 1))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_upfirdn2d_gain_scales_linearly():
    x = jnp.asarray(_rand((2, 8, 8, 4)))
    f = ufd.setup_filter([1, 3, 3, 1])
    base = ufd.upfirdn2d(x, f, up=2, down=1, padding=1)
    np.testing.assert_allclose(
        np.asarray(ufd.upfirdn2d(x, f, up=2, padding=1, gain=3.0)), 3.0 * np.asarray(base), rtol=1e-6, atol=1e-6
    )


def test_upsample2d_hand_computed():
    # 1x2 image [a, b], filter [1,3,3,1]/8 per axis, gain 2 per axis: rows give [.75a, .75a+.25b, .25a+.75b, .75b]
    # (zero padding outside), columns of the single row give [.75, .75].
    a, b = 2.0, 6.0
    x = jnp.asarray([[a, b]], jnp.float32)[None, :, :, None]
    got = np.asarray(ufd.upsample2d(x, ufd.setup_filter([1, 3, 3, 1])))[0, :, :, 0]
    row = np.array([0.75 * a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, 0.75 * b])
    np.testing.assert_allclose(got, np.outer([0.75, 0.75], row), rtol=1e-6)


def test_downsample2d_hand_computed():
    x = jnp.asarray([1.0, 2.0, 4.0, 8.0], jnp.float32)[None, None, :, None]  # 1x4 image
    f = ufd.setup_filter([1, 3, 3, 1], separable=True)
    got = np.asarray(ufd.downsample2d(jnp.tile(x, (1, 4, 1, 1)), f))[0, 0, :, 0]
    # One zero of padding each side, then taps [1,3,3,1]/8 at even positions. Each column is
    # constant, so vertically both output rows get (0+3+3+1)/8 = (1+3+3+0)/8 = 7/8 of it.
    want = np.array([(0 + 3 * 1 + 3 * 2 + 4) / 8, (2 + 3 * 4 + 3 * 8 + 0) / 8]) * 7 / 8
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("h,w", [(8, 8), (5, 6)])
def test_resample_output_shapes(h, w):
    x = jnp.zeros((2, h, w, 4))
    f = ufd.setup_filter([1, 3, 3, 1])
    assert ufd.upsample2d(x, f).shape == (2, 2 * h, 2 * w, 4)
    assert ufd.upsample2d(x, f, up=4).shape == (2, 4 * h, 4 * w, 4)
    assert ufd.filter2d(x, f).shape == (2, h, w, 4)
    assert ufd.filter2d(x, ufd.setup_filter([1, 2, 1])).shape == (2, h, w, 4)
    if h % 2 == 0 and w % 2 == 0:
        assert ufd.downsample2d(x, f).shape == (2, h // 2, w // 2, 4)


def test_upsample2d_of_constant_is_constant_in_interior():
    c = 1.7
    x = jnp.full((2, 8, 8, 4), c, jnp.float32)
    y = np.asarray(ufd.upsample2d(x, ufd.setup_filter([1, 3, 3, 1])))
    assert y.shape == (2, 16, 16, 4)
    # The gain up**2 = 4 exactly offsets the 3-in-4 zeros; only the 1-px border sees the zero padding.
    np.testing.assert_allclose(y[:, 1:-1, 1:-1, :], c, rtol=1e-6)
    assert np.all(y[:, 0, 1:-1, :] < c)
    # Extra gain multiplies through.
    y2 = np.asarray(ufd.upsample2d(x, ufd.setup_filter([1, 3, 3, 1]), gain=0.5))
    np.testing.assert_allclose(y2[:, 1:-1, 1:-1, :], 0.5 * c, rtol=1e-6)


def test_downsample2d_of_constant_is_constant_in_interior():
    y = np.asarray(ufd.downsample2d(jnp.full((1, 8, 8, 2), 3.0), ufd.setup_filter([1, 3, 3, 1])))
    np.testing.assert_allclose(y[:, 1:-1, 1:-1, :], 3.0, rtol=1e-6)


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1, 4, 2]])
def test_filter2d_matches_scipy_same(taps):
    x = _rand((1, 6, 7, 2), seed=3)
    f = np.outer(np.asarray(taps, np.float32), np.asarray(taps[::-1], np.float32))
    got = np.asarray(ufd.filter2d(jnp.asarray(x), f))
    want = np.stack([signal.convolve2d(x[0, :, :, j], f, mode="same") for j in range(2)], axis=-1)[None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_concrete_filters_lower_to_slices_and_traced_ones_to_one_convolution():
    f = ufd.setup_filter([1, 3, 3, 1])
    fn = lambda x, f_: ufd.upfirdn2d(x, f_, up=2, down=2, padding=(2, 1, -1, 3))
    x = jnp.zeros((2, 8, 8, 4))
    concrete = jax.jit(lambda x: fn(x, f)).lower(x).as_text()
    assert "stablehlo.convolution" not in concrete and "stablehlo.slice" in concrete
    assert jax.jit(fn).lower(x, jnp.asarray(f)).as_text().count("stablehlo.convolution") == 1


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], np.arange(1.0, 10.0).reshape(3, 3)])  # rank 1 and rank 2
def test_slice_and_convolution_paths_have_equal_gradients(taps):
    f = ufd.setup_filter(taps) if np.ndim(taps) == 1 else np.asarray(taps, np.float32)
    x = jnp.asarray(_rand((2, 6, 5, 3), seed=11))
    run = lambda x_, f_: ufd.upfirdn2d(x_, f_, up=2, down=2, padding=(1, 2, 2, 1), gain=3.0)
    cot = jnp.asarray(_rand(run(x, f).shape, seed=12))
    loss = lambda x_, f_: jnp.sum(run(x_, f_) * cot)
    want = jax.jit(jax.grad(loss))(x, jnp.asarray(f))  # traced filter: convolution path
    got = jax.grad(lambda x_: loss(x_, f))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_upfirdn2d_gradients():
    x = jnp.asarray(_rand((1, 4, 5, 2), seed=7))
    f = ufd.setup_filter([1, 2, 1])
    jtu.check_grads(lambda v: ufd.upfirdn2d(v, f, up=2, down=2, padding=(1, -1, 2, 0)), (x,), order=1, modes=["rev"],
                    atol=1e-2, rtol=1e-2)


def test_upfirdn2d_rejects_bad_input():
    with pytest.raises(ValueError, match="NHWC"):
        ufd.upfirdn2d(jnp.zeros((8, 8, 4)), ufd.setup_filter([1, 1]))
    with pytest.raises(ValueError, match="padding"):
        ufd.upfirdn2d(jnp.zeros((1, 8, 8, 4)), ufd.setup_filter([1, 1]), padding=(1, 2, 3))
    with pytest.raises(ValueError, match="smaller than"):
        ufd.upfirdn2d(jnp.zeros((1, 2, 2, 1)), ufd.setup_filter([1, 1, 1, 1]))
