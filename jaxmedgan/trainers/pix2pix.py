"""pix2pix trainer (label map -> image): pure step functions, a `common.Family` and `train_and_evaluate`.

Losses (Isola et al. 2017; `losses/pix2pix.py`, `Objective`), per example and averaged over PatchGAN logits:
  D:  softplus(-D(m, x)) + softplus(D(m, G(m)))                 (non-saturating logistic; or hinge, loss.kind)
  G:  softplus(-D(m, G(m))) + lambda * mean |G(m) - x|          (lambda = config.loss.l1_weight, 100)
with m the one-hot label map [B,H,W,K] ("cond") and x the real image [B,H,W,C] ("image"). One step
updates D, then G against the updated D. Randomness: dropout in G only (no z, as in pix2pix).

Data-efficient options (small medical sets; issue #18):
  d_augment.kind    'diffaug' | 'ada' (augment/policy.py): D sees every pair -- real (m, x), (m, G(m))
                    in D's step and in G's step, each with its own key -- through `DAugment.pair`:
                    geometric ops (DiffAugment's translation and cutout, ADA's geometric transform)
                    move map and image identically, colour ops touch the image only, never the
                    one-hot map. The L1 term compares the un-augmented G(m) and x. An adaptive ADA p
                    moves inside the step by E[sign(D(m, x))] over the real pairs' patch logits.
  ema.enabled       an EMA of G's weights (extra['g_ema_params'], half-life ema.kimg with
                    StyleGAN2-ADA's ramp-up, `common.ema_beta`) that `generate` -- hence eval/l1,
                    the sample grids, `draw` and dual-GAN sampling -- renders with.
  model.g_upsample  'nearest' | 'fir': the U-Net decoder up-samples by resize-conv (no checkerboard
                    artefacts) instead of transposed convs ('transpose', the default).

DP-SGD (config.privacy.enabled). Unlike an unconditional GAN, pix2pix's generator reads private
data directly: the map m_i is an input and the L1 term compares with the real x_i, so G cannot be
private by post-processing. Each example's losses of BOTH nets go into one clipped function,
    l_i(d, g) = L_D(d, sg(g); m_i, x_i) + L_G(sg(d), g; m_i, x_i)
(sg = stop_gradient), whose gradient w.r.t. (d, g) is exactly (grad_d L_D, grad_g L_G). Its joint
per-example gradient is clipped to C (`privacy.dp_sgd.d_gradient`) and noised once by the two
optimisers' noise transformations (independent draws on the two halves of one vector), so a step is
ONE sampled Gaussian mechanism and `common.fit`'s accountant (one event per step) stays exact.
D and G are thus updated simultaneously from the pre-step parameters under DP. Norm layers that
mix examples are refused in D (`privacy.checks`) and in G (here). The D augmentation runs per
example inside that clipped loss (one key per example), so l_i still reads example i alone; an
adaptive ADA p (computed from D's outputs on private pairs) is refused (`DAugment.check_dp`).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan import batching, images
from jaxmedgan.augment import policy as aug_policy
from jaxmedgan.data import paired, registry
from jaxmedgan.losses.pix2pix import Objective
from jaxmedgan.models import layers, pix2pix
from jaxmedgan.privacy import dp_sgd
from jaxmedgan.privacy import noise as dp_noise
from jaxmedgan.privacy.config import DPConfig, dp_enabled
from jaxmedgan.state import GANState
from jaxmedgan.trainers import common, drawing

log = logging.getLogger(__name__)


def build_models(config: ml_collections.ConfigDict) -> tuple[pix2pix.UNetGenerator, pix2pix.PatchDiscriminator]:
    """Instantiates the U-Net G and PatchGAN D from `config.model` and `config.data`."""
    m, d = config.model, config.data
    dtype = common.compute_dtype(config)
    upsample = m.get("g_upsample", "transpose")  # absent: transposed convs, as runs before the key
    if upsample not in layers.UPSAMPLES:
        raise ValueError(f"config.model.g_upsample={upsample!r} must be one of {layers.UPSAMPLES}.")
    g = pix2pix.UNetGenerator(image_size=d.image_size, out_channels=d.channels, base_features=m.g_features,
                              max_features=m.g_max_features, bottleneck_size=m.bottleneck_size,
                              norm=m.g_norm, dropout=m.dropout, num_dropout_blocks=m.num_dropout_blocks,
                              upsample=upsample, dtype=dtype)
    disc = pix2pix.PatchDiscriminator(base_features=m.d_features, max_features=m.d_max_features,
                                      num_strided=m.d_num_strided, norm=m.d_norm, dtype=dtype)
    return g, disc


def build_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """Adam for G and D (pix2pix: lr 2e-4, beta1 0.5); under DP both with the noise transformation in
    front (G reads private maps and images, so its update is private too); white-box canaries ride
    on D's half only."""
    o = config.optim
    dp = DPConfig.from_config(config)
    steps = config.train.steps
    g_dp = dataclasses.replace(dp, canaries=0)
    return (dp_noise.private(optax.adam(o.g_lr, b1=o.b1, b2=o.b2), g_dp, config.train.batch_size, steps),
            dp_noise.private(optax.adam(o.d_lr, b1=o.b1, b2=o.b2), dp, config.train.batch_size, steps))


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> GANState:
    """Initial state (pure; jit it with out_shardings to create it sharded). Refuses a bad loss.kind,
    d_augment or an adaptive ADA p under DP before anything is built. extra: the D augmentation's
    entries (`augment.policy`) and `g_ema_params` (ema.enabled)."""
    Objective.from_config(config)
    aug = aug_policy.DAugment.from_config(config)
    aug.check_dp(dp_enabled(config))
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    k_g, k_d, k_run = jax.random.split(rng, 3)
    s, c, k = config.data.image_size, config.data.channels, config.data.num_labels
    cond = jnp.zeros((2, s, s, k))
    g_vars = g.init(k_g, cond, train=False)
    d_vars = d.init(k_d, cond, jnp.zeros((2, s, s, c)), train=False)
    extra = aug.init_extra()
    if common.ema_enabled(config):
        extra["g_ema_params"] = jax.tree_util.tree_map(jnp.copy, g_vars["params"])
    return GANState.create(k_run, g_vars, d_vars, g_tx, d_tx, extra)


