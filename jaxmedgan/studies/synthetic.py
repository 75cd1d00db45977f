"""Synthetic image sets for downstream studies, from any of three sources.

* a GAN workdir (`config.json` + `checkpoints/`): images drawn on the fly per class from the
  latest checkpoint through `jaxmedgan.sampling` (class-conditional models only);
* a `samples.npz` (a file, or a directory holding one, as `jaxmedgan sample` writes): `images`
  uint8 [N,H,W,C] (or float in [-1, 1]) and `labels` int [N] (or, for a multi-label real set,
  multi-hot 0/1 [N,K]); an optional `class_names` array maps label ids (single-label) or label
  columns (multi-label) to names, else they follow the real set's class order. A latent class
  optimisation archive (`jaxmedgan sample --labels ...`, `sampling.sample_labelled_to_dir`: labels
  f32 [M,K] requested multi-hot, class_names = the LCO classifier's findings, success bool [M])
  is read as it is: its columns are picked and ordered by name to the real set's findings (it
  may name more findings than the real set uses; those are dropped), and with
  `success_only=True` the samples the classifier disagreed with are left out;
* an exported dataset folder: `labels.csv` with columns `file,label` (class names; `|`-separated
  findings for multi-label, empty = no finding) and the images, `file` relative to the folder or
  to `images/`; the layout `jaxmedgan export` writes (columns `image,mask,label,label_name`) is
  read too, by `label_name`, and an integer `label` is taken as a class id in the real set's
  order. An LCO archive's `labels.csv` (file,label,target,p_*,success) reads the same way.

Every image must have the real set's (H, W, C); labels must name the real set's classes.
Subsampling (`per_class`, config.downstream.synthetic_per_class): single-label, at most
`per_class` images of each class; multi-label, at most `per_class` images of each distinct label
vector (each requested finding combination of an LCO archive is one "class"; the all-zero vector
too), so a `per_class` >= the archive's `--num` uses every given image. Seeded choice.
"""
from __future__ import annotations

import csv
import logging
import os

import numpy as np

from jaxmedgan import checkpointing, sampling, trainers
from jaxmedgan.data import labeled, readers
from jaxmedgan.trainers import per_class as one_gan_per_class

log = logging.getLogger(__name__)


def kind(path: str) -> str:
    """'workdir' | 'npz' | 'folder' for a synthetic source path; a clear error otherwise."""
    if os.path.isfile(path) and path.endswith(".npz"):
        return "npz"
    if os.path.isdir(path):
        trained = (os.path.isdir(os.path.join(path, "checkpoints"))  # one GAN, or one per class (its index)
                   or os.path.isfile(os.path.join(path, one_gan_per_class.INDEX_FILE)))
        if os.path.isfile(os.path.join(path, "config.json")) and trained:
            return "workdir"
        if os.path.isfile(os.path.join(path, "samples.npz")):
            return "npz"
        if os.path.isfile(os.path.join(path, "labels.csv")):
            return "folder"
    raise FileNotFoundError(
        f"Synthetic source {path!r} is none of: a GAN workdir (config.json + checkpoints/ or {one_gan_per_class.INDEX_FILE}), a samples.npz "
        "(or a directory holding one), an exported folder (labels.csv with file,label + images/*.png).")


def _check_shape(found: tuple, real: labeled.LabeledSet, where: str) -> None:
    if tuple(found) != real.image_shape:
        raise ValueError(f"Synthetic images in {where} are {tuple(found)} (H, W, C) but the real images "
                         f"({real.source}) are {real.image_shape}; generate them at the real set's size.")


def _to_float(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32)
    raise ValueError(f"Synthetic images in {where} have dtype {images.dtype}; expected uint8 or float in [-1, 1].")


def _multi_hot(labels: np.ndarray, names: tuple[str, ...] | None, real: labeled.LabeledSet,
               where: str) -> np.ndarray:
    """Multi-hot f32 [N,K] in the real set's finding order from labels [N,K'] (columns `names`)."""
    k = real.num_classes
    if names is None:
        if labels.ndim != 2 or labels.shape[1] != k:
            raise ValueError(f"{where}: multi-label 'labels' must be multi-hot [N, K={k}] over "
                             f"{list(real.class_names)} (or carry 'class_names' naming its columns); got "
                             f"{labels.shape}.")
        names = real.class_names
    if labels.ndim != 2 or labels.shape[1] != len(names):
        raise ValueError(f"{where}: multi-label 'labels' must be multi-hot [N, {len(names)}] over its "
                         f"class_names {list(names)}; got {labels.shape}.")
    missing = [n for n in real.class_names if n not in names]
    if missing:
        raise ValueError(f"{where}: findings {missing} of the real set are not among the synthetic labels' "
                         f"findings {list(names)}.")
    if labels.size and not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"{where}: multi-label 'labels' must be 0/1 multi-hot; found values "
                         f"{np.unique(labels)[:6].tolist()} (probabilities? threshold them first).")
    dropped = [n for n in names if n not in real.class_names]
    if dropped:
        log.info("%s: dropping synthetic finding column(s) %s the real set does not use.", where, dropped)
    return labels[:, [names.index(n) for n in real.class_names]].astype(np.float32)


