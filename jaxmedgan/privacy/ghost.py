"""Ghost clipping with book-keeping (Bu et al. 2022): per-example clipped gradient sum, no vmap(grad).

For a layer y = a W (+ b) applied at T positions of example i (a_i: [T, K] inputs, unfolded
patches for a convolution; g_i = dL_i/dy_i: [T, O]), example i's weight gradient is a_iᵀ g_i and

    ||a_iᵀ g_i||_F^2 = sum_{t,s} (a_i a_iᵀ)_{ts} (g_i g_iᵀ)_{ts}         ("ghost norm", O(T^2 (K+O)))
                     = ||W_i||_F^2 with W_i = a_iᵀ g_i instantiated      ("direct", O(T K O), K*O memory)

and each layer picks the cheaper by FLOP count (ghost when T (K + O) < K O, as Bu et al.). Bias
gradients are sum_t g_i; GroupNorm/LayerNorm/RMSNorm scale and bias gradients are small, so they
are instantiated per example by a vmap of the layer's own vjp. The global norm over ALL parameters
gives c_i = min(1, C / ||g_i||), and the clipped sum is assembled per layer from the SAME stored
activations and output gradients (sum_i c_i a_iᵀ g_i: one matmul per ghost layer, a weighted sum
of the instantiated W_i per direct layer): one forward pass, one backward pass to the layer
outputs (no weight gradients), no second backward pass.

Measured (benchmarks/dp_overhead.py, BASELINES.md discriminator, 2 shared CPU cores, same-run
ratios): DP/non-DP step 1.44-1.60 at batch 16, 1.15-1.27 at 64, 1.14-1.16 at 256, against 9.6-11
for method="vmap" and 1.9-3.1 for Opacus. Microbatching only slows it down (use it for memory).
About half of the remaining overhead at batch 16 is the Gaussian noise draw (threefry on CPU).

How the activations and output gradients are obtained for any flax model: `loss_fn` runs under
`flax.linen.intercept_methods`; every supported layer call records its input and adds a zero
perturbation eps to its output, so grad w.r.t. eps (vmapped over examples) is the per-example
output gradient. A first abstract trace (`jax.eval_shape`) finds the layers, their output shapes,
and which leaves of `params` each one owns (by identity). Parameters not owned by a supported
layer (another layer type, or used outside any layer) raise a ValueError naming them.

Numerics: activations and output gradients are nan_to_num-ed, and both the norm and the clipped
sum are computed from those same sanitised factors, so the bound ||c_i g_i|| <= C holds even for
garbage (padded) examples. Unlike method="vmap" (which zeroes only the non-finite coordinates of
a gradient), a real example whose gradient norm is not finite is dropped (c_i = 0).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding

PyTree = Any
KeyPath = tuple[Any, ...]

_MATMUL_LAYERS = (nn.Conv, nn.Dense)  # weight gradient = a_iᵀ g_i: ghost norm or instantiated
_NORM_LAYERS = (nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, nn.InstanceNorm)  # small: vmapped vjp
SUPPORTED_LAYERS = _MATMUL_LAYERS + _NORM_LAYERS
NORM_MODES = ("auto", "ghost", "direct")


def supported_layer_names() -> str:
    """'nn.Conv, nn.Dense, ...': the flax layer types whose parameters ghost clipping handles."""
    return ", ".join(f"nn.{t.__name__}" for t in SUPPORTED_LAYERS)


@dataclasses.dataclass(frozen=True)
class _Layer:
    """A supported layer call found by the abstract trace of one example's loss."""

    name: str  # module path, e.g. "down1/Conv_0"
    module: nn.Module  # unbound clone: re-applies a norm layer for its per-example vjp
    param_paths: tuple[tuple[str, KeyPath], ...]  # (local param name, key path in `params`)
    out_shape: tuple[int, ...]  # one example's output shape (no batch axis)
    out_dtype: Any


def _vma(x: jax.Array) -> frozenset:
    aval = jax.typeof(x)
    varying = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
    if varying is None:
        varying = getattr(aval, "vma", None) or frozenset()
    return frozenset(varying)


def _vary_like(x: jax.Array, like: jax.Array) -> jax.Array:
    """Casts x to vary over the shard_map axes `like` varies over, so grad w.r.t. x stays per device."""
    axes = tuple(sorted(_vma(like) - _vma(x)))
    if not axes:
        return x
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(x, axes, to="varying")
    return jax.lax.pvary(x, axes)  # jax < 0.8


def _module_name(module: nn.Module) -> str:
    return "/".join(module.scope.path) or "<root>"


