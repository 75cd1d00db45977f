"""DP-SGD gradient for any trainer: per-example clip, sum, one Gaussian noise draw, private mean.

The mechanism (Abadi et al. 2016, "Deep Learning with Differential Privacy"):

    g_i  = grad_theta loss(theta, x_i)                       for each real example i of the batch
    gc_i = g_i * min(1, C / ||g_i||_2)                        (global L2 norm over all parameters)
    grad = (sum_i gc_i + N(0, sigma^2 C^2 I)) / B_expected

Adding or removing one example changes `sum_i gc_i` by at most C in L2, so the noised sum is the
Gaussian mechanism with noise multiplier sigma; `accounting.py` turns (q, sigma, steps) into an
(epsilon, delta) guarantee. With Poisson sampling, divide by the *expected* batch size q*N (a
constant), never by the realised one, which depends on the data and would leak.

One private-gradient path. Every GAN family's DP step states its discriminator loss as two
per-example terms -- one touching real example i, one on a generated image -- and calls
`d_gradient(real_loss, params, real, mask, dp, fake_loss=..., fake=...)`. It returns the sum-scale
gradient sum_i clip_C(g_i) + E[B] * (fake mean gradient); the noise is the first transformation of
the family's optimiser (`noise.gaussian_noise`, keyed by the batch's secret `dp_noise_key`), which
adds N(0, sigma^2 C^2) once and divides by E[B]. A real-term loss is the loss of ONE example: put
every term that sees that example's real data inside it and nothing that mixes examples
(BatchNorm, minibatch-stddev: see `checks.py`). `dp_gradient` is the same mechanism in one call
(clipped sum through the same noise transformation), for tests and benchmarks.

Sharding. Under `jax.jit` with the batch sharded over a mesh's `data` axis, pass `mesh=`: the
clipping runs in `jax.shard_map` over that axis (each device clips its own examples), the clipped
sums and metrics are `psum`-ed, and the noise is drawn outside it (by the optimiser) from one
replicated key: ONE logical draw, identical on every device, added once. Already inside `shard_map`, pass
`axis_name='data'` instead (same psum; same key on every device -> the same single draw).
Two traps this avoids, both reproduced in tests/privacy/dp_sgd_test.py:
  * jax 0.10.2 / XLA CPU: `vmap(grad)` of a convolution under jit with a batch-sharded input
    (no shard_map) returns WRONG per-example kernel gradients (only the first shard's examples are
    right): an SPMD-partitioner bug. So never rely on jit's auto-partitioning here.
  * Inside `shard_map` (check_vma), `grad` w.r.t. replicated (invariant) params is automatically
    psum-ed over the mesh axis, so a "per-example" gradient would silently become the sum of one
    example per device -- breaking the clipping bound. Params are cast to varying first.

`method` selects how the clipped sum is computed (`CLIPPED_SUM_METHODS`, same signature, tested
equal): "vmap" (default; materialise per-example gradients, chunked by `microbatch_size`; any
model) or "ghost" (ghost clipping with book-keeping, Bu et al. 2022, in ghost.py: per-example
norms from stored layer inputs and output gradients, no per-example full gradients; models built
from nn.Conv / nn.Dense / GroupNorm / LayerNorm / RMSNorm only, anything else is a ValueError).
"""
from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from jaxmedgan.privacy import ghost, noise, secret
from jaxmedgan.sharding import DATA_AXIS

PyTree = Any
LossFn = Callable[[PyTree, PyTree], Any]  # (params, one example) -> scalar loss (or (loss, aux))


class PerExample(NamedTuple):
    """What a clipped-sum method returns: the sum plus per-example diagnostics, all [B]."""

    clipped_sum: PyTree  # like params: sum over real examples of the clipped gradients
    norms: jax.Array  # f32 [B]: global L2 norm of each example's gradient before clipping
    losses: jax.Array  # f32 [B]: each example's loss value
    loss_aux: PyTree  # per-example aux of `loss_fn` (leading axis B), or None


def _batch_size(batch: PyTree, mask: jax.Array) -> int:
    sizes = {leaf.shape[0] if getattr(leaf, "ndim", 0) else None for leaf in jax.tree.leaves(batch)}
    if not sizes or None in sizes or len(sizes) != 1:
        shapes = jax.tree.map(lambda x: getattr(x, "shape", ()), batch)
        raise ValueError(f"batch leaves must share one leading (example) axis; got shapes {shapes}.")
    (size,) = sizes
    if mask.shape != (size,):
        raise ValueError(f"mask must have shape [B] = ({size},) to match the batch; got {mask.shape}.")
    return size


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, numbers.Real):  # traced values cannot be checked here
        if not (value >= 0 if allow_zero else value > 0):
            raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")


