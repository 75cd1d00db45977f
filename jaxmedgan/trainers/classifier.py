"""Image classifier trainer (ResNet-style CNN): single-label softmax or multi-label sigmoid BCE.

Same spine as the GAN trainers: a pure `train_step(config, state, batch, *, mesh)` jitted once
with the state and batch shardings of `sharding.py` and donated state, run by the one training
loop (`trainers/loop.py`: checkpoints with exact resume, metrics, NaN check, signals, progress
bar); the grain pipeline with classic augmentation (`data/transforms.Augment`); the loss and
accuracy of `losses/classifier.py`.

Class weighting (`config.loss.class_weighting = 'inverse_frequency'`): single-label examples of
class k weigh N / (K n_k) (sklearn's 'balanced'; mean weight 1 over the training set);
multi-label finding k gets positive weight n_neg_k / n_pos_k in its BCE term. The weights are
computed from the training set on the host and live in the state, so a step stays pure.

Unknown multi-label targets (`LabeledSet.mask`, e.g. CheXpert's uncertain labels under U-Ignore):
the batch carries `target_mask` f32 [B,K] (1 = label known; not `mask`, which is the DP padding
mask of a batch), and a masked entry takes no part anywhere: an example's loss is
sum_k m_k bce_k / max(sum_k m_k, 1) (an all-masked example contributes 0), the class weights count
positives and negatives only where m = 1, and evaluation scores each finding on its known labels
only (`multi_label_metrics`). With no mask (all ones) every number is bit-identical to the plain
mean over findings.

`config.model.arch` picks the network: 'resnet' (`models/resnet_classifier.py`, default) or 'cnn'
(the plain CNN of `models/classifier.py`); both, with the state layout the checkpoints hold, are
defined in `models/trained_classifier.py`. The workdir this trainer leaves is the one frozen
classifier format: `trained_classifier.load_classifier(workdir)` returns a `LoadedClassifier`
(images -> logits, `features`, the pure `logits(variables, images)`) and the class names, so a
trained classifier drives the clinical loss (`config.clinical.checkpoint`), latent class
optimisation or FID-domain features.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan import batching, checkpointing, config_validation, metric_writers, preemption, sharding
from jaxmedgan.data import labeled, pipeline, transforms
from jaxmedgan.evaluators import metrics as metrics_lib
from jaxmedgan.losses import classifier as classifier_losses
from jaxmedgan.models import layers
from jaxmedgan.models.trained_classifier import (ClassifierState, build_model, build_optimizer, init_state,
                                                 model_features, model_logits, write_classes)
from jaxmedgan.trainers import contract, loop

log = logging.getLogger(__name__)

WEIGHTINGS = ("none", "inverse_frequency")


def is_multi_label(config: ml_collections.ConfigDict) -> bool:
    """True when the task is multi-label (one sigmoid per finding)."""
    return bool(config.data.get("multi_label", False))


def class_weights(config: ml_collections.ConfigDict, data: labeled.LabeledSet) -> np.ndarray:
    """f32 [K] per `config.loss.class_weighting` from the training set (see the module docstring)."""
    kind = config.loss.class_weighting
    if kind not in WEIGHTINGS:
        raise ValueError(f"config.loss.class_weighting={kind!r}; expected one of {WEIGHTINGS}.")
    k = data.num_classes
    if kind == "none":
        return np.ones(k, np.float32)
    if data.multi_label:
        known = data.target_mask() > 0  # U-Ignore: an unknown label is neither positive nor negative
        positive = data.targets > 0.5
        counts = (positive & known).sum(0).astype(np.float64)
        neg = (~positive & known).sum(0).astype(np.float64)
        return np.where(counts > 0, neg / np.maximum(counts, 1), 1.0).astype(np.float32)
    counts = data.class_counts().astype(np.float64)
    present = counts > 0  # an absent class never appears in a batch, its weight is never used
    return np.where(present, len(data) / (present.sum() * np.maximum(counts, 1)), 1.0).astype(np.float32)


def per_example_loss(config: ml_collections.ConfigDict, logits: jax.Array, batch: dict,
                     weights: jax.Array) -> jax.Array:
    """`losses.classifier.per_example_loss` f32 [B] with the task type and label smoothing of `config`."""
    return classifier_losses.per_example_loss(logits, batch, weights, multi_label=is_multi_label(config),
                                              smoothing=float(config.loss.get("label_smoothing", 0.0)))


def train_step(config: ml_collections.ConfigDict, state: ClassifierState, batch: dict, *,
               mesh=None) -> tuple[ClassifierState, dict]:
    """One AdamW step. batch: image f32 [B,H,W,C] in [-1,1], label i32 [B], targets f32 [B,K] and,
    multi-label, target_mask f32 [B,K] (1 = label known)."""
    del mesh  # the batch mean is a plain reduction; GSPMD inserts the cross-device sum
    model = build_model(config)
    tx = build_optimizer(config)
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        variables = {"params": params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
        logits, stats = layers.apply(model, variables, batch["image"], train=True, rngs={"dropout": rng})
        loss = jnp.mean(per_example_loss(config, logits, batch, state.class_weights))
        return loss, (logits, stats)

    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state)
    metrics = {"loss": loss, "accuracy": classifier_losses.accuracy(logits, batch, multi_label=is_multi_label(config)), "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics


# ----------------------------------------------------------------------------------------------
# Host side.


class _Source:
    """Random-access source over a LabeledSet: {"image": f32 [H,W,C], "label": i32, "targets": f32 [K]}
    plus, for multi-label sets, "target_mask": f32 [K] (`LabeledSet.target_mask`, 1 = label known)."""

    def __init__(self, data: labeled.LabeledSet):
        self._images = np.asarray(data.images, np.float32)
        self._labels = data.labels()
        self._targets = data.one_hot()
        self._mask = data.target_mask() if data.multi_label else None

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self._images[i], "label": self._labels[i], "targets": self._targets[i]}
        if self._mask is not None:
            item["target_mask"] = self._mask[i]
        return item


def make_augment(config: ml_collections.ConfigDict) -> transforms.Augment:
    """Classic augmentation from `config.data` (flips off for images whose sides matter)."""
    d = config.data
    return transforms.Augment(flip=bool(d.get("flip", True)), rotate90=bool(d.get("rotate90", True)),
                              max_translate_px=int(d.get("max_translate_px", 4)))


def _config_key(config: ml_collections.ConfigDict) -> str:
    """The config as JSON without the fields a step does not read (the mesh is keyed apart)."""
    d = config.to_dict()
    for section in ("mesh", "checkpoint", "seed", "downstream"):
        d.pop(section, None)
    return json.dumps(d, sort_keys=True, default=str)


_JIT_CACHE: dict[tuple, Callable] = {}


def _jitted_step(config: ml_collections.ConfigDict, mesh, state_shardings) -> Callable:
    """train_step jitted with shardings and donated state; one compile per (config, mesh)."""
    key = ("step", _config_key(config), mesh)
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(functools.partial(train_step, config, mesh=mesh),
                                  in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                                  out_shardings=(state_shardings, sharding.replicated(mesh)),
                                  donate_argnums=(0,))
    return _JIT_CACHE[key]


def _jitted_init(config: ml_collections.ConfigDict, mesh, state_shardings) -> Callable:
    """init_state jitted to be born sharded; one compile per (config, mesh)."""
    key = ("init", _config_key(config), mesh)
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(functools.partial(init_state, config), out_shardings=state_shardings)
    return _JIT_CACHE[key]


def _jitted_apply(config: ml_collections.ConfigDict, method: str) -> Callable:
    key = (method, json.dumps(config.model.to_dict(), sort_keys=True, default=str),
           config.train.get("dtype", "float32"))
    if key not in _JIT_CACHE:
        fn = model_logits if method == "logits" else model_features
        _JIT_CACHE[key] = jax.jit(functools.partial(fn, build_model(config)))
    return _JIT_CACHE[key]


def _batched(fn: Callable, variables: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Applies fn(variables, images) in fixed-size chunks (padded: one compile); f32 [N, ...]."""
    return batching.map_padded(lambda chunk: fn(variables, chunk), np.asarray(images, np.float32), batch_size,
                               empty=np.zeros((0,), np.float32))


