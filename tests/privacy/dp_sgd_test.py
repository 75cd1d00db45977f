"""DP-SGD gradient: clipping against a per-example Python loop, masks, microbatching, sharding, noise."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxmedgan import sharding
from jaxmedgan.losses import gan as gan_losses
from jaxmedgan.models import dcgan
from jaxmedgan.privacy import dp_sgd, noise

IMAGE = 16


@functools.lru_cache(maxsize=None)
def _disc():
    """Tiny ACGAN discriminator (LayerNorm, so per-example) and its params."""
    d = dcgan.Discriminator(image_size=IMAGE, base_features=2, max_features=4, num_classes=3, norm="layer")
    params = d.init(jax.random.PRNGKey(0), jnp.zeros((2, IMAGE, IMAGE, 1)), train=False)["params"]
    return d, params


def d_real_loss(params, example):
    """D's terms that see ONE real example: softplus(-D(x)) + class CE; example image [H,W,1]."""
    d, _ = _disc()
    logit, cls = d.apply({"params": params}, example["image"][None], train=False)
    real = jax.nn.softplus(-logit)  # the real term of the non-saturating logistic D loss
    return (real + gan_losses.class_cross_entropy(cls, example["label"][None]))[0]


_STATIC = ("loss_fn", "microbatch_size", "method", "has_aux", "axis_name", "mesh", "data_axis")
# l2_clip is passed as an array (traced), so one compilation serves every clip norm of a shape.
clipped_sum = jax.jit(dp_sgd.per_example_clipped_grad_sum, static_argnames=_STATIC)
dp_gradient = jax.jit(dp_sgd.dp_gradient,
                      static_argnames=_STATIC + ("noise_multiplier", "expected_batch_size"))
grad_one = jax.jit(jax.grad(d_real_loss))


def _batch(n, seed=0, scale=None):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, IMAGE, IMAGE, 1)).astype(np.float32)
    if scale is not None:  # per-example input scale -> very different gradient norms
        images *= np.asarray(scale, np.float32)[:, None, None, None]
    return {"image": images, "label": rng.integers(0, 3, n).astype(np.int32)}