def _as_varying(tree: PyTree, axis_name: str) -> PyTree:
    """Marks replicated leaves as device-varying over `axis_name` (inside shard_map) so that
    `grad` w.r.t. them stays per device instead of being psum-ed by shard_map's transpose rule."""

    def cast(x):
        aval = jax.typeof(x)
        varying = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
        if varying is None:
            varying = getattr(aval, "vma", frozenset())  # older jax
        if axis_name in varying:
            return x
        if hasattr(jax.lax, "pcast"):
            return jax.lax.pcast(x, axis_name, to="varying")
        return jax.lax.pvary(x, axis_name)  # jax < 0.8

    return jax.tree.map(cast, tree)


def _clip_one(loss_fn: LossFn, has_aux: bool, l2_clip: float, params: PyTree, example: PyTree,
              real: jax.Array) -> tuple[PyTree, jax.Array, jax.Array, PyTree]:
    """One example: (clipped grad like params, pre-clip norm f32[], loss f32[], aux)."""
    (loss, aux), grads = jax.value_and_grad(
        loss_fn if has_aux else (lambda p, x: (loss_fn(p, x), None)), has_aux=True)(params, example)
    # NaN/inf in one example's gradient must not escape the clip (it would void the L2 bound).
    grads = jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0), grads)
    # Global L2 norm over all parameters, accumulated in f32 even for bf16 gradients.
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))
    scale = jnp.minimum(1.0, l2_clip / norm)  # norm 0 -> inf -> 1; norm inf -> 0
    scale = jnp.where(real, jnp.nan_to_num(scale, nan=0.0), 0.0)  # padding contributes exactly 0
    clipped = jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)
    return clipped, norm, jnp.asarray(loss, jnp.float32), aux


Chunk = Callable[[PyTree, jax.Array], tuple[PyTree, jax.Array, jax.Array, PyTree]]


def _microbatched(chunk: Chunk, params: PyTree, batch: PyTree, real: jax.Array,
                  microbatch_size: int | None) -> PerExample:
    """Runs `chunk(examples, real) -> (clipped sum, norms, losses, aux)` over microbatches, summed.

    Microbatch j holds the contiguous examples [j m, (j + 1) m) (m = microbatch_size). A microbatch
    with no real example (mask all 0: the tail of a padded Poisson batch, whose real examples come
    first) is skipped by `lax.cond` and contributes exactly zero. Measured on 2 CPU cores (ACGAN D,
    32 px, 64 real of 123 rows): chunks of 16 skip half the rows yet take 1.1x one pass over all
    123, each chunk running ~2.3x slower per row than the full batch; so microbatching stays
    opt-in (privacy.microbatch_size), for memory.
    """
    size = real.shape[0]
    if microbatch_size is None or microbatch_size >= size:
        return PerExample(*chunk(batch, real))
    m = -(-size // microbatch_size)  # number of microbatches
    padded = m * microbatch_size
    pad = padded - size

    def split(x, fill=None):
        if pad:  # repeat the last example (or `fill`); the padded mask is False so they add zero
            tail = (jnp.repeat(x[-1:], pad, axis=0) if fill is None
                    else jnp.full((pad, *x.shape[1:]), fill, x.dtype))
            x = jnp.concatenate([x, tail], axis=0)
        return x.reshape(m, microbatch_size, *x.shape[1:])

    def merge(y):  # [m, microbatch, ...] -> [B, ...] in the original example order
        return y.reshape(padded, *y.shape[2:])[:size]

    xs = jax.tree.map(split, batch)
    rs = split(real, fill=False)
    zero = jax.tree.map(jnp.zeros_like, params)
    shapes = jax.eval_shape(chunk, jax.tree.map(lambda x: x[0], xs), rs[0])

    def body(acc, inputs):
        x, r = inputs
        # Zeros that vary like the data (inside shard_map both branches must agree on that).
        like = jnp.sum(r, dtype=jnp.float32) * 0.0
        skip = lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype) + like.astype(a.dtype), shapes)
        s, norms, losses, aux = jax.lax.cond(jnp.any(r), lambda: chunk(x, r), skip)
        return jax.tree.map(jnp.add, acc, s), (norms, losses, aux)

    total, (norms, losses, aux) = jax.lax.scan(body, zero, (xs, rs))
    return PerExample(total, merge(norms), merge(losses), jax.tree.map(merge, aux))


