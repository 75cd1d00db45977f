"""User image sources read at native intensity: image folders, MedMNIST `.npz`, StyleGAN2-ADA folders.

Each reader returns `NativeRecords`: every image's native values (float32; see `intensity`), its
label, the window chosen for it and where that window came from, its split and its file, plus the
class names. `tfds_builders.NativeImages` writes them to disk once; windowing happens when the
data is read. Window choice per image (`resolve_window`): a per-class window, else the dataset
window, else the file's own (DICOM tags / min..max, or the PNG's bit depth).

Splits: a MedMNIST `.npz` keeps its own train / val / test; other sources get a stratified
'test' split of `holdout_fraction` drawn with `seed` (`holdout_split`).
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import logging
import os

import numpy as np
import tqdm

from jaxmedgan.data import intensity, readers, stylegan_dataset

log = logging.getLogger("jaxmedgan")

# MedMNIST .npz layout: <split>_images uint8 [N,H,W] or [N,H,W,3], <split>_labels int [N,1].
NPZ_SPLITS = {"train": "train", "val": "validation", "test": "test"}


@dataclasses.dataclass
class NativeRecords:
    """images f32 [N,H,W,C] native; labels i32 [N] (multi_label: multi-hot uint8 [N,K] over the
    finding names `class_names`); windows f32 [N,2] (center, width); inverts bool [N];
    window_sources: N names from intensity.WINDOW_SOURCES; splits: N split names; files: N origins."""

    images: np.ndarray
    labels: np.ndarray
    windows: np.ndarray
    inverts: np.ndarray
    window_sources: list[str]
    splits: np.ndarray
    files: list[str]
    class_names: tuple[str, ...]
    kind: str  # 'dicom' | '8-bit' | '16-bit' | 'nifti'
    multi_label: bool = False

    def summary(self) -> dict:
        """JSON-able record of the intensities: kind, per-class window, window-source counts
        (multi-label: every finding gets the window all images share, or None)."""
        labels = self.labels if not self.multi_label else np.zeros(len(self.labels), np.int32)
        names = self.class_names if not self.multi_label else ("all",)
        out = {"kind": self.kind, "storage": "native float32 + per-image window",
               **intensity.summarise(self.windows, self.inverts, self.window_sources, labels, names)}
        if self.multi_label:
            out["class_windows"] = {n: out["class_windows"]["all"] for n in self.class_names}
        out["split_sizes"] = {s: int((self.splits == s).sum()) for s in sorted(set(self.splits.tolist()))}
        return out


def holdout_split(labels: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Returns bool [N], True = test: per class round(fraction * n) of its n groups (default: each
    example its own group), >= 1 each side if n >= 2; a group (a volume, a patient) is never split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {fraction}")
    is_test = np.zeros(len(labels), bool)
    if fraction == 0.0:
        return is_test
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x484F4C44]))  # "HOLD"
    for c in np.unique(labels):
        ids = np.unique(groups[labels == c])
        n_test = int(round(fraction * len(ids)))
        n_test = min(max(n_test, 1), len(ids) - 1) if len(ids) >= 2 else 0
        is_test |= (labels == c) & np.isin(groups, rng.permutation(ids)[:n_test])
    return is_test


def resolve_window(own: intensity.Window, class_name: str, window: tuple[float, float] | None,
                   class_windows: dict[str, tuple[float, float]]) -> intensity.Window:
    """Per-class window, else the dataset window, else the file's own (keeps its MONOCHROME1 flag)."""
    if class_name in class_windows:
        c, w = class_windows[class_name]
        return intensity.Window(c, w, own.invert, "class")
    if window is not None:
        return intensity.Window(float(window[0]), float(window[1]), own.invert, "argument")
    return own


def _check_one_kind(kinds: list[str], files: list[str]) -> str:
    """All images must share one kind (DICOM, 8-bit, 16-bit): their native units differ otherwise."""
    first = {}
    for k, f in zip(kinds, files):
        first.setdefault(k, f)
    if len(first) > 1:
        raise ValueError("mixed modalities in one dataset: " + "; ".join(f"{f} is {k}" for k, f in first.items())
                         + ". Build one dataset per modality (their intensities are in different units).")
    return kinds[0]


def _announce_minmax(sources: list[str], files: list[str]) -> None:
    n = sum(s == "minmax" for s in sources)
    if n:
        example = files[sources.index("minmax")]
        log.warning("%d DICOM image(s) have no window tags and no --window was given (e.g. %s): each is "
                    "stretched over its own min..max, so their intensities are not comparable; recorded as "
                    "window source 'minmax'. Pass --window CENTER WIDTH to fix one window.", n, example)


