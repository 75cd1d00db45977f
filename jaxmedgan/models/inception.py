"""Inception-v3 as used for FID (the TF-slim 2015-12-05 graph), ported to Flax, NHWC.

This is the network of pytorch-fid's `fid_inception_v3()`: torchvision's Inception3 layout with
the FID patches (`FIDInceptionA/C`: 3x3 average pools that exclude the zero padding from the
count, as TensorFlow does; `FIDInceptionE_1`: the same; `FIDInceptionE_2`: a 3x3 *max* pool in
the pool branch of Mixed_7c). Inputs in [-1, 1] are bilinearly resized to 299 x 299
(half-pixel centres, no antialiasing: torch `F.interpolate(mode="bilinear",
align_corners=False)`), and the 2048-d global average pool after Mixed_7c ("pool3") is returned.
pytorch-fid scales [0, 1] inputs to 2x - 1 after resizing; resizing is linear, so resizing a
[-1, 1] image gives the same network input.

No weights ship or download: users convert the FID weights file they have
(`pt_inception-2015-12-05-6726825d.pth`, pytorch-fid's) with
`python -m jaxmedgan.evaluators.inception_convert --pth FILE --out inception_fid.npz`, and
`load_variables(npz)` reads it back here. Parameter names mirror the torch state dict
(`Mixed_5b/branch1x1/conv/kernel` <- `Mixed_5b.branch1x1.conv.weight`).

Measured on one H100 (jax 0.11.2; torch 2.11 + torchvision 0.26 there), same random weights:
pool3 of this port (f32, precision HIGHEST) vs the genuine pytorch-fid 0.3.0 network in float64,
inputs of 64 / 128 / 512 px resized to 299: max relative difference 5.9e-7 / 6.1e-7 / 1.3e-6 of
the feature scale (the vendored test reference in tests/reference/ matched genuine pytorch-fid
exactly). Throughput at batch 256 from 64 px grey: 1960 images/s (pytorch-fid in torch, with
its default TF32 convolutions: 4460 images/s).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_IMAGE_SIZE = 299  # px; the TF graph's input size
FEATURE_DIM = 2048    # pool3 width
MIN_IMAGE_SIZE = 75   # px; smallest input whose Mixed_7c map is not empty (when resize_to=None)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU."""

    features: int                          # output channels
    kernel_size: int | tuple[int, int]     # (kh, kw)
    strides: int = 1
    padding: int | tuple[int, int] = 0     # symmetric zero padding (ph, pw), torch-style
    precision: Any = jax.lax.Precision.HIGHEST  # full f32 convs on accelerators too

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel_size), strides=_pair(self.strides),
                    padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    # TensorFlow's average pool divides by the number of non-padding elements.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """Mixed_5b/c/d (FIDInceptionA): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(64, 1, name="branch1x1")(x)
        b5 = BasicConv2d(48, 1, name="branch5x5_1")(x)
        b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(384, 3, strides=2, name="branch3x3")(x)
        bd = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, 3, strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..e (FIDInceptionC): factorised 7x7 branches."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, 1, name="branch1x1")(x)
        b7 = BasicConv2d(c7, 1, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, 1, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(192, 1, name="branch3x3_1")(x)
        b3 = BasicConv2d(320, 3, strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, 3, strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (FIDInceptionE_1, pool="avg") and Mixed_7c (FIDInceptionE_2, pool="max")."""

    pool: str  # "avg" (TF count-excluding-padding) or "max" (the FID graph's Mixed_7c quirk)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(320, 1, name="branch1x1")(x)
        b3 = BasicConv2d(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "avg":
            p = _avg_pool_3x3_same(x)
        elif self.pool == "max":
            p = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))  # pads with -inf, like torch
        else:
            raise ValueError(f"InceptionE pool must be 'avg' or 'max', got {self.pool!r}.")
        bp = BasicConv2d(192, 1, name="branch_pool")(p)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(x: jax.Array, size: int) -> jax.Array:
    """Bilinear resize of x [N,H,W,C] to [N,size,size,C] like torch `F.interpolate(bilinear, align_corners=False)`."""
    n, _, _, c = x.shape
    return jax.image.resize(x, (n, size, size, c), method="bilinear", antialias=False)


class InceptionV3FID(nn.Module):
    """images [N,H,W,C] in [-1, 1] (C = 1 or 3; grey is repeated to RGB) -> pool3 features f32 [N, 2048]."""

    resize_to: int | None = FID_IMAGE_SIZE  # px; None feeds the input as is (tests; >= 75 px)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"InceptionV3FID expects images [N,H,W,1 or 3], got shape {x.shape}.")
        x = x.astype(jnp.float32)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if self.resize_to is not None:
            x = resize_bilinear(x, self.resize_to)
        elif min(x.shape[1:3]) < MIN_IMAGE_SIZE:
            raise ValueError(f"Without resizing the input must be at least {MIN_IMAGE_SIZE} px, got {x.shape[1:3]}.")
        x = BasicConv2d(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))  # pool3 [N, 2048]


@functools.lru_cache(maxsize=1)
def abstract_variables() -> dict:
    """Shapes/dtypes of the model's variables ({'params', 'batch_stats'}), without computing anything."""
    model = InceptionV3FID(resize_to=None)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, FID_IMAGE_SIZE, FID_IMAGE_SIZE, 3)))


def flat_shapes() -> dict[str, tuple[int, ...]]:
    """{'params/Mixed_5b/branch1x1/conv/kernel': (1, 1, 192, 64), ...}: the npz layout's names and shapes."""
    return {k: v.shape for k, v in _flat(abstract_variables()).items()}


def _flat(tree: Any) -> dict[str, Any]:
    return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def variables_from_flat(arrays: dict[str, np.ndarray], *, where: str = "weights") -> dict:
    """Nested Flax variables from flat '/'-joined names (the npz layout), checked against the model.

    Raises ValueError naming every missing, unexpected or wrongly shaped entry.
    """
    expected = flat_shapes()
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    wrong = [f"{k}: {tuple(np.shape(arrays[k]))} (expected {expected[k]})" for k in sorted(expected)
             if k in arrays and tuple(np.shape(arrays[k])) != expected[k]]
    if missing or unexpected or wrong:
        def show(items):
            return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")
        raise ValueError(
            f"{where} do not match the FID Inception-v3: missing [{show(missing)}]; unexpected "
            f"[{show(unexpected)}]; wrong shapes [{show(wrong)}]. Convert pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth with `python -m jaxmedgan.evaluators.inception_convert`.")
    nested = flax.traverse_util.unflatten_dict(
        {tuple(k.split("/")): np.asarray(v, np.float32) for k, v in arrays.items()})
    return nested


def load_variables(path: str) -> dict:
    """Flax variables from an npz written by `jaxmedgan.evaluators.inception_convert`."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Inception weights {path!r} not found. Convert the FID weights you have with `python -m "
            "jaxmedgan.evaluators.inception_convert --pth pt_inception-2015-12-05-6726825d.pth --out "
            f"{path}`.") from None
    return variables_from_flat(arrays, where=path)
