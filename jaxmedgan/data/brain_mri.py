"""Brain MRI label-map / T1 slice pairs: the MNI152 template with seeded synthetic tumours, and
NIfTI readers for user data (BraTS-style folders, any image/label pair).

Classes of a label map (uint8 [H, W]; one-hot [H, W, 6] for the models):
0 background, 1 CSF, 2 grey matter, 3 white matter, 4 tumour core (incl. its enhancing rim),
5 oedema -- the tissue + BRATS-tumour maps of Shin et al. 2018 ("Medical image synthesis for data
augmentation and anonymization using GANs").

MNI152 (real data shipped inside the nilearn wheel, nothing downloaded): the skull-stripped T1
template and its GM / WM probability maps at `resolution_mm` (nilearn resamples the 1 mm
originals). nilearn ships no CSF map, so CSF = clip(brain mask - GM - WM, 0, 1) with the brain
mask = T1 > 0.2 (nilearn's own `load_mni152_brain_mask` rule) with holes filled. Per axial slice:
label = 1 + argmax(CSF, GM, WM) where CSF + GM + WM >= `BRAIN_THRESHOLD`, else background.
Slices are shown radiologically (np.rot90 of the [X, Y] slice: anterior up), zero-padded to a
square and resized to `image_size` px (T1 bilinear with anti-aliasing; tissue probabilities
bilinear, then the argmax -- smoother than resizing labels). T1 is normalised per volume to
[-1, 1] (`normalise_volume`: 0.5 / 99.5 brain percentiles -> -1 / 0.8, clipped, so an enhancing
rim brighter than white matter stays representable).

Synthetic tumours (`insert_tumour`, one seeded generator per slice and variant): a centre inside
the brain, an irregular core (radius 5-10 % of the image, contour harmonics 2-4) and oedema
(1.5-2.2 x the core radius). Mass effect: a radial displacement field pushes tissue away from the
centre (backward map: output pixel at distance d samples the input at d - u(d), u(d) = m r_core
exp(-d^2 / (2 r_oedema^2)), m ~ U(0.5, 1); monotone since |u'| < 1), applied to the tissue
probabilities and the T1 image alike; labels are recomputed from the warped probabilities.
T1 alterations: oedema hypointense (x 0.75-0.88 of the local warped intensity, GM/WM pixels
only: CSF spaces are not oedematous), core hypo- to iso-intense (0.6-1.0 x the GM mean, with
smooth heterogeneity) with a bright enhancing rim (1.5-2.5 px at 64 px, WM mean + 0.1-0.3);
edges blurred by 0.7 px.

Split (`split_slices`): usable slices (brain area >= 15 % of the largest) are cut into blocks of
`block` consecutive slices; block b is test when b % period == period // 2, and the `gap` slices next to a test
block are used by neither split, so no training slice lies within 2 * gap mm of a test slice.
Tumour seeds differ by split (TRAIN_SEED / TEST_SEED), so no tumour is shared either.
"""
from __future__ import annotations

import functools
import glob
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

CLASS_NAMES = ("background", "csf", "grey_matter", "white_matter", "tumour_core", "oedema")
NUM_CLASSES = len(CLASS_NAMES)
BACKGROUND, CSF, GM, WM, CORE, OEDEMA = range(NUM_CLASSES)
TISSUE_CLASSES = (CSF, GM, WM)
BRAIN_THRESHOLD = 0.5  # sum of tissue probabilities marking a brain pixel
TRAIN_SEED = 20180601
TEST_SEED = 20180602
_REF_SIZE = 64  # px at which the tumour lengths above are given


# ----------------------------------------------------------------------------------------------
# Volumes and slices.

def normalise_volume(volume: np.ndarray, brain: np.ndarray | None = None,
                     percentiles: tuple[float, float] = (0.5, 99.5), top: float = 0.8) -> np.ndarray:
    """float32 copy of `volume` mapped to [-1, 1]: brain percentiles (lo, hi) -> (-1, top), clipped.

    `brain` (bool, same shape) selects the voxels whose percentiles set the scale (default:
    volume > 0); the background (outside `brain`) is set to -1.
    """
    volume = np.asarray(volume, np.float32)
    brain = volume > 0 if brain is None else np.asarray(brain, bool)
    if brain.shape != volume.shape:
        raise ValueError(f"brain mask shape {brain.shape} does not match the volume {volume.shape}.")
    if not brain.any():
        raise ValueError(f"volume of shape {volume.shape} has no brain voxels (all <= 0); expected a "
                         "skull-stripped or masked T1.")
    lo, hi = np.percentile(volume[brain], percentiles)
    if hi <= lo:
        hi = lo + 1.0
    out = -1.0 + (volume - lo) / (hi - lo) * (top + 1.0)
    return np.where(brain, np.clip(out, -1.0, 1.0), -1.0).astype(np.float32)


