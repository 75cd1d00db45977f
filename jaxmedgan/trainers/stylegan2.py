"""Conditional StyleGAN2-ADA trainer: pure phase functions + host-side lazy-regularisation schedule.

Follows NVlabs/stylegan2-ada-pytorch `training/training_loop.py` and `training/loss.py` (whose
loss math, phase by phase, is `losses/stylegan2.py`). One training step runs, in this order, the
phases whose interval divides the step index:

    Gmain  every step      non-saturating loss on D(augment(G(z, c)), c) [+ lambda * clinical CE]
    Greg   every 4 steps   path-length penalty (weight 2, x4 for laziness, batch / 2)
    Dmain  every step      logistic loss on augmented fakes and reals
    Dreg   every 16 steps  R1 on augmented reals (gamma/2, x16 for laziness)

then updates the G EMA (half-life ema_kimg, ramped up to 0.05 x images seen) and, every 4 steps on
the host, the ADA probability p from r_t = E[sign(D(real))]. Each phase is its own jitted pure
function `phase(config, state, batch, ...) -> (state, metrics)`; `make_step` (used by
`common.fit`) picks the phases on the host. Adam (betas 0, 0.99; eps 1e-8; lr 0.0025) has lr and
betas rescaled by interval/(interval+1) since regularisation steps reuse the main optimiser.

Style mixing (probability 0.9): ws after a random cutoff layer come from a second z. Fake labels
are the real batch's labels, shuffled per phase (StyleGAN2-ADA draws them from the dataset's
label distribution). The mapping network's tracked w_avg (G's 'stats', in `state.g_stats`) is
updated by every G forward of a phase, as in training mode of the original, and shared by the EMA
generator. State extras: g_ema_params, ada_p, ada_sign_sum, ada_sign_count, pl_mean.

Differential privacy (`config.privacy.enabled`, DP-SGD of `jaxmedgan.privacy.dp_sgd`). Only D
reads real images, so only D's real-data term is privatised: per real example i of a Poisson
batch (padded, with a mask), loss_i = softplus(-D(aug_i(x_i), c_i)) [+ r1_interval * gamma/2 *
||grad_x D(aug_i(x_i), c_i)||^2 on R1 steps], each example's gradient clipped to C, summed, ONE
Gaussian draw N(0, sigma^2 C^2) added, divided by the expected batch q*N (`d_private_grads`).
The fake term softplus(D(aug(G(z)))) sees no real data and gets no noise (clipped per example
to the same C when `privacy.clip_fake`, as the DCGAN trainer does). G is private by
post-processing; its fake labels are drawn uniformly (never from the real batch's labels).
Accounting: on R1 steps the R1 term is folded into the same clipped loss as the main term
(StyleGAN2-ADA's 'Dboth' phase) instead of a second D update on the same batch, so every training
step is exactly one DP-SGD step of D on one Poisson sample -- the count `privacy.plan` and the
accountant use (`dp/epsilon` after T steps = epsilon(q, sigma, T)). D therefore takes one Adam
step per training step and its Adam is not rescaled for lazy R1 (the x r1_interval weight stays).
Minibatch-stddev must be off or per example (group size 0 or 1); ADA's adaptive p is refused
(its r_t = E[sign(D(real))] is a data-dependent release the accountant does not count): use
`ada.mode='fixed'` (augmentation is per example, so a fixed p is fine) or 'none'.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan.augment import ada
from jaxmedgan.augment import controller as ada_controller
from jaxmedgan.losses import clinical
from jaxmedgan.losses import stylegan2 as sg_losses
from jaxmedgan.models import stylegan2 as sg
from jaxmedgan.models import trained_classifier
from jaxmedgan.privacy import checks, dp_sgd
from jaxmedgan.privacy import noise as dp_noise
from jaxmedgan.privacy.config import DPConfig
from jaxmedgan.state import GANState
from jaxmedgan.trainers import common

log = logging.getLogger(__name__)

PHASES = ("Gmain", "Greg", "Dmain", "Dreg", "Dboth")  # Dboth: DP only, Dmain + R1 in one clipped loss
_PHASE_IDS = {name: i for i, name in enumerate(PHASES)}


# ----------------------------------------------------------------------------------------------
# Construction.


def build_models(config: ml_collections.ConfigDict) -> tuple[sg.Generator, sg.Discriminator]:
    """G and D from `config.model` and `config.data`."""
    m, d = config.model, config.data
    dtype = common.compute_dtype(config)
    clamp = m.conv_clamp or None
    g = sg.Generator(z_dim=m.latent_dim, c_dim=m.num_classes, w_dim=m.w_dim, img_resolution=d.image_size,
                     img_channels=d.channels, mapping_layers=m.mapping_layers, channel_base=m.channel_base,
                     channel_max=m.channel_max, conv_clamp=clamp, dtype=dtype)
    disc = sg.Discriminator(c_dim=m.num_classes, img_resolution=d.image_size, img_channels=d.channels,
                            channel_base=m.channel_base, channel_max=m.channel_max,
                            mapping_layers=m.d_mapping_layers, mbstd_group_size=m.mbstd_group_size,
                            mbstd_num_channels=m.mbstd_num_channels, conv_clamp=clamp, dtype=dtype)
    return g, disc


def _adam(config: ml_collections.ConfigDict, reg_interval: int | None) -> optax.GradientTransformation:
    """Adam with StyleGAN2's lazy-regularisation rescaling: lr * r, betas ** r, r = k / (k + 1).

    reg_interval None: the regulariser shares the main step (no extra optimiser steps), r = 1.
    """
    o = config.optim
    r = 1.0 if reg_interval is None else reg_interval / (reg_interval + 1)
    # Flattened: one fused update over all parameters compiles much faster than one per leaf.
    return optax.flatten(optax.adam(o.lr * r, b1=o.b1**r, b2=o.b2**r, eps=o.eps))


def build_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """(G Adam, D Adam), rescaled for the path-length and R1 intervals (D not under DP: R1 is folded);
    under DP, D's with the noise transformation in front."""
    dp = DPConfig.from_config(config)
    d_interval = None if dp.enabled else config.loss.r1_interval
    return (_adam(config, config.loss.pl_interval),
            dp_noise.private(_adam(config, d_interval), dp, config.train.batch_size, config.train.steps))