def _path_str(path: KeyPath) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _check_layer(module: nn.Module, name: str, args: tuple, kwargs: dict) -> None:
    """Raises if a supported layer type is configured in a way ghost clipping does not handle."""
    def refuse(what):
        raise ValueError(f"method='ghost': layer {name!r} ({type(module).__name__}) has {what}, which ghost "
                         "clipping does not handle; use method='vmap'.")

    if len(args) != 1 or kwargs:
        refuse(f"call arguments beyond the input (got {len(args)} positional, kwargs {sorted(kwargs)})")
    if isinstance(module, nn.Conv):
        k = len(module.kernel_size) if not isinstance(module.kernel_size, int) else 1
        if module.feature_group_count != 1:
            refuse(f"feature_group_count={module.feature_group_count}")
        if module.mask is not None:
            refuse("a kernel mask")
        if any(d != 1 for d in _broadcast(module.input_dilation, k)):
            refuse(f"input_dilation={module.input_dilation}")
        if module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None:
            refuse("a custom conv_general_dilated")
        padding = canonicalize_padding(module.padding, k)
        if isinstance(padding, str) and padding not in ("SAME", "VALID", "SAME_LOWER"):
            refuse(f"padding={padding!r}")
    elif isinstance(module, nn.Dense):
        if module.dot_general is not None or module.dot_general_cls is not None:
            refuse("a custom dot_general")
    elif getattr(module, "axis_name", None) is not None:
        refuse(f"axis_name={module.axis_name!r} (statistics across devices mix examples)")


def _broadcast(x: int | tuple[int, ...] | None, n: int) -> tuple[int, ...]:
    if x is None:
        return (1,) * n
    return (x,) * n if isinstance(x, int) else tuple(x)


def _discover(loss_fn: Callable, params: PyTree, example: PyTree) -> tuple[_Layer, ...]:
    """Abstractly traces one example's loss; returns its supported layers (params owned by identity)."""
    layers: list[_Layer] = []
    called: dict[str, str] = {}  # module path -> type name, every module call (for error messages)
    owned: set[KeyPath] = set()

    def trace(params, example):
        by_id = {id(leaf): path for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}

        def interceptor(next_fun, args, kwargs, ctx):
            out = next_fun(*args, **kwargs)
            module, name = ctx.module, _module_name(ctx.module)
            called.setdefault(name, type(module).__name__)
            if ctx.method_name != "__call__" or not isinstance(module, SUPPORTED_LAYERS):
                return out
            own = jax.tree_util.tree_flatten_with_path(module.variables.get("params", {}))[0]
            if not any(isinstance(leaf, jax.core.Tracer) for _, leaf in own):
                return out  # a frozen layer (closed-over constants): not differentiated
            paths = []
            for local, leaf in own:
                if id(leaf) not in by_id:
                    raise ValueError(
                        f"method='ghost': parameter {_path_str(local)!r} of layer {name!r} is not a leaf of "
                        "the params passed to loss_fn (was it transformed, e.g. cast, or closed over?); "
                        "pass params unchanged to model.apply, or use method='vmap'.")
                paths.append((_path_str(local), by_id[id(leaf)]))
            if any(layer.name == name for layer in layers):
                raise ValueError(f"method='ghost': layer {name!r} is called more than once per example "
                                 "(shared weights); use method='vmap'.")
            _check_layer(module, name, args, kwargs)
            owned.update(p for _, p in paths)
            layers.append(_Layer(name, module.clone(parent=None), tuple(paths), tuple(out.shape), out.dtype))
            return out

        with nn.intercept_methods(interceptor):
            return loss_fn(params, example)

    jax.eval_shape(trace, params, example)
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        if path in owned:
            continue
        owner = _path_str(path[:-1])
        kind = called.get(owner)
        where = (f"belongs to a {kind} layer ({owner!r})" if kind is not None
                 else "is not used by any flax layer call (read directly in loss_fn, or unused)")
        raise ValueError(f"method='ghost': parameter {_path_str(path)!r} {where}; ghost clipping supports "
                         f"{supported_layer_names()}. Use method='vmap' for this model.")
    return tuple(layers)


