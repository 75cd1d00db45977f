"""Ghost clipping (method="ghost"): same clipped sum and per-example norms as method="vmap"."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan import sharding
from jaxmedgan.losses import gan as gan_losses
from jaxmedgan.models import dcgan, pggan, stylegan2
from jaxmedgan.privacy import dp_sgd, ghost

IMAGE = 16
B = 6
SCALE = np.array([0.1, 1, 3, 0.5, 10, 2], np.float32)  # per-example input scale -> spread of norms
MASK = np.array([1, 1, 1, 1, 1, 0], np.float32)


@functools.lru_cache(maxsize=None)
def _disc(norm: str, num_classes: int, dropout: float = 0.0):
    d = dcgan.Discriminator(image_size=IMAGE, base_features=2, max_features=4, num_classes=num_classes,
                            norm=norm, dropout=dropout)
    params = d.init(jax.random.PRNGKey(0), jnp.zeros((1, IMAGE, IMAGE, 1)), train=False)["params"]
    return d, params


@functools.lru_cache(maxsize=None)  # one function object per model, so jit caches are reused
def _d_loss(d):
    """The trainer's real-example loss: softplus(-D(x)) (+ class CE), per-example dropout key, aux."""
    def loss(params, ex):
        logit, cls = d.apply({"params": params}, ex["image"][None], train=True, rngs={"dropout": ex["key"]})
        total = jax.nn.softplus(-logit[0])
        if cls is not None:
            total = total + gan_losses.class_cross_entropy(cls, ex["label"][None])[0]
        return total, {"logit": logit[0]}
    return loss


def _batch(n=B, seed=0, scale=SCALE):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, IMAGE, IMAGE, 1)).astype(np.float32) * scale[:, None, None, None]
    return {"image": images, "label": rng.integers(0, 3, n).astype(np.int32),
            "key": jax.random.split(jax.random.PRNGKey(seed), n)}


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _method_jit(loss_fn, params, batch, mask, clip, method, microbatch_size, has_aux):
    return dp_sgd.CLIPPED_SUM_METHODS[method](loss_fn, params, batch, mask, l2_clip=clip,
                                              microbatch_size=microbatch_size, has_aux=has_aux)


def _method(loss_fn, params, batch, mask, clip, *, method, microbatch_size=None, has_aux=True):
    """One registered clipped-sum method, jitted (positional statics: one cache entry per setting)."""
    return _method_jit(loss_fn, params, batch, mask, clip, method, microbatch_size, has_aux)


@functools.partial(jax.jit, static_argnames=("loss_fn", "norm_mode", "has_aux"))
def _chunk(loss_fn, params, batch, real, clip, *, norm_mode, has_aux=True):
    return ghost.clipped_sum_chunk(loss_fn, params, batch, real, l2_clip=clip, has_aux=has_aux,
                                   norm_mode=norm_mode)