def _from_npz(path: str, real: labeled.LabeledSet, success_only: bool = False) -> labeled.LabeledSet:
    file = path if path.endswith(".npz") else os.path.join(path, "samples.npz")
    with np.load(file, allow_pickle=False) as z:
        if "images" not in z or "labels" not in z:
            raise ValueError(f"{file}: expected arrays 'images' [N,H,W,C] and 'labels'; found {sorted(z.files)}.")
        images, labels = z["images"], z["labels"]
        names = tuple(str(n) for n in z["class_names"]) if "class_names" in z else None
        success = np.asarray(z["success"], bool) if "success" in z else None
    if images.ndim != 4:
        raise ValueError(f"{file}: 'images' must be [N,H,W,C]; got shape {images.shape}.")
    _check_shape(images.shape[1:], real, file)
    k = real.num_classes
    if len(labels) != len(images):
        raise ValueError(f"{file}: {len(labels)} labels for {len(images)} images.")
    if real.multi_label:
        targets = _multi_hot(labels, names, real, file)
    else:
        if labels.shape != (len(images),):
            raise ValueError(f"{file}: 'labels' must be class ids [N={len(images)}]; got {labels.shape}.")
        if len(labels) and labels.min() < 0:
            raise ValueError(f"{file}: labels include {int(labels.min())} (an unconditional GAN's samples); "
                             "downstream studies need class-conditional samples.")
        if names is not None:
            unknown = sorted(set(names) - set(real.class_names))
            if unknown:
                raise ValueError(f"{file}: unknown class name(s) {unknown}; expected names from "
                                 f"{list(real.class_names)}.")
            if len(labels) and labels.max() >= len(names):
                raise ValueError(f"{file}: label {int(labels.max())} has no entry in class_names {list(names)}.")
            labels = np.asarray([real.class_names.index(n) for n in names], np.int64)[labels] if len(labels) else labels
        elif len(labels) and labels.max() >= k:
            raise ValueError(f"{file}: label {int(labels.max())} is out of range for the real set's {k} classes "
                             f"{list(real.class_names)}.")
        targets = labels.astype(np.int32)
    data = labeled.LabeledSet(_to_float(images, file), targets, real.class_names, real.multi_label, source=file)
    return _keep_successful(data, success, success_only, file)


def _keep_successful(data: labeled.LabeledSet, success: np.ndarray | None, success_only: bool,
                     where: str) -> labeled.LabeledSet:
    """LCO archives flag samples the classifier disagreed with; keep them, or only the successes."""
    if success is None:
        if success_only:
            log.warning("%s has no LCO 'success' flags: synthetic_success_only keeps every image.", where)
        return data
    if success.shape != (len(data),):
        raise ValueError(f"{where}: 'success' must be [N={len(data)}]; got {success.shape}.")
    log.info("%s: LCO success on %d of %d samples; %s.", where, int(success.sum()), len(data),
             "keeping only those" if success_only else "keeping all (synthetic_success_only=False)")
    return data.subset(np.flatnonzero(success)) if success_only else data


def _folder_label(row: dict, real: labeled.LabeledSet, where: str) -> int | np.ndarray:
    """A folder row's target: `label_name` (jaxmedgan export), else `label` as a name or a class id."""
    name = (row.get("label_name") or "").strip()
    value = name or (row.get("label") or "").strip()
    if not name and not real.multi_label and value.lstrip("-").isdigit():
        k = int(value)
        if not 0 <= k < real.num_classes:
            raise ValueError(f"{where}: class id {k} is out of range for the real set's classes "
                             f"{list(real.class_names)}.")
        return k
    return labeled.parse_label(value, real.class_names, real.multi_label, where)