def _flat64(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _loop_reference(loss_fn, params, batch, mask, clip):
    """Each example's grad by jax.grad ONE AT A TIME, clipped in float64 numpy, summed."""
    assert loss_fn is d_real_loss
    n = len(mask)
    total, norms = 0.0, []
    for i in range(n):
        g = _flat64(grad_one(params, jax.tree.map(lambda x: x[i], batch)))
        norm = np.linalg.norm(g)
        norms.append(norm)
        if mask[i] > 0:
            total = total + g * min(1.0, clip / norm)
    return total, np.asarray(norms)


def _clip_for(params, batch):
    """A clip norm at the median per-example gradient norm: half the examples get clipped."""
    _, norms = _loop_reference(d_real_loss, params, batch, np.ones(len(batch["label"])), 1.0)
    return float(np.median(norms)), norms


def _loop_reference_simple(params, batch, mask, clip):
    return _loop_reference(d_real_loss, params, batch, mask, clip)[0]


def _c(x):
    return jnp.asarray(x, jnp.float32)


B = 6  # most tests share this batch size, hence one compilation of the clipped sum


def test_clipped_sum_matches_per_example_loop_reference():
    _, params = _disc()
    batch = _batch(B, scale=[0.1, 1, 3, 0.5, 10, 2])
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
    clip, norms = _clip_for(params, batch)
    expected = _loop_reference_simple(params, batch, mask, clip)
    got, aux = clipped_sum(d_real_loss, params, batch, mask, l2_clip=_c(clip))
    np.testing.assert_allclose(_flat64(got), expected, rtol=1e-5, atol=1e-7)
    real = norms[:5]
    np.testing.assert_allclose(aux["grad_norm_mean"], real.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["grad_norm_max"], real.max(), rtol=1e-5)
    np.testing.assert_allclose(aux["clip_fraction"], np.mean(real > clip), rtol=1e-6)
    assert float(aux["num_examples"]) == 5.0


def test_each_clipped_gradient_has_norm_at_most_c_and_exactly_c_when_large():
    _, params = _disc()
    batch = _batch(B, seed=1, scale=[0.01, 0.1, 1, 5, 20, 50])
    clip, norms = _clip_for(params, batch)
    assert (norms > clip).any() and (norms < clip).any()
    for i in range(B):  # a one-hot mask isolates example i's clipped gradient
        one, _ = clipped_sum(d_real_loss, params, batch, np.eye(B, dtype=np.float32)[i], l2_clip=_c(clip))
        norm = np.linalg.norm(_flat64(one))
        assert norm <= clip * (1 + 1e-5), (i, norm, clip)
        if norms[i] > clip:
            np.testing.assert_allclose(norm, clip, rtol=1e-5)
        else:  # untouched below the clip
            raw = _flat64(grad_one(params, jax.tree.map(lambda x: x[i], batch)))
            np.testing.assert_allclose(_flat64(one), raw, rtol=1e-5, atol=1e-8)


def test_masked_examples_contribute_exactly_zero_even_if_nan():
    _, params = _disc()
    batch = _batch(B, seed=2)
    batch["image"][[1, 4]] = np.nan  # padding may hold garbage; it must not leak
    mask = np.array([1, 0, 1, 1, 0, 1], np.float32)
    got, aux = clipped_sum(d_real_loss, params, batch, mask, l2_clip=_c(0.05))
    want = _loop_reference_simple(params, batch, mask, 0.05)
    np.testing.assert_allclose(_flat64(got), want, rtol=1e-5, atol=1e-8)
    for k in ("grad_norm_mean", "grad_norm_max", "clip_fraction", "loss_mean"):
        assert np.isfinite(aux[k]), k
    assert float(aux["num_examples"]) == 4.0
    zero, zero_aux = clipped_sum(d_real_loss, params, batch, np.zeros(B, np.float32), l2_clip=_c(0.05))
    assert not _flat64(zero).any() and float(zero_aux["num_examples"]) == 0.0


@pytest.mark.parametrize("microbatch_size", [2, 4])  # 4 needs padding of B=6
def test_microbatched_equals_full_batch(microbatch_size):
    _, params = _disc()
    batch = _batch(B, seed=3, scale=np.linspace(0.2, 5, B))
    mask = np.array([1, 1, 0, 1, 1, 1], np.float32)
    full, full_aux = clipped_sum(d_real_loss, params, batch, mask, l2_clip=_c(0.3))
    micro, micro_aux = clipped_sum(d_real_loss, params, batch, mask, l2_clip=_c(0.3),
                                   microbatch_size=microbatch_size)
    np.testing.assert_allclose(_flat64(micro), _flat64(full), rtol=1e-5, atol=1e-8)
    for k in full_aux:
        np.testing.assert_allclose(micro_aux[k], full_aux[k], rtol=1e-5, err_msg=k)


def _loss_with_logit(p, ex):
    d, _ = _disc()
    logit, _ = d.apply({"params": p}, ex["image"][None], train=False)
    return jax.nn.softplus(-logit[0]), {"logit": logit[0]}


@pytest.mark.parametrize("microbatch_size", [None, 4])
def test_has_aux_returns_per_example_outputs_in_order(microbatch_size):
    d, params = _disc()
    batch = _batch(B, seed=4)
    want = d.apply({"params": params}, batch["image"], train=False)[0]
    _, aux = clipped_sum(_loss_with_logit, params, batch, np.ones(B, np.float32), l2_clip=_c(1.0),
                         microbatch_size=microbatch_size, has_aux=True)
    np.testing.assert_allclose(aux["loss_aux"]["logit"], want, rtol=1e-5, atol=1e-6)


def test_matches_optax_per_example_clipping():
    """optax.contrib.differentially_private_aggregate (noise 0) clips per-example grads, then means."""
    _, params = _disc()
    batch = _batch(B, seed=5, scale=[0.1, 1, 3, 0.5, 10, 2])
    per_example = jax.jit(jax.vmap(jax.grad(d_real_loss), in_axes=(None, 0)))(params, batch)
    tx = optax.contrib.differentially_private_aggregate(0.2, 0.0, key=0)
    mean, _ = tx.update(per_example, tx.init(params))
    got, _ = clipped_sum(d_real_loss, params, batch, np.ones(B, np.float32), l2_clip=_c(0.2))
    np.testing.assert_allclose(_flat64(got) / B, _flat64(mean), rtol=1e-5, atol=1e-8)


@pytest.mark.filterwarnings("ignore:optax.global_norm is deprecated")  # inside jax_privacy 2.0.0
def test_matches_jax_privacy_clipped_grad():
    jax_privacy = pytest.importorskip("jax_privacy")
    _, params = _disc()
    batch = _batch(B, seed=6, scale=[0.1, 1, 3, 0.5, 10, 2])
    mask = np.array([1, 1, 1, 0, 1, 1], np.float32)
    ref_fn = jax_privacy.clipped_grad(d_real_loss, l2_clip_norm=0.2, batch_argnums=1, keep_batch_dim=False,
                                      return_grad_norms=True)
    ref, ref_aux = jax.jit(ref_fn)(params, batch, is_padding_example=jnp.asarray(mask == 0))
    got, aux = clipped_sum(d_real_loss, params, batch, mask, l2_clip=_c(0.2))
    np.testing.assert_allclose(_flat64(got), _flat64(ref), rtol=1e-5, atol=1e-8)
    real_norms = np.asarray(ref_aux.grad_norms)[mask > 0]
    np.testing.assert_allclose(aux["grad_norm_mean"], real_norms.mean(), rtol=1e-5)


def test_dp_gradient_is_clipped_sum_over_expected_batch_size_without_noise():
    _, params = _disc()
    batch = _batch(B, seed=7)
    mask = np.ones(B, np.float32)
    grads, metrics = dp_gradient(d_real_loss, params, batch, mask, jax.random.PRNGKey(0),
                                 l2_clip=_c(0.1), noise_multiplier=0.0, expected_batch_size=4.0)
    total, _ = clipped_sum(d_real_loss, params, batch, mask, l2_clip=_c(0.1))
    np.testing.assert_allclose(_flat64(grads), _flat64(total) / 4.0, rtol=1e-6)
    assert float(metrics["dp_noise_std"]) == 0.0 and "dp_clip_fraction" in metrics


def _mesh():
    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    return sharding.make_mesh(None)


SHARDED_B = 16


@functools.lru_cache(maxsize=None)
def _sharded_case():
    _, params = _disc()
    batch = _batch(SHARDED_B, seed=8, scale=np.linspace(0.1, 4, SHARDED_B))
    mask = (np.arange(SHARDED_B) % 5 != 0).astype(np.float32)
    return params, batch, mask


def _assert_same(got, want):
    (g, g_m), (w, w_m) = got, want
    np.testing.assert_allclose(_flat64(g), _flat64(w), rtol=1e-5, atol=1e-7)
    for k in w_m:
        np.testing.assert_allclose(g_m[k], w_m[k], rtol=1e-5, err_msg=k)


@pytest.mark.parametrize("noise_multiplier,microbatch_size", [(0.0, None), (1.3, 1)])
def test_sharded_jit_with_mesh_equals_unsharded(noise_multiplier, microbatch_size):
    """Batch split over 8 devices: per-shard clipping + psum + ONE noise draw = 1 device."""
    mesh = _mesh()
    params, batch, mask = _sharded_case()
    kw = dict(l2_clip=0.2, noise_multiplier=noise_multiplier, expected_batch_size=12.0)
    key = jax.random.PRNGKey(3)
    want = jax.jit(functools.partial(dp_sgd.dp_gradient, d_real_loss, **kw))(params, batch, mask, key)
    rep, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    f = functools.partial(dp_sgd.dp_gradient, d_real_loss, mesh=mesh, microbatch_size=microbatch_size, **kw)
    sharded = jax.jit(f, in_shardings=(rep, data, data, rep), out_shardings=(rep, rep))
    _assert_same(sharded(params, jax.device_put(batch, data), jax.device_put(mask, data), key), want)


def test_shard_map_with_axis_name_psums_then_adds_noise_once():
    mesh = _mesh()
    params, batch, mask = _sharded_case()
    kw = dict(l2_clip=0.2, noise_multiplier=1.1, expected_batch_size=16.0)
    key = jax.random.PRNGKey(4)
    want = jax.jit(functools.partial(dp_sgd.dp_gradient, d_real_loss, **kw))(params, batch, mask, key)
    local = functools.partial(dp_sgd.dp_gradient, d_real_loss, axis_name=sharding.DATA_AXIS, **kw)
    spec = P(sharding.DATA_AXIS)
    spmd = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec, P()), out_specs=(P(), P())))
    _assert_same(spmd(params, batch, mask, key), want)


