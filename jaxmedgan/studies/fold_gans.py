"""One GAN per (real fraction, seed, fold) of the downstream study, trained on that (seed, fold)'s real
training images only, so no test fold reaches the synthetic images (`studies.downstream`).

`load_gan_config` reads `downstream.gan_config` (a configs/*.py file) with `downstream.gan_overrides`
('key=value' strings, parsed as `--config.key=value` would be; an unknown key is an error naming
it). `train` trains -- or reuses, or resumes -- OUT/gans/frac{r}/seed{s}/fold{f}: a normal GAN
workdir (`trainers.common.fit` on the images in memory, no evaluation data: the held-out fold is
never shown to it) plus RECORD (fold_gan.json): the training images' indices into the study's real
set, their class counts, the GAN config's fingerprint and whether training finished. A finished
workdir with the same fingerprint is reused without training; one with another fingerprint (the
GAN config, its overrides or the real set changed under the same OUT) is refused, never overwritten.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import math
import os
import sys
import time
from typing import Sequence

import ml_collections
import numpy as np

from jaxmedgan import atomic_io, checkpointing, config_validation, sharding, trainers
from jaxmedgan.data import datasets, labeled, pipeline
from jaxmedgan.evaluators import learning_curve
from jaxmedgan.trainers import common

log = logging.getLogger(__name__)

RECORD = "fold_gan.json"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DESIGN = "one GAN per (fraction, seed, fold), trained on that fold's training images only"


def resolve(path: str) -> str:
    """`path` as given if it exists, else relative to the repository (configs/... from any directory)."""
    if os.path.isabs(path) or os.path.isfile(path):
        return path
    in_repo = os.path.join(REPO, path)
    return in_repo if os.path.isfile(in_repo) else path


def _known_keys(node: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            keys += _known_keys(v, f"{prefix}{k}.")
    return keys


def _check_key(config: ml_collections.ConfigDict, key: str, entry: str, path: str) -> None:
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            near = difflib.get_close_matches(key, _known_keys(config), n=1)
            raise ValueError(f"downstream.gan_overrides entry {entry!r}: unknown key {key!r} in the GAN config "
                             f"{path}" + (f"; did you mean {near[0]!r}?" if near else "."))
        node = node[part]


def _parse(path: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """The config file at `path` with `--gan.key=value` flags for `overrides` (ml_collections parsing)."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["downstream gan_config", f"--gan={path}"] + [f"--gan.{o}" for o in overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("gan", None, "GAN config of the downstream study.", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    sys.modules.pop("config_config", None)  # ml_collections caches the last file loaded under this name
    fv(argv)
    config = fv.gan
    config.keys()  # a config that failed to load raises only when first used
    return config


def load_gan_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """`downstream.gan_config` with `downstream.gan_overrides` applied; ValueError naming the bad entry."""
    from absl import flags

    file = resolve(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"downstream.gan_config={path!r}: no such file (looked in {os.getcwd()} and "
                                f"{REPO}); give a GAN config such as configs/acgan_liver.py, or '' for no GAN.")
    entries = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"downstream.gan_overrides entry {item!r} is not 'key=value' (e.g. 'train.steps=200').")
        entries.append((key.strip(), value.strip(), item))
    try:
        base = _parse(file, [])
    except Exception as e:  # the file fails to import or has no get_config()
        raise ValueError(f"downstream.gan_config={path!r} could not be loaded: {e}") from None
    for key, _, item in entries:
        _check_key(base, key, item, path)
    try:
        return _parse(file, [f"{key}={value}" for key, value, _ in entries])
    except flags.IllegalFlagValueError as e:
        raise ValueError(f"downstream.gan_overrides: {e} (GAN config {path}).") from None


def check_compatible(gan: ml_collections.ConfigDict, real: labeled.LabeledSet, path: str) -> None:
    """The GAN must be a latent GAN at `real`'s image shape: class-conditional over `real`'s (source)
    classes, or unconditional with `train.per_class` (one GAN per class)."""
    where = f"downstream.gan_config={path!r}"
    if real.multi_label:
        raise ValueError(f"{where}: the real set ({real.source}) is multi-label; fold GANs are class-conditional. "
                         "Set downstream.gan_config='' and give --synthetic (e.g. an LCO archive per fold).")
    name = gan.get("trainer")
    latent = name in trainers.TRAINERS and "z" in trainers.family(name).latent_spaces  # what `synthetic.load` samples
    if not latent:
        raise ValueError(f"{where} has trainer {name!r}; fold GANs need a latent GAN of "
                         f"{trainers.with_latent_space('z')}: one class-conditional model, or one unconditional "
                         "model per class (train.per_class=True).")
    if per_class(gan):
        try:
            trainers.get("per_class").check_config(gan)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        _check_shape(gan, real, where)
        return
    k = int(gan.model.get("num_classes", 0))
    if k != real.num_classes:
        raise ValueError(f"{where} has model.num_classes={k} but the real set ({real.source}) has {real.num_classes} "
                         f"classes {list(real.class_names)} (before config.data.relabel); add 'model.num_classes="
                         f"{real.num_classes}' to downstream.gan_overrides, pick a conditional GAN config, or train "
                         "one unconditional GAN per class ('train.per_class=True').")
    _check_shape(gan, real, where)


def per_class(gan: ml_collections.ConfigDict) -> bool:
    """Whether `gan` trains one unconditional GAN per class (`train.per_class`, the liver paper's design)."""
    return bool(gan.get("train", {}).get("per_class", False))


def run_size(gan: ml_collections.ConfigDict, data: labeled.LabeledSet) -> int:
    """Training images one GAN of `gan` sees on `data`: all of them, or the smallest class's with
    `train.per_class` (what the batch must fit, `run_config`)."""
    return int(data.class_counts().min()) if per_class(gan) else len(data)


