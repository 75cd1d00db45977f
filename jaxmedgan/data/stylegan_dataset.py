"""StyleGAN2-ADA's own dataset format: a folder or .zip of images plus an optional `dataset.json`.

The format NVlabs/stylegan2-ada-pytorch's `dataset_tool.py` writes and `training/dataset.py`
(ImageFolderDataset) reads: every file with an image extension, in sorted path order (recursive;
'/'-separated paths relative to the root), is one example; `dataset.json` at the root holds
``{"labels": [["00000/img00000000.png", 6], ...]}`` (or ``"labels": null``). A label is a class
index or a one-hot vector. Images are uint8, HxW (grayscale) or HxWxC, all the same shape.

`StyleGANImageDataset` is a random-access source with the elements the grain pipeline expects
({"image": uint8 [H, W, C], "label": int32}); `write_stylegan_dataset` writes our arrays in this
format (e.g. the spine phantoms, to train the official implementation on the same data).
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxmedgan import atomic_io

LABELS_FILE = "dataset.json"
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class StyleGANImageDataset(Sequence):
    """Random-access StyleGAN2-ADA dataset; element {"image": uint8 [H, W, C], "label": int32}.

    channels: 1 or 3 converts every image to that many channels (PIL 'L' / 'RGB'); None keeps the
    files' own channels (which must agree). Unlabelled datasets get label 0 (`has_labels` False).
    """

    def __init__(self, path: str, *, channels: int | None = None, use_labels: bool = True):
        self.path = path
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels}")
        self._channels = channels
        self._zip = None
        if os.path.isdir(path):
            names = [os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/")
                     for root, _, files in os.walk(path) for f in files]
        elif os.path.isfile(path) and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            raise FileNotFoundError(f"StyleGAN dataset {path!r} is neither a directory nor a .zip file.")
        self._names = sorted(n for n in names if os.path.splitext(n)[1].lower() in _IMAGE_EXTENSIONS)
        if not self._names:
            raise ValueError(f"No image files ({', '.join(_IMAGE_EXTENSIONS)}) in StyleGAN dataset {path!r}.")
        self._labels, self.has_labels = self._read_labels(use_labels)
        first = self._load(0)
        self.image_shape = first.shape  # (H, W, C)

    def _open(self, name: str):
        if self._zip is not None:
            return self._zip.open(name)
        return open(os.path.join(self.path, name), "rb")

    def _read_labels(self, use_labels: bool) -> tuple[np.ndarray, bool]:
        names = self._zip.namelist() if self._zip is not None else os.listdir(self.path)
        if not use_labels or LABELS_FILE not in names:
            return np.zeros(len(self._names), np.int32), False
        with self._open(LABELS_FILE) as f:
            try:
                meta = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}/{LABELS_FILE} is not valid JSON: {e}") from None
        entries = meta.get("labels") if isinstance(meta, dict) else None
        if entries is None:
            return np.zeros(len(self._names), np.int32), False
        table = {}
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise ValueError(f"{self.path}/{LABELS_FILE}: each label must be [\"path\", label]; got {entry!r}")
            table[entry[0].replace("\\", "/")] = entry[1]
        missing = [n for n in self._names if n not in table]
        if missing:
            raise ValueError(f"{self.path}/{LABELS_FILE} has no label for {len(missing)} image(s), e.g. "
                             f"{missing[:3]}; expected one [\"path\", label] entry per image.")
        labels = []
        for name in self._names:
            value = table[name]
            if isinstance(value, list):  # one-hot vector -> class index
                vec = np.asarray(value, np.float64)
                if vec.ndim != 1 or np.count_nonzero(vec) != 1 or vec.max() != 1:
                    raise ValueError(f"{self.path}/{LABELS_FILE}: label of {name!r} is a vector {value} that "
                                     "is not one-hot; only class labels are supported.")
                value = int(np.argmax(vec))
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{self.path}/{LABELS_FILE}: label of {name!r} must be a class index >= 0, "
                                 f"got {value!r}.")
            labels.append(int(value))
        return np.asarray(labels, np.int32), True

    def _load(self, index: int) -> np.ndarray:
        name = self._names[index]
        with self._open(name) as f:
            image = Image.open(io.BytesIO(f.read()))
            if self._channels is not None:
                image = image.convert("L" if self._channels == 1 else "RGB")
            array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f"{self.path}/{name}: expected 8-bit pixels, got {array.dtype} (mode {image.mode}).")
        if array.ndim == 2:
            array = array[:, :, None]
        expected = getattr(self, "image_shape", None)
        if expected is not None and array.shape != expected:
            raise ValueError(f"{self.path}/{name} has shape {array.shape} (H, W, C); expected {expected} "
                             "like the first image (StyleGAN datasets hold one resolution).")
        return array

    @property
    def class_count(self) -> int:
        """Number of classes (max label + 1; 0 if unlabelled)."""
        return int(self._labels.max()) + 1 if self.has_labels else 0

    @property
    def labels(self) -> np.ndarray:
        """int32 [N] class labels (zeros when unlabelled)."""
        return self._labels

    @property
    def names(self) -> tuple[str, ...]:
        """Image paths relative to the dataset root, in example order."""
        return tuple(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self._load(int(index)), "label": self._labels[int(index)]}

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [N, H, W, C], labels int32 [N]) of the whole dataset."""
        return np.stack([self._load(i) for i in range(len(self))]), self._labels.copy()


def write_stylegan_dataset(path: str, images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """Writes uint8 images [N,H,W,1|3] (+ int labels [N]) as StyleGAN2-ADA's folder or .zip layout.

    Files are `00000/img00000000.png` as dataset_tool.py names them; `path` ending in .zip gives a
    zip. Written to a temporary sibling and renamed, so a failure leaves nothing behind.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be uint8 [N, H, W, 1|3], got {images.dtype} {images.shape}")
    if labels is not None and np.shape(labels) != (len(images),):
        raise ValueError(f"labels must be [N={len(images)}], got shape {np.shape(labels)}")
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(images))]
    meta = {"labels": None if labels is None else [[n, int(l)] for n, l in zip(names, labels)]}
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)

    def png(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
        return buf.getvalue()

    if path.endswith(".zip"):
        def write_zip(tmp: str) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
                for name, image in zip(names, images):
                    z.writestr(name, png(image))
                z.writestr(LABELS_FILE, json.dumps(meta))

        atomic_io.write_file(path, write_zip, suffix=".zip")
        return path
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; write_stylegan_dataset does not overwrite folders.")
    def write(tmp: str) -> None:
        for name, image in zip(names, images):
            os.makedirs(os.path.join(tmp, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(png(image))
        with open(os.path.join(tmp, LABELS_FILE), "w") as f:
            json.dump(meta, f)

    return atomic_io.write_dir(path, write)
