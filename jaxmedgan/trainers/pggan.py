"""Progressive GAN trainer (Karras et al. 2018): growing schedule, WGAN-GP step per level, resume.

Schedule (in images seen, `config.schedule`): level 0 (4 px) trains for `stable_kimg`; every later
level first fades its block in for `fade_kimg` (alpha rising linearly from 0 to 1 with images
seen), then stabilises for `stable_kimg`; the last level stays stable until `train.steps` ends.
`schedule(config, images_seen)` is that plan as a pure host-side function.

One step at level L (`level_step`, jitted once per level: level static, alpha a traced scalar)
takes the first `batch_size_at(config, L)` images of the batch (the pipeline delivers
`train.batch_size`, the largest), box-downsamples them to 4 * 2**L px (fading them exactly as G's
output fades), runs one WGAN-GP + drift D update and one G update (Adam lr 1e-3, betas 0, 0.99),
updates the G EMA, and records level, alpha and images seen in `state.extra`; `make_step` (used by
`common.fit`) reads the schedule on the host and re-jits only when the level changes. The Adam
states restart when a new level begins (PGGAN's reset_opt_for_new_lod): the new layers'
second-moment estimates would otherwise start at zero under an old bias correction and take
~10x steps. `generate` renders at the level and alpha stored in the state, upsampled (nearest)
to `data.image_size`, from the EMA generator.

Differential privacy (`config.privacy.enabled`, see `d_private_grads`): only D's update touches
real images, so only it is privatised; G is private by post-processing (it draws its own
train.batch_size latents and sees reals only through D). The whole padded Poisson batch is used
(with `batch["mask"]`); per real example i the terms that touch x_i -- -D(x_i), the drift
eps_drift * D(x_i)^2 and the gradient penalty on x^_i = eps_i x_i + (1 - eps_i) x~_i -- form one
loss that is clipped to C = privacy.l2_clip, summed, noised once (N(0, sigma^2 C^2)) and divided by
the expected batch train.batch_size. The pure-fake term +D(x~) is not noised (clipped per example
to C when privacy.clip_fake, as trainers/gan.py). One D step per training step, so the accountant's
step count (`privacy.plan.run_epsilon`) is the training step. Refused under DP: minibatch-stddev
groups > 1 (`model.mbstd_group_size` must be 0 or 1), and per-level batch sizes other than
train.batch_size (taking the first b of a Poisson sample would change the sampling the accountant
analyses).

Data-efficient D augmentation (`config.d_augment`, `augment/policy.py`; issue #18): 'diffaug'
(DiffAugment) or 'ada' (ADA pipeline, p from `config.ada`) puts every image D sees through the
augmentation at the current level's resolution (4 * 2**L px, after the reals are faded): the reals
and the fakes of D's step, and the fakes of G's step, each with its own key. The gradient penalty
interpolates between the augmented real and the augmented fake, i.e. it regularises D where D is
evaluated. An adaptive ADA p moves inside the jitted step by StyleGAN2-ADA's heuristic
r_t = E[sign(D(x))] on the augmented reals' critic scores (the WGAN score's sign stands in for the
logit's; the drift term keeps D(real) near 0). Under DP the augmentation is per example, applied to
the reals and fakes before the per-example clipped loss, so example i's loss still reads x_i alone;
an adaptive p (computed from D's outputs on private data) is refused (`DAugment.check_dp`). Kind
'none' (the default) draws no augmentation keys: the step is the one before the option existed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan import images as images_lib
from jaxmedgan.augment import policy as aug_policy
from jaxmedgan.losses import pggan as pg_losses
from jaxmedgan.models import pggan as pg
from jaxmedgan.privacy import checks, dp_sgd
from jaxmedgan.privacy import noise as dp_noise
from jaxmedgan.privacy.config import DPConfig
from jaxmedgan.state import GANState
from jaxmedgan.trainers import common

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Construction and schedule.


def build_models(config: ml_collections.ConfigDict) -> tuple[pg.Generator, pg.Discriminator]:
    """G and D from `config.model` and `config.data` (compute dtype from `config.train.dtype`)."""
    m, d = config.model, config.data
    dtype = common.compute_dtype(config)
    g = pg.Generator(resolution=d.image_size, channels=d.channels, latent_dim=m.latent_dim,
                     channel_base=m.channel_base, channel_max=m.channel_max, dtype=dtype)
    disc = pg.Discriminator(resolution=d.image_size, channels=d.channels, channel_base=m.channel_base,
                            channel_max=m.channel_max, mbstd_group_size=m.mbstd_group_size,
                            mbstd_num_channels=m.mbstd_num_channels, dtype=dtype)
    return g, disc


def build_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """(G Adam, D Adam): PGGAN's lr 1e-3, betas (0, 0.99), eps 1e-8; flattened (one fused update);
    under DP, D's with the noise transformation in front."""
    o = config.optim
    tx = lambda lr: optax.flatten(optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps))
    return tx(o.g_lr), dp_noise.private(tx(o.d_lr), DPConfig.from_config(config), config.train.batch_size,
                                        config.train.steps)