def _conv_loss(w, x):
    y = jax.lax.conv_general_dilated(x[None], w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(y) ** 2)


@pytest.mark.xfail(strict=False, reason="jax 0.10.2 XLA SPMD bug: vmap(grad) of a conv under jit with a "
                   "batch-sharded input gives wrong per-example kernel grads; dp_sgd uses shard_map (mesh=)")
def test_upstream_bug_vmap_grad_conv_batch_sharded_jit():
    """Why dp_gradient takes `mesh`: this plain-jit reproducer fails on 8 CPU devices (jax 0.10.2)."""
    mesh = _mesh()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    w = rng.normal(size=(4, 4, 1, 2)).astype(np.float32)
    ref = np.stack([np.asarray(jax.grad(_conv_loss)(w, x[i])) for i in range(16)])
    fn = jax.jit(jax.vmap(jax.grad(_conv_loss), in_axes=(None, 0)),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)))
    np.testing.assert_allclose(fn(w, x), ref, rtol=1e-4, atol=1e-4)


def test_shard_map_per_example_grads_are_not_summed_over_devices():
    """Inside shard_map, grad w.r.t. replicated params is psum-ed by JAX; dp_sgd must undo that."""
    mesh = _mesh()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    w = rng.normal(size=(4, 4, 1, 2)).astype(np.float32)
    ref = np.stack([np.asarray(jax.grad(_conv_loss)(w, x[i])) for i in range(16)])
    spec = P(sharding.DATA_AXIS)

    def local(w, xs):  # clip 1e9: no clipping; one-hot masks would be slow, so read loss_aux instead
        return dp_sgd.per_example_clipped_grad_sum(
            lambda p, xi: (_conv_loss(p, xi), jax.grad(_conv_loss)(p, xi)), w, xs, jnp.ones(xs.shape[0]),
            l2_clip=1e9, has_aux=True, axis_name=sharding.DATA_AXIS)

    total, aux = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), spec),
                                       out_specs=(P(), {"grad_norm_mean": P(), "grad_norm_max": P(),
                                                        "clip_fraction": P(), "num_examples": P(),
                                                        "loss_mean": P(), "loss_aux": spec})))(w, x)
    np.testing.assert_allclose(total, ref.sum(0), rtol=1e-4, atol=1e-4)
    norms = np.sqrt((ref.reshape(16, -1) ** 2).sum(1))
    np.testing.assert_allclose(aux["grad_norm_mean"], norms.mean(), rtol=1e-4)
    np.testing.assert_allclose(aux["grad_norm_max"], norms.max(), rtol=1e-4)