def _square(slice2d: np.ndarray, fill: float) -> np.ndarray:
    """Pads [H, W, ...] symmetrically with `fill` to [S, S, ...], S = max(H, W)."""
    h, w = slice2d.shape[:2]
    s = max(h, w)
    pad = [((s - h) // 2, s - h - (s - h) // 2), ((s - w) // 2, s - w - (s - w) // 2)]
    pad += [(0, 0)] * (slice2d.ndim - 2)
    return np.pad(slice2d, pad, constant_values=fill)


def resize(image: np.ndarray, size: int, order: int = 1) -> np.ndarray:
    """Resizes [H, W] or [H, W, C] (square) to [size, size, ...]; order 0 = nearest (labels)."""
    from skimage.transform import resize as sk_resize

    out_shape = (size, size) + image.shape[2:]
    return sk_resize(image.astype(np.float32) if order else image, out_shape, order=order,
                     anti_aliasing=bool(order) and image.shape[0] > size, preserve_range=True,
                     mode="edge").astype(image.dtype if not order else np.float32)


def tissue_labels(probs: np.ndarray, brain_threshold: float = BRAIN_THRESHOLD) -> np.ndarray:
    """uint8 labels [...] from tissue probabilities [..., 3] (CSF, GM, WM): 1 + argmax in the brain."""
    probs = np.asarray(probs)
    if probs.shape[-1] != 3:
        raise ValueError(f"tissue probabilities must end in 3 channels (CSF, GM, WM); got {probs.shape}.")
    labels = 1 + np.argmax(probs, axis=-1)
    return np.where(probs.sum(-1) >= brain_threshold, labels, BACKGROUND).astype(np.uint8)


@functools.lru_cache(maxsize=2)
def load_mni(resolution_mm: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 f32 [X,Y,Z] in [-1,1], tissue probs f32 [X,Y,Z,3] (CSF, GM, WM), brain bool [X,Y,Z])."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution_mm).get_fdata(dtype=np.float32)
    gm = datasets.load_mni152_gm_template(resolution=resolution_mm).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=resolution_mm).get_fdata(dtype=np.float32)
    if not t1.shape == gm.shape == wm.shape:
        raise ValueError(f"nilearn MNI152 maps disagree in shape: T1 {t1.shape}, GM {gm.shape}, WM {wm.shape}.")
    brain = ndimage.binary_fill_holes(t1 > 0.2)  # nilearn's brain-mask rule, ventricles kept
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)  # no CSF map ships with nilearn
    probs = np.stack([csf, gm, wm], axis=-1)
    return normalise_volume(t1, brain), probs, brain


