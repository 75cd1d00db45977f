"""Shared Flax layer library: normalisation, conv blocks and model-application helpers.

Every model in `jaxmedgan.models` builds from these pieces so that a normalisation choice
(and its differential-privacy implications) is made in one place.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmedgan.ops import upfirdn2d

def compute_dtype(config: Any) -> Any:
    """The activation/compute dtype named by `config.train.dtype` (parameters stay float32)."""
    name = config.train.get("dtype", "float32")
    table = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if name not in table:
        raise ValueError(f"config.train.dtype must be one of {sorted(table)}, got {name!r}.")
    return table[name]


# Normalisation layers that mix statistics across examples of a batch. Per-example gradient
# clipping (DP-SGD) is meaningless with them, so privacy code refuses these by name.
BATCH_MIXING_NORMS = ("batch",)
NORMS = ("none", "batch", "instance", "group", "layer")


def make_norm(kind: str, *, train: bool, groups: int = 8, name: str | None = None) -> Callable[[jax.Array], jax.Array]:
    """Returns a normalisation layer over NHWC activations: one of `NORMS`."""
    if kind == "none":
        return lambda x: x
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
    if kind == "instance":
        # GroupNorm with one channel per group normalises each example's channel over H, W.
        return nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5, name=name)
    if kind == "group":
        return _GroupNormAuto(groups=groups, name=name)
    if kind == "layer":
        return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, epsilon=1e-5, name=name)
    raise ValueError(f"Unknown norm {kind!r}; expected one of {NORMS}.")


class _GroupNormAuto(nn.Module):
    """GroupNorm with `groups` groups, or fewer when the channel count is not divisible."""

    groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        groups = self.groups
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(num_groups=groups, epsilon=1e-5)(x)


class ConvBlock(nn.Module):
    """Conv (or transposed conv) -> norm -> activation, NHWC.

    Attributes are the usual DCGAN knobs; `transpose=True` with stride 2 doubles H and W, by
    `upsample` (one of UPSAMPLES): 'transpose' a strided transposed conv (DCGAN; its uneven kernel
    overlap leaves checkerboard artefacts), 'nearest' nearest-neighbour resize then a stride-1 conv
    (Odena et al. 2016, "Deconvolution and checkerboard artifacts"), 'fir' zero insertion and the
    [1,3,3,1] FIR low-pass (StyleGAN2's up-sampler, `ops.upfirdn2d`) then a stride-1 conv. The
    resize modes use a 3x3 kernel when `kernel_size` is even (4, DCGAN's), so the conv is centred.
    """

    features: int
    kernel_size: int = 4
    strides: int = 2
    transpose: bool = False
    norm: str = "none"
    activation: str = "lrelu"  # lrelu (slope 0.2) | relu | tanh | linear
    use_bias: bool | None = None  # default: no bias when a norm follows (it would be cancelled)
    upsample: str = "transpose"  # transpose=True only: one of UPSAMPLES
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        use_bias = self.norm == "none" if self.use_bias is None else self.use_bias
        k = (self.kernel_size, self.kernel_size)
        s = (self.strides, self.strides)
        init = nn.initializers.normal(0.02)  # DCGAN's N(0, 0.02) initialisation
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"Unknown upsample {self.upsample!r}; expected one of {UPSAMPLES}.")
        if self.transpose and self.upsample != "transpose":
            x = upsample(x, self.strides, self.upsample)
            k = (self.kernel_size - 1,) * 2 if self.kernel_size % 2 == 0 else k
            x = nn.Conv(self.features, k, 1, padding="SAME", use_bias=use_bias, kernel_init=init,
                        dtype=self.dtype)(x)
        elif self.transpose:
            x = nn.ConvTranspose(self.features, k, s, padding="SAME", use_bias=use_bias,
                                 kernel_init=init, dtype=self.dtype)(x)
        else:
            x = nn.Conv(self.features, k, s, padding="SAME", use_bias=use_bias,
                        kernel_init=init, dtype=self.dtype)(x)
        x = make_norm(self.norm, train=train)(x)
        return activation(self.activation)(x)


UPSAMPLES = ("transpose", "nearest", "fir")


def upsample(x: jax.Array, factor: int, mode: str) -> jax.Array:
    """x [N,H,W,C] -> [N,H*factor,W*factor,C] by 'nearest' (pixel repetition) or 'fir' (zero
    insertion + separable [1,3,3,1] low-pass, gain keeping a constant image's level)."""
    if factor == 1:
        return x
    if mode == "nearest":
        return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
    if mode == "fir":
        return upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]), up=factor)
    raise ValueError(f"upsample mode {mode!r} must be 'nearest' or 'fir'.")


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation function called `name`."""
    table = {
        "lrelu": lambda x: nn.leaky_relu(x, 0.2),
        "relu": nn.relu,
        "tanh": jnp.tanh,
        "linear": lambda x: x,
    }
    if name not in table:
        raise ValueError(f"Unknown activation {name!r}; expected one of {sorted(table)}.")
    return table[name]


def apply(model: nn.Module, variables: Mapping[str, Any], *args, train: bool, **kwargs):
    """Applies `model`, returning `(outputs, new_batch_stats)`.

    `variables` holds `params` and, for models with BatchNorm, `batch_stats`; in training mode the
    updated running statistics are returned (otherwise the input ones, unchanged).
    """
    stats = variables.get("batch_stats")
    if train and stats:
        out, updates = model.apply(variables, *args, train=train, mutable=["batch_stats"], **kwargs)
        return out, updates["batch_stats"]
    return model.apply(variables, *args, train=train, **kwargs), stats if stats is not None else {}


def modules_using(params_or_vars: Mapping[str, Any], collection: str = "batch_stats") -> list[str]:
    """Lists the module paths that own variables in `collection` (e.g. BatchNorm layers)."""
    tree = params_or_vars.get(collection, {})
    paths = []

    def walk(node, prefix):
        if isinstance(node, Mapping):
            if any(not isinstance(v, Mapping) for v in node.values()):
                paths.append(prefix or "<root>")
                return
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else k)

    walk(tree, "")
    return paths
