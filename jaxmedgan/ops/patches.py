"""Unfolding (im2col): the patches a convolution reads, so that conv(x, w) = patches @ w.reshape(-1, O).

Used by ghost clipping (privacy/ghost.py), which needs each example's layer inputs as a matrix
a_i [T, K] (T output positions, K = prod(kernel) * C_in in the HWIO kernel's order) to form weight
gradients a_iᵀ g_i and their norms without per-example backward passes. Reference:
`jax.lax.conv_general_dilated_patches` (same patches, channel-major order; tested equal).
"""
from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

Pads = tuple[tuple[int, int], ...]


def output_size(spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...], pads: Pads,
                dilation: tuple[int, ...]) -> tuple[int, ...]:
    """Output positions per spatial axis of a VALID conv over the padded input."""
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    return tuple((s + lo + hi - e) // st + 1 for s, (lo, hi), e, st in zip(spatial, pads, eff, strides))


def unfold(x: jax.Array, kernel: tuple[int, ...], strides: tuple[int, ...], pads: Pads,
           dilation: tuple[int, ...] | None = None) -> jax.Array:
    """x [N, *spatial, C] -> patches [N, T, prod(kernel) * C] (T = prod(output positions)), HWIO order.

    pads: (lo, hi) per spatial axis, applied before the VALID conv (zeros). With every
    kernel % stride == 0 and no dilation, a space-to-depth route reads prod(kernel / stride)
    unstrided slices instead of prod(kernel) strided ones (DCGAN's 4x4 stride-2: ~3x faster on CPU).
    """
    nsp, n, c = len(kernel), x.shape[0], x.shape[-1]
    dilation = (1,) * nsp if dilation is None else tuple(dilation)
    if x.ndim != nsp + 2 or not (len(strides) == len(pads) == len(dilation) == nsp):
        raise ValueError(f"unfold: x {x.shape} must be [N, *spatial ({nsp} axes), C] with kernel {kernel}, "
                         f"strides {strides}, pads {pads}, dilation {dilation} of {nsp} entries each.")
    spatial = x.shape[1:-1]
    out = output_size(spatial, kernel, strides, pads, dilation)
    if any(o < 1 for o in out):
        raise ValueError(f"unfold: kernel {kernel} (dilation {dilation}) does not fit input {spatial} "
                         f"padded by {pads}.")
    x = jnp.pad(x, [(0, 0), *[tuple(p) for p in pads], (0, 0)])
    if all(d == 1 for d in dilation) and all(k % s == 0 for k, s in zip(kernel, strides)):
        return _space_to_depth(x, kernel, strides, out).reshape(n, -1, math.prod(kernel) * c)
    slices = []  # general case: one strided slice per kernel offset
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = (0, *(o * d for o, d in zip(offset, dilation)), 0)
        limit = (n, *(o * d + (m - 1) * s + 1 for o, d, m, s in zip(offset, dilation, out, strides)), c)
        slices.append(jax.lax.slice(x, start, limit, (1, *strides, 1)))
    return jnp.stack(slices, axis=-2).reshape(n, -1, math.prod(kernel) * c)


def _space_to_depth(x: jax.Array, k: tuple[int, ...], strides: tuple[int, ...],
                    out: tuple[int, ...]) -> jax.Array:
    """Padded x [N, *spatial, C] -> patches [N, *out, *k, C] when every k_d % stride_d == 0.

    Kernel offset k_d = stride_d * q + r: view each axis as blocks of `stride` ([m, stride]); a patch
    is then k_d / stride_d whole blocks, so prod(k / stride) unstrided slices.
    """
    nsp, c = len(k), x.shape[-1]
    q = tuple(ki // st for ki, st in zip(k, strides))
    m = tuple(o + qi - 1 for o, qi in zip(out, q))  # blocks used; (o - 1) * st + k = m * st <= padded size
    x = x[(slice(None), *(slice(0, mi * st) for mi, st in zip(m, strides)))]
    x = x.reshape(x.shape[0], *itertools.chain.from_iterable(zip(m, strides)), c)  # [N, m1, s1, m2, s2, .., C]
    slices = []
    for offset in itertools.product(*(range(qi) for qi in q)):
        index = [slice(None)]
        for o, size in zip(offset, out):
            index += [slice(o, o + size), slice(None)]
        slices.append(x[tuple(index)])  # [N, o1, s1, o2, s2, .., C]
    p = jnp.stack(slices, axis=0).reshape(*q, *slices[0].shape)  # [q1, .., N, o1, s1, o2, s2, .., C]
    # -> [N, o1, o2, .., q1, s1, q2, s2, .., C]: kernel index q * stride + r, as in the HWIO kernel.
    order = [nsp] + [nsp + 1 + 2 * d for d in range(nsp)]
    order += list(itertools.chain.from_iterable((d, nsp + 2 + 2 * d) for d in range(nsp))) + [3 * nsp + 1]
    return p.transpose(order)


def dilate(x: jax.Array, strides: tuple[int, ...], pads: Pads) -> jax.Array:
    """x [N, *spatial, C] with stride-1 zeros between samples and (lo, hi) zeros at the edges: the
    input a transposed convolution correlates (lax.conv_transpose = conv with lhs_dilation)."""
    nsp = len(strides)
    config = [(0, 0, 0)] + [(lo, hi, s - 1) for (lo, hi), s in zip(pads, strides)] + [(0, 0, 0)]
    if x.ndim != nsp + 2:
        raise ValueError(f"dilate: x {x.shape} must be [N, *spatial ({nsp} axes), C].")
    return jax.lax.pad(x, jnp.zeros((), x.dtype), config)