def _assert_equal(got, want, clip):
    """Same clipped sum (to float32 tolerance of a sum of B gradients) and same per-example norms."""
    np.testing.assert_allclose(np.asarray(got.norms), np.asarray(want.norms), rtol=2e-5)
    scale = clip * B  # the clipped sum is at most B * C in norm: atol relative to that
    np.testing.assert_allclose(_flat(got.clipped_sum), _flat(want.clipped_sum), rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(np.asarray(got.losses), np.asarray(want.losses), rtol=1e-6)


@pytest.mark.parametrize("norm,num_classes,dropout", [("group", 0, 0.0), ("layer", 0, 0.0),
                                                      ("group", 3, 0.0), ("layer", 3, 0.3)])
def test_ghost_equals_vmap_on_dcgan_discriminator(norm, num_classes, dropout):
    d, params = _disc(norm, num_classes, dropout)
    loss = _d_loss(d)
    batch = _batch()
    want = _method(loss, params, batch, MASK, 1.0, method="vmap")
    clip = float(np.median(np.asarray(want.norms)[:5]))  # about half the real examples are clipped
    want = _method(loss, params, batch, MASK, clip, method="vmap")
    got = _method(loss, params, batch, MASK, clip, method="ghost")
    assert (np.asarray(want.norms)[:5] > clip).any() and (np.asarray(want.norms)[:5] < clip).any()
    _assert_equal(got, want, clip)
    np.testing.assert_allclose(got.loss_aux["logit"], want.loss_aux["logit"], rtol=1e-6)


def test_ghost_norm_route_equals_vmap_on_dcgan():
    """"auto" instantiates per-example grads for these tiny convs; force the ghost-norm route too."""
    d, params = _disc("group", 3)
    loss = _d_loss(d)
    batch = _batch(seed=1)
    want = _method(loss, params, batch, MASK, 0.3, method="vmap")
    total, norms, losses, _ = _chunk(loss, params, batch, jnp.asarray(MASK > 0), 0.3, norm_mode="ghost")
    _assert_equal(dp_sgd.PerExample(total, norms, losses, None), want, 0.3)


class _Mixed(nn.Module):
    """Dense on [positions, features] (T = 4 > 1) with LayerNorm/RMSNorm and a 1-D conv, plus 2-D conv
    options (stride 1 SAME, explicit asymmetric padding, kernel dilation, VALID, no bias)."""

    @nn.compact
    def __call__(self, seq, img):  # seq [4, 8], img [1, 9, 9, 2]
        h = nn.gelu(nn.LayerNorm()(nn.Dense(16)(seq)))
        h = nn.Conv(6, (3,), padding="VALID")(h[None])[0]  # 1-D conv over the 4 positions
        h = nn.RMSNorm()(jnp.tanh(h))
        out = nn.Dense(1)(h.reshape(-1))[0]
        v = nn.tanh(nn.Conv(3, (3, 3), padding="SAME")(img))
        v = nn.tanh(nn.Conv(4, (2, 3), strides=(2, 1), padding=((1, 0), (2, 1)))(v))
        v = nn.tanh(nn.Conv(3, (2, 2), kernel_dilation=2, padding="VALID", use_bias=False)(v))
        return out + jnp.sum(nn.Dense(2)(v.reshape(v.shape[0], -1)) ** 2)


def test_ghost_equals_vmap_on_dense_and_conv_options():
    model = _Mixed()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((4, 8)), jnp.zeros((1, 9, 9, 2)))["params"]

    def loss(p, ex):
        return jnp.square(model.apply({"params": p}, ex["seq"], ex["img"][None]) - ex["y"])

    rng = np.random.default_rng(2)
    batch = {"seq": rng.normal(size=(B, 4, 8)).astype(np.float32) * SCALE[:, None, None],
             "img": rng.normal(size=(B, 9, 9, 2)).astype(np.float32) * SCALE[:, None, None, None],
             "y": rng.normal(size=(B,)).astype(np.float32)}
    want = _method(loss, params, batch, MASK, 0.5, method="vmap", has_aux=False)
    for norm_mode in ("ghost", "direct"):  # "auto" picks one of these per layer
        total, norms, losses, _ = _chunk(loss, params, batch, jnp.asarray(MASK > 0), 0.5, norm_mode=norm_mode,
                                         has_aux=False)
        _assert_equal(dp_sgd.PerExample(total, norms, losses, None), want, 0.5)


@pytest.mark.parametrize("kernel,strides,padding", [
    ((4, 4), (2, 2), "SAME"),  # DCGAN: space-to-depth route
    ((2, 3), (2, 1), ((0, 1), (2, 1))),  # space-to-depth, asymmetric explicit padding
    ((3, 3), (2, 2), "SAME"),  # 3 % 2 != 0: strided-slice route
])
def test_conv_patches_times_kernel_is_the_conv(kernel, strides, padding):
    """Unfolded patches [n, T, prod(k) * C] in HWIO order: patches @ kernel.reshape(-1, O) == conv."""
    conv = nn.Conv(5, kernel, strides, padding=padding, use_bias=False)
    x = np.random.default_rng(7).normal(size=(3, 1, 9, 8, 2)).astype(np.float32)
    variables = conv.init(jax.random.PRNGKey(0), x[0])
    want = np.stack([conv.apply(variables, xi) for xi in x])
    patches = ghost._conv_patches(conv, jnp.asarray(x), want.shape[1:])
    got = jnp.einsum("ntk,ko->nto", patches, variables["params"]["kernel"].reshape(-1, 5))
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


