"""Small StyleGAN2-ADA ops: minibatch stddev, noise injection, equalised learning-rate helpers.

Math follows NVlabs/stylegan2-ada-pytorch `training/networks.py` (MinibatchStdLayer,
SynthesisLayer's noise, FullyConnectedLayer/Conv2dLayer's weight_gain), in NHWC.
"""

from collections.abc import Sequence
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["minibatch_stddev", "noise_injection", "weight_gain", "fan_in"]


def minibatch_stddev(x: jax.Array, group_size: Union[int, None], num_channels: int = 1) -> jax.Array:
    """Append per-group feature stddev: x [N,H,W,C] -> [N,H,W,C+num_channels], x.dtype.

    G = min(group_size, N) (None means N). As in StyleGAN2, example i joins group i % (N // G)
    (strided, not contiguous), channels split into num_channels contiguous blocks of C//F, and each
    new channel is the mean over its block and H, W of sqrt(var over the group + 1e-8). It couples
    examples within a group, so it must not be used under per-example DP unless group_size=1, where
    it is the constant 1e-4 and carries no cross-example information.
    """
    if x.ndim != 4:
        raise ValueError(f"minibatch_stddev: x must be NHWC [N,H,W,C]; got shape {x.shape}.")
    n, h, w, c = x.shape
    g = n if group_size is None else min(int(group_size), n)
    f = int(num_channels)
    if g < 1 or f < 1:
        raise ValueError(f"minibatch_stddev: group_size and num_channels must be >= 1; got {group_size}, {num_channels}.")
    if n % g:
        raise ValueError(f"minibatch_stddev: batch size {n} must be divisible by the group size {g}.")
    if c % f:
        raise ValueError(f"minibatch_stddev: {c} channels must be divisible by num_channels={f}.")

    y = x.reshape(g, n // g, h, w, f, c // f)  # [G, n, H, W, F, c]
    y = y - jnp.mean(y, axis=0)  # subtract the group mean
    y = jnp.mean(jnp.square(y), axis=0)  # [n, H, W, F, c] variance over the group
    y = jnp.sqrt(y + 1e-8)  # stddev; the epsilon keeps the gradient finite at 0
    y = jnp.mean(y, axis=(1, 2, 4))  # [n, F] average over pixels and channels
    y = jnp.tile(y, (g, 1))  # [N, F]: row i is group i % n, matching the reshape above
    y = jnp.broadcast_to(y[:, None, None, :], (n, h, w, f)).astype(x.dtype)
    return jnp.concatenate([x, y], axis=-1)


def noise_injection(
    x: jax.Array,
    noise_strength: Union[jax.Array, float],
    key: Union[jax.Array, None] = None,
    noise: Union[jax.Array, None] = None,
) -> jax.Array:
    """Return x [N,H,W,C] + noise * noise_strength; noise [N,H,W,1] is drawn from `key` unless given.

    As in StyleGAN2 the noise is one standard-normal plane per example, shared across channels;
    pass exactly one of `key` (fresh noise) or `noise` (e.g. a fixed buffer, broadcastable to x).
    """
    if x.ndim != 4:
        raise ValueError(f"noise_injection: x must be NHWC [N,H,W,C]; got shape {x.shape}.")
    if (key is None) == (noise is None):
        raise ValueError("noise_injection: pass exactly one of key= (draw fresh noise) or noise= (use this noise).")
    if noise is None:
        n, h, w, _ = x.shape
        noise = jax.random.normal(key, (n, h, w, 1), dtype=x.dtype)
    return x + noise.astype(x.dtype) * jnp.asarray(noise_strength, x.dtype)


def fan_in(weight_shape: Sequence[int]) -> int:
    """Fan-in of a dense [in, out] or HWIO conv [kh, kw, in, out] weight: prod(shape[:-1])."""
    if len(weight_shape) < 2:
        raise ValueError(f"fan_in: expected a weight shape [..., in, out]; got {tuple(weight_shape)}.")
    return int(np.prod(weight_shape[:-1]))


def weight_gain(fan_in: int, lr_multiplier: float = 1.0) -> float:
    """Equalised-lr runtime weight scale lr_multiplier / sqrt(fan_in) (a Python float)."""
    if fan_in < 1:
        raise ValueError(f"weight_gain: fan_in must be >= 1; got {fan_in}.")
    # Params are stored as N(0, 1/lr_multiplier**2); multiplying by this gain at every call gives
    # He-scaled effective weights and makes Adam's per-parameter step equal across layers.
    return float(lr_multiplier / np.sqrt(fan_in))
