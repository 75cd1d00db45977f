"""DCGAN and ACGAN (Frid-Adar et al. liver-lesion ROIs), Flax linen, NHWC.

`num_classes = 0` gives the unconditional DCGAN; `num_classes > 0` a class-conditional GAN: the
generator is conditioned on a class embedding, and the discriminator by `cond`:
  aux         ACGAN (Odena et al. 2017): an auxiliary classifier head on D's features.
  projection  projection discriminator (Miyato & Koyama 2018): logit = psi(phi(x)) + <e_y, phi(x)>
              with a class embedding e_y in D; no classifier head.
  tac         twin auxiliary classifiers (Gong et al. 2019): the aux head plus a twin head of the
              same shape (the trainer fits the twin to generated images' labels).
  proj_aux    the projection logit and an aux classifier head (the trainer fits the head to real
              images only, and G to it, as ReACGAN/TAC-style hybrids do): projection matches each
              class's distribution, the head makes G's images carry their class.
  d2dce       ReACGAN (Kang et al. 2021): an embedding head f(x) and learnable class proxies v_k,
              both L2-normalised, for the data-to-data cross-entropy (losses/gan.py `d2dce`).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmedgan.models import layers
from jaxmedgan.ops import misc


CONDITIONINGS = ("aux", "projection", "tac", "proj_aux", "d2dce")  # how a class-conditional D sees the class


def _num_blocks(image_size: int) -> int:
    n = math.log2(image_size / 4)
    if image_size < 8 or n != int(n):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}.")
    return int(n)


class Generator(nn.Module):
    """z [B, latent_dim] (+ labels [B] int) -> images [B, H, W, channels] in [-1, 1]."""

    image_size: int = 64
    channels: int = 1
    latent_dim: int = 100
    num_classes: int = 0  # 0: unconditional DCGAN; >0: ACGAN conditioning
    base_features: int = 64  # channels of the last (highest-resolution) hidden block
    max_features: int = 512
    norm: str = "batch"
    upsample: str = "transpose"  # layers.UPSAMPLES: transposed conv (DCGAN) or resize-conv ('nearest', 'fir')
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True) -> jax.Array:
        n = _num_blocks(self.image_size)
        width = lambda i: min(self.base_features * 2 ** (n - 1 - i), self.max_features)
        h = z.astype(self.dtype)
        if self.num_classes:
            if labels is None:
                raise ValueError("This generator is class-conditional (num_classes > 0): pass labels.")
            emb = nn.Embed(self.num_classes, self.latent_dim, name="class_embed")(labels)
            h = jnp.concatenate([h, emb.astype(self.dtype)], axis=-1)
        # Project to a 4x4 map: a dense layer is a 4x4 transposed conv on a 1x1 input.
        h = nn.Dense(4 * 4 * width(0), use_bias=False, kernel_init=nn.initializers.normal(0.02),
                     dtype=self.dtype, name="project")(h)
        h = h.reshape(h.shape[0], 4, 4, width(0))
        h = layers.make_norm(self.norm, train=train, name="project_norm")(h)
        h = nn.relu(h)
        for i in range(1, n):
            h = layers.ConvBlock(width(i), transpose=True, norm=self.norm, activation="relu",
                                 upsample=self.upsample, dtype=self.dtype, name=f"up{i}")(h, train=train)
        h = layers.ConvBlock(self.channels, transpose=True, norm="none", activation="tanh", use_bias=True,
                             upsample=self.upsample, dtype=self.dtype, name="to_image")(h, train=train)
        return h.astype(jnp.float32)


class Discriminator(nn.Module):
    """images [B, H, W, C] (+ labels int [B] for `cond='projection'`) -> (real/fake logit f32 [B], heads).

    heads: None (unconditional, projection), aux-head class logits f32 [B, K] ('aux', 'proj_aux'), the aux
    and twin heads' class logits stacked, f32 [B, 2, K] ('tac': [:, 0] aux, [:, 1] twin), or unit vectors
    f32 [B, 1 + K, embed_dim] ('d2dce': [:, 0] the image's embedding f(x), [:, 1 + k] class k's proxy v_k,
    the same in every row, so that heads keep one row per image).
    """

    image_size: int = 64
    base_features: int = 64  # channels of the first conv block
    max_features: int = 512
    num_classes: int = 0  # >0: class-conditional, as `cond` says
    cond: str = "aux"  # one of CONDITIONINGS; read only when num_classes > 0
    norm: str = "layer"  # per-example norms keep D usable under DP; "batch" is the DCGAN original
    dropout: float = 0.0
    mbstd_group_size: int = 0  # >0: minibatch-stddev channel before the head (against mode collapse; not under DP)
    embed_dim: int = 128  # 'd2dce': width of f(x) and the proxies (StudioGAN: 512 after a pooled 256-1024 trunk)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *,
                 train: bool = True) -> tuple[jax.Array, jax.Array | None]:
        n = _num_blocks(self.image_size)
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"Discriminator expects images of {self.image_size}x{self.image_size}, "
                             f"got shape {x.shape}.")
        if self.num_classes and self.cond not in CONDITIONINGS:
            raise ValueError(f"Discriminator cond={self.cond!r} (config.model.cond) must be one of {CONDITIONINGS}.")
        projection = bool(self.num_classes) and self.cond in ("projection", "proj_aux")
        if projection and labels is None:
            raise ValueError(f"This discriminator is a projection discriminator (cond={self.cond!r}): pass labels.")
        h = x.astype(self.dtype)
        for i in range(n):
            feats = min(self.base_features * 2 ** i, self.max_features)
            # No norm on the first block, as in DCGAN: it would normalise away the input contrast.
            h = layers.ConvBlock(feats, norm="none" if i == 0 else self.norm, activation="lrelu",
                                 dtype=self.dtype, name=f"down{i}")(h, train=train)
            if self.dropout:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        if self.mbstd_group_size:
            h = misc.minibatch_stddev(h, self.mbstd_group_size)
        h = h.reshape(h.shape[0], -1)  # phi(x) [B, F]
        head = lambda k, name: nn.Dense(k, kernel_init=nn.initializers.normal(0.02), dtype=self.dtype, name=name)
        adv = head(1, "adv")(h)[:, 0].astype(jnp.float32)  # psi(phi(x))
        heads = None
        if projection:
            # e_y = onehot(y) E as a bias-free Dense rather than nn.Embed: ghost clipping (DP) covers
            # Dense layers, and the gradient is the same.
            onehot = jax.nn.one_hot(labels, self.num_classes, dtype=self.dtype)
            e = nn.Dense(h.shape[-1], use_bias=False, kernel_init=nn.initializers.normal(0.02),
                         dtype=self.dtype, name="class_embed")(onehot)
            adv = adv + jnp.sum(e * h, axis=-1).astype(jnp.float32)
        if self.num_classes and self.cond in ("aux", "tac", "proj_aux"):
            heads = head(self.num_classes, "aux")(h).astype(jnp.float32)
            if self.cond == "tac":
                twin = head(self.num_classes, "twin")(h).astype(jnp.float32)
                heads = jnp.stack([heads, twin], axis=1)
        if self.num_classes and self.cond == "d2dce":
            unit = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
            embed = unit(head(self.embed_dim, "embed")(h).astype(jnp.float32))  # f(x) [B, E]
            # v_k [K, E]: random directions of norm ~1 at init, so Adam's steps move them as they move f(x).
            proxies = unit(self.param("proxies", nn.initializers.normal(self.embed_dim ** -0.5),
                                      (self.num_classes, self.embed_dim), jnp.float32))
            heads = jnp.concatenate([embed[:, None], jnp.broadcast_to(proxies, (h.shape[0], *proxies.shape))], 1)
        return adv, heads
