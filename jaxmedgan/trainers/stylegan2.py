"""Conditional StyleGAN2-ADA trainer: pure phase functions + host-side lazy-regularisation schedule.

Follows NVlabs/stylegan2-ada-pytorch `training/training_loop.py` and `training/loss.py`. One
training step runs, in this order, the phases whose interval divides the step index:

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
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

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
from jaxmedgan.privacy import checks
from jaxmedgan.state import GANState
from jaxmedgan.trainers import common

log = logging.getLogger(__name__)

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
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


def _adam(config: ml_collections.ConfigDict, reg_interval: int) -> optax.GradientTransformation:
    """Adam with StyleGAN2's lazy-regularisation rescaling: lr * r, betas ** r, r = k / (k + 1)."""
    o = config.optim
    r = reg_interval / (reg_interval + 1)
    # Flattened: one fused update over all parameters compiles much faster than one per leaf.
    return optax.flatten(optax.adam(o.lr * r, b1=o.b1**r, b2=o.b2**r, eps=o.eps))


def build_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """(G Adam, D Adam), rescaled for the path-length and R1 intervals."""
    return _adam(config, config.loss.pl_interval), _adam(config, config.loss.r1_interval)


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
    return GANState(step=jnp.zeros((), jnp.int32), rng=k_run, g_params=g_vars["params"],
                    d_params=d_vars["params"], g_stats=g_vars["stats"], d_stats={},
                    g_opt_state=g_tx.init(g_vars["params"]), d_opt_state=d_tx.init(d_vars["params"]),
                    extra=extra)


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
    if checks.dp_enabled(config):
        # D is per-example when mbstd_group_size is 0 or 1 (checked here first, with its own message)
        # and R1 has a per-example form (losses.stylegan2.r1_penalty_per_example), but the DP-SGD
        # D phases are not wired into this trainer yet.
        checks.check_dp_compatible(config, {})
        raise NotImplementedError("config.privacy.enabled=True: DP-SGD is not implemented for the "
                                  "stylegan2 trainer yet; train it without DP or use trainer 'gan'.")


# ----------------------------------------------------------------------------------------------
# Shared pieces of the phases.


def _phase_keys(state: GANState, phase: str, n: int) -> list[jax.Array]:
    key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _PHASE_IDS[phase])
    return list(jax.random.split(key, n))


def _fake_labels(config, key: jax.Array, labels: jax.Array) -> jax.Array | None:
    """Real batch labels in a random order (the data's label distribution); None if unconditional."""
    if not config.model.num_classes:
        return None
    return jax.random.permutation(key, labels)


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