def read_image_folder(root: str, *, image_size: int, channels: int = 1, resize: str = "none",
                      window: tuple[float, float] | None = None, class_windows=None,
                      classes: Sequence[str] | None = None, holdout_fraction: float = 0.0, seed: int = 0,
                      slice_axis: int = 2, progress: bool = True) -> NativeRecords:
    """DIR/<class>/* (PNG, JPEG, TIFF, DICOM by content, NIfTI volumes sliced along `slice_axis`)
    at native intensity; see module doc. The hold-out keeps each volume's slices together."""
    class_names, files = readers.list_image_folder(root, classes)
    cw = intensity.parse_class_windows(class_windows, class_names)
    hw = (image_size, image_size)
    images, windows, inverts, sources, kinds, paths, labels, groups = [], [], [], [], [], [], [], []
    for g, (path, label) in enumerate(tqdm.tqdm(files, desc=f"reading {os.path.basename(root.rstrip('/'))}",
                                                unit="file", disable=not progress, leave=False)):
        if readers.is_nifti(path):
            slices, index = readers.read_nifti_slices(path, axis=slice_axis, channels=channels)
            named = [(img, f"{path}[slice {i}]") for img, i in zip(slices, index)]
        else:
            named = [(readers.read_native(path, channels=channels), path)]
        for img, where in named:
            images.append(readers.resize_native(img.pixels, hw, resize, where))
            w = resolve_window(img.window, class_names[label], window, cw)
            windows.append((w.center, w.width))
            inverts.append(w.invert)
            sources.append(w.source)
            kinds.append(img.kind)
            paths.append(where)
            labels.append(label)
            groups.append(g)
    kind = _check_one_kind(kinds, paths)
    if kind != "nifti":
        _announce_minmax(sources, paths)
    labels = np.asarray(labels, np.int32)
    splits = np.where(holdout_split(labels, holdout_fraction, seed, np.asarray(groups)), "test", "train")
    return NativeRecords(np.stack(images), labels, np.asarray(windows, np.float32), np.asarray(inverts, bool),
                         sources, splits, paths, class_names, kind)


def _from_arrays(arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], origin: str, *,
                 image_size: int, channels: int, resize: str, window, class_windows,
                 class_names: tuple[str, ...], holdout: dict[str, np.ndarray] | None = None,
                 multi_label: bool = False) -> NativeRecords:
    """Integer image arrays per split -> NativeRecords (bit-depth windows unless one is given).
    labels per split: int [N], or multi-hot [N, K] when `multi_label` (no per-class windows)."""
    if multi_label and class_windows:
        raise ValueError(f"{origin}: per-class windows need one class per image; this source is multi-label "
                         "(use one --window)")
    cw = intensity.parse_class_windows(class_windows, class_names)
    images, labs, windows, inverts, sources, splits, files = [], [], [], [], [], [], []
    kinds = set()
    for split, imgs in arrays.items():
        if imgs.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{origin}: {split} images have dtype {imgs.dtype}; expected uint8 or uint16")
        kinds.add("8-bit" if imgs.dtype == np.uint8 else "16-bit")
        own = intensity.bit_depth_window(255 if imgs.dtype == np.uint8 else 65535)
        if imgs.ndim == 3:
            imgs = imgs[..., None]
        if imgs.ndim != 4 or imgs.shape[-1] not in (1, 3):
            raise ValueError(f"{origin}: {split} images have shape {imgs.shape}; expected [N,H,W] or [N,H,W,C] "
                             "with C 1 or 3")
        for i, (img, lab) in enumerate(zip(imgs, labels[split])):
            where = f"{origin} {split}[{i}]"
            if not multi_label and not 0 <= lab < len(class_names):
                raise ValueError(f"{where}: label {lab} outside 0..{len(class_names) - 1} ({list(class_names)})")
            pix = readers._to_channels(img.astype(np.float32), channels, where)
            images.append(readers.resize_native(pix, (image_size, image_size), resize, where))
            w = resolve_window(own, "" if multi_label else class_names[lab], window, cw)
            windows.append((w.center, w.width))
            inverts.append(w.invert)
            sources.append(w.source)
            labs.append(np.asarray(lab, np.uint8) if multi_label else int(lab))
            files.append(where)
            splits.append(split)
    if len(kinds) > 1:
        raise ValueError(f"{origin}: splits mix 8-bit and 16-bit images; expected one bit depth")
    labs = np.stack(labs).astype(np.uint8) if multi_label else np.asarray(labs, np.int32)
    splits = np.asarray(splits)
    if holdout is not None:
        splits = np.where(holdout["mask"], "test", splits)
    return NativeRecords(np.stack(images), labs, np.asarray(windows, np.float32), np.asarray(inverts, bool),
                         sources, splits, files, class_names, kinds.pop(), multi_label)


