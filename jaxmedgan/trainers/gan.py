"""DCGAN / ACGAN trainer (liver-lesion ROIs): pure step functions + `train_and_evaluate`.

One step updates D on a real batch and a fake batch, then G. With `model.num_classes > 0` G is
conditioned on the class, and D as `model.cond` says (aux, projection, tac, proj_aux, d2dce). The
losses -- adversarial kind (`loss.kind`), class terms, MSGAN's mode seeking (`loss.mode_seeking`, G's
step then generating a second batch with the same labels) -- are `Objective` of `losses/dcgan.py`,
whose docstring gives each term; this module runs the models, the optimisers and DP-SGD around it.
All of D's terms are per example, so each option runs under DP-SGD, except d2dce (refused).

Data-efficient options (small medical sets; issue #18): `d_augment.kind` puts DiffAugment or ADA
(`augment/policy.py`) in front of D for every image it sees (real, generated, in D's and G's step;
R1 is taken at the augmented reals); `ema.enabled` keeps an EMA of G's weights (`extra
['g_ema_params']`, half-life `ema.kimg`, StyleGAN2-ADA's ramp-up) that `generate` samples from;
`model.g_upsample` = 'nearest' | 'fir' swaps G's transposed convs for resize-convs (no
checkerboard); `loss.r1_gamma` the zero-centred gradient penalty. All are per example (DP-safe),
except an adaptive ADA p, refused under DP.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan.augment import policy as aug_policy
from jaxmedgan.losses import stylegan2 as sg2_losses
from jaxmedgan.losses.dcgan import Objective
from jaxmedgan.models import dcgan, layers
from jaxmedgan.privacy import checks, dp_sgd
from jaxmedgan.privacy import noise as dp_noise
from jaxmedgan.privacy.config import DPConfig, dp_enabled
from jaxmedgan.state import GANState
from jaxmedgan.trainers import common


def build_models(config: ml_collections.ConfigDict) -> tuple[dcgan.Generator, dcgan.Discriminator]:
    """Instantiates G and D from `config.model` and `config.data`."""
    m, d = config.model, config.data
    dtype = common.compute_dtype(config)
    obj = Objective.from_config(config)
    if m.get("g_upsample", "transpose") not in layers.UPSAMPLES:
        raise ValueError(f"config.model.g_upsample={m.g_upsample!r} must be one of {layers.UPSAMPLES}.")
    g = dcgan.Generator(image_size=d.image_size, channels=d.channels, latent_dim=m.latent_dim,
                        num_classes=m.num_classes, base_features=m.g_features,
                        max_features=m.max_features, norm=m.g_norm,
                        upsample=m.get("g_upsample", "transpose"), dtype=dtype)
    disc = dcgan.Discriminator(image_size=d.image_size, base_features=m.d_features,
                               max_features=m.max_features, num_classes=m.num_classes, cond=obj.cond,
                               norm=m.d_norm, dropout=m.d_dropout,
                               mbstd_group_size=m.get("mbstd_group_size", 0), dtype=dtype)
    return g, disc


def build_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """Adam for G and D (DCGAN's lr 2e-4, beta1 0.5 by default); under DP, D's with the noise in front."""
    o = config.optim
    g_tx = optax.adam(o.g_lr, b1=o.b1, b2=o.b2)
    d_tx = dp_noise.private(optax.adam(o.d_lr, b1=o.b1, b2=o.b2), DPConfig.from_config(config),
                            config.train.batch_size, config.train.steps)
    return g_tx, d_tx


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> GANState:
    """Initial state (pure; jit it with out_shardings to create it sharded). Under DP, refuses a D
    that mixes examples (BatchNorm, minibatch-stddev group > 1) or an adaptive ADA p before anything
    is built. extra: `g_ema_params` (ema.enabled) and the D augmentation's entries (`augment.policy`)."""
    checks.check_dp_compatible(config, {})
    Objective.from_config(config).check_dp(dp_enabled(config))
    aug = aug_policy.DAugment.from_config(config)
    aug.check_dp(dp_enabled(config))
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    k_g, k_d, k_run = jax.random.split(rng, 3)
    size, ch = config.data.image_size, config.data.channels
    z = jnp.zeros((2, config.model.latent_dim))
    labels = jnp.zeros((2,), jnp.int32) if config.model.num_classes else None
    g_vars = g.init(k_g, z, labels, train=False)
    d_vars = d.init(k_d, jnp.zeros((2, size, size, ch)), Objective.from_config(config).d_labels(labels),
                    train=False)
    extra = aug.init_extra()
    if common.ema_enabled(config):
        extra["g_ema_params"] = jax.tree_util.tree_map(jnp.copy, g_vars["params"])
    return GANState.create(k_run, g_vars, d_vars, g_tx, d_tx, extra)


def _draw_latents(config, rng, n: int) -> tuple[jax.Array, jax.Array | None]:
    k_z, k_c = jax.random.split(rng)
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    labels = None
    if config.model.num_classes:
        labels = jax.random.randint(k_c, (n,), 0, config.model.num_classes)
    return z, labels


def _d_variables(d_params, d_stats) -> dict:
    return {"params": d_params, **({"batch_stats": d_stats} if d_stats else {})}


def _r1(d, d_vars: dict, real: jax.Array, d_labels: jax.Array | None, rng: jax.Array, gamma: float) -> jax.Array:
    """R1 penalty gamma/2 * ||grad_x D(x)||^2 per real example [B] (Mescheder et al. 2018).

    Stabilises D on small data (the retina dual GAN's stage I). D's running statistics from this
    extra forward pass are discarded; with a per-example D (layer norm) row i depends on x_i only.
    d_labels: int [B] for a projection D (D(x, y) with the real label), else None.
    """
    def logits(x):
        (logit, _), _ = layers.apply(d, d_vars, x, d_labels, train=True, rngs={"dropout": rng})
        return logit

    return sg2_losses.r1_penalty(logits, real, gamma)


def private_config(config: ml_collections.ConfigDict) -> DPConfig:
    """The run's DPConfig, clip_method 'auto' resolved: ghost clipping covers D's Conv/Dense/norm
    layers, but not R1 (a gradient of D's input gradient inside the clipped loss)."""
    return DPConfig.from_config(config).with_clip_method(
        ghost_supported=not Objective.from_config(config).r1_gamma,
        why_not="loss.r1_gamma > 0 puts R1 (a gradient of D's input gradient) in the clipped loss")


def _d_update_private(config, state: GANState, batch: dict, fake, fake_labels, rng, mesh):
    """D update under DP-SGD: (sum-scale gradient for the optimiser's noise transformation, metrics, stats).

    `batch["image"]` and `fake` arrive augmented (what D sees; the augmentation is per example).
    Only D's loss on real example i (softplus(-D(x_i[, y_i])) + w aux CE [+ R1]) touches private
    data; it is clipped per example in `dp_sgd.d_gradient`. Generated images carry no private
    information, so their term (softplus(D(G(z)[, y])) + w aux or twin CE) gets no noise; it is
    still clipped per example to the same C (privacy.clip_fake), otherwise its gradient, ~100x the
    clipped real one, swamps the real term and D just learns to call everything fake.
    """
    _, d = build_models(config)
    obj = Objective.from_config(config)
    obj.check_dp(True)  # D2DCE has no per-example form to clip (init_state refuses it first)
    p = private_config(config)
    k_drop_real, k_drop_fake = jax.random.split(rng)
    real, real_labels, mask = batch["image"], batch["label"], batch["mask"]
    n = real.shape[0]
    examples = {"image": real, "label": real_labels, "key": jax.random.split(k_drop_real, n)}

    def apply_one(d_params, ex):
        labels = ex["label"][None]
        (logit, heads), _ = layers.apply(d, {"params": d_params}, ex["image"][None], obj.d_labels(labels),
                                         train=True, rngs={"dropout": ex["key"]})
        return logit, heads, labels

    def real_loss(d_params, ex):
        logit, heads, labels = apply_one(d_params, ex)
        loss = obj.d_real_loss(logit, heads, labels)[0]
        aux, _ = obj.split_heads(heads)
        correct = (jnp.argmax(aux[0]) == ex["label"]).astype(jnp.float32) if aux is not None else jnp.zeros(())
        if obj.r1_gamma:  # R1 on this real example alone: inside the clipped per-example loss
            loss = loss + _r1(d, {"params": d_params}, ex["image"][None], obj.d_labels(labels), ex["key"],
                              obj.r1_gamma)[0]
        return loss, {"logit": logit[0], "aux_correct": correct}

    def fake_loss(d_params, ex):
        logit, heads, labels = apply_one(d_params, ex)
        loss, cls = obj.d_fake_loss(logit, heads, labels)
        return loss[0], {"logit": logit[0], "class_loss": cls[0]}

    m = fake.shape[0]  # train.batch_size: independent of the padded row count n
    fakes = {"image": fake, "label": fake_labels if fake_labels is not None else jnp.zeros((m,), jnp.int32),
             "key": jax.random.split(k_drop_fake, m)}
    grads, out = dp_sgd.d_gradient(real_loss, state.d_params, examples, mask, p, fake_loss=fake_loss, fake=fakes,
                                   expected_batch_size=config.train.batch_size,
                                   canaries=dp_sgd.batch_canaries(batch), mesh=mesh)
    per_ex, fake_aux, fake_total = out.pop("real_aux"), out.pop("fake_aux"), out.pop("fake_loss")
    real_logit, fake_logit = per_ex["logit"], fake_aux["logit"]
    mean = functools.partial(dp_sgd.masked_mean, mask=mask)  # monitoring only: private metrics
    metrics = {
        "d_loss": mean(obj.d_real(real_logit)) + jnp.mean(obj.d_fake(fake_logit)),
        "d_real_acc": mean(real_logit > 0),
        "d_fake_acc": jnp.mean(fake_logit < 0),
        "d_real_logit": mean(real_logit),
        "d_fake_logit": jnp.mean(fake_logit),
        "d_total_loss": out["dp_loss_mean"] + fake_total,
        **out,
    }
    if obj.aux_head:
        metrics["aux_real_acc"] = mean(per_ex["aux_correct"])
    if obj.tac:
        metrics["d_twin_loss"] = jnp.mean(fake_aux["class_loss"])  # generated images only: public
    return grads, metrics, state.d_stats, real_logit


def _d_update(config, state: GANState, batch: dict, fake, fake_labels, rng):
    """Non-private D update: gradient of the mean loss over the real and the fake batch (both
    already augmented, as D sees them); also returns D's real logits f32 [B] (the ADA heuristic)."""
    _, d = build_models(config)
    obj = Objective.from_config(config)
    real, real_labels = batch["image"], batch["label"]

    def d_loss_fn(d_params):
        d_vars = _d_variables(d_params, state.d_stats)
        (real_logit, real_heads), stats = layers.apply(d, d_vars, real, obj.d_labels(real_labels), train=True,
                                                       rngs={"dropout": rng})
        if stats:
            d_vars = _d_variables(d_params, stats)
        (fake_logit, fake_heads), stats = layers.apply(d, d_vars, fake, obj.d_labels(fake_labels), train=True,
                                                       rngs={"dropout": rng})
        per_example, parts = obj.d_loss(real_logit, real_heads, real_labels, fake_logit, fake_heads, fake_labels)
        cls_real, cls_fake = parts["class_real"], parts["class_fake"]
        loss = jnp.mean(per_example)
        if obj.r1_gamma:
            r1 = jnp.mean(_r1(d, d_vars, real, obj.d_labels(real_labels), rng, obj.r1_gamma))
            loss = loss + r1
        metrics = {
            "d_loss": jnp.mean(parts["adversarial"]),
            "d_real_acc": jnp.mean(real_logit > 0),
            "d_fake_acc": jnp.mean(fake_logit < 0),
            "d_real_logit": jnp.mean(real_logit),
            "d_fake_logit": jnp.mean(fake_logit),
        }
        if obj.r1_gamma:
            metrics["d_r1"] = r1
        if obj.tac:  # aux head on real images, twin head on generated ones
            metrics["d_aux_loss"] = jnp.mean(cls_real)
            metrics["d_twin_loss"] = jnp.mean(cls_fake)
        elif obj.aux_real_only:  # proj_aux: the head sees real images only
            metrics["d_aux_loss"] = jnp.mean(cls_real)
        elif obj.aux_head:
            metrics["d_aux_loss"] = jnp.mean(cls_real + cls_fake) / 2
        elif obj.d2dce:  # real images only
            metrics["d_d2dce_loss"] = jnp.mean(cls_real)
        if obj.aux_head or obj.d2dce:
            metrics["aux_real_acc"] = jnp.mean(jnp.argmax(obj.class_logits(real_heads), -1) == real_labels)
        return loss, (metrics, stats, real_logit)

    (total, (metrics, d_stats, real_logit)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    metrics["d_total_loss"] = total
    return grads, metrics, d_stats, real_logit


def train_step(config: ml_collections.ConfigDict, state: GANState, batch: dict, *,
               mesh=None) -> tuple[GANState, dict]:
    """One D update then one G update. batch: image f32 [B,H,W,C] in [-1,1], label i32 [B]
    (+ mask f32 [B] under DP). `mesh` is the device mesh (DP clips per example per shard)."""
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    private = dp_enabled(config)
    obj = Objective.from_config(config)
    aug = aug_policy.DAugment.from_config(config)
    # Under DP the batch is a padded Poisson batch whose row count may follow the draw (padding
    # buckets): fakes come in the expected batch size, so nothing but padding depends on it.
    n = config.train.batch_size if private else batch["image"].shape[0]
    rng = jax.random.fold_in(state.rng, state.step)
    k_dz, k_gz, k_d, k_gdrop, k_aug_real, k_aug_fake, k_aug_g = jax.random.split(rng, 7)

    # --- D update: real batch vs a batch generated with the current G, both as D sees them.
    z, fake_labels = _draw_latents(config, k_dz, n)
    fake, g_stats = layers.apply(g, state.g_variables(), z, fake_labels, train=True)
    fake = aug(jax.lax.stop_gradient(fake), k_aug_fake, state.extra, real=False)
    see_real = aug.per_example if private else aug  # DP: each real example's draw independent of the rows
    d_batch = {**batch, "image": see_real(batch["image"], k_aug_real, state.extra, real=True)}
    if private:
        d_grads, d_metrics, d_stats, real_logit = _d_update_private(config, state, d_batch, fake, fake_labels,
                                                                    k_d, mesh)
    else:
        d_grads, d_metrics, d_stats, real_logit = _d_update(config, state, d_batch, fake, fake_labels, k_d)
    noise = dp_sgd.noise_args(batch, d_metrics) if private else {}  # the step's secret key (+ canaries)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params, **noise)
    d_params = optax.apply_updates(state.d_params, d_updates)
    if private:  # report the pre-noise mean gradient (private), as without DP
        d_grads = jax.tree_util.tree_map(lambda g: g / config.train.batch_size, d_grads)

    # --- G update against the updated D (D's running statistics are not changed here). G sees
    # real data only through D, so under DP it is private by post-processing.
    z, gen_labels = _draw_latents(config, k_gz, n)
    z_g, labels_g = z, gen_labels
    if obj.mode_seeking:  # a second batch, same labels: [G(z1, y); G(z2, y)] in one G call, both through D
        z2 = jax.random.normal(jax.random.fold_in(k_gz, 1), z.shape)
        z_g = jnp.concatenate([z, z2])
        labels_g = None if gen_labels is None else jnp.concatenate([gen_labels, gen_labels])

    def g_loss_fn(g_params):
        g_vars = {"params": g_params, **({"batch_stats": g_stats} if g_stats else {})}
        fake, new_g_stats = layers.apply(g, g_vars, z_g, labels_g, train=True)
        seen = aug(fake, k_aug_g, state.extra, real=False)
        (logit, heads), _ = layers.apply(d, _d_variables(d_params, d_stats), seen,
                                         obj.d_labels(labels_g), train=True, rngs={"dropout": k_gdrop})
        total, parts = obj.g_loss(logit, heads, labels_g, images=fake, latents=z_g)
        metrics = {"g_loss": jnp.mean(parts["adversarial"])}
        for name, part in (("g_aux_loss", "aux_ce"), ("g_twin_loss", "twin_ce")):
            if part in parts:
                metrics[name] = jnp.mean(parts[part])
        if obj.d2dce:
            metrics["g_d2dce_loss"] = jnp.mean(parts["class"])
        if obj.mode_seeking:
            metrics["g_ms_ratio"] = parts["ms_ratio"]
        return total, (metrics, new_g_stats)

    (g_total, (g_metrics, new_g_stats)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    extra = aug.update_p(state.extra, real_logit, state.step + 1, config.train.batch_size)
    aug_metrics = aug.metrics(extra)
    if common.ema_enabled(config):
        beta = common.ema_beta(config, state.step)
        extra = {**extra, "g_ema_params": common.ema_update(state.extra["g_ema_params"], g_params, beta)}
        aug_metrics["ema_beta"] = beta
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_stats=new_g_stats, d_stats=d_stats,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state, extra=extra)
    metrics = {**d_metrics, **g_metrics, **aug_metrics, "g_total_loss": g_total,
               "d_grad_norm": optax.tree.norm(d_grads), "g_grad_norm": optax.tree.norm(g_grads)}
    return new_state, metrics


def generate(config: ml_collections.ConfigDict, state: GANState, z: jax.Array,
             labels: jax.Array | None) -> jax.Array:
    """Images f32 [N,H,W,C] in [-1,1] from latents z [N, latent_dim] (labels [N] for ACGAN); from G's
    EMA weights when `ema.enabled` (with G's running BatchNorm statistics)."""
    g, _ = build_models(config)
    variables = state.g_variables()
    if "g_ema_params" in state.extra:
        variables = {**variables, "params": state.extra["g_ema_params"]}
    return g.apply(variables, z, labels if config.model.num_classes else None, train=False)


def _d_eval(config: ml_collections.ConfigDict, state: GANState, images: jax.Array,
            labels: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """D(images[, labels]) in inference mode: (logit [N], heads). A minibatch-stddev D needs N to be
    a multiple of its group size: rows are padded by repeating the first ones, and dropped again."""
    _, d = build_models(config)
    n, group = images.shape[0], config.model.get("mbstd_group_size", 0)
    pad = (-n) % min(group, n) if group else 0
    if pad:
        images = jnp.concatenate([images, images[:pad]])
        labels = None if labels is None else jnp.concatenate([labels, labels[:pad]])
    logit, heads = d.apply(state.d_variables(), images, labels, train=False)
    return logit[:n], None if heads is None else heads[:n]


def discriminate(config: ml_collections.ConfigDict, state: GANState, images: jax.Array,
                 labels: jax.Array | None = None) -> jax.Array:
    """D's real/fake logit [N] for images [N,H,W,C] in [-1,1] (membership-inference audits).

    A projection D scores D(x, y) when labels int [N] are given, else the class-marginal
    log mean_y exp D(x, y) (the audits pass no labels).
    """
    obj = Objective.from_config(config)
    if obj.projection:
        if labels is not None:
            return _d_eval(config, state, images, jnp.asarray(labels, jnp.int32))[0]
        return jax.nn.logsumexp(_projection_logits(config, state, images), axis=-1) - jnp.log(obj.num_classes)
    return _d_eval(config, state, images, None)[0]


def _projection_logits(config: ml_collections.ConfigDict, state: GANState, images: jax.Array) -> jax.Array:
    """A projection D's logit D(x, k) for every class k: f32 [N, K]."""
    n = images.shape[0]
    return jnp.stack([_d_eval(config, state, images, jnp.full((n,), k, jnp.int32))[0]
                      for k in range(config.model.num_classes)], axis=-1)


def classify(config: ml_collections.ConfigDict, state: GANState, images: jax.Array) -> jax.Array | None:
    """D's class logits f32 [N, K] for images [N,H,W,C] in [-1,1] (None if unconditional): the aux
    head ('aux', 'tac', 'proj_aux'); for 'projection', D's logit D(x, k) for each class k, whose argmax
    over k is the class D finds most real (psi(phi(x)) is common to all k, so it is argmax_k <e_k, phi(x)>);
    for 'd2dce', cos(f(x), v_k) / T, whose argmax is the nearest class proxy."""
    obj = Objective.from_config(config)
    if obj.projection and not obj.aux_head:
        return _projection_logits(config, state, images)
    labels = jnp.zeros((images.shape[0],), jnp.int32) if obj.projection else None  # the head ignores them
    return obj.class_logits(_d_eval(config, state, images, labels)[1])


# Jitted once per (config, shapes): the config is a static (hashable, frozen) argument, so repeated
# evaluations reuse the compiled function instead of tracing a fresh partial each time.
_classify_jit = jax.jit(classify, static_argnums=0)
_generate_jit = jax.jit(generate, static_argnums=0)


def evaluate(config: ml_collections.ConfigDict, state: GANState, eval_data) -> dict[str, float]:
    """Conditional models, on held-out real images (images f32 [N,H,W,C] in [-1, 1], labels int [N]).

    `eval/aux_accuracy` (and `eval/aux_recall_class{k}`): D's class prediction -- the aux head for
    'aux' / 'tac', argmax_k D(x, k) for 'projection', the nearest proxy for 'd2dce' (`classify`); and
    the intra-class diversity ratio of generated vs held-out images (`common.class_diversity_metrics`).
    """
    if not config.model.num_classes or eval_data is None:
        return {}
    images, labels = eval_data
    frozen = ml_collections.FrozenConfigDict(config)
    preds = []
    bs = 64
    for i in range(0, len(images), bs):
        chunk = images[i:i + bs]
        pad = bs - len(chunk)  # pad to a fixed shape so this compiles once (repeating rows, as `_d_eval`)
        chunk = np.concatenate([chunk, np.resize(chunk, (pad, *chunk.shape[1:]))]) if pad else chunk
        preds.append(np.asarray(jnp.argmax(_classify_jit(frozen, state, chunk), -1))[: bs - pad])
    preds = np.concatenate(preds)
    out = {"eval/aux_accuracy": float(np.mean(preds == labels))}
    for k in range(config.model.num_classes):
        mask = labels == k
        if mask.any():
            out[f"eval/aux_recall_class{k}"] = float(np.mean(preds[mask] == k))
    out.update(common.class_diversity_metrics(config, _generate_jit, state, eval_data, config.samples.seed + 1))
    return out


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, None]:
    """The DCGAN builds any power-of-two image size from 8 px up."""
    return 8, None


FAMILY = common.Family(
    name="gan",
    init_state=init_state,
    train_step=train_step,
    generate=generate,
    evaluate=evaluate,
    discriminate=discriminate,
    latent_spaces=("z",),
    image_sizes=image_sizes,
    # Under DP: G's terms and D's terms on generated images.
    dp_public_metrics=("g_loss", "g_aux_loss", "g_twin_loss", "g_ms_ratio", "g_total_loss", "g_grad_norm",
                       "d_fake_acc", "d_fake_logit", "d_twin_loss", "aug_p", "ema_beta"),
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
    """Trains DCGAN/ACGAN as configured, writing checkpoints, metrics and samples to `workdir`."""
    return common.fit(config, workdir, FAMILY)
