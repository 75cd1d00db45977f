"""Synthetic CT liver-lesion ROIs (cyst / metastasis / hemangioma) for the Frid-Adar et al. study.

Each ROI is rendered in Hounsfield units (HU) as seen in a portal-venous-phase contrast CT, then
mapped to [-1, 1] by a CT window (default level 50 HU / width 350 HU, i.e. [-125, 225] HU):
``x = clip((hu - level) / (width / 2), -1, 1)``.

Appearance rules (what a radiologist uses to tell the three classes apart):

* Background, every class: liver parenchyma at ~+60 HU (55-65 HU per image) with a smooth
  correlated texture (Gaussian-filtered noise, correlation ~3 px, std 4-7 HU); with probability
  0.4 a straight vessel (portal/hepatic vein, 140-170 HU, 1.5-3 px wide) that never touches the
  lesion; plus acquisition (quantum) noise, white then blurred by the reconstruction kernel
  (0.6 px), std 8-14 HU per image.
* Cyst: round (axis ratio 0.85-1), smooth boundary, homogeneous (no internal texture), water-like
  density 0-15 HU, sharp margin (0.3 px edge).
* Metastasis: irregular lobulated boundary (contour harmonics 2-5, amplitude 0.16 / sqrt(k) x
  U(0.5, 1)), axis ratio 0.75-1, hypodense heterogeneous centre (15-40 HU plus correlated 8-14 HU
  heterogeneity) and a brighter enhancing rim (75-110 HU, peaking 1.5-3 px inside the margin,
  1.2-2 px wide), blurry margin (1 px edge).
* Hemangioma: slightly lobulated (3 %), hypodense unenhanced centre (25-50 HU, partial fill-in)
  with peripheral nodular enhancement: 4-7 discontinuous globules (radius 15-26 % of the lesion's)
  at 72-85 % of the radius whose density follows the blood pool (130-170 HU, like the vessels), so
  its periphery is brighter than liver; moderate margin (0.7 px edge).
* Geometry, every class: radius 8-20 px (at 64 px), centre within +-6 px of the ROI centre,
  random orientation; all lengths scale with ``size / 64``.

Every image is drawn from its own generator seeded by ``(seed, class, index)``, so an image does
not depend on how many others were requested (``generate((3, 3, 3), s)`` holds the first three
images per class of ``generate(TRAIN_COUNTS, s)``), and the train and test splits, drawn with
different seeds, never share an image.
"""

from collections.abc import Sequence

import numpy as np

CLASS_NAMES = ("cyst", "metastasis", "hemangioma")
TRAIN_COUNTS = (53, 64, 65)  # 182 lesions, as in Frid-Adar et al. 2018.
TEST_COUNTS = (30, 30, 30)
TRAIN_SEED = 20180101
TEST_SEED = 20180102
WINDOW_LEVEL = 50.0  # HU
WINDOW_WIDTH = 350.0  # HU

_REF_SIZE = 64  # px; all length parameters below are given at this size.