def batch_size_at(config: ml_collections.ConfigDict, level: int) -> int:
    """Batch size at `level`: `config.train.batch_sizes['r<px>']`, else `config.train.batch_size`."""
    table = config.train.get("batch_sizes", None) or {}
    return int(table.get(f"r{pg.resolution_at(level)}", config.train.batch_size))


@dataclasses.dataclass(frozen=True)
class Phase:
    """Where the growing schedule is after some number of images."""

    level: int  # 0 -> 4 px
    alpha: float  # fade-in weight of block `level` (1 while stabilising)
    name: str  # "fade" | "stable"
    images_into_phase: int


def schedule(config: ml_collections.ConfigDict, images_seen: int) -> Phase:
    """Host-side growing plan: the phase (level, alpha, fade/stable) after `images_seen` images."""
    fade = int(round(config.schedule.fade_kimg * 1000))
    stable = int(round(config.schedule.stable_kimg * 1000))
    last = pg.num_levels(config.data.image_size) - 1
    t = int(images_seen)
    if t < stable or last == 0:
        return Phase(0, 1.0, "stable", t)
    t -= stable
    for level in range(1, last + 1):
        if t < fade:
            return Phase(level, t / fade, "fade", t)
        t -= fade
        if t < stable or level == last:
            return Phase(level, 1.0, "stable", t)
        t -= stable
    raise AssertionError("unreachable")


def steps_for_schedule(config: ml_collections.ConfigDict) -> int:
    """Steps until the last level has faded in and stabilised once (with per-level batch sizes)."""
    fade, stable = config.schedule.fade_kimg * 1000, config.schedule.stable_kimg * 1000
    total = 0
    for level in range(pg.num_levels(config.data.image_size)):
        images = stable + (fade if level else 0)
        total += int(np.ceil(images / batch_size_at(config, level)))
    return total


