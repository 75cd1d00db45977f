"""Image conversions and sample grids (host-side numpy)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxmedgan import atomic_io


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Maps float images in [-1, 1] (any shape) to uint8 [0, 255], clipping outside values."""
    x = (np.asarray(images, np.float32) + 1.0) * 127.5
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
    """Tiles uint8 images [N, H, W, C] into one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
    n, h, w, c = images.shape
    cols = -(-n // rows)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), images.dtype)
    for i in range(n):
        r, q = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return out


def label_rows(grid_image: np.ndarray, row_labels: Sequence[str], pad: int = 2, margin: int = 4) -> np.ndarray:
    """Prepends a strip naming each row of a `grid` (uint8 [H, W, C], len(row_labels) rows, same `pad`).

    Returns uint8 [H, S + W, C]: S px of black holding each label in white (PIL's default font),
    vertically centred on its row; labels longer than the row is tall overlap the gap, not the images.
    """
    grid_image = np.asarray(grid_image)
    rows = len(row_labels)
    if not rows:
        return grid_image
    h = (grid_image.shape[0] - pad) // rows - pad  # one tile's height (`grid`'s layout)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [probe.textbbox((0, 0), str(label), font=font) for label in row_labels]
    strip = Image.new("L", (max(b[2] for b in boxes) + 2 * margin, grid_image.shape[0]), 0)
    draw = ImageDraw.Draw(strip)
    for r, (label, box) in enumerate(zip(row_labels, boxes)):
        top = pad + r * (h + pad) + (h - (box[3] - box[1])) // 2 - box[1]
        draw.text((margin, top), str(label), fill=255, font=font)
    text = np.repeat(np.asarray(strip, np.uint8)[..., None], grid_image.shape[-1], axis=-1)
    return np.concatenate([text.astype(grid_image.dtype), grid_image], axis=1)


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 [H, W, 1|3] image as PNG, atomically (temp file, then rename)."""
    image = np.asarray(image)
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    atomic_io.write_file(path, lambda tmp: pil.save(tmp, format="PNG"))
