"""Modulated (style) convolution with optional demodulation and FIR resampling: StyleGAN2-ADA math in JAX.

Reimplements NVlabs/stylegan2-ada-pytorch `training/networks.py::modulated_conv2d` together with
`torch_utils/ops/conv2d_resample.py`, in NHWC with HWIO weights. The semantic definition (its
"generic reference" path) is

    y = subsample_down( corr_or_conv( upfirdn2d(x, f, up, pad, gain=up**2), w_n ) ),

with w_n[k, k, i, o] = w[k, k, i, o] * s[n, i] (modulation), optionally times
d[n, o] = rsqrt(sum_{k,k,i} w_n**2 + 1e-8) (demodulation). The implementation uses the cheaper
equivalent orders StyleGAN2 uses: up>1 does the zero-stuffed (transposed) conv first and the FIR
after; down>1 does the FIR first and a stride-`down` conv after. Convolution and FIR are both
linear and shift-invariant, so the orders agree exactly once paddings are moved accordingly.
"""

from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxmedgan.ops import upfirdn2d as upfirdn2d_lib

__all__ = ["conv2d_resample", "modulated_conv2d"]

_DN = ("NHWC", "HWIO", "NHWC")


def conv2d_resample(
    x: jax.Array,
    w: jax.Array,
    f: Union[jax.Array, np.ndarray, None] = None,
    up: int = 1,
    down: int = 1,
    padding: upfirdn2d_lib.Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> jax.Array:
    """Conv x [N,H,W,G*Cin] with w [kh,kw,Cin,G*Cout] (HWIO, G groups) plus FIR up/down; -> [N,H',W',G*Cout].

    `padding` is (x0, x1, y0, y1) relative to the upsampled image, as in StyleGAN2; the output is
    exactly H*up/down when padding = k//2. flip_weight=True is correlation (torch conv2d), False is
    true convolution. Up/down needs an FIR filter f (e.g. setup_filter([1, 3, 3, 1])).
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d_resample: expected x NHWC and w HWIO (4-D); got x {x.shape}, w {w.shape}.")
    if not (isinstance(up, (int, np.integer)) and up >= 1 and isinstance(down, (int, np.integer)) and down >= 1):
        raise ValueError(f"conv2d_resample: up and down must be ints >= 1; got up={up!r}, down={down!r}.")
    kh, kw, cin_per_group, cout = w.shape
    if x.shape[-1] != cin_per_group * groups or cout % groups:
        raise ValueError(
            f"conv2d_resample: x has {x.shape[-1]} channels and w {w.shape} (HWIO) with groups={groups}; "
            f"expected x channels = {cin_per_group}*{groups} and Cout divisible by {groups}."
        )
    if (up > 1 or down > 1) and f is None:
        # StyleGAN2 would silently fall back to a box of 1 tap (nearest/stride); that is never intended.
        raise ValueError("conv2d_resample: up/down > 1 needs an FIR filter f, e.g. setup_filter([1, 3, 3, 1]).")
    fw, fh = upfirdn2d_lib.filter_size(f)
    px0, px1, py0, py1 = upfirdn2d_lib.parse_padding(padding)

    # Extra padding that centres the FIR filter on the resampled grid (StyleGAN2 conventions).
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    w = w.astype(x.dtype)
    if not flip_weight:
        w = jnp.flip(w, axis=(0, 1))

    def conv(inp: jax.Array, pad: tuple[int, int, int, int], stride: int = 1, dilation: int = 1) -> jax.Array:
        x0, x1, y0, y1 = pad
        return jax.lax.conv_general_dilated(
            inp,
            w,
            window_strides=(stride, stride),
            padding=((y0, y1), (x0, x1)),
            lhs_dilation=(dilation, dilation),
            dimension_numbers=_DN,
            feature_group_count=groups,
        )

    if up > 1:
        # Transposed conv = correlation over the zero-stuffed input (lhs_dilation), with the pads that
        # the generic path would apply before the FIR; the FIR then runs unpadded. The (up-1) extra
        # trailing zeros turn lhs_dilation's (H-1)*up+1 samples into StyleGAN2's H*up.
        y = conv(x, (px0, px1 + up - 1, py0, py1 + up - 1), dilation=up)
        y = upfirdn2d_lib.upfirdn2d(y, f, gain=up**2, flip_filter=flip_filter)
        if down > 1:
            y = upfirdn2d_lib.upfirdn2d(y, f, down=down, flip_filter=flip_filter)
        return y
    if down > 1:
        # Low-pass first, then a strided conv: the stride is the subsampling.
        y = upfirdn2d_lib.upfirdn2d(x, f, padding=(px0, px1, py0, py1), flip_filter=flip_filter)
        return conv(y, (0, 0, 0, 0), stride=down)
    return conv(x, (px0, px1, py0, py1))


def modulated_conv2d(
    x: jax.Array,
    weight: jax.Array,
    styles: jax.Array,
    noise: Union[jax.Array, None] = None,
    up: int = 1,
    down: int = 1,
    padding: upfirdn2d_lib.Padding = 0,
    resample_filter: Union[jax.Array, np.ndarray, None] = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> jax.Array:
    """Style-modulated conv of x [N,H,W,Cin] by weight [kh,kw,Cin,Cout], styles [N,Cin] -> [N,H',W',Cout].

    H' = H*up/down for padding = k//2. `noise` (broadcastable to the output, e.g. [N,H',W',1]) is
    added last. fused_modconv=True runs one grouped conv with the batch folded into the groups
    (feature_group_count=N); False scales activations before (styles) and after (demodulation).

    fp16 safety (as StyleGAN2): for float16 x with demodulate=True, weight is first rescaled per
    output channel by 1/(sqrt(kh*kw*Cin) * max|w|) and styles per sample by 1/max|s|. Demodulation
    divides out any per-(n, o) scale, so the result is unchanged up to the 1e-8 epsilon, but the
    float16 conv no longer overflows for large weights or styles.
    """
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ValueError(
            f"modulated_conv2d: expected x [N,H,W,Cin], weight [kh,kw,Cin,Cout], styles [N,Cin]; "
            f"got {x.shape}, {weight.shape}, {styles.shape}."
        )
    batch, height, width, in_channels = x.shape
    kh, kw, w_in, out_channels = weight.shape
    if w_in != in_channels or styles.shape != (batch, in_channels):
        raise ValueError(
            f"modulated_conv2d: x {x.shape} (NHWC) needs weight [kh,kw,{in_channels},Cout] and styles "
            f"[{batch},{in_channels}]; got weight {weight.shape}, styles {styles.shape}."
        )

    if x.dtype == jnp.float16 and demodulate:
        weight = weight * (
            1.0 / np.sqrt(in_channels * kh * kw) / jnp.max(jnp.abs(weight), axis=(0, 1, 2), keepdims=True)
        )
        styles = styles / jnp.max(jnp.abs(styles), axis=1, keepdims=True)

    # Per-sample weights and demodulation coefficients, in the parameters' precision.
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight[None] * styles[:, None, None, :, None]  # [N, kh, kw, Cin, Cout]
    if demodulate:
        dcoefs = jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3)) + 1e-8)  # [N, Cout]
    if demodulate and fused_modconv:
        w = w * dcoefs[:, None, None, None, :]

    resample = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
    if not fused_modconv:
        y = x * styles.astype(x.dtype)[:, None, None, :]
        y = conv2d_resample(y, weight, **resample)
        if demodulate:
            y = y * dcoefs.astype(x.dtype)[:, None, None, :]
        if noise is not None:
            y = y + noise.astype(y.dtype)
        return y

    # Fused: fold the batch into channels, x -> [1, H, W, N*Cin] (sample-major), and the N per-sample
    # kernels into one grouped HWIO kernel [kh, kw, Cin, N*Cout]; group n sees only sample n.
    xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, height, width, batch * in_channels)
    wg = jnp.transpose(w, (1, 2, 3, 0, 4)).reshape(kh, kw, in_channels, batch * out_channels)
    y = conv2d_resample(xg, wg.astype(x.dtype), groups=batch, **resample)
    _, out_h, out_w, _ = y.shape
    y = jnp.transpose(y.reshape(out_h, out_w, batch, out_channels), (2, 0, 1, 3))
    if noise is not None:
        y = y + noise.astype(y.dtype)
    return y
