"""Differentiable ADA augmentation (Karras et al. 2020), the 'bgc' pipeline, in pure JAX (NHWC).

Reimplements the math of NVlabs/stylegan2-ada-pytorch `training/augment.py::AugmentPipe`. Every
image D sees (reals, fakes, and the reals of R1) goes through `augment`; gradients flow to the
images, so G learns through it. Each op fires per example with probability (multiplier * p):

* pixel blitting: x-flip, 90-degree rotations, integer translation (up to 12.5 % of the size);
* general geometric: isotropic scale (log2 std 0.2), pre-rotation, anisotropic scale (log2 std
  0.2), post-rotation (pre or post each with 1 - sqrt(1 - p), so either fires with p), fractional
  translation (std 0.125 of the size);
* colour: brightness (std 0.2), contrast (log2 std 0.5), luma flip, hue rotation and saturation
  (log2 std 1). Hue and saturation need RGB; for 1 channel StyleGAN2-ADA averages the RGB colour
  matrix's rows, so luma flip is an inversion x -> -x (the data are in [-1, 1]); for other channel
  counts only brightness and contrast apply (no luma axis is defined).

All geometric ops are composed into one inverse matrix per example and executed as the original
does: reflect-pad, 2x upsample with the sym6 orthogonal wavelet low-pass, bilinear sampling with
zero padding (`grid_sample(align_corners=False)`, here `jax.scipy.ndimage.map_coordinates(order=1,
mode='constant')`), then 2x downsample with the same filter (orthogonal, so an identity transform
round-trips to float error). Why this and not plain bilinear: bilinear alone low-passes every
transformed image (a signature D could learn); the wavelet up/down keeps the spectrum, which is
what makes ADA's augmentations non-leaking.

Differences from the original, for static shapes under jit: the reflect padding is always the
largest margin the original can choose (H-1, W-1), instead of the per-batch smallest sufficient
one (identical output wherever the original's margin covered the sampled region, i.e. always
except when it had to clamp, where both zero-pad). An example whose sampled transform is the
identity is returned bit-exactly (so p = 0 is the exact identity), and a batch with no
transform skips the resampling entirely.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxmedgan.ops import upfirdn2d

# Low-pass decomposition filter of the sym6 wavelet (PyWavelets 'sym6' dec_lo), as StyleGAN2-ADA.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

_GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probability multipliers (0 = off, 1 = fire with probability p) and magnitudes of each op."""

    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    xint_max: float = 0.125  # integer translation range, fraction of the image size
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    scale_std: float = 0.2  # log2 std of isotropic scaling
    rotate_max: float = 1.0  # rotation range, 1 = full circle
    aniso_std: float = 0.2  # log2 std of anisotropic scaling
    xfrac_std: float = 0.125  # std of fractional translation, fraction of the image size
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness_std: float = 0.2
    contrast_std: float = 0.5  # log2 std
    hue_max: float = 1.0  # hue rotation range, 1 = full circle
    saturation_std: float = 1.0  # log2 std


# StyleGAN2-ADA's `--augpipe` choices that use these ops ('bgc' is its default).
PIPELINES: dict[str, tuple[str, ...]] = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": _COLOR,
    "bg": _GEOMETRIC,
    "bgc": _GEOMETRIC + _COLOR,
}


def pipeline(name: str = "bgc", **overrides) -> AugmentConfig:
    """AugmentConfig with the ops of PIPELINES[name] at multiplier 1, plus field overrides."""
    if name not in PIPELINES:
        raise ValueError(f"Unknown ADA pipeline {name!r}; expected one of {sorted(PIPELINES)}.")
    fields = {op: 1.0 for op in PIPELINES[name]}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(AugmentConfig)}
    if unknown:
        raise ValueError(f"Unknown AugmentConfig field(s) {sorted(unknown)}.")
    fields.update(overrides)
    return AugmentConfig(**fields)


