"""Small ResNet-style image classifier (Flax linen, NHWC) for downstream synthetic-data studies.

stem 3x3 conv (stride 1 or 2) -> stages of basic residual blocks (3x3 conv, norm, ReLU, 3x3 conv, norm, + shortcut;
the first block of every stage after the first halves H and W and its shortcut is a strided 1x1
conv) -> global average pool (`features`: the penultimate embedding) -> dropout -> dense logits.

The same network serves single-label (softmax) and multi-label (one sigmoid per finding) tasks:
it returns K logits either way, the loss decides. Normalisation comes from `models/layers.py`;
the default per-example GroupNorm keeps the model free of batch statistics, so a frozen copy gives
the same answer for an image whatever batch it sits in (clinical loss, latent class optimisation).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmedgan.models import layers


class ResidualBlock(nn.Module):
    """Basic residual block, NHWC: x [N,H,W,Cin] -> [N,H/s,W/s,features]."""

    features: int
    strides: int = 1
    norm: str = "group"  # layers.NORMS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        s = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), s, padding="SAME", use_bias=False, dtype=self.dtype, name="conv1")(x)
        y = layers.make_norm(self.norm, train=train, name="norm1")(y)
        y = nn.relu(y)
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype, name="conv2")(y)
        # Zero-initialised last norm scale (Goyal et al. 2017): each block starts as the identity.
        if self.norm in ("batch", "group", "instance", "layer"):
            y = _zero_scale_norm(self.norm, train, "norm2")(y)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = nn.Conv(self.features, (1, 1), s, use_bias=False, dtype=self.dtype, name="proj")(x)
            shortcut = layers.make_norm(self.norm, train=train, name="proj_norm")(shortcut)
        return nn.relu(y + shortcut)


def _zero_scale_norm(kind: str, train: bool, name: str):
    """The norm of `layers.make_norm` with its scale initialised to 0 (flax modules take scale_init)."""
    zeros = nn.initializers.zeros
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, scale_init=zeros, name=name)
    if kind == "instance":
        return nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5, scale_init=zeros, name=name)
    if kind == "layer":
        return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, epsilon=1e-5, scale_init=zeros, name=name)
    return _ZeroGroupNorm(name=name)


class _ZeroGroupNorm(nn.Module):
    """layers' GroupNorm (8 groups, fewer when channels are not divisible) with zero-initialised scale."""

    groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        groups = self.groups
        while x.shape[-1] % groups:
            groups -= 1
        return nn.GroupNorm(num_groups=groups, epsilon=1e-5, scale_init=nn.initializers.zeros, name="GroupNorm_0")(x)


class ResNetBackbone(nn.Module):
    """images [N,H,W,C] in [-1, 1] -> pooled features f32 [N, features[-1]]."""

    features: Sequence[int] = (16, 32, 64)  # channels per stage; stages after the first halve H, W
    blocks_per_stage: int = 2
    norm: str = "group"
    stem_stride: int = 1  # 2 halves H, W in the stem (64 px ROIs at the cost of 32 px ones)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        s = (self.stem_stride, self.stem_stride)
        x = nn.Conv(self.features[0], (3, 3), s, padding="SAME", use_bias=False, dtype=self.dtype, name="stem")(x)
        x = nn.relu(layers.make_norm(self.norm, train=train, name="stem_norm")(x))
        for i, f in enumerate(self.features):
            for j in range(self.blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                x = ResidualBlock(f, stride, self.norm, self.dtype, name=f"stage{i}_block{j}")(x, train=train)
        return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)  # global average pool


class ResNetClassifier(nn.Module):
    """images [N,H,W,C] in [-1, 1] -> logits f32 [N, num_classes]; `features` -> [N, features[-1]]."""

    num_classes: int  # classes (single-label, softmax) or findings (multi-label, sigmoid)
    features: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 2
    norm: str = "group"  # layers.NORMS; 'batch' adds batch_stats (and mixes examples)
    dropout: float = 0.0  # on the pooled features, before the dense head
    stem_stride: int = 1  # 2: the stem halves H and W (4x cheaper)
    dtype: Any = jnp.float32

    def setup(self):
        if self.num_classes < 1:
            raise ValueError(f"ResNetClassifier needs num_classes >= 1, got {self.num_classes}.")
        if not self.features:
            raise ValueError("ResNetClassifier needs at least one stage in `features`.")
        self.backbone = ResNetBackbone(tuple(self.features), self.blocks_per_stage, self.norm,
                                       self.stem_stride, self.dtype)
        self.drop = nn.Dropout(self.dropout)
        self.head = nn.Dense(self.num_classes, dtype=self.dtype)

    def features_of(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Penultimate embedding f32 [N, features[-1]] (global-average-pooled last stage)."""
        if x.ndim != 4:
            raise ValueError(f"ResNetClassifier expects NHWC images [N,H,W,C], got shape {x.shape}.")
        return self.backbone(x, train=train)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        h = self.features_of(x, train=train)
        h = self.drop(h, deterministic=not train)
        return self.head(h).astype(jnp.float32)


def logits(module: ResNetClassifier, variables: Any, images: jax.Array) -> jax.Array:
    """Pure inference: logits f32 [N, K] on images [N,H,W,C] in [-1, 1]."""
    return module.apply(variables, images, train=False)


def features(module: ResNetClassifier, variables: Any, images: jax.Array) -> jax.Array:
    """Pure inference: penultimate embedding f32 [N, D] on images [N,H,W,C] in [-1, 1]."""
    return module.apply(variables, images, train=False, method=ResNetClassifier.features_of)