def _linear_loss(params, example):
    return jnp.sum(example["x"] @ params["w"]) + jnp.sum(params["b"] * example["x"][:16])


@pytest.mark.parametrize("mode", ["mesh", "shard_map"])
def test_sharded_noise_has_variance_sigma2_c2_not_times_devices(mode):
    """All examples masked out, so grads * B = the noise alone: Var = (sigma C)^2 per coordinate."""
    mesh = _mesh()
    sigma, clip, b_exp = 1.7, 0.6, 8.0
    params = {"w": jnp.zeros((64, 64)), "b": jnp.zeros((16,))}
    batch = {"x": jax.random.normal(jax.random.PRNGKey(0), (16, 64))}
    mask = np.zeros(16, np.float32)
    kw = dict(l2_clip=clip, noise_multiplier=sigma, expected_batch_size=b_exp)
    data, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    if mode == "mesh":
        fn = jax.jit(functools.partial(dp_sgd.dp_gradient, _linear_loss, mesh=mesh, **kw),
                     in_shardings=(rep, data, data, rep), out_shardings=(rep, rep))
    else:
        local = functools.partial(dp_sgd.dp_gradient, _linear_loss, axis_name=sharding.DATA_AXIS, **kw)
        spec = P(sharding.DATA_AXIS)
        fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec, P()), out_specs=(P(), P())))
    samples = [_flat64(fn(params, batch, mask, jax.random.PRNGKey(100 + s))[0]) * b_exp for s in range(4)]
    noise = np.concatenate(samples)  # 4 keys x 4112 coordinates
    # Var estimate over n=16448 normals has relative sd sqrt(2/n) = 1.1%; 8 devices would be 8x.
    np.testing.assert_allclose(noise.var(), (sigma * clip) ** 2, rtol=0.05)
    assert abs(noise.mean()) < 5 * sigma * clip / np.sqrt(noise.size)
    assert not np.allclose(samples[0], samples[1])  # different keys, different noise


