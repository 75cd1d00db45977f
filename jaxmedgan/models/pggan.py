"""Progressive GAN (Karras et al. 2018, "Progressive Growing of GANs"), Flax linen, NHWC.

Both networks hold the parameters of every resolution from init (a fixed pytree, so checkpoints
restore at any phase); the level being trained and the fade-in weight are call arguments:

    level L in 0..num_levels-1 works at 4 * 2**L px (static: one compiled function per level)
    alpha in [0, 1] (may be traced) fades block L in:
        G:  img = lerp(upsample(toRGB_{L-1}(x_{L-1})), toRGB_L(x_L), alpha)
        D:  x   = lerp(fromRGB_{L-1}(avgpool(img)), block_L(fromRGB_L(img)), alpha)

G: pixel-normalised z -> dense 4x4 -> conv3x3 (4 px), then per resolution nearest-upsample and two
conv3x3, each lrelu(0.2) + pixel-wise feature normalisation; a 1x1 linear toRGB per resolution.
D mirrors it: a 1x1 fromRGB per resolution, two conv3x3 + 2x2 average pool per block, then
minibatch stddev, conv3x3, dense, dense -> one WGAN score. All layers are the equalised-lr
`FullyConnected`/`Conv2d` of models/stylegan2.py: N(0, 1) weights scaled at run time by
1/sqrt(fan_in), with the lrelu's sqrt(2) gain (together PGGAN's He constant sqrt(2/fan_in)).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmedgan.models.stylegan2 import Conv2d, FullyConnected, channels_at
from jaxmedgan.models.stylegan2 import normalize_2nd_moment as pixel_norm
from jaxmedgan.ops import misc

__all__ = ["Generator", "Discriminator", "num_levels", "resolution_at", "upsample", "downsample",
           "pixel_norm", "fade_reals", "init_params"]


def num_levels(resolution: int) -> int:
    """Number of levels from 4 px to `resolution` px (a power of two >= 4): log2(resolution) - 1."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"PGGAN resolution must be a power of two >= 4 px; got {resolution}.")
    return int(np.log2(resolution)) - 1


def resolution_at(level: int) -> int:
    """Image size in px at `level` (0 -> 4 px)."""
    return 4 * 2**level