def read_npz(path: str, *, image_size: int, channels: int = 1, resize: str = "none", window=None,
             class_windows=None, classes: Sequence[str] | None = None, **unused) -> NativeRecords:
    """A MedMNIST-layout `.npz` (train/val/test `_images` and `_labels`), its splits kept.

    Labels: single-label [N] or [N, 1] (class names from `classes`, else '0'..'K-1' for K = max
    label + 1), or multi-hot [N, K] with K > 1 (ChestMNIST; finding names from `classes`, else
    '0'..'K-1'), which gives a multi-label dataset.
    """
    del unused  # holdout_fraction / seed: the file's own splits are kept
    if not os.path.isfile(path):
        raise ValueError(f"npz source {path!r} is not a file; expected a MedMNIST-style .npz")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as e:
        raise ValueError(f"{path}: cannot read .npz ({type(e).__name__}: {e})") from e
    arrays, labels = {}, {}
    for key, split in NPZ_SPLITS.items():
        if f"{key}_images" not in data:
            continue
        if f"{key}_labels" not in data:
            raise ValueError(f"{path}: has {key}_images but no {key}_labels")
        lab = np.asarray(data[f"{key}_labels"])
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.ndim not in (1, 2) or (lab.ndim == 2 and not np.isin(lab, (0, 1)).all()):
            raise ValueError(f"{path}: {key}_labels has shape {lab.shape}; expected [N], [N, 1] or multi-hot "
                             "0/1 [N, K]")
        if len(lab) != len(data[f"{key}_images"]):
            raise ValueError(f"{path}: {key}_images has {len(data[f'{key}_images'])} images but {key}_labels "
                             f"{len(lab)} labels")
        arrays[split], labels[split] = np.asarray(data[f"{key}_images"]), lab.astype(np.int64)
    if "train" not in arrays:
        raise ValueError(f"{path}: no train_images / train_labels; keys are {sorted(data)} (MedMNIST layout "
                         "expected)")
    multi = {v.ndim for v in labels.values()} == {2}
    if len({v.ndim for v in labels.values()}) > 1 or (multi and len({v.shape[1] for v in labels.values()}) > 1):
        raise ValueError(f"{path}: splits disagree on the label layout "
                         f"{ {s: v.shape[1:] for s, v in labels.items()} }")
    k = next(iter(labels.values())).shape[1] if multi else int(max(v.max() for v in labels.values() if len(v))) + 1
    names = tuple(classes) if classes else tuple(str(i) for i in range(k))
    if len(names) < k or (multi and len(names) != k):
        raise ValueError(f"{path}: labels span {'columns' if multi else 'classes'} 0..{k - 1} but {len(names)} "
                         f"class names were given {list(names)}")
    return _from_arrays(arrays, labels, path, image_size=image_size, channels=channels, resize=resize,
                        window=window, class_windows=class_windows, class_names=names, multi_label=multi)


def read_stylegan_folder(path: str, *, image_size: int, channels: int = 1, resize: str = "none", window=None,
                         class_windows=None, classes: Sequence[str] | None = None, holdout_fraction: float = 0.0,
                         seed: int = 0, **unused) -> NativeRecords:
    """A StyleGAN2-ADA dataset folder or .zip (dataset.json labels), held-out split drawn here."""
    del unused
    ds = stylegan_dataset.StyleGANImageDataset(path, channels=channels, use_labels=True)
    raw, labels = ds.arrays()  # uint8 [N,H,W,C], int32 [N] (zeros when unlabelled)
    k = ds.class_count if ds.has_labels else 1
    names = tuple(classes) if classes else (tuple(str(i) for i in range(k)) if ds.has_labels else ("all",))
    if len(names) != k:
        raise ValueError(f"{path}: labels span {k} classes but {len(names)} class names were given {list(names)}")
    mask = holdout_split(np.asarray(labels), holdout_fraction, seed)
    return _from_arrays({"train": raw}, {"train": np.asarray(labels)}, path, image_size=image_size,
                        channels=channels, resize=resize, window=window, class_windows=class_windows,
                        class_names=names, holdout={"mask": mask})


READERS = {"image-folder": read_image_folder, "npz": read_npz, "stylegan-folder": read_stylegan_folder}