def mni_slices(image_size: int, resolution_mm: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axial MNI slices: (T1 f32 [Z,S,S] in [-1,1], tissue probs f32 [Z,S,S,3], z index int [Z])."""
    t1, probs, _ = load_mni(resolution_mm)
    images, tissue = [], []
    for z in range(t1.shape[2]):
        images.append(resize(_square(np.rot90(t1[:, :, z]), -1.0), image_size))
        tissue.append(np.clip(resize(_square(np.rot90(probs[:, :, z]), 0.0), image_size), 0, 1))
    return np.stack(images), np.stack(tissue), np.arange(t1.shape[2])


def split_slices(brain_area: np.ndarray, *, block: int = 6, period: int = 4, gap: int = 2,
                 min_area_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) slice indices from per-slice brain areas [Z]: test = every `period`-th block."""
    brain_area = np.asarray(brain_area)
    usable = np.flatnonzero(brain_area >= min_area_fraction * brain_area.max())
    if len(usable) < block * period:
        raise ValueError(f"only {len(usable)} usable slices; need >= block * period = {block * period}.")
    z0 = usable[0]
    is_test = ((usable - z0) // block) % period == period // 2  # first and last blocks stay in training
    test = usable[is_test]
    near = np.zeros_like(is_test)
    for t in test:
        near |= np.abs(usable - t) <= gap
    train = usable[~near]
    return train, test


# ----------------------------------------------------------------------------------------------
# Tumours.

def _contour(rng: np.random.Generator, theta: np.ndarray, radius: float) -> np.ndarray:
    """Irregular radius r(theta) = radius * (1 + sum_k a_k cos(k theta + phi_k)), k = 2..4."""
    r = np.ones_like(theta)
    for k in (2, 3, 4):
        r += rng.uniform(0.3, 1.0) * 0.12 / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return radius * r


def insert_tumour(image: np.ndarray, probs: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Adds a tumour to one slice: (T1 f32 [S,S], labels uint8 [S,S], inserted?).

    image: T1 f32 [S, S] in [-1, 1]; probs: tissue probabilities f32 [S, S, 3]. Returns the
    healthy labels (and the image unchanged) when no centre fits in the brain.
    """
    size = image.shape[0]
    scale = size / _REF_SIZE
    labels = tissue_labels(probs)
    brain = labels > 0
    # Tissue means (normalised units) set the tumour's intensities relative to this scan.
    mean = {c: float(image[labels == c].mean()) if (labels == c).any() else 0.0 for c in TISSUE_CLASSES}
    r_core = rng.uniform(0.05, 0.10) * size
    r_oed = r_core * rng.uniform(1.5, 2.2)
    mass = rng.uniform(0.5, 1.0)
    rim = rng.uniform(1.5, 2.5) * scale
    core_level = mean[GM] * rng.uniform(0.6, 1.0) if mean[GM] > 0 else rng.uniform(-0.2, 0.2)
    rim_level = min(1.0, mean[WM] + rng.uniform(0.1, 0.3))
    oed_factor = rng.uniform(0.75, 0.88)
    depth = ndimage.distance_transform_edt(brain)
    candidates = np.argwhere(depth >= r_core + 1.0)
    if len(candidates) == 0:
        return image, labels, False
    cy, cx = candidates[rng.integers(len(candidates))].astype(np.float64)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    d = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    # Mass effect: output pixel at distance d samples the input at distance d - u(d) >= 0.
    u = mass * r_core * np.exp(-d**2 / (2 * r_oed**2))
    ratio = np.where(d > 0, np.maximum(d - u, 0.0) / np.maximum(d, 1e-9), 0.0)
    coords = np.stack([cy + dy * ratio, cx + dx * ratio])
    warp = lambda a: ndimage.map_coordinates(a, coords, order=1, mode="nearest")
    probs = np.stack([warp(probs[..., c]) for c in range(3)], axis=-1)
    image = warp(image.astype(np.float64))
    labels = tissue_labels(probs)

    core = d <= _contour(rng, theta, r_core)
    oedema = (d <= _contour(rng, theta, r_oed)) & ~core & np.isin(labels, (GM, WM))
    core &= labels > 0
    if not core.any():
        return image.astype(np.float32), labels, False
    inner = ndimage.distance_transform_edt(core)
    heterogeneity = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5 * scale)
    heterogeneity *= 0.05 / max(heterogeneity.std(), 1e-9)
    core_t1 = np.where(inner <= rim, rim_level, core_level + heterogeneity)
    altered = np.where(oedema, oed_factor * (image + 1.0) - 1.0, image)  # x oed_factor in [0, 1] units
    altered = np.where(core, core_t1, altered)
    # Soften edges: blend with a blurred copy only around the lesion.
    lesion = ndimage.gaussian_filter((core | oedema).astype(np.float64), 0.7 * scale) > 1e-3
    altered = np.where(lesion, ndimage.gaussian_filter(altered, 0.7 * scale), altered)
    altered = np.where(labels > 0, altered, -1.0)
    labels = labels.copy()
    labels[oedema] = OEDEMA
    labels[core] = CORE
    return np.clip(altered, -1, 1).astype(np.float32), labels, True


def mni_pairs(image_size: int, split: str, *, variants: int = 4, healthy: bool = True,
              seed: int | None = None, resolution_mm: int = 2, slices: Sequence[int] | None = None
              ) -> dict[str, np.ndarray]:
    """MNI label-map / T1 pairs of one split ('train' | 'test').

    Per slice of the split: the healthy slice (if `healthy`) and `variants` tumour versions, each
    drawn from its own generator seeded by (seed, z, variant) -- default seed TRAIN_SEED / TEST_SEED.
    Returns {"image": f32 [N,S,S,1] in [-1,1], "map": uint8 [N,S,S], "z": int [N],
    "tumour": bool [N]}.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    images, tissue, _ = mni_slices(image_size, resolution_mm)
    area = (tissue_labels(tissue) > 0).sum(axis=(1, 2))
    if slices is None:
        train, test = split_slices(area)
        slices = train if split == "train" else test
    seed = (TRAIN_SEED if split == "train" else TEST_SEED) if seed is None else seed
    out = {"image": [], "map": [], "z": [], "tumour": []}
    for z in slices:
        if healthy:
            out["image"].append(images[z]), out["map"].append(tissue_labels(tissue[z]))
            out["z"].append(z), out["tumour"].append(False)
        for v in range(variants):
            rng = np.random.default_rng([seed, int(z), v])
            img, lab, ok = insert_tumour(images[z], tissue[z], rng)
            out["image"].append(img), out["map"].append(lab), out["z"].append(z), out["tumour"].append(ok)
    return {"image": np.stack(out["image"])[..., None].astype(np.float32),
            "map": np.stack(out["map"]).astype(np.uint8), "z": np.asarray(out["z"], np.int64),
            "tumour": np.asarray(out["tumour"], bool)}


def synthetic_maps(image_size: int, num: int, seed: int, *, resolution_mm: int = 2) -> np.ndarray:
    """uint8 label maps [num,S,S] for sampling: training-slice tissue with fresh seeded tumours."""
    images, tissue, _ = mni_slices(image_size, resolution_mm)
    train, _ = split_slices((tissue_labels(tissue) > 0).sum(axis=(1, 2)))
    rng = np.random.default_rng([seed, 0x53594E])  # "SYN"
    maps = []
    for i in range(num):
        z = int(train[rng.integers(len(train))])
        _, lab, _ = insert_tumour(images[z], tissue[z], np.random.default_rng([seed, 0x53594E, i]))
        maps.append(lab)
    return np.stack(maps).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# User data: NIfTI volumes.

def read_nifti(path: str) -> np.ndarray:
    """Voxel array (float32 [X, Y, Z]) of a 3-D NIfTI file; a trailing singleton axis is dropped."""
    import nibabel as nib

    try:
        data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise ValueError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e})") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume [X, Y, Z]; got shape {data.shape}.")
    return data