def window_hu(hu: np.ndarray, level: float = WINDOW_LEVEL, width: float = WINDOW_WIDTH) -> np.ndarray:
    """Maps HU (any shape) to float32 in [-1, 1] by a CT window: [level - width/2, level + width/2]."""
    if width <= 0:
        raise ValueError(f"CT window width must be > 0 HU, got width={width}")
    return np.clip((np.asarray(hu, np.float64) - level) / (width / 2.0), -1.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Unit-std correlated noise float64 [size, size]: white noise low-passed by a Gaussian of sigma_px."""
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    transfer = np.exp(-2.0 * np.pi**2 * sigma_px**2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=(size, size))
    return field / max(field.std(), 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float64, same shape as x."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _render(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Renders one ROI: (HU float64 [size, size], lesion mask bool [size, size])."""
    f = size / _REF_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c0 = (size - 1) / 2.0

    # Liver parenchyma with smooth texture.
    liver_hu = rng.uniform(55.0, 65.0)
    hu = liver_hu + rng.uniform(4.0, 7.0) * _smooth_noise(rng, size, 3.0 * f)

    # Lesion geometry: elliptical frame, random orientation, contour radius R(phi) in units of r.
    r = rng.uniform(8.0, 20.0) * f
    cy, cx = c0 + rng.uniform(-6.0, 6.0, size=2) * f
    theta = rng.uniform(0.0, np.pi)
    aspect = rng.uniform(0.85, 1.0) if label == 0 else rng.uniform(0.75, 1.0)
    dy, dx = yy - cy, xx - cx
    u = np.cos(theta) * dx + np.sin(theta) * dy
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    ue, ve = u / r, v / (r * aspect)
    phi = np.arctan2(ve, ue)
    contour = np.ones_like(phi)
    if label == 1:  # Metastasis: lobulated.
        for k in range(2, 6):
            contour += rng.uniform(0.5, 1.0) * 0.16 / np.sqrt(k) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    elif label == 2:  # Hemangioma: slightly lobulated.
        for k in range(3, 6):
            contour += 0.03 * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    rho = np.hypot(ue, ve) / contour  # 1 on the lesion boundary.
    edge_px = (0.3, 1.0, 0.7)[label] * f
    inside = _sigmoid((1.0 - rho) * r / edge_px)

    # Vessel (drawn before the lesion, placed so it never crosses it); parameters are drawn
    # whether or not the vessel is used, so later draws do not depend on the branch.
    has_vessel = rng.uniform() < 0.4
    normal = rng.uniform(0.0, 2 * np.pi)
    side = rng.choice([-1.0, 1.0])
    half_width = rng.uniform(0.75, 1.5) * f
    gap = rng.uniform(3.0, 13.0) * f
    vessel_hu = rng.uniform(140.0, 170.0)
    if has_vessel:
        offset = side * (r * contour.max() + half_width + gap)
        dist = np.abs(dy * np.sin(normal) + dx * np.cos(normal) - offset)
        vessel = _sigmoid((half_width - dist) / (0.5 * f))
        hu = hu * (1 - vessel) + vessel_hu * vessel

    if label == 0:  # Cyst: homogeneous water-like.
        lesion = np.full((size, size), rng.uniform(0.0, 15.0))
    elif label == 1:  # Metastasis: heterogeneous hypodense centre, enhancing rim.
        centre = rng.uniform(15.0, 40.0)
        rim = rng.uniform(75.0, 110.0)
        depth_px = (1.0 - rho) * r  # Approximate distance inside the boundary.
        ring = np.exp(-(((depth_px - rng.uniform(1.5, 3.0) * f) / (rng.uniform(1.2, 2.0) * f)) ** 2))
        lesion = centre + (rim - centre) * ring
        lesion += rng.uniform(8.0, 14.0) * _smooth_noise(rng, size, 1.5 * f) * (1.0 - ring)
    else:  # Hemangioma: hypodense centre, peripheral discontinuous nodular enhancement.
        lesion = np.full((size, size), rng.uniform(25.0, 50.0))
        n_glob = int(rng.integers(4, 8))
        start = rng.uniform(0, 2 * np.pi)
        blood = rng.uniform(130.0, 170.0)
        globules = np.zeros((size, size))
        for j in range(n_glob):
            ang = start + 2 * np.pi * (j + rng.uniform(-0.2, 0.2)) / n_glob
            rad = rng.uniform(0.72, 0.85)
            radius_px = max(rng.uniform(0.15, 0.26) * r, 1.5 * f)
            # Globule centre in the lesion frame, back to pixel offsets.
            gu = rad * np.cos(ang) * r
            gv = rad * np.sin(ang) * r * aspect
            gx = cx + np.cos(theta) * gu - np.sin(theta) * gv
            gy = cy + np.sin(theta) * gu + np.cos(theta) * gv
            blob = _sigmoid((radius_px - np.hypot(yy - gy, xx - gx)) / (0.5 * f))
            globules = np.maximum(globules, blob)
        lesion = lesion * (1.0 - globules) + blood * globules

    hu = hu * (1.0 - inside) + lesion * inside
    # Acquisition noise: white, blurred by the reconstruction kernel.
    noise = _smooth_noise(rng, size, 0.6 * f)
    hu = hu + rng.uniform(8.0, 14.0) * noise
    return hu, rho < 1.0


def generate_with_masks(
    counts: Sequence[int],
    seed: int,
    size: int = 64,
    *,
    window: tuple[float, float] = (WINDOW_LEVEL, WINDOW_WIDTH),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (images float32 [N,size,size,1] in [-1,1], labels int32 [N], masks bool [N,size,size])."""
    if len(counts) != len(CLASS_NAMES):
        raise ValueError(f"counts must give one count per class {CLASS_NAMES}, got counts={tuple(counts)}")
    if any(int(c) < 0 for c in counts):
        raise ValueError(f"counts must be >= 0, got counts={tuple(counts)}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px to hold a lesion, got size={size}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got seed={seed}")
    images, labels, masks = [], [], []
    for label, count in enumerate(counts):
        for i in range(int(count)):
            rng = np.random.default_rng(np.random.SeedSequence([seed, label, i]))
            hu, mask = _render(rng, label, size)
            images.append(hu)
            labels.append(label)
            masks.append(mask)
    n = len(images)
    if n == 0:
        return (np.zeros((0, size, size, 1), np.float32), np.zeros((0,), np.int32),
                np.zeros((0, size, size), bool))
    level, width = window
    x = window_hu(np.stack(images), level, width)[..., None]
    return x, np.asarray(labels, np.int32), np.stack(masks)


def generate(
    counts: Sequence[int],
    seed: int,
    size: int = 64,
    *,
    window: tuple[float, float] = (WINDOW_LEVEL, WINDOW_WIDTH),
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images float32 [N,size,size,1] in [-1,1], labels int32 [N]), in CLASS_NAMES order."""
    images, labels, _ = generate_with_masks(counts, seed, size, window=window)
    return images, labels
