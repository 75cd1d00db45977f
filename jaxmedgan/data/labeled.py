"""Labelled image sets for classifiers: phantoms, TFDS sources and `labels.csv` files, in memory.

A `LabeledSet` holds images float32 [N,H,W,C] in [-1, 1] with either single-label targets
(int32 [N], one class per image) or multi-label targets (float32 multi-hot [N,K], e.g. chest
findings; an all-zero row = no finding), plus a `groups` id per image (patient): examples of one
group are never split across cross-validation folds. Multi-label sets may carry a `mask` (f32
[N,K], 0 = that finding's label is unknown for that image, e.g. CheXpert's uncertain labels under
U-Ignore; the target there is 0 and a loss should skip it).

Chest sources (multi-label): 'phantom-chest' (`chest_phantoms`, generated in memory), 'chexpert'
and 'chestxray14' (`chest`, read once into a TFDS copy at `image_size`); `config.data.findings`
picks and orders the findings, `config.data.uncertainty` is CheXpert's u_ones|u_zeros|u_ignore.

labels CSV (`read_labels_csv`): a header row with columns `file,label` and optionally `group`.
`file` is relative to the CSV's directory (or absolute); `label` is a class name, or for
multi-label tasks `|`-separated finding names (empty = no finding). An unknown name is an error
naming the file, row and the expected names.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
from typing import Sequence

import ml_collections
import numpy as np

from jaxmedgan.data import chest, chest_phantoms, phantoms, readers

MULTI_LABEL_SEP = "|"


@dataclasses.dataclass(frozen=True)
class LabeledSet:
    """images f32 [N,H,W,C] in [-1,1]; targets i32 [N] or multi-hot f32 [N,K]; groups i64 [N]."""

    images: np.ndarray
    targets: np.ndarray
    class_names: tuple[str, ...]
    multi_label: bool = False
    groups: np.ndarray | None = None  # None = every image its own group (one lesion per image)
    source: str = ""  # where the set came from, for error messages
    mask: np.ndarray | None = None  # f32 [N,K] multi-label only: 0 = label unknown (loss skips it)

    def __post_init__(self):
        n, k = len(self.images), len(self.class_names)
        where = f" ({self.source})" if self.source else ""
        if self.images.ndim != 4:
            raise ValueError(f"Images{where} must be [N,H,W,C]; got shape {self.images.shape}.")
        expected = (n, k) if self.multi_label else (n,)
        if self.targets.shape != expected:
            raise ValueError(f"Targets{where} must have shape {expected} for {n} images and {k} "
                             f"{'findings' if self.multi_label else 'classes'}; got {self.targets.shape}.")
        if self.groups is not None and self.groups.shape != (n,):
            raise ValueError(f"Group ids{where} must have shape {(n,)}; got {self.groups.shape}.")
        if self.mask is not None and (not self.multi_label or self.mask.shape != (n, k)):
            raise ValueError(f"Label mask{where} must be [N,K] = {(n, k)} on a multi-label set; got "
                             f"{self.mask.shape} (multi_label={self.multi_label}).")
        if not self.multi_label and n and not (0 <= self.targets.min() and self.targets.max() < k):
            raise ValueError(f"Labels{where} must be in [0, {k}); got range "
                             f"[{self.targets.min()}, {self.targets.max()}].")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def group_ids(self) -> np.ndarray:
        """int64 [N]: the given groups, or 0..N-1 when every image is its own group."""
        return np.arange(len(self), dtype=np.int64) if self.groups is None else np.asarray(self.groups, np.int64)

    def one_hot(self) -> np.ndarray:
        """float32 [N,K]: multi-hot targets, or one-hot of the single labels."""
        if self.multi_label:
            return self.targets.astype(np.float32)
        return np.eye(self.num_classes, dtype=np.float32)[self.targets]

    def labels(self) -> np.ndarray:
        """int32 [N]: the class (single-label) or 0 (multi-label; targets carry the findings)."""
        return self.targets.astype(np.int32) if not self.multi_label else np.zeros(len(self), np.int32)

    def subset(self, index: np.ndarray) -> "LabeledSet":
        """The examples at `index` (int [M] or bool [N])."""
        groups = None if self.groups is None else self.groups[index]
        mask = None if self.mask is None else self.mask[index]
        return dataclasses.replace(self, images=self.images[index], targets=self.targets[index], groups=groups,
                                   mask=mask)

    def target_mask(self) -> np.ndarray:
        """float32 [N,K]: the label mask, ones where none is given (multi-label only)."""
        if not self.multi_label:
            raise ValueError(f"target_mask applies to multi-label sets; {self.source or 'this set'} is single-label.")
        return np.ones(self.targets.shape, np.float32) if self.mask is None else self.mask.astype(np.float32)

    def class_counts(self) -> np.ndarray:
        """int64 [K]: images per class (single-label) or positives per finding (multi-label)."""
        if self.multi_label:
            return (self.targets > 0.5).sum(0).astype(np.int64)
        return np.bincount(self.targets, minlength=self.num_classes).astype(np.int64)


def concat(a: LabeledSet, b: LabeledSet) -> LabeledSet:
    """a then b (same classes, task type and image shape); b's groups are renumbered after a's."""
    if a.class_names != b.class_names or a.multi_label != b.multi_label:
        raise ValueError(f"Cannot combine {b.source or 'set'} (classes {b.class_names}) with "
                         f"{a.source or 'set'} (classes {a.class_names}).")
    if a.image_shape != b.image_shape:
        raise ValueError(f"Cannot combine {b.source or 'set'} images {b.image_shape} (H, W, C) with "
                         f"{a.source or 'set'} images {a.image_shape}.")
    ga = a.group_ids()
    gb = b.group_ids() + (ga.max() + 1 if len(ga) else 0)
    mask = None
    if a.mask is not None or b.mask is not None:
        mask = np.concatenate([a.target_mask(), b.target_mask()])
    return LabeledSet(np.concatenate([a.images, b.images]), np.concatenate([a.targets, b.targets]),
                      a.class_names, a.multi_label, np.concatenate([ga, gb]), a.source, mask)


def parse_label(value: str, class_names: Sequence[str], multi_label: bool, where: str) -> int | np.ndarray:
    """A CSV label cell -> class index, or multi-hot f32 [K] for `|`-separated finding names."""
    index = {name: i for i, name in enumerate(class_names)}
    names = [v.strip() for v in value.split(MULTI_LABEL_SEP)] if multi_label else [value.strip()]
    names = [v for v in names if v] if multi_label else names
    for name in names:
        if name not in index:
            raise ValueError(f"{where}: unknown {'finding' if multi_label else 'class'} name {name!r}; "
                             f"expected one of {list(class_names)}.")
    if not multi_label:
        return index[names[0]]
    hot = np.zeros(len(class_names), np.float32)
    hot[[index[n] for n in names]] = 1.0
    return hot


def read_labels_csv(path: str, class_names: Sequence[str], *, multi_label: bool = False,
                    image_size: int | None = None, channels: int = 1,
                    window: tuple[float, float] | None = None) -> LabeledSet:
    """Reads a `file,label[,group]` CSV and its images (relative to the CSV's directory)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Labels file {path!r} does not exist; expected a CSV with columns file,label[,group].")
    if not class_names:
        raise ValueError(f"Reading {path}: no class names given (config.data.class_names).")
    root = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}, "
                             "expected a header row file,label[,group].")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no rows; expected one row per image.")
    has_group = "group" in (reader.fieldnames or ())
    images, targets, groups, group_index = [], [], [], {}
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{path} row {i}"
        if not row["file"]:
            raise ValueError(f"{where}: empty 'file'.")
        targets.append(parse_label(row["label"] or "", class_names, multi_label, where))
        file = row["file"] if os.path.isabs(row["file"]) else os.path.join(root, row["file"])
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{where}: image {file!r} does not exist.")
        images.append(readers.read_image(file, image_size=image_size, channels=channels, window=window))
        if has_group:
            groups.append(group_index.setdefault(row["group"], len(group_index)))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{path}: images have different shapes {sorted(shapes)}; set config.data.image_size.")
    target_arr = np.stack(targets).astype(np.float32) if multi_label else np.asarray(targets, np.int32)
    return LabeledSet(np.stack(images), target_arr, tuple(class_names), multi_label,
                      np.asarray(groups, np.int64) if has_group else None, source=path)


