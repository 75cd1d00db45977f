"""`jaxmedgan evaluate leak --workdir W --num N --out DIR`: are the training augmentations leaking?

With ADA or DiffAugment on small sets a generator can learn to emit flipped, rotated or inverted
images (Karras et al. 2020; stylegan2-ada-pytorch issue 232) -- harmful in medicine, where the
heart belongs on the patient's left. This driver measures it:

1. Which transforms the run's training used (`training_transforms`): `config.d_augment` (DiffAugment
   ops, the ADA pipeline's ops, the leak-test switch), a StyleGAN2 run's `config.ada`, and the
   classic data augmentation (`config.data.augment`: flips + quarter turns); `--transforms`
   overrides; with none used, the dihedral group + intensity inversion are tested as controls.
2. A transform classifier (models/classifier.py, a compact optax loop here) learns, on W's real
   training images, which of (identity, t_1, ..., t_m) was applied (augment/leak_transforms.py;
   one drawn uniformly per image and step; half the images blurred first, whatever the label, so
   a generator's smoother images are not read as a transform).
3. It classifies N generated images and the held-out real images (the data's 'test' split, else
   a fifth of the training images kept out of step 2), the latter also under every transform
   (how identifiable each transform is on these data).
4. evaluators/leak.py turns the predictions into rates, intervals, flags; the ADA p of the run
   (checkpoint state `extra['aug_p' | 'ada_p']`, and its maximum over W/metrics.jsonl) is set
   against the leak range Karras et al. 2020 report.

Writes DIR/leak.json and DIR/leak.md (atomic). Test switch for a forced leak:
`--config.d_augment.kind=leak_test_hflip` (augment/policy.py; breaks training on purpose).
"""
from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan import atomic_io, batching, checkpointing, metric_writers, sampling, trainers
from jaxmedgan.augment import ada, controller, leak_transforms
from jaxmedgan.augment import policy as aug_policy
from jaxmedgan.evaluators import leak as leak_stats
from jaxmedgan.models import classifier as classifier_model
from jaxmedgan.studies import quality_cli

log = logging.getLogger(__name__)

CONTROLS = (*leak_transforms.D4[1:], "invert")  # tested when the training used no transform at all
_DIFFAUG = {"color": "color", "translation": "translate", "cutout": "cutout"}


def _ada_transforms(cfg: ada.AugmentConfig, channels: int) -> list[str]:
    """The transforms an ADA pipeline produces: x-flip and quarter turns as the D4 elements they
    reach, luma flip as inversion (one / three channels), the other ops as `ada_<op>`."""
    out: list[str] = []
    if cfg.xflip > 0 and cfg.rotate90 > 0:
        out += leak_transforms.D4[1:]
    elif cfg.xflip > 0:
        out.append("hflip")
    elif cfg.rotate90 > 0:
        out += ["rot90", "rot180", "rot270"]
    if cfg.lumaflip > 0 and channels in (1, 3):
        out.append("invert")
    for op in leak_transforms.ADA_OPS:
        if getattr(cfg, op) > 0 and (op not in ("hue", "saturation") or channels == 3):
            out.append(f"ada_{op}")
    return out


def training_transforms(config: ml_collections.ConfigDict) -> dict[str, str]:
    """{transform: where the training used it} for a GAN workdir's config (may be empty)."""
    used: dict[str, str] = {}
    channels = int(config.data.get("channels", 1))
    if config.get("d_augment") is not None:
        aug = aug_policy.DAugment.from_config(config)
        if aug.kind == "diffaug":
            for op in aug.ops:
                used.setdefault(_DIFFAUG[op], f"d_augment diffaug:{op}")
        elif aug.kind == "ada" and aug.ada_settings.augments:
            for t in _ada_transforms(ada.pipeline(aug.pipeline), channels):
                used.setdefault(t, f"d_augment ada:{aug.pipeline}")
        elif aug.leak_test is not None:
            used[aug.leak_test] = f"d_augment {aug.kind} (test switch)"
    elif config.get("ada") is not None and controller.AdaSettings.from_config(config.ada).augments:
        pipeline = str(config.ada.get("pipeline", "bgc"))
        for t in _ada_transforms(ada.pipeline(pipeline), channels):
            used.setdefault(t, f"ada:{pipeline}")
    if config.data.get("augment", False):  # data/transforms.Augment: flips + quarter turns on the reals
        for t in leak_transforms.D4[1:]:
            used.setdefault(t, "data.augment")
    return used


