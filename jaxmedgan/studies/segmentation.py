"""Segmentation experiment: does pix2pix-synthesised data help a segmenter? (Shin et al. 2018)

A small U-Net segmenter (the pix2pix U-Net with `out_channels = K` logits, no tanh, no dropout)
is trained, with the same number of steps and batch size, on
  (a) real          the real training pairs (image -> label map),
  (b) real+synth    real pairs plus synthetic pairs (new label maps -> trained pix2pix images),
  (c) synth         synthetic pairs only,
and evaluated on the held-out real pairs. Synthetic maps come from `paired.condition_maps`
(MNI: training-slice tissue with fresh seeded tumours; other sources: rotated/flipped training
maps), so no held-out anatomy or lesion is seen. The generator is a trained pix2pix workdir (`config.generator_workdir`), or is trained
first into WORKDIR/pix2pix from `config.generator`.

Dice per label: pooled over the evaluation set, D_k = 2 |P_k & T_k| / (|P_k| + |T_k|) (NaN when
the label is in neither); 95 % CIs by percentile bootstrap over slices, resampling all pairs of
one slice together (`metrics.bootstrap_ci` with groups = slice id), since tumour variants of a
slice share its anatomy. Loss: softmax cross-entropy + `dice_weight` x (1 - mean soft Dice over
the foreground classes present in the batch).

Outputs WORKDIR/segmentation.json and WORKDIR/segmentation.md (`write_tables`, atomic).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan import atomic_io, batching, sampling
from jaxmedgan.data import paired
from jaxmedgan.evaluators import metrics
from jaxmedgan.models import pix2pix as p2p_models
from jaxmedgan.trainers import pix2pix

log = logging.getLogger(__name__)
ARMS = ("real", "real+synth", "synth")


# ----------------------------------------------------------------------------------------------
# Dice.

def dice_counts(pred: np.ndarray, target: np.ndarray, num_labels: int) -> np.ndarray:
    """int64 [N, K, 3]: per example and label (|P & T|, |P|, |T|) from int maps [N, ...]."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} maps must have the same shape.")
    p = pred.reshape(len(pred), -1)
    t = target.reshape(len(target), -1)
    out = np.zeros((len(p), num_labels, 3), np.int64)
    for k in range(num_labels):
        pk, tk = p == k, t == k
        out[:, k] = np.stack([(pk & tk).sum(1), pk.sum(1), tk.sum(1)], axis=1)
    return out


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """float64 [K]: pooled Dice 2 sum|P&T| / (sum|P| + sum|T|) per label (NaN where both empty)."""
    s = counts.sum(axis=0).astype(np.float64)
    den = s[:, 1] + s[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * s[:, 0] / np.where(den > 0, den, 1.0), np.nan)


def dice(pred: np.ndarray, target: np.ndarray, num_labels: int) -> np.ndarray:
    """Pooled Dice per label [K] of int maps pred, target [N, ...]."""
    return dice_from_counts(dice_counts(pred, target, num_labels))


