"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

A fixed policy applied to every image D sees (reals and fakes, in D's and in G's step), with fresh
randomness per image and per call; differentiable w.r.t. the images, so G learns through it.
Ops, as the reference implementation (mit-han-lab/data-efficient-gans `DiffAugment_pytorch.py`)
on images in [-1, 1], NHWC:

  color        brightness x + (u - 0.5); saturation (3 channels only) (x - mean_c) * 2u + mean_c;
               contrast (x - mean) * (u + 0.5) + mean  (u ~ U[0, 1) per image; mean over H, W, C)
  translation  integer shift by up to `ratio` (1/8) of the size in y and x, zero fill
  cutout       a zeroed square of half the size at a uniform random position (clipped at the edges)

Every op draws per example and reads only that example: no op mixes examples, so the pipeline is
DP-compatible (it can run inside a per-example clipped loss).

A conditional D that reads (condition map, image) pairs (pix2pix) uses `augment_pair`: translation
and cutout move and cut map and image identically, colour touches the image only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

OPS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> ('color', 'translation', 'cutout'); '' -> (). ValueError names
    the unknown op and the accepted ones."""
    ops = tuple(op.strip() for op in policy.split(",") if op.strip())
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"Unknown DiffAugment op(s) {unknown} in policy {policy!r}; expected from {OPS}.")
    return ops


def color(x: jax.Array, key: jax.Array) -> jax.Array:
    """Random brightness, saturation (C = 3) and contrast per image; x f32 [N,H,W,C]."""
    n, ch = x.shape[0], x.shape[-1]
    u = jax.random.uniform(key, (3, n, 1, 1, 1), x.dtype)
    x = x + (u[0] - 0.5)
    if ch == 3:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        x = (x - mean) * (u[1] * 2) + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (u[2] + 0.5) + mean


def shift(x: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
    """Each image x[i] [H,W,C] moved by (dy[i], dx[i]) integer px (positive: down / right), zero fill."""
    _, h, w, _ = x.shape

    def one(img, ty, tx):
        padded = jnp.pad(img, ((h, h), (w, w), (0, 0)))
        return jax.lax.dynamic_slice(padded, (h - ty, w - tx, 0), img.shape)

    return jax.vmap(one)(x, dy.astype(jnp.int32), dx.astype(jnp.int32))


def translation(x: jax.Array, key: jax.Array, ratio: float = TRANSLATION_RATIO) -> jax.Array:
    """Integer translation by up to round(ratio * size) px in each axis, per image, zero fill."""
    n, h, w, _ = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (n,), -sy, sy + 1)
    dx = jax.random.randint(kx, (n,), -sx, sx + 1)
    return shift(x, dy, dx)


def cutout_mask(n: int, h: int, w: int, key: jax.Array, ratio: float = CUTOUT_RATIO) -> jax.Array:
    """f32 [N,H,W,1]: 0 inside one square of round(ratio * size) px per image, 1 elsewhere.

    The square's centre is uniform over [0, H + (1 - size % 2)) (the reference's range), so it may
    be clipped by the image edge."""
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ky, kx = jax.random.split(key)
    oy = jax.random.randint(ky, (n, 1, 1), 0, h + (1 - ch % 2))
    ox = jax.random.randint(kx, (n, 1, 1), 0, w + (1 - cw % 2))
    ys = jnp.arange(h)[None, :, None] - oy + ch // 2  # row index inside the square, [N,H,1]
    xs = jnp.arange(w)[None, None, :] - ox + cw // 2
    inside = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)
    return (~inside).astype(jnp.float32)[..., None]


def cutout(x: jax.Array, key: jax.Array, ratio: float = CUTOUT_RATIO) -> jax.Array:
    """Zeroes one square of half the size per image (`cutout_mask`)."""
    n, h, w, _ = x.shape
    return x * cutout_mask(n, h, w, key, ratio).astype(x.dtype)


def augment(images: jax.Array, key: jax.Array, ops: tuple[str, ...] = OPS) -> jax.Array:
    """DiffAugment images f32 [N,H,W,C] in [-1,1] with `ops` in order; same shape and dtype.

    Differentiable w.r.t. `images`; `ops=()` returns them unchanged."""
    if images.ndim != 4:
        raise ValueError(f"DiffAugment expects NHWC images [N,H,W,C], got shape {images.shape}.")
    fns = {"color": color, "translation": translation, "cutout": cutout}
    x = images
    for op, k in zip(ops, jax.random.split(key, max(len(ops), 1))):
        x = fns[op](x, k)
    return x


def augment_pair(cond: jax.Array, images: jax.Array, key: jax.Array,
                 ops: tuple[str, ...] = OPS) -> tuple[jax.Array, jax.Array]:
    """DiffAugment (condition map, image) pairs as one: cond f32 [N,H,W,K] (e.g. one-hot), images f32
    [N,H,W,C] in [-1,1] -> (cond, images), same shapes and dtypes.

    Translation and cutout act on the channel concatenation, so both get the same shift and the same
    square (zero-filled pixels hold an all-zero map vector, 'no label', where the image is 0); colour
    acts on the image channels only, so a one-hot map stays one-hot wherever it is not zero-filled.
    The same key draws the same transforms as `augment`: the image part equals `augment(images, key, ops)`.
    """
    if cond.ndim != 4 or images.ndim != 4 or cond.shape[:3] != images.shape[:3]:
        raise ValueError(f"DiffAugment pairs need NHWC map and image with the same [N,H,W]; got map "
                         f"{cond.shape} and image {images.shape}.")
    k = cond.shape[-1]
    x = jnp.concatenate([cond.astype(images.dtype), images], axis=-1)
    fns = {"translation": translation, "cutout": cutout}
    for op, op_key in zip(ops, jax.random.split(key, max(len(ops), 1))):
        if op == "color":
            x = jnp.concatenate([x[..., :k], color(x[..., k:], op_key)], axis=-1)
        else:
            x = fns[op](x, op_key)
    return x[..., :k].astype(cond.dtype), x[..., k:]