# BraTS labels: 1 necrotic / non-enhancing core, 2 oedema, 3 (BraTS 2023) or 4 enhancing tumour.
BRATS_MAPPING = {1: CORE, 2: OEDEMA, 3: CORE, 4: CORE}


def label_volume(image: np.ndarray, seg: np.ndarray, mapping: dict[int, int] | None = BRATS_MAPPING,
                 *, tissue_from_intensity: bool = True, path: str = "") -> np.ndarray:
    """uint8 label volume in CLASS_NAMES from a source segmentation.

    With `mapping` (source value -> class), unmapped nonzero source values are an error; healthy
    brain voxels (image > 0, seg == 0) get CSF / GM / WM by a 3-class multi-Otsu threshold of T1
    when `tissue_from_intensity` (an approximation: BraTS has no tissue labels), else WM. With
    `mapping=None` the source values are used as classes directly (they must be < NUM_CLASSES).
    """
    seg = np.rint(np.asarray(seg)).astype(np.int64)
    if seg.shape != image.shape:
        raise ValueError(f"{path or 'label volume'}: shape {seg.shape} does not match its image {image.shape}.")
    values = set(np.unique(seg).tolist())
    if mapping is None:
        bad = sorted(v for v in values if not 0 <= v < NUM_CLASSES)
        if bad:
            raise ValueError(f"{path or 'label volume'}: label values {bad} outside 0..{NUM_CLASSES - 1} "
                             f"({', '.join(CLASS_NAMES)}); pass a label mapping.")
        return seg.astype(np.uint8)
    bad = sorted(v for v in values if v and v not in mapping)
    if bad:
        raise ValueError(f"{path or 'label volume'}: label values {bad} have no mapping; expected values "
                         f"in {sorted({0, *mapping})}.")
    out = np.zeros(seg.shape, np.uint8)
    healthy = (image > 0) & (seg == 0)
    if tissue_from_intensity and healthy.sum() > 3:
        from skimage.filters import threshold_multiotsu

        t = threshold_multiotsu(image[healthy], classes=3)
        out[healthy] = np.digitize(image[healthy], t) + CSF  # dark CSF < GM < bright WM on T1
    else:
        out[healthy] = WM
    for v, c in mapping.items():
        out[seg == v] = c
    return out