def test_padding_contributes_exactly_zero_even_if_nan_and_microbatching_matches():
    d, params = _disc("layer", 3, 0.3)  # the parametrized test's model: its compilations are reused
    loss = _d_loss(d)
    batch = _batch(seed=4)
    batch["image"][[1, 4]] = np.nan  # padding may hold garbage; it must not leak
    mask = np.array([1, 0, 1, 1, 0, 1], np.float32)
    want = _method(loss, params, batch, mask, 0.05, method="vmap")
    for micro in (None, 4):  # 4 needs padding of B=6
        got = _method(loss, params, batch, mask, 0.05, method="ghost", microbatch_size=micro)
        np.testing.assert_allclose(_flat(got.clipped_sum), _flat(want.clipped_sum), rtol=1e-4, atol=1e-8)
        real = mask > 0
        np.testing.assert_allclose(np.asarray(got.norms)[real], np.asarray(want.norms)[real], rtol=2e-5)
        np.testing.assert_allclose(got.loss_aux["logit"][real], want.loss_aux["logit"][real], rtol=1e-6)
    zero = _method(loss, params, batch, np.zeros(B, np.float32), 0.05, method="ghost")
    assert not _flat(zero.clipped_sum).any()


def test_sharded_mesh_ghost_equals_unsharded_vmap():
    """Per-shard ghost clipping inside shard_map (8 devices) + psum + one noise draw = 1-device vmap."""
    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    mesh = sharding.make_mesh(None)
    d, params = _disc("group", 3)
    loss = _d_loss(d)
    n = 16
    batch = _batch(n, seed=5, scale=np.linspace(0.1, 4, n).astype(np.float32))
    mask = (np.arange(n) % 5 != 0).astype(np.float32)
    kw = dict(l2_clip=0.2, noise_multiplier=1.3, expected_batch_size=12.0, has_aux=True)
    key = jax.random.PRNGKey(3)
    want, want_m = jax.jit(functools.partial(dp_sgd.dp_gradient, loss, **kw))(params, batch, mask, key)
    rep, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    f = functools.partial(dp_sgd.dp_gradient, loss, mesh=mesh, method="ghost", microbatch_size=1, **kw)
    got, got_m = jax.jit(f, in_shardings=(rep, data, data, rep))(
        params, jax.device_put(batch, data), jax.device_put(mask, data), key)
    np.testing.assert_allclose(_flat(got), _flat(want), rtol=1e-4, atol=1e-6)
    for k in ("dp_grad_norm_mean", "dp_grad_norm_max", "dp_clip_fraction", "dp_num_examples", "dp_loss_mean"):
        np.testing.assert_allclose(got_m[k], want_m[k], rtol=2e-5, err_msg=k)
    # Logits from a batch of 2 (per device) vs 16: different conv blocking, float32 rounding. A
    # microbatch of padding only is skipped: its rows' aux is 0, so compare the real rows.
    real = mask > 0
    np.testing.assert_allclose(got_m["dp_loss_aux"]["logit"][real], want_m["dp_loss_aux"]["logit"][real],
                               rtol=1e-5, atol=1e-7)
    assert not np.asarray(got_m["dp_loss_aux"]["logit"])[~real].any()


