"""Upsample, FIR-filter, downsample (upfirdn2d) for NHWC images: StyleGAN2-ADA semantics in pure JAX.

Reimplements the math of NVlabs/stylegan2-ada-pytorch `torch_utils/ops/upfirdn2d.py` (its
`_upfirdn2d_ref`), in NHWC, two ways that give the same numbers:

* a concrete filter (numpy, or a non-traced array: every filter the models use) runs as shifted
  slices: one `lax.pad` zero-stuffs and pads/crops each axis (interior and negative padding), then
  a weighted sum of strided slices filters and subsamples it, rows then columns when the filter is
  separable (rank 1). These are elementwise ops that XLA fuses, forward and backward;
* a traced filter lowers to one depthwise `conv_general_dilated` (zero insertion = `lhs_dilation`,
  pad/crop = conv padding, FIR = depthwise kernel, subsampling = stride). On CPU that depthwise,
  input-dilated convolution was ~100x slower than the slices for StyleGAN2's 4x4 filter at 512
  channels (benchmarks/stylegan2_throughput.py), and its gradient slower still.

Padding follows StyleGAN2's order `(x0, x1, y0, y1)` = (left, right, top, bottom) in pixels of the
upsampled image; negative values crop. An int `p` means `(p, p, p, p)`; a pair `(px, py)` means
`(px, px, py, py)`.
"""

from collections.abc import Sequence
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Union[jax.Array, np.ndarray]
Padding = Union[int, Sequence[int]]

__all__ = [
    "setup_filter",
    "upfirdn2d",
    "filter2d",
    "upsample2d",
    "downsample2d",
    "parse_padding",
    "filter_size",
]


def setup_filter(
    f: Union[Sequence[float], np.ndarray, float, None] = (1, 3, 3, 1),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1.0,
    separable: Union[bool, None] = None,
) -> np.ndarray:
    """Turn taps into a float32 FIR filter: [fh, fw] (outer product of 1-D taps) or [k] if separable."""
    f = np.asarray(1.0 if f is None else f, dtype=np.float32)
    if f.ndim not in (0, 1, 2) or f.size == 0:
        raise ValueError(f"setup_filter: filter must be a non-empty scalar, 1-D or 2-D array; got shape {f.shape}.")
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        # StyleGAN2's heuristic: long 1-D filters stay separable, short ones become 2-D.
        separable = f.ndim == 1 and f.size >= 8
    if f.ndim == 1 and not separable:
        f = np.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"setup_filter: separable={separable} needs a {'1' if separable else '2'}-D filter; got shape {f.shape}.")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = np.flip(f, axis=tuple(range(f.ndim)))
    # A separable filter is applied twice (rows, then columns), so each pass gets sqrt(gain).
    f = f * (gain ** (f.ndim / 2))
    return np.ascontiguousarray(f, dtype=np.float32)


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """Normalise an int, (px, py) or (x0, x1, y0, y1) padding to (x0, x1, y0, y1) ints."""
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        return p, p, p, p
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return padding  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, (px, py) or (x0, x1, y0, y1); got {padding!r}.")


def _parse_scaling(s: Union[int, Sequence[int]], name: str) -> tuple[int, int]:
    """Normalise an int or (sx, sy) scaling factor to (sx, sy) ints >= 1."""
    sx, sy = (int(s), int(s)) if isinstance(s, (int, np.integer)) else tuple(int(v) for v in s)
    if sx < 1 or sy < 1:
        raise ValueError(f"{name} must be >= 1; got {s!r}.")
    return sx, sy


