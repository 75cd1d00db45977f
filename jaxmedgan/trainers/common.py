"""What every GAN family's training shares: `fit` (mesh, sharded state, data, DP plan, step jit)
on the one loop of `loop.py`, plus the helpers the families use (EMA, latents, sample grids).

A family (DCGAN/ACGAN, StyleGAN2, ...) supplies pure functions in a `Family`; `fit` owns all
host-side work: input pipeline, jit with shardings, resume, the privacy plan and secret,
publishing metrics (under DP only the public ones), sample grids, checkpoints.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import logging
from clu import parameter_overview
from jax.experimental import multihost_utils

from jaxmedgan import checkpointing, config_validation, images, metric_writers, preemption, sharding
from jaxmedgan.evaluators import diversity, training_quality
from jaxmedgan.models import layers
from jaxmedgan.privacy import canaries as dp_canaries
from jaxmedgan.privacy import checks, monitoring, plan
from jaxmedgan.privacy import noise as dp_noise
from jaxmedgan.privacy import secret as dp_secret
from jaxmedgan.privacy.config import DPConfig
from jaxmedgan.trainers import loop
from jaxmedgan.trainers.contract import Family  # fit's argument; defined in contract.py

log = logging.getLogger(__name__)


def ema_beta(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """G EMA decay f32 [] at `step` (StyleGAN2-ADA): 0.5 ** (batch / half-life in images), the
    half-life `config.ema.kimg` (<= 0: batch * 10 / 32 kimg, its 'auto') ramped up to
    `config.ema.rampup` x images seen (0: no ramp-up)."""
    batch = config.train.batch_size
    ema_kimg = config.ema.kimg if config.ema.kimg > 0 else batch * 10 / 32
    ema_nimg = jnp.float32(ema_kimg * 1000)
    if config.ema.rampup:
        ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch * config.ema.rampup)
    return 0.5 ** (batch / jnp.maximum(ema_nimg, 1e-8))


def ema_enabled(config: ml_collections.ConfigDict) -> bool:
    """Whether G's weights are averaged for sampling (`config.ema.enabled`; absent: off, as the
    DCGAN / pix2pix runs written before the option). StyleGAN2 and PGGAN always keep their EMA."""
    return config.get("ema") is not None and bool(config.ema.get("enabled", False))


def ema_update(ema_params: Any, params: Any, beta: jax.Array) -> Any:
    """params + beta * (ema - params), leaf by leaf: the EMA after one step."""
    return jax.tree_util.tree_map(lambda e, p: p + beta * (e - p), ema_params, params)


compute_dtype = layers.compute_dtype  # the families' name for it (models/ builds with it too)


def latent_batch(config: ml_collections.ConfigDict, rng: jax.Array, n: int,
                 labels: np.ndarray | None = None) -> tuple[jax.Array, jax.Array | None]:
    """Latents z [n, latent_dim] and, for class-conditional models, labels [n] (random if None)."""
    k_z, k_c = jax.random.split(rng)
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    k = config.model.get("num_classes", 0)
    if not k:
        return z, None
    if labels is None:
        return z, jax.random.randint(k_c, (n,), 0, k)
    return z, jnp.asarray(labels, jnp.int32)


# Generated images per class for the training-time diversity ratio (`class_diversity_metrics`).
DIVERSITY_PER_CLASS = 32


def class_diversity_metrics(config: ml_collections.ConfigDict, generate_fn, state: Any,
                            eval_data, seed: int) -> dict[str, float]:
    """`eval/diversity_ratio` (mean over classes) and `eval/diversity_ratio_class{k}`: mean pairwise
    pixel distance of generated images of class k over that of held-out real ones.

    eval_data: held-out (images f32 [N,H,W,C] in [-1, 1], labels int [N]). generate_fn(frozen
    config, state, z, labels) -> images f32 [M,H,W,C] in [-1, 1] (jitted by the caller). Class k
    compares the first n_k = min(DIVERSITY_PER_CLASS, #held-out of class k) real images with n_k
    generated from fixed latents (`seed`), so a run's values are comparable across steps; G is
    always called on DIVERSITY_PER_CLASS per class (one shape: one compilation). Classes with
    n_k < 2 are left out.
    """
    k = config.model.num_classes
    if not k or eval_data is None:
        return {}
    real, real_labels = np.asarray(eval_data[0]), np.asarray(eval_data[1])
    per = DIVERSITY_PER_CLASS
    z, labels = latent_batch(config, jax.random.PRNGKey(seed), k * per, np.repeat(np.arange(k), per))
    fake = np.asarray(generate_fn(ml_collections.FrozenConfigDict(config), state, z, labels))
    synth, synth_labels, ref, ref_labels = [], [], [], []
    for c in range(k):
        n_c = min(per, int(np.sum(real_labels == c)))
        synth.append(fake[c * per:c * per + n_c])
        ref.append(real[real_labels == c][:n_c])
        synth_labels.append(np.full(n_c, c))
        ref_labels.append(np.full(n_c, c))
    out = diversity.class_diversity(np.concatenate(synth), np.concatenate(synth_labels), np.concatenate(ref),
                                    np.concatenate(ref_labels), [str(c) for c in range(k)], num_bootstrap=0)
    metrics = {f"eval/diversity_ratio_class{c}": out["per_class"][str(c)]["ratio"] for c in range(k)}
    metrics = {key: value for key, value in metrics.items() if np.isfinite(value)}
    if np.isfinite(out["diversity_ratio"]):
        metrics["eval/diversity_ratio"] = out["diversity_ratio"]
    return metrics


def sample_grid(config: ml_collections.ConfigDict, family: Family, state: Any,
                class_names: list[str] | None = None) -> np.ndarray:
    """uint8 grid image: one row per class (4 rows if unconditional), fixed latents across steps.

    A conditional model's rows are named in a left strip by `class_names` (label order) when given.
    """
    num_classes = config.model.get("num_classes", 0)
    rows = num_classes or 4
    cols = config.samples.per_row
    labels = np.repeat(np.arange(rows), cols) if num_classes else None
    z, labels = latent_batch(config, jax.random.PRNGKey(config.samples.seed), rows * cols, labels)
    x = jax.jit(functools.partial(family.generate, config))(state, z, labels)
    grid = images.grid(images.to_uint8(np.asarray(x)), rows=rows)
    if num_classes and class_names is not None and len(class_names) == num_classes:
        grid = images.label_rows(grid, class_names)
    return grid


def bucket_rows(host_batch: dict, rows: int) -> dict:
    """This process's first `rows` rows of a padded Poisson batch (its real examples come first, so
    only padding is cut): the step then runs at a smaller padded shape (`plan.Plan.bucket_for`)."""
    return {k: v[:rows] if getattr(v, "ndim", 0) else v for k, v in host_batch.items()}


def fit(config: ml_collections.ConfigDict, workdir: str, family: Family, data=None,
        data_dir: str | None = None) -> Any:
    """Trains `family` per `config`, resuming from `workdir` if it holds a checkpoint.

    `data` optionally supplies `(train_source, eval_arrays)`; by default both come from
    `config.data` through `jaxmedgan.data.datasets`. `data_dir`: the built dataset behind `data`
    (found by default), recorded in WORKDIR/dataset.json for the outputs' class names and windows. Holds the workdir lock, refuses config drift
    on resume (`config_drift`), and stops cleanly on SIGTERM/SIGINT (`preemption.Preempted`).
    """
    if not family.has_steps:
        raise ValueError(f"Family {family.name!r} supplies no step functions ({family.kind}, or a composite of "
                         "other families): train it with its module's train_and_evaluate.")
    return loop.guarded(workdir, config, lambda stop: _fit(config, workdir, family, data, data_dir, stop))


def _fit(config: ml_collections.ConfigDict, workdir: str, family: Family, data, data_dir: str | None,
         stop: preemption.StopOnSignal) -> Any:
    from jaxmedgan.data import datasets, pipeline  # data stack is heavy; import on use

    is_main = jax.process_index() == 0
    mesh = sharding.make_mesh(config.get("mesh"))
    log.info("Mesh %s over %d devices (%d processes); family %s.", dict(mesh.shape),
                 mesh.size, jax.process_count(), family.name)
    global_batch = config.train.batch_size
    sharding.local_batch_size(global_batch, mesh)  # validates divisibility early

    if data is None:
        data_dir = datasets.prepare(config)
        data = datasets.load(config, data_dir)
    train_source, eval_data = data
    if not checks.dp_enabled(config):  # DP batches are Poisson; plan.prepare checks q <= 1
        config_validation.check_batch_fits(config, len(train_source))

    # State, born sharded.
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(functools.partial(family.init_state, config), rng)
    dp = secret = None
    dp_config = DPConfig.from_config(config)
    if dp_config.enabled:  # before init: sigma, calibrated here, is held by D's optimiser state
        multiple = mesh.shape[sharding.DATA_AXIS] * jax.process_count()
        # Input-space canaries count in N whether in or out: N is public, their coins are not.
        dp = plan.prepare(config, abstract.d_variables(), len(train_source) + dp_config.input_canaries, multiple)
    # A fresh partial after the plan: jax caches a trace per function object, so reusing the one
    # eval_shape traced would bake in the pre-calibration sigma (caught by the canary audit).
    init = functools.partial(family.init_state, config)
    state_shardings = sharding.tree_shardings(abstract, mesh)
    mngr = checkpointing.manager(workdir, max_to_keep=config.checkpoint.keep,
                                 async_save=config.checkpoint.get("async_save", True))
    state, start = loop.start_state(mngr, abstract, state_shardings,
                                    lambda: jax.jit(init, out_shardings=state_shardings)(rng))
    total = config.train.steps
    if start > 0:  # also refuses switching DP off on resume
        log.info("Resumed from checkpoint step %d in %s.", start, workdir)
        plan.check_resume(checkpointing.read_config(workdir), config)
    if dp is not None:
        secret = dp_secret.load_or_create(
            workdir, secure=dp_config.secure_rng, seed=config.seed, resuming=start > 0, is_main=is_main,
            broadcast=multihost_utils.broadcast_one_to_all if jax.process_count() > 1 else None)
        if secret.public:
            log.warning("config.privacy.secure_rng=False: batch membership and noise follow from config.seed, "
                        "so anyone holding the config can recompute them; this run is NOT private.")
        if dp_config.input_canaries:  # the in-canaries join the training set (privacy/canaries.py)
            train_source = dp_canaries.with_input_canaries(train_source, secret.words, dp_config.input_canaries,
                                                           config.model.get("num_classes", 0))
        if start > 0:  # band_mf: the streaming noise state, kept out of the checkpoint
            state = _restore_noise_state(state, workdir, start, is_main)
        if dp.max_steps < total:
            log.warning("The epsilon budget %g allows %d of the %d configured steps; training will stop "
                        "there.", config.privacy.epsilon_budget or config.privacy.target_epsilon,
                        dp.max_steps, total)
            total = dp.max_steps
    if is_main:
        checkpointing.write_config(workdir, config)
        if data_dir is not None:
            datasets.record_in_workdir(workdir, data_dir)  # class names and windows, for the outputs
        _log_parameter_counts(state)

    if dp is not None:
        ds = pipeline.poisson_train_dataset(
            train_source, sampling_rate=dp.sampling_rate, max_batch_size=dp.max_batch_size, secret=secret,
            num_canaries=dp_config.canaries, cycle_length=dp_config.cycle_length, seed=config.seed,
            augment=config.data.augment, process_index=jax.process_index(), process_count=jax.process_count())
    else:
        ds = pipeline.train_dataset(train_source, global_batch_size=global_batch, seed=config.seed,
                                    augment=config.data.augment, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    batches: Iterator[dict] = pipeline.iterate(ds, start)

    if family.make_step is not None:
        step_fn = family.make_step(config, state_shardings, sharding.batch_sharding(mesh),
                                   sharding.replicated(mesh))
    else:
        jitted = jax.jit(functools.partial(family.train_step, config, mesh=mesh),
                         in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                         out_shardings=(state_shardings, sharding.replicated(mesh)),
                         donate_argnums=(0,))

        def step_fn(state: Any, batch: Any, step: int) -> tuple[Any, dict]:
            return jitted(state, batch)
    writer = metric_writers.MetricWriter(workdir, enabled=is_main)
    private_log = monitoring.PrivateLog(workdir, enabled=is_main and dp is not None and dp_config.log_private_metrics)

    def publish(step: int, scalars: dict) -> dict:
        """Writes `scalars`, under DP only the public ones (the rest to the private log, if enabled)."""
        if dp is not None:
            scalars, private = monitoring.split(scalars, family.dp_public_metrics)
            private_log.write(step, private)
        if scalars:  # e.g. no held-out split: no evaluation row rather than an empty {"step": n}
            writer.write_scalars(step, scalars)
        return scalars

    num_dropped = 0

    def prepare(host_batch: dict) -> Any:
        nonlocal num_dropped
        num_dropped += int(host_batch.pop("num_dropped", 0))
        num_real = host_batch.pop("num_real", None)
        if dp is not None and len(dp.buckets) > 1:
            host_batch = bucket_rows(host_batch, dp.bucket_for(int(num_real)) // jax.process_count())
        return sharding.shard_batch(host_batch, mesh)

    def privacy_scalars(done: int) -> dict:
        epsilon, delta_prime = plan.run_guarantee(config, done)
        return {"dp/epsilon": epsilon, "dp/delta_prime": delta_prime,
                "dp/num_dropped": num_dropped}  # private: reveals the realised batch sizes

    def samples(done: int, state: Any) -> None:
        # Every process computes (the state spans all of them); process 0 writes.
        grid = (family.sample_grid(config, state, eval_data) if family.sample_grid is not None
                else sample_grid(config, family, state, datasets.class_names_for(
                    workdir, config.model.get("num_classes", 0))))  # rows named (class0.. if unknown)
        if is_main:
            images.save_png(os.path.join(workdir, "samples", f"step_{done:07d}.png"), grid)
            writer.write_image(done, "samples", grid)

    def save(done: int, state: Any) -> None:
        guarantee = plan.run_guarantee(config, done)
        meta = {"step": done, "dp_epsilon": None if guarantee is None else guarantee[0],
                "dp_delta_prime": None if guarantee is None else guarantee[1]}
        _save(mngr, workdir, done, state, config, meta, is_main)

    periodic = [loop.Periodic(config.samples.every, samples)]
    if family.evaluate is not None:
        periodic.append(loop.Periodic(config.train.eval_every,
                                      lambda done, state: family.evaluate(config, state, eval_data)))
    quality_every = (config.get("eval") or {}).get("quality_every", 0)  # FID-domain during training
    if quality_every:
        quality = training_quality.periodic_metrics(config, eval_data, family.generate, latent_batch)
        periodic.append(loop.Periodic(quality_every, lambda done, state: quality(state)))
    try:
        return loop.run(
            state, step_fn, batches, start=start, total=total, log_every=config.train.log_every,
            save_every=config.checkpoint.every, publish=publish, save=save, workdir=workdir,
            images_per_step=global_batch, desc=f"train {family.name}", postfix=("d_loss", "g_loss"),
            periodic=periodic, stop=stop, prepare=prepare,
            log_scalars=privacy_scalars if dp is not None else None,
            newest_verified=lambda: checkpointing.newest_verified_step(mngr),
            quiet=config.train.get("quiet", False))
    finally:
        checkpointing.finalize(mngr)
        writer.close()
        private_log.close()


def _save(mngr, workdir: str, step: int, state: Any, config: ml_collections.ConfigDict, meta: dict,
          is_main: bool) -> None:
    """Checkpoints `state` at `step`; band_mf's secret streaming noise state goes to the private
    workdir first (the checkpoint holds zeros in its place: `privacy.noise.public_copy`)."""
    secret_part = dp_noise.secret_part(state)
    if secret_part is not None and is_main:
        leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(secret_part)]
        dp_secret.save_noise_state(workdir, step, leaves)
        dp_secret.prune_noise_states(workdir, keep_from=min([*mngr.all_steps(), step]))
    checkpointing.save(mngr, step, dp_noise.public_copy(state), config, meta)


def _restore_noise_state(state: Any, workdir: str, step: int, is_main: bool) -> Any:
    """`state` (restored from checkpoint `step`, noise state zeroed) with band_mf's streaming noise
    state read back from the private workdir (process 0 reads, the others receive it)."""
    secret_part = dp_noise.secret_part(state)
    if secret_part is None:
        return state
    like, treedef = jax.tree.flatten(secret_part)
    leaves = (dp_secret.load_noise_state(workdir, step, like) if is_main
              else [np.zeros(x.shape, x.dtype) for x in like])
    if jax.process_count() > 1:
        leaves = list(multihost_utils.broadcast_one_to_all(leaves))
    placed = [jax.make_array_from_callback(x.shape, x.sharding, lambda idx, a=np.asarray(a): a[idx])
              for x, a in zip(like, leaves)]
    return dp_noise.with_secret_part(state, jax.tree.unflatten(treedef, placed))


def _log_parameter_counts(state: Any) -> None:
    for name in ("g_params", "d_params"):
        tree = getattr(state, name, None)
        if tree is not None:
            log.info("%s:\n%s", name, parameter_overview.get_parameter_overview(tree, include_stats=False))
