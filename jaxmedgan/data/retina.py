"""Retinal fundus images with vessel masks: scikit-image's real fundus photograph with a derived
mask, DRIVE / STARE / HRF-style folders, and seeded augmented crops for the dual GAN.

Vessel mask of an image without a manual one (`derive_vessel_mask`, documented pipeline):
  1. resize the RGB image to `working_size` px (anti-aliased), scale to [0, 1];
  2. field of view (FOV): red channel > 0.1, holes filled, eroded by 4 px (drops the rim, where
     the dark border would read as a vessel);
  3. green channel (best vessel contrast), inverted so vessels are bright, CLAHE
     (`skimage.exposure.equalize_adapthist`, clip 0.01) to even out the illumination;
  4. Frangi vesselness (`skimage.filters.frangi`, sigmas 1, 1.5, 2, 3 px, bright ridges);
  5. threshold inside the FOV: the `percentile` (default 88: the top 12 % of FOV pixels, about the
     vessel fraction of DRIVE's manual masks) or Otsu (`threshold='otsu'`, keeps only the larger
     vessels, ~5 %); connected pieces under 30 px are removed.
On `skimage.data.retina()` (1411 px, shipped in the wheel) this gives a clean tree (10.5 % of the
FOV at 512 px).

Crops (`random_crops`): square windows of `crop_px` at the working size whose FOV coverage is at
least 90 % and that lie inside a column band (train: x < `split` W, test: x >= `split` W, so the
splits share no pixel), each randomly rotated by k x 90 degrees and flipped, then resized to
`image_size` (image bilinear, mask by area fraction > 0.5). Everything is drawn from
np.random.default_rng([seed, ...]). Images map to [-1, 1]; maps are uint8 {0 background, 1 vessel}.

Folder layouts (`find_fundus_triples`, auto-detected):
  DRIVE  XX_training.tif / XX_test.tif, XX_manual1.gif, XX_training_mask.gif / XX_test_mask.gif
  STARE  imXXXX.ppm, imXXXX.ah.ppm (or .vk.ppm); no FOV masks (derived as in step 2)
  HRF    images/NAME.jpg, manual1/NAME.tif, mask/NAME_mask.tif
(sub-folders anywhere below the root).
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any

import numpy as np
from scipy import ndimage

from jaxmedgan.data import readers

FRANGI_SIGMAS = (1.0, 1.5, 2.0, 3.0)  # px at the working size
IMAGE_EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".ppm", ".gif", ".bmp")


def field_of_view(rgb: np.ndarray, erode_px: int = 4) -> np.ndarray:
    """bool [H, W]: red channel (of RGB in [0, 1]) > 0.1, holes filled, eroded by `erode_px`."""
    fov = ndimage.binary_fill_holes(rgb[..., 0] > 0.1)
    return ndimage.binary_erosion(fov, iterations=erode_px) if erode_px else fov


def derive_vessel_mask(rgb: np.ndarray, fov: np.ndarray | None = None, *, threshold: str = "percentile",
                       percentile: float = 88.0, min_size: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(vessel bool [H, W], FOV bool [H, W]) of an RGB fundus image in [0, 1] (module doc, steps 2-5)."""
    from skimage import exposure, filters

    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an RGB fundus image [H, W, 3]; got shape {rgb.shape}.")
    fov = field_of_view(rgb) if fov is None else np.asarray(fov, bool)
    if not fov.any():
        raise ValueError("the field of view is empty (red channel <= 0.1 everywhere); is this a fundus image?")
    inverted = exposure.equalize_adapthist(1.0 - rgb[..., 1], clip_limit=0.01)
    response = filters.frangi(inverted, sigmas=FRANGI_SIGMAS, black_ridges=False)
    response[~fov] = 0.0
    if threshold == "percentile":
        cut = np.percentile(response[fov], percentile)
    elif threshold == "otsu":
        cut = filters.threshold_otsu(response[fov])
    else:
        raise ValueError(f"threshold must be 'percentile' or 'otsu', got {threshold!r}.")
    vessels = (response > cut) & fov
    labels, n = ndimage.label(vessels)
    sizes = ndimage.sum(vessels, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], sizes >= min_size])
    return keep[labels], fov