def select_transforms(config: ml_collections.ConfigDict, requested: Sequence[str] | None
                      ) -> tuple[tuple[str, ...], dict[str, str]]:
    """(names with 'identity' first, sources): `requested` if given, else what the training used,
    else CONTROLS. ValueError naming an unknown transform."""
    used = training_transforms(config)
    names = [t for t in (requested or used or CONTROLS) if t != "identity"]
    leak_transforms.check(names)
    if not names:
        raise ValueError("--transforms names no transform besides 'identity'.")
    return ("identity", *dict.fromkeys(names)), {t: used.get(t, "") for t in names}


# ----------------------------------------------------------------------------------------------
# The transform classifier.


CLASSIFIER_SIZE = 32  # px: larger images are transformed at full size, then area-pooled to this


def pool_factor(size: int) -> int:
    """The integer area-pooling factor that brings `size` px to at most CLASSIFIER_SIZE (1 if none divides)."""
    f = max(1, size // CLASSIFIER_SIZE)
    while size % f:
        f -= 1
    return f


def _pool(x: jax.Array, f: int) -> jax.Array:
    """Area pooling of images [N,H,W,C] by f: [N,H/f,W/f,C] (the orientation, inversion, shift and
    cutout signatures survive; the classifier costs f^2 less)."""
    if f == 1:
        return x
    n, h, w, c = x.shape
    return x.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))


def _soften(x: jax.Array, key: jax.Array) -> jax.Array:
    """Half of the images [N,H,W,C] (drawn per image) blurred by the 3x3 binomial filter (reflect edges).

    Applied before the transform, whatever the label: generated images are often smoother than the
    data (at their borders too), and without it the classifier reads smoothness as a transform's
    signature (a smooth border as DiffAugment's zero-filled translation strip)."""
    pad = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    w = jnp.asarray([0.25, 0.5, 0.25], x.dtype)
    rows = sum(w[i] * pad[:, i:i + x.shape[1]] for i in range(3))
    blurred = sum(w[j] * rows[:, :, j:j + x.shape[2]] for j in range(3))
    pick = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(pick, blurred, x)


def _loss(module, names, pool, params, images, labels, key):
    k_soft, k_tf = jax.random.split(key)
    x = _pool(leak_transforms.apply_labelled(names, _soften(images, k_soft), labels, k_tf), pool)
    logits = module.apply({"params": params}, x, train=False)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _train_steps(module, tx, names, batch_size, pool, params, opt_state, images, key):
    """One optax step per row of `key` (u32 [S, 2]), scanned; images f32 [N,H,W,C] (the real training set)."""

    def step(carry, k):
        params, opt_state = carry
        k_idx, k_lab, k_tf = jax.random.split(k, 3)
        x = images[jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])]
        y = jax.random.randint(k_lab, (batch_size,), 0, len(names))
        loss, grads = jax.value_and_grad(functools.partial(_loss, module, names, pool))(params, x, y, k_tf)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), key)
    return params, opt_state, losses


@functools.lru_cache(maxsize=8)
def _optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """AdamW with cosine decay; one object per setting, so `_train_steps` compiles once per shape."""
    return optax.adamw(optax.cosine_decay_schedule(learning_rate, max(steps, 1)), weight_decay=1e-4)


