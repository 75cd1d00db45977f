"""Fused bias + activation + gain + clamp: StyleGAN2-ADA `bias_act` semantics in pure JAX.

Reimplements the math of NVlabs/stylegan2-ada-pytorch `torch_utils/ops/bias_act.py` (its
`_bias_act_ref`): y = clamp(act(x + b) * gain, -clamp, clamp). The bias runs along the channel
axis, which is the last axis in our NHWC layout. XLA fuses the elementwise chain on its own, so
this plain version is also the fast one.
"""

import dataclasses
from collections.abc import Callable
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ActivationSpec", "ACTIVATIONS", "bias_act"]


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    """An activation: func(x, alpha) and StyleGAN2's default alpha and gain for it."""

    func: Callable[[jax.Array, float], jax.Array]
    def_alpha: float
    def_gain: float


# Defaults as in StyleGAN2: relu/lrelu/swish get gain sqrt(2) so He-initialised layers keep unit
# variance; lrelu's slope is 0.2.
ACTIVATIONS: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, alpha: x, 0.0, 1.0),
    # where(x > 0) (not jax.nn.relu) so the gradient at exactly 0 is 0, as torch's relu gives.
    "relu": ActivationSpec(lambda x, alpha: jnp.where(x > 0, x, jnp.zeros_like(x)), 0.0, float(np.sqrt(2))),
    # Gradient at exactly 0 is alpha, as torch's leaky_relu gives.
    "lrelu": ActivationSpec(lambda x, alpha: jnp.where(x > 0, x, x * alpha), 0.2, float(np.sqrt(2))),
    "tanh": ActivationSpec(lambda x, alpha: jnp.tanh(x), 0.0, 1.0),
    "sigmoid": ActivationSpec(lambda x, alpha: jax.nn.sigmoid(x), 0.0, 1.0),
    "elu": ActivationSpec(lambda x, alpha: jax.nn.elu(x), 0.0, 1.0),
    "selu": ActivationSpec(lambda x, alpha: jax.nn.selu(x), 0.0, 1.0),
    "softplus": ActivationSpec(lambda x, alpha: jax.nn.softplus(x), 0.0, 1.0),
    "swish": ActivationSpec(lambda x, alpha: jax.nn.sigmoid(x) * x, 0.0, float(np.sqrt(2))),
}


def bias_act(
    x: jax.Array,
    b: Union[jax.Array, None] = None,
    act: str = "linear",
    alpha: Union[float, None] = None,
    gain: Union[float, None] = None,
    clamp: Union[float, None] = None,
    axis: int = -1,
) -> jax.Array:
    """Return clamp(act(x + b) * gain) for x [..., C] and b [C] along `axis`; same shape and dtype as x.

    alpha/gain default to the activation's StyleGAN2 values; clamp=None (or < 0) disables clamping.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown act={act!r}; expected one of {sorted(ACTIVATIONS)}.")
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)

    if b is not None:
        axis = axis % x.ndim
        if b.ndim != 1 or b.shape[0] != x.shape[axis]:
            raise ValueError(
                f"bias_act: bias must be 1-D with {x.shape[axis]} entries (x axis {axis} of shape {x.shape}); "
                f"got shape {b.shape}."
            )
        shape = [1] * x.ndim
        shape[axis] = -1
        x = x + b.astype(x.dtype).reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * jnp.asarray(gain, x.dtype)
    # Clamp comes after the gain: StyleGAN2 uses it to keep fp16 activations within +-256.
    if clamp >= 0:
        x = jnp.clip(x, -clamp, clamp)
    return x
