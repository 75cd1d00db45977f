"""One unconditional GAN per class (the liver paper's design), sampled like a conditional model.

    jaxmedgan train --config configs/dcgan_liver.py --workdir W --config.train.per_class=True

trains, for every class c of the configured dataset, the config's unconditional family (gan with
`model.num_classes = 0`, pggan, stylegan2 unconditional) on the training images of class c only,
in `W/classes/<class tag>/` (a normal workdir: checkpoints, metrics, samples; rerunning the
command resumes each). The held-out images of class c feed that run's evaluation. `W/config.json`
records `trainer = "per_class"` and `family` (the family trained), `W/dataset.json` the dataset
(class names, windows) and `W/per_class.json` the class -> sub-workdir map. `sample`, `export`
and `evaluate` treat W as a class-conditional model (`generate_labelled`): `--class NAME|INDEX`
draws from that class's GAN, otherwise the N images are split evenly over the classes. `fit` does
the same on images already in memory (the downstream study's leak-free fold GANs,
`studies/fold_gans.py`).

Not under DP yet: the runs see disjoint subsets (parallel composition would make the dataset's
epsilon the per-run epsilon), but `export` / `privacy audit` read one run's accounting, so the
combination is refused rather than reported wrongly.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxmedgan import atomic_io, checkpointing, trainers
from jaxmedgan.trainers import common, drawing

INDEX_FILE = "per_class.json"


class ClassSubset(Sequence):
    """The elements of `source` at `indices` (a class's training images), random access."""

    def __init__(self, source, indices: np.ndarray):
        self._source, self._indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        return self._source[int(self._indices[i])]


def _labels(source) -> np.ndarray:
    """int [N] labels of a data source (read element by element; small medical sets)."""
    return np.asarray([int(np.asarray(source[i]["label"])) for i in range(len(source))], np.int64)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses what one unconditional GAN per class cannot train (ValueError naming the key)."""
    family = config.trainer
    if "z" not in trainers.family(family).latent_spaces:
        raise ValueError(f"config.train.per_class trains one unconditional GAN per class; config.trainer="
                         f"{family!r} is not a latent GAN family ({', '.join(trainers.with_latent_space('z'))}).")
    if config.privacy.get("enabled", False):
        raise ValueError("config.train.per_class with config.privacy.enabled is not supported yet (the "
                         "privacy report reads one run's accounting); train the classes as separate DP runs.")
    if config.model.get("num_classes", 0):
        raise ValueError(f"config.train.per_class trains unconditional GANs (one per class): set "
                         f"--config.model.num_classes=0 (got {config.model.num_classes}).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains one `config.trainer` GAN per class of config.data into workdir/classes/<tag>/; returns
    {class name: final state}."""
    from jaxmedgan.data import datasets, tfds_builders  # TFDS is heavy: imported when training starts

    check_config(config)
    data_dir = datasets.prepare(config)
    if tfds_builders.is_multi_label(data_dir, config.data.source):
        raise ValueError(f"config.train.per_class needs one class per image; {data_dir} is multi-label.")
    names = list(tfds_builders.class_names(data_dir, config.data.source))
    train, eval_arrays = datasets.load(config, data_dir)
    return fit(config, workdir, train, _labels(train), names, eval_arrays,
               record=lambda: datasets.record_in_workdir(workdir, data_dir), data_dir=data_dir)


def fit(config: ml_collections.ConfigDict, workdir: str, train, labels: np.ndarray, names: Sequence[str],
        eval_arrays: tuple[np.ndarray, np.ndarray] | None = None, *, record=None,
        data_dir: str | None = None) -> dict[str, Any]:
    """Trains one `config.trainer` GAN per class on the elements of `train` (a random-access source of
    {"image", "label"}) whose `labels` int [N] is k, class k named `names[k]`, into
    workdir/classes/<tag>/, then writes workdir/per_class.json; returns {class name: final state}.

    eval_arrays: held-out (images [M,H,W,C], labels int [M]) or None; record(): writes the workdir's
    dataset record (None: nothing to record, e.g. images held in memory by a study).
    """
    check_config(config)
    family = config.trainer
    labels = np.asarray(labels)
    trained = trainers.family(family)
    top = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
    top.trainer, top.family = "per_class", family
    checkpointing.write_config(workdir, top)
    if record is not None:
        record()
    index = {"family": family, "classes": list(names), "workdirs": {}}
    states = {}
    for k, name in enumerate(names):
        sub = os.path.join(workdir, "classes", drawing.file_tag(name, k))
        index["workdirs"][name] = os.path.relpath(sub, workdir)
        members = np.flatnonzero(labels == k)
        if len(members) == 0:
            raise ValueError(f"class {name!r} has no training images (per_class training in {workdir})")
        held = None
        if eval_arrays is not None:
            sel = np.asarray(eval_arrays[1]) == k
            held = (eval_arrays[0][sel], np.zeros(int(sel.sum()), np.int32))
        c = copy.deepcopy(config)
        c.train.per_class = False
        common.log.info("per_class: training %s on class %r (%d images) in %s", family, name, len(members), sub)
        states[name] = common.fit(c, sub, trained, data=(ClassSubset(train, members), held), data_dir=data_dir)
    atomic_io.write_json(os.path.join(workdir, INDEX_FILE), index, indent=1)
    return states


def read_index(workdir: str) -> dict:
    """W/per_class.json: {"family", "classes": [names], "workdirs": {name: relative path}}."""
    path = os.path.join(workdir, INDEX_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{workdir} has no {INDEX_FILE}: its per-class training has not finished; rerun it.")
    with open(path) as f:
        return json.load(f)


def generate_labelled(workdir: str, num: int, class_id: int | None, seed: int, *, as_float: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(images [num,H,W,C] uint8, or float32 in [-1,1] if as_float; labels int [num]; {class: step}).

    class_id: draw all `num` from that class's GAN; None: split evenly over the classes (the first
    num % K classes get one more), in class order.
    """
    index = read_index(workdir)
    names = index["classes"]
    counts = np.zeros(len(names), np.int64)
    if class_id is None:
        counts[:] = num // len(names)
        counts[: num % len(names)] += 1
    else:
        counts[class_id] = num
    out_images, out_labels, steps = [], [], {}
    for k, name in enumerate(names):
        if not counts[k]:
            continue
        sub = os.path.join(workdir, index["workdirs"][name])
        config, state, step = drawing.restore_state(sub)
        imgs, _ = drawing.generate(config, state, trainers.family(index["family"]), int(counts[k]), None,
                                    seed + 1000 * k, as_float=as_float)
        out_images.append(imgs)
        out_labels.append(np.full(int(counts[k]), k, np.int64))
        steps[name] = int(step)
    return np.concatenate(out_images), np.concatenate(out_labels), steps


# Training starts from the family's config with train.per_class=True (training.train); the workdir is drawn
# from like a class-conditional model.
FAMILY = common.Family(name="per_class", generate_labelled=generate_labelled)
