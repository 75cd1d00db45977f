"""Synthetic lateral spine radiographs (normal / compression fracture / lytic / sclerotic lesion).

Stands in for the lateral spine X-rays of the Schonfeld & Veeravagu GAN study. Each image is
rendered as an X-ray would be: a map of attenuation line integrals A (soft tissue + bone) is
turned into detected photon counts N ~ Poisson(N0 * exp(-A)), log-transformed back to A, blurred
by the detector's point-spread function and displayed bone-bright through a fixed window:
``x = clip(2 * A_measured / A_WINDOW - 1, -1, 1)``.

Appearance rules (what a radiologist uses to tell the classes apart), lengths at 64 px:

* Background, every class: soft tissue A ~ 0.55-0.75 with a smooth antero-posterior thickness
  gradient and low-frequency texture; quantum noise from N0 = 1500-4000 counts per pixel
  (noisier where bone attenuates more), detector blur 0.6-0.9 px.
* Spine, every class: a column of vertebral bodies (width 19-24 px, height 10-13 px, +-6 % per
  body) separated by discs (3-4.5 px, slightly denser than soft tissue), following a gently
  curved (lordotic) axis tilted up to +-8 deg, anterior side to the left as in a lateral film.
  Each body is a rounded rectangle with biconcave endplates: cancellous interior (A + 0.55-0.8,
  fine trabecular texture), a thin bright cortex (1.3 px) and brighter endplate lines; behind it
  the posterior elements (pedicle/arch) as a fainter ellipse. Normal bodies vary in height by at
  most a few percent front to back.
* One target body near the image centre carries the class finding:
  - normal: none;
  - compression_fracture: wedge deformity, anterior height reduced by 25-45 % (posterior height
    kept) with a dense impaction band (+35-60 % bone) under the depressed superior endplate;
  - lytic_lesion: a lucent focus inside the body (radius 20-32 % of the body height), bone
    density reduced to 10-30 %, soft margin (0.7 px);
  - sclerotic_lesion: a dense focus (radius 15-28 % of the body height) at 1.8-2.6x the
    cancellous density, brighter than the cortex, slightly irregular margin.

Every image comes from its own generator seeded by ``(seed, class, index)``, so an image does not
depend on how many others were requested, and the train and test splits (different seeds) share
no image. Sizes: any power of two >= 16 px (default 64); all lengths scale with ``size / 64``.
"""

from collections.abc import Sequence

import numpy as np

CLASS_NAMES = ("normal", "compression_fracture", "lytic_lesion", "sclerotic_lesion")
TRAIN_COUNTS = (250, 250, 250, 250)
TEST_COUNTS = (50, 50, 50, 50)
TRAIN_SEED = 20200301
TEST_SEED = 20200302
A_WINDOW = 3.2  # attenuation mapped to the display range [-1, 1]: 0 -> -1, A_WINDOW -> +1

_REF_SIZE = 64  # px; all lengths below are given at this size


