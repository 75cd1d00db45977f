"""Small image classifier CNN (Flax linen, NHWC): conv blocks + global average pool + dense.

Used frozen as the "clinical" critic of the StyleGAN2 trainer (is a generated spine radiograph
recognisable as its class?) and, later, as the downstream classifier of synthetic-data studies.
Built from `models/layers.py` blocks so the normalisation choice (and its DP implications) is
made in one place; the default per-example GroupNorm keeps it free of batch statistics.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmedgan.models import layers


class Classifier(nn.Module):
    """images [N, H, W, C] in [-1, 1] -> class logits f32 [N, num_classes]."""

    num_classes: int
    features: Sequence[int] = (16, 32, 64)  # channels per stage; each stage halves H and W
    convs_per_stage: int = 2  # 3x3 convs per stage, the last one strided
    norm: str = "group"  # layers.NORMS; 'batch' adds batch_stats (and mixes examples)
    dropout: float = 0.0  # before the dense head
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"Classifier expects NHWC images [N,H,W,C], got shape {x.shape}.")
        if self.num_classes < 2:
            raise ValueError(f"Classifier needs num_classes >= 2, got {self.num_classes}.")
        x = x.astype(self.dtype)
        for i, f in enumerate(self.features):
            for j in range(self.convs_per_stage):
                stride = 2 if j == self.convs_per_stage - 1 else 1
                x = layers.ConvBlock(f, kernel_size=3, strides=stride, norm=self.norm, activation="lrelu",
                                     dtype=self.dtype, name=f"conv{i}_{j}")(x, train=train)
        x = jnp.mean(x, axis=(1, 2))  # global average pool
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def classifier_logits(module: Classifier, variables: dict, images: jax.Array) -> jax.Array:
    """Pure inference: logits [N, K] of `module` with `variables` on images [N,H,W,C] in [-1, 1]."""
    return module.apply(variables, images, train=False)
