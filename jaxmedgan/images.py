"""Image conversions and sample grids (host-side numpy)."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


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


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 [H, W, 1|3] image as PNG, atomically (temp file, then rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    image = np.asarray(image)
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    tmp = path + ".tmp"
    pil.save(tmp, format="PNG")
    os.replace(tmp, path)