def _resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """float64 [size, size', 3] in [0, 1] (longer side = size) from uint8 or float RGB."""
    from skimage.transform import resize

    rgb = np.asarray(rgb)
    x = rgb.astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    h, w = x.shape[:2]
    scale = size / max(h, w)
    return np.clip(resize(x, (round(h * scale), round(w * scale), 3), anti_aliasing=True), 0, 1)


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool mask resized by area fraction > 0.5."""
    from skimage.transform import resize

    return resize(mask.astype(np.float64), shape, order=1, anti_aliasing=True) > 0.5


@functools.lru_cache(maxsize=4)
def skimage_retina(working_size: int = 512, threshold: str = "percentile",
                   percentile: float = 88.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """skimage.data.retina() at `working_size`: (RGB f64 [S,S,3] in [0,1], vessel bool, FOV bool)."""
    from skimage import data

    rgb = _resize_rgb(data.retina(), working_size)
    vessels, fov = derive_vessel_mask(rgb, threshold=threshold, percentile=percentile)
    return rgb, vessels, fov


def random_crops(rgb: np.ndarray, vessels: np.ndarray, fov: np.ndarray, num: int, *, crop_px: int,
                 image_size: int, seed: int, band: tuple[float, float] = (0.0, 1.0),
                 min_fov: float = 0.9, max_tries: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Seeded augmented crops: (images f32 [num,S,S,3] in [-1,1], maps uint8 [num,S,S])."""
    h, w = vessels.shape
    x_lo, x_hi = int(round(band[0] * w)), int(round(band[1] * w)) - crop_px
    if crop_px > min(h, w) or x_hi < x_lo:
        raise ValueError(f"crop_px={crop_px} does not fit the {h}x{w} image band {band}.")
    fov_sum = np.pad(np.cumsum(np.cumsum(fov, 0), 1), ((1, 0), (1, 0)))  # summed-area table
    rng = np.random.default_rng([seed, 0x43524F50])  # "CROP"
    images, maps = [], []
    for _ in range(max_tries):
        if len(images) == num:
            break
        y, x = int(rng.integers(0, h - crop_px + 1)), int(rng.integers(x_lo, x_hi + 1))
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        covered = (fov_sum[y + crop_px, x + crop_px] - fov_sum[y, x + crop_px] - fov_sum[y + crop_px, x]
                   + fov_sum[y, x]) / crop_px**2
        if covered < min_fov:
            continue
        img = np.rot90(rgb[y:y + crop_px, x:x + crop_px], k)
        ves = np.rot90(vessels[y:y + crop_px, x:x + crop_px], k)
        if flip:
            img, ves = img[:, ::-1], ves[:, ::-1]
        if crop_px != image_size:
            from skimage.transform import resize

            img = resize(img, (image_size, image_size, 3), anti_aliasing=True)
            ves = _resize_mask(ves, (image_size, image_size))
        images.append(img * 2.0 - 1.0)
        maps.append(ves)
    if len(images) < num:
        raise ValueError(f"found only {len(images)} of {num} crops of {crop_px} px with >= {min_fov:.0%} "
                         f"field of view in band {band}; lower crop_px or min_fov.")
    return np.stack(images).astype(np.float32), np.stack(maps).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# DRIVE / STARE / HRF folders.

