"""Conditional StyleGAN2(-ADA) generator and discriminator, Flax linen, NHWC, HWIO weights.

Reimplements the architecture of NVlabs/stylegan2-ada-pytorch `training/networks.py` on the
pure-JAX reference ops in `jaxmedgan.ops`:

* Generator = MappingNetwork (z normalised by its 2nd moment; for c_dim > 0 a label embedding,
  also normalised, concatenated; `mapping_layers` FC layers with lr multiplier 0.01; a tracked
  `w_avg` in the non-param collection 'stats' for truncation) + SynthesisNetwork (learned 4x4
  const; per resolution two modulated 3x3 convs, the first upsampling x2, with per-pixel noise and
  bias + lrelu; skip architecture: a ToRGB (modulated 1x1, no demodulation) per resolution whose
  outputs are summed with FIR-upsampled skips).
* Discriminator (resnet architecture): FromRGB at the top resolution, one block per resolution
  (two 3x3 convs, the second downsampling, plus a 1x1 downsampling residual; both branches scaled
  by sqrt(0.5)), epilogue at 4x4 with minibatch stddev, conv, fc and output; for c_dim > 0 the
  output is projected onto a label embedding cmap computed by its own mapping network.

Every conv/FC weight is stored N(0, 1/lr_mul^2) and scaled at run time by lr_mul/sqrt(fan_in)
(equalised learning rate); channels at resolution r are min(channel_base // r, channel_max).

Parameter names follow the PyTorch module names (mapping/fc0, synthesis/b8/conv0/affine, b4/fc,
...), so per-layer counts can be read against StyleGAN2-ADA's printed network summaries.

DP note: minibatch stddev with group size > 1 mixes the examples of a group, so D's output for one
example depends on the others; `jaxmedgan.privacy.checks` refuses `model.mbstd_group_size > 1`
under DP. Group size 1 (a constant channel) or 0 (layer off) keeps D per-example.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmedgan.ops import bias_act as bias_act_lib
from jaxmedgan.ops import misc
from jaxmedgan.ops import modulated_conv
from jaxmedgan.ops import patches
from jaxmedgan.ops import upfirdn2d

ARCHITECTURES = ("orig", "skip", "resnet")
NOISE_MODES = ("random", "const", "none")
RESAMPLE_TAPS = (1, 3, 3, 1)  # StyleGAN2's FIR filter for every up/downsampling
SQRT_HALF = float(np.sqrt(0.5))

# Small networks for tests and CPU smoke runs (keyword arguments of Generator / Discriminator).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16),
    "small": dict(z_dim=64, w_dim=64, mapping_layers=2, channel_base=2048, channel_max=64),
    # StyleGAN2-ADA's 'auto' config below 512 px (fmaps 0.5, map 2) and its 'stylegan2' config.
    "paper256": dict(z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384, channel_max=512),
    "stylegan2": dict(z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768, channel_max=512),
}


def check_resolution(resolution: int) -> int:
    """Returns log2(resolution); raises unless it is a power of two in [8, 1024] px."""
    log2 = math.log2(resolution) if resolution > 0 else -1.0
    if log2 != int(log2) or not 8 <= resolution <= 1024:
        raise ValueError(f"StyleGAN2 img_resolution must be a power of two in [8, 1024] px, got {resolution}.")
    return int(log2)


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: min(channel_base // resolution, channel_max), as StyleGAN2-ADA."""
    return min(channel_base // resolution, channel_max)


def synthesis_resolutions(img_resolution: int) -> list[int]:
    """Block resolutions of the synthesis network: 4, 8, ..., img_resolution."""
    return [2**i for i in range(2, check_resolution(img_resolution) + 1)]


def num_ws(img_resolution: int, architecture: str = "skip") -> int:
    """Number of w vectors the synthesis network consumes (2 per block - 1, + the last ToRGB)."""
    _check_architecture(architecture)
    n = 2 * len(synthesis_resolutions(img_resolution)) - 1  # the 4x4 block has one conv
    return n + 1  # the last block's ToRGB (skip blocks' ToRGBs share the next block's first w)


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}.")