# ----------------------------------------------------------------------------------------------
# Batched homogeneous matrices, [N, 3, 3] (2-D) and [N, 4, 4] (colour).


def _mat(rows: list[list[jax.Array | float]], n: int) -> jax.Array:
    return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,)) for v in r], -1)
                      for r in rows], -2)


def translate2d(tx, ty, n: int) -> jax.Array:
    """[N,3,3] translation by (tx, ty) px."""
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n)


def scale2d(sx, sy, n: int) -> jax.Array:
    """[N,3,3] scaling about the origin."""
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n)


def rotate2d(theta, n: int) -> jax.Array:
    """[N,3,3] rotation by theta radians."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], n)


def _translate3d(t, n: int) -> jax.Array:
    return _mat([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], n)


def _scale3d(s, n: int) -> jax.Array:
    return _mat([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], n)


def _rotate3d(v: np.ndarray, theta, n: int) -> jax.Array:
    vx, vy, vz = (float(a) for a in v[:3])
    s, c = jnp.sin(theta), jnp.cos(theta)
    cc = 1 - c
    return _mat([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                 [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                 [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                 [0, 0, 0, 1]], n)


# ----------------------------------------------------------------------------------------------
# Parameter sampling.


def _column_streams(key: jax.Array, n: int, uniform: int, normal: int):
    """Two callables handing out fresh [n] columns of one uniform and one normal draw.

    Two PRNG calls instead of one per op: the threefry code of ~20 separate draws dominated the
    compile time of the whole pipeline.
    """
    k_u, k_n = jax.random.split(key)
    u = iter(jnp.moveaxis(jax.random.uniform(k_u, (n, uniform)), 1, 0))
    g = iter(jnp.moveaxis(jax.random.normal(k_n, (n, normal)), 1, 0))
    return (lambda: next(u)), (lambda: next(g))


def sample_geometric(key: jax.Array, n: int, height: int, width: int, p: jax.Array,
                     config: AugmentConfig) -> jax.Array:
    """Inverse transforms G_inv [N,3,3] (output px -> input px, origin at the image centre)."""
    rand, randn = _column_streams(key, n, uniform=16, normal=8)
    fire = lambda mult: rand() < mult * p
    g = jnp.broadcast_to(jnp.eye(3), (n, 3, 3))
    if config.xflip > 0:
        i = jnp.floor(rand() * 2)
        i = jnp.where(fire(config.xflip), i, 0.0)
        g = g @ scale2d(1 / (1 - 2 * i), 1.0, n)
    if config.rotate90 > 0:
        i = jnp.floor(rand() * 4)
        i = jnp.where(fire(config.rotate90), i, 0.0)
        g = g @ rotate2d(np.pi / 2 * i, n)  # rotate2d_inv(-pi/2 i)
    if config.xint > 0:
        t = (jnp.stack([rand(), rand()], -1) * 2 - 1) * config.xint_max
        t = jnp.where((rand() < config.xint * p)[:, None], t, 0.0)
        g = g @ translate2d(-jnp.round(t[:, 0] * width), -jnp.round(t[:, 1] * height), n)
    if config.scale > 0:
        s = jnp.exp2(randn() * config.scale_std)
        s = jnp.where(fire(config.scale), s, 1.0)
        g = g @ scale2d(1 / s, 1 / s, n)
    p_rot = 1 - jnp.sqrt(jnp.clip(1 - config.rotate * p, 0, 1))  # P(pre or post) = rotate * p
    if config.rotate > 0:
        theta = (rand() * 2 - 1) * np.pi * config.rotate_max
        theta = jnp.where(rand() < p_rot, theta, 0.0)
        g = g @ rotate2d(theta, n)  # before anisotropic scaling
    if config.aniso > 0:
        s = jnp.exp2(randn() * config.aniso_std)
        s = jnp.where(fire(config.aniso), s, 1.0)
        g = g @ scale2d(1 / s, s, n)
    if config.rotate > 0:
        theta = (rand() * 2 - 1) * np.pi * config.rotate_max
        theta = jnp.where(rand() < p_rot, theta, 0.0)
        g = g @ rotate2d(theta, n)  # after anisotropic scaling
    if config.xfrac > 0:
        t = jnp.stack([randn(), randn()], -1) * config.xfrac_std
        t = jnp.where((rand() < config.xfrac * p)[:, None], t, 0.0)
        g = g @ translate2d(-t[:, 0] * width, -t[:, 1] * height, n)
    return g


def sample_color(key: jax.Array, n: int, channels: int, p: jax.Array, config: AugmentConfig) -> jax.Array:
    """Colour transforms C [N,4,4] acting on homogeneous RGB (colour_out = C @ colour_in)."""
    rand, randn = _column_streams(key, n, uniform=8, normal=4)
    fire = lambda mult: rand() < mult * p
    c = jnp.broadcast_to(jnp.eye(4), (n, 4, 4))
    if config.brightness > 0:
        b = randn() * config.brightness_std
        c = _translate3d(jnp.where(fire(config.brightness), b, 0.0), n) @ c
    if config.contrast > 0:
        s = jnp.exp2(randn() * config.contrast_std)
        c = _scale3d(jnp.where(fire(config.contrast), s, 1.0), n) @ c
    v = np.asarray([1, 1, 1, 0]) / np.sqrt(3)  # luma axis
    vv = jnp.asarray(np.outer(v, v), jnp.float32)
    if config.lumaflip > 0 and channels in (1, 3):
        i = jnp.floor(rand() * 2)
        i = jnp.where(fire(config.lumaflip), i, 0.0)
        c = (jnp.eye(4) - 2 * vv * i[:, None, None]) @ c  # Householder reflection
    if config.hue > 0 and channels == 3:
        theta = (rand() * 2 - 1) * np.pi * config.hue_max
        c = _rotate3d(v, jnp.where(fire(config.hue), theta, 0.0), n) @ c
    if config.saturation > 0 and channels == 3:
        s = jnp.exp2(randn() * config.saturation_std)
        s = jnp.where(fire(config.saturation), s, 1.0)
        c = (vv + (jnp.eye(4) - vv) * s[:, None, None]) @ c
    return c


# ----------------------------------------------------------------------------------------------
# Execution.


def _geom_filter() -> np.ndarray:
    return upfirdn2d.setup_filter(SYM6)


def _bilinear_zero_pad(images: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
    """Samples images [N,H,W,C] at float pixel coords ys, xs [N,Ho,Wo]; outside pixels count as 0."""

    def one_channel(img: jax.Array, y: jax.Array, x: jax.Array) -> jax.Array:
        return jax.scipy.ndimage.map_coordinates(img, [y, x], order=1, mode="constant", cval=0.0)

    per_channel = jax.vmap(one_channel, in_axes=(2, None, None), out_axes=2)
    return jax.vmap(per_channel)(images, ys, xs)


def apply_geometric(images: jax.Array, g_inv: jax.Array) -> jax.Array:
    """Resamples images [N,H,W,C] by inverse transforms g_inv [N,3,3] (centred px); same shape/dtype."""
    n, h, w, _ = images.shape
    f = _geom_filter()
    hz_pad = f.shape[0] // 4
    if h < 2 or w < 2:
        raise ValueError(f"apply_geometric needs images of at least 2x2 px, got {h}x{w}.")
    x = images.astype(jnp.float32)
    # Reflect-pad by the largest margin StyleGAN2-ADA can pick; symmetric, so the origin stays put.
    mx, my = w - 1, h - 1
    x = jnp.pad(x, ((0, 0), (my, my), (mx, mx), (0, 0)), mode="reflect")
    x = upfirdn2d.upsample2d(x, f, up=2)
    g = scale2d(2.0, 2.0, n) @ g_inv @ scale2d(0.5, 0.5, n)
    g = translate2d(-0.5, -0.5, n) @ g @ translate2d(0.5, 0.5, n)
    out_h, out_w = (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2
    in_h, in_w = x.shape[1], x.shape[2]
    # Output normalised coords (affine_grid, align_corners=False) -> input normalised coords.
    g = scale2d(2 / in_w, 2 / in_h, n) @ g @ scale2d(out_w / 2, out_h / 2, n)
    gx = (2 * jnp.arange(out_w) + 1) / out_w - 1
    gy = (2 * jnp.arange(out_h) + 1) / out_h - 1
    grid = jnp.stack(jnp.broadcast_arrays(gx[None, :], gy[:, None], jnp.ones((1, 1))), -1)  # [Ho,Wo,3]
    src = jnp.einsum("nij,hwj->nhwi", g[:, :2, :], grid)  # [N,Ho,Wo,2] normalised (x, y)
    px = ((src[..., 0] + 1) * in_w - 1) / 2  # grid_sample(align_corners=False) unnormalisation
    py = ((src[..., 1] + 1) * in_h - 1) / 2
    x = _bilinear_zero_pad(x, py, px)
    x = upfirdn2d.downsample2d(x, f, down=2, padding=-hz_pad * 2, flip_filter=True)
    return x.astype(images.dtype)


def apply_color(images: jax.Array, c: jax.Array) -> jax.Array:
    """Applies colour matrices c [N,4,4] to images [N,H,W,C] (C = 3: full; 1: row-mean; else b/c only)."""
    n, _, _, ch = images.shape
    x = images.astype(jnp.float32)
    if ch == 3:
        y = jnp.einsum("nij,nhwj->nhwi", c[:, :3, :3], x) + c[:, None, None, :3, 3]
    else:
        # StyleGAN2-ADA's grayscale rule: average the RGB rows, then gain = sum of the 3 colour
        # weights, offset = the translation. For other channel counts the same scalar gain/offset
        # (brightness/contrast only; luma flip, hue and saturation were not sampled).
        row = jnp.mean(c[:, :3, :], axis=1)  # [N, 4]
        y = x * jnp.sum(row[:, :3], axis=1)[:, None, None, None] + row[:, 3][:, None, None, None]
    return y.astype(images.dtype)


def _is_identity(m: jax.Array) -> jax.Array:
    return jnp.all(m == jnp.eye(m.shape[-1]), axis=(-2, -1))


def augment(images: jax.Array, key: jax.Array, p: float | jax.Array,
            config: AugmentConfig | None = None) -> jax.Array:
    """ADA-augments images [N,H,W,C] (float, about [-1,1]) with strength p in [0,1]; same shape/dtype.

    Differentiable w.r.t. `images`. p = 0 returns the input exactly.
    """
    if images.ndim != 4:
        raise ValueError(f"augment expects NHWC images [N,H,W,C], got shape {images.shape}.")
    config = pipeline("bgc") if config is None else config
    n, h, w, ch = images.shape
    p = jnp.asarray(p, jnp.float32)
    k_geom, k_color = jax.random.split(key)
    x = images
    if any(getattr(config, op) > 0 for op in _GEOMETRIC):
        g_inv = sample_geometric(k_geom, n, h, w, p, config)
        identity = _is_identity(g_inv)
        x = jax.lax.cond(jnp.all(identity), lambda y: y,
                         lambda y: jnp.where(identity[:, None, None, None], y, apply_geometric(y, g_inv)), x)
    if any(getattr(config, op) > 0 for op in _COLOR):
        c = sample_color(k_color, n, ch, p, config)
        identity = _is_identity(c)
        x = jax.lax.cond(jnp.all(identity), lambda y: y,
                         lambda y: jnp.where(identity[:, None, None, None], y, apply_color(y, c)), x)
    return x


def num_ops(config: AugmentConfig) -> int:
    """Number of enabled ops (probability multiplier > 0)."""
    return sum(getattr(config, op) > 0 for op in _GEOMETRIC + _COLOR)