def _quantise(images: np.ndarray) -> np.ndarray:
    """The uint8 round trip datasets stored on disk (and GAN samples) go through: f32 in [-1, 1]."""
    u8 = np.clip(np.round((images + 1.0) * 127.5), 0, 255)
    return (u8 / 127.5 - 1.0).astype(np.float32)


def has_split(config: ml_collections.ConfigDict, split: str) -> bool:
    """Whether `config.data` names a `split` ('train' | 'test') set (TFDS sources are built to check)."""
    d = config.data
    if d.source in ("phantom-liver", "phantom-chest") or split == "train":
        return True
    if d.source == "labels-csv":
        return bool(d.get("test_labels_csv", ""))
    from jaxmedgan.data import datasets, tfds_builders

    return split in tfds_builders.split_names(datasets.prepare(config), d.source)


def load(config: ml_collections.ConfigDict, split: str = "train", *, apply_relabel: bool = True) -> LabeledSet:
    """The `split` ('train' | 'test') of the labelled set named by `config.data` (then `relabel`).

    source 'phantom-liver': `phantoms.generate` with `config.data.counts` (train; default the
    study's 53/64/65 lesions) or `config.data.test_counts` (test), quantised like the TFDS copy.
    source 'phantom-chest': `chest_phantoms.generate` with `config.data.num_train` / `num_test`
    images (defaults NUM_TRAIN / NUM_TEST; TRAIN_SEED / TEST_SEED) and `config.data.prevalence`,
    quantised like the TFDS copy; multi-label over `config.data.findings` (default all five).
    source 'labels-csv': `config.data.labels_csv` (train) / `config.data.test_labels_csv` (test).
    Any other source: the TFDS dataset `jaxmedgan.data.datasets` builds for it; chest sources
    ('chexpert', 'chestxray14') come back multi-label with patient groups and U-Ignore masks.
    """
    data = _load(config, split)
    if data.mask is not None:
        logging.warning("%s: %d labels are uncertain and masked (U-Ignore); a consumer that does not read "
                        "LabeledSet.mask treats them as negatives (U-Zeros).", data.source, int((data.mask == 0).sum()))
    return relabel(data, config.data.get("relabel", "")) if apply_relabel else data