def _check_config(config: ml_collections.ConfigDict) -> None:
    size = config.data.image_size
    levels = pg.num_levels(size)
    big = config.train.batch_size
    group = config.model.mbstd_group_size
    if checks.dp_enabled(config):
        checks.check_dp_compatible(config, {})  # names minibatch stddev (group > 1)
        unequal = [f"config.train.batch_sizes.r{pg.resolution_at(level)}={batch_size_at(config, level)}"
                   for level in range(levels) if batch_size_at(config, level) != big]
        if unequal:
            raise ValueError(
                f"config.privacy.enabled=True needs every level's batch size equal to config.train.batch_size="
                f"{big} (the expected Poisson batch): taking the first b images of a Poisson sample is not "
                f"the sampling the accountant analyses. Got {', '.join(unequal)}; set them to {big} or "
                "remove config.train.batch_sizes.")
        private_config(config)  # refuses an explicit 'ghost' with the gradient penalty on
    gp_on(config)  # a bad loss.gp_on, before anything is built
    if int(config.loss.gp_interval) < 1:
        raise ValueError(f"config.loss.gp_interval={config.loss.gp_interval} must be >= 1 (1: the gradient "
                         "penalty every D step; k: every k-th step with weight x k).")
    for level in range(levels):
        b = batch_size_at(config, level)
        if not 1 <= b <= big:
            raise ValueError(f"config.train.batch_sizes.r{pg.resolution_at(level)}={b} must be in 1.."
                             f"config.train.batch_size={big} (the pipeline delivers train.batch_size images "
                             "per step; each level uses the first batch_sizes.r<px> of them).")
        if group and group > 1 and b % min(group, b):
            raise ValueError(f"The {pg.resolution_at(level)} px batch size {b} must be divisible by "
                             f"config.model.mbstd_group_size={group} (minibatch-stddev groups).")
    # Validates config.d_augment / config.ada and refuses an adaptive ADA p under DP.
    aug_policy.DAugment.from_config(config).check_dp(checks.dp_enabled(config))
    if config.schedule.stable_kimg <= 0 or config.schedule.fade_kimg < 0:
        raise ValueError(f"config.schedule needs stable_kimg > 0 and fade_kimg >= 0; got "
                         f"{config.schedule.stable_kimg}, {config.schedule.fade_kimg}.")


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> GANState:
    """Initial state with the parameters of every level (pure; jit it with out_shardings).

    extra: g_ema_params, images_seen i32, level i32, alpha f32 (of the last step run), and the D
    augmentation's entries (`augment.policy.DAugment.init_extra`: ADA's aug_p, ...).
    """
    _check_config(config)
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    k_g, k_d, k_run = jax.random.split(rng, 3)
    g_vars = {"params": pg.init_params(g, k_g, jnp.zeros((2, config.model.latent_dim)), 0)}
    d_vars = {"params": pg.init_params(d, k_d, jnp.zeros((2, 4, 4, config.data.channels)), 0)}
    extra = {"g_ema_params": jax.tree_util.tree_map(jnp.copy, g_vars["params"]),
             "images_seen": jnp.zeros((), jnp.int32), "level": jnp.zeros((), jnp.int32),
             "alpha": jnp.ones((), jnp.float32), **aug_policy.DAugment.from_config(config).init_extra()}
    return GANState.create(k_run, g_vars, d_vars, g_tx, d_tx, extra)


# ----------------------------------------------------------------------------------------------
# The step (pure; jitted once per level).


def _reset_if(flag: jax.Array, fresh: Any, old: Any) -> Any:
    return jax.tree_util.tree_map(lambda f, o: jnp.where(flag, f, o), fresh, old)


def gp_on(config: ml_collections.ConfigDict) -> str:
    """Where the gradient penalty is taken: config.loss.gp_on, 'interpolates' (WGAN-GP, the default)
    or 'fake' (at the generated images: a public term under DP; `losses.pggan`)."""
    return pg_losses.check_gp_on(config.loss.get("gp_on", "interpolates"))


def private_config(config: ml_collections.ConfigDict, *, with_gp: bool = True) -> DPConfig:
    """The run's DPConfig for a D step, clip_method 'auto' resolved: vmap while the gradient penalty
    is in the clipped loss (gp_on='interpolates': a gradient of D's input gradient, which ghost
    clipping cannot take), ghost for the steps without it (lazy penalty: loss.gp_interval > 1;
    loss.gp_weight = 0; or gp_on='fake', which moves it to the public term): D's equalised-lr layers
    are `ghost.LinearLayer`s."""
    return DPConfig.from_config(config).with_clip_method(
        ghost_supported=not (with_gp and config.loss.gp_weight and gp_on(config) == "interpolates"),
        why_not="the pggan trainer clips per-example gradients of a loss holding the gradient penalty (a "
                "gradient of D's input gradient), which only 'vmap' handles; config.loss.gp_on='fake' takes the "
                "penalty at the generated images instead, outside the clipped loss")


def gp_weight(config: ml_collections.ConfigDict, with_gp: bool) -> float:
    """The gradient penalty's weight this D step: gp_weight * gp_interval on the lazy schedule's
    penalty steps (as StyleGAN2's lazy R1), 0 on the others."""
    return float(config.loss.gp_weight) * int(config.loss.gp_interval) if with_gp else 0.0


def penalty_step(config: ml_collections.ConfigDict, step: int) -> bool:
    """Whether training step `step` (host int) includes the gradient penalty (loss.gp_interval)."""
    return step % int(config.loss.gp_interval) == 0


