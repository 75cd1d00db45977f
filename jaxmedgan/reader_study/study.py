"""`jaxmedgan reader-study create`: a balanced, shuffled, seeded set of real and synthetic images.

The study folder holds ``images/<id>.png`` (``id`` = 16 random hex digits, so neither the truth
nor the original file name can be read off a URL) and ``study.sqlite`` (see `db`). Every image
is decoded and re-encoded as a plain PNG, which drops text chunks, EXIF and ICC profiles, and
all images get the same pixel format so the file itself does not give the answer away:

* 8-bit gray (``L``) unless some chosen image has colour, then every image is 8-bit ``RGB``;
* 16-bit / 32-bit / float images are stretched to 0..255 over their own min..max;
* alpha is dropped; ``size`` (optional) resizes every image to size x size px (Lanczos).

Image sizes that differ between the real and synthetic sets are reported as a warning: readers
could tell them apart by size, so pass ``size``.

Sources: ``real`` is a folder of images (``*.png|jpg|jpeg|tif|tiff|bmp``, searched recursively;
an image in a sub-folder gets the sub-folder name as its label). ``synthetic`` is such a folder,
or a folder holding ``samples.npz`` (``images`` uint8 NHWC, ``labels`` int, -1 = none; as written
by ``jaxmedgan sample``, whose PNGs beside it are then ignored), or a training workdir
(``config.json`` + ``checkpoints/``) that is sampled with `jaxmedgan.sampling.sample_to_dir`.
A ``labels.csv`` (columns ``file,label``; ``file`` relative to the folder) beside the images
sets or overrides labels; rows for files not in the folder are ignored.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import secrets
import shutil
import tempfile

import numpy as np
from PIL import Image

from jaxmedgan import atomic_io
from jaxmedgan.reader_study import db

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABELS_CSV = "labels.csv"
SAMPLES_NPZ = "samples.npz"


@dataclasses.dataclass
class Candidate:
    """One image that may enter the study: a file, or one row of a samples.npz array."""
    source: str                        # shown to the admin only: file path or 'DIR/samples.npz#i'
    label: str | None
    path: str | None = None            # image file, or
    array: np.ndarray | None = None    # uint8 [H, W, C] from samples.npz


@dataclasses.dataclass
class StudySummary:
    """What `create_study` made."""
    path: str
    num_real: int
    num_synthetic: int
    warnings: list[str]


def _read_labels_csv(folder: str) -> dict[str, str]:
    """{normalised relative file path: label} from FOLDER/labels.csv, or {} when absent."""
    path = os.path.join(folder, LABELS_CSV)
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "file" not in fields or "label" not in fields:
            raise ValueError(f"{path}: needs a header with columns 'file' and 'label', got {fields}.")
        labels = {}
        for row in reader:
            if row["file"] and row["label"] and row["label"].strip():
                labels[os.path.normpath(row["file"].strip())] = row["label"].strip()
    return labels


def _list_image_folder(folder: str, flag: str) -> list[Candidate]:
    """Every image file under `folder` (sorted), labelled by labels.csv or its sub-folder name."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{flag} folder {folder!r} does not exist or is not a directory.")
    labels = _read_labels_csv(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(root, name)
            rel = os.path.normpath(os.path.relpath(path, folder))
            sub = os.path.dirname(rel)
            label = labels.get(rel, sub.split(os.sep)[0] if sub else None)
            out.append(Candidate(source=os.path.abspath(path), label=label, path=path))
    return out


def _read_samples_npz(path: str) -> list[Candidate]:
    """One candidate per image in a `jaxmedgan sample` samples.npz."""
    try:
        with np.load(path) as data:
            images = np.asarray(data["images"])
            labels = np.asarray(data["labels"]) if "labels" in data else np.full((len(images),), -1)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"Cannot read {path}: {e} (expected keys 'images' uint8 NHWC and 'labels').") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: 'images' must be uint8 [N, H, W, 1|3], got {images.dtype} {images.shape}.")
    if labels.shape != (len(images),):
        raise ValueError(f"{path}: 'labels' must have shape ({len(images)},), got {labels.shape}.")
    src = os.path.abspath(path)
    return [Candidate(source=f"{src}#{i}", label=None if int(lab) < 0 else str(int(lab)), array=img)
            for i, (img, lab) in enumerate(zip(images, labels))]


def is_training_workdir(path: str) -> bool:
    """True for a jaxmedgan training workdir (config.json + checkpoints/)."""
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))


def _synthetic_candidates(path: str, needed: int, seed: int, scratch: str) -> list[Candidate]:
    """Candidates from a PNG folder, a samples.npz folder, or (sampled now) a training workdir."""
    if os.path.isdir(path) and is_training_workdir(path):
        from jaxmedgan import sampling  # imports jax: only when sampling is needed

        out = sampling.sample_to_dir(path, needed, os.path.join(scratch, "samples"), seed=seed)
        cands = _read_samples_npz(os.path.join(out, SAMPLES_NPZ))
        for i, c in enumerate(cands):
            c.source = f"{os.path.abspath(path)} (sampled, seed {seed}, #{i})"
        return cands
    npz = os.path.join(path, SAMPLES_NPZ)
    if os.path.isfile(npz):
        cands = _read_samples_npz(npz)
        labels = _read_labels_csv(path)  # labels.csv may name rows as 'samples.npz#i'
        for i, c in enumerate(cands):
            c.label = labels.get(f"{SAMPLES_NPZ}#{i}", c.label)
        return cands
    return _list_image_folder(path, "--synthetic")