def _clipped_sum_vmap(loss_fn: LossFn, params: PyTree, batch: PyTree, mask: jax.Array, *,
                      l2_clip: float, microbatch_size: int | None, has_aux: bool,
                      stop_gradient_calls: bool = False) -> PerExample:
    """Reference method: vmap(grad) per chunk of `microbatch_size` examples, clip, sum (autodiff
    honours stop_gradient itself: `stop_gradient_calls` is ghost's declaration, unused here)."""
    del stop_gradient_calls
    _batch_size(batch, mask)
    per_example = jax.vmap(lambda x, r: _clip_one(loss_fn, has_aux, l2_clip, params, x, r))

    def chunk(xs, rs):
        clipped, norms, losses, aux = per_example(xs, rs)
        return jax.tree.map(lambda g: jnp.sum(g, axis=0), clipped), norms, losses, aux

    return _microbatched(chunk, params, batch, mask > 0, microbatch_size)


def _clipped_sum_ghost(loss_fn: LossFn, params: PyTree, batch: PyTree, mask: jax.Array, *,
                       l2_clip: float, microbatch_size: int | None, has_aux: bool,
                       stop_gradient_calls: bool = False) -> PerExample:
    """Ghost clipping + book-keeping (Bu et al. 2022; see ghost.py): no per-example full gradients."""
    _batch_size(batch, mask)
    chunk = functools.partial(ghost.clipped_sum_chunk, loss_fn, params, l2_clip=l2_clip, has_aux=has_aux,
                              stop_gradient_calls=stop_gradient_calls)
    return _microbatched(chunk, params, batch, mask > 0, microbatch_size)


CLIPPED_SUM_METHODS: dict[str, Callable[..., PerExample]] = {"vmap": _clipped_sum_vmap,
                                                              "ghost": _clipped_sum_ghost}


def per_example_clipped_grad_sum(loss_fn: LossFn, params: PyTree, batch: PyTree, mask: jax.Array, *,
                                 l2_clip: float, microbatch_size: int | None = None,
                                 method: str = "vmap", has_aux: bool = False,
                                 axis_name: str | None = None, mesh: Mesh | None = None,
                                 data_axis: str = DATA_AXIS,
                                 stop_gradient_calls: bool = False) -> tuple[PyTree, dict[str, Any]]:
    """Sum over real examples (mask f32 [B] > 0) of grads clipped to L2 norm `l2_clip`; + metrics.

    batch: pytree with leading axis B; `loss_fn(params, example)` sees one example (no B axis).
    Returns `(clipped_sum like params, aux)`; aux holds f32 scalars `grad_norm_mean`,
    `grad_norm_max`, `clip_fraction`, `num_examples`, `loss_mean` (over real examples; they are
    NOT private -- monitoring only) and, with `has_aux=True`, `loss_aux`: `loss_fn`'s second output
    stacked per example [B, ...]. Sharded batch under jit: pass `mesh` (clips per shard in
    shard_map over `data_axis`, then psums); already inside shard_map: pass `axis_name`.
    `microbatch_size` then counts examples per device. `stop_gradient_calls`: the loss applies
    layers to stop_gradient-ed copies of `params` (ghost clipping then skips those calls).
    """
    if method not in CLIPPED_SUM_METHODS:
        raise ValueError(f"Unknown DP clipping method={method!r}; expected one of "
                         f"{tuple(CLIPPED_SUM_METHODS)}.")
    _check_positive("l2_clip", l2_clip)
    if microbatch_size is not None and microbatch_size < 1:
        raise ValueError(f"microbatch_size must be None or >= 1, got {microbatch_size}.")
    mask = jnp.asarray(mask)
    if mesh is not None:
        if axis_name is not None:
            raise ValueError(f"Pass either mesh (outside shard_map) or axis_name={axis_name!r} "
                             "(inside shard_map), not both.")
        return _clipped_sum_sharded(loss_fn, params, batch, mask, mesh=mesh, data_axis=data_axis,
                                    l2_clip=l2_clip, microbatch_size=microbatch_size, method=method,
                                    has_aux=has_aux, stop_gradient_calls=stop_gradient_calls)
    if axis_name is not None:
        params = _as_varying(params, axis_name)
    out = CLIPPED_SUM_METHODS[method](loss_fn, params, batch, mask, l2_clip=l2_clip,
                                      microbatch_size=microbatch_size, has_aux=has_aux,
                                      stop_gradient_calls=stop_gradient_calls)
    real = mask > 0  # `where`, not `*`: a padded example's NaN/inf must not reach the metrics
    stats = {"norm_sum": jnp.sum(jnp.where(real, out.norms, 0.0)),
             "clipped": jnp.sum(jnp.where(real, out.norms > l2_clip, False), dtype=jnp.float32),
             "count": jnp.sum(real, dtype=jnp.float32),
             "loss_sum": jnp.sum(jnp.where(real, out.losses, 0.0))}
    norm_max = jnp.max(jnp.where(real, out.norms, 0.0))
    clipped_sum = out.clipped_sum
    if axis_name is not None:
        clipped_sum, stats = jax.lax.psum((clipped_sum, stats), axis_name)
        norm_max = jax.lax.pmax(norm_max, axis_name)
    count = jnp.maximum(stats["count"], 1.0)
    aux = {"grad_norm_mean": stats["norm_sum"] / count, "grad_norm_max": norm_max,
           "clip_fraction": stats["clipped"] / count, "num_examples": stats["count"],
           "loss_mean": stats["loss_sum"] / count}
    if has_aux:
        aux["loss_aux"] = out.loss_aux
    return clipped_sum, aux