def _vars(params, stats) -> dict:
    return {"params": params, **({"batch_stats": stats} if stats else {})}


def d_view(config: ml_collections.ConfigDict, cond: jax.Array, image: jax.Array, key: jax.Array | None,
           extra: dict | None) -> tuple[jax.Array, jax.Array]:
    """The pair (map f32 [N,H,W,K], image f32 [N,H,W,C]) as D sees it: `DAugment.pair` of
    `config.d_augment` (geometric ops identical for both, colour on the image only), or as is when
    inactive. key: this pair's augmentation key (needed when active); extra: the state's extra (ADA p)."""
    aug = aug_policy.DAugment.from_config(config)
    if not aug.active:
        return cond, image
    if key is None:
        raise ValueError(f"config.d_augment.kind={aug.kind!r} augments what D sees: pass the step's "
                         "augmentation key (aug_key).")
    return aug.pair(cond, image, key, extra or {})


def _split(key: jax.Array | None, n: int) -> tuple:
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


def d_loss(config, d_params, d_stats, batch: dict, fake: jax.Array, *, aug_key: jax.Array | None = None,
           extra: dict | None = None) -> tuple[jax.Array, tuple[dict, Any, jax.Array]]:
    """Mean D loss over the batch (real pairs vs generated pairs) and (metrics, new D stats, real patch
    logits f32 [B,h,w]). D sees both pairs through `d_view` (aug_key: the step's D-augmentation key,
    split for the real and the generated pairs; extra: the state's extra)."""
    _, d = build_models(config)
    obj = Objective.from_config(config)
    k_real, k_fake = _split(aug_key, 2)
    cond, real = batch["cond"], batch["image"]
    real_logit, stats = layers.apply(d, _vars(d_params, d_stats), *d_view(config, cond, real, k_real, extra),
                                     train=True)
    if stats:
        d_stats = stats
    fake_logit, stats = layers.apply(d, _vars(d_params, d_stats), *d_view(config, cond, fake, k_fake, extra),
                                     train=True)
    per_example = obj.d_loss(real_logit, fake_logit)
    metrics = {"d_loss": jnp.mean(per_example), "d_real_acc": jnp.mean(real_logit > 0),
               "d_fake_acc": jnp.mean(fake_logit < 0), "d_real_logit": jnp.mean(real_logit),
               "d_fake_logit": jnp.mean(fake_logit)}
    return jnp.mean(per_example), (metrics, stats, real_logit)