def d_private_grads(config: ml_collections.ConfigDict, d_params: Any, real: jax.Array, fake: jax.Array,
                    eps: jax.Array, mask: jax.Array, alpha: jax.Array, *, level: int, with_gp: bool = True,
                    canaries: jax.Array | None = None, mesh: Any = None) -> tuple[Any, dict]:
    """DP-SGD sum-scale gradient of D's WGAN-GP loss at `level` (like d_params; the optimiser's noise
    transformation noises it once and divides by E[B]) and metrics.

    real: faded reals f32 [B,r,r,C] (a padded Poisson batch, r = 4 * 2**level), mask f32 [B]
    (1 = real example), fake: G's images f32 [B,r,r,C] -- both as D sees them (augmented per
    example when config.d_augment is active) --, eps: interpolation weights f32 [B],
    alpha: fade-in f32 []. Real term per example i, clipped to C = privacy.l2_clip and summed:
        -D(x_i) + w_gp * (||grad D(x^_i)|| - 1)^2 + drift_weight * D(x_i)^2   (w_gp = `gp_weight`)
    Fake term: E[B] * mean over the first E[B] of D(x~_j), not noised (clipped per example to C when
    privacy.clip_fake). With config.loss.gp_on='fake' the penalty leaves the real term and is taken
    at those fakes, w_gp * mean_j (||grad D(x~_j)|| - 1)^2: a public term, added unclipped and
    un-noised (`d_gradient`'s public_loss), so every step clips by ghost clipping.
    `mesh`: clip per shard of the batch in shard_map, psum (`dp_sgd.d_gradient`).
    """
    _, d = build_models(config)
    lc = config.loss
    n = real.shape[0]
    # alpha rides along per example: the loss runs inside shard_map, which takes arrays as arguments.
    alphas = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (n,))

    where, w_gp = gp_on(config), gp_weight(config, with_gp)

    def real_loss(params, ex):
        d_fn = lambda x: d.apply({"params": params}, x, level, ex["alpha"])
        return pg_losses.d_wgan_gp_real_single(d_fn, ex["real"], ex["fake"], ex["eps"], gp_weight=w_gp,
                                               drift_weight=lc.drift_weight, gp_on=where)

    def fake_loss(params, ex):
        score = d.apply({"params": params}, ex["image"][None], level, ex["alpha"])[0].astype(jnp.float32)
        return score, score

    # The expected batch's worth of fakes: independent of the padded row count n (padding buckets).
    m = min(n, config.train.batch_size)

    def fake_penalty(params):  # the penalty at G's images (gp_on='fake'): public, never clipped
        gp, norms = pg_losses.penalty_at(lambda x: d.apply({"params": params}, x, level, alpha), fake[:m], w_gp)
        return jnp.mean(gp), {"gp": jnp.mean(gp), "grad_norm": jnp.mean(norms)}

    public_loss = fake_penalty if where == "fake" and w_gp else None

    grads, out = dp_sgd.d_gradient(
        real_loss, d_params, {"real": real, "fake": fake, "eps": eps, "alpha": alphas}, mask,
        private_config(config, with_gp=with_gp), fake_loss=fake_loss,
        fake={"image": fake[:m], "alpha": alphas[:m]}, public_loss=public_loss,
        expected_batch_size=config.train.batch_size, canaries=canaries, mesh=mesh)
    parts, fake_score = out.pop("real_aux"), out.pop("fake_aux")
    out.pop("fake_loss")
    mean = functools.partial(dp_sgd.masked_mean, mask=mask)  # monitoring only: private metrics
    real_mean, fake_mean = mean(parts["real_score"]), jnp.mean(fake_score)
    # The penalty's figures: private (at interpolates, per real example) or public (at the fakes).
    public = out.pop("public_aux", None)
    gp, gp_norm = ((mean(parts["gp"]), mean(parts["grad_norm"])) if public is None
                   else (public["gp"], public["grad_norm"]))
    metrics = {"d_loss": fake_mean + gp + mean(-parts["real_score"] + parts["drift"]),
               "wasserstein": real_mean - fake_mean, "d_real_score": real_mean, "d_fake_score": fake_mean,
               "gp": gp, "gp_grad_norm": gp_norm, "drift": mean(parts["drift"]), **out}
    return grads, metrics