def filter_size(f: Union[ArrayLike, None]) -> tuple[int, int]:
    """Return (fw, fh) of a 1-D [k] or 2-D [fh, fw] filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    shape = tuple(np.shape(f))
    if len(shape) not in (1, 2):
        raise ValueError(f"FIR filter must be 1-D [k] or 2-D [fh, fw]; got shape {shape}.")
    return shape[-1], shape[0]


def _as_2d_filter(f: Union[ArrayLike, None]) -> jax.Array:
    """Return a float32 2-D [fh, fw] filter; a separable [k] filter becomes its outer product (same result)."""
    if f is None:
        return jnp.ones((1, 1), jnp.float32)
    f = jnp.asarray(f, dtype=jnp.float32)
    if f.ndim == 1:
        # Rows-then-columns filtering with taps k equals one 2-D pass with outer(k, k): one conv.
        f = jnp.outer(f, f)
    return f


def _concrete_filter(f: Union[ArrayLike, None]) -> Union[np.ndarray, None]:
    """The filter as a float32 numpy 2-D [fh, fw] array, or None when it is traced (unknown taps)."""
    if f is None:
        return np.ones((1, 1), np.float32)
    if isinstance(f, jax.core.Tracer):
        return None
    f = np.asarray(f, dtype=np.float32)
    return np.outer(f, f) if f.ndim == 1 else f


def _rank_one(f2: np.ndarray) -> Union[tuple[np.ndarray, np.ndarray], None]:
    """(column taps [fh], row taps [fw]) with outer(column, row) == f2 to float32 rounding, else None."""
    i, j = np.unravel_index(np.argmax(np.abs(f2)), f2.shape)
    col, row = f2[:, j] / f2[i, j], f2[i, :]
    if np.allclose(np.outer(col, row), f2, rtol=1e-6, atol=1e-7 * np.abs(f2).max()):
        return col.astype(np.float32), row.astype(np.float32)
    return None


def _pad_axis(x: jax.Array, axis: int, up: int, lo: int, hi: int) -> jax.Array:
    """Zero-stuff x along `axis` to length L*up (up-1 zeros after each sample) and pad lo/hi (< 0 crops)."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (lo, hi + up - 1, up - 1)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


def _correlate_axis(x: jax.Array, axis: int, taps: Sequence[float], down: int) -> jax.Array:
    """y[i] = sum_t taps[t] * x[i*down + t] along `axis` (valid part only), as strided slices."""
    n_out = (x.shape[axis] - len(taps)) // down + 1
    out = None
    for t, c in enumerate(taps):
        if c == 0.0:
            continue  # e.g. the zero taps of a polyphase filter
        term = jax.lax.slice_in_dim(x, t, t + (n_out - 1) * down + 1, stride=down, axis=axis)
        term = term * jnp.asarray(c, x.dtype)
        out = term if out is None else out + term
    if out is None:  # an all-zero filter
        shape = list(x.shape)
        shape[axis] = n_out
        out = jnp.zeros(shape, x.dtype)
    return out


def _upfirdn2d_slices(x: jax.Array, f2: np.ndarray, up: tuple[int, int], down: tuple[int, int],
                      pad: tuple[int, int, int, int], flip_filter: bool, gain: float) -> jax.Array:
    """upfirdn2d for a concrete filter f2 [fh, fw]: lax.pad per axis, then weighted strided slices."""
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    # Taps in correlation order; the gain in float32, as in the convolution path.
    kernel = (f2 if flip_filter else f2[::-1, ::-1]) * np.float32(gain)
    y = _pad_axis(_pad_axis(x, 1, upy, y0, y1), 2, upx, x0, x1)
    split = _rank_one(kernel)
    if split is not None:
        col, row = split
        return _correlate_axis(_correlate_axis(y, 1, col.tolist(), downy), 2, row.tolist(), downx)
    out = None  # a non-separable filter: per filter row, the input rows it meets, filtered along W
    n_h = (y.shape[1] - kernel.shape[0]) // downy + 1
    for ty in range(kernel.shape[0]):
        rows = jax.lax.slice_in_dim(y, ty, ty + (n_h - 1) * downy + 1, stride=downy, axis=1)
        term = _correlate_axis(rows, 2, kernel[ty].tolist(), downx)
        out = term if out is None else out + term
    return out


