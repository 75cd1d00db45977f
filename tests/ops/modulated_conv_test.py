"""Tests for jaxmedgan/ops/modulated_conv.py against a per-sample numpy/scipy reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from jaxmedgan.ops.modulated_conv import modulated_conv2d
from jaxmedgan.ops.upfirdn2d import setup_filter


def _np_upfirdn(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """One image x [H,W,C]: zero-stuff, pad/crop (x0,x1,y0,y1), scipy true convolution with f*gain, subsample."""
    h, w, c = x.shape
    x0, x1, y0, y1 = pad
    z = np.zeros((h * up, w * up, c))
    z[::up, ::up] = x
    z = np.pad(z, ((max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0)), (0, 0)))
    z = z[max(-y0, 0) : z.shape[0] - max(-y1, 0), max(-x0, 0) : z.shape[1] - max(-x1, 0)]
    out = np.stack([signal.convolve2d(z[:, :, j], f * gain, mode="valid") for j in range(c)], axis=-1)
    return out[::down, ::down]


def _np_correlate(x, w):
    """Valid correlation of one image x [H,W,Cin] with w [kh,kw,Cin,Cout] via einsum over windows."""
    kh, kw = w.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))  # [H',W',Cin,kh,kw]
    return np.einsum("hwiab,abio->hwo", win, w)


def _reference(x, weight, styles, up=1, down=1, padding=0, f=None, demodulate=True, flip_weight=True):
    """StyleGAN2 conv2d_resample semantics, one sample at a time, in the order FIR-then-conv for both up and down."""
    x, weight, styles = (np.asarray(a, np.float64) for a in (x, weight, styles))
    f = np.ones((1, 1)) if f is None else np.asarray(f, np.float64)
    fh, fw = f.shape
    p = [padding] * 4  # x0, x1, y0, y1
    if up > 1:
        p = [p[0] + (fw + up - 1) // 2, p[1] + (fw - up) // 2, p[2] + (fh + up - 1) // 2, p[3] + (fh - up) // 2]
    if down > 1:
        p = [p[0] + (fw - down + 1) // 2, p[1] + (fw - down) // 2, p[2] + (fh - down + 1) // 2, p[3] + (fh - down) // 2]
    outs = []
    for n in range(x.shape[0]):
        wn = weight * styles[n][None, None, :, None]
        if demodulate:
            wn = wn / np.sqrt(np.sum(wn**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        if not flip_weight:
            wn = wn[::-1, ::-1]
        if up > 1:
            # Zero-stuff + FIR (gain up**2), conv, then (up and down) a second FIR that subsamples.
            y = _np_correlate(_np_upfirdn(x[n], f, up=up, pad=tuple(p), gain=up**2), wn)
            if down > 1:
                y = _np_upfirdn(y, f, down=down)
        elif down > 1:
            # FIR (low-pass) with the padding, conv, keep every down-th sample.
            y = _np_correlate(_np_upfirdn(x[n], f, pad=tuple(p)), wn)[::down, ::down]
        else:
            y = _np_correlate(_np_upfirdn(x[n], np.ones((1, 1)), pad=tuple(p)), wn)
        outs.append(y)
    return np.stack(outs)


def _data(n=2, h=8, w=8, cin=4, cout=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
    weight = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    styles = (rng.standard_normal((n, cin)) + 1.0).astype(np.float32)
    return x, weight, styles


_F = setup_filter([1, 3, 3, 1])

# (k, up, down, padding, demodulate, flip_weight) as the StyleGAN2 layers use them, plus odd ones.
_CASES = [
    (3, 1, 1, 1, True, True),  # SynthesisLayer
    (3, 1, 1, 0, False, True),
    (3, 2, 1, 1, True, False),  # SynthesisLayer with up=2 (flip_weight = up == 1)
    (1, 2, 1, 0, True, False),
    (3, 1, 2, 1, True, True),  # Conv2dLayer(down=2) style
    (1, 1, 2, 0, False, True),  # ToRGB-like 1x1, skip downsampling
    (3, 2, 2, 1, True, True),
    (2, 1, 1, 0, True, False),  # even kernel: flip matters
]


@pytest.mark.parametrize("k,up,down,padding,demodulate,flip_weight", _CASES)
@pytest.mark.parametrize("fused", [True, False])
def test_matches_per_sample_reference(k, up, down, padding, demodulate, flip_weight, fused):
    x, weight, styles = _data(k=k, seed=k + 3 * up + 5 * down)
    f = _F if (up > 1 or down > 1) else None
    got = modulated_conv2d(
        jnp.asarray(x), jnp.asarray(weight), jnp.asarray(styles), up=up, down=down, padding=padding,
        resample_filter=f, demodulate=demodulate, flip_weight=flip_weight, fused_modconv=fused,
    )
    want = _reference(x, weight, styles, up, down, padding, f, demodulate, flip_weight)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,up,down,padding,demodulate,flip_weight", _CASES)
def test_fused_equals_unfused(k, up, down, padding, demodulate, flip_weight):
    x, weight, styles = _data(n=3, k=k, seed=11)
    call = functools.partial(
        modulated_conv2d, jnp.asarray(x), jnp.asarray(weight), jnp.asarray(styles), up=up, down=down,
        padding=padding, resample_filter=_F, demodulate=demodulate, flip_weight=flip_weight,
    )
    _, h, w, _ = call().shape
    noise = jnp.asarray(np.random.default_rng(5).standard_normal((3, h, w, 1)), jnp.float32)
    fused, unfused = call(fused_modconv=True, noise=noise), call(fused_modconv=False, noise=noise)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(unfused), rtol=1e-4, atol=1e-4)


def test_up2_equals_fir_of_zero_stuffed_conv():
    # The other order from _reference: zero-stuff, pad, correlate with w_n, then FIR [1,3,3,1] x4 (valid).
    x, weight, styles = _data(n=2, h=5, w=6, seed=8)
    got = modulated_conv2d(
        jnp.asarray(x), jnp.asarray(weight), jnp.asarray(styles), up=2, padding=1, resample_filter=_F, flip_weight=False
    )
    f = np.asarray(_F, np.float64)
    outs = []
    for n in range(2):
        wn = weight.astype(np.float64) * styles[n][None, None, :, None]
        wn = wn / np.sqrt(np.sum(wn**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        z = np.zeros((10, 12, 4))
        z[::2, ::2] = x[n]
        z = np.pad(z, ((1 + 2, 1 + 1), (1 + 2, 1 + 1), (0, 0)))  # padding 1 + StyleGAN2's (fw+up-1)//2, (fw-up)//2
        y = _np_correlate(z, wn[::-1, ::-1])  # flip_weight=False: true convolution
        outs.append(np.stack([signal.convolve2d(y[:, :, o], 4 * f, mode="valid") for o in range(5)], axis=-1))
    assert got.shape == (2, 10, 12, 5)
    np.testing.assert_allclose(np.asarray(got), np.stack(outs), rtol=1e-4, atol=1e-4)


def test_resampling_output_shapes():
    x, weight, styles = (jnp.asarray(a) for a in _data(h=8, w=6))
    up = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=_F, flip_weight=False)
    down = modulated_conv2d(x, weight, styles, down=2, padding=1, resample_filter=_F)
    same = modulated_conv2d(x, weight, styles, padding=1)
    assert up.shape == (2, 16, 12, 5) and down.shape == (2, 4, 3, 5) and same.shape == (2, 8, 6, 5)


def test_noise_is_added_last():
    x, weight, styles = (jnp.asarray(a) for a in _data())
    noise = jnp.asarray(np.random.default_rng(2).standard_normal((2, 8, 8, 1)), jnp.float32)
    base = modulated_conv2d(x, weight, styles, padding=1)
    with_noise = modulated_conv2d(x, weight, styles, noise=noise, padding=1)
    np.testing.assert_allclose(np.asarray(with_noise), np.asarray(base + noise), rtol=1e-6, atol=1e-6)


def test_demodulation_gives_unit_std():
    # Unit-variance i.i.d. input, any weights/styles: each (n, o) output has variance sum w'^2 = 1.
    rng = np.random.default_rng(0)
    n, h, cin, cout = 4, 16, 16, 8
    x = jnp.asarray(rng.standard_normal((n, h, h, cin)), jnp.float32)
    weight = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) * 5.0, jnp.float32)
    styles = jnp.asarray(rng.uniform(0.1, 3.0, (n, cin)), jnp.float32)
    y = np.asarray(modulated_conv2d(x, weight, styles, padding=1))[:, 1:-1, 1:-1, :]  # skip zero-padded border
    std = y.std(axis=(0, 1, 2))
    assert np.all(np.abs(std - 1.0) < 0.15), std
    assert abs(std.mean() - 1.0) < 0.05, std
    # Without demodulation the scale follows the weights (x5) and styles instead.
    y_raw = np.asarray(modulated_conv2d(x, weight, styles, padding=1, demodulate=False))
    assert y_raw.std() > 10.0


def _count_convs(fn, *args):
    return jax.jit(fn).lower(*args).as_text().count("stablehlo.convolution")


def test_fused_lowers_to_single_grouped_convolution():
    x, weight, styles = (jnp.asarray(a) for a in _data(n=4))
    hlo = jax.jit(functools.partial(modulated_conv2d, padding=1)).lower(x, weight, styles).as_text()
    assert hlo.count("stablehlo.convolution") == 1
    assert "feature_group_count = 4" in hlo  # batch folded into the groups
    # up=2: the transposed conv runs as 2x2 = 4 phase convolutions of the undilated input (none
    # input-dilated); the FIR filter is slices, not a convolution.
    up = functools.partial(modulated_conv2d, up=2, padding=1, resample_filter=_F, flip_weight=False)
    hlo = jax.jit(up).lower(x, weight, styles).as_text()
    assert hlo.count("stablehlo.convolution") == 4 and "lhs_dilate = [2, 2]" not in hlo
    unfused = functools.partial(modulated_conv2d, padding=1, fused_modconv=False)
    assert _count_convs(unfused, x, weight, styles) == 1


@pytest.mark.parametrize("fused", [True, False])
def test_float16_prenormalisation_avoids_overflow(fused):
    # Weights x1000 and styles x100 would overflow float16 (max 65504) in the unfused conv; the
    # pre-normalisation rescales them, and demodulation makes the rescale invisible.
    x, weight, styles = _data(seed=4)
    weight, styles = weight * 1000.0, styles * 100.0
    want = modulated_conv2d(jnp.asarray(x), jnp.asarray(weight), jnp.asarray(styles), padding=1, fused_modconv=fused)
    got = modulated_conv2d(
        jnp.asarray(x, jnp.float16), jnp.asarray(weight), jnp.asarray(styles), padding=1, fused_modconv=fused
    )
    assert got.dtype == jnp.float16
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=2e-2, atol=2e-2)


def test_rejects_bad_shapes():
    x, weight, styles = (jnp.asarray(a) for a in _data())
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(x, weight, styles[:, :3])
    with pytest.raises(ValueError, match="FIR filter"):
        modulated_conv2d(x, weight, styles, up=2, padding=1)


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_fused_and_unfused_gradients_agree(up, down):
    x, weight, styles = (jnp.asarray(a) for a in _data(n=2, seed=9))
    cot = jnp.asarray(np.random.default_rng(3).standard_normal((2, 8 * up // down, 8 * up // down, 5)), jnp.float32)

    def loss(fused, x_, w_, s_):
        y = modulated_conv2d(x_, w_, s_, up=up, down=down, padding=1, resample_filter=_F, fused_modconv=fused)
        return jnp.sum(y * cot)

    g_fused = jax.grad(functools.partial(loss, True), argnums=(0, 1, 2))(x, weight, styles)
    g_unfused = jax.grad(functools.partial(loss, False), argnums=(0, 1, 2))(x, weight, styles)
    for a, b in zip(g_fused, g_unfused):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("up,k,pads,groups", [
    (2, 3, ((3, 3), (3, 3)), 1), (2, 4, ((-1, 2), (2, -1)), 2), (3, 3, ((1, 4), (0, 1)), 1),
    (2, 1, ((0, 1), (1, 0)), 1), (3, 2, ((-2, -2), (5, 0)), 2)])
def test_polyphase_transposed_conv_equals_input_dilated_conv_and_its_gradients(up, k, pads, groups):
    from jaxmedgan.ops.modulated_conv import _dilated_conv_polyphase

    rng = np.random.default_rng(up * 7 + k)
    x = jnp.asarray(rng.standard_normal((2, 5, 6, 2 * groups)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 2, 3 * groups)), jnp.float32)
    ref = lambda x_, w_: jax.lax.conv_general_dilated(x_, w_, (1, 1), pads, lhs_dilation=(up, up),
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                        feature_group_count=groups)
    got = lambda x_, w_: _dilated_conv_polyphase(x_, w_, up, pads, groups)
    want = ref(x, w)
    np.testing.assert_allclose(np.asarray(got(x, w)), np.asarray(want), rtol=1e-5, atol=1e-5)
    cot = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
    g_ref = jax.grad(lambda a, b: jnp.sum(ref(a, b) * cot), argnums=(0, 1))(x, w)
    g_got = jax.grad(lambda a, b: jnp.sum(got(a, b) * cot), argnums=(0, 1))(x, w)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