def _resample_filter() -> np.ndarray:
    return upfirdn2d.setup_filter(RESAMPLE_TAPS)


def normalize_2nd_moment(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) along `axis` (StyleGAN's pixel norm of z and the label embedding)."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


def _labels_to_onehot(c: jax.Array, c_dim: int) -> jax.Array:
    """Int labels [N] -> one-hot f32 [N, c_dim]; float [N, c_dim] label vectors pass through."""
    c = jnp.asarray(c)
    if c.ndim == 1 and jnp.issubdtype(c.dtype, jnp.integer):
        return jax.nn.one_hot(c, c_dim, dtype=jnp.float32)
    if c.ndim == 2 and c.shape[1] == c_dim:
        return c.astype(jnp.float32)
    raise ValueError(f"labels must be int [N] or float [N, {c_dim}] (c_dim={c_dim}); got {c.dtype} {c.shape}.")


# ----------------------------------------------------------------------------------------------
# Equalised-lr layers.


class FullyConnected(nn.Module):
    """Dense x [..., in] -> [..., features] with equalised lr: w ~ N(0, 1/lr^2) scaled by lr/sqrt(in)."""

    features: int
    use_bias: bool = True
    activation: str = "linear"
    lr_multiplier: float = 1.0  # 0.01 in the mapping networks: 100x smaller effective step
    bias_init: float = 0.0  # the affine (style) layers start at 1: styles ~ 1 at init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        lr = self.lr_multiplier
        w = self.param("weight", lambda k, s: jax.random.normal(k, s) / lr, (fan_in, self.features))
        x = self.linear(x, w)
        b = None
        if self.use_bias:
            b = self.param("bias", lambda k, s: jnp.full(s, self.bias_init, jnp.float32), (self.features,))
            b = b * lr
        return bias_act_lib.bias_act(x, b, act=self.activation)

    def linear(self, x: jax.Array, weight: jax.Array) -> jax.Array:
        """x [..., in] @ (weight * equalised-lr gain) -> [..., features], before bias and activation."""
        return x @ (weight * misc.weight_gain(x.shape[-1], self.lr_multiplier)).astype(x.dtype)

    def linear_factors(self, x: jax.Array) -> tuple[jax.Array, float, float]:
        """Ghost clipping's view of `linear` (privacy.ghost.LinearLayer): (x as [N, T, in], weight
        gain, bias gain) for x [N, ..., in]."""
        return x.reshape(x.shape[0], -1, x.shape[-1]), misc.weight_gain(x.shape[-1], self.lr_multiplier), \
            float(self.lr_multiplier)


class Conv2d(nn.Module):
    """Conv x [N,H,W,Cin] -> [N,H*up/down,W*up/down,features], equalised lr, FIR up/down, bias+act."""

    features: int
    kernel_size: int
    use_bias: bool = True
    activation: str = "linear"
    up: int = 1
    down: int = 1
    conv_clamp: float | None = None  # clamp of the activations (256 in StyleGAN2-ADA's fp16 layers)

    @nn.compact
    def __call__(self, x: jax.Array, gain: float = 1.0) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        w = self.param("weight", nn.initializers.normal(1.0), (k, k, cin, self.features))
        x = self.linear(x, w)
        b = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        act_gain = bias_act_lib.ACTIVATIONS[self.activation].def_gain * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act_lib.bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)

    def linear(self, x: jax.Array, weight: jax.Array) -> jax.Array:
        """x [N,H,W,Cin] conv (FIR up/down) weight * equalised-lr gain -> [N,H',W',features], no bias."""
        k = self.kernel_size
        w = weight * misc.weight_gain(k * k * x.shape[-1])
        f = _resample_filter() if (self.up > 1 or self.down > 1) else None
        return modulated_conv.conv2d_resample(x, w.astype(x.dtype), f=f, up=self.up, down=self.down,
                                              padding=k // 2, flip_weight=(self.up == 1))

    def linear_factors(self, x: jax.Array) -> tuple[jax.Array, float, float]:
        """Ghost clipping's view of `linear` (privacy.ghost.LinearLayer): (unfolded conv input
        [N, H'W', k*k*Cin] in the weight's HWIO order, weight gain, bias gain 1) for x [N,H,W,Cin].
        Down-sampling convs read the FIR low-passed input with stride `down`; up-sampling ones
        (G only) are not covered."""
        if self.up != 1:
            raise ValueError(f"Conv2d(up={self.up}): ghost clipping covers down-sampling and plain convs only; "
                             "use privacy.clip_method='vmap'.")
        k = self.kernel_size
        f = _resample_filter() if self.down > 1 else None
        y, (x0, x1, y0, y1) = modulated_conv.conv_input(x, f, self.down, k // 2)
        a = patches.unfold(y, (k, k), (self.down, self.down), ((y0, y1), (x0, x1)))
        return a, misc.weight_gain(k * k * x.shape[-1]), 1.0


# ----------------------------------------------------------------------------------------------
# Mapping network.


class MappingNetwork(nn.Module):
    """(z [N, z_dim], labels [N] int or [N, c_dim]) -> w [N, w_dim], or [N, num_ws, w_dim] if num_ws."""

    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int | None  # None: return [N, w_dim] (D's label mapping)
    num_layers: int = 8
    embed_features: int | None = None  # label embedding width (default w_dim)
    layer_features: int | None = None  # hidden width (default w_dim)
    activation: str = "lrelu"
    lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.995  # EMA decay of the tracked mean w; None: do not track

    @nn.compact
    def __call__(self, z: jax.Array | None, c: jax.Array | None, truncation_psi: float | jax.Array = 1.0,
                 truncation_cutoff: int | None = None, update_w_avg: bool = False) -> jax.Array:
        embed = (self.w_dim if self.embed_features is None else self.embed_features) if self.c_dim else 0
        hidden = self.w_dim if self.layer_features is None else self.layer_features
        features = [self.z_dim + embed] + [hidden] * (self.num_layers - 1) + [self.w_dim]
        if self.num_layers < 1:
            raise ValueError(f"MappingNetwork needs num_layers >= 1, got {self.num_layers}.")
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must be [N, {self.z_dim}] (z_dim), got {None if z is None else z.shape}.")
            x = normalize_2nd_moment(z.astype(jnp.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"This network is class-conditional (c_dim={self.c_dim}): pass labels.")
            y = FullyConnected(embed, name="embed")(_labels_to_onehot(c, self.c_dim))
            y = normalize_2nd_moment(y)
            x = y if x is None else jnp.concatenate([x, y], axis=1)
        if x is None:
            raise ValueError("MappingNetwork with z_dim = 0 and c_dim = 0 has no input.")
        for i in range(self.num_layers):
            x = FullyConnected(features[i + 1], activation=self.activation,
                               lr_multiplier=self.lr_multiplier, name=f"fc{i}")(x)

        w_avg = None
        if self.w_avg_beta is not None:
            w_avg = self.variable("stats", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
            if update_w_avg and not self.is_initializing():
                mean = jnp.mean(jax.lax.stop_gradient(x), axis=0)
                w_avg.value = mean + self.w_avg_beta * (w_avg.value - mean)  # lerp(mean, w_avg, beta)
        if self.num_ws is not None:
            x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
        if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
            if w_avg is None:
                raise ValueError("Truncation needs the tracked w_avg (w_avg_beta is None).")
            truncated = w_avg.value + truncation_psi * (x - w_avg.value)
            if self.num_ws is None or truncation_cutoff is None:
                x = truncated
            else:
                x = jnp.concatenate([truncated[:, :truncation_cutoff], x[:, truncation_cutoff:]], axis=1)
        return x


# ----------------------------------------------------------------------------------------------
# Synthesis network.


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling x2) + noise + bias + lrelu: [N,H,W,Cin] -> [N,R,R,features]."""

    features: int
    resolution: int  # output resolution (px)
    kernel_size: int = 3
    up: int = 1
    use_noise: bool = True
    activation: str = "lrelu"
    conv_clamp: float | None = None
    fused_modconv: bool = False  # same math; False (batch-shared conv) is faster under XLA

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, noise: jax.Array | None = None, gain: float = 1.0) -> jax.Array:
        """noise: a unit-normal plane [N or 1, R, R, 1] (None: no noise), scaled by the learned strength."""
        k, cin = self.kernel_size, x.shape[-1]
        styles = FullyConnected(cin, bias_init=1.0, name="affine")(w)
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, cin, self.features))
        if self.use_noise:
            strength = self.param("noise_strength", nn.initializers.zeros, ())
            noise = None if noise is None else noise * strength
        else:
            noise = None
        f = _resample_filter() if self.up > 1 else None
        x = modulated_conv.modulated_conv2d(
            x, weight, styles.astype(jnp.float32), noise=None if noise is None else noise.astype(x.dtype),
            up=self.up, padding=k // 2, resample_filter=f, flip_weight=(self.up == 1),
            fused_modconv=self.fused_modconv)
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        act_gain = bias_act_lib.ACTIVATIONS[self.activation].def_gain * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act_lib.bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation + bias: [N,H,W,Cin] -> [N,H,W,channels]."""

    channels: int
    kernel_size: int = 1
    conv_clamp: float | None = None
    fused_modconv: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        # Equalised lr is applied to the styles here (no demodulation to absorb the weight scale).
        styles = FullyConnected(cin, bias_init=1.0, name="affine")(w) * misc.weight_gain(k * k * cin)
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, cin, self.channels))
        x = modulated_conv.modulated_conv2d(x, weight, styles, demodulate=False,
                                            fused_modconv=self.fused_modconv)
        b = self.param("bias", nn.initializers.zeros, (self.channels,))
        return bias_act_lib.bias_act(x, b, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (x [N,R/2,R/2,Cin] | None, img | None, ws [N,k,w_dim]) -> (x [N,R,R,C], img [N,R,R,img_ch])."""

    in_channels: int  # 0 for the first (4x4, const input) block
    out_channels: int
    resolution: int
    img_channels: int
    is_last: bool
    architecture: str = "skip"
    use_noise: bool = True
    conv_clamp: float | None = None
    fused_modconv: bool = False
    dtype: Any = jnp.float32

    @property
    def num_conv(self) -> int:
        return 1 if self.in_channels == 0 else 2

    @property
    def num_torgb(self) -> int:
        return 1 if (self.is_last or self.architecture == "skip") else 0

    @nn.compact
    def __call__(self, x, img, ws: jax.Array, noise: Sequence[jax.Array | None] = (None, None)):
        """noise: one unit-normal plane [N or 1, R, R, 1] (or None) per conv layer of the block."""
        layer = dict(resolution=self.resolution, use_noise=self.use_noise, conv_clamp=self.conv_clamp,
                     fused_modconv=self.fused_modconv)
        n = ws.shape[0]
        i = 0
        if self.in_channels == 0:
            const = self.param("const", nn.initializers.normal(1.0),
                               (self.resolution, self.resolution, self.out_channels))
            x = jnp.broadcast_to(const.astype(self.dtype)[None], (n, *const.shape))
            x = SynthesisLayer(self.out_channels, name="conv1", **layer)(x, ws[:, i], noise[0])
            i += 1
        elif self.architecture == "resnet":
            x = x.astype(self.dtype)
            y = Conv2d(self.out_channels, 1, use_bias=False, up=2, name="skip")(x, gain=SQRT_HALF)
            x = SynthesisLayer(self.out_channels, up=2, name="conv0", **layer)(x, ws[:, i], noise[0])
            x = SynthesisLayer(self.out_channels, name="conv1", **layer)(x, ws[:, i + 1], noise[1],
                                                                          gain=SQRT_HALF)
            x = y + x
            i += 2
        else:
            x = x.astype(self.dtype)
            x = SynthesisLayer(self.out_channels, up=2, name="conv0", **layer)(x, ws[:, i], noise[0])
            x = SynthesisLayer(self.out_channels, name="conv1", **layer)(x, ws[:, i + 1], noise[1])
            i += 2
        if img is not None:
            img = upfirdn2d.upsample2d(img, _resample_filter())
        if self.is_last or self.architecture == "skip":
            y = ToRGB(self.img_channels, conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
                      name="torgb")(x, ws[:, i]).astype(jnp.float32)  # the image sum stays float32
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images f32 [N, R, R, img_channels] (about [-1, 1] once trained)."""

    w_dim: int
    img_resolution: int
    img_channels: int
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    architecture: str = "skip"
    use_noise: bool = True
    conv_clamp: float | None = None
    fused_modconv: bool = False
    dtype: Any = jnp.float32  # activation dtype; parameters and the RGB sum stay float32

    @property
    def num_ws(self) -> int:
        return num_ws(self.img_resolution, self.architecture)

    @nn.compact
    def __call__(self, ws: jax.Array, noise_mode: str = "random") -> jax.Array:
        _check_architecture(self.architecture)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, num_ws={self.num_ws}, w_dim={self.w_dim}], got {ws.shape}.")
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        planes = self._noise_planes(ws.shape[0], noise_mode)
        x = img = None
        w_idx = 0
        for res in synthesis_resolutions(self.img_resolution):
            block = SynthesisBlock(
                in_channels=ch(res // 2) if res > 4 else 0, out_channels=ch(res), resolution=res,
                img_channels=self.img_channels, is_last=res == self.img_resolution,
                architecture=self.architecture, use_noise=self.use_noise, conv_clamp=self.conv_clamp,
                fused_modconv=self.fused_modconv, dtype=self.dtype, name=f"b{res}")
            k = block.num_conv + block.num_torgb
            x, img = block(x, img, ws[:, w_idx:w_idx + k].astype(jnp.float32), planes[res])
            w_idx += block.num_conv
        return img

    def _noise_planes(self, n: int, noise_mode: str) -> dict[int, list[jax.Array | None]]:
        """Unit-normal noise planes per block resolution: [N, r, r, 1] ('random') or [1, r, r, 1] ('const').

        All planes come from one normal draw (one PRNG computation compiles much faster than one per
        layer). 'const' uses a fixed key: StyleGAN2's `noise_const` buffers, without storing them.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        resolutions = synthesis_resolutions(self.img_resolution)
        if not self.use_noise or noise_mode == "none":
            return {r: [None, None] for r in resolutions}
        sizes = [r for r in resolutions for _ in range(1 if r == 4 else 2)]
        if noise_mode == "random":
            key, rows = self.make_rng("noise"), n
        else:
            key, rows = jax.random.PRNGKey(0x5EED), 1
        flat = jax.random.normal(key, (rows, sum(r * r for r in sizes)))
        planes: dict[int, list[jax.Array | None]] = {r: [] for r in resolutions}
        offset = 0
        for r in sizes:
            planes[r].append(flat[:, offset:offset + r * r].reshape(rows, r, r, 1))
            offset += r * r
        return planes


class Generator(nn.Module):
    """(z [N, z_dim], labels [N] int | None) -> images f32 [N, R, R, img_channels]."""

    z_dim: int = 512
    c_dim: int = 0  # number of classes; 0: unconditional
    w_dim: int = 512
    img_resolution: int = 256
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995  # EMA decay of the tracked mean w (for truncation)
    channel_base: int = 32768
    channel_max: int = 512
    architecture: str = "skip"
    use_noise: bool = True
    conv_clamp: float | None = None
    fused_modconv: bool = False
    dtype: Any = jnp.float32

    @property
    def num_ws(self) -> int:
        return num_ws(self.img_resolution, self.architecture)

    def setup(self):
        self.synthesis = SynthesisNetwork(
            w_dim=self.w_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
            channel_base=self.channel_base, channel_max=self.channel_max, architecture=self.architecture,
            use_noise=self.use_noise, conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
            dtype=self.dtype)
        self.mapping = MappingNetwork(
            z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
            num_layers=self.mapping_layers, lr_multiplier=self.mapping_lr_multiplier,
            w_avg_beta=self.w_avg_beta)

    def __call__(self, z: jax.Array, c: jax.Array | None = None, truncation_psi: float | jax.Array = 1.0,
                 truncation_cutoff: int | None = None, noise_mode: str = "random",
                 update_w_avg: bool = False) -> jax.Array:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_w_avg)
        return self.synthesis(ws, noise_mode)

    def map(self, z: jax.Array, c: jax.Array | None = None, truncation_psi: float | jax.Array = 1.0,
            truncation_cutoff: int | None = None, update_w_avg: bool = False) -> jax.Array:
        """ws [N, num_ws, w_dim] for z [N, z_dim] and labels."""
        return self.mapping(z, c, truncation_psi, truncation_cutoff, update_w_avg)

    def synthesize(self, ws: jax.Array, noise_mode: str = "random") -> jax.Array:
        """Images [N, R, R, img_channels] for ws [N, num_ws, w_dim]."""
        return self.synthesis(ws, noise_mode)


# ----------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
    """One resolution R -> R/2: (x [N,R,R,tmp] | None, img [N,R,R,img_ch]) -> (x [N,R/2,R/2,out], img | None)."""

    in_channels: int  # 0 for the first (top-resolution) block, which reads the image
    tmp_channels: int
    out_channels: int
    architecture: str = "resnet"
    activation: str = "lrelu"
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, x, img):
        conv = dict(activation=self.activation, conv_clamp=self.conv_clamp)
        if self.in_channels == 0 or self.architecture == "skip":
            y = Conv2d(self.tmp_channels, 1, name="fromrgb", **conv)(img)
            x = y if x is None else x + y
            img = upfirdn2d.downsample2d(img, _resample_filter()) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = Conv2d(self.out_channels, 1, use_bias=False, down=2, name="skip")(x, gain=SQRT_HALF)
            x = Conv2d(self.tmp_channels, 3, name="conv0", **conv)(x)
            x = Conv2d(self.out_channels, 3, down=2, name="conv1", **conv)(x, gain=SQRT_HALF)
            x = y + x
        else:
            x = Conv2d(self.tmp_channels, 3, name="conv0", **conv)(x)
            x = Conv2d(self.out_channels, 3, down=2, name="conv1", **conv)(x)
        return x, img


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: (x [N,4,4,C], img, cmap [N,cmap_dim] | None) -> logits [N]."""

    in_channels: int
    cmap_dim: int  # 0: unconditional
    architecture: str = "resnet"
    mbstd_group_size: int | None = 4  # 0: layer off; 1: per example (DP-safe); None: whole batch
    mbstd_num_channels: int = 1
    activation: str = "lrelu"
    conv_clamp: float | None = None

    @nn.compact
    def __call__(self, x, img, cmap):
        conv = dict(activation=self.activation, conv_clamp=self.conv_clamp)
        if self.architecture == "skip":
            x = x + Conv2d(self.in_channels, 1, name="fromrgb", **conv)(img)
        if self.mbstd_num_channels > 0 and self.mbstd_group_size != 0:
            x = misc.minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = Conv2d(self.in_channels, 3, name="conv", **conv)(x)
        x = FullyConnected(self.in_channels, activation=self.activation, name="fc")(x.reshape(x.shape[0], -1))
        x = FullyConnected(self.cmap_dim or 1, name="out")(x)
        if self.cmap_dim > 0:
            # Projection discriminator: <out, cmap> / sqrt(cmap_dim).
            x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1 / np.sqrt(self.cmap_dim))
        return x[:, 0].astype(jnp.float32)


class Discriminator(nn.Module):
    """(images [N, R, R, img_channels], labels [N] int | None) -> logits f32 [N]."""

    c_dim: int = 0
    img_resolution: int = 256
    img_channels: int = 3
    architecture: str = "resnet"
    channel_base: int = 32768
    channel_max: int = 512
    cmap_dim: int | None = None  # label-embedding width (default: channels at 4x4)
    mapping_layers: int = 8  # D's label mapping keeps StyleGAN2-ADA's default depth
    mbstd_group_size: int | None = 4
    mbstd_num_channels: int = 1
    conv_clamp: float | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, img: jax.Array, c: jax.Array | None = None) -> jax.Array:
        _check_architecture(self.architecture)
        log2 = check_resolution(self.img_resolution)
        expected = (self.img_resolution, self.img_resolution, self.img_channels)
        if img.ndim != 4 or img.shape[1:] != expected:
            raise ValueError(f"Discriminator expects images [N, {expected[0]}, {expected[1]}, {expected[2]}] "
                             f"(img_resolution, img_channels), got {img.shape}.")
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        cmap_dim = (ch(4) if self.cmap_dim is None else self.cmap_dim) if self.c_dim else 0
        x, img = None, img.astype(self.dtype)
        for res in [2**i for i in range(log2, 2, -1)]:
            x, img = DiscriminatorBlock(
                in_channels=ch(res) if res < self.img_resolution else 0, tmp_channels=ch(res),
                out_channels=ch(res // 2), architecture=self.architecture, conv_clamp=self.conv_clamp,
                name=f"b{res}")(x, img)
        cmap = None
        if self.c_dim:
            cmap = MappingNetwork(z_dim=0, c_dim=self.c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                  num_layers=self.mapping_layers, name="mapping")(None, c)
        return DiscriminatorEpilogue(
            in_channels=ch(4), cmap_dim=cmap_dim, architecture=self.architecture,
            mbstd_group_size=self.mbstd_group_size, mbstd_num_channels=self.mbstd_num_channels,
            conv_clamp=self.conv_clamp, name="b4")(x, img, cmap)


def make_networks(img_resolution: int, img_channels: int, c_dim: int = 0, preset: str = "tiny",
                  g_overrides: dict | None = None, d_overrides: dict | None = None) -> tuple[Generator, Discriminator]:
    """(Generator, Discriminator) from a named preset in PRESETS plus per-network overrides."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown StyleGAN2 preset {preset!r}; expected one of {sorted(PRESETS)}.")
    p = dict(PRESETS[preset])
    g = Generator(z_dim=p["z_dim"], w_dim=p["w_dim"], c_dim=c_dim, img_resolution=img_resolution,
                  img_channels=img_channels, mapping_layers=p["mapping_layers"],
                  channel_base=p["channel_base"], channel_max=p["channel_max"], **(g_overrides or {}))
    d = Discriminator(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                      channel_base=p["channel_base"], channel_max=p["channel_max"], **(d_overrides or {}))
    return g, d


def count_params(tree: Any) -> int:
    """Total number of scalars in a (possibly abstract) parameter tree."""
    return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def abstract_variables(module: nn.Module, *args: Sequence[Any]) -> Any:
    """Shapes of `module`'s variables (jax.eval_shape of init: no compute, any size)."""
    rngs = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}
    return jax.eval_shape(lambda: module.init(rngs, *args))