def _from_folder(path: str, real: labeled.LabeledSet, success_only: bool = False) -> labeled.LabeledSet:
    csv_path = os.path.join(path, "labels.csv")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        file_key = "file" if "file" in columns else "image"
        if file_key not in columns or "label" not in columns:
            raise ValueError(f"{csv_path}: found columns {reader.fieldnames}; expected a header row file,label "
                             "(or jaxmedgan export's image,mask,label,label_name).")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{csv_path}: no rows; expected one row per synthetic image.")
    images, targets, success = [], [], []
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path} row {i}"
        targets.append(_folder_label(row, real, where))
        candidates = [os.path.join(path, row[file_key]), os.path.join(path, "images", row[file_key])]
        file = next((c for c in candidates if os.path.isfile(c)), None)
        if file is None:
            raise FileNotFoundError(f"{where}: image {row[file_key]!r} not found in {path} or {path}/images.")
        image = readers.read_image(file, channels=real.image_shape[-1])
        _check_shape(image.shape, real, file)
        images.append(image)
        if "success" in columns:
            success.append((row["success"] or "").strip() in ("1", "True", "true"))
    t = np.stack(targets).astype(np.float32) if real.multi_label else np.asarray(targets, np.int32)
    data = labeled.LabeledSet(np.stack(images), t, real.class_names, real.multi_label, source=csv_path)
    return _keep_successful(data, np.asarray(success, bool) if "success" in columns else None, success_only,
                            csv_path)


def _from_workdir(path: str, real: labeled.LabeledSet, per_class: int, seed: int) -> labeled.LabeledSet:
    config = checkpointing.read_config(path)
    names = sampling.class_names(path, config)  # a conditional GAN's classes, or one GAN per class
    one_per_class = trainers.family(config.trainer).generate_labelled is not None  # one GAN per class
    num_classes = len(names) if one_per_class else config.model.get("num_classes", 0)
    if real.multi_label or not num_classes:
        raise ValueError(f"GAN workdir {path!r} has model.num_classes={num_classes}: on-the-fly sampling "
                         "needs a class-conditional GAN (or one GAN per class) over the real set's classes "
                         "(multi-label sets: export the samples to a labels.csv folder or samples.npz).")
    if num_classes != real.num_classes:
        raise ValueError(f"GAN workdir {path!r} has {num_classes} classes but the real set has "
                         f"{real.num_classes} {list(real.class_names)}.")
    _check_shape((config.data.image_size, config.data.image_size, config.data.channels), real,
                 f"GAN workdir {path} (config.data)")
    imgs, labels = [], []
    for c in range(num_classes):
        x, y, step = sampling.generate_from_workdir(path, per_class, c, seed + c)
        imgs.append(x)
        labels.append(y)
    log.info("Drew %d synthetic images per class from %s (checkpoint step %s).", per_class, path, step)
    return labeled.LabeledSet(_to_float(np.concatenate(imgs), path), np.concatenate(labels).astype(np.int32),
                              real.class_names, source=f"{path} (step {step})")


def _subsample(data: labeled.LabeledSet, per_class: int, seed: int) -> labeled.LabeledSet:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x53594E]))  # "SYN"
    if data.multi_label:  # a "class" is a distinct label vector (an LCO archive's requested target)
        _, vector = np.unique(data.targets > 0.5, axis=0, return_inverse=True)
        vector = vector.reshape(-1)
        keep = [np.sort(rng.permutation(np.flatnonzero(vector == v))[:per_class]) for v in range(vector.max() + 1)]
        return data.subset(np.sort(np.concatenate(keep))) if keep else data
    keep = []
    for c, name in enumerate(data.class_names):
        idx = np.flatnonzero(data.targets == c)
        if len(idx) == 0:
            raise ValueError(f"Synthetic set {data.source} has no images of class {name!r}; expected "
                             f"{per_class} per class of {list(data.class_names)}.")
        if len(idx) < per_class:
            log.warning("Synthetic set %s has only %d images of class %r (asked for %d); using them all.",
                        data.source, len(idx), name, per_class)
        keep.append(np.sort(rng.permutation(idx)[:per_class]))
    return data.subset(np.concatenate(keep))


def load(path: str, real: labeled.LabeledSet, per_class: int, seed: int = 0, *,
         success_only: bool = False) -> labeled.LabeledSet:
    """Synthetic set from `path` matching `real`'s classes and image shape, <= per_class per class
    (multi-label: per distinct label vector); `success_only` drops failed LCO samples."""
    if per_class < 1:
        raise ValueError(f"config.downstream.synthetic_per_class must be >= 1, got {per_class}.")
    source = kind(path)
    if source == "workdir":
        data = _from_workdir(path, real, per_class, seed)
    elif source == "npz":
        data = _from_npz(path, real, success_only)
    else:
        data = _from_folder(path, real, success_only)
    if len(data) == 0:
        raise ValueError(f"Synthetic source {path!r} has no images"
                         f"{' the LCO classifier agreed with (synthetic_success_only=True)' if success_only else ''}.")
    return _subsample(data, per_class, seed)


def label_vectors(data: labeled.LabeledSet) -> dict[str, int]:
    """{'cardiomegaly+effusion': count, ..., 'none': count}: images per distinct multi-hot vector."""
    out: dict[str, int] = {}
    for row in data.targets > 0.5:
        name = "+".join(n for n, on in zip(data.class_names, row) if on) or "none"
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))