def train_transform_classifier(images: np.ndarray, names: tuple[str, ...], key: jax.Array, *, steps: int = 600,
                               batch_size: int = 64, learning_rate: float = 2e-3, chunk: int = 50
                               ) -> tuple[classifier_model.Classifier, dict, list[float]]:
    """(module, params, mean loss per chunk): a CNN that tells which of `names` was applied to a real
    image; images f32 [N,H,W,C] in [-1, 1] (the real training images), transformed at their size and
    area-pooled to CLASSIFIER_SIZE px before the CNN (`predict` does the same)."""
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"The transform classifier needs real images [N>=2,H,W,C]; got {images.shape}.")
    leak_transforms.check(names, images.shape)
    module = classifier_model.Classifier(num_classes=len(names), features=(16, 32, 64), convs_per_stage=1)
    k_init, k_train = jax.random.split(key)
    pool = pool_factor(images.shape[1])
    params = module.init(k_init, _pool(jnp.zeros((2, *images.shape[1:])), pool), train=False)["params"]
    tx = _optimizer(learning_rate, steps)
    opt_state = tx.init(params)
    x = jnp.asarray(images, jnp.float32)
    losses = []
    for start in range(0, steps, chunk):  # scanned chunks: one compile, a log line per chunk
        n = min(chunk, steps - start)
        keys = jax.random.split(jax.random.fold_in(k_train, start), n)
        params, opt_state, loss = _train_steps(module, tx, names, batch_size, pool, params, opt_state, x, keys)
        losses.append(float(jnp.mean(loss)))
    return module, params, losses


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict_batch(module, pool, params, images):
    return jnp.argmax(module.apply({"params": params}, _pool(images, pool), train=False), -1)