def public_grad_mean(loss_fn: LossFn, params: PyTree, batch: PyTree, *, clip: bool, l2_clip: float,
                     microbatch_size: int | None = None, method: str = "vmap", mesh: Mesh | None = None,
                     data_axis: str = DATA_AXIS) -> tuple[PyTree, jax.Array, Any]:
    """Mean gradient over the B examples of a term that holds no private data (a GAN's generated
    images): no noise. With `clip`, each example's gradient is first clipped to `l2_clip`, so the
    public term cannot swamp a clipped private one. `loss_fn(params, example) -> (loss, aux)` on one
    example, as `per_example_clipped_grad_sum(has_aux=True)`. Returns (grads like params, the mean
    loss f32 [], aux stacked per example [B, ...])."""
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if clip:
        clipped_sum, aux = per_example_clipped_grad_sum(
            loss_fn, params, batch, jnp.ones((n,), jnp.float32), l2_clip=l2_clip, microbatch_size=microbatch_size,
            method=method, has_aux=True, mesh=mesh, data_axis=data_axis)
        return jax.tree_util.tree_map(lambda g: g / n, clipped_sum), aux["loss_mean"], aux["loss_aux"]

    def mean_loss(p: PyTree) -> tuple[jax.Array, Any]:
        losses, aux = jax.vmap(loss_fn, in_axes=(None, 0))(p, batch)
        return jnp.mean(losses), aux

    (loss, aux), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
    return grads, loss, aux