def ada_settings(config: ml_collections.ConfigDict) -> ada_controller.AdaSettings:
    """`config.ada` as AdaSettings (validated)."""
    return ada_controller.AdaSettings.from_config(config.ada)


def augment_config(config: ml_collections.ConfigDict) -> ada.AugmentConfig:
    """The ADA pipeline named by `config.ada.pipeline`."""
    return ada.pipeline(config.ada.get("pipeline", "bgc"))


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> GANState:
    """Initial state (pure; jit it with out_shardings to create it sharded)."""
    _check_config(config)
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    k_g, k_d, k_run = jax.random.split(rng, 3)
    # Parameter draws use the 'rbg' generator (seeded from the threefry key): one RngBitGenerator
    # op per parameter compiles several times faster on CPU than one threefry expansion each.
    k_g, k_d = (jax.random.wrap_key_data(jax.random.bits(k, (4,), jnp.uint32), impl="rbg") for k in (k_g, k_d))
    size, ch = config.data.image_size, config.data.channels
    c = jnp.zeros((2,), jnp.int32) if config.model.num_classes else None
    g_vars = g.init({"params": k_g, "noise": k_g}, jnp.zeros((2, config.model.latent_dim)), c)
    d_vars = d.init(k_d, jnp.zeros((2, size, size, ch)), c)
    settings = ada_settings(config)
    extra = {
        "g_ema_params": jax.tree_util.tree_map(jnp.copy, g_vars["params"]),
        "ada_p": jnp.asarray(settings.p if settings.augments else 0.0, jnp.float32),
        "ada_sign_sum": jnp.zeros((), jnp.float32),
        "ada_sign_count": jnp.zeros((), jnp.float32),
        "pl_mean": jnp.zeros((), jnp.float32),
    }
    return GANState.create(k_run, g_vars, d_vars, g_tx, d_tx, extra, g_stats="stats")


def _check_config(config: ml_collections.ConfigDict) -> None:
    b, group = config.train.batch_size, config.model.mbstd_group_size
    if group and group > 1 and b % min(group, b):
        raise ValueError(f"config.train.batch_size={b} must be divisible by config.model.mbstd_group_size="
                         f"{group} (minibatch-stddev groups).")
    if b % config.loss.pl_batch_shrink or b // config.loss.pl_batch_shrink < 1:
        raise ValueError(f"config.train.batch_size={b} must be a multiple of config.loss.pl_batch_shrink="
                         f"{config.loss.pl_batch_shrink}.")
    ada_settings(config)
    augment_config(config)
    common.compute_dtype(config)
    if checks.dp_enabled(config):
        _check_dp(config)


def _check_dp(config: ml_collections.ConfigDict) -> None:
    """Refuses DP configs whose D mixes examples or whose training releases unaccounted statistics."""
    checks.check_dp_compatible(config, {})  # mbstd group > 1 (and BatchNorm) with its own message
    m = config.model
    if m.mbstd_group_size is None and m.mbstd_num_channels > 0:
        raise ValueError("DP-SGD is enabled (config.privacy.enabled=True) but the discriminator's "
                         "minibatch-stddev layer (DiscriminatorEpilogue) mixes the whole batch "
                         "(config.model.mbstd_group_size=None); set it to 0 (off) or 1 (per-example).")
    if ada_settings(config).mode == "adaptive":
        raise ValueError("DP-SGD is enabled (config.privacy.enabled=True) with config.ada.mode='adaptive': "
                         "ADA's p heuristic r_t = E[sign(D(real))] is a data-dependent release the privacy "
                         "accountant does not count. Use --config.ada.mode=fixed with --config.ada.p=P "
                         "(augmentation itself is per example and DP-safe) or --config.ada.mode=none.")
    sampling = DPConfig.from_config(config).sampling
    if sampling != "poisson":
        raise ValueError(f"config.privacy.sampling={sampling!r}: the stylegan2 trainer "
                         "implements Poisson sampling (what the accountant analyses); use 'poisson'.")
    check_clinical_under_dp(config)