def predict(module, params, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Predicted transform index int [N] for images f32 [N,H,W,C] (fixed batch shape: one compile)."""
    pool = pool_factor(np.shape(images)[1]) if len(images) else 1
    return batching.map_padded(lambda chunk: _predict_batch(module, pool, params, chunk),
                               np.asarray(images, np.float32), batch_size, empty=np.zeros((0,), np.int64))


def heldout_predictions(module, params, names: tuple[str, ...], images: np.ndarray, key: jax.Array) -> np.ndarray:
    """int [K, M]: row k, predictions on the held-out reals after transform names[k]."""
    rows = []
    for k, name in enumerate(names):
        x = np.asarray(leak_transforms.apply(name, jnp.asarray(images), jax.random.fold_in(key, k)))
        rows.append(predict(module, params, x))
    return np.stack(rows)


# ----------------------------------------------------------------------------------------------
# The workdir: real images, generated images, ADA p.


def real_split(config: ml_collections.ConfigDict, max_real: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """(training reals f32 [n,H,W,C], held-out reals f32 [m,H,W,C], where the held-out ones come from)."""
    train = quality_cli.real_images(config, max_real, "train", seed)
    try:
        heldout = quality_cli.real_images(config, max_real, "test", seed)
        return train, heldout, "the data's held-out 'test' split"
    except ValueError:  # no held-out split: keep a fifth of the training images out of the classifier
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(train))
        m = max(1, len(train) // 5)
        log.warning("config.data has no 'test' split: holding out %d of %d training images.", m, len(train))
        return train[idx[m:]], train[idx[:m]], f"{m} training images kept out of the classifier's training"


def draw_generated(workdir: str, config: ml_collections.ConfigDict, num: int, seed: int
                   ) -> tuple[np.ndarray, Any, dict[str, float]]:
    """(generated f32 [num,H,W,C] in [-1, 1], checkpoint step, ADA p entries of the checkpoint's state extra)."""
    family = trainers.family(config.trainer)
    if family.kind != "gan":
        raise ValueError(f"{workdir} is a {family.kind} workdir; `evaluate leak` needs a GAN workdir.")
    if family.draw is not None or family.generate_labelled is not None:  # map-conditioned / one GAN per class
        fakes, step = quality_cli.draw_fakes(workdir, num, seed)
        return fakes.astype(np.float32) / 127.5 - 1.0, step, {}
    config, state, step = sampling.restore_state(workdir)
    fakes, _ = sampling.generate(config, state, family, num, None, seed, as_float=True)
    p = {k: float(state.extra[k]) for k in ("aug_p", "ada_p") if k in state.extra}
    return fakes, step, p


def logged_p(workdir: str) -> float | None:
    """The highest ADA p (`aug_p` / `ada_p`) in W/metrics.jsonl, None if none was logged."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    values = [float(r[k]) for r in metric_writers.read_jsonl(path) for k in ("aug_p", "ada_p") if k in r]
    return max(values) if values else None


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def run(workdir: str, num: int, out: str, *, transforms: Sequence[str] | None = None, classifier_steps: int = 600,
        max_real: int = 2000, seed: int = 0, confidence: float = 0.95, min_j: float = leak_stats.MIN_J,
        min_excess: float = leak_stats.MIN_EXCESS) -> dict[str, Any]:
    """The leak report of `workdir` (module docstring); writes out/leak.json and out/leak.md, returns the report."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}.")
    if not 0 < confidence < 1:
        raise ValueError(f"--confidence must be in (0, 1), got {confidence}.")
    t0 = time.time()
    config = checkpointing.read_config(workdir)
    names, sources = select_transforms(config, transforms)
    train, heldout, heldout_source = real_split(config, max_real, seed)
    leak_transforms.check(names, train.shape)
    k_clf, k_held = jax.random.split(jax.random.PRNGKey(seed))
    log.info("Training the transform classifier on %d real images: %s", len(train), ", ".join(names))
    module, params, losses = train_transform_classifier(train, names, k_clf, steps=classifier_steps)
    fakes, step, state_p = draw_generated(workdir, config, num, seed)
    if fakes.shape[1:] != train.shape[1:]:
        raise ValueError(f"Generated images {fakes.shape[1:]} and the real images {train.shape[1:]} of "
                         f"{workdir}'s config.data differ in shape.")
    fake_pred = predict(module, params, fakes)
    held_pred = heldout_predictions(module, params, names, heldout, k_held)
    rows = leak_stats.leak_table(names, fake_pred, held_pred, sources=sources, confidence=confidence,
                                 min_j=min_j, min_excess=min_excess)
    p_final = next(iter(state_p.values()), None)
    p_max = logged_p(workdir)
    ada_stats = leak_stats.ada_p_assessment(p_final, None if p_max is None else max(p_max, p_final or 0.0))
    report = {
        "workdir": os.path.abspath(workdir), "step": step, "trainer": config.trainer,
        "d_augment": str(config.d_augment.kind) if config.get("d_augment") is not None else "none",
        "num_fake": int(len(fakes)), "num_heldout": int(len(heldout)), "num_train": int(len(train)),
        "heldout_source": heldout_source,
        "classifier_accuracy": float(np.mean(held_pred == np.arange(len(names))[:, None])),
        "classifier_loss": losses,
        "transforms": rows, "ada": ada_stats, "summary": leak_stats.summarize(rows, ada_stats),
        "settings": {"confidence": confidence, "min_j": min_j, "min_excess": min_excess, "seed": seed,
                     "classifier_steps": classifier_steps, "transforms_requested": list(transforms or [])},
        "wall_s": time.time() - t0,
    }
    report = _json_safe(report)
    atomic_io.write_json(os.path.join(out, "leak.json"), report, indent=1)
    atomic_io.write_text(os.path.join(out, "leak.md"), leak_stats.markdown(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmedgan evaluate leak",
                                description="Augmentation-leak report: how often generated images carry each "
                                "training augmentation, vs the real images (JSON + markdown in --out).")
    p.add_argument("--workdir", required=True, help="a trained GAN workdir")
    p.add_argument("--num", type=int, default=500, help="generated images to classify")
    p.add_argument("--out", required=True, help="folder for leak.json and leak.md")
    p.add_argument("--transforms", default=None,
                   help=f"comma-separated transforms to test (default: those the training used); known: "
                   f"{', '.join(leak_transforms.NAMES)}")
    p.add_argument("--classifier-steps", type=int, default=600, help="Adam steps of the transform classifier")
    p.add_argument("--max-real", type=int, default=2000, help="at most this many real images per split")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--min-excess", type=float, default=leak_stats.MIN_EXCESS,
                   help="smallest generated - real rate difference that is flagged")
    p.add_argument("--seed", type=int, default=0)
    return p


def leak_command(argv: Sequence[str]) -> int:
    """`jaxmedgan evaluate leak ...`: prints the markdown table; exit 0 (a leak is a finding, not an error)."""
    args = build_parser().parse_args(list(argv))
    transforms = [t.strip() for t in args.transforms.split(",") if t.strip()] if args.transforms else None
    report = run(args.workdir, args.num, args.out, transforms=transforms, classifier_steps=args.classifier_steps,
                 max_real=args.max_real, seed=args.seed, confidence=args.confidence, min_excess=args.min_excess)
    print(leak_stats.markdown(report))
    print(f"Wrote {os.path.join(args.out, 'leak.json')} and leak.md")
    return 0