def d_gradient(real_loss: LossFn, params: PyTree, real: PyTree, mask: jax.Array, dp: Any, *,
               fake_loss: LossFn | None = None, fake: PyTree | None = None,
               public_loss: Callable[[PyTree], tuple[jax.Array, Any]] | None = None, expected_batch_size: float = 1.0,
               canaries: jax.Array | None = None, mesh: Mesh | None = None,
               data_axis: str = DATA_AXIS, stop_gradient_calls: bool = False) -> tuple[PyTree, dict[str, Any]]:
    """The one private-gradient path of every family's discriminator update (pix2pix: D and G jointly).

    A family states its loss as two per-example terms:
      real_loss(params, one real example) -> (loss, aux): every term that touches real example i;
      fake_loss(params, one generated example) -> (loss, aux): terms on generated data (public);
      public_loss(params) -> (loss f32 [], aux): optional, a batch-level term on generated data only
      (PGGAN's gradient penalty at its fakes): its plain gradient is added as is, never clipped or
      noised, so it may hold a gradient of D's input gradient without forcing vmap clipping.
    real: pytree with leading axis B and mask f32 [B] (1 = real, 0 = Poisson padding); fake: leading M.

    dp (a `DPConfig`) enabled: returns the *sum-scale* gradient
        sum_i clip_C(grad real_loss_i) + E[B] * mean_j [clip_C](grad fake_loss_j) + E[B] * grad public_loss
    (fake clipped when dp.clip_fake, never noised) for `noise.gaussian_noise`, the optimiser's first
    transformation, to noise once and divide by E[B] = `expected_batch_size`. Disabled: the plain
    gradient of sum_i mask_i real_loss_i / E[B] + mean_j fake_loss_j + public_loss (same terms, no clipping), which the
    DP path equals when sigma = 0 and C is large (tested per family).
    canaries: f32 [K], 1 for the white-box canaries this step includes (`canaries.py`): canary k's
    gradient, canary_norm * C on its own coordinate of a K-vector outside D's parameters, is clipped
    like an example; their sum is `canary_sum` f32 [K] in the metrics, which the noise
    transformation noises together with the gradient (`noise_args`).
    Metrics: `dp_*` monitoring (private; see monitoring.py), `real_aux` [B, ...], `fake_aux` [M, ...],
    `fake_loss` (mean over M), and with public_loss its aux `public_aux`. `stop_gradient_calls`:
    real_loss applies layers to stop_gradient-ed copies of params (pix2pix's G term reading D); ghost
    clipping skips those calls.
    """
    if not dp.enabled:
        n_real = jnp.asarray(expected_batch_size, jnp.float32)

        def total(p):
            real_losses, real_aux = jax.vmap(real_loss, in_axes=(None, 0))(p, real)
            value = jnp.sum(jnp.where(mask > 0, real_losses, 0.0)) / n_real
            fake_losses, fake_aux = (jax.vmap(fake_loss, in_axes=(None, 0))(p, fake) if fake_loss is not None
                                     else (jnp.zeros((1,)), None))
            public, public_aux = public_loss(p) if public_loss is not None else (0.0, None)
            return value + jnp.mean(fake_losses) + public, (real_aux, fake_aux, jnp.mean(fake_losses), public_aux)

        (_, (real_aux, fake_aux, fake_mean, public_aux)), grads = jax.value_and_grad(total, has_aux=True)(params)
        out = {"real_aux": real_aux, "fake_aux": fake_aux, "fake_loss": fake_mean}
        return grads, (out if public_loss is None else {**out, "public_aux": public_aux})
    if dp.clip_method == "auto":
        raise ValueError("d_gradient needs a resolved clip method: call the family's private_config "
                         "(DPConfig.with_clip_method) first.")
    clip_kwargs = dict(l2_clip=dp.clip_bound, microbatch_size=dp.microbatch, method=dp.clip_method, mesh=mesh,
                       data_axis=data_axis)
    grads, aux = per_example_clipped_grad_sum(real_loss, params, real, mask, has_aux=True,
                                              stop_gradient_calls=stop_gradient_calls, **clip_kwargs)
    metrics = {f"dp_{k}": v for k, v in aux.items() if k != "loss_aux"}
    metrics["dp_noise_std"] = jnp.asarray(dp.noise_multiplier * dp.l2_clip / expected_batch_size, jnp.float32)
    metrics.update(real_aux=aux["loss_aux"], fake_aux=None, fake_loss=jnp.zeros((), jnp.float32))
    if fake_loss is not None:
        fake_grads, fake_mean, fake_aux = public_grad_mean(fake_loss, params, fake, clip=dp.clip_fake, **clip_kwargs)
        grads = jax.tree.map(lambda r, f: r + expected_batch_size * f, grads, fake_grads)
        metrics.update(fake_aux=fake_aux, fake_loss=fake_mean)
    if public_loss is not None:
        public_grads, metrics["public_aux"] = jax.grad(public_loss, has_aux=True)(params)
        grads = jax.tree.map(lambda r, f: r + expected_batch_size * f, grads, public_grads)
    if canaries is not None:
        norm = dp.canary_norm * dp.l2_clip  # before clipping
        metrics["canary_sum"] = norm * min(1.0, dp.clip_bound / norm) * canaries.astype(jnp.float32)
    return grads, metrics