def _load(config: ml_collections.ConfigDict, split: str) -> LabeledSet:
    d = config.data
    source = d.source
    if source == "phantom-liver":
        counts = tuple(d.get("counts", ()) or phantoms.TRAIN_COUNTS) if split == "train" else \
            tuple(d.get("test_counts", ()) or phantoms.TEST_COUNTS)
        seed = phantoms.TRAIN_SEED if split == "train" else phantoms.TEST_SEED
        images, labels = phantoms.generate(counts, seed, d.image_size)
        return LabeledSet(_quantise(images), labels, phantoms.CLASS_NAMES, source=f"phantom-liver {split}")
    if source == "phantom-chest":
        return _phantom_chest(d, split)
    if source == "labels-csv":
        key = "labels_csv" if split == "train" else "test_labels_csv"
        path = d.get(key, "")
        if not path:
            raise ValueError(f"config.data.source='labels-csv' needs config.data.{key} (a file,label[,group] CSV).")
        window = (d.window_center, d.window_width) if d.get("window_width", 0) > 0 else None
        return read_labels_csv(path, tuple(d.class_names), multi_label=bool(d.get("multi_label", False)),
                               image_size=d.image_size, channels=d.channels, window=window)
    from jaxmedgan.data import datasets, tfds_builders  # TFDS is heavy; import on use

    data_dir = datasets.prepare(config)
    if split not in tfds_builders.split_names(data_dir, source):
        raise ValueError(f"The {source!r} dataset in {data_dir} has no {split!r} split "
                         f"(has {tfds_builders.split_names(data_dir, source)}).")
    names = tfds_builders.class_names(data_dir, source)
    if not tfds_builders.is_multi_label(data_dir, source):
        images, labels = tfds_builders.load_arrays(data_dir, source, split)
        return LabeledSet(images, labels, names, source=f"{source} {split}")
    ex = tfds_builders.load_examples(data_dir, source, split)
    mask = ex["label_mask"].astype(np.float32) if "label_mask" in ex else None
    return LabeledSet(tfds_builders.to_model_range(ex["image"]), ex["label"].astype(np.float32), names,
                      multi_label=True, groups=ex["group"].astype(np.int64) if "group" in ex else None,
                      source=f"{source} {split}", mask=None if mask is None or mask.all() else mask)


