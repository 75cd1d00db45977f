"""pix2pix (Isola et al. 2017): U-Net generator and PatchGAN discriminator, Flax linen, NHWC.

Generator: one-hot label map [B, H, W, K] -> image [B, H, W, C] in [-1, 1] (tanh). Encoder
C64-C128-C256-C512-C512-... (4x4 stride-2 convs, widths doubling from `base_features` and capped
at `max_features`) down to a `bottleneck_size` px map, so the depth follows the image size
(log2(H / bottleneck_size) blocks: 8 at 256 px, 6 at 64 px); the decoder mirrors it with 4x4
stride-2 transposed convs (or, with `upsample` 'nearest' | 'fir', a resize then a 3x3 conv:
`layers.ConvBlock`, no checkerboard artefacts) and skip connections (decoder block j is
concatenated with encoder block j), with dropout 0.5 in the first `num_dropout_blocks` (3) decoder blocks -- pix2pix's
only source of randomness. No norm on the first encoder block (it would normalise away the
input map) or on the bottleneck (instance norm of a 1x1 map is identically zero).

Discriminator (PatchGAN): concat(map, image) -> `num_strided` 4x4 stride-2 convs, one 4x4
stride-1 conv, then a 4x4 stride-1 conv to one logit per patch. With 3 strided convs each
output logit sees a 70x70 px input patch (`patchgan_receptive_field`).

Norm: 'instance' by default (per example, so both nets stay usable under DP-SGD), 'batch' as in
the original; any `layers.NORMS` value works.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmedgan.models import layers

KERNEL = 4  # px: every pix2pix conv is 4x4


def unet_depth(image_size: int, bottleneck_size: int = 1) -> int:
    """Number of stride-2 encoder blocks taking `image_size` px down to `bottleneck_size` px."""
    n = math.log2(image_size / bottleneck_size) if image_size > 0 and bottleneck_size > 0 else -1
    if n < 2 or n != int(n):
        raise ValueError(f"U-Net image_size / bottleneck_size must be a power of two >= 4; got "
                         f"image_size={image_size}, bottleneck_size={bottleneck_size}.")
    return int(n)


def patchgan_layers(num_strided: int = 3, kernel: int = KERNEL) -> list[tuple[int, int]]:
    """(kernel, stride) of every PatchGAN conv, input to output."""
    if num_strided < 1:
        raise ValueError(f"PatchGAN num_strided must be >= 1, got {num_strided}.")
    return [(kernel, 2)] * num_strided + [(kernel, 1), (kernel, 1)]


def patchgan_receptive_field(num_strided: int = 3, kernel: int = KERNEL) -> int:
    """Receptive field (px) of one PatchGAN logit: r_{l-1} = (r_l - 1) * s_l + k_l from r = 1."""
    r = 1
    for k, s in reversed(patchgan_layers(num_strided, kernel)):
        r = (r - 1) * s + k
    return r


class UNetGenerator(nn.Module):
    """Label map [B, H, W, K] (one-hot, float) -> image [B, H, W, out_channels] in [-1, 1]."""

    image_size: int = 256
    out_channels: int = 1
    base_features: int = 64  # width of the first encoder block (C64)
    max_features: int = 512  # widths double per block up to this cap (C512)
    bottleneck_size: int = 1  # px of the innermost map
    norm: str = "instance"
    dropout: float = 0.5  # rate in the first `num_dropout_blocks` decoder blocks
    num_dropout_blocks: int = 3
    output_activation: str = "tanh"  # "linear" turns the U-Net into a segmenter emitting logits
    upsample: str = "transpose"  # decoder up-sampling, layers.UPSAMPLES: transposed conv or resize-conv
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, cond: jax.Array, *, train: bool = True) -> jax.Array:
        n = unet_depth(self.image_size, self.bottleneck_size)
        if cond.ndim != 4 or cond.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"UNetGenerator expects maps [B, {self.image_size}, {self.image_size}, K]; "
                             f"got shape {cond.shape}.")
        width = lambda i: min(self.base_features * 2 ** i, self.max_features)
        h = cond.astype(self.dtype)
        skips = []
        for i in range(n):
            norm = "none" if i in (0, n - 1) else self.norm
            h = layers.ConvBlock(width(i), norm=norm, activation="lrelu", dtype=self.dtype,
                                 name=f"down{i}")(h, train=train)
            skips.append(h)
        # Decoder block j (from the bottleneck outwards) upsamples to encoder block j-1's size.
        for j, i in enumerate(range(n - 1, 0, -1)):
            h = layers.ConvBlock(width(i - 1), transpose=True, norm=self.norm, activation="relu",
                                 upsample=self.upsample, dtype=self.dtype, name=f"up{i}")(h, train=train)
            if j < self.num_dropout_blocks and self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)  # commutes with relu
            h = jnp.concatenate([h, skips[i - 1]], axis=-1)
        h = layers.ConvBlock(self.out_channels, transpose=True, norm="none",
                             activation=self.output_activation, use_bias=True, upsample=self.upsample,
                             dtype=self.dtype, name="to_image")(h, train=train)
        return h.astype(jnp.float32)


class PatchDiscriminator(nn.Module):
    """(map [B, H, W, K], image [B, H, W, C]) -> patch logits f32 [B, H / 2**num_strided, W / 2**num_strided]."""

    base_features: int = 64
    max_features: int = 512
    num_strided: int = 3  # stride-2 convs; 3 -> 70x70 px receptive field
    norm: str = "instance"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, cond: jax.Array, image: jax.Array, *, train: bool = True) -> jax.Array:
        if cond.shape[:3] != image.shape[:3]:
            raise ValueError(f"PatchDiscriminator: map {cond.shape} and image {image.shape} must share "
                             "[B, H, W].")
        h = jnp.concatenate([cond, image], axis=-1).astype(self.dtype)
        for i, (k, s) in enumerate(patchgan_layers(self.num_strided)[:-1]):
            h = layers.ConvBlock(min(self.base_features * 2 ** i, self.max_features), kernel_size=k,
                                 strides=s, norm="none" if i == 0 else self.norm, activation="lrelu",
                                 dtype=self.dtype, name=f"conv{i}")(h, train=train)
        h = layers.ConvBlock(1, kernel_size=KERNEL, strides=1, norm="none", activation="linear",
                             use_bias=True, dtype=self.dtype, name="logits")(h, train=train)
        return h[..., 0].astype(jnp.float32)
