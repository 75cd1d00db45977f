"""DCGAN / ACGAN trainer (liver-lesion ROIs): pure step functions + `train_and_evaluate`.

One step updates D on a real batch and a fake batch, then G, with the non-saturating logistic
loss; with `model.num_classes > 0` (ACGAN) both nets also minimise the auxiliary class
cross-entropy: D on real and generated images, G on generated ones.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan.losses import gan as gan_losses
from jaxmedgan.models import dcgan, layers
from jaxmedgan.privacy import dp_sgd
from jaxmedgan.privacy import noise as dp_noise
from jaxmedgan.privacy.config import DPConfig, dp_enabled
from jaxmedgan.state import GANState
from jaxmedgan.trainers import common


def build_models(config: ml_collections.ConfigDict) -> tuple[dcgan.Generator, dcgan.Discriminator]:
    """Instantiates G and D from `config.model` and `config.data`."""
    m, d = config.model, config.data
    dtype = common.compute_dtype(config)
    g = dcgan.Generator(image_size=d.image_size, channels=d.channels, latent_dim=m.latent_dim,
                        num_classes=m.num_classes, base_features=m.g_features,
                        max_features=m.max_features, norm=m.g_norm, dtype=dtype)
    disc = dcgan.Discriminator(image_size=d.image_size, base_features=m.d_features,
                               max_features=m.max_features, num_classes=m.num_classes,
                               norm=m.d_norm, dropout=m.d_dropout,
                               mbstd_group_size=m.get("mbstd_group_size", 0), dtype=dtype)
    return g, disc


def build_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """Adam for G and D (DCGAN's lr 2e-4, beta1 0.5 by default); under DP, D's with the noise in front."""
    o = config.optim
    g_tx = optax.adam(o.g_lr, b1=o.b1, b2=o.b2)
    d_tx = dp_noise.private(optax.adam(o.d_lr, b1=o.b1, b2=o.b2), DPConfig.from_config(config),
                            config.train.batch_size)
    return g_tx, d_tx


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> GANState:
    """Initial state (pure; jit it with out_shardings to create it sharded)."""
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    k_g, k_d, k_run = jax.random.split(rng, 3)
    size, ch = config.data.image_size, config.data.channels
    z = jnp.zeros((2, config.model.latent_dim))
    labels = jnp.zeros((2,), jnp.int32) if config.model.num_classes else None
    g_vars = g.init(k_g, z, labels, train=False)
    d_vars = d.init(k_d, jnp.zeros((2, size, size, ch)), train=False)
    return GANState(
        step=jnp.zeros((), jnp.int32), rng=k_run,
        g_params=g_vars["params"], d_params=d_vars["params"],
        g_stats=g_vars.get("batch_stats", {}), d_stats=d_vars.get("batch_stats", {}),
        g_opt_state=g_tx.init(g_vars["params"]), d_opt_state=d_tx.init(d_vars["params"]))


def _draw_latents(config, rng, n: int) -> tuple[jax.Array, jax.Array | None]:
    k_z, k_c = jax.random.split(rng)
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    labels = None
    if config.model.num_classes:
        labels = jax.random.randint(k_c, (n,), 0, config.model.num_classes)
    return z, labels


def _d_variables(d_params, d_stats) -> dict:
    return {"params": d_params, **({"batch_stats": d_stats} if d_stats else {})}


def _r1(d, d_vars: dict, real: jax.Array, rng: jax.Array, gamma: float) -> jax.Array:
    """R1 penalty gamma/2 * ||grad_x D(x)||^2 per real example [B] (Mescheder et al. 2018).

    Stabilises D on small data (the retina dual GAN's stage I). D's running statistics from this
    extra forward pass are discarded; with a per-example D (layer norm) row i depends on x_i only.
    """
    from jaxmedgan.losses import stylegan2 as sg2_losses

    def logits(x):
        (logit, _), _ = layers.apply(d, d_vars, x, train=True, rngs={"dropout": rng})
        return logit

    return sg2_losses.r1_penalty(logits, real, gamma)


def private_config(config: ml_collections.ConfigDict) -> DPConfig:
    """The run's DPConfig, clip_method 'auto' resolved: ghost clipping covers D's Conv/Dense/norm
    layers, but not R1 (a gradient of D's input gradient inside the clipped loss)."""
    return DPConfig.from_config(config).with_clip_method(ghost_supported=not config.loss.get("r1_gamma", 0.0))


def _d_update_private(config, state: GANState, batch: dict, fake, fake_labels, rng, mesh):
    """D update under DP-SGD: (sum-scale gradient for the optimiser's noise transformation, metrics, stats).

    Only D's loss on real example i (softplus(-D(x_i)) + aux CE [+ R1]) touches private data; it is
    clipped per example in `dp_sgd.d_gradient`. Generated images carry no private information, so
    their term gets no noise; it is still clipped per example to the same C (privacy.clip_fake),
    otherwise its gradient, ~100x the clipped real one, swamps the real term and D just learns to
    call everything fake.
    """
    _, d = build_models(config)
    aux_w = config.loss.aux_weight if config.model.num_classes else 0.0
    r1_gamma = config.loss.get("r1_gamma", 0.0)
    p = private_config(config)
    k_drop_real, k_drop_fake = jax.random.split(rng)
    real, real_labels, mask = batch["image"], batch["label"], batch["mask"]
    n = real.shape[0]
    examples = {"image": real, "label": real_labels, "key": jax.random.split(k_drop_real, n)}

    def logits(d_params, ex):
        (logit, cls), _ = layers.apply(d, {"params": d_params}, ex["image"][None], train=True,
                                       rngs={"dropout": ex["key"]})
        aux = aux_w * gan_losses.class_cross_entropy(cls, ex["label"][None])[0] if cls is not None else 0.0
        return logit[0], cls, aux

    def real_loss(d_params, ex):
        logit, cls, aux = logits(d_params, ex)
        loss = jax.nn.softplus(-logit) + aux
        correct = (jnp.argmax(cls[0]) == ex["label"]).astype(jnp.float32) if cls is not None else jnp.zeros(())
        if r1_gamma:  # R1 on this real example alone: inside the clipped per-example loss
            loss = loss + _r1(d, {"params": d_params}, ex["image"][None], ex["key"], r1_gamma)[0]
        return loss, {"logit": logit, "aux_correct": correct}

    def fake_loss(d_params, ex):
        logit, _, aux = logits(d_params, ex)
        return jax.nn.softplus(logit) + aux, logit

    fakes = {"image": fake, "label": fake_labels if fake_labels is not None else jnp.zeros((n,), jnp.int32),
             "key": jax.random.split(k_drop_fake, n)}
    grads, out = dp_sgd.d_gradient(real_loss, state.d_params, examples, mask, p, fake_loss=fake_loss, fake=fakes,
                                   expected_batch_size=config.train.batch_size,
                                   canaries=dp_sgd.batch_canaries(batch), mesh=mesh)
    per_ex, fake_logit, fake_total = out.pop("real_aux"), out.pop("fake_aux"), out.pop("fake_loss")
    real_logit = per_ex["logit"]
    mean = functools.partial(dp_sgd.masked_mean, mask=mask)  # monitoring only: private metrics
    metrics = {
        "d_loss": mean(jax.nn.softplus(-real_logit)) + jnp.mean(jax.nn.softplus(fake_logit)),
        "d_real_acc": mean(real_logit > 0),
        "d_fake_acc": jnp.mean(fake_logit < 0),
        "d_real_logit": mean(real_logit),
        "d_fake_logit": jnp.mean(fake_logit),
        "d_total_loss": out["dp_loss_mean"] + fake_total,
        **out,
    }
    if config.model.num_classes:
        metrics["aux_real_acc"] = mean(per_ex["aux_correct"])
    return grads, metrics, state.d_stats


def _d_update(config, state: GANState, batch: dict, fake, fake_labels, rng):
    """Non-private D update: gradient of the mean loss over the real and the fake batch."""
    _, d = build_models(config)
    conditional = config.model.num_classes > 0
    aux_w = config.loss.aux_weight if conditional else 0.0
    real, real_labels = batch["image"], batch["label"]

    def d_loss_fn(d_params):
        d_vars = _d_variables(d_params, state.d_stats)
        (real_logit, real_cls), stats = layers.apply(d, d_vars, real, train=True, rngs={"dropout": rng})
        if stats:
            d_vars = _d_variables(d_params, stats)
        (fake_logit, fake_cls), stats = layers.apply(d, d_vars, fake, train=True, rngs={"dropout": rng})
        per_example = gan_losses.d_logistic(real_logit, fake_logit)
        aux_real = aux_fake = jnp.zeros_like(per_example)
        if conditional:
            aux_real = gan_losses.class_cross_entropy(real_cls, real_labels)
            aux_fake = gan_losses.class_cross_entropy(fake_cls, fake_labels)
        loss = jnp.mean(per_example + aux_w * (aux_real + aux_fake))
        r1_gamma = config.loss.get("r1_gamma", 0.0)
        if r1_gamma:
            r1 = jnp.mean(_r1(d, d_vars, real, rng, r1_gamma))
            loss = loss + r1
        metrics = {
            "d_loss": jnp.mean(per_example),
            "d_real_acc": jnp.mean(real_logit > 0),
            "d_fake_acc": jnp.mean(fake_logit < 0),
            "d_real_logit": jnp.mean(real_logit),
            "d_fake_logit": jnp.mean(fake_logit),
        }
        if r1_gamma:
            metrics["d_r1"] = r1
        if conditional:
            metrics["d_aux_loss"] = jnp.mean(aux_real + aux_fake) / 2
            metrics["aux_real_acc"] = jnp.mean(jnp.argmax(real_cls, -1) == real_labels)
        return loss, (metrics, stats)

    (total, (metrics, d_stats)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    metrics["d_total_loss"] = total
    return grads, metrics, d_stats


def train_step(config: ml_collections.ConfigDict, state: GANState, batch: dict, *,
               mesh=None) -> tuple[GANState, dict]:
    """One D update then one G update. batch: image f32 [B,H,W,C] in [-1,1], label i32 [B]
    (+ mask f32 [B] under DP). `mesh` is the device mesh (DP clips per example per shard)."""
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    private = dp_enabled(config)
    conditional = config.model.num_classes > 0
    aux_w = config.loss.aux_weight if conditional else 0.0
    n = batch["image"].shape[0]
    rng = jax.random.fold_in(state.rng, state.step)
    k_dz, k_gz, k_d, k_gdrop = jax.random.split(rng, 4)

    # --- D update: real batch vs a batch generated with the current G.
    z, fake_labels = _draw_latents(config, k_dz, n)
    fake, g_stats = layers.apply(g, state.g_variables(), z, fake_labels, train=True)
    fake = jax.lax.stop_gradient(fake)
    if private:
        d_grads, d_metrics, d_stats = _d_update_private(config, state, batch, fake, fake_labels, k_d, mesh)
    else:
        d_grads, d_metrics, d_stats = _d_update(config, state, batch, fake, fake_labels, k_d)
    noise = dp_sgd.noise_args(batch, d_metrics) if private else {}  # the step's secret key (+ canaries)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params, **noise)
    d_params = optax.apply_updates(state.d_params, d_updates)
    if private:  # report the pre-noise mean gradient (private), as without DP
        d_grads = jax.tree_util.tree_map(lambda g: g / config.train.batch_size, d_grads)

    # --- G update against the updated D (D's running statistics are not changed here). G sees
    # real data only through D, so under DP it is private by post-processing.
    z, gen_labels = _draw_latents(config, k_gz, n)

    def g_loss_fn(g_params):
        g_vars = {"params": g_params, **({"batch_stats": g_stats} if g_stats else {})}
        fake, new_g_stats = layers.apply(g, g_vars, z, gen_labels, train=True)
        (logit, cls), _ = layers.apply(d, _d_variables(d_params, d_stats), fake, train=True,
                                       rngs={"dropout": k_gdrop})
        per_example = gan_losses.g_nonsaturating(logit)
        aux = gan_losses.class_cross_entropy(cls, gen_labels) if conditional else jnp.zeros_like(per_example)
        return jnp.mean(per_example + aux_w * aux), ({"g_loss": jnp.mean(per_example)}, new_g_stats)

    (g_total, (g_metrics, new_g_stats)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_stats=new_g_stats, d_stats=d_stats,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    metrics = {**d_metrics, **g_metrics, "g_total_loss": g_total,
               "d_grad_norm": optax.tree.norm(d_grads), "g_grad_norm": optax.tree.norm(g_grads)}
    return new_state, metrics


def generate(config: ml_collections.ConfigDict, state: GANState, z: jax.Array,
             labels: jax.Array | None) -> jax.Array:
    """Images f32 [N,H,W,C] in [-1,1] from latents z [N, latent_dim] (labels [N] for ACGAN)."""
    g, _ = build_models(config)
    return g.apply(state.g_variables(), z, labels if config.model.num_classes else None, train=False)


def discriminate(config: ml_collections.ConfigDict, state: GANState, images: jax.Array) -> jax.Array:
    """D's real/fake logit [N] for images [N,H,W,C] in [-1,1] (membership-inference audits)."""
    _, d = build_models(config)
    logits, _ = d.apply(state.d_variables(), images, train=False)
    return logits


def classify(config: ml_collections.ConfigDict, state: GANState, images: jax.Array) -> jax.Array:
    """ACGAN auxiliary-head class logits [N, K] for images [N,H,W,C] in [-1,1]."""
    _, d = build_models(config)
    _, logits = d.apply(state.d_variables(), images, train=False)
    return logits


def evaluate(config: ml_collections.ConfigDict, state: GANState, eval_data) -> dict[str, float]:
    """ACGAN: auxiliary-classifier accuracy on held-out real images (per class and overall)."""
    if not config.model.num_classes or eval_data is None:
        return {}
    images, labels = eval_data
    fn = jax.jit(functools.partial(classify, config))
    preds = []
    bs = 64
    for i in range(0, len(images), bs):
        chunk = images[i:i + bs]
        pad = bs - len(chunk)  # pad to a fixed shape so this compiles once
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
        preds.append(np.asarray(jnp.argmax(fn(state, chunk), -1))[: bs - pad])
    preds = np.concatenate(preds)
    out = {"eval/aux_accuracy": float(np.mean(preds == labels))}
    for k in range(config.model.num_classes):
        mask = labels == k
        if mask.any():
            out[f"eval/aux_recall_class{k}"] = float(np.mean(preds[mask] == k))
    return out


FAMILY = common.Family(
    name="gan",
    init_state=init_state,
    train_step=train_step,
    generate=generate,
    evaluate=evaluate,
    # Under DP: G's terms and D's terms on generated images.
    dp_public_metrics=("g_loss", "g_total_loss", "g_grad_norm", "d_fake_acc", "d_fake_logit"),
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
    """Trains DCGAN/ACGAN as configured, writing checkpoints, metrics and samples to `workdir`."""
    return common.fit(config, workdir, FAMILY)