def level_step(config: ml_collections.ConfigDict, state: GANState, batch: dict, alpha: jax.Array, *,
               level: int, with_gp: bool = True, mesh: Any = None) -> tuple[GANState, dict]:
    """One WGAN-GP D update then one G update at `level` (static) with fade-in weight `alpha` f32 [].
    with_gp (static): this step's D loss holds the gradient penalty (`gp_weight`, `penalty_step`).

    batch: image f32 [B,R,R,C] in [-1,1] at data.image_size, B = train.batch_size >= the level's
    batch size b (the first b are used). Under DP: a padded Poisson batch with mask f32 [B], all
    used (`d_private_grads`); `mesh` (the device mesh) then makes the clipping run per shard.
    D sees reals and fakes through `config.d_augment` (module docstring).
    """
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    b = batch_size_at(config, level)  # = train.batch_size under DP (_check_config)
    private = checks.dp_enabled(config)
    alpha = jnp.asarray(alpha, jnp.float32)
    rng = jax.random.fold_in(state.rng, state.step)
    k_dz, k_eps, k_gz = jax.random.split(rng, 3)
    aug = aug_policy.DAugment.from_config(config)
    # A separate stream (fold_in), so the three keys above are those of runs without augmentation.
    k_aug_real, k_aug_fake, k_aug_g = jax.random.split(jax.random.fold_in(rng, 1), 3)
    images = batch["image"] if private else batch["image"][:b]
    real = pg.fade_reals(images.astype(jnp.float32), level, alpha)
    n = real.shape[0]

    # A new level starts from fresh Adam moments (both nets), as PGGAN's reset_opt_for_new_lod.
    g_opt_state, d_opt_state = state.g_opt_state, state.d_opt_state
    if config.optim.get("reset_on_new_level", True):
        new_level = state.extra["level"] != level
        g_opt_state = _reset_if(new_level, g_tx.init(state.g_params), g_opt_state)
        d_opt_state = _reset_if(new_level, d_tx.init(state.d_params), d_opt_state)

    gen = lambda params, z: g.apply({"params": params}, z, level, alpha)
    z = jax.random.normal(k_dz, (n, config.model.latent_dim))
    fake = jax.lax.stop_gradient(gen(state.g_params, z))
    eps = jax.random.uniform(k_eps, (n,))
    # What D sees (per example, so DP's per-example loss still reads x_i alone); the gradient
    # penalty interpolates between these augmented reals and fakes.
    # DP: each real example's (and its paired fake's) draw independent of the padded row count.
    see = aug.per_example if private else aug
    real = see(real, k_aug_real, state.extra)
    fake = see(fake, k_aug_fake, state.extra)
    lc = config.loss

    if private:
        d_grads, d_metrics = d_private_grads(config, state.d_params, real, fake, eps, batch["mask"], alpha,
                                             level=level, with_gp=with_gp, canaries=dp_sgd.batch_canaries(batch),
                                             mesh=mesh)
        extra = state.extra  # no adaptive p under DP (_check_config)
    else:
        def d_loss_fn(d_params):
            d_fn = lambda x: d.apply({"params": d_params}, x, level, alpha)
            per_ex, parts = pg_losses.d_wgan_gp(d_fn, real, fake, eps, gp_weight=gp_weight(config, with_gp),
                                                drift_weight=lc.drift_weight, gp_on=gp_on(config))
            return jnp.mean(per_ex), parts

        (d_loss, parts), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
        mean = lambda k: jnp.mean(parts[k])
        d_metrics = {"d_loss": d_loss, "wasserstein": mean("real_score") - mean("fake_score"),
                     "d_real_score": mean("real_score"), "d_fake_score": mean("fake_score"),
                     "gp": mean("gp"), "gp_grad_norm": mean("grad_norm"), "drift": mean("drift")}
        # ADA's heuristic on the WGAN critic's sign (StyleGAN2-ADA's E[sign(D(real))]), b images per step.
        extra = aug.update_p(state.extra, parts["real_score"], state.step + 1, b)
    noise = dp_sgd.noise_args(batch, d_metrics) if private else {}  # the step's secret key (+ canaries)
    d_updates, d_opt_state = d_tx.update(d_grads, d_opt_state, state.d_params, **noise)
    d_params = optax.apply_updates(state.d_params, d_updates)
    if private:  # report the pre-noise mean gradient (private), as without DP
        d_grads = jax.tree_util.tree_map(lambda g: g / config.train.batch_size, d_grads)

    z = jax.random.normal(k_gz, (b, config.model.latent_dim))

    def g_loss_fn(g_params):
        score = d.apply({"params": d_params}, aug(gen(g_params, z), k_aug_g, state.extra), level, alpha)
        return jnp.mean(pg_losses.g_wgan(score))

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params)
    g_updates, g_opt_state = g_tx.update(g_grads, g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    beta = config.ema.beta
    ema = jax.tree_util.tree_map(lambda e, p: p + beta * (e - p), state.extra["g_ema_params"], g_params)
    seen = state.extra["images_seen"] + b
    extra = {**extra, "g_ema_params": ema, "images_seen": seen,
             "level": jnp.asarray(level, jnp.int32), "alpha": alpha}
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state, extra=extra)
    metrics = {**d_metrics, "g_loss": g_loss, "d_grad_norm": optax.tree.norm(d_grads),
               "g_grad_norm": optax.tree.norm(g_grads),
               "level": jnp.float32(level), "alpha": alpha, "kimg": seen.astype(jnp.float32) / 1000,
               **aug.metrics(extra)}
    return new_state, metrics