def _check_shape(gan: ml_collections.ConfigDict, real: labeled.LabeledSet, where: str) -> None:
    shape = (gan.data.image_size, gan.data.image_size, gan.data.get("channels", 1))
    if tuple(shape) != real.image_shape:
        raise ValueError(f"{where} makes {tuple(shape)} (H, W, C) images but the real images ({real.source}) are "
                         f"{real.image_shape}; add 'data.image_size={real.image_shape[0]}' to downstream.gan_overrides "
                         "(or change the classifier's config.data.image_size).")


def fingerprint(config: ml_collections.ConfigDict, indices: np.ndarray) -> str:
    """sha256 prefix of the GAN config (JSON, sorted keys) and the training indices."""
    text = config.to_json_best_effort(sort_keys=True) + json.dumps(np.asarray(indices).tolist())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_config(gan: ml_collections.ConfigDict, seed: int, num_examples: int, what: str) -> ml_collections.ConfigDict:
    """A copy for one fold GAN: `seed`, quiet, and a batch that fits `num_examples` (small real fractions;
    one GAN per class: pass the smallest class's count)."""
    c = copy.deepcopy(gan)
    multiple = sharding.make_mesh(c.get("mesh")).shape[sharding.DATA_AXIS]
    group = int(c.model.get("mbstd_group_size", 0) or 1)
    multiple = multiple * group // math.gcd(multiple, group)
    batch = learning_curve.fitted_batch(int(c.train.batch_size), num_examples, multiple, what)
    with c.unlocked():
        c.seed = int(seed)
        c.train.quiet = True  # the study draws one progress bar over every run
        if batch != c.train.batch_size:
            log.warning("%s: %d training images < the GAN's train.batch_size=%d; using batch %d.", what, num_examples,
                        c.train.batch_size, batch)
            c.train.batch_size = batch
    return c


def workdir_for(out_dir: str, fraction: float, seed: int, fold: int) -> str:
    """OUT/gans/frac{r}/seed{s}/fold{f} (r as %g: frac0.1, frac1)."""
    return os.path.join(out_dir, "gans", f"frac{fraction:g}", f"seed{seed}", f"fold{fold}")


def read_record(workdir: str) -> dict | None:
    """WORKDIR/fold_gan.json (see the module docstring), or None."""
    return atomic_io.read_json(os.path.join(workdir, RECORD))


def _write_record(workdir: str, record: dict) -> None:
    atomic_io.write_json(os.path.join(workdir, RECORD), record, indent=1)


def train(config: ml_collections.ConfigDict, workdir: str, data: labeled.LabeledSet, indices: np.ndarray,
          meta: dict) -> dict:
    """Trains (or reuses a finished, or resumes an interrupted) fold GAN on `data` (the real images at
    `indices` [M] of the study's real set, source classes); returns its RECORD plus 'reused'.

    config: the `run_config` of this run; meta: what else to record (fraction, seed, fold, the held-out
    fold's `test_indices`, ...); a `test_indices` entry that meets `indices` is refused (a leak).
    """
    indices = np.asarray(indices, np.int64)
    if len(indices) != len(data):
        raise ValueError(f"{len(indices)} indices for {len(data)} training images of {workdir}.")
    leaked = np.intersect1d(indices, np.asarray(meta.get("test_indices", []), np.int64))
    if len(leaked):
        raise ValueError(f"{workdir}: {len(leaked)} training images of this fold GAN are in its test fold "
                         f"(indices {leaked[:8].tolist()}); fold GANs must train on the training part only.")
    fp = fingerprint(config, indices)
    record = read_record(workdir)
    steps = int(config.train.steps)
    if record is not None and record.get("fingerprint") != fp:
        raise ValueError(f"{workdir} holds a GAN trained with another GAN config or training set (fingerprint "
                         f"{record.get('fingerprint')} != {fp}): downstream.gan_config, downstream.gan_overrides, "
                         "--gan-steps or the real set changed. Use a new --out, or delete that workdir to retrain it.")
    if record is not None and record.get("finished") and (per_class(config) or checkpointing.latest_step(workdir) == steps):
        log.info("Reusing the finished GAN in %s (%d steps, %d training images).", workdir, steps, len(indices))
        return {**record, "reused": True}
    record = {**meta, "train_indices": indices.tolist(), "num_images": len(indices),
              "class_counts": data.class_counts().tolist(), "class_names": list(data.class_names),
              "trainer": config.trainer, "steps": steps, "batch_size": int(config.train.batch_size),
              "fingerprint": fp, "finished": False, "seconds": None}
    config_validation.validate(config, workdir, image_sizes=trainers.image_sizes)
    _write_record(workdir, record)  # claims the workdir for this config before training starts
    log.info("Training %s for %d steps on %d real images %s in %s.", config.trainer, steps, len(indices),
             dict(zip(data.class_names, data.class_counts().tolist())), workdir)
    t = time.perf_counter()
    source = pipeline.ArraySource(np.asarray(data.images, np.float32), data.labels())
    if per_class(config):  # one unconditional GAN per class, drawn like a conditional one (never the test fold)
        record_classes = lambda: atomic_io.write_json(  # what sampling names the per-class GANs by
            os.path.join(workdir, datasets.WORKDIR_RECORD), {"source": data.source, "multi_label": False,
                                                             "class_names": list(data.class_names)}, indent=1)
        trainers.get("per_class").fit(config, workdir, source, data.labels(), data.class_names, record=record_classes)
    else:
        common.fit(config, workdir, trainers.family(config.trainer), data=(source, None))  # never the test fold
    record.update(finished=True, seconds=time.perf_counter() - t)
    _write_record(workdir, record)
    return {**record, "reused": False}