def volume_pairs(image: np.ndarray, labels: np.ndarray, image_size: int, *, axis: int = 2,
                 min_brain_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices of one volume: (T1 f32 [N,S,S,1] in [-1,1], maps uint8 [N,S,S], slice index [N]).

    T1 is normalised per volume (`normalise_volume` over labels > 0); slices along `axis` whose
    brain area is below `min_brain_fraction` of the largest are skipped; each slice is rotated
    (np.rot90), padded square and resized (T1 bilinear, labels nearest).
    """
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must have the same shape.")
    norm = normalise_volume(image, labels > 0)
    norm = np.moveaxis(norm, axis, 0)
    labs = np.moveaxis(labels, axis, 0)
    area = (labs > 0).sum(axis=(1, 2))
    keep = np.flatnonzero(area >= min_brain_fraction * max(area.max(), 1))
    if area.max() == 0:
        keep = np.zeros((0,), np.int64)
    imgs = [resize(_square(np.rot90(norm[i]), -1.0), image_size) for i in keep]
    maps = [resize(_square(np.rot90(labs[i]), 0), image_size, order=0) for i in keep]
    if not imgs:
        s = image_size
        return np.zeros((0, s, s, 1), np.float32), np.zeros((0, s, s), np.uint8), keep
    return (np.clip(np.stack(imgs), -1, 1)[..., None].astype(np.float32),
            np.stack(maps).astype(np.uint8), keep)


def find_brats_cases(root: str) -> list[tuple[str, str, str]]:
    """(case id, T1 path, seg path) for every `*_t1.nii[.gz]` with a matching `*_seg.nii[.gz]` under root."""
    if not os.path.isdir(root):
        raise ValueError(f"BraTS folder {root!r} does not exist.")
    cases = []
    for t1 in sorted(glob.glob(os.path.join(root, "**", "*_t1.nii*"), recursive=True)):
        m = re.match(r"(.*)_t1(\.nii(?:\.gz)?)$", t1)
        if not m:
            continue
        segs = [m.group(1) + "_seg" + ext for ext in (".nii.gz", ".nii")]
        seg = next((s for s in segs if os.path.exists(s)), None)
        if seg is None:
            raise ValueError(f"{t1}: no segmentation next to it (expected {segs[0]}).")
        cases.append((os.path.basename(m.group(1)), t1, seg))
    if not cases:
        raise ValueError(f"No BraTS cases under {root!r}: expected CASE/CASE_t1.nii.gz with CASE_seg.nii.gz.")
    return cases


def find_nifti_pairs(root: str) -> list[tuple[str, str, str]]:
    """(case id, image path, label path): root/images/X.nii[.gz] matched with root/labels/X.nii[.gz]."""
    img_dir, lab_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    for d in (img_dir, lab_dir):
        if not os.path.isdir(d):
            raise ValueError(f"NIfTI pair folder {root!r} needs sub-folders images/ and labels/; {d!r} is missing.")
    strip = lambda f: re.sub(r"\.nii(\.gz)?$", "", f)
    images = {strip(f): os.path.join(img_dir, f) for f in os.listdir(img_dir) if re.search(r"\.nii(\.gz)?$", f)}
    labels = {strip(f): os.path.join(lab_dir, f) for f in os.listdir(lab_dir) if re.search(r"\.nii(\.gz)?$", f)}
    missing = sorted(set(images) ^ set(labels))
    if missing:
        raise ValueError(f"{root}: images/ and labels/ must hold the same case names; unmatched: {missing}.")
    if not images:
        raise ValueError(f"{root}: no .nii/.nii.gz files in images/.")
    return [(k, images[k], labels[k]) for k in sorted(images)]


def load_cases(cases: Iterable[tuple[str, str, str]], image_size: int, *,
               mapping: dict[int, int] | None = BRATS_MAPPING, axis: int = 2) -> dict[str, Any]:
    """Slices of several cases: {"image" f32 [N,S,S,1], "map" uint8 [N,S,S], "case" str [N], "z" [N]}."""
    out = {"image": [], "map": [], "case": [], "z": []}
    for case, img_path, lab_path in cases:
        image = read_nifti(img_path)
        seg = read_nifti(lab_path)
        if seg.shape != image.shape:
            raise ValueError(f"{lab_path}: shape {seg.shape} does not match {img_path} {image.shape}.")
        labels = label_volume(image, seg, mapping, path=lab_path)
        imgs, maps, zs = volume_pairs(image, labels, image_size, axis=axis)
        out["image"].append(imgs), out["map"].append(maps)
        out["case"] += [case] * len(zs)
        out["z"].append(zs)
    s = image_size
    return {"image": np.concatenate(out["image"]) if out["image"] else np.zeros((0, s, s, 1), np.float32),
            "map": np.concatenate(out["map"]) if out["map"] else np.zeros((0, s, s), np.uint8),
            "case": np.asarray(out["case"]), "z": np.concatenate(out["z"]) if out["z"] else np.zeros(0, int)}