def train_step(config: ml_collections.ConfigDict, state: GANState, batch: dict, *, mesh: Any = None,
               level: int | None = None, alpha: float = 1.0, with_gp: bool = True) -> tuple[GANState, dict]:
    """`level_step` at `level` (default: the last, stabilised). `common.fit` uses `make_step`,
    which follows the growing schedule (and the lazy penalty's) instead."""
    level = pg.num_levels(config.data.image_size) - 1 if level is None else level
    return level_step(config, state, batch, jnp.float32(alpha), level=level, with_gp=with_gp, mesh=mesh)


# ----------------------------------------------------------------------------------------------
# Host side: per-level jits, cached across fit calls (a resumed run in the same process, tests).


# privacy: sigma, C, clip_fake; d_augment / ada: what D sees.
_STEP_SECTIONS = ("model", "loss", "optim", "schedule", "ema", "privacy", "d_augment", "ada")
_JIT_CACHE: dict[Any, Callable] = {}


def _jit_key(config: ml_collections.ConfigDict) -> str:
    """What the jitted functions depend on (not train.steps, logging, checkpoint or sample cadence)."""
    t, d = config.train, config.data
    picked = {k: config[k].to_dict() for k in _STEP_SECTIONS if k in config}
    picked["data"] = {"image_size": d.image_size, "channels": d.channels}
    picked["train"] = {"batch_size": t.batch_size, "dtype": t.get("dtype", "float32"),
                       "fast_compile": t.get("fast_compile", False),
                       "batch_sizes": t.batch_sizes.to_dict() if t.get("batch_sizes") else {}}
    return json.dumps(picked, sort_keys=True, default=str)


def _cached_jit(key: tuple, build: Callable[[], Callable]) -> Callable:
    if key not in _JIT_CACHE:
        if len(_JIT_CACHE) > 32:
            _JIT_CACHE.clear()
        _JIT_CACHE[key] = build()
    return _JIT_CACHE[key]


def make_step(config: ml_collections.ConfigDict, state_shardings: Any, batch_sharding: Any,
              replicated: Any) -> Callable[[GANState, dict, int], tuple[GANState, dict]]:
    """A host-side `step(state, batch, step)` following `schedule`; one jit per level, made on first use.

    Images seen are read from the state once (at the first step, e.g. after a resume) and then
    tracked on the host, so picking the level costs no device round trip.
    """
    options = {"xla_backend_optimization_level": 0} if config.train.get("fast_compile", False) else None
    leaves, treedef = jax.tree_util.tree_flatten(state_shardings)
    base_key = (_jit_key(config), tuple(leaves), treedef, batch_sharding, replicated)

    def jitted(level: int, with_gp: bool) -> Callable:
        return _cached_jit(("step", level, with_gp) + base_key, lambda: jax.jit(
            functools.partial(level_step, config, level=level, with_gp=with_gp,
                              mesh=getattr(batch_sharding, "mesh", None)),
            in_shardings=(state_shardings, batch_sharding, replicated),
            out_shardings=(state_shardings, replicated), donate_argnums=(0,), compiler_options=options))

    host = {"step": None, "seen": 0, "phase": None}

    def step_fn(state: GANState, batch: dict, step: int) -> tuple[GANState, dict]:
        if host["step"] != step:
            host["seen"] = int(jax.device_get(state.extra["images_seen"]))
        phase = schedule(config, host["seen"])
        if host["phase"] is None or (phase.level, phase.name) != host["phase"]:
            log.info("PGGAN step %d, %.3f kimg: level %d (%d px), %s phase.", step, host["seen"] / 1000,
                     phase.level, pg.resolution_at(phase.level), phase.name)
            host["phase"] = (phase.level, phase.name)
        state, metrics = jitted(phase.level, penalty_step(config, step))(state, batch, np.float32(phase.alpha))
        host["seen"] += batch_size_at(config, phase.level)
        host["step"] = step + 1
        return state, metrics

    return step_fn