def check_clinical_under_dp(config: ml_collections.ConfigDict) -> None:
    """Under DP, G may backpropagate through a frozen clinical classifier only if that classifier is
    marked as trained on public data (`clinical.public_data=True`, recorded in the export manifest):
    a classifier fit without privacy to the same private images would carry them into G unclipped
    and un-noised, and G would no longer be private by post-processing."""
    section = config.get("clinical")
    if section is None or not section.get("checkpoint", "") or not section.get("weight", 0.0):
        return
    if not section.get("public_data", False):
        raise ValueError(
            f"DP-SGD is enabled but the clinical loss (config.clinical.weight={section.weight}) backpropagates G "
            f"through the classifier {section.checkpoint}, which was trained without privacy; if it saw the "
            "private training images, G is no longer differentially private (it learns from them outside the "
            "clipped, noised D update). Set --config.clinical.weight=0, or --config.clinical.public_data=True if "
            "the classifier was trained only on public data (recorded in the export manifest).")


# ----------------------------------------------------------------------------------------------
# Shared pieces of the phases.


def _phase_keys(state: GANState, phase: str, n: int) -> list[jax.Array]:
    key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _PHASE_IDS[phase])
    return list(jax.random.split(key, n))


def _fake_labels(config, key: jax.Array, labels: jax.Array, n: int | None = None) -> jax.Array | None:
    """Fake labels [n]: real batch labels in a random order (the data's label distribution), or,
    under DP, uniform classes (the real labels are private); None if unconditional."""
    if not config.model.num_classes:
        return None
    if checks.dp_enabled(config):
        return jax.random.randint(key, (labels.shape[0] if n is None else n,), 0, config.model.num_classes)
    return jax.random.permutation(key, labels)[:n]


def _num_fakes(config, batch: dict) -> int:
    """Fakes per phase: the batch size (under DP the expected batch, not the padded Poisson one)."""
    return config.train.batch_size if checks.dp_enabled(config) else batch["image"].shape[0]


def _run_mapping(config, g: sg.Generator, g_params, g_stats, z, c, key: jax.Array, update: bool):
    """ws [N, num_ws, w_dim] with style mixing; returns (ws, new g_stats)."""
    variables = {"params": g_params, "stats": g_stats}
    if update:
        ws, upd = g.apply(variables, z, c, update_w_avg=True, method=g.map, mutable=["stats"])
        g_stats = upd["stats"]
    else:
        ws = g.apply(variables, z, c, method=g.map)
    prob = config.loss.style_mixing_prob
    if prob > 0:
        k_cut, k_use, k_z = jax.random.split(key, 3)
        num_ws = ws.shape[1]
        cutoff = jax.random.randint(k_cut, (), 1, num_ws)
        cutoff = jnp.where(jax.random.uniform(k_use, ()) < prob, cutoff, num_ws)
        ws2 = g.apply(variables, jax.random.normal(k_z, z.shape), c, method=g.map)  # no w_avg update
        ws = jnp.where(jnp.arange(num_ws)[None, :, None] >= cutoff, ws2, ws)
    return ws, g_stats


def _synthesize(g: sg.Generator, g_params, g_stats, ws, key: jax.Array) -> jax.Array:
    return g.apply({"params": g_params, "stats": g_stats}, ws, method=g.synthesize, rngs={"noise": key})


def _augment(config, images: jax.Array, key: jax.Array, p: jax.Array) -> jax.Array:
    """ADA on images [N,H,W,C] with probability p (the identity when ada.mode='none')."""
    if not ada_settings(config).augments:
        return images
    return ada.augment(images, key, p, augment_config(config))


def _augment_branchless(config, images: jax.Array, key: jax.Array, p: jax.Array) -> jax.Array:
    """`ada.augment` without its skip-when-all-identity `lax.cond` (same values; for [1,H,W,C] examples
    under the DP vmap, where that cond trips jax 0.10.2's shard_map varying-axes check)."""
    if not ada_settings(config).augments:
        return images
    cfg = augment_config(config)
    n, h, w, ch = images.shape
    k_geom, k_color = jax.random.split(key)
    x = images
    if any(getattr(cfg, op) > 0 for op in ada._GEOMETRIC):
        g_inv = ada.sample_geometric(k_geom, n, h, w, p, cfg)
        x = jnp.where(ada._is_identity(g_inv)[:, None, None, None], x, ada.apply_geometric(x, g_inv))
    if any(getattr(cfg, op) > 0 for op in ada._COLOR):
        c = ada.sample_color(k_color, n, ch, p, cfg)
        x = jnp.where(ada._is_identity(c)[:, None, None, None], x, ada.apply_color(x, c))
    return x


def _d_logits(config, d: sg.Discriminator, d_params, images, c, key: jax.Array, p: jax.Array) -> jax.Array:
    """D(augment(images), c) f32 [N]: every image D sees goes through ADA."""
    return d.apply({"params": d_params}, _augment(config, images, key, p), c).astype(jnp.float32)


def _d_fakes(config, g: sg.Generator, state: GANState, batch: dict, n: int, key: jax.Array):
    """(fakes f32 [n,H,W,C] without gradient, their labels [n] or None, new g_stats) for a D phase."""
    k_z, k_c, k_mix, k_noise = jax.random.split(key, 4)
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    c = _fake_labels(config, k_c, batch["label"], n)
    ws, g_stats = _run_mapping(config, g, state.g_params, state.g_stats, z, c, k_mix, update=True)
    fake = jax.lax.stop_gradient(_synthesize(g, state.g_params, g_stats, ws, k_noise)).astype(jnp.float32)
    return fake, c, g_stats