class _WithEmbed(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.sum(nn.Dense(2)(x) * nn.Embed(3, 2)(jnp.int32(1)))


class _GroupedConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.sum(nn.Conv(4, (3, 3), feature_group_count=2)(x))


def test_unsupported_models_raise_clear_errors():
    f = functools.partial(dp_sgd.per_example_clipped_grad_sum, l2_clip=1.0, method="ghost")
    x = jnp.ones((2, 4))
    cases = [(_WithEmbed(), x, r"'Embed_0/embedding' belongs to a Embed layer .*nn.Conv, nn.ConvTranspose, nn.Dense"),
             (_GroupedConv(), jnp.ones((2, 5, 5, 2)), "feature_group_count=2.*method='vmap'"),
             (stylegan2.Conv2d(2, 3, up=2), jnp.ones((2, 1, 4, 4, 1)), r"Conv2d\(up=2\).*clip_method='vmap'")]
    for model, xs, match in cases:
        params = model.init(jax.random.PRNGKey(0), xs[0])["params"]
        with pytest.raises(ValueError, match=match):
            f(lambda p, xi, m=model: m.apply({"params": p}, xi), params, xs, jnp.ones(2))
    raw = {"w": jnp.ones((4, 4))}
    with pytest.raises(ValueError, match="'w' is read by the loss outside any flax layer call"):
        f(lambda p, xi: jnp.sum(xi @ p["w"]), raw, x, jnp.ones(2))
    with pytest.raises(ValueError, match="norm_mode must be one of"):
        ghost.clipped_sum_chunk(lambda p, xi: jnp.sum(xi), raw, x, jnp.ones(2, bool), l2_clip=1.0,
                                has_aux=False, norm_mode="fast")


def _equal_to_vmap(loss, params, batch, clip, *, stop_gradient_calls=False):
    """Ghost (each norm route) == vmap on `batch` with some examples clipped, some not."""
    want = _method(loss, params, batch, MASK, clip, method="vmap", has_aux=False)
    norms = np.asarray(want.norms)[:5]
    assert (norms > clip).any() and (norms < clip).any(), norms
    for norm_mode in ("ghost", "direct"):
        got = jax.jit(functools.partial(ghost.clipped_sum_chunk, loss, l2_clip=clip, has_aux=False,
                                        norm_mode=norm_mode, stop_gradient_calls=stop_gradient_calls))(
            params, batch, jnp.asarray(MASK > 0))
        _assert_equal(dp_sgd.PerExample(got[0], got[1], got[2], None), want, clip)


class _SharedAndTransposed(nn.Module):
    """A Dense applied twice and a conv applied to two inputs (weights shared within one example),
    transposed convs (SAME stride 2 with kernel 4 and 3, VALID stride 2, explicit pads wider than the
    kernel), and a frozen copy's call."""

    @nn.compact
    def __call__(self, seq, img, frozen=None):  # seq [4, 8], img [1, 6, 6, 2]
        dense = nn.Dense(8)
        h = nn.tanh(dense(nn.tanh(dense(seq))))
        conv = nn.Conv(3, (3, 3))
        v = nn.tanh(conv(img)) + nn.tanh(conv(img[:, ::-1]))
        v = nn.tanh(nn.ConvTranspose(4, (4, 4), (2, 2), padding="SAME")(v))  # 12 x 12
        v = nn.tanh(nn.ConvTranspose(2, (3, 3), (2, 2), padding="SAME", use_bias=False)(v))  # 24 x 24
        v = nn.tanh(nn.ConvTranspose(2, (2, 3), (2, 1), padding="VALID")(v))
        # Explicit pads beyond k - 1 (the output gradient's windows then start inside it: a crop).
        v = nn.ConvTranspose(1, (2, 2), (2, 2), padding=((3, 1), (0, 2)))(v)
        return jnp.sum(h**2) + jnp.sum(jnp.sin(v))


def test_shared_calls_and_transposed_convs_equal_vmap():
    model = _SharedAndTransposed()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((4, 8)), jnp.zeros((1, 6, 6, 2)))["params"]
    rng = np.random.default_rng(3)
    batch = {"seq": rng.normal(size=(B, 4, 8)).astype(np.float32) * SCALE[:, None, None],
             "img": rng.normal(size=(B, 6, 6, 2)).astype(np.float32) * SCALE[:, None, None, None]}
    loss = lambda p, ex: model.apply({"params": p}, ex["seq"], ex["img"][None])
    norms = np.asarray(_method(loss, params, batch, MASK, 1.0, method="vmap", has_aux=False).norms)
    _equal_to_vmap(loss, params, batch, float(np.median(norms[:5])))