# ----------------------------------------------------------------------------------------------
# Generation.


def generate(config: ml_collections.ConfigDict, state: GANState, z: jax.Array,
             labels: jax.Array | None = None) -> jax.Array:
    """Images f32 [N, image_size, image_size, C] in [-1, 1] from latents z [N, latent_dim].

    Uses the G EMA at the level and alpha of the state's last step (one branch per level under
    `lax.switch`, so the level may be traced), upsampled by nearest to `data.image_size`.
    """
    del labels  # unconditional
    g, _ = build_models(config)
    params = state.extra["g_ema_params"]
    alpha = state.extra["alpha"]
    branches = [functools.partial(lambda lvl, p, zz, a: jnp.clip(
        g.apply({"params": p}, zz, lvl, a, full_resolution=True), -1.0, 1.0), lvl)
        for lvl in range(pg.num_levels(config.data.image_size))]
    level = jnp.clip(state.extra["level"], 0, len(branches) - 1)
    return jax.lax.switch(level, branches, params, z, alpha)


def discriminate(config: ml_collections.ConfigDict, state: GANState, images: jax.Array) -> jax.Array:
    """D's critic score f32 [N] for images f32 [N, image_size, image_size, C] in [-1, 1], at the
    state's level and alpha with the reals faded as in training (membership-inference audits)."""
    _, d = build_models(config)
    branches = [functools.partial(lambda lvl, p, x, a: d.apply(
        {"params": p}, pg.fade_reals(x, lvl, a), lvl, a).astype(jnp.float32), lvl)
        for lvl in range(pg.num_levels(config.data.image_size))]
    level = jnp.clip(state.extra["level"], 0, len(branches) - 1)
    return jax.lax.switch(level, branches, state.d_params, images.astype(jnp.float32), state.extra["alpha"])


def sample_grid(config: ml_collections.ConfigDict, state: GANState, eval_data: Any) -> np.ndarray:
    """uint8 grid (4 rows x samples.per_row) from fixed latents, with a generate jit cached per config."""
    del eval_data
    rows, cols = 4, config.samples.per_row
    z, _ = common.latent_batch(config, jax.random.PRNGKey(config.samples.seed), rows * cols)
    fn = _cached_jit(("generate", _jit_key(config)), lambda: jax.jit(functools.partial(generate, config)))
    x = fn(state, z, None)
    return images_lib.grid(images_lib.to_uint8(np.asarray(x)), rows=rows)


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, None]:
    """PGGAN grows from 4 px: any power-of-two image size from 4 px up."""
    return 4, None


FAMILY = common.Family(
    name="pggan",
    init_state=init_state,
    train_step=train_step,
    generate=generate,
    make_step=make_step,
    sample_grid=sample_grid,
    discriminate=discriminate,
    latent_spaces=("z",),
    image_sizes=image_sizes,
    # Under DP: G's loss and gradient norm, D's score on generated images, the schedule, ADA's
    # (fixed: adaptive is refused) p.
    dp_public_metrics=("g_loss", "g_grad_norm", "d_fake_score", "level", "alpha", "kimg", "aug_p"),
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data: Any = None) -> GANState:
    """Trains PGGAN as configured, writing checkpoints, metrics and samples to `workdir`.

    `data` optionally supplies `(train_source, eval_arrays)` (see `common.fit`).
    """
    return common.fit(config, workdir, FAMILY, data=data)
