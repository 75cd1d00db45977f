"""Classic (non-ADA) augmentation for lesion ROIs as a grain RandomMap on one example.

Frid-Adar et al. enlarge the 182 liver-lesion ROIs with flips, rotations, translations and scaling
before GAN training; we add a mild brightness/contrast jitter. Each op is a pure numpy function
tested against a numpy/scipy reference; ``Augment`` draws the parameters from the
``np.random.Generator`` that grain passes (seeded by pipeline seed and element index) and applies,
in order: scale -> 90-degree rotation -> flips -> translation -> intensity -> clip to [-1, 1].
All parameters are always drawn (same number of draws whatever is switched off), so disabling one
op does not change the others' randomness. Flips are fine for ROIs; switch them off for images whose
left/right side carries meaning (whole chest X-rays).
"""

import dataclasses
import math

import grain
import numpy as np

PAD_MODES = ("reflect", "edge", "symmetric")  # np.pad modes used outside the image.


def flip(image: np.ndarray, left_right: bool, up_down: bool) -> np.ndarray:
    """Flips [H, W, C] along W (left_right) and/or H (up_down)."""
    if left_right:
        image = image[:, ::-1]
    if up_down:
        image = image[::-1]
    return image


def rotate90(image: np.ndarray, k: int) -> np.ndarray:
    """Rotates [H, W, C] by k quarter turns counter-clockwise (np.rot90 on axes (0, 1))."""
    return np.rot90(image, k, axes=(0, 1))


def translate(image: np.ndarray, dy: int, dx: int, mode: str = "reflect") -> np.ndarray:
    """Shifts [H, W, C] by (dy, dx) integer px (out[i, j] = in[i - dy, j - dx]), filling by np.pad mode."""
    h, w = image.shape[:2]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"translation ({dy}, {dx}) px must be smaller than the image {h}x{w}")
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode {mode!r} not in {PAD_MODES}")
    py, px = abs(dy), abs(dx)
    padded = np.pad(image, ((py, py), (px, px), (0, 0)), mode=mode)
    return padded[py - dy: py - dy + h, px - dx: px - dx + w]


def _interp_axis(image: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of image along axis at float coords in [0, n - 1]."""
    n = image.shape[axis]
    lo = np.clip(np.floor(coords).astype(np.int64), 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = (coords - lo).astype(np.float32)
    shape = [1] * image.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    return np.take(image, lo, axis=axis) * (1.0 - w) + np.take(image, hi, axis=axis) * w


def scale(image: np.ndarray, factor: float, mode: str = "reflect") -> np.ndarray:
    """Zooms [H, W, C] by factor about the centre with bilinear resampling; outside filled by np.pad mode.

    Output pixel (i, j) samples the input at ((i - cy) / factor + cy, (j - cx) / factor + cx), with
    cy = (H - 1) / 2, cx = (W - 1) / 2 (pixel centres aligned).
    """
    if not factor > 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode {mode!r} not in {PAD_MODES}")
    h, w = image.shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ys = (np.arange(h) - cy) / factor + cy
    xs = (np.arange(w) - cx) / factor + cx
    # Pad so that every sample point falls inside; bilinear on the padded grid equals the mode's
    # continuous extension (e.g. 'reflect' == scipy.ndimage 'mirror').
    margin_y = max(0, math.ceil(max(-ys.min(), ys.max() - (h - 1)))) + 1
    margin_x = max(0, math.ceil(max(-xs.min(), xs.max() - (w - 1)))) + 1
    if margin_y >= h or margin_x >= w:
        raise ValueError(f"scale factor {factor} samples too far outside the {h}x{w} image")
    padded = np.pad(image, ((margin_y, margin_y), (margin_x, margin_x), (0, 0)), mode=mode)
    rows = _interp_axis(padded, ys + margin_y, axis=0)
    return _interp_axis(rows, xs + margin_x, axis=1)


def adjust_intensity(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """Returns (x - mean) * contrast + mean + brightness on [H, W, C], mean per channel over H, W."""
    mean = image.mean(axis=(0, 1), keepdims=True)
    return (image - mean) * contrast + mean + brightness


@dataclasses.dataclass(frozen=True)
class Augment(grain.transforms.RandomMap):
    """Random classic augmentation of {"image": float32 [H, W, C] in [-1, 1], "label": ...}."""

    flip: bool = True  # left-right and up-down, each with p = 0.5
    rotate90: bool = True  # k ~ U{0, 1, 2, 3} quarter turns (k in {0, 2} if H != W)
    max_translate_px: int = 4  # dy, dx ~ U{-t, ..., t} px
    scale_range: tuple[float, float] = (0.9, 1.1)  # zoom factor ~ U(lo, hi); (1, 1) = off
    brightness: float = 0.05  # additive offset ~ U(-b, b), in [-1, 1] units (0.05 = 8.75 HU at W 350)
    contrast_range: tuple[float, float] = (0.9, 1.1)  # gain about the image mean ~ U(lo, hi)
    pad_mode: str = "reflect"  # fill outside the image: 'reflect' | 'edge' | 'symmetric'

    def __post_init__(self):
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"Augment.pad_mode={self.pad_mode!r} not in {PAD_MODES}")
        if self.max_translate_px < 0 or self.brightness < 0:
            raise ValueError(f"Augment.max_translate_px={self.max_translate_px} and brightness="
                             f"{self.brightness} must be >= 0")
        for name in ("scale_range", "contrast_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"Augment.{name}={(lo, hi)} must satisfy 0 < lo <= hi")

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        """Augments element["image"] (float32 [H, W, C]); other keys pass through unchanged."""
        image = element.get("image") if isinstance(element, dict) else None
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.float32:
            desc = (f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
                    if image is not None else "missing")
            raise ValueError(f"Augment expects element['image'] float32 [H, W, C]; got {desc}")
        h, w = image.shape[:2]
        left_right, up_down = rng.random(2) < 0.5
        k = int(rng.integers(4))
        t = self.max_translate_px
        dy, dx = (int(v) for v in rng.integers(-t, t + 1, size=2))
        zoom = float(rng.uniform(*self.scale_range))
        offset = float(rng.uniform(-self.brightness, self.brightness))
        gain = float(rng.uniform(*self.contrast_range))

        out = image
        if self.scale_range != (1.0, 1.0):
            out = scale(out, zoom, self.pad_mode)
        if self.rotate90:
            out = rotate90(out, k if h == w else 2 * (k % 2))
        if self.flip:
            out = flip(out, bool(left_right), bool(up_down))
        if t:
            out = translate(out, dy, dx, self.pad_mode)
        out = adjust_intensity(out, offset, gain)
        out = np.clip(out, -1.0, 1.0).astype(np.float32)
        return {**element, "image": np.ascontiguousarray(out)}
