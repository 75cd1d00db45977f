"""The transforms a D augmentation can leak into generated images, as named JAX ops on NHWC images.

Used twice: `jaxmedgan evaluate leak` (studies/leak.py) trains a classifier to recognise each of
them on real images, and the test switch `config.d_augment.kind='leak_test_<name>'`
(augment/policy.py) applies one of the fixed ones to D's real inputs to force a leak on purpose.

Fixed (deterministic) transforms, images f32 [N,H,W,C] (square for the quarter turns):
  identity, hflip (left-right), vflip (up-down), rot90 / rot180 / rot270 (counter-clockwise,
  np.rot90 on (H, W)), transpose, antitranspose: the dihedral group D4 of the square -- what ADA's
  x-flip and 90-degree rotations (and the classic data augmentation's flips + quarter turns) reach;
  invert: x -> -x, ADA's luma flip on one channel (the data are in [-1, 1]).
Random transforms (need a key; draw per image):
  translate  DiffAugment's integer shift with zero fill, never (0, 0) (up to 1/8 of the size)
  cutout     DiffAugment's zeroed square of half the size
  color      DiffAugment's brightness / saturation / contrast
  ada_<op>   one op of the ADA pipeline (augment/ada.py) firing on every image (p = 1): xint,
             scale, rotate, aniso, xfrac, brightness, contrast, hue, saturation.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxmedgan.augment import ada, diffaug


def _rot(k: int) -> Callable[[jax.Array], jax.Array]:
    return lambda x: jnp.rot90(x, k, axes=(1, 2))


FIXED: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x[:, :, ::-1],
    "vflip": lambda x: x[:, ::-1],
    "rot90": _rot(1),
    "rot180": _rot(2),
    "rot270": _rot(3),
    "transpose": lambda x: jnp.swapaxes(x, 1, 2),
    "antitranspose": lambda x: jnp.rot90(jnp.swapaxes(x, 1, 2), 2, axes=(1, 2)),
    "invert": lambda x: -x,
}
D4 = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "antitranspose")
_SQUARE_ONLY = ("rot90", "rot270", "transpose", "antitranspose")
ADA_OPS = ("xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "hue", "saturation")


def _translate(x: jax.Array, key: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    sy, sx = int(h * diffaug.TRANSLATION_RATIO + 0.5), int(w * diffaug.TRANSLATION_RATIO + 0.5)
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (n,), -sy, sy + 1)
    dx = jax.random.randint(kx, (n,), -sx, sx + 1)
    dy = jnp.where((dy == 0) & (dx == 0), max(sy, 1), dy)  # a shift of (0, 0) would be the identity
    return diffaug.shift(x, dy, dx)


def _ada_op(op: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    config = dataclasses.replace(ada.AugmentConfig(), **{op: 1.0})
    return lambda x, key: ada.augment(x, key, 1.0, config)


RANDOM: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "translate": _translate,
    "cutout": diffaug.cutout,
    "color": diffaug.color,
    **{f"ada_{op}": _ada_op(op) for op in ADA_OPS},
}
NAMES = (*FIXED, *RANDOM)


def check(names: tuple[str, ...] | list[str], image_shape: tuple[int, ...] | None = None) -> None:
    """ValueError naming an unknown transform (with the known ones), or a quarter turn / transpose
    asked of non-square images (image_shape [H,W,C] or [N,H,W,C])."""
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"Unknown transform(s) {unknown}; known: {', '.join(NAMES)}.")
    if image_shape is not None:
        h, w = image_shape[-3], image_shape[-2]
        turns = [n for n in names if n in _SQUARE_ONLY]
        if turns and h != w:
            raise ValueError(f"Transform(s) {turns} need square images; got {h}x{w} px.")


def apply(name: str, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """Transform `name` of images f32 [N,H,W,C]; same shape and dtype. `key` is needed by RANDOM ones."""
    if images.ndim != 4:
        raise ValueError(f"Transforms expect NHWC images [N,H,W,C], got shape {images.shape}.")
    check([name], images.shape)
    if name in FIXED:
        return FIXED[name](images)
    if key is None:
        raise ValueError(f"Transform {name!r} is random: pass a PRNG key.")
    return RANDOM[name](images, key).astype(images.dtype)


def apply_labelled(names: tuple[str, ...], images: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
    """Image i transformed by names[labels[i]]: images f32 [N,H,W,C], labels int [N] -> [N,H,W,C].

    Every transform runs on the whole batch and the rows are picked by label (static shapes, one
    compile; cheap at the classifier's 32-64 px)."""
    keys = jax.random.split(key, len(names))
    stacked = jnp.stack([apply(name, images, k) for name, k in zip(names, keys)])  # [K,N,H,W,C]
    return jnp.take_along_axis(stacked, labels[None, :, None, None, None].astype(jnp.int32), axis=0)[0]