def noise_args(batch: dict, metrics: dict) -> dict[str, jax.Array]:
    """The extra arguments of a private optimiser's update: the step's secret noise key and (popped
    from `d_gradient`'s metrics) the canaries' clipped sum, noised together with the gradient."""
    args = {"noise_key": batch_noise_key(batch)}
    if "canary_sum" in metrics:
        args["canary_sum"] = metrics.pop("canary_sum")
    return args


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` [B] over real examples (mask [B] > 0); padding's NaN/inf cannot leak in."""
    real = mask > 0
    return jnp.sum(jnp.where(real, values, 0.0)) / jnp.maximum(jnp.sum(real), 1).astype(jnp.float32)


def dp_gradient(loss_fn: LossFn, params: PyTree, batch: PyTree, mask: jax.Array, key: jax.Array, *,
                l2_clip: float, noise_multiplier: float, expected_batch_size: float,
                microbatch_size: int | None = None, method: str = "vmap", has_aux: bool = False,
                axis_name: str | None = None, mesh: Mesh | None = None,
                data_axis: str = DATA_AXIS) -> tuple[PyTree, dict[str, Any]]:
    """Private mean gradient (like params) and metrics `dp_*` (f32 scalars; + `dp_loss_aux` [B]).

    = (sum of per-example clipped grads + N(0, sigma^2 C^2)) / expected_batch_size, with
    C = l2_clip, sigma = noise_multiplier: the clipped sum of `per_example_clipped_grad_sum` through
    the noise transformation the trainers chain before their optimiser (`noise.gaussian_noise`), in
    one call. `key` must be the same on every device (replicated); `mesh`/`axis_name` as in
    `per_example_clipped_grad_sum`.
    """
    clipped_sum, aux = per_example_clipped_grad_sum(
        loss_fn, params, batch, mask, l2_clip=l2_clip, microbatch_size=microbatch_size,
        method=method, has_aux=has_aux, axis_name=axis_name, mesh=mesh, data_axis=data_axis)
    tx = noise.gaussian_noise(noise_multiplier, l2_clip, expected_batch_size)
    grads, _ = tx.update(clipped_sum, tx.init(params), noise_key=key)
    metrics = {f"dp_{k}": v for k, v in aux.items()}
    # Std of the noise on each coordinate of the mean gradient: compare with the signal's size.
    metrics["dp_noise_std"] = jnp.asarray(noise_multiplier * l2_clip / expected_batch_size, jnp.float32)
    return grads, metrics


def _clipped_sum_sharded(loss_fn: LossFn, params: PyTree, batch: PyTree, mask: jax.Array, *,
                         mesh: Mesh, data_axis: str, has_aux: bool,
                         **kwargs) -> tuple[PyTree, dict[str, Any]]:
    """Runs `per_example_clipped_grad_sum` per shard of `mesh`'s `data_axis` and psums the result."""
    if data_axis not in mesh.shape:
        raise ValueError(f"data_axis={data_axis!r} is not an axis of the mesh {dict(mesh.shape)}.")
    size, shards = _batch_size(batch, mask), mesh.shape[data_axis]
    if size % shards:
        raise ValueError(f"DP batch size {size} (padded Poisson batch) must be divisible by the "
                         f"{shards} devices of mesh axis {data_axis!r}; see sampling.max_batch_size_for.")
    local = functools.partial(per_example_clipped_grad_sum, loss_fn, axis_name=data_axis,
                              has_aux=has_aux, **kwargs)
    metric_specs = {k: P() for k in ("grad_norm_mean", "grad_norm_max", "clip_fraction",
                                      "num_examples", "loss_mean")}
    if has_aux:
        metric_specs["loss_aux"] = P(data_axis)
    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(data_axis), P(data_axis)),
                       out_specs=(P(), metric_specs))
    return fn(params, batch, mask)


def batch_canaries(batch: dict) -> jax.Array | None:
    """The step's active white-box canaries f32 [K] a DP batch carries on every row (None without)."""
    field = batch.get(secret.CANARY_FIELD)
    return None if field is None else field[0]


def batch_noise_key(batch: dict) -> jax.Array:
    """The step's noise key (uint32 [2]) that a DP batch carries on every row (the pipeline draws it
    from the run's secret, `secret.py`; never from the public config seed)."""
    if secret.NOISE_KEY_FIELD not in batch:
        raise ValueError(f"A DP-SGD batch must carry {secret.NOISE_KEY_FIELD!r} (u32 [B, 2], the step's secret "
                         "noise key, added by data.pipeline.poisson_train_dataset); got fields "
                         f"{sorted(batch)}.")
    return batch[secret.NOISE_KEY_FIELD][0]
