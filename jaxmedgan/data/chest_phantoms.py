"""Synthetic PA chest radiographs with co-occurring findings (multi-label), vectorised in numpy.

Stands in for the chest X-rays of the PGGAN / latent-class-optimisation study. An image is a map of
tissue density D (0 = air, ~0.6 = soft tissue / water, ~0.9 = bone over soft tissue) rendered as an
X-ray would be: attenuation A = 3 D, detected photons N ~ Poisson(N0 exp(-A)) with N0 = 3000-8000
per pixel, log transform back to A, detector blur 0.5-0.8 px (at 64 px), and a fixed display window
``x = clip(2 A_measured / A_WINDOW - 1, -1, 1)``: air black, lungs dark, soft tissue and bone bright.

Coordinates: x, y in [-1, 1] across the image (y down); image left (x < 0) is the patient's right,
as on a PA film. Appearance rules of every image (lengths in these units; 1 unit = size / 2 px):

* Body: soft tissue (D 0.58 +- low-frequency texture) between the lateral body walls
  (|x - x0| < chest half-width + 0.09), air outside. Spine (D + 0.12) down the midline, a lucent
  trachea (D - 0.2, 0.07 wide) above the carina (y < -0.25), clavicles rising laterally from y -0.72.
* Lungs: two dark fields (D 0.20 + vessel markings that fade from the hila towards the periphery)
  from the mediastinum (|x - x0| > 0.09-0.13) to the inner chest wall (half-width W 0.78-0.88,
  narrowing towards the apex at y -0.78); each bounded below by a diaphragm dome whose top is at
  y 0.36-0.46 (patient's right) and 0.03-0.08 lower on the left, falling laterally into a sharp,
  deep costophrenic angle 0.24-0.32 below the dome top. Abdomen below the domes is soft tissue.
* Heart: an ellipse of soft tissue (D 0.6) sitting on the domes, shifted 0.05-0.10 to the patient's
  left; its half-width is CTR * W, so the cardiothoracic ratio (heart width / inner thoracic
  width) is CTR, 0.38-0.47 in a normal image.
* Ribs: 10 posterior ribs a side as curved bright bands (D + 0.10 over the lungs, + 0.05 through the
  heart and mediastinum; half-thickness 0.035) descending laterally, 0.13 apart.

Findings (each drawn independently with its own prevalence, so they co-occur; geometry is drawn for
every image and applied only when the finding is present):

* cardiomegaly: enlarged heart silhouette, CTR 0.55-0.66 (> 0.5).
* effusion: on the right, left or both sides (40/40/20 %), the dependent lung fills with fluid
  (D 0.58) up to 0.30-0.50 above the costophrenic angle, the fluid level rising laterally as a
  meniscus (0.08-0.16 higher at the chest wall): costophrenic angle blunted, dome hidden.
* nodule: a round opacity (radius 0.07-0.11, D + 0.38, soft edge) in the lateral lung field.
* consolidation: a patchy opacity (an ellipse of radius 0.14-0.26 modulated 40-100 % by
  thresholded smooth noise, D up to + 0.35) inside one lung.
* pneumothorax: on one side the lung collapses away from the chest wall and apex by 0.12-0.22: a
  lucent rim (D 0.03, no lung markings) between the chest wall and a thin bright visceral pleural
  line, the collapsed lung slightly denser.

A 'no finding' image has an all-zero target row. Images come in chunks of 64 from generators
seeded by ``(seed, chunk)``, so ``generate(n, seed)`` is the first n images of ``generate(m, seed)``
for m >= n and splits with different seeds share no image. Any size >= 16 px; lengths in px scale
with ``size / 64``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FINDING_NAMES = ("cardiomegaly", "effusion", "nodule", "consolidation", "pneumothorax")
DEFAULT_PREVALENCE = (0.3, 0.3, 0.3, 0.3, 0.3)
NUM_TRAIN = 2000
NUM_TEST = 400
TRAIN_SEED = 20180501
TEST_SEED = 20180502
A_WINDOW = 2.9  # attenuation mapped to the display range [-1, 1]: 0 -> -1, A_WINDOW -> +1
CHUNK = 64  # images per generator; image i depends only on (seed, i)

_REF_SIZE = 64  # px; blur and noise lengths are given at this size
_SOFT, _LUNG, _RIM = 0.58, 0.20, 0.03  # densities


def check_size(size: int) -> int:
    """Returns size; raises unless it is >= 16 px."""
    if int(size) != size or size < 16:
        raise ValueError(f"chest phantom image_size must be an integer >= 16 px, got {size}")
    return int(size)


def check_prevalence(prevalence: Sequence[float]) -> np.ndarray:
    """float64 [K] in [0, 1], one per FINDING_NAMES entry."""
    p = np.asarray(prevalence, np.float64)
    if p.shape != (len(FINDING_NAMES),) or not np.all((0 <= p) & (p <= 1)):
        raise ValueError(f"prevalence must give one probability in [0, 1] per finding {FINDING_NAMES}; "
                         f"got {tuple(prevalence)}")
    return p


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gauss_filter(field: np.ndarray, sigma_px: np.ndarray | float) -> np.ndarray:
    """Gaussian low-pass (periodic, FFT) of [N,S,S] with sigma_px (scalar or [N,1,1])."""
    size = field.shape[-1]
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    kernel = np.exp(-2.0 * np.pi**2 * np.asarray(sigma_px) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(field) * kernel, s=field.shape[-2:])


def _smooth_noise(rng: np.random.Generator, n: int, size: int, sigma_px: float) -> np.ndarray:
    """Unit-std (per image) correlated noise float64 [n, size, size]."""
    field = _gauss_filter(rng.standard_normal((n, size, size)), sigma_px)
    return field / np.maximum(field.std(axis=(1, 2), keepdims=True), 1e-12)


def _lung_shape(t, y, medial, wall, apex, dome, angle_depth, e):
    """Soft mask of one lung field in (t = |x - x0|, y); all parameters broadcast [N,1,1]."""
    lateral = wall - 0.28 * np.maximum(0.05 - y, 0.0) ** 2  # chest wall narrows towards the apex
    centre = 0.5 * (medial + wall)
    top = apex + 0.9 * ((t - centre) / (wall - medial)) ** 2
    d0 = medial + 0.45 * (wall - medial)  # the dome's top; it falls laterally into the angle
    bottom = dome + angle_depth * (np.maximum(t - d0, 0.0) / (wall - d0)) ** 2
    mask = _sig((t - medial) / e) * _sig((lateral - t) / e) * _sig((y - top) / e) * _sig((bottom - y) / e)
    return mask, lateral, top, bottom


def _render_chunk(rng: np.random.Generator, n: int, size: int, prevalence: np.ndarray,
                  forced: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """n images: (float32 [n,S,S] in [-1,1], multi-hot f32 [n,K], info dict of [n,...] arrays)."""
    f = size / _REF_SIZE
    e = 1.6 / size  # edge softness: ~0.8 px
    coords = (np.arange(size) - (size - 1) / 2.0) / (size / 2.0)
    y, x = coords[None, :, None], coords[None, None, :]
    u = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1))

    targets = (rng.uniform(size=(n, len(FINDING_NAMES))) < prevalence).astype(np.float32)
    if forced is not None:
        targets = forced.astype(np.float32)
    has = {name: targets[:, k][:, None, None] > 0.5 for k, name in enumerate(FINDING_NAMES)}

    # Anatomy parameters [n,1,1].
    x0 = u(-0.03, 0.03)
    y = y - u(-0.04, 0.04)  # shifts the whole chest up/down
    wall = u(0.78, 0.88)
    medial = u(0.09, 0.13)
    apex = u(-0.82, -0.74)
    dome_r = u(0.36, 0.46)
    dome_l = dome_r + u(0.03, 0.08)
    angle_depth = u(0.24, 0.32)
    ctr_normal, ctr_big = u(0.38, 0.47), u(0.55, 0.66)
    ctr = np.where(has["cardiomegaly"], ctr_big, ctr_normal)
    heart_dx = u(0.05, 0.10)
    heart_ry_factor = u(0.62, 0.75)
    texture = _smooth_noise(rng, n, size, 5.0 * f)
    vessels = _smooth_noise(rng, n, size, 0.8 * f)

    t = np.abs(x - x0)
    right = x < x0  # patient's right = image left
    dome = np.where(right, dome_r, dome_l)
    body = _sig((wall + 0.09 - t) / e)
    density = body * (_SOFT + 0.025 * texture)
    lung, lateral, top, bottom = _lung_shape(t, y, medial, wall, apex, dome, angle_depth, e)

    # Heart: an ellipse resting on the domes, half-width CTR * W.
    rx = ctr * wall
    ry = heart_ry_factor * rx
    hx, hy = x0 + heart_dx, 0.5 * (dome_r + dome_l) + 0.08 - ry
    heart = _sig((1.0 - np.hypot((x - hx) / rx, (y - hy) / ry)) * rx / e)

    # Findings that change the lung field.
    side_draw = rng.uniform(size=(n, 1, 1))  # effusion: right / left / both
    eff_side = np.where(side_draw < 0.4, -1, np.where(side_draw < 0.8, 1, 0))
    eff_height, eff_meniscus = u(0.30, 0.50), u(0.08, 0.16)
    ptx_side = np.where(rng.uniform(size=(n, 1, 1)) < 0.5, -1, 1)
    ptx_rim = u(0.12, 0.22)
    nod_side = np.where(rng.uniform(size=(n, 1, 1)) < 0.5, -1, 1)
    nod_t, nod_y, nod_r = u(0.50, 0.78), u(-0.55, 0.05), u(0.07, 0.11)
    con_side = np.where(rng.uniform(size=(n, 1, 1)) < 0.5, -1, 1)
    con_t, con_y, con_rx, con_ry = u(0.40, 0.65), u(-0.45, 0.05), u(0.14, 0.26), u(0.14, 0.26)
    con_noise = _smooth_noise(rng, n, size, 2.0 * f)
    side = np.where(right, -1, 1)

    # Pneumothorax: the lung shrinks away from the wall and apex; the rim is lucent, unmarked.
    collapsed, *_ = _lung_shape(t, y, medial, wall - ptx_rim, apex + 0.8 * ptx_rim, dome, angle_depth, e)
    sharp, *_ = _lung_shape(t, y, medial, wall - ptx_rim, apex + 0.8 * ptx_rim, dome, angle_depth, e / 3)
    ptx_here = has["pneumothorax"] & (side == ptx_side)
    rim = np.where(ptx_here, np.clip(lung - collapsed, 0.0, 1.0), 0.0)
    pleural_line = np.where(ptx_here, 4.0 * sharp * (1.0 - sharp) * lung, 0.0)  # ~0.5 px wide
    aerated = np.where(ptx_here, collapsed, lung) * (1.0 - heart)

    # Effusion: fluid below a meniscus that rises laterally from 0.18-0.36 above the angle.
    angle_y = dome + angle_depth
    fluid_top = angle_y - eff_height - eff_meniscus * np.clip((t - medial) / (wall - medial), 0, 1) ** 2
    eff_here = has["effusion"] & ((eff_side == 0) | (side == eff_side))
    fluid = np.where(eff_here, _sig((y - fluid_top) / e) * lung, 0.0)
    aerated = aerated * (1.0 - fluid)

    # Lung: markings fade from the hila (t ~ 0.2, y ~ -0.05) to the periphery.
    hilum = np.exp(-(((t - 0.22) / 0.35) ** 2 + ((y + 0.05) / 0.45) ** 2))
    marking = 0.02 + 0.04 * hilum
    lung_density = _LUNG + marking * vessels + 0.08 * hilum
    lung_density = np.where(ptx_here, lung_density + 0.03, lung_density)  # collapsed lung
    density = density * (1.0 - aerated - rim) + aerated * lung_density + rim * _RIM
    density = density + 0.10 * pleural_line

    # Heart, spine, trachea, ribs, clavicles on top.
    density = density + heart * np.clip(0.6 - density, 0.0, None) * (1.0 - fluid)
    density = density + 0.12 * _sig((0.07 - t) / e) * body
    trachea = _sig((0.035 - np.abs(x - x0)) / e) * _sig((-0.25 - y) / e)
    density = density - 0.2 * trachea
    ribs = np.zeros_like(density)
    tr = np.maximum(t - 0.06, 0.0)
    for j in range(10):
        centre = apex + 0.02 + 0.13 * j + 0.45 * tr**2 + 0.04 * tr
        ribs = ribs + np.exp(-(((y - centre) / 0.035) ** 2))
    thorax = _sig((lateral + 0.05 - t) / e) * _sig((bottom + 0.05 - y) / e) * _sig((t - 0.06) / e)
    rib_weight = 0.05 + 0.05 * lung * (1.0 - heart)  # faint through the mediastinum and heart
    density = density + rib_weight * np.clip(ribs, 0.0, 1.0) * thorax
    clavicle = np.exp(-(((y - (-0.72 - 0.22 * np.maximum(t - 0.1, 0.0))) / 0.03) ** 2))
    density = density + 0.14 * clavicle * _sig((0.75 - t) / e) * _sig((t - 0.08) / e)

    # Nodule and consolidation: opacities added inside the lung.
    nod_cx = x0 + nod_side * nod_t * wall
    nodule = _sig((nod_r - np.hypot(x - nod_cx, y - nod_y)) / e)
    nodule = np.where(has["nodule"], nodule, 0.0)
    density = density + 0.38 * nodule
    con_cx = x0 + con_side * con_t * wall
    blob = _sig((1.0 - np.hypot((x - con_cx) / con_rx, (y - con_y) / con_ry)) / 0.15)
    patchy = blob * (0.4 + 0.6 * _sig((con_noise + 0.2) / 0.3)) * aerated
    consolidation = np.where(has["consolidation"], patchy, 0.0)
    density = density + 0.35 * consolidation

    # X-ray detection: blur and noise parameters drawn last so they never shift the anatomy draws.
    blur = u(0.5, 0.8) * f
    n0 = u(3000.0, 8000.0)
    counts = rng.poisson(n0 * np.exp(-3.0 * np.clip(density, 0.0, None)))
    measured = _gauss_filter(-np.log(np.maximum(counts, 1) / n0), blur)
    images = np.clip(2.0 * measured / A_WINDOW - 1.0, -1.0, 1.0).astype(np.float32)

    sq = lambda a: a[:, 0, 0]
    info = {
        "ctr": sq(ctr), "wall": sq(wall), "x0": sq(x0), "heart_cx": sq(hx) * np.ones(n), "heart_rx": sq(rx),
        "lung": lung > 0.5, "heart": heart > 0.5, "aerated": aerated > 0.5, "fluid": fluid > 0.5,
        "rim": rim > 0.5, "nodule": nodule > 0.5, "consolidation": consolidation > 0.5,
        "effusion_side": sq(eff_side), "pneumothorax_side": sq(ptx_side),
    }
    return images, targets, info


def generate_with_info(
    n: int, seed: int, image_size: int = 64, prevalence: Sequence[float] = DEFAULT_PREVALENCE,
    targets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(images f32 [N,S,S,1] in [-1,1], targets f32 [N,K] multi-hot in FINDING_NAMES order, info).

    `targets` (f32 [N,K]) forces the findings instead of drawing them with `prevalence`; the
    anatomy of image i stays the same, so a test can render one chest with and without a finding.
    info: 'ctr', 'wall', 'x0', 'heart_cx', 'heart_rx', 'effusion_side' (-1 right, +1 left, 0 both),
    'pneumothorax_side' [N]; bool masks [N,S,S] 'lung' (whole field), 'aerated' (air-filled lung),
    'heart', 'fluid', 'rim' (pneumothorax), 'nodule', 'consolidation'.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    size = check_size(image_size)
    p = check_prevalence(prevalence)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got seed={seed}")
    k = len(FINDING_NAMES)
    if targets is not None:
        targets = np.asarray(targets, np.float32)
        if targets.shape != (n, k):
            raise ValueError(f"targets must be [n, {k}] = {(n, k)} for findings {FINDING_NAMES}; "
                             f"got {targets.shape}")
    if n == 0:
        return np.zeros((0, size, size, 1), np.float32), np.zeros((0, k), np.float32), {}
    images, all_targets, infos = [], [], []
    for chunk in range((n + CHUNK - 1) // CHUNK):
        rng = np.random.default_rng(np.random.SeedSequence([seed, chunk]))
        lo, hi = chunk * CHUNK, min(n, (chunk + 1) * CHUNK)
        forced = None
        if targets is not None:  # pad the forced rows; the chunk always renders CHUNK images
            forced = np.zeros((CHUNK, k), np.float32)
            forced[:hi - lo] = targets[lo:hi]
        im, tg, info = _render_chunk(rng, CHUNK, size, p, forced)
        images.append(im[:hi - lo])
        all_targets.append(tg[:hi - lo])
        infos.append({key: v[:hi - lo] for key, v in info.items()})
    info = {key: np.concatenate([i[key] for i in infos]) for key in infos[0]}
    return np.concatenate(images)[..., None], np.concatenate(all_targets), info


def generate(n: int, seed: int, image_size: int = 64,
             prevalence: Sequence[float] = DEFAULT_PREVALENCE) -> tuple[np.ndarray, np.ndarray]:
    """(images f32 [N,S,S,1] in [-1,1], targets f32 [N,K] multi-hot over FINDING_NAMES)."""
    images, targets, _ = generate_with_info(n, seed, image_size, prevalence)
    return images, targets