def upsample(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling [N,H,W,C] -> [N,H*f,W*f,C] (PGGAN's upscale2d)."""
    if factor == 1:
        return x
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def downsample(x: jax.Array, factor: int = 2) -> jax.Array:
    """Box (average-pool) downsampling [N,H,W,C] -> [N,H/f,W/f,C] (PGGAN's downscale2d)."""
    if factor == 1:
        return x
    n, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"downsample: {h}x{w} px is not divisible by the factor {factor}.")
    return jnp.mean(x.reshape(n, h // factor, factor, w // factor, factor, c), axis=(2, 4))


def fade_reals(images: jax.Array, level: int, alpha: jax.Array | float) -> jax.Array:
    """Real images [N,R,R,C] as D sees them at `level`: box-downsampled to 4 * 2**level px and,
    while block `level` fades in, lerp(upsample(downsample(x)), x, alpha) so reals and fakes
    blend the same two resolutions."""
    res = resolution_at(level)
    full = images.shape[1]
    if full % res:
        raise ValueError(f"fade_reals: images of {full} px cannot be reduced to level {level} ({res} px).")
    x = downsample(images, full // res)
    if level == 0:
        return x
    low = upsample(downsample(x))
    return low + (x - low) * jnp.asarray(alpha, x.dtype)


def _check_level(level: int, resolution: int) -> int:
    levels = num_levels(resolution)
    if not isinstance(level, (int, np.integer)) or not 0 <= level < levels:
        raise ValueError(f"level must be a Python int in 0..{levels - 1} for a {resolution} px PGGAN "
                         f"(4 * 2**level px); got {level!r}.")
    return int(level)


@functools.lru_cache(maxsize=16)
def _abstract_params(module: nn.Module, specs: tuple) -> tuple[list, Any]:
    """(flattened-with-path abstract params, treedef) of `module.init` on inputs `specs`; cached
    per (module, input shapes), since tracing every level's init is the slow part of init."""
    args = [jnp.zeros(s[0], s[1]) if isinstance(s, tuple) else s for s in specs]
    abstract = jax.eval_shape(lambda k: module.init(k, *args), jax.random.PRNGKey(0))["params"]
    return jax.tree_util.tree_flatten_with_path(abstract)


def init_params(module: nn.Module, key: jax.Array, *args: Any) -> Any:
    """`module.init(key, *args)['params']` in distribution, without compiling the init forward pass.

    Every PGGAN layer is an equalised-lr `Conv2d`/`FullyConnected` (lr multiplier 1): 'weight'
    ~ N(0, 1), 'bias' = 0. The tree comes from `jax.eval_shape(module.init)`; all weights are one
    normal draw, sliced: a jitted trainers.pggan.init_state then compiled in 6 s instead of 15 s
    (16 px preset, loaded 2-core CPU).
    """
    specs = tuple((tuple(a.shape), str(a.dtype)) if hasattr(a, "shape") else a for a in args)
    flat, treedef = _abstract_params(module, specs)
    names = [getattr(path[-1], "key", None) for path, _ in flat]
    if set(names) - {"weight", "bias"}:
        raise ValueError(f"init_params: unexpected parameter names {sorted(set(names) - {'weight', 'bias'})} "
                         f"in {type(module).__name__}; only equalised-lr 'weight'/'bias' are drawn here.")
    sizes = [int(np.prod(a.shape)) if n == "weight" else 0 for n, (_, a) in zip(names, flat)]
    noise = jax.random.normal(key, (max(sum(sizes), 1),), jnp.float32)
    offsets = np.cumsum([0] + sizes)
    leaves = [noise[o:o + s].reshape(a.shape) if n == "weight" else jnp.zeros(a.shape, a.dtype)
              for n, (_, a), o, s in zip(names, flat, offsets, sizes)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


class _GBlock(nn.Module):
    """Generator block at `resolution` px: (x [N,R/2,R/2,*] | z) -> x [N,R,R,features]."""

    features: int
    resolution: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda name: Conv2d(self.features, 3, activation="lrelu", name=name)
        if self.resolution == 4:
            # Dense to 4x4 (PGGAN's gain sqrt(2)/4 is dropped: pixel norm right after cancels any scale).
            x = FullyConnected(16 * self.features, activation="lrelu", name="dense")(pixel_norm(x, axis=-1))
            x = pixel_norm(x.reshape(x.shape[0], 4, 4, self.features))
            return pixel_norm(conv("conv")(x))
        x = upsample(x)
        x = pixel_norm(conv("conv0")(x))
        return pixel_norm(conv("conv1")(x))


class Generator(nn.Module):
    """(z [N, latent_dim], level, alpha) -> images f32 [N, 4*2**level, 4*2**level, channels].

    Unbounded linear output, trained towards [-1, 1]; `full_resolution=True` upsamples the result
    (nearest) to `resolution` px.
    """

    resolution: int = 64  # final px, a power of two >= 4
    channels: int = 1
    latent_dim: int = 128
    channel_base: int = 2048  # features at r px: min(channel_base // r, channel_max)
    channel_max: int = 128
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, z: jax.Array, level: int | None = None, alpha: jax.Array | float = 1.0,
                 full_resolution: bool = False) -> jax.Array:
        levels = num_levels(self.resolution)
        level = levels - 1 if level is None else _check_level(level, self.resolution)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"Generator expects z [N, {self.latent_dim}] (latent_dim); got {z.shape}.")
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        to_rgb = [Conv2d(self.channels, 1, name=f"torgb{resolution_at(i)}") for i in range(levels)]
        blocks = [_GBlock(ch(resolution_at(i)), resolution_at(i), name=f"b{resolution_at(i)}")
                  for i in range(levels)]
        initializing = self.is_initializing()
        x, feats = z.astype(self.dtype), []
        # At init every block and toRGB runs once, so all parameters exist in the tree.
        for i in range(levels if initializing else level + 1):
            x = blocks[i](x)
            feats.append(x)
            if initializing:
                to_rgb[i](x)
        img = to_rgb[level](feats[level])
        if level > 0:
            low = upsample(to_rgb[level - 1](feats[level - 1]))
            img = low + (img - low) * jnp.asarray(alpha, img.dtype)
        img = img.astype(jnp.float32)
        if full_resolution:
            img = upsample(img, self.resolution // resolution_at(level))
        return img


class Discriminator(nn.Module):
    """(images [N, 4*2**level, 4*2**level, channels], level, alpha) -> WGAN scores f32 [N]."""

    resolution: int = 64
    channels: int = 1
    channel_base: int = 2048
    channel_max: int = 128
    mbstd_group_size: int = 4  # 0: off; 1: per example (DP-compatible); >1 mixes examples
    mbstd_num_channels: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, img: jax.Array, level: int | None = None, alpha: jax.Array | float = 1.0) -> jax.Array:
        levels = num_levels(self.resolution)
        level = levels - 1 if level is None else _check_level(level, self.resolution)
        res = resolution_at(level)
        if img.ndim != 4 or img.shape[1:] != (res, res, self.channels):
            raise ValueError(f"Discriminator at level {level} expects images [N, {res}, {res}, "
                             f"{self.channels}]; got {img.shape}.")
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        from_rgb = [Conv2d(ch(resolution_at(i)), 1, activation="lrelu", name=f"fromrgb{resolution_at(i)}")
                    for i in range(levels)]
        img = img.astype(self.dtype)
        if self.is_initializing():  # create every fromRGB (their outputs are unused)
            for i in range(levels):
                from_rgb[i](downsample(img, max(res // resolution_at(i), 1)) if i <= level
                            else upsample(img, resolution_at(i) // res))
        x = from_rgb[level](img)
        for i in range(level, 0, -1):
            r = resolution_at(i)
            x = Conv2d(ch(r), 3, activation="lrelu", name=f"b{r}_conv0")(x)
            x = Conv2d(ch(r // 2), 3, activation="lrelu", name=f"b{r}_conv1")(x)
            x = downsample(x)
            if i == level:
                low = from_rgb[level - 1](downsample(img))
                x = low + (x - low) * jnp.asarray(alpha, x.dtype)
        if self.is_initializing() and level < levels - 1:
            # Blocks above `level` must exist too: run them once on a dummy input.
            y = jnp.zeros((img.shape[0], self.resolution, self.resolution, ch(self.resolution)), self.dtype)
            for i in range(levels - 1, level, -1):
                r = resolution_at(i)
                y = Conv2d(ch(r), 3, activation="lrelu", name=f"b{r}_conv0")(y)
                y = downsample(Conv2d(ch(r // 2), 3, activation="lrelu", name=f"b{r}_conv1")(y))
        if self.mbstd_group_size and self.mbstd_num_channels > 0:
            x = misc.minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = Conv2d(ch(4), 3, activation="lrelu", name="b4_conv")(x)
        x = FullyConnected(ch(4), activation="lrelu", name="b4_fc")(x.reshape(x.shape[0], -1))
        return FullyConnected(1, name="b4_out")(x)[:, 0].astype(jnp.float32)