def g_loss(config, g_params, g_stats, d_variables: dict, batch: dict, rng: jax.Array, *,
           aug_key: jax.Array | None = None, extra: dict | None = None) -> tuple[jax.Array, tuple[dict, Any]]:
    """Mean G loss: softplus(-D(m, G(m))) (hinge: -D) + l1_weight * |G(m) - x|, and (metrics, new G
    stats). D sees the generated pair through `d_view` (aug_key, extra); the L1 term is un-augmented."""
    g, d = build_models(config)
    obj = Objective.from_config(config)
    fake, new_stats = layers.apply(g, _vars(g_params, g_stats), batch["cond"], train=True,
                                   rngs={"dropout": rng})
    logit, _ = layers.apply(d, d_variables, *d_view(config, batch["cond"], fake, aug_key, extra), train=True)
    total, parts = obj.g_loss(logit, fake, batch["image"])
    return total, ({"g_loss": parts["adversarial"], "g_l1": parts["l1"]}, new_stats)


def check_private_generator(config: ml_collections.ConfigDict) -> None:
    """Under DP, G reads private maps/images per example: refuse a G norm that mixes examples."""
    if dp_enabled(config) and config.model.g_norm in layers.BATCH_MIXING_NORMS:
        raise ValueError(f"DP-SGD is enabled but config.model.g_norm={config.model.g_norm!r} mixes examples; "
                         "pix2pix's generator reads private maps and images, so set g_norm to a "
                         "per-example norm such as 'instance' or 'none'.")


def private_config(config: ml_collections.ConfigDict) -> DPConfig:
    """The run's DPConfig, clip_method 'auto' resolved to ghost: ghost clipping covers the joint
    D + G loss (D's convs called on the real and the generated pair, G's convs and transposed
    convs, instance/group/layer norms; D's frozen call in G's term skipped)."""
    return DPConfig.from_config(config).with_clip_method(ghost_supported=True)


def _private_update(config, state: GANState, batch: dict, rng: jax.Array, mesh):
    """(D grads, G grads, metrics): the sum-scale clipped gradient of the joint per-example loss
    (`dp_sgd.d_gradient`; both optimisers' noise transformations noise it and divide by E[B]).
    D's three views of example i (real pair, generated pair for D's and for G's term) are augmented
    inside the loss with example i's own keys (split from fold_in(rng, 1))."""
    check_private_generator(config)
    aug = aug_policy.DAugment.from_config(config)
    aug.check_dp(True)
    g, d = build_models(config)
    obj, p = Objective.from_config(config), private_config(config)
    n = batch["image"].shape[0]
    # The augmentation's state entries (ADA's p) ride along per example: the loss runs inside
    # shard_map, which takes arrays as arguments.
    view = {k: jnp.broadcast_to(state.extra[k], (n,)) for k in aug.init_extra()}
    examples = {"image": batch["image"], "cond": batch["cond"], "key": jax.random.split(rng, n),
                "aug_key": jax.random.split(jax.random.fold_in(rng, 1), n), "aug": view}

    def loss_one(params, ex):
        cond, real = ex["cond"][None], ex["image"][None]
        k_real, k_fake, k_g = jax.random.split(ex["aug_key"], 3)
        seen = functools.partial(d_view, config, extra=ex["aug"])
        fake = g.apply({"params": params["g"]}, cond, train=True, rngs={"dropout": ex["key"]})
        real_logit = d.apply({"params": params["d"]}, *seen(cond, real, k_real), train=True)
        fake_logit = d.apply({"params": params["d"]}, *seen(cond, jax.lax.stop_gradient(fake), k_fake),
                             train=True)
        g_logit = d.apply({"params": jax.lax.stop_gradient(params["d"])}, *seen(cond, fake, k_g), train=True)
        loss, parts = obj.example_loss(real_logit, fake_logit, g_logit, fake, real)
        return loss, {**parts, "real_logit": jnp.mean(real_logit), "fake_logit": jnp.mean(fake_logit)}

    # The generated image is made from example i's private map: every term is in the clipped loss.
    # White-box canaries (privacy.canaries) own coordinates appended to D's half of the joint vector.
    grads, out = dp_sgd.d_gradient(loss_one, {"d": state.d_params, "g": state.g_params}, examples, batch["mask"],
                                   p, expected_batch_size=config.train.batch_size, mesh=mesh,
                                   stop_gradient_calls=True, canaries=dp_sgd.batch_canaries(batch))
    per_ex = out.pop("real_aux")
    out.pop("fake_aux"), out.pop("fake_loss")
    mean = functools.partial(dp_sgd.masked_mean, mask=batch["mask"])  # monitoring only: private metrics
    metrics = {"d_loss": mean(per_ex["d_loss"]), "g_loss": mean(per_ex["g_loss"]), "g_l1": mean(per_ex["g_l1"]),
               "d_real_logit": mean(per_ex["real_logit"]), "d_fake_logit": mean(per_ex["fake_logit"]),
               "d_real_acc": mean(per_ex["real_logit"] > 0), "d_fake_acc": mean(per_ex["fake_logit"] < 0),
               **out}
    return grads["d"], grads["g"], metrics