def _phantom_chest(d: ml_collections.ConfigDict, split: str) -> LabeledSet:
    """The phantom-chest split in memory, as `tfds_builders.PhantomChest` stores it."""
    num = int(d.get("num_train", 0) or chest_phantoms.NUM_TRAIN) if split == "train" else \
        int(d.get("num_test", 0) or chest_phantoms.NUM_TEST)
    seed = chest_phantoms.TRAIN_SEED if split == "train" else chest_phantoms.TEST_SEED
    prevalence = tuple(d.get("prevalence", ()) or chest_phantoms.DEFAULT_PREVALENCE)
    findings = tuple(d.get("findings", ()) or chest_phantoms.FINDING_NAMES)
    unknown = [f for f in findings if f not in chest_phantoms.FINDING_NAMES]
    if unknown:
        raise ValueError(f"config.data.findings has unknown phantom-chest finding(s) {unknown}; expected "
                         f"names from {list(chest_phantoms.FINDING_NAMES)}.")
    images, targets = chest_phantoms.generate(num, seed, d.image_size, prevalence)
    columns = [chest_phantoms.FINDING_NAMES.index(f) for f in findings]
    return LabeledSet(_quantise(images), targets[:, columns], findings, multi_label=True,
                      source=f"phantom-chest {split}")


def load_chest(kind: str, root: str, split: str = "train", *, findings: Sequence[str] | None = None,
               uncertainty: str = "u_ones", frontal_only: bool = False, image_size: int = 64, channels: int = 1,
               holdout_fraction: float = 0.0, seed: int = 0) -> LabeledSet:
    """The `split` of a CheXpert / ChestX-ray14 root (`chest`) as a multi-label `LabeledSet`, read
    directly (the TFDS copy that `load` reads holds the same images and labels)."""
    splits = chest.index_splits(kind, root, findings=findings, uncertainty=uncertainty, frontal_only=frontal_only,
                                holdout_fraction=holdout_fraction, seed=seed)
    if split not in splits:
        raise ValueError(f"The {kind} root {root} has no {split!r} split (has {sorted(splits)}); "
                         f"expected {chest.LAYOUT[kind]}, or set holdout_fraction.")
    index = splits[split]
    return LabeledSet(chest.read_images(index, image_size, channels), index.targets, index.findings,
                      multi_label=True, groups=index.patients,
                      mask=None if index.mask.all() else index.mask, source=f"{index.source} ({split})")


def relabel(data: LabeledSet, spec: str) -> LabeledSet:
    """Merges classes, e.g. spec 'normal:normal;abnormal:fracture,lytic' (abnormal vs normal).

    Every new class lists the old class names it takes; every old class must be taken once.
    """
    if not spec:
        return data
    if data.multi_label:
        raise ValueError("config.data.relabel applies to single-label data only.")
    new_names, mapping = [], {}
    for part in spec.split(";"):
        if ":" not in part:
            raise ValueError(f"config.data.relabel={spec!r}: expected 'new:old1,old2;new2:old3'.")
        new, olds = part.split(":", 1)
        new_names.append(new.strip())
        for old in (o.strip() for o in olds.split(",") if o.strip()):
            if old not in data.class_names:
                raise ValueError(f"config.data.relabel: unknown class {old!r}; the data has {list(data.class_names)}.")
            if old in mapping:
                raise ValueError(f"config.data.relabel: class {old!r} is mapped twice.")
            mapping[old] = len(new_names) - 1
    missing = [c for c in data.class_names if c not in mapping]
    if missing:
        raise ValueError(f"config.data.relabel={spec!r} leaves classes {missing} unmapped.")
    table = np.asarray([mapping[c] for c in data.class_names], np.int32)
    return dataclasses.replace(data, targets=table[data.targets], class_names=tuple(new_names))
