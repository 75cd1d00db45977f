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
output gradient. A first abstract trace (`jax.make_jaxpr`) finds the layers, their output shapes,
and which leaves of `params` each one owns (by identity). Parameters not owned by a supported
layer (another layer type, or read outside any layer) raise a ValueError naming them; parameters
the loss never reads get a zero gradient.

Supported layers: nn.Conv, nn.ConvTranspose (factored over its input positions: each one's window of
the output gradient, `_transposed_factors`; no zero-dilated copy of the input), nn.Dense,
the norm layers above, and any module implementing `LinearLayer` (a method `linear(x, weight)`
linear in its `weight` parameter, e.g. StyleGAN2's equalised-lr Conv2d with FIR down-sampling and
FullyConnected, which PGGAN shares): the model says how its weight meets its input
(`linear_factors`), the privacy code stays generic. A layer called k times per example (pix2pix's
D sees a real and a generated pair) has weight gradient sum_c a_cᵀ g_c = [a_1; ..; a_k]ᵀ [g_1; ..;
g_k]: its calls' positions are concatenated (T -> k T). With `stop_gradient_calls=True`, a call
whose parameters are stop_gradient-ed copies (pix2pix's G term reading D) contributes nothing.

Not covered: a loss holding a gradient of the model (R1, WGAN-GP): the weights then also act in
the backward pass; such losses use method="vmap" (the families resolve 'auto' per phase).

Numerics: activations and output gradients are nan_to_num-ed, and both the norm and the clipped
sum are computed from those same sanitised factors, so the bound ||c_i g_i|| <= C holds even for
garbage (padded) examples. Unlike method="vmap" (which zeroes only the non-finite coordinates of
a gradient), a real example whose gradient norm is not finite is dropped (c_i = 0).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding

from jaxmedgan.ops import patches as patches_lib

PyTree = Any
KeyPath = tuple[Any, ...]


@runtime_checkable
class LinearLayer(Protocol):
    """A custom layer ghost clipping covers. Its `__call__` creates a parameter 'weight' (and
    optionally 'bias', added right after `linear` and before any nonlinearity) and calls
    `self.linear(x, weight)`, whose output [N, *positions, O] is linear in `weight`;
    `linear_factors(x)` returns (a f32 [N, T, K], weight_gain, bias_gain) such that row i's
    gradients are weight_gain * (a_iᵀ g_i).reshape(weight.shape) and bias_gain * sum_t g_i, with
    g_i = dL_i / d linear(x, weight)_i [T, O]."""

    def linear(self, x: jax.Array, weight: jax.Array) -> jax.Array: ...

    def linear_factors(self, x: jax.Array) -> tuple[jax.Array, float, float]: ...


_MATMUL_LAYERS = (nn.Conv, nn.ConvTranspose, nn.Dense)  # weight gradient = a_iᵀ g_i
_NORM_LAYERS = (nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, nn.InstanceNorm)  # small: vmapped vjp
SUPPORTED_LAYERS = _MATMUL_LAYERS + _NORM_LAYERS
NORM_MODES = ("auto", "ghost", "direct")


def supported_layer_names() -> str:
    """'nn.Conv, nn.Dense, ...': the layer types whose parameters ghost clipping handles."""
    return ", ".join(f"nn.{t.__name__}" for t in SUPPORTED_LAYERS) + " and LinearLayer modules"


def _method(module: nn.Module) -> str | None:
    """The intercepted method of a supported layer ('linear' for LinearLayer), else None."""
    if isinstance(module, SUPPORTED_LAYERS):
        return "__call__"
    if isinstance(module, LinearLayer):
        return "linear"
    return None


@dataclasses.dataclass(frozen=True)
class _Layer:
    """A supported layer found by the abstract trace of one example's loss (all its calls)."""

    name: str  # module path, e.g. "down1/Conv_0"
    module: nn.Module  # unbound clone: re-applies a norm layer for its per-example vjp
    param_paths: tuple[tuple[str, KeyPath], ...]  # (local param name, key path in `params`)
    out_shapes: tuple[tuple[int, ...], ...]  # one example's output shape (no batch axis) per call
    out_dtypes: tuple[Any, ...]


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

    if isinstance(module, LinearLayer) and not isinstance(module, SUPPORTED_LAYERS):
        if len(args) != 2 or kwargs:
            refuse(f"linear() arguments beyond (x, weight) (got {len(args)} positional, kwargs {sorted(kwargs)})")
        names = set(module.variables.get("params", {}))
        if "weight" not in names or names - {"weight", "bias"}:
            refuse(f"parameters {sorted(names)} (a LinearLayer owns 'weight' and optionally 'bias')")
        return
    if len(args) != 1 or kwargs:
        refuse(f"call arguments beyond the input (got {len(args)} positional, kwargs {sorted(kwargs)})")
    if isinstance(module, (nn.Conv, nn.ConvTranspose)):
        k = len(module.kernel_size) if not isinstance(module.kernel_size, int) else 1
        if getattr(module, "feature_group_count", 1) != 1:
            refuse(f"feature_group_count={module.feature_group_count}")
        if module.mask is not None:
            refuse("a kernel mask")
        if isinstance(module, nn.Conv):
            if any(d != 1 for d in _broadcast(module.input_dilation, k)):
                refuse(f"input_dilation={module.input_dilation}")
            if module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None:
                refuse("a custom conv_general_dilated")
        elif module.transpose_kernel:
            refuse("transpose_kernel=True")
        padding = canonicalize_padding(module.padding, k)
        allowed = ("SAME", "VALID", "SAME_LOWER") if isinstance(module, nn.Conv) else ("SAME", "VALID")
        if isinstance(padding, str) and padding not in allowed:
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


def _owned(module: nn.Module, name: str, by_id: dict[int, KeyPath],
           stop_gradient_calls: bool) -> tuple[tuple[str, KeyPath], ...] | None:
    """(local name, path in params) of the call's parameters; None for a call that is not
    differentiated (closed-over constants, or stop_gradient-ed copies when allowed)."""
    own = jax.tree_util.tree_flatten_with_path(module.variables.get("params", {}))[0]
    if not any(isinstance(leaf, jax.core.Tracer) for _, leaf in own):
        return None  # a frozen layer (closed-over constants): not differentiated
    found = [id(leaf) in by_id for _, leaf in own]
    if stop_gradient_calls and not any(found):
        return None
    if not all(found):
        local = next(path for (path, _), ok in zip(own, found) if not ok)
        raise ValueError(
            f"method='ghost': parameter {_path_str(local)!r} of layer {name!r} is not a leaf of the params "
            "passed to loss_fn (was it transformed, e.g. cast, or closed over?); pass params unchanged to "
            "model.apply"
            + ("" if stop_gradient_calls else " (a stop_gradient-ed call needs stop_gradient_calls=True)")
            + ", or use method='vmap'.")
    return tuple((_path_str(local), by_id[id(leaf)]) for local, leaf in own)


def _key(paths: tuple[tuple[str, KeyPath], ...]) -> tuple[KeyPath, ...]:
    return tuple(path for _, path in paths)


def _discover(loss_fn: Callable, params: PyTree, example: PyTree,
              stop_gradient_calls: bool) -> tuple[_Layer, ...]:
    """Abstractly traces one example's loss; returns its supported layers (params owned by identity)."""
    layers: dict[tuple, _Layer] = {}  # by the key paths of the parameters a layer owns
    called: dict[str, str] = {}  # module path -> type name, every module call (for error messages)
    owned: set[KeyPath] = set()

    def trace(params, example):
        by_id = {id(leaf): path for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}

        def interceptor(next_fun, args, kwargs, ctx):
            out = next_fun(*args, **kwargs)
            module, name = ctx.module, _module_name(ctx.module)
            called.setdefault(name, type(module).__name__)
            if ctx.method_name != _method(module):
                return out
            paths = _owned(module, name, by_id, stop_gradient_calls)
            if paths is None:
                return out
            _check_layer(module, name, args, kwargs)
            key = _key(paths)
            if key in layers:  # the same weights again (shared within one example)
                prev = layers[key]
                if type(prev.module) is not type(module) or [n for n, _ in prev.param_paths] != [n for n, _ in paths]:
                    raise ValueError(f"method='ghost': the parameters of layer {prev.name!r} are used by another "
                                     f"layer {name!r} too; use method='vmap'.")
                layers[key] = dataclasses.replace(prev, out_shapes=prev.out_shapes + (tuple(out.shape),),
                                                  out_dtypes=prev.out_dtypes + (out.dtype,))
            elif owned.intersection(p for _, p in paths):
                raise ValueError(f"method='ghost': layer {name!r} shares some but not all parameters with another "
                                 "layer; use method='vmap'.")
            else:
                layers[key] = _Layer(name, module.clone(parent=None), paths, (tuple(out.shape),), (out.dtype,))
            owned.update(p for _, p in paths)
            return out

        with nn.intercept_methods(interceptor):
            return loss_fn(params, example)

    jaxpr = jax.make_jaxpr(trace)(params, example).jaxpr
    # A parameter the loss never reads (PGGAN's blocks above the current level) has gradient 0.
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
    for (path, _), var in zip(jax.tree_util.tree_flatten_with_path(params)[0], jaxpr.invars):
        if path in owned or id(var) not in read:
            continue
        owner = _path_str(path[:-1])
        kind = called.get(owner)
        where = (f"belongs to a {kind} layer ({owner!r})" if kind is not None
                 else "is read by the loss outside any flax layer call")
        raise ValueError(f"method='ghost': parameter {_path_str(path)!r} {where}; ghost clipping supports "
                         f"{supported_layer_names()}. Use method='vmap' for this model.")
    return tuple(layers.values())


def _kernel_size(conv: nn.Conv | nn.ConvTranspose) -> tuple[int, ...]:
    return _broadcast(conv.kernel_size, 1) if isinstance(conv.kernel_size, int) else tuple(conv.kernel_size)


def _conv_geometry(conv: nn.Conv | nn.ConvTranspose, spatial: tuple[int, ...]):
    """(kernel, strides, dilation, pads) of the VALID stride-`strides` correlation a conv layer runs."""
    nsp = len(spatial)
    k = _kernel_size(conv)
    strides, dil = _broadcast(conv.strides, nsp), _broadcast(conv.kernel_dilation, nsp)
    eff = tuple((ki - 1) * di + 1 for ki, di in zip(k, dil))
    padding = canonicalize_padding(conv.padding, nsp)
    if isinstance(conv, nn.ConvTranspose):  # lax.conv_transpose's pads of the zero-dilated input
        if isinstance(padding, str):
            pads = tuple(_transpose_pads(e, s, padding) for e, s in zip(eff, strides))
        else:
            pads = tuple(tuple(p) for p in padding)
        return k, strides, dil, pads
    pads = jax.lax.padtype_to_pads(spatial, eff, strides, padding) if isinstance(padding, str) else padding
    return k, strides, dil, tuple(tuple(p) for p in pads)


def _transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
    """(lo, hi) zeros around the stride-dilated input of a transposed conv (jax.lax.conv_transpose)."""
    if padding == "SAME":
        total, lo = k + s - 2, (k - 1 if s > k - 1 else -(-(k + s - 2) // 2))
    else:  # VALID
        total, lo = k + s - 2 + max(k - s, 0), k - 1
    return lo, total - lo


def _conv_patches(conv: nn.Conv | nn.ConvTranspose, x: jax.Array, out_shape: tuple[int, ...]) -> jax.Array:
    """x [n, *lead, *spatial, C] -> unfolded patches [n, T, prod(kernel) * C], kernel (HWIO) order."""
    k = _kernel_size(conv)
    nsp, n, c = len(k), x.shape[0], x.shape[-1]
    spatial = x.shape[-1 - nsp:-1]
    x = x.reshape(-1, *spatial, c)
    k, strides, dil, pads = _conv_geometry(conv, spatial)
    if isinstance(conv, nn.ConvTranspose):
        x, strides, pads = patches_lib.dilate(x, strides, pads), (1,) * nsp, ((0, 0),) * nsp
    out = patches_lib.output_size(x.shape[1:-1], k, strides, pads, dil)
    if out != tuple(out_shape[-1 - nsp:-1]):
        raise ValueError(f"method='ghost': unfolding conv input {spatial} gave output positions {out}, but the "
                         f"layer produced {out_shape[-1 - nsp:-1]}; use method='vmap'.")
    return patches_lib.unfold(x, k, strides, pads, dil).reshape(n, -1, math.prod(k) * c)


def _transposed_factors(conv: nn.ConvTranspose, x: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A transposed conv's weight-gradient factors over its INPUT positions: (x [n, P, C_in],
    unfolded output gradient [n, P, prod(kernel) * O]) with W_i = reshape(x_iᵀ G_i) (`_transposed_kernel`).

    lax.conv_transpose correlates the stride-dilated, (lo, hi)-padded input with W, so input position
    p meets output position o through kernel tap j = s p + lo - o; hence
        dW[j] = sum_p x[p] ⊗ g[s p + lo - j]:
    a window of g with stride s around each input position, read backwards. Unfolding g (padded by
    k - 1 - lo in front, negative pads crop) needs no zero-dilated copy of x: prod(s) times fewer
    positions and no zero rows, which is what made pix2pix's U-Net decoder slow under DP.
    """
    k = _kernel_size(conv)
    nsp, n = len(k), x.shape[0]
    spatial_in, spatial_out = x.shape[-1 - nsp:-1], g.shape[-1 - nsp:-1]
    _, strides, _, pads = _conv_geometry(conv, spatial_in)
    lo_g = tuple(ki - 1 - lo for ki, (lo, _) in zip(k, pads))
    hi_g = tuple(st * (p - 1) + ki - o - lg for st, p, ki, o, lg in zip(strides, spatial_in, k, spatial_out, lo_g))
    gg = g.reshape(-1, *spatial_out, g.shape[-1])
    gg = jax.lax.pad(gg, jnp.zeros((), gg.dtype), [(0, 0, 0), *[(a, b, 0) for a, b in zip(lo_g, hi_g)], (0, 0, 0)])
    gg = patches_lib.unfold(gg, k, strides, ((0, 0),) * nsp)  # [n * lead, P, prod(k) * O], window offsets u
    gg = gg.reshape(gg.shape[0], -1, *k, g.shape[-1])
    gg = jnp.flip(gg, axis=tuple(range(2, 2 + nsp)))  # offset u = k - 1 - j: kernel tap order
    if math.prod(spatial_in) != gg.shape[1]:
        raise ValueError(f"method='ghost': transposed conv {spatial_in} -> {spatial_out}: the output gradient's "
                         f"windows gave {gg.shape[1]} input positions; use method='vmap'.")
    return x.reshape(n, -1, x.shape[-1]), gg.reshape(n, -1, math.prod(k) * g.shape[-1])


def _transposed_kernel(m: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """[C_in, prod(k) * O] (x_iᵀ G_i of `_transposed_factors`) -> the HWIO kernel [*k, C_in, O]."""
    *k, c_in, o = kernel_shape
    return jnp.moveaxis(m.reshape(c_in, *k, o), 0, len(k))


def _choose(mode: str, t: int, k: int, o: int) -> str:
    if mode != "auto":
        return mode
    return "ghost" if t * (k + o) < k * o else "direct"  # FLOPs: T^2 (K+O) vs T K O (Bu et al.)


def _matmul_layer(layer: _Layer, p: dict[str, jax.Array], xs: list[jax.Array], gs: list[jax.Array],
                  mode: str) -> tuple[jax.Array, Callable[[jax.Array], dict[str, jax.Array]]]:
    """Conv/ConvTranspose/Dense/LinearLayer over all its calls (positions concatenated):
    (squared per-example grad norm f32 [n], c [n] -> clipped sums {local name: array}).

    Each call gives factors (a [n, T, K], g [n, T, O]) with example i's weight gradient a_iᵀ g_i up to
    a fixed reshape: input patches and output gradients (Conv, Dense, LinearLayer), or inputs and
    unfolded output gradients over the input positions (ConvTranspose without kernel dilation)."""
    module, n = layer.module, xs[0].shape[0]
    weight_name, w_gain, b_gain = "kernel", 1.0, 1.0
    transposed = isinstance(module, nn.ConvTranspose) and all(
        d == 1 for d in _broadcast(module.kernel_dilation, len(_kernel_size(module))))
    a_parts, g_parts = [], []
    for x, shape, g_out in zip(xs, layer.out_shapes, gs):
        g_mat = g_out.reshape(n, -1, g_out.shape[-1])
        if transposed:
            a_c, g_mat = _transposed_factors(module, x, g_out)
        elif isinstance(module, (nn.Conv, nn.ConvTranspose)):
            a_c = _conv_patches(module, x, shape)
        elif isinstance(module, nn.Dense):
            a_c = x.reshape(n, -1, x.shape[-1])
        else:  # LinearLayer: the model states how its weight meets its input
            # One example's input keeps the batch axis `linear` expects ([b, ...], b = 1 usually):
            # merge it into n, then put each example's b * T positions back together.
            a_c, w_gain, b_gain = module.linear_factors(x.reshape(-1, *x.shape[2:]))
            weight_name = "weight"
            a_c = a_c.reshape(n, -1, a_c.shape[-1])
        a_parts.append(a_c)
        g_parts.append(g_mat)
    cat = lambda parts: (jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]).astype(jnp.float32)
    a, g = _sanitise(cat(a_parts)), cat(g_parts)
    if a.shape[1] != g.shape[1]:
        raise ValueError(f"method='ghost': layer {layer.name!r}: unfolded input has {a.shape[1]} positions but "
                         f"its output {g.shape[1]}; use method='vmap'.")
    shape = p[weight_name].shape
    to_kernel = (lambda m: _transposed_kernel(m, shape)) if transposed else (lambda m: m.reshape(shape))
    t, kk, o = a.shape[1], a.shape[2], g.shape[2]
    mode = _choose(mode, t, kk, o)
    if mode == "direct":  # instantiate W_i = a_iᵀ g_i  [n, K, O]
        w = jnp.einsum("ntk,nto->nko", a, g)
        sq = jnp.sum(jnp.square(w), axis=(1, 2))
    else:  # ghost norm: <a_i a_iᵀ, g_i g_iᵀ>_F over positions
        sq = jnp.sum(jnp.einsum("ntk,nsk->nts", a, a) * jnp.einsum("nto,nso->nts", g, g), axis=(1, 2))
    sq = sq * w_gain**2
    gb = sum(jnp.sum(v.reshape(n, -1, v.shape[-1]).astype(jnp.float32), axis=1) for v in gs) * b_gain  # bias [n, O]
    has_bias = "bias" in p
    if has_bias:
        sq = sq + jnp.sum(jnp.square(gb), axis=1)

    def clipped(c):
        if mode == "direct":  # a non-finite W_i has c_i = 0: keep 0 * inf out of the sum
            kernel = jnp.einsum("n,nko->ko", c, jnp.where((c > 0)[:, None, None], w, 0.0))
        else:
            kernel = jnp.einsum("ntk,nto->ko", a, g * c[:, None, None])
        out = {weight_name: to_kernel(kernel * w_gain)}
        if has_bias:
            out["bias"] = jnp.einsum("n,no->o", c, jnp.where((c > 0)[:, None], gb, 0.0))
        return out

    return sq, clipped


def _norm_layer(layer: _Layer, p: dict[str, jax.Array], xs: list[jax.Array],
                gs: list[jax.Array]) -> tuple[jax.Array, Callable[[jax.Array], dict[str, jax.Array]]]:
    """Norm layers: per-example scale/bias grads by a vmapped vjp of the layer itself (they are small),
    summed over its calls."""
    def one(x_i, g_i):
        _, vjp = jax.vjp(lambda q: layer.module.apply({"params": q}, x_i), p)
        return vjp(g_i)[0]

    grads = jax.tree.map(lambda *v: sum(v), *[jax.vmap(one)(x, g) for x, g in zip(xs, gs)])
    grads = jax.tree.map(lambda v: jnp.nan_to_num(v.astype(jnp.float32), nan=0.0, posinf=0.0, neginf=0.0), grads)
    sq = sum(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim))) for v in jax.tree.leaves(grads))

    def clipped(c):
        return jax.tree.map(lambda v: jnp.tensordot(c, v, axes=1), grads)

    return sq, clipped


def _sanitise(x: jax.Array) -> jax.Array:
    return jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def clipped_sum_chunk(loss_fn: Callable, params: PyTree, batch: PyTree, real: jax.Array, *, l2_clip: float,
                      has_aux: bool, norm_mode: str = "auto",
                      stop_gradient_calls: bool = False) -> tuple[PyTree, jax.Array, jax.Array, PyTree]:
    """(sum of clipped grads like params, pre-clip norms f32 [n], losses f32 [n], aux [n, ...]).

    batch: pytree with leading axis n; real: bool [n] (False -> contributes exactly 0).
    norm_mode: "auto" (cheaper by FLOPs, per layer) | "ghost" | "direct" (forced, for tests).
    stop_gradient_calls: layer calls on stop_gradient-ed copies of `params` contribute nothing
    (otherwise they are an error: a transformed parameter would be missed).
    """
    if norm_mode not in NORM_MODES:
        raise ValueError(f"norm_mode must be one of {NORM_MODES}, got {norm_mode!r}.")
    n = real.shape[0]
    layers = _discover(loss_fn, params, jax.tree.map(lambda x: x[0], batch), stop_gradient_calls)
    index = {_key(layer.param_paths): i for i, layer in enumerate(layers)}  # eps, acts: by layer index
    # Inside shard_map eps must vary per device, or grad w.r.t. it is psum-ed (dp_sgd module doc).
    zero = _vary_like(jnp.zeros((n,), jnp.float32), real)
    eps = tuple(tuple(jnp.zeros((n, *shape), dtype) + zero.reshape((n,) + (1,) * len(shape)).astype(dtype)
                      for shape, dtype in zip(layer.out_shapes, layer.out_dtypes)) for layer in layers)

    def one(eps_i, example):
        acts: dict[int, list] = {}
        by_id = {id(leaf): path for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}

        def interceptor(next_fun, args, kwargs, ctx):
            out = next_fun(*args, **kwargs)
            if ctx.method_name != _method(ctx.module):
                return out
            own = jax.tree.leaves(ctx.module.variables.get("params", {}))
            i = index.get(tuple(by_id.get(id(leaf)) for leaf in own))
            if i is None:
                return out  # frozen (constants or, when declared, stop_gradient-ed): as in the abstract trace
            calls = acts.setdefault(i, [])
            if len(calls) == len(layers[i].out_shapes):
                raise ValueError(f"method='ghost': layer {layers[i].name!r} ran more often than in the abstract "
                                 "trace; the loss changed between traces.")
            eps_c = eps_i[i][len(calls)]
            calls.append(args[0])
            return out + eps_c

        with nn.intercept_methods(interceptor):
            out = loss_fn(params, example)
        loss, aux = out if has_aux else (out, None)
        missing = sorted(layer.name for i, layer in enumerate(layers) if len(acts.get(i, ())) != len(layer.out_shapes))
        if missing:
            raise ValueError(f"method='ghost': layers {missing} did not run as often in the batched trace.")
        return loss, (aux, acts)

    def total(eps):
        losses, (aux, acts) = jax.vmap(one)(eps, batch)
        # Example i's loss depends only on eps_i, so d(sum)/d eps_i = dL_i/dy_i.
        return jnp.sum(losses), (losses, aux, acts)

    outs, (losses, aux, acts) = jax.grad(total, has_aux=True)(eps)
    sq = jnp.zeros((n,), jnp.float32)
    finishers = []
    for i, layer in enumerate(layers):
        p = {local: _get(params, path) for local, path in layer.param_paths}
        xs, gs = [_sanitise(x) for x in acts[i]], [_sanitise(g) for g in outs[i]]
        if isinstance(layer.module, _NORM_LAYERS):
            s, finish = _norm_layer(layer, p, xs, gs)
        else:
            s, finish = _matmul_layer(layer, p, xs, gs, norm_mode)
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