def upfirdn2d(
    x: jax.Array,
    f: Union[ArrayLike, None],
    up: Union[int, Sequence[int]] = 1,
    down: Union[int, Sequence[int]] = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> jax.Array:
    """Zero-insert upsample, pad/crop, FIR-filter and subsample x [N,H,W,C] -> [N,H',W',C], x.dtype.

    H' = (H*up + y0 + y1 - fh) // down + 1 (likewise W'). The filter is convolved (flipped) unless
    flip_filter, and scaled by `gain` (a 1-D separable filter applies sqrt(gain) per axis).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be NHWC [N,H,W,C]; got shape {x.shape}.")
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    x0, x1, y0, y1 = parse_padding(padding)
    _, in_h, in_w, channels = x.shape

    f2 = _as_2d_filter(f)
    fh, fw = f2.shape
    out_h = in_h * upy + y0 + y1 - fh
    out_w = in_w * upx + x0 + x1 - fw
    if out_h < 0 or out_w < 0:
        raise ValueError(
            f"upfirdn2d: input {in_h}x{in_w} (HxW) upsampled by {up}, padded {(x0, x1, y0, y1)} (x0,x1,y0,y1) "
            f"is smaller than the {fh}x{fw} filter."
        )

    taps = _concrete_filter(f)
    if taps is not None:
        return _upfirdn2d_slices(x, taps, (upx, upy), (downx, downy), (x0, x1, y0, y1), flip_filter, gain)

    if flip_filter:
        kernel = f2
    else:
        # lax convs are correlations; flipping makes this a true convolution, as in StyleGAN2.
        kernel = jnp.flip(f2, axis=(0, 1))
    # A 2-D filter takes the full gain; a separable one would take sqrt(gain) on each of its two
    # passes, which is the same total on the outer product.
    # Gain in float32, then cast to the activations' dtype, as StyleGAN2 does.
    kernel = (kernel * jnp.float32(gain)).astype(x.dtype)
    kernel = jnp.tile(kernel[:, :, None, None], (1, 1, 1, channels))  # HWIO, depthwise [fh, fw, 1, C]

    # lhs_dilation gives (H-1)*up+1 samples; StyleGAN2 zero-stuffs to H*up, so the missing
    # (up-1) trailing zeros are folded into the high-side padding.
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(downy, downx),
        padding=((y0, y1 + upy - 1), (x0, x1 + upx - 1)),
        lhs_dilation=(upy, upx),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )


def filter2d(
    x: jax.Array,
    f: Union[ArrayLike, None],
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> jax.Array:
    """FIR-filter x [N,H,W,C] -> [N,H,W,C] (same size when padding=0), StyleGAN2 centring."""
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = (x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: jax.Array,
    f: Union[ArrayLike, None],
    up: Union[int, Sequence[int]] = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> jax.Array:
    """Upsample x [N,H,W,C] -> [N,H*up,W*up,C] (padding=0); gain*up**2 keeps a constant image's level."""
    upx, upy = _parse_scaling(up, "up")
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = (
        x0 + (fw + upx - 1) // 2,
        x1 + (fw - upx) // 2,
        y0 + (fh + upy - 1) // 2,
        y1 + (fh - upy) // 2,
    )
    # Zero insertion keeps 1 sample in up**2; the gain restores the mean level.
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: jax.Array,
    f: Union[ArrayLike, None],
    down: Union[int, Sequence[int]] = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> jax.Array:
    """Low-pass and subsample x [N,H,W,C] -> [N,H//down,W//down,C] (padding=0, H divisible by down)."""
    downx, downy = _parse_scaling(down, "down")
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = (
        x0 + (fw - downx + 1) // 2,
        x1 + (fw - downx) // 2,
        y0 + (fh - downy + 1) // 2,
        y1 + (fh - downy) // 2,
    )
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)
