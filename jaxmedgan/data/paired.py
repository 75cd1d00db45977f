"""Paired (label map, image) data for pix2pix and the segmentation experiment, by `config.data.source`.

Sources (all in memory; no TFDS build: the pairs are computed in seconds from the nilearn /
scikit-image data or read from the user's NIfTI / fundus folders, and the classic `Augment` cannot
be used anyway because it would move the image without its map):

  mni-brain      MNI152 T1 + tissue maps with seeded synthetic tumours (`brain_mri.mni_pairs`)
  brats-folder   BraTS-style CASE_t1.nii.gz + CASE_seg.nii.gz under `data.image_dir`
  nifti-folder   `data.image_dir`/images/X.nii.gz + labels/X.nii.gz (class values 0..5)
  retina         skimage.data.retina() with a Frangi-derived vessel mask, augmented crops
  fundus-folder  DRIVE / STARE / HRF-style folder under `data.image_dir`

User folders are split by case: a seeded `data.holdout_fraction` of the cases is held out.
An element of the training source is {"image": f32 [H,W,C] in [-1,1], "label": i32 (1 if the map
holds a lesion/vessel class, else 0), "cond": f32 one-hot [H,W,K]}; held-out data is a dict of
arrays {"image" [N,H,W,C], "map" uint8 [N,H,W]}.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxmedgan.data import brain_mri, readers, registry, retina

SOURCES = registry.names("pairs")


def one_hot(maps: np.ndarray, num_labels: int) -> np.ndarray:
    """float32 one-hot [..., K] of integer maps [...]; values must lie in 0..K-1."""
    maps = np.asarray(maps)
    if maps.size and (maps.min() < 0 or maps.max() >= num_labels):
        raise ValueError(f"label map values {int(maps.min())}..{int(maps.max())} do not fit "
                         f"num_labels={num_labels} (expected 0..{num_labels - 1}).")
    return np.eye(num_labels, dtype=np.float32)[maps.astype(np.int64)]


class PairSource(Sequence):
    """Random-access source over images [N,H,W,C] and maps uint8 [N,H,W] (one-hot on access)."""

    def __init__(self, images: np.ndarray, maps: np.ndarray, num_labels: int,
                 labels: np.ndarray | None = None):
        images, maps = np.asarray(images), np.asarray(maps)
        if images.ndim != 4 or maps.shape != images.shape[:3]:
            raise ValueError(f"PairSource expects images [N, H, W, C] and maps [N, H, W]; got images "
                             f"{images.shape} and maps {maps.shape}.")
        if maps.size and maps.max() >= num_labels:
            raise ValueError(f"maps hold class {int(maps.max())} but num_labels={num_labels}.")
        self._images = images.astype(np.float32)
        self._maps = maps.astype(np.uint8)
        self._k = num_labels
        self._labels = (np.asarray(labels, np.int32) if labels is not None
                        else (maps.reshape(len(maps), -1).max(axis=1) > 0).astype(np.int32))

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self._images[index], "label": self._labels[index],
                "cond": one_hot(self._maps[index], self._k)}


def load_arrays(config: ml_collections.ConfigDict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, held-out) dicts {"image" f32 [N,H,W,C], "map" uint8 [N,H,W]} for `config.data`."""
    d = config.data
    size, src = d.image_size, d.source
    if src == "mni-brain":
        kw = dict(variants=d.get("variants", 4), resolution_mm=d.get("resolution_mm", 2))
        return brain_mri.mni_pairs(size, "train", **kw), brain_mri.mni_pairs(size, "test", **kw)
    if src in ("brats-folder", "nifti-folder"):
        if not d.image_dir:
            raise ValueError(f"config.data.source={src!r} needs config.data.image_dir.")
        cases = (brain_mri.find_brats_cases(d.image_dir) if src == "brats-folder"
                 else brain_mri.find_nifti_pairs(d.image_dir))
        train, test = readers.split_cases(cases, d.get("holdout_fraction", 0.2), config.seed)
        mapping = brain_mri.BRATS_MAPPING if src == "brats-folder" else None
        return (brain_mri.load_cases(train, size, mapping=mapping),
                brain_mri.load_cases(test, size, mapping=mapping))
    if src in ("retina", "fundus-folder"):
        return retina.load_arrays(config)
    raise ValueError(f"config.data.source={src!r} is a {registry.get(src).kind!r} source; this model needs "
                     f"(label map, image) pairs from one of {', '.join(SOURCES)}.")


def check_arrays(arrays: dict[str, np.ndarray], config: ml_collections.ConfigDict, what: str) -> None:
    """Raises if `arrays` do not match config.data (size, channels, num_labels) or are empty."""
    d = config.data
    img, maps = arrays["image"], arrays["map"]
    if len(img) == 0:
        raise ValueError(f"{what} split of config.data.source={d.source!r} is empty.")
    if img.shape[1:] != (d.image_size, d.image_size, d.channels):
        raise ValueError(f"{what} images have shape {img.shape[1:]}; config.data expects "
                         f"({d.image_size}, {d.image_size}, {d.channels}).")
    if maps.max() >= d.num_labels:
        raise ValueError(f"{what} maps hold class {int(maps.max())} but config.data.num_labels={d.num_labels}.")


def load(config: ml_collections.ConfigDict) -> tuple[PairSource, dict[str, np.ndarray]]:
    """(training source, held-out arrays) for `common.fit(..., data=...)`."""
    train, test = load_arrays(config)
    check_arrays(train, config, "training")
    check_arrays(test, config, "held-out")
    return PairSource(train["image"], train["map"], config.data.num_labels), test


def condition_maps(config: ml_collections.ConfigDict, num: int, seed: int) -> np.ndarray:
    """uint8 maps [num,H,W] to sample a trained pix2pix with; never a held-out map.

    mni-brain: training-slice tissue with fresh seeded tumours (new maps). Other sources have no
    map generator (the dual GAN's stage I is one): training maps drawn with replacement, each
    randomly rotated by k x 90 degrees and flipped -- real geometry, so share such samples only
    where the training maps may be shared.
    """
    if config.data.source == "mni-brain":
        return brain_mri.synthetic_maps(config.data.image_size, num, seed,
                                        resolution_mm=config.data.get("resolution_mm", 2))
    train, _ = load_arrays(config)
    rng = np.random.default_rng([seed, 0x4D415053])  # "MAPS"
    maps = []
    for i in rng.integers(0, len(train["map"]), num):
        m = np.rot90(train["map"][i], int(rng.integers(4)))
        maps.append(m[:, ::-1] if rng.integers(2) else m)
    return np.ascontiguousarray(np.stack(maps)).astype(np.uint8)


def describe(arrays: dict[str, Any]) -> str:
    """One line: count and class histogram of a split (for logs)."""
    counts = np.bincount(arrays["map"].ravel(), minlength=2)
    return f"{len(arrays['image'])} pairs, class pixel fractions {np.round(counts / counts.sum(), 3).tolist()}"