def test_noise_transformation_leaves_are_independent_and_keep_dtype():
    tree = {"a": jnp.zeros((100, 100)), "b": jnp.zeros((100, 100)), "h": jnp.zeros((10,), jnp.bfloat16)}
    tx = noise.gaussian_noise(0.5, 2.0, 1.0)  # sigma C = 1, E[B] = 1
    out, state = tx.update(tree, tx.init(tree), noise_key=jax.random.PRNGKey(0))
    assert float(state.noise_multiplier) == 0.5 and float(state.expected_batch_size) == 1.0  # held by the state
    a, b = np.asarray(out["a"]).ravel(), np.asarray(out["b"]).ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.05  # same shape, different keys
    np.testing.assert_allclose(a.std(), 1.0, rtol=0.05)
    assert out["h"].dtype == jnp.bfloat16


def test_errors_name_the_bad_value():
    _, params = _disc()
    batch = _batch(4)
    f = dp_sgd.per_example_clipped_grad_sum
    with pytest.raises(ValueError, match="method='nope'.*'vmap'"):
        f(d_real_loss, params, batch, np.ones(4), l2_clip=1.0, method="nope")
    with pytest.raises(ValueError, match=r"mask must have shape \[B\] = \(4,\).*\(3,\)"):
        f(d_real_loss, params, batch, np.ones(3), l2_clip=1.0)
    with pytest.raises(ValueError, match="l2_clip must be > 0, got 0"):
        f(d_real_loss, params, batch, np.ones(4), l2_clip=0.0)
    with pytest.raises(ValueError, match="microbatch_size must be None or >= 1, got 0"):
        f(d_real_loss, params, batch, np.ones(4), l2_clip=1.0, microbatch_size=0)
    with pytest.raises(ValueError, match="DP batch size 4 .* divisible by the 8 devices"):
        f(d_real_loss, params, batch, np.ones(4), l2_clip=1.0, mesh=_mesh())
    with pytest.raises(ValueError, match="either mesh .* or axis_name"):
        f(d_real_loss, params, batch, np.ones(4), l2_clip=1.0, mesh=_mesh(), axis_name="data")
    with pytest.raises(ValueError, match="noise_multiplier must be >= 0, got -1"):
        noise.gaussian_noise(-1.0, 1.0, 8.0)
    with pytest.raises(ValueError, match="expected_batch_size must be > 0"):
        noise.gaussian_noise(1.0, 1.0, 0.0)


def test_public_grad_mean_is_the_plain_or_clipped_mean_gradient():
    # loss(w, x) = <w, x>: the per-example gradient is x itself, so both forms are hand-computable.
    from jaxmedgan.privacy.dp_sgd import public_grad_mean

    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, -2.0]], np.float32)  # norms 5, 0.5, 2
    w = jnp.asarray([0.5, -1.0])
    loss = lambda params, ex: (jnp.dot(params, ex["x"]), ex["x"][0])
    grads, mean_loss, aux = public_grad_mean(loss, w, {"x": jnp.asarray(x)}, clip=False, l2_clip=1.0)
    np.testing.assert_allclose(grads, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(mean_loss, (x @ np.asarray(w)).mean(), rtol=1e-6)
    np.testing.assert_allclose(aux, x[:, 0])
    clipped = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1.0)
    grads, mean_loss, aux = public_grad_mean(loss, w, {"x": jnp.asarray(x)}, clip=True, l2_clip=1.0)
    np.testing.assert_allclose(grads, clipped.mean(0), rtol=1e-6)
    np.testing.assert_allclose(mean_loss, (x @ np.asarray(w)).mean(), rtol=1e-6)
    np.testing.assert_allclose(aux, x[:, 0])