def test_stop_gradient_calls_are_skipped_only_when_declared():
    """pix2pix's G term reads D through stop_gradient: that call must not add to D's clipped gradient."""
    dense = nn.Dense(3)
    params = {"a": dense.init(jax.random.PRNGKey(0), jnp.zeros((5,)))["params"],
              "b": dense.init(jax.random.PRNGKey(1), jnp.zeros((3,)))["params"]}

    def loss(p, ex):
        h = jnp.tanh(dense.apply({"params": p["a"]}, ex["x"]))
        frozen = jax.lax.stop_gradient(p["a"])
        return jnp.sum(h**2) + jnp.sum(dense.apply({"params": frozen}, ex["x"] * 2.0) ** 3) \
            + jnp.sum(nn.Dense(3).apply({"params": p["b"]}, h) ** 2)

    rng = np.random.default_rng(4)
    batch = {"x": rng.normal(size=(B, 5)).astype(np.float32) * SCALE[:, None]}
    norms = np.asarray(_method(loss, params, batch, MASK, 1.0, method="vmap", has_aux=False).norms)
    _equal_to_vmap(loss, params, batch, float(np.median(norms[:5])), stop_gradient_calls=True)
    with pytest.raises(ValueError, match="not a leaf of the params.*stop_gradient_calls=True"):
        ghost.clipped_sum_chunk(loss, params, batch, jnp.ones(B, bool), l2_clip=1.0, has_aux=False)


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_stylegan2_discriminator_equals_vmap(c_dim=3):
    """Equalised-lr convs, FIR down-sampling (resnet skips), minibatch-stddev per example, the label
    mapping and the projection head: `LinearLayer`s and plain ops only."""
    d = stylegan2.Discriminator(c_dim=c_dim, img_resolution=16, img_channels=1, channel_base=64, channel_max=8,
                                mbstd_group_size=1, mapping_layers=2)
    labels = jnp.zeros((1,), jnp.int32) if c_dim else None
    params = d.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)), labels)["params"]

    def loss(p, ex):
        return jax.nn.softplus(-d.apply({"params": p}, ex["image"][None], ex["label"][None] if c_dim else None)[0])

    rng = np.random.default_rng(5)
    batch = {"image": rng.normal(size=(B, 16, 16, 1)).astype(np.float32) * SCALE[:, None, None, None],
             "label": rng.integers(0, 3, B).astype(np.int32)}
    norms = np.asarray(_method(loss, params, batch, MASK, 1.0, method="vmap", has_aux=False).norms)
    _equal_to_vmap(loss, params, batch, float(np.median(norms[:5])))


def test_pggan_discriminator_while_fading_equals_vmap():
    """All levels' parameters exist; the blocks above the current level are never read (gradient 0)."""
    d = pggan.Discriminator(resolution=16, channels=1, channel_base=32, channel_max=8, mbstd_group_size=1)
    params = pggan.init_params(d, jax.random.PRNGKey(0), jnp.zeros((2, 4, 4, 1)), 0)

    def loss(p, ex):
        score = d.apply({"params": p}, ex["image"][None], 1, 0.3)[0]
        return -score + 0.001 * score**2

    rng = np.random.default_rng(6)
    batch = {"image": rng.normal(size=(B, 8, 8, 1)).astype(np.float32) * SCALE[:, None, None, None]}
    norms = np.asarray(_method(loss, params, batch, MASK, 1.0, method="vmap", has_aux=False).norms)
    _equal_to_vmap(loss, params, batch, float(np.median(norms[:5])))
    got = _method(loss, params, batch, MASK, 1.0, method="ghost", has_aux=False)
    assert not _flat(got.clipped_sum["b16_conv0"]).any()  # a 16 px block at the 8 px level