def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises several types
        raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def _read_mask(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > 127
    except Exception as e:
        raise ValueError(f"{path}: cannot read mask ({type(e).__name__}: {e})") from e


def _walk(root: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def find_fundus_triples(root: str, layout: str = "auto") -> list[tuple[str, str, str, str | None]]:
    """(id, image path, manual vessel mask path, FOV mask path or None) per image under `root`."""
    if not os.path.isdir(root):
        raise ValueError(f"fundus folder {root!r} does not exist.")
    files = _walk(root)
    by_name = {os.path.basename(f): f for f in files}
    if layout == "auto":
        names = list(by_name)
        if any(n.endswith("_manual1.gif") for n in names):
            layout = "drive"
        elif any(re.search(r"\.(ah|vk)\.ppm$", n) for n in names):
            layout = "stare"
        elif any(os.path.basename(os.path.dirname(f)) == "manual1" for f in files):
            layout = "hrf"
        else:
            raise ValueError(f"{root}: no DRIVE (*_manual1.gif), STARE (*.ah.ppm / *.vk.ppm) or HRF "
                             "(images/, manual1/, mask/) files found.")
    triples = []
    if layout == "drive":
        for name, path in by_name.items():
            m = re.fullmatch(r"(\d+)_(training|test)\.tiff?", name)
            if not m:
                continue
            vessel = by_name.get(f"{m.group(1)}_manual1.gif")
            if vessel is None:
                raise ValueError(f"{path}: no manual vessel mask {m.group(1)}_manual1.gif under {root}.")
            fov = by_name.get(f"{m.group(1)}_{m.group(2)}_mask.gif")
            triples.append((f"{m.group(1)}_{m.group(2)}", path, vessel, fov))
    elif layout == "stare":
        for name, path in by_name.items():
            m = re.fullmatch(r"(im\d+)\.ppm", name)
            if not m:
                continue
            vessel = by_name.get(f"{m.group(1)}.ah.ppm") or by_name.get(f"{m.group(1)}.vk.ppm")
            if vessel is None:
                raise ValueError(f"{path}: no manual vessel mask {m.group(1)}.ah.ppm (or .vk.ppm) under {root}.")
            triples.append((m.group(1), path, vessel, None))
    elif layout == "hrf":
        for path in files:
            if os.path.basename(os.path.dirname(path)) != "images":
                continue
            stem, ext = os.path.splitext(os.path.basename(path))
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            base = os.path.dirname(os.path.dirname(path))
            vessel = next((p for p in (os.path.join(base, "manual1", stem + e) for e in (".tif", ".png", ".gif"))
                           if os.path.exists(p)), None)
            if vessel is None:
                raise ValueError(f"{path}: no manual vessel mask {os.path.join(base, 'manual1', stem + '.tif')}.")
            fov = os.path.join(base, "mask", stem + "_mask.tif")
            triples.append((stem, path, vessel, fov if os.path.exists(fov) else None))
    else:
        raise ValueError(f"layout must be 'auto', 'drive', 'stare' or 'hrf'; got {layout!r}.")
    if not triples:
        raise ValueError(f"{root}: no {layout.upper()} fundus images found.")
    return sorted(triples)


def read_fundus(triple: tuple[str, str, str, str | None], working_size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB f64 [H,W,3] in [0,1], vessel bool, FOV bool) of one triple at `working_size` (longer side)."""
    _, img_path, ves_path, fov_path = triple
    rgb = _read_rgb(img_path)
    vessel = _read_mask(ves_path)
    if vessel.shape != rgb.shape[:2]:
        raise ValueError(f"{ves_path}: mask shape {vessel.shape} does not match image {img_path} {rgb.shape[:2]}.")
    fov = _read_mask(fov_path) if fov_path else None
    if fov is not None and fov.shape != rgb.shape[:2]:
        raise ValueError(f"{fov_path}: FOV mask shape {fov.shape} does not match image {img_path} {rgb.shape[:2]}.")
    small = _resize_rgb(rgb, working_size)
    shape = small.shape[:2]
    fov = _resize_mask(fov, shape) if fov is not None else field_of_view(small, erode_px=0)
    return small, _resize_mask(vessel, shape) & fov, fov


def load_arrays(config) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, held-out) {"image" f32 [N,S,S,3], "map" uint8 [N,S,S]} for config.data (retina sources)."""
    d = config.data
    kw = dict(crop_px=d.crop_px, image_size=d.image_size)
    if d.channels != 3:
        raise ValueError(f"fundus images are RGB: config.data.channels must be 3, got {d.channels}.")
    if d.source == "retina":
        rgb, vessels, fov = skimage_retina(d.working_size, d.threshold, d.percentile)
        tr = random_crops(rgb, vessels, fov, d.train_crops, seed=config.seed, band=(0.0, d.split), **kw)
        te = random_crops(rgb, vessels, fov, d.test_crops, seed=config.seed + 1, band=(d.split, 1.0), **kw)
        return {"image": tr[0], "map": tr[1]}, {"image": te[0], "map": te[1]}
    if d.source == "fundus-folder":
        if not d.image_dir:
            raise ValueError("config.data.source='fundus-folder' needs config.data.image_dir.")
        triples = find_fundus_triples(d.image_dir)
        train, test = readers.split_cases(triples, d.get("holdout_fraction", 0.2), config.seed)
        out = []
        for part, n_total, offset in ((train, d.train_crops, 0), (test, d.test_crops, 1000)):
            per = -(-n_total // len(part))
            imgs, maps = [], []
            for i, t in enumerate(part):
                rgb, vessels, fov = read_fundus(t, d.working_size)
                a, b = random_crops(rgb, vessels, fov, per, seed=config.seed + offset + i, **kw)
                imgs.append(a), maps.append(b)
            out.append({"image": np.concatenate(imgs)[:n_total], "map": np.concatenate(maps)[:n_total]})
        return out[0], out[1]
    raise ValueError(f"Unknown retina config.data.source {d.source!r}; expected 'retina' or 'fundus-folder'.")


def retina_data_config(config) -> None:
    """Adds the retina fields to `config.data` (used by configs/dual_gan_retina.py)."""
    d = config.data
    d.source = "retina"
    d.channels = 3
    d.num_labels = 2  # background, vessel
    d.lesion_from = 1
    d.working_size = 512  # px: the fundus image is resized to this before cropping
    d.crop_px = 64  # px at the working size; resized to image_size
    d.train_crops = 512
    d.test_crops = 64
    d.split = 0.7  # train crops left of 0.7 W, test crops right of it
    d.threshold = "percentile"  # percentile | otsu (on the Frangi response in the FOV)
    d.percentile = 88.0


def summary(arrays: dict[str, Any]) -> str:
    """Vessel fraction of a split, for logs."""
    return f"{len(arrays['map'])} crops, vessel fraction {arrays['map'].mean():.3f}"