def test_d_gradient_without_dp_is_the_plain_gradient_and_the_dp_path_meets_it():
    """DP off: grad of sum_i mask_i real_i / E[B] + mean_j fake_j. DP with sigma 0 and a huge C, through
    the noise transformation: the same. Canaries: C each when on (100 C with clipping skipped)."""
    from jaxmedgan.privacy.config import DPConfig

    _, params = _disc()
    real, fake = _batch(6, seed=1), _batch(4, seed=2)
    mask = np.array([1, 1, 1, 0, 1, 0], np.float32)
    with_aux = lambda p, ex: (d_real_loss(p, ex), jnp.zeros(()))

    def reference(p):
        real_losses = jax.vmap(d_real_loss, in_axes=(None, 0))(p, real)
        return jnp.sum(mask * real_losses) / 8.0 + jnp.mean(jax.vmap(d_real_loss, in_axes=(None, 0))(p, fake))

    want = jax.grad(reference)(params)
    plain, _ = dp_sgd.d_gradient(with_aux, params, real, mask, DPConfig(), fake_loss=with_aux, fake=fake,
                                 expected_batch_size=8.0)
    dp = DPConfig(enabled=True, noise_multiplier=0.0, l2_clip=1e6, clip_fake=False, clip_method="vmap")
    active = jnp.array([1.0, 0.0, 1.0])
    sum_scale, metrics = dp_sgd.d_gradient(with_aux, params, real, mask, dp, fake_loss=with_aux, fake=fake,
                                           expected_batch_size=8.0, canaries=active)
    tx = noise.gaussian_noise(0.0, dp.l2_clip, 8.0, num_canaries=3)
    private, state = tx.update(sum_scale, tx.init(params), noise_key=jax.random.PRNGKey(0),
                               canary_sum=metrics["canary_sum"])
    for w, a, b in zip(*(jax.tree_util.tree_leaves(t) for t in (want, plain, private))):
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b, w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state.canary_scores, [1e6, 0.0, 1e6])  # canary_norm C = 1e8 clipped to C
    unclipped = DPConfig(enabled=True, l2_clip=1.0, break_mechanism="no_clipping", clip_method="vmap")
    with pytest.raises(ValueError, match="needs a resolved clip method"):
        dp_sgd.d_gradient(with_aux, params, real, mask, DPConfig(enabled=True), expected_batch_size=8.0)
    assert DPConfig(enabled=True).with_clip_method(ghost_supported=True).clip_method == "ghost"
    assert DPConfig(enabled=True, clip_method="vmap").with_clip_method(ghost_supported=True).clip_method == "vmap"
    _, m = dp_sgd.d_gradient(with_aux, params, real, mask, unclipped, expected_batch_size=8.0, canaries=active)
    np.testing.assert_allclose(m["canary_sum"], [100.0, 0.0, 100.0])


def test_d_gradients_public_loss_is_added_unclipped_and_unnoised_at_sum_scale():
    """public_loss (a batch term on generated data): its plain gradient, times E[B] under DP, on top of
    the clipped real sum -- even when C is far below its norm; DP off: plain total gradient."""
    from jaxmedgan.privacy.config import DPConfig

    _, params = _disc()
    real, fake = _batch(6, seed=1), _batch(4, seed=2)
    mask = np.array([1, 1, 1, 0, 1, 0], np.float32)
    with_aux = lambda p, ex: (d_real_loss(p, ex), jnp.zeros(()))
    public = lambda p: (100.0 * jnp.mean(jax.vmap(d_real_loss, in_axes=(None, 0))(p, fake)), {"tag": jnp.ones(())})
    public_grad = jax.grad(lambda p: public(p)[0])(params)
    dp = DPConfig(enabled=True, noise_multiplier=0.0, l2_clip=1e-3, clip_method="vmap")
    without, _ = dp_sgd.d_gradient(with_aux, params, real, mask, dp, expected_batch_size=8.0)
    with_public, metrics = dp_sgd.d_gradient(with_aux, params, real, mask, dp, public_loss=public,
                                             expected_batch_size=8.0)
    assert metrics["public_aux"]["tag"] == 1.0
    norm = lambda t: float(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(t))))
    assert norm(without) <= 4 * 1e-3 * (1 + 1e-5)  # 4 real examples, each clipped to C
    assert norm(public_grad) > 1.0  # far above C: it would have been clipped had it been
    for a, b, g in zip(*(jax.tree_util.tree_leaves(t) for t in (with_public, without, public_grad))):
        np.testing.assert_allclose(a, b + 8.0 * g, rtol=1e-5, atol=1e-7)
    plain, out = dp_sgd.d_gradient(with_aux, params, real, mask, DPConfig(), public_loss=public, expected_batch_size=8.0)
    want = jax.grad(lambda p: jnp.sum(mask * jax.vmap(d_real_loss, in_axes=(None, 0))(p, real)) / 8.0 + public(p)[0])(params)
    for a, w in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-7)
    assert out["public_aux"]["tag"] == 1.0