def train_step(config: ml_collections.ConfigDict, state: GANState, batch: dict, *,
               mesh=None) -> tuple[GANState, dict]:
    """One D then one G update (simultaneous under DP). batch: image f32 [B,H,W,C] in [-1,1],
    cond f32 one-hot [B,H,W,K], label i32 [B] (+ mask f32 [B] under DP). Then ADA's adaptive p and
    G's EMA (extra) when configured."""
    g, _ = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    private = dp_enabled(config)
    aug = aug_policy.DAugment.from_config(config)
    rng = jax.random.fold_in(state.rng, state.step)
    k_fake, k_g, k_dp = jax.random.split(rng, 3)
    # A separate stream (fold_in), so the keys above are those of runs without augmentation.
    k_aug_d, k_aug_g = jax.random.split(jax.random.fold_in(rng, 1))

    if private:
        d_grads, g_grads, metrics = _private_update(config, state, batch, k_dp, mesh)
        d_stats, g_stats = state.d_stats, state.g_stats
        # One Gaussian draw over the joint (D + canaries, G) vector: the step's key for D's half (as in
        # the other families, so the audit replays it alike), an independent fold_in for G's.
        noise = dp_sgd.noise_args(batch, metrics)
        key = noise["noise_key"]
        d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params, **noise)
        g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params,
                                             noise_key=jax.random.fold_in(key, 1))
        d_params = optax.apply_updates(state.d_params, d_updates)
        g_params = optax.apply_updates(state.g_params, g_updates)
        d_grads, g_grads = jax.tree_util.tree_map(lambda x: x / config.train.batch_size, (d_grads, g_grads))
        metrics["g_total_loss"] = Objective.from_config(config).g_total(metrics["g_loss"], metrics["g_l1"])
        extra = state.extra  # no adaptive p under DP (init_state, _private_update)
    else:
        fake, g_stats = layers.apply(g, state.g_variables(), batch["cond"], train=True,
                                     rngs={"dropout": k_fake})
        fake = jax.lax.stop_gradient(fake)
        (d_total, (d_metrics, d_stats, real_logit)), d_grads = jax.value_and_grad(
            lambda p: d_loss(config, p, state.d_stats, batch, fake, aug_key=k_aug_d, extra=state.extra),
            has_aux=True)(state.d_params)
        d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)
        (g_total, (g_metrics, g_stats)), g_grads = jax.value_and_grad(
            lambda p: g_loss(config, p, g_stats, _vars(d_params, d_stats), batch, k_g, aug_key=k_aug_g,
                             extra=state.extra), has_aux=True)(state.g_params)
        g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        metrics = {**d_metrics, **g_metrics, "g_total_loss": g_total}
        # ADA's heuristic E[sign(D(real))] over every real patch logit of the batch.
        extra = aug.update_p(state.extra, real_logit.reshape(-1), state.step + 1, config.train.batch_size)
    metrics.update(aug.metrics(extra))
    if common.ema_enabled(config):
        beta = common.ema_beta(config, state.step)
        extra = {**extra, "g_ema_params": common.ema_update(state.extra["g_ema_params"], g_params, beta)}
        metrics["ema_beta"] = beta
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params, g_stats=g_stats,
                              d_stats=d_stats, g_opt_state=g_opt_state, d_opt_state=d_opt_state, extra=extra)
    metrics.update(d_grad_norm=optax.tree.norm(d_grads), g_grad_norm=optax.tree.norm(g_grads))
    return new_state, metrics


def generate(config: ml_collections.ConfigDict, state: GANState, z: jax.Array,
             labels: jax.Array | None = None) -> jax.Array:
    """Images f32 [N,H,W,C] in [-1,1] from one-hot maps `z` [N,H,W,K] (the condition plays the
    latent's role; `labels` is ignored). Deterministic: dropout off at sampling time. From G's EMA
    weights when `ema.enabled` (with G's running BatchNorm statistics, if any)."""
    del labels
    g, _ = build_models(config)
    variables = state.g_variables()
    if "g_ema_params" in state.extra:
        variables = {**variables, "params": state.extra["g_ema_params"]}
    return g.apply(variables, z, train=False)


def generate_batched(config: ml_collections.ConfigDict, state: GANState, maps: np.ndarray,
                     batch_size: int = 32) -> np.ndarray:
    """Host loop: f32 images [N,H,W,C] for uint8 maps [N,H,W], in fixed-size (padded) batches."""
    fn = jax.jit(functools.partial(generate, config))
    return batching.map_padded(lambda chunk: fn(state, paired.one_hot(chunk, config.data.num_labels)), maps,
                               batch_size, empty=np.zeros((0,), np.float32))