def _d_logits(config, d: sg.Discriminator, d_params, images, c, key: jax.Array, p: jax.Array) -> jax.Array:
    """D(augment(images), c) [N]: every image D sees goes through ADA."""
    return d.apply({"params": d_params}, _augment(config, images, key, p), c)


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
    n = batch["image"].shape[0]
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    c = _fake_labels(config, k_c, batch["label"])
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
        per_example = sg_losses.g_nonsaturating(logits)
        metrics = {"g_loss": jnp.mean(per_example), "g_fake_logit": jnp.mean(logits)}
        total = per_example
        if clf is not None:
            labels = c if c is not None else jnp.zeros((n,), jnp.int32)
            clf_logits = clf.logits(clf_variables, img)
            ce = clinical.clinical_loss(clf_logits, labels)
            if weight > 0:  # lambda = 0 leaves the loss (and its gradient) exactly plain StyleGAN2-ADA
                total = total + weight * ce
            metrics["clinical_ce"] = jnp.mean(ce)
            metrics["clinical_acc"] = jnp.mean(jnp.argmax(clf_logits, -1) == labels)
        return jnp.mean(total), (metrics, g_stats)

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
    n = batch["image"].shape[0] // lc.pl_batch_shrink
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    c = _fake_labels(config, k_c, batch["label"])
    c = None if c is None else c[:n]

    def loss_fn(g_params):
        ws, g_stats = _run_mapping(config, g, g_params, state.g_stats, z, c, k_mix, update=True)
        synth = lambda w: _synthesize(g, g_params, g_stats, w, k_noise)
        penalty, lengths, pl_mean = sg_losses.path_length_penalty(synth, ws, k_pl, state.extra["pl_mean"],
                                                                   decay=lc.pl_decay)
        loss = jnp.mean(penalty) * lc.pl_weight * lc.pl_interval
        return loss, (penalty, lengths, pl_mean, g_stats)

    (loss, (penalty, lengths, pl_mean, g_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt_state = _apply_updates(g_tx, grads, state.g_opt_state, state.g_params)
    extra = {**state.extra, "pl_mean": jax.lax.stop_gradient(pl_mean)}
    metrics = {"pl_penalty": jnp.mean(penalty), "pl_length": jnp.mean(lengths), "pl_mean": pl_mean,
               "g_reg_loss": loss}
    return state.replace(g_params=g_params, g_stats=g_stats, g_opt_state=g_opt_state, extra=extra), metrics


def d_main_step(config: ml_collections.ConfigDict, state: GANState, batch: dict) -> tuple[GANState, dict]:
    """Dmain: softplus(D(aug(G(z)))) + softplus(-D(aug(x))); one Adam step of D; accumulates sign(D(x))."""
    g, d = build_models(config)
    _, d_tx = build_optimizers(config)
    k_z, k_c, k_mix, k_noise, k_aug_fake = _phase_keys(state, "Dmain", 5)
    real, real_c = batch["image"], batch["label"] if config.model.num_classes else None
    n = real.shape[0]
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    c = _fake_labels(config, k_c, batch["label"])
    ws, g_stats = _run_mapping(config, g, state.g_params, state.g_stats, z, c, k_mix, update=True)
    fake = jax.lax.stop_gradient(_synthesize(g, state.g_params, g_stats, ws, k_noise))
    # D's parameters do not reach the images, so both batches are augmented once, outside the
    # gradient, in one pipeline call (half the compiled code of two calls); D still sees them apart.
    both = _augment(config, jnp.concatenate([fake, real]), k_aug_fake, state.extra["ada_p"])
    fake_aug, real_aug = both[:n], both[n:]

    def loss_fn(d_params):
        fake_logits = d.apply({"params": d_params}, fake_aug, c)
        real_logits = d.apply({"params": d_params}, real_aug, real_c)
        loss_fake, loss_real = jax.nn.softplus(fake_logits), jax.nn.softplus(-real_logits)
        return jnp.mean(loss_fake + loss_real), (loss_fake, loss_real, fake_logits, real_logits)

    (loss, (loss_fake, loss_real, fake_logits, real_logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt_state = _apply_updates(d_tx, grads, state.d_opt_state, state.d_params)
    signs = jnp.sign(real_logits)
    extra = {**state.extra, "ada_sign_sum": state.extra["ada_sign_sum"] + jnp.sum(signs),
             "ada_sign_count": state.extra["ada_sign_count"] + n}
    metrics = {"d_loss": loss, "d_loss_fake": jnp.mean(loss_fake), "d_loss_real": jnp.mean(loss_real),
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
        penalty, logits = sg_losses.r1_penalty_and_logits(d_fn, real, lc.r1_gamma)
        return jnp.mean(penalty) * lc.r1_interval, (penalty, logits)

    (loss, (penalty, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt_state = _apply_updates(d_tx, grads, state.d_opt_state, state.d_params)
    extra = {**state.extra, "ada_sign_sum": state.extra["ada_sign_sum"] + jnp.sum(jnp.sign(logits)),
             "ada_sign_count": state.extra["ada_sign_count"] + real.shape[0]}
    metrics = {"r1_penalty": jnp.mean(penalty), "d_reg_loss": loss}
    return state.replace(d_params=d_params, d_opt_state=d_opt_state, extra=extra), metrics


def ema_beta(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """G EMA decay at `step`: 0.5 ** (batch / half-life in images), half-life ramped up by images seen."""
    batch = config.train.batch_size
    ema_kimg = config.ema.kimg if config.ema.kimg > 0 else batch * 10 / 32
    ema_nimg = jnp.float32(ema_kimg * 1000)
    if config.ema.rampup:
        ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch * config.ema.rampup)
    return 0.5 ** (batch / jnp.maximum(ema_nimg, 1e-8))


def finish_step(config: ml_collections.ConfigDict, state: GANState) -> tuple[GANState, dict]:
    """End of a step: G EMA update (with ramp-up) and step + 1."""
    beta = ema_beta(config, state.step)
    ema = jax.tree_util.tree_map(lambda e, p: p + beta * (e - p), state.extra["g_ema_params"], state.g_params)
    extra = {**state.extra, "g_ema_params": ema}
    metrics = {"ada_p": state.extra["ada_p"], "ema_beta": beta, "pl_mean": state.extra["pl_mean"]}
    return state.replace(step=state.step + 1, extra=extra), metrics


def phases_at(config: ml_collections.ConfigDict, step: int) -> tuple[str, ...]:
    """Host-side lazy-regularisation schedule: the phases that run at 0-based step `step`."""
    lc = config.loss
    out = ["Gmain"]
    if lc.pl_weight > 0 and step % lc.pl_interval == 0:
        out.append("Greg")
    out.append("Dmain")
    if lc.r1_gamma > 0 and step % lc.r1_interval == 0:
        out.append("Dreg")
    return tuple(out)


def train_step(config: ml_collections.ConfigDict, state: GANState, batch: dict,
               clf_variables: Any = None, *, mesh: Any = None) -> tuple[GANState, dict]:
    """All four phases and the EMA in one pure function (what a step divisible by both intervals runs).

    `common.fit` uses `make_step` instead, which runs the lazy schedule with one jit per phase.
    `mesh` is accepted for the Family protocol and unused (GSPMD shards from the inputs).
    """
    del mesh
    metrics = {}
    state, m = g_main_step(config, state, batch, clf_variables)
    metrics.update(m)
    for fn in (g_reg_step, d_main_step, d_reg_step):
        state, m = fn(config, state, batch)
        metrics.update(m)
    state, m = finish_step(config, state)
    return state, {**metrics, **m}


# ----------------------------------------------------------------------------------------------
# Host side: the step callable for common.fit.


@functools.lru_cache(maxsize=4)
def _load_classifier(path: str) -> clinical.FrozenClassifier:
    return clinical.load_frozen_classifier(path)


def _frozen_classifier(config: ml_collections.ConfigDict) -> clinical.FrozenClassifier | None:
    section = config.get("clinical")
    path = section.get("checkpoint", "") if section is not None else ""
    if not path:
        return None
    clf = _load_classifier(path)
    if config.model.num_classes and clf.num_classes != config.model.num_classes:
        raise ValueError(f"The clinical classifier in {path} has {clf.num_classes} classes but "
                         f"config.model.num_classes={config.model.num_classes}.")
    return clf


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

    phase_fns = {"Gmain": jit_phase(g_main_step, with_clf=True), "Greg": jit_phase(g_reg_step),
                 "Dmain": jit_phase(d_main_step), "Dreg": jit_phase(d_reg_step)}
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
    """Clinical classifier accuracy per class on G-EMA images (and on held-out reals, for reference)."""
    clf = _frozen_classifier(config)
    k = config.model.num_classes
    if clf is None or not k:
        return {}
    per_class = int(config.clinical.get("eval_per_class", 32))
    labels = np.repeat(np.arange(k), per_class)
    z, labels = common.latent_batch(config, jax.random.PRNGKey(config.samples.seed + 1), len(labels), labels)
    images = jax.jit(functools.partial(generate, config))(state, z, labels)
    logits = np.asarray(jax.jit(clf.logits)(clf.variables, images))
    out = {"eval/clinical_acc_generated": float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))}
    for cls, acc in clinical.per_class_accuracy(logits, np.asarray(labels), k).items():
        out[f"eval/clinical_acc_generated_class{cls}"] = acc
    if eval_data is not None:
        real_images, real_labels = eval_data
        real_logits = np.asarray(jax.jit(clf.logits)(clf.variables, jnp.asarray(real_images)))
        out["eval/clinical_acc_real"] = float(np.mean(np.argmax(real_logits, -1) == real_labels))
    return out


FAMILY = common.Family(
    name="stylegan2",
    init_state=init_state,
    train_step=train_step,
    generate=generate,
    evaluate=evaluate,
    make_step=make_step,
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
    """Trains conditional StyleGAN2-ADA as configured, writing checkpoints, metrics and samples."""
    return common.fit(config, workdir, FAMILY)