def _apply_updates(tx, grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


# ----------------------------------------------------------------------------------------------
# Phases: pure, each jitted on its own.


def g_main_step(config: ml_collections.ConfigDict, state: GANState, batch: dict,
                clf_variables: Any = None) -> tuple[GANState, dict]:
    """Gmain: softplus(-D(aug(G(z, c)), c)) [+ lambda * CE(classifier(G(z, c)), c)]; one Adam step of G."""
    g, d = build_models(config)
    g_tx, _ = build_optimizers(config)
    k_z, k_c, k_mix, k_noise, k_aug = _phase_keys(state, "Gmain", 5)
    n = _num_fakes(config, batch)
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    c = _fake_labels(config, k_c, batch["label"], n)
    weight = float(config.clinical.weight) if config.get("clinical") is not None else 0.0
    clf = _frozen_classifier(config)
    if weight > 0 and clf is None:
        raise ValueError("config.clinical.weight > 0 needs config.clinical.checkpoint (a classifier directory).")
    if clf is not None and clf_variables is None:
        clf_variables = clf.variables  # baked into the computation as constants

    def loss_fn(g_params):
        ws, g_stats = _run_mapping(config, g, g_params, state.g_stats, z, c, k_mix, update=True)
        img = _synthesize(g, g_params, g_stats, ws, k_noise)
        logits = _d_logits(config, d, state.d_params, img, c, k_aug, state.extra["ada_p"])
        clf_logits = labels = None
        if clf is not None:
            labels = c if c is not None else jnp.zeros((n,), jnp.int32)
            clf_logits = clf.logits(clf_variables, img)
        per_example, parts = sg_losses.g_main_loss(logits, clf_logits, labels, clinical_weight=weight)
        metrics = {"g_loss": jnp.mean(parts["adversarial"]), "g_fake_logit": jnp.mean(logits)}
        if clf_logits is not None:
            metrics["clinical_ce"] = jnp.mean(parts["clinical_ce"])
            metrics["clinical_acc"] = jnp.mean(jnp.argmax(clf_logits, -1) == labels)
        return jnp.mean(per_example), (metrics, g_stats)

    (total, (metrics, g_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt_state = _apply_updates(g_tx, grads, state.g_opt_state, state.g_params)
    metrics.update(g_total_loss=total, g_grad_norm=optax.tree.norm(grads))
    return state.replace(g_params=g_params, g_stats=g_stats, g_opt_state=g_opt_state), metrics


def g_reg_step(config: ml_collections.ConfigDict, state: GANState, batch: dict) -> tuple[GANState, dict]:
    """Greg: path-length penalty * pl_weight * pl_interval on batch / pl_batch_shrink; one Adam step of G."""
    g, _ = build_models(config)
    g_tx, _ = build_optimizers(config)
    lc = config.loss
    k_z, k_c, k_mix, k_noise, k_pl = _phase_keys(state, "Greg", 5)
    full = _num_fakes(config, batch)
    n = full // lc.pl_batch_shrink
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    c = _fake_labels(config, k_c, batch["label"], full)
    c = None if c is None else c[:n]

    def loss_fn(g_params):
        ws, g_stats = _run_mapping(config, g, g_params, state.g_stats, z, c, k_mix, update=True)
        synth = lambda w: _synthesize(g, g_params, g_stats, w, k_noise)
        loss, parts = sg_losses.g_reg_loss(synth, ws, k_pl, state.extra["pl_mean"], weight=lc.pl_weight,
                                           interval=lc.pl_interval, decay=lc.pl_decay)
        return loss, (parts, g_stats)

    (loss, (parts, g_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt_state = _apply_updates(g_tx, grads, state.g_opt_state, state.g_params)
    extra = {**state.extra, "pl_mean": jax.lax.stop_gradient(parts["pl_mean"])}
    metrics = {"pl_penalty": jnp.mean(parts["penalty"]), "pl_length": jnp.mean(parts["lengths"]),
               "pl_mean": parts["pl_mean"], "g_reg_loss": loss}
    return state.replace(g_params=g_params, g_stats=g_stats, g_opt_state=g_opt_state, extra=extra), metrics


def d_main_step(config: ml_collections.ConfigDict, state: GANState, batch: dict) -> tuple[GANState, dict]:
    """Dmain: softplus(D(aug(G(z)))) + softplus(-D(aug(x))); one Adam step of D; accumulates sign(D(x))."""
    g, d = build_models(config)
    _, d_tx = build_optimizers(config)
    k_fake, k_aug_fake = _phase_keys(state, "Dmain", 2)
    real, real_c = batch["image"], batch["label"] if config.model.num_classes else None
    n = real.shape[0]
    fake, c, g_stats = _d_fakes(config, g, state, batch, n, k_fake)
    # D's parameters do not reach the images, so both batches are augmented once, outside the
    # gradient, in one pipeline call (half the compiled code of two calls); D still sees them apart.
    both = _augment(config, jnp.concatenate([fake, real]), k_aug_fake, state.extra["ada_p"])
    fake_aug, real_aug = both[:n], both[n:]

    def loss_fn(d_params):
        fake_logits = d.apply({"params": d_params}, fake_aug, c).astype(jnp.float32)
        real_logits = d.apply({"params": d_params}, real_aug, real_c).astype(jnp.float32)
        per_example, parts = sg_losses.d_main_loss(real_logits, fake_logits)
        return jnp.mean(per_example), (parts, fake_logits, real_logits)

    (loss, (parts, fake_logits, real_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt_state = _apply_updates(d_tx, grads, state.d_opt_state, state.d_params)
    signs = jnp.sign(real_logits)
    extra = {**state.extra, "ada_sign_sum": state.extra["ada_sign_sum"] + jnp.sum(signs),
             "ada_sign_count": state.extra["ada_sign_count"] + n}
    metrics = {"d_loss": loss, "d_loss_fake": jnp.mean(parts["fake"]), "d_loss_real": jnp.mean(parts["real"]),
               "d_real_logit": jnp.mean(real_logits), "d_fake_logit": jnp.mean(fake_logits),
               "d_real_sign": jnp.mean(signs), "d_grad_norm": optax.tree.norm(grads)}
    return state.replace(d_params=d_params, d_opt_state=d_opt_state, g_stats=g_stats, extra=extra), metrics


def d_reg_step(config: ml_collections.ConfigDict, state: GANState, batch: dict) -> tuple[GANState, dict]:
    """Dreg: R1 = gamma/2 ||grad_x D(aug(x))||^2 * r1_interval on reals; one Adam step of D."""
    _, d = build_models(config)
    _, d_tx = build_optimizers(config)
    (k_aug,) = _phase_keys(state, "Dreg", 1)
    real, real_c = batch["image"], batch["label"] if config.model.num_classes else None
    lc = config.loss

    def loss_fn(d_params):
        d_fn = lambda x: _d_logits(config, d, d_params, x, real_c, k_aug, state.extra["ada_p"])
        return sg_losses.d_reg_loss(d_fn, real, lc.r1_gamma, lc.r1_interval)

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt_state = _apply_updates(d_tx, grads, state.d_opt_state, state.d_params)
    extra = {**state.extra, "ada_sign_sum": state.extra["ada_sign_sum"] + jnp.sum(jnp.sign(parts["logits"])),
             "ada_sign_count": state.extra["ada_sign_count"] + real.shape[0]}
    metrics = {"r1_penalty": jnp.mean(parts["penalty"]), "d_reg_loss": loss}
    return state.replace(d_params=d_params, d_opt_state=d_opt_state, extra=extra), metrics


def private_config(config: ml_collections.ConfigDict, *, with_r1: bool = False) -> DPConfig:
    """The run's DPConfig for a D phase, clip_method 'auto' resolved: ghost clipping (which covers
    D's equalised-lr convs, FIR down-sampling and projection head) for Dmain, vmap for the phases
    with R1 in the clipped loss (a gradient of D's input gradient, which ghost clipping cannot
    take). An explicit 'ghost' is refused for those phases."""
    return DPConfig.from_config(config).with_clip_method(
        ghost_supported=not with_r1, why_not="StyleGAN2's regularised D phases clip a loss holding R1 (a "
        "gradient of D's input gradient), which only 'vmap' handles")


def d_private_grads(config: ml_collections.ConfigDict, d_params: Any, batch: dict, fake_aug: jax.Array,
                    fake_c: jax.Array | None, p: jax.Array, aug_keys: jax.Array, *, with_r1: bool,
                    mesh: Any = None) -> tuple[Any, dict]:
    """DP-SGD sum-scale gradient of D's loss (like d_params; the optimiser's noise transformation
    noises it once and divides by E[B]) and metrics.

    batch: image f32 [B,H,W,C] (a padded Poisson batch), label i32 [B], mask f32 [B] (1 = real).
    fake_aug: augmented fakes f32 [M,H,W,C], labels fake_c [M]. aug_keys: one ADA key per real
    example [B]. Real term per example i, clipped to C = privacy.l2_clip and summed:
        softplus(-D(aug_i(x_i), c_i)) [+ r1_interval * gamma/2 * ||d D(aug_i(x_i), c_i) / d x_i||^2]
    (R1 through the augmentation, as StyleGAN2-ADA). Fake term: E[B] * mean over M of softplus(D(fake)),
    not noised (clipped per example to C when privacy.clip_fake). `mesh`: clip per shard of the
    batch in shard_map, psum (`dp_sgd.d_gradient`).
    """
    _, d = build_models(config)
    lc = config.loss
    conditional = bool(config.model.num_classes)
    real, mask = batch["image"], batch["mask"]
    # p rides along per example: the loss runs inside shard_map, which takes arrays as arguments.
    examples = {"image": real, "label": batch["label"], "key": aug_keys,
                "p": jnp.broadcast_to(jnp.asarray(p, jnp.float32), mask.shape)}

    def real_loss(d_params, ex):
        c = ex["label"][None] if conditional else None
        d_fn = lambda x: d.apply({"params": d_params}, _augment_branchless(config, x, ex["key"], ex["p"]),
                                 c).astype(jnp.float32)
        if with_r1:
            penalty, logits = sg_losses.r1_penalty_and_logits(d_fn, ex["image"][None], lc.r1_gamma)
            r1 = penalty[0]
        else:
            logits, r1 = d_fn(ex["image"][None]), jnp.zeros((), jnp.float32)
        return sg_losses.d_both_real_loss(logits[0], r1, lc.r1_interval), {"logit": logits[0], "r1": r1}

    def fake_loss(d_params, ex):
        c = ex["label"][None] if conditional else None
        logit = d.apply({"params": d_params}, ex["image"][None], c)[0].astype(jnp.float32)
        return sg_losses.d_fake_loss(logit), logit

    m = fake_aug.shape[0]
    fakes = {"image": fake_aug, "label": fake_c if conditional else jnp.zeros((m,), jnp.int32)}
    grads, out = dp_sgd.d_gradient(real_loss, d_params, examples, mask, private_config(config, with_r1=with_r1),
                                   fake_loss=fake_loss, fake=fakes, expected_batch_size=config.train.batch_size,
                                   canaries=dp_sgd.batch_canaries(batch), mesh=mesh)
    per_ex, fake_logits, loss_fake = out.pop("real_aux"), out.pop("fake_aux"), out.pop("fake_loss")
    mean = functools.partial(dp_sgd.masked_mean, mask=mask)  # monitoring only: private metrics
    loss_real = mean(sg_losses.d_real_loss(per_ex["logit"]))
    metrics = {"d_loss": loss_real + loss_fake, "d_loss_real": loss_real, "d_loss_fake": loss_fake,
               "d_real_logit": mean(per_ex["logit"]), "d_fake_logit": jnp.mean(fake_logits),
               "d_grad_norm": optax.tree.norm(grads) / config.train.batch_size, **out}
    if with_r1:
        metrics["r1_penalty"] = mean(per_ex["r1"])
    return grads, metrics


def d_private_step(config: ml_collections.ConfigDict, state: GANState, batch: dict, *, with_r1: bool,
                   mesh: Any = None) -> tuple[GANState, dict]:
    """Dmain (with_r1=False) or Dboth (Dmain + lazy R1 in one clipped loss) under DP-SGD; one noised
    Adam step of D (the noise key is the batch's, drawn from the run's secret).

    batch carries `mask` f32 [B] (Poisson padding). ADA p is fixed under DP, so no sign statistics
    are accumulated.
    """
    g, _ = build_models(config)
    _, d_tx = build_optimizers(config)
    k_fake, k_aug_fake, k_aug_real = _phase_keys(state, "Dboth" if with_r1 else "Dmain", 3)
    p = state.extra["ada_p"]
    fake, c, g_stats = _d_fakes(config, g, state, batch, _num_fakes(config, batch), k_fake)
    fake_aug = _augment(config, fake, k_aug_fake, p)
    aug_keys = jax.random.split(k_aug_real, batch["image"].shape[0])
    grads, metrics = d_private_grads(config, state.d_params, batch, fake_aug, c, p, aug_keys,
                                     with_r1=with_r1, mesh=mesh)
    updates, d_opt_state = d_tx.update(grads, state.d_opt_state, state.d_params,
                                       **dp_sgd.noise_args(batch, metrics))
    d_params = optax.apply_updates(state.d_params, updates)
    return state.replace(d_params=d_params, d_opt_state=d_opt_state, g_stats=g_stats), metrics


ema_beta = common.ema_beta  # shared with the DCGAN / ACGAN family


def finish_step(config: ml_collections.ConfigDict, state: GANState) -> tuple[GANState, dict]:
    """End of a step: G EMA update (with ramp-up) and step + 1."""
    beta = ema_beta(config, state.step)
    ema = common.ema_update(state.extra["g_ema_params"], state.g_params, beta)
    extra = {**state.extra, "g_ema_params": ema}
    metrics = {"ada_p": state.extra["ada_p"], "ema_beta": beta, "pl_mean": state.extra["pl_mean"]}
    return state.replace(step=state.step + 1, extra=extra), metrics


def phases_at(config: ml_collections.ConfigDict, step: int) -> tuple[str, ...]:
    """Host-side lazy-regularisation schedule: the phases that run at 0-based step `step`.

    Under DP, D runs 'Dmain' or, on R1 steps, 'Dboth' (one clipped loss), never 'Dreg'.
    """
    lc = config.loss
    out = ["Gmain"]
    if lc.pl_weight > 0 and step % lc.pl_interval == 0:
        out.append("Greg")
    r1_due = lc.r1_gamma > 0 and step % lc.r1_interval == 0
    if checks.dp_enabled(config):  # one DP step of D per training step: R1 folded into Dmain
        out.append("Dboth" if r1_due else "Dmain")
    else:
        out.extend(("Dmain", "Dreg") if r1_due else ("Dmain",))
    return tuple(out)


def train_step(config: ml_collections.ConfigDict, state: GANState, batch: dict,
               clf_variables: Any = None, *, mesh: Any = None) -> tuple[GANState, dict]:
    """All four phases and the EMA in one pure function (what a step divisible by both intervals runs).

    `common.fit` uses `make_step` instead, which runs the lazy schedule with one jit per phase.
    `mesh`: the device mesh; under DP, D's per-example clipping runs per shard of it (else GSPMD
    shards from the inputs). Under DP, batch has `mask` and D runs 'Dboth'.
    """
    metrics = {}
    state, m = g_main_step(config, state, batch, clf_variables)
    metrics.update(m)
    d_steps = ((functools.partial(d_private_step, with_r1=True, mesh=mesh),) if checks.dp_enabled(config)
               else (d_main_step, d_reg_step))
    for fn in (g_reg_step, *d_steps):
        state, m = fn(config, state, batch)
        metrics.update(m)
    state, m = finish_step(config, state)
    return state, {**metrics, **m}


# ----------------------------------------------------------------------------------------------
# Host side: the step callable for common.fit.


@functools.lru_cache(maxsize=4)
def _load_classifier(path: str) -> Any:
    # Phases may first ask for the classifier while jit traces them: restore it eagerly (orbax
    # cannot build arrays from tracers) and keep numpy variables (constants in any trace).
    with jax.ensure_compile_time_eval():
        clf = trained_classifier.load_classifier(path)[0]
    return dataclasses.replace(clf, variables=jax.tree_util.tree_map(np.asarray, jax.device_get(clf.variables)))


def _frozen_classifier(config: ml_collections.ConfigDict) -> Any:
    """The clinical classifier of `config.clinical.checkpoint` (None if unset), checked against the GAN.

    The path is a classifier training workdir, the one frozen format
    (`models.trained_classifier.load_classifier`: 'cnn' or 'resnet' arch). Its class count, image
    size, channels and task type (single-label) must match the GAN.
    """
    section = config.get("clinical")
    path = section.get("checkpoint", "") if section is not None else ""
    if not path:
        return None
    clf = _load_classifier(path)
    k = config.model.num_classes
    if k and clf.num_classes != k:
        names = f" {list(clf.class_names)}" if clf.class_names else ""
        raise ValueError(f"The clinical classifier in {path} has {clf.num_classes} classes{names} but the GAN "
                         f"has config.model.num_classes={k} conditions; train the classifier on the GAN's "
                         "classes (same names, same order).")
    if clf.multi_label:
        raise ValueError(f"The clinical classifier in {path} is multi-label; the clinical loss is a softmax "
                         "cross-entropy over single-label classes (the GAN's conditions).")
    size, ch = config.data.image_size, config.data.channels
    if (clf.image_size, clf.channels) != (size, ch):
        raise ValueError(f"The clinical classifier in {path} takes {clf.image_size}x{clf.image_size}x{clf.channels} "
                         f"images but the GAN makes {size}x{size}x{ch} (config.data.image_size/channels); train it "
                         "at the GAN's resolution.")
    return clf


def check_clinical_classes(config: ml_collections.ConfigDict, class_names: Sequence[str] | None) -> None:
    """Refuses a clinical classifier whose class names differ (in name or order) from the GAN's
    conditions `class_names` (the training data's classes; None = unnamed, e.g. StyleGAN datasets,
    whose labels are indices: only the count is checked)."""
    clf = _frozen_classifier(config)
    if clf is None or not class_names or not clf.class_names or not config.model.num_classes:
        return
    if tuple(clf.class_names) != tuple(class_names):
        raise ValueError(f"The clinical classifier in {config.clinical.checkpoint} has classes "
                         f"{list(clf.class_names)} but the GAN's conditions (config.data.source="
                         f"{config.data.source!r}) are {list(class_names)}; label c of the GAN must be "
                         "class c of the classifier.")


def make_step(config: ml_collections.ConfigDict, state_shardings: Any, batch_sharding: Any,
              replicated: Any) -> Callable[[GANState, dict, int], tuple[GANState, dict]]:
    """A host-side `step(state, batch, step) -> (state, metrics)` running the phases of `phases_at`.

    Each phase is jitted once with explicit shardings and donated state; the ADA p heuristic runs
    here, on the host, every `config.ada.interval` steps.
    """
    clf = _frozen_classifier(config)
    clf_vars = None if clf is None else jax.device_put(clf.variables, replicated)
    state_out = (state_shardings, replicated)

    # train.fast_compile: XLA backend optimisation level 0 (~40 % faster compiles, slower steps on
    # CPU); for tests and short smoke runs.
    options = {"xla_backend_optimization_level": 0} if config.train.get("fast_compile", False) else None

    def jit_phase(fn, with_clf=False):
        in_sh = (state_shardings, batch_sharding) + ((replicated,) if with_clf else ())
        return jax.jit(functools.partial(fn, config), in_shardings=in_sh, out_shardings=state_out,
                       donate_argnums=(0,), compiler_options=options)

    phase_fns = {"Gmain": jit_phase(g_main_step, with_clf=True), "Greg": jit_phase(g_reg_step)}
    if checks.dp_enabled(config):
        mesh = batch_sharding.mesh  # per-example clipping runs in shard_map over its data axis
        phase_fns["Dmain"] = jit_phase(functools.partial(d_private_step, with_r1=False, mesh=mesh))
        phase_fns["Dboth"] = jit_phase(functools.partial(d_private_step, with_r1=True, mesh=mesh))
    else:
        phase_fns.update(Dmain=jit_phase(d_main_step), Dreg=jit_phase(d_reg_step))
    finish = jax.jit(functools.partial(finish_step, config), in_shardings=(state_shardings,),
                     out_shardings=state_out, donate_argnums=(0,), compiler_options=options)
    settings = ada_settings(config)
    ctl = ada_controller.AdaController(settings, config.train.batch_size)
    extra_sh = state_shardings.extra

    def step_fn(state: GANState, batch: dict, step: int) -> tuple[GANState, dict]:
        metrics: dict = {}
        for name in phases_at(config, step):
            args = (clf_vars,) if name == "Gmain" else ()
            state, m = phase_fns[name](state, batch, *args)
            metrics.update(m)
        state, m = finish(state)
        metrics.update(m)
        if settings.augments and ctl.due(step + 1):
            p, sign_sum, count = (float(v) for v in jax.device_get(
                (state.extra["ada_p"], state.extra["ada_sign_sum"], state.extra["ada_sign_count"])))
            new_p, r_t = ctl.update(p, sign_sum, count)
            put = lambda v, k: jax.device_put(jnp.asarray(v, jnp.float32), extra_sh[k])
            state = state.replace(extra={**state.extra, "ada_p": put(new_p, "ada_p"),
                                         "ada_sign_sum": put(0.0, "ada_sign_sum"),
                                         "ada_sign_count": put(0.0, "ada_sign_count")})
            metrics.update(ada_r_t=np.float32(r_t), ada_p=np.float32(new_p))
        return state, metrics

    return step_fn


# ----------------------------------------------------------------------------------------------
# Generation and evaluation.


def generate(config: ml_collections.ConfigDict, state: GANState, z: jax.Array,
             labels: jax.Array | None) -> jax.Array:
    """Images f32 [N,H,W,C] from the G EMA weights (const noise, `config.samples.truncation_psi`)."""
    g, _ = build_models(config)
    psi = config.samples.get("truncation_psi", 1.0)
    c = labels if config.model.num_classes else None
    return g.apply({"params": state.extra["g_ema_params"], "stats": state.g_stats}, z, c,
                   truncation_psi=psi, noise_mode="const")


def evaluate(config: ml_collections.ConfigDict, state: GANState, eval_data) -> dict[str, float]:
    """Conditional models: the clinical classifier's accuracy per class on G-EMA images (and on held-out
    reals, for reference) when `clinical.checkpoint` is set, and the intra-class diversity ratio of
    G-EMA images vs held-out reals (`eval/diversity_ratio[_class{k}]`, common.class_diversity_metrics)."""
    # The diversity helper is shared with the DCGAN family (one definition of the metric's sampling).

    clf = _frozen_classifier(config)
    k = config.model.num_classes
    if not k:
        return {}
    gen = jax.jit(generate, static_argnums=0)  # the frozen config is static: compiled once per shape
    frozen = ml_collections.FrozenConfigDict(config)
    out = {}
    if clf is not None:
        per_class = int(config.clinical.get("eval_per_class", 32))
        labels = np.repeat(np.arange(k), per_class)
        z, labels = common.latent_batch(config, jax.random.PRNGKey(config.samples.seed + 1), len(labels), labels)
        images = gen(frozen, state, z, labels)
        logits = np.asarray(jax.jit(clf.logits)(clf.variables, images))
        out["eval/clinical_acc_generated"] = float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))
        for cls, acc in clinical.per_class_accuracy(logits, np.asarray(labels), k).items():
            out[f"eval/clinical_acc_generated_class{cls}"] = acc
        if eval_data is not None:
            real_images, real_labels = eval_data
            real_logits = np.asarray(jax.jit(clf.logits)(clf.variables, jnp.asarray(real_images)))
            out["eval/clinical_acc_real"] = float(np.mean(np.argmax(real_logits, -1) == real_labels))
    out.update(common.class_diversity_metrics(config, gen, state, eval_data, config.samples.seed + 2))
    return out


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """StyleGAN2's synthesis network builds 8 to 1024 px (powers of two)."""
    return 8, 1024


FAMILY = common.Family(
    name="stylegan2",
    init_state=init_state,
    train_step=train_step,
    generate=generate,
    evaluate=evaluate,
    make_step=make_step,
    latent_spaces=("w", "w+", "z"),  # inverted in w unless told (Karras et al. 2020's projector)
    image_sizes=image_sizes,
    # Under DP: the G phases (G, the clinical classifier and D on generated images), D on generated
    # images, and the EMA / fixed ADA p.
    dp_public_metrics=("g_loss", "g_fake_logit", "clinical_ce", "clinical_acc", "pl_penalty", "pl_length",
                       "pl_mean", "g_reg_loss", "d_loss_fake", "d_fake_logit", "ada_p", "ema_beta"),
)


def load_data(config: ml_collections.ConfigDict) -> tuple[Any, Any, tuple[str, ...] | None, str]:
    """(train source, held-out (images, labels) or None, class names or None, data_dir) for
    `config.data`; every source goes through `data.datasets`."""
    from jaxmedgan.data import datasets, tfds_builders  # heavy; import on use

    data_dir = datasets.prepare(config)
    train, eval_arrays = datasets.load(config, data_dir)
    names = tfds_builders.class_names(data_dir, config.data.source) if config.model.num_classes else None
    return train, eval_arrays, names, data_dir


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
    """Trains conditional StyleGAN2-ADA as configured, writing checkpoints, metrics and samples."""
    train, eval_arrays, names, data_dir = load_data(config)
    check_clinical_classes(config, names)
    return common.fit(config, workdir, FAMILY, data=(train, eval_arrays), data_dir=data_dir)