def evaluate(config: ml_collections.ConfigDict, state: GANState, eval_data) -> dict[str, float]:
    """Mean |G(m) - x| (in [-1,1] units) over held-out pairs {"image", "map"}."""
    if eval_data is None:
        return {}
    fake = generate_batched(config, state, eval_data["map"])
    return {"eval/l1": float(np.mean(np.abs(fake - eval_data["image"])))}


def render_maps(maps: np.ndarray, num_labels: int, channels: int) -> np.ndarray:
    """Label maps uint8 [N,H,W] as images f32 [N,H,W,C] in [-1,1]: class k -> 2 k / (K - 1) - 1."""
    gray = 2.0 * maps.astype(np.float32) / max(num_labels - 1, 1) - 1.0
    return np.repeat(gray[..., None], channels, axis=-1)


def sample_grid(config: ml_collections.ConfigDict, state: GANState, eval_data) -> np.ndarray:
    """uint8 grid, 3 rows: held-out maps | generated | real images (first `samples.per_row`)."""
    n = config.samples.per_row
    maps, real = eval_data["map"][:n], eval_data["image"][:n]
    fake = generate_batched(config, state, maps, batch_size=n)
    rows = np.concatenate([render_maps(maps, config.data.num_labels, config.data.channels), fake, real])
    return images.grid(images.to_uint8(rows), rows=3)


def lesion_labels(config: ml_collections.ConfigDict, maps: np.ndarray) -> np.ndarray:
    """int [N]: 1 if a map holds any class >= config.data.lesion_from (tumour / vessel), else 0."""
    return (maps.reshape(len(maps), -1).max(axis=1) >= config.data.get("lesion_from", 1)).astype(np.int64)


def draw(workdir: str, num: int, seed: int) -> dict[str, Any]:
    """Samples a trained pix2pix workdir on unseen maps: {"images" uint8 [N,H,W,C], "masks" uint8
    [N,H,W] (class per pixel), "labels" int [N] (lesion present), "label_names", "step", "config",
    "class_names"}."""
    config, state, step = drawing.restore_state(workdir)
    maps = paired.condition_maps(config, num, seed)
    fake = generate_batched(config, state, maps)
    lesion = registry.get(config.data.source).lesion
    return {"images": images.to_uint8(fake), "masks": maps, "labels": lesion_labels(config, maps),
            "label_names": [f"no_{lesion}", lesion], "step": step, "config": config,
            "class_names": class_names(config)}


def class_names(config: ml_collections.ConfigDict) -> list[str]:
    """Names of the map classes of `config.data.source` (generic names for user label sets)."""
    names = registry.get(config.data.source).map_names
    if len(names) == config.data.num_labels:
        return list(names)
    return [f"class{k}" for k in range(config.data.num_labels)]


def training_set_size(config: ml_collections.ConfigDict) -> int:
    """N: the training pairs of `config.data` (the accountant's q = batch_size / N)."""
    return len(paired.load_arrays(config)[0]["map"])


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, None]:
    """The U-Net halves the image down to `model.bottleneck_size` px: powers of two from twice that up."""
    return 2 * int(config.model.get("bottleneck_size", 1)), None


FAMILY = common.Family(
    name="pix2pix",
    init_state=init_state,
    train_step=train_step,
    generate=generate,
    evaluate=evaluate,
    sample_grid=sample_grid,
    draw=draw,
    training_set_size=training_set_size,
    check_private_generator=check_private_generator,
    image_sizes=image_sizes,
    # Under DP both nets' losses see private maps and images: no loss metric is public; ADA's (fixed,
    # adaptive is refused) p and the EMA decay are set by the config and the step.
    dp_public_metrics=("aug_p", "ema_beta"),
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data=None) -> GANState:
    """Trains pix2pix on `config.data`'s paired source (or `data` = (PairSource, held-out dict))."""
    if config.data.get("augment", False):
        raise ValueError("config.data.augment=True would move the image without its label map (the "
                         "classic Augment touches 'image' only); set config.data.augment=False -- the "
                         "paired sources draw their own variants (tumour seeds, augmented crops).")
    check_private_generator(config)
    if data is None:
        data = paired.load(config)
        log.info("pix2pix data %r: train %s; held-out %d pairs.", config.data.source,
                 len(data[0]), len(data[1]["image"]))
    if data[1] is None or not len(data[1]["map"]):
        raise ValueError("pix2pix needs held-out pairs {'image', 'map'} for its sample grids and eval/l1; "
                         "got none.")
    return common.fit(config, workdir, FAMILY, data=data)