def _conv_patches(conv: nn.Conv, x: jax.Array, out_shape: tuple[int, ...]) -> jax.Array:
    """x [n, *lead, *spatial, C] -> unfolded patches [n, T, prod(kernel) * C], kernel (HWIO) order."""
    k = _broadcast(conv.kernel_size, 1) if isinstance(conv.kernel_size, int) else tuple(conv.kernel_size)
    nsp, n, c = len(k), x.shape[0], x.shape[-1]
    strides, dil = _broadcast(conv.strides, nsp), _broadcast(conv.kernel_dilation, nsp)
    spatial = x.shape[-1 - nsp:-1]
    x = x.reshape(-1, *spatial, c)
    eff = tuple((ki - 1) * di + 1 for ki, di in zip(k, dil))
    padding = canonicalize_padding(conv.padding, nsp)
    pads = jax.lax.padtype_to_pads(spatial, eff, strides, padding) if isinstance(padding, str) else padding
    x = jnp.pad(x, [(0, 0), *[tuple(p) for p in pads], (0, 0)])
    out = tuple((s + lo + hi - e) // st + 1 for s, (lo, hi), e, st in zip(spatial, pads, eff, strides))
    if out != tuple(out_shape[-1 - nsp:-1]):
        raise ValueError(f"method='ghost': unfolding conv input {spatial} gave output positions {out}, but the "
                         f"layer produced {out_shape[-1 - nsp:-1]}; use method='vmap'.")
    if all(d == 1 for d in dil) and all(ki % st == 0 for ki, st in zip(k, strides)):
        return _space_to_depth_patches(x, k, strides, out).reshape(n, -1, math.prod(k) * c)
    slices = []  # general case: one strided slice per kernel offset
    for offset in itertools.product(*(range(ki) for ki in k)):
        start = (0, *(o * d for o, d in zip(offset, dil)), 0)
        limit = (x.shape[0], *(o * d + (m - 1) * st + 1 for o, d, m, st in zip(offset, dil, out, strides)), c)
        slices.append(jax.lax.slice(x, start, limit, (1, *strides, 1)))
    return jnp.stack(slices, axis=-2).reshape(n, -1, math.prod(k) * c)


def _space_to_depth_patches(x: jax.Array, k: tuple[int, ...], strides: tuple[int, ...],
                            out: tuple[int, ...]) -> jax.Array:
    """Padded x [N, *spatial, C] -> patches [N, *out, *k, C] when every k_d % stride_d == 0.

    Kernel offset k_d = stride_d * q + r: view each axis as blocks of `stride` ([m, stride]); a patch
    is then k_d / stride_d whole blocks, so prod(k / stride) unstrided slices (DCGAN's 4x4 stride-2
    conv: 4 instead of 16 strided slices; ~3x faster on CPU).
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


def _choose(mode: str, t: int, k: int, o: int) -> str:
    if mode != "auto":
        return mode
    return "ghost" if t * (k + o) < k * o else "direct"  # FLOPs: T^2 (K+O) vs T K O (Bu et al.)


def _matmul_layer(layer: _Layer, p: dict[str, jax.Array], x: jax.Array, g: jax.Array,
                  mode: str) -> tuple[jax.Array, Callable[[jax.Array], dict[str, jax.Array]]]:
    """Conv/Dense: (squared per-example grad norm f32 [n], c [n] -> clipped sums {local name: array})."""
    n = x.shape[0]
    if isinstance(layer.module, nn.Conv):
        a = _conv_patches(layer.module, x, layer.out_shape)
    else:
        a = x.reshape(n, -1, x.shape[-1])
    a = a.astype(jnp.float32)
    g = g.reshape(n, -1, g.shape[-1]).astype(jnp.float32)
    t, kk, o = a.shape[1], a.shape[2], g.shape[2]
    mode = _choose(mode, t, kk, o)
    if mode == "direct":  # instantiate W_i = a_iᵀ g_i  [n, K, O]
        w = jnp.einsum("ntk,nto->nko", a, g)
        sq = jnp.sum(jnp.square(w), axis=(1, 2))
    else:  # ghost norm: <a_i a_iᵀ, g_i g_iᵀ>_F over positions
        sq = jnp.sum(jnp.einsum("ntk,nsk->nts", a, a) * jnp.einsum("nto,nso->nts", g, g), axis=(1, 2))
    gb = jnp.sum(g, axis=1)  # bias gradient [n, O]
    has_bias = "bias" in p
    if has_bias:
        sq = sq + jnp.sum(jnp.square(gb), axis=1)

    def clipped(c):
        if mode == "direct":  # a non-finite W_i has c_i = 0: keep 0 * inf out of the sum
            kernel = jnp.einsum("n,nko->ko", c, jnp.where((c > 0)[:, None, None], w, 0.0))
        else:
            kernel = jnp.einsum("ntk,nto->ko", a, g * c[:, None, None])
        out = {"kernel": kernel.reshape(p["kernel"].shape)}
        if has_bias:
            out["bias"] = jnp.einsum("n,no->o", c, jnp.where((c > 0)[:, None], gb, 0.0))
        return out

    return sq, clipped


def _norm_layer(layer: _Layer, p: dict[str, jax.Array], x: jax.Array,
                g: jax.Array) -> tuple[jax.Array, Callable[[jax.Array], dict[str, jax.Array]]]:
    """Norm layers: per-example scale/bias grads by a vmapped vjp of the layer itself (they are small)."""
    def one(x_i, g_i):
        _, vjp = jax.vjp(lambda q: layer.module.apply({"params": q}, x_i), p)
        return vjp(g_i)[0]

    grads = jax.vmap(one)(x, g)
    grads = jax.tree.map(lambda v: jnp.nan_to_num(v.astype(jnp.float32), nan=0.0, posinf=0.0, neginf=0.0), grads)
    sq = sum(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim))) for v in jax.tree.leaves(grads))

    def clipped(c):
        return jax.tree.map(lambda v: jnp.tensordot(c, v, axes=1), grads)

    return sq, clipped


def _sanitise(x: jax.Array) -> jax.Array:
    return jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def clipped_sum_chunk(loss_fn: Callable, params: PyTree, batch: PyTree, real: jax.Array, *, l2_clip: float,
                      has_aux: bool, norm_mode: str = "auto") -> tuple[PyTree, jax.Array, jax.Array, PyTree]:
    """(sum of clipped grads like params, pre-clip norms f32 [n], losses f32 [n], aux [n, ...]).

    batch: pytree with leading axis n; real: bool [n] (False -> contributes exactly 0).
    norm_mode: "auto" (cheaper by FLOPs, per layer) | "ghost" | "direct" (forced, for tests).
    """
    if norm_mode not in NORM_MODES:
        raise ValueError(f"norm_mode must be one of {NORM_MODES}, got {norm_mode!r}.")
    n = real.shape[0]
    layers = _discover(loss_fn, params, jax.tree.map(lambda x: x[0], batch))
    by_name = {layer.name: layer for layer in layers}
    # Inside shard_map eps must vary per device, or grad w.r.t. it is psum-ed (dp_sgd module doc).
    zero = _vary_like(jnp.zeros((n,), jnp.float32), real)
    eps = {layer.name: jnp.zeros((n, *layer.out_shape), layer.out_dtype)
           + zero.reshape((n,) + (1,) * len(layer.out_shape)).astype(layer.out_dtype) for layer in layers}

    def one(eps_i, example):
        acts = {}

        def interceptor(next_fun, args, kwargs, ctx):
            out = next_fun(*args, **kwargs)
            name = _module_name(ctx.module)
            if ctx.method_name != "__call__" or name not in by_name:
                return out
            if name in acts:
                raise ValueError(f"method='ghost': layer {name!r} ran twice; the loss changed between traces.")
            acts[name] = args[0]
            return out + eps_i[name]

        with nn.intercept_methods(interceptor):
            out = loss_fn(params, example)
        loss, aux = out if has_aux else (out, None)
        missing = set(by_name) - set(acts)
        if missing:
            raise ValueError(f"method='ghost': layers {sorted(missing)} did not run in the batched trace.")
        return loss, (aux, acts)

    def total(eps):
        losses, (aux, acts) = jax.vmap(one)(eps, batch)
        # Example i's loss depends only on eps_i, so d(sum)/d eps_i = dL_i/dy_i.
        return jnp.sum(losses), (losses, aux, acts)

    outs, (losses, aux, acts) = jax.grad(total, has_aux=True)(eps)
    sq = jnp.zeros((n,), jnp.float32)
    finishers = []
    for layer in layers:
        p = {local: _get(params, path) for local, path in layer.param_paths}
        x, g = _sanitise(acts[layer.name]), _sanitise(outs[layer.name])
        if isinstance(layer.module, _MATMUL_LAYERS):
            s, finish = _matmul_layer(layer, p, x, g, norm_mode)
        else:
            s, finish = _norm_layer(layer, p, x, g)
        sq = sq + s
        finishers.append((layer, finish))
    norms = jnp.sqrt(sq)
    scale = jnp.minimum(1.0, l2_clip / norms)  # norm 0 -> inf -> 1; norm inf -> 0
    scale = jnp.where(real, jnp.nan_to_num(scale, nan=0.0), 0.0).astype(jnp.float32)
    sums: dict[KeyPath, jax.Array] = {}
    for layer, finish in finishers:
        local_sums = finish(scale)
        for local, path in layer.param_paths:
            sums[path] = local_sums[local]
    total_sum = jax.tree_util.tree_map_with_path(
        lambda path, leaf: sums[path].astype(leaf.dtype) if path in sums else jnp.zeros_like(leaf), params)
    return total_sum, norms, losses.astype(jnp.float32), aux


def _get(tree: PyTree, path: KeyPath) -> jax.Array:
    for k in path:
        tree = tree[getattr(k, "key", getattr(k, "idx", k))]
    return tree