def dice_with_ci(pred: np.ndarray, target: np.ndarray, groups: np.ndarray, num_labels: int, *,
                 num_samples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[int, dict[str, float]]:
    """{label: {"dice", "lo", "hi"}}: pooled Dice and its percentile-bootstrap (1 - alpha) CI,
    resampling `groups` (e.g. slice ids [N]) with replacement."""
    counts = dice_counts(pred, target, num_labels)
    point = dice_from_counts(counts)

    def statistic(index):
        d = dice_from_counts(counts[index])
        return {str(k): d[k] for k in range(num_labels)}

    ci = metrics.bootstrap_ci(statistic, groups, num_samples=num_samples, seed=seed, alpha=alpha)
    return {k: {"dice": float(point[k]), "lo": ci[str(k)][0], "hi": ci[str(k)][1]} for k in range(num_labels)}


# ----------------------------------------------------------------------------------------------
# Segmenter.

def build_segmenter(config: ml_collections.ConfigDict, num_labels: int) -> p2p_models.UNetGenerator:
    """The pix2pix U-Net as a segmenter: image [B,H,W,C] -> logits f32 [B,H,W,K]."""
    s = config.segmenter
    return p2p_models.UNetGenerator(image_size=config.data.image_size, out_channels=num_labels,
                                    base_features=s.features, max_features=s.max_features, norm=s.norm,
                                    dropout=0.0, output_activation="linear")


def segmentation_loss(logits: jax.Array, maps: jax.Array, num_labels: int, dice_weight: float) -> jax.Array:
    """Softmax CE + dice_weight * (1 - mean soft Dice over foreground labels present); scalar."""
    onehot = jax.nn.one_hot(maps, num_labels)
    ce = jnp.mean(optax.softmax_cross_entropy(logits, onehot))
    probs = jax.nn.softmax(logits, axis=-1)
    inter = jnp.sum(probs * onehot, axis=(0, 1, 2))
    den = jnp.sum(probs, axis=(0, 1, 2)) + jnp.sum(onehot, axis=(0, 1, 2))
    soft = 2 * inter / jnp.maximum(den, 1e-6)
    present = (jnp.sum(onehot, axis=(0, 1, 2)) > 0).at[0].set(False)
    mean_dice = jnp.sum(jnp.where(present, soft, 0.0)) / jnp.maximum(jnp.sum(present), 1)
    return ce + dice_weight * (1.0 - mean_dice)


@functools.lru_cache(maxsize=8)
def _compiled(model: p2p_models.UNetGenerator, num_labels: int, lr: float, dice_weight: float):
    """(init, step, predict) jitted once per segmenter setting: the three arms share compiles."""
    tx = optax.adam(lr)

    @jax.jit
    def init(key, x):
        params = model.init(key, x, train=False)["params"]
        return params, tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(
            lambda p: segmentation_loss(model.apply({"params": p}, x, train=True), y, num_labels,
                                        dice_weight))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def predict_fn(params, x):
        return jnp.argmax(model.apply({"params": params}, x, train=False), -1)

    return init, step, predict_fn


def _fns(config: ml_collections.ConfigDict, num_labels: int):
    s = config.segmenter
    return _compiled(build_segmenter(config, num_labels), num_labels, float(s.lr), float(s.dice_weight))


def train_segmenter(config: ml_collections.ConfigDict, images: np.ndarray, maps: np.ndarray,
                    num_labels: int, seed: int) -> Any:
    """Params of a segmenter trained `config.segmenter.steps` steps on (images [N,H,W,C], maps [N,H,W])."""
    s = config.segmenter
    init, step, _ = _fns(config, num_labels)
    params, opt_state = init(jax.random.PRNGKey(seed), images[: s.batch_size])
    rng = np.random.default_rng([seed, 0x5345474D])  # "SEGM"
    losses = []
    for _ in range(s.steps):
        idx = rng.integers(0, len(images), s.batch_size)
        x, y = images[idx], maps[idx].astype(np.int32)
        if s.get("flip", True) and rng.random() < 0.5:  # left-right flip (no side meaning in these slices)
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        params, opt_state, loss = step(params, opt_state, x, y)
        losses.append(loss)
    log.info("segmenter: %d steps, final loss %.4f", s.steps, float(np.mean(jax.device_get(losses[-20:]))))
    return params


def predict(config: ml_collections.ConfigDict, params: Any, images: np.ndarray, num_labels: int) -> np.ndarray:
    """uint8 maps [N,H,W]: argmax of the segmenter's logits, in fixed-size (padded) batches."""
    _, _, fn = _fns(config, num_labels)
    batch_size = config.segmenter.batch_size  # the training batch shape: no new compile of the net
    return batching.map_padded(lambda x: fn(params, x), images, batch_size).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Experiment.

def _generator(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Workdir of a trained pix2pix: config.generator_workdir, else trained into workdir/pix2pix."""
    if config.generator_workdir:
        return config.generator_workdir
    gen_dir = os.path.join(workdir, "pix2pix")
    gen = ml_collections.ConfigDict(config.generator.to_dict())
    gen.data = ml_collections.ConfigDict(config.data.to_dict())
    gen.seed = config.seed
    pix2pix.train_and_evaluate(gen, gen_dir)
    return gen_dir


def synthesize(generator_workdir: str, num: int, seed: int) -> dict[str, np.ndarray]:
    """{"image" f32 [N,H,W,C] in [-1,1], "map" uint8 [N,H,W]}: pix2pix images for unseen maps."""
    config, state, _ = sampling.restore_state(generator_workdir)
    maps = paired.condition_maps(config, num, seed)
    return {"image": pix2pix.generate_batched(config, state, maps), "map": maps}


def run_experiment(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains the three segmenters, evaluates them on held-out real data, writes the tables."""
    os.makedirs(workdir, exist_ok=True)
    gen_dir = _generator(config, workdir)
    gen_config, _, gen_step = sampling.restore_state(gen_dir)
    if gen_config.data.image_size != config.data.image_size or gen_config.data.source != config.data.source:
        raise ValueError(f"generator {gen_dir} was trained on {gen_config.data.source!r} at "
                         f"{gen_config.data.image_size} px; config.data asks for {config.data.source!r} at "
                         f"{config.data.image_size} px.")
    k = config.data.num_labels
    real, test = paired.load_arrays(config)
    synth = synthesize(gen_dir, config.synthetic.num, config.synthetic.seed)
    train_sets = {
        "real": real,
        "real+synth": {key: np.concatenate([real[key], synth[key]]) for key in ("image", "map")},
        "synth": synth,
    }
    groups = test["z"] if "z" in test else np.arange(len(test["map"]))
    if "case" in test:  # user folders: one group per (case, slice)
        groups = np.unique(np.char.add(test["case"].astype(str), groups.astype(str)), return_inverse=True)[1]
    names = _class_names(config)
    results = {"arms": {}, "config": json.loads(config.to_json_best_effort()), "generator_workdir": gen_dir,
               "generator_step": int(gen_step), "class_names": names,
               "num_train": {a: int(len(s["map"])) for a, s in train_sets.items()},
               "num_test": int(len(test["map"])), "num_test_groups": int(len(np.unique(groups)))}
    for arm in config.arms:
        if arm not in train_sets:
            raise ValueError(f"config.arms holds {arm!r}; expected a subset of {ARMS}.")
        log.info("segmentation arm %r: %d training pairs", arm, len(train_sets[arm]["map"]))
        params = train_segmenter(config, train_sets[arm]["image"], train_sets[arm]["map"], k, config.seed)
        pred = predict(config, params, test["image"], k)
        scores = dice_with_ci(pred, test["map"], groups, k, num_samples=config.eval.bootstrap_samples,
                              seed=config.seed, alpha=config.eval.alpha)
        results["arms"][arm] = {names[c]: scores[c] for c in range(k)}
    write_tables(results, workdir, labels=[names[c] for c in config.eval.labels])
    return results


def _class_names(config: ml_collections.ConfigDict) -> list[str]:
    return pix2pix.class_names(config)


def _fmt(s: dict[str, float]) -> str:
    if s is None or np.isnan(s["dice"]):
        return "n/a"
    return f"{s['dice']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def render_markdown(results: dict[str, Any], labels: Sequence[str]) -> str:
    """Markdown table: one row per training arm, one column per label, 'Dice [95% CI]'."""
    level = int(round(100 * (1 - results.get("config", {}).get("eval", {}).get("alpha", 0.05))))
    lines = [f"Dice on {results['num_test']} held-out real pairs ({results['num_test_groups']} slices = "
             f"bootstrap groups), pooled per label, [{level}% bootstrap CI]", "",
             "| training data | n train | " + " | ".join(labels) + " |",
             "|---|---:|" + "---|" * len(labels)]
    for arm, scores in results["arms"].items():
        lines.append(f"| {arm} | {results['num_train'][arm]} | "
                     + " | ".join(_fmt(scores.get(l)) for l in labels) + " |")
    return "\n".join(lines) + "\n"


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN -> None, numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_tables(results: dict[str, Any], out_dir: str, labels: Sequence[str] | None = None) -> tuple[str, str]:
    """Writes out_dir/segmentation.md and .json (atomically); returns their paths."""
    labels = list(labels) if labels is not None else list(next(iter(results["arms"].values())))
    os.makedirs(out_dir, exist_ok=True)
    md, js = os.path.join(out_dir, "segmentation.md"), os.path.join(out_dir, "segmentation.json")
    atomic_io.write_text(js, json.dumps(_clean(results), indent=1, sort_keys=True, allow_nan=False))
    atomic_io.write_text(md, render_markdown(results, labels))
    return md, js


def segmentation_command(argv: Sequence[str]) -> int:
    """`jaxmedgan evaluate segmentation --config CONFIG.py --workdir DIR [--config.x=...]`.

    argv are the arguments after `jaxmedgan evaluate segmentation`; returns the exit code.
    """
    from absl import flags
    from ml_collections import config_flags

    argv = ["jaxmedgan evaluate segmentation", *argv]
    if any(a in ("-h", "--help") for a in argv[1:]):
        print("usage: jaxmedgan evaluate segmentation --config configs/segmentation_brain.py --workdir DIR "
              "[--config.section.key=value ...]")
        return 0
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Experiment config (configs/segmentation_*.py).",
                                    flag_values=fv, lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Directory for the generator, tables and logs.", flag_values=fv)
    try:
        fv(argv)
        config = fv.config
        if config is None or fv.workdir is None:
            raise ValueError("needs --config and --workdir.")
        config.keys()
    except Exception as e:  # flags errors, unknown keys, config files failing to load
        print(f"jaxmedgan evaluate segmentation: error: {e}", file=sys.stderr)
        return 2
    try:
        results = run_experiment(config, fv.workdir)
    except (ValueError, FileNotFoundError) as e:
        print(f"jaxmedgan evaluate segmentation: error: {e}", file=sys.stderr)
        return 1
    labels = [results["class_names"][c] for c in config.eval.labels]
    print(render_markdown(results, labels))
    print(f"Tables in {os.path.join(fv.workdir, 'segmentation.md')} and segmentation.json")
    return 0