def _load(c: Candidate) -> np.ndarray:
    """uint8 [H, W] (gray) or [H, W, 3] (colour) pixels; errors name the file."""
    if c.array is not None:
        a = c.array
        return a[..., 0] if a.shape[-1] == 1 else a
    try:
        with Image.open(c.path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                x = np.asarray(img, np.float64)
                lo, hi = float(x.min()), float(x.max())
                scaled = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
                return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
            if img.mode in ("1", "L", "LA", "La"):
                return np.asarray(img.convert("L"))
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"Cannot read image {c.path}: {e}") from None
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
        return rgb[..., 0]  # gray stored as RGB
    return rgb


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Lanczos resize to size x size px."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS))


def _write_png(path: str, pixels: np.ndarray) -> None:
    """Plain PNG: no text chunks, EXIF, ICC profile or timestamps."""
    Image.fromarray(pixels).save(path, format="PNG", optimize=False)


def _choose(cands: list[Candidate], k: int, rng: np.random.Generator, what: str, folder: str,
            num: int) -> list[Candidate]:
    """k of the candidates, drawn without replacement; error if there are fewer."""
    if len(cands) < k:
        raise ValueError(f"--{what} {folder!r} has {len(cands)} images; --num {num} needs {k} {what} "
                         f"images (half of --num).")
    return [cands[int(i)] for i in np.sort(rng.choice(len(cands), size=k, replace=False))]


def create_study(real: str, synthetic: str, num: int, out: str, *, seed: int = 0,
                 size: int | None = None) -> StudySummary:
    """Builds the study folder `out` (num/2 real + num/2 synthetic images and study.sqlite), atomically."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 2 or num % 2:
        raise ValueError(f"--num must be an even number >= 2 (half real, half synthetic), got {num!r}.")
    if size is not None and not 8 <= size <= 4096:
        raise ValueError(f"--size must be in 8..4096 px, got {size}.")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"Output {out!r} exists and is not an empty directory; choose another --out.")
    if not os.path.exists(synthetic):
        raise FileNotFoundError(f"--synthetic {synthetic!r} does not exist.")
    half = num // 2
    rng = np.random.default_rng(seed)
    real_cands = _list_image_folder(real, "--real")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    warnings: list[str] = []

    def write(tmp: str) -> None:  # into a temporary sibling folder, renamed to `out` when complete
        chosen_real = _choose(real_cands, half, rng, "real", real, num)
        synth_cands = _synthetic_candidates(synthetic, half, seed, scratch)
        chosen_synth = _choose(synth_cands, half, rng, "synthetic", synthetic, num)
        entries = [(c, "real") for c in chosen_real] + [(c, "synthetic") for c in chosen_synth]
        pixels = [_load(c) for c, _ in entries]
        if size is not None:
            pixels = [_resize(p, size) for p in pixels]
        if any(p.ndim == 3 for p in pixels):  # one pixel format for all: the format must not tell
            pixels = [np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p for p in pixels]
        shapes = {t: sorted({p.shape[:2] for p, (_, tt) in zip(pixels, entries) if tt == t}) for t in db.TRUTHS}
        if shapes["real"] != shapes["synthetic"]:
            warnings.append(f"image sizes differ: real {shapes['real']} vs synthetic {shapes['synthetic']} "
                            "(H, W) px; readers may tell them apart by size. Pass --size PX to resize all.")
        order = rng.permutation(num)
        os.makedirs(os.path.join(tmp, db.IMAGES_DIR))
        rows, used = [], set()
        for position, j in enumerate(order):
            c, truth = entries[int(j)]
            item_id = secrets.token_hex(8)
            while item_id in used:
                item_id = secrets.token_hex(8)
            used.add(item_id)
            filename = f"{item_id}.png"
            _write_png(os.path.join(tmp, db.IMAGES_DIR, filename), pixels[int(j)])
            h, w = pixels[int(j)].shape[:2]
            rows.append(dict(id=item_id, position=position, truth=truth, source=c.source, label=c.label,
                             filename=filename, width=w, height=h))
        db.create(os.path.join(tmp, db.DB_NAME), rows,
                  {"seed": str(seed), "real_source": os.path.abspath(real),
                   "synthetic_source": os.path.abspath(synthetic), "num_items": str(num)})

    scratch = tempfile.mkdtemp(prefix=".reader-study-scratch-", dir=parent)
    try:
        atomic_io.write_dir(out, write)  # `out` is absent or empty (checked above)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return StudySummary(path=out, num_real=half, num_synthetic=half, warnings=warnings)