def check_size(size: int) -> int:
    """Returns size; raises unless it is a power of two >= 16 px."""
    if size < 16 or size & (size - 1):
        raise ValueError(f"spine phantom size must be a power of two >= 16 px, got size={size}")
    return size


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Unit-std correlated noise float64 [size, size]: white noise low-passed by a Gaussian of sigma_px."""
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    field = np.fft.irfft2(np.fft.rfft2(white) * np.exp(-2.0 * np.pi**2 * sigma_px**2 * (fx**2 + fy**2)),
                          s=(size, size))
    return field / max(field.std(), 1e-12)


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (periodic FFT convolution; the image edges are soft tissue) of [size, size]."""
    size = image.shape[0]
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.fft.irfft2(np.fft.rfft2(image) * np.exp(-2.0 * np.pi**2 * sigma_px**2 * (fx**2 + fy**2)),
                         s=image.shape)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _render(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, dict]:
    """One radiograph: (display image float32 [size, size] in [-1, 1], info about the target body)."""
    f = size / _REF_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c0 = (size - 1) / 2.0

    # Soft tissue: thickness gradient across the body plus smooth texture.
    grad_dir = rng.uniform(-0.3, 0.3)
    soft = (rng.uniform(0.55, 0.75) + grad_dir * (xx - c0) / size
            + 0.04 * _smooth_noise(rng, size, 6.0 * f))

    # Spine axis x = cx + bend * ((y - c0) / size)^2 + tilt * (y - c0): gently curved and tilted.
    tilt = np.tan(np.deg2rad(rng.uniform(-8.0, 8.0)))
    bend = rng.uniform(-12.0, 12.0) * f
    cx = c0 + rng.uniform(-4.0, 4.0) * f
    axis_x = lambda y: cx + bend * ((y - c0) / size) ** 2 + tilt * (y - c0)
    axis_slope = lambda y: 2 * bend * (y - c0) / size**2 + tilt

    width = rng.uniform(19.0, 24.0) * f
    height = rng.uniform(10.0, 13.0) * f
    disc = rng.uniform(3.0, 4.5) * f
    pitch = height + disc
    n_bodies = int(np.ceil(size / pitch)) + 2
    offset = rng.uniform(0.0, pitch)
    centres_y = c0 - (n_bodies // 2) * pitch + offset + np.arange(n_bodies) * pitch
    target = int(np.argmin(np.abs(centres_y - c0)))  # the body nearest the image centre

    cancellous = rng.uniform(0.55, 0.8)
    bone = np.zeros((size, size))
    trabecular = _smooth_noise(rng, size, 0.7 * f)
    info: dict = {}
    for i, cy in enumerate(centres_y):
        h = height * rng.uniform(0.94, 1.06)
        w = width * rng.uniform(0.97, 1.03)
        theta = np.arctan(axis_slope(cy))
        bx = axis_x(cy)
        # Local body frame: u across (anterior < 0 on the left), v along the spine (down > 0).
        dx, dy = xx - bx, yy - cy
        u = np.cos(theta) * dx + np.sin(theta) * dy
        v = -np.sin(theta) * dx + np.cos(theta) * dy
        un = np.clip(2.0 * u / w, -1.5, 1.5)
        concave = rng.uniform(0.4, 0.9) * f  # biconcave endplates: depth at the centre, px
        natural_wedge = rng.uniform(-0.04, 0.04) * h  # normal front/back height difference
        wedge_loss = rng.uniform(0.25, 0.45) if (i == target and label == 1) else 0.0
        # Endplates as functions of the normalised across-body coordinate (-1 anterior, +1 posterior);
        # a compression fracture depresses the superior endplate anteriorly by wedge_loss * h.
        top_at = lambda s: (-h / 2 + concave * (1 - s**2) + natural_wedge * (0.5 - 0.5 * s)
                            + wedge_loss * h * (0.5 - 0.5 * s))
        bottom_at = lambda s: h / 2 - concave * (1 - s**2)
        top, bottom = top_at(un), bottom_at(un)
        edge = 0.35 * f
        inside_u = _sigmoid((w / 2 - np.abs(u)) / edge)
        inside_v = _sigmoid((v - top) / edge) * _sigmoid((bottom - v) / edge)
        body = inside_u * inside_v
        # Cortex: a shell just inside the outline; endplates (top/bottom) are denser lines.
        depth = np.minimum.reduce([w / 2 - np.abs(u), v - top, bottom - v])
        cortex = np.exp(-((depth - 0.6 * f) / (1.3 * f)) ** 2) * body
        endplate = np.exp(-((np.minimum(v - top, bottom - v) - 0.6 * f) / (1.0 * f)) ** 2) * body
        density = cancellous * (1.0 + 0.12 * trabecular)
        body_att = body * density + 0.55 * cortex + 0.35 * endplate
        # Posterior elements: a fainter ellipse behind (to the right of) the body.
        pu, pv = u - (w / 2 + 0.35 * w), v + 0.1 * h
        arch = _sigmoid((1.0 - np.hypot(pu / (0.38 * w), pv / (0.42 * h))) / 0.12)
        body_att = body_att + 0.35 * cancellous * arch * (1 - body)
        if i == target:
            # Body height near the anterior / posterior edges (at 80 % of the half-width), px.
            info = {"body": body > 0.5, "u": u, "v": v, "width": w, "height": h, "wedge_loss": wedge_loss,
                    "anterior_height": float(bottom_at(-0.8) - top_at(-0.8)),
                    "posterior_height": float(bottom_at(0.8) - top_at(0.8))}
            lesion = np.zeros((size, size))
            if label == 1:  # impaction band under the depressed endplate
                band = np.exp(-((v - top - 1.5 * f) / (1.5 * f)) ** 2) * body * (0.5 - 0.5 * un)
                body_att = body_att + rng.uniform(0.35, 0.6) * cancellous * band
            elif label in (2, 3):
                radius = (rng.uniform(0.2, 0.32) if label == 2 else rng.uniform(0.15, 0.28)) * h
                lu = rng.uniform(-0.25, 0.25) * w
                lv = rng.uniform(-0.15, 0.15) * h
                ang = np.arctan2(v - lv, u - lu)
                wobble = 1.0 + (0.12 if label == 3 else 0.05) * np.cos(3 * ang + rng.uniform(0, 2 * np.pi))
                dist = np.hypot(u - lu, v - lv) / (radius * wobble)
                lesion = _sigmoid((1.0 - dist) * radius / (0.7 * f)) * body
                if label == 2:  # lytic: bone destroyed inside the focus
                    keep = rng.uniform(0.1, 0.3)
                    body_att = body_att * (1 - lesion) + body_att * keep * lesion
                else:  # sclerotic: dense focus, brighter than the cortex
                    body_att = body_att + rng.uniform(0.8, 1.6) * cancellous * lesion
            info["lesion"] = lesion > 0.5
        bone = bone + body_att

    # Discs: slightly denser than soft tissue within the column.
    axis_dist = np.abs((xx - axis_x(yy)) * np.cos(np.arctan(axis_slope(yy))))
    column = _sigmoid((width / 2 - axis_dist) / (0.5 * f))
    attenuation = soft + 0.12 * column + bone

    # X-ray detection: Poisson counts, log transform, detector blur, display window.
    n0 = rng.uniform(1500.0, 4000.0)
    counts = rng.poisson(n0 * np.exp(-attenuation))
    measured = -np.log(np.maximum(counts, 1) / n0)
    measured = _blur(measured, rng.uniform(0.6, 0.9) * f)
    image = np.clip(2.0 * measured / A_WINDOW - 1.0, -1.0, 1.0).astype(np.float32)
    return image, info


def generate_with_info(
    counts: Sequence[int], seed: int, size: int = 64
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(images float32 [N,size,size,1] in [-1,1], labels int32 [N], per-image target-body info).

    info has bool masks 'body' and 'lesion' [size, size] of the target vertebra, its local frame
    ('u', 'v' px), 'width', 'height', 'wedge_loss' and the endplate distance near the anterior and
    posterior edges ('anterior_height', 'posterior_height', px).
    """
    if len(counts) != len(CLASS_NAMES):
        raise ValueError(f"counts must give one count per class {CLASS_NAMES}, got counts={tuple(counts)}")
    if any(int(c) < 0 for c in counts):
        raise ValueError(f"counts must be >= 0, got counts={tuple(counts)}")
    check_size(size)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got seed={seed}")
    images, labels, infos = [], [], []
    for label, count in enumerate(counts):
        for i in range(int(count)):
            rng = np.random.default_rng(np.random.SeedSequence([seed, label, i]))
            image, info = _render(rng, label, size)
            images.append(image)
            labels.append(label)
            infos.append(info)
    if not images:
        return np.zeros((0, size, size, 1), np.float32), np.zeros((0,), np.int32), []
    return np.stack(images)[..., None], np.asarray(labels, np.int32), infos


def generate(counts: Sequence[int], seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N,size,size,1] in [-1,1], labels int32 [N]), in CLASS_NAMES order."""
    images, labels, _ = generate_with_info(counts, seed, size)
    return images, labels