def predict(config: ml_collections.ConfigDict, state: ClassifierState, images: np.ndarray) -> np.ndarray:
    """Probabilities f32 [N,K] (softmax, or per-finding sigmoid for multi-label) for images [N,H,W,C]."""
    logits = _batched(_jitted_apply(config, "logits"), state.variables(), images)
    if len(images) == 0:
        return np.zeros((0, config.model.num_classes), np.float32)
    return np.asarray(jax.nn.sigmoid(logits) if is_multi_label(config) else jax.nn.softmax(logits, -1))


def evaluate(config: ml_collections.ConfigDict, state: ClassifierState, data: labeled.LabeledSet) -> dict[str, float]:
    """Held-out scalars: accuracy, macro sensitivity/specificity/AUC, per-class AUC (prefix eval/)."""
    probs = predict(config, state, data.images)
    if data.multi_label:
        m = multi_label_metrics(data.targets, probs, data.class_names, data.mask)
    else:
        m = metrics_lib.single_label_metrics(data.targets, probs, data.class_names)
    out = {f"eval/{k}": m[k] for k in ("accuracy", "macro_sensitivity", "macro_specificity", "macro_auc")}
    out.update({f"eval/auc_{name}": v for name, v in m["auc"].items()})
    return out


def multi_label_metrics(targets: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                        mask: np.ndarray | None = None, threshold: float = 0.5) -> dict:
    """`evaluators.metrics.multi_label_metrics` scoring only known labels (mask f32 [N,K], 1 = known).

    Finding k's sensitivity / specificity / AUC / confusion matrix use the images where
    mask[:, k] = 1; exact-match accuracy asks every known label of an image to be right (an image
    with none known counts as right); element accuracy averages over known labels. mask None or
    all ones: exactly `metrics.multi_label_metrics`.
    """
    if mask is None or np.all(np.asarray(mask) > 0):
        return metrics_lib.multi_label_metrics(targets, probs, class_names, threshold)
    targets, probs, known = np.asarray(targets), np.asarray(probs), np.asarray(mask) > 0
    if known.shape != targets.shape:
        raise ValueError(f"Label mask {known.shape} must match the targets {targets.shape} ([N, K]).")
    out = metrics_lib.multi_label_metrics(targets, probs, class_names, threshold)  # checks shapes
    sens, spec, aucs = [], [], []
    for c, name in enumerate(class_names):
        rows = known[:, c]
        m = metrics_lib.multi_label_metrics(targets[rows, c:c + 1], probs[rows, c:c + 1], (name,), threshold)
        out["sensitivity"][name], out["specificity"][name] = m["sensitivity"][name], m["specificity"][name]
        out["auc"][name], out["confusion_matrix"][name] = m["auc"][name], m["confusion_matrix"][name]
        sens.append(m["sensitivity"][name])
        spec.append(m["specificity"][name])
        aucs.append(m["auc"][name])
    right = ((probs >= threshold) == (targets > 0.5)) | ~known
    n = len(targets)

    def nanmean(x: list[float]) -> float:  # the mean of the defined values, as metrics' macro means
        x = np.asarray(x, np.float64)
        return float(np.mean(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else float("nan")

    out.update({
        "accuracy": float(np.mean(np.all(right, axis=1))) if n else float("nan"),
        "element_accuracy": float(np.sum(right & known) / known.sum()) if known.any() else float("nan"),
        "macro_sensitivity": nanmean(sens), "macro_specificity": nanmean(spec), "macro_auc": nanmean(aucs), "num_unknown_labels": int((~known).sum()),
    })
    return out


def _check_data(config: ml_collections.ConfigDict, data: labeled.LabeledSet, what: str) -> None:
    expected = (config.data.image_size, config.data.image_size, config.data.channels)
    if data.image_shape != expected:
        raise ValueError(f"{what} ({data.source}) has images {data.image_shape} (H, W, C) but config.data "
                         f"expects {expected}; set --config.data.image_size / channels.")
    if data.num_classes != config.model.num_classes:
        raise ValueError(f"config.model.num_classes={config.model.num_classes} but {what} ({data.source}) has "
                         f"{data.num_classes} classes {list(data.class_names)}; set "
                         f"--config.model.num_classes={data.num_classes}.")
    if data.multi_label != is_multi_label(config):
        raise ValueError(f"{what} ({data.source}) is {'multi' if data.multi_label else 'single'}-label but "
                         f"config.data.multi_label={is_multi_label(config)}.")


def fit(config: ml_collections.ConfigDict, workdir: str | None, train: labeled.LabeledSet,
        eval_data: labeled.LabeledSet | None = None, *, mesh=None) -> ClassifierState:
    """Trains on `train`, resuming from `workdir` (checkpoints + metrics) or in memory if workdir is None.

    Runs the one training loop (`trainers/loop.py`); with a workdir it holds its lock, refuses
    config drift on resume and stops cleanly on SIGTERM/SIGINT (as `trainers.common.fit`).
    """
    if workdir is None:
        return _fit(config, None, train, eval_data, mesh, None)
    return loop.guarded(workdir, config, lambda stop: _fit(config, workdir, train, eval_data, mesh, stop))


def _fit(config: ml_collections.ConfigDict, workdir: str | None, train: labeled.LabeledSet,
         eval_data: labeled.LabeledSet | None, mesh, stop: preemption.StopOnSignal | None) -> ClassifierState:
    is_main = jax.process_index() == 0
    mesh = sharding.make_mesh(config.get("mesh")) if mesh is None else mesh
    _check_data(config, train, "training set")
    config_validation.check_batch_fits(config, len(train.images))
    if eval_data is not None:
        _check_data(config, eval_data, "evaluation set")
    global_batch = config.train.batch_size
    sharding.local_batch_size(global_batch, mesh)

    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(functools.partial(init_state, config), rng)
    state_shardings = sharding.tree_shardings(abstract, mesh)
    mngr = None if workdir is None else checkpointing.manager(
        workdir, max_to_keep=config.checkpoint.keep, async_save=config.checkpoint.get("async_save", True))

    def init() -> ClassifierState:
        state = _jitted_init(config, mesh, state_shardings)(rng)
        weights = jax.device_put(class_weights(config, train), state_shardings.class_weights)
        return state.replace(class_weights=weights)

    state, start = loop.start_state(mngr, abstract, state_shardings, init)
    if start > 0:
        log.info("Resumed from checkpoint step %d in %s.", start, workdir)
    if workdir is not None and is_main:
        checkpointing.write_config(workdir, config)
        write_classes(workdir, train.class_names, train.multi_label)

    ds = pipeline.train_dataset(_Source(train), global_batch_size=global_batch, seed=config.seed,
                                augment=config.data.augment, augmentation=make_augment(config),
                                process_index=jax.process_index(), process_count=jax.process_count())
    jitted = _jitted_step(config, mesh, state_shardings)

    def step_fn(state: ClassifierState, batch: Any, step: int) -> tuple[ClassifierState, dict]:
        return jitted(state, batch)

    writer = metric_writers.MetricWriter(workdir or "", enabled=is_main and workdir is not None)

    def publish(step: int, scalars: dict) -> dict:
        writer.write_scalars(step, scalars)
        return scalars

    periodic = []
    if eval_data is not None and workdir is not None:
        periodic.append(loop.Periodic(config.train.eval_every,
                                      lambda done, state: evaluate(config, state, eval_data)))
    try:
        return loop.run(
            state, step_fn, pipeline.iterate(ds, start), start=start, total=config.train.steps,
            log_every=config.train.log_every, save_every=config.checkpoint.every, publish=publish,
            save=None if mngr is None else lambda done, state: checkpointing.save(mngr, done, state, config),
            workdir=workdir, images_per_step=global_batch, desc="train classifier", postfix=("loss", "accuracy"),
            periodic=periodic, stop=stop, prepare=lambda batch: sharding.shard_batch(batch, mesh),
            newest_verified=None if mngr is None else lambda: checkpointing.newest_verified_step(mngr),
            quiet=config.train.get("quiet", False))
    finally:
        if mngr is not None:
            checkpointing.finalize(mngr)
        writer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> ClassifierState:
    """Trains the classifier on `config.data`'s train split (evaluating on its test split if any)."""
    train = labeled.load(config, "train")
    eval_data = labeled.load(config, "test") if labeled.has_split(config, "test") else None
    if eval_data is None:
        log.info("config.data names no held-out 'test' set: training without evaluation.")
    return fit(config, workdir, train, eval_data)


# Not a GAN: its workdir holds a classifier (the frozen model of the clinical loss, FID-domain, LCO).
FAMILY = contract.Family(name="classifier", kind="classifier")
