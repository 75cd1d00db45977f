"""ROC curves and confusion matrices as PNG, drawn with Pillow (no matplotlib dependency)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxmedgan import images

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def roc_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]], title: str,
               size: int = 480) -> np.ndarray:
    """uint8 [size, size, 3]: one ROC polyline per (name, fpr [M], tpr [M], auc), chance diagonal, legend."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    left, top, right, bottom = 56, 36, size - 16, size - 48
    w, h = right - left, bottom - top

    def xy(fx: float, fy: float) -> tuple[float, float]:
        return left + fx * w, bottom - fy * h

    for t in np.linspace(0, 1, 6):  # grid and ticks every 0.2
        draw.line([xy(t, 0), xy(t, 1)], fill=(235, 235, 235))
        draw.line([xy(0, t), xy(1, t)], fill=(235, 235, 235))
        draw.text((xy(t, 0)[0] - 8, bottom + 6), f"{t:.1f}", fill="black", font=small)
        draw.text((left - 30, xy(0, t)[1] - 7), f"{t:.1f}", fill="black", font=small)
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.line([xy(0, 0), xy(1, 1)], fill=(160, 160, 160), width=1)
    for i, (name, fpr, tpr, auc) in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        draw.line([xy(float(a), float(b)) for a, b in zip(fpr, tpr)], fill=colour, width=2)
        draw.rectangle([right - 190, bottom - 20 - 18 * (len(curves) - i), right - 178, bottom - 8 - 18 * (len(curves) - i)],
                       fill=colour)
        draw.text((right - 172, bottom - 22 - 18 * (len(curves) - i)), f"{name} (AUC {auc:.3f})", fill="black",
                  font=small)
    draw.text((left, 10), title, fill="black", font=font)
    draw.text((left + w / 2 - 60, size - 24), "1 - specificity (FPR)", fill="black", font=small)
    label = Image.new("RGB", (h, 16), "white")
    ImageDraw.Draw(label).text((h / 2 - 50, 0), "sensitivity (TPR)", fill="black", font=small)
    img.paste(label.rotate(90, expand=True), (2, top))
    return np.asarray(img)


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str, cell: int = 90) -> np.ndarray:
    """uint8 [H, W, 3]: counts per (true row, predicted column), shaded by row-normalised rate."""
    cm = np.asarray(cm, np.int64)
    k = len(class_names)
    left, top = 130, 70
    width, height = left + k * cell + 20, top + k * cell + 40
    img = Image.new("RGB", (max(width, 360), height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    rows = np.maximum(cm.sum(1, keepdims=True), 1)
    for i in range(k):
        for j in range(k):
            rate = cm[i, j] / rows[i, 0]
            shade = tuple(int(255 - rate * (255 - c)) for c in (31, 119, 180))
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=shade, outline="black")
            colour = "white" if rate > 0.6 else "black"
            draw.text((x0 + cell / 2 - 16, y0 + cell / 2 - 14), f"{cm[i, j]}", fill=colour, font=font)
            draw.text((x0 + cell / 2 - 18, y0 + cell / 2 + 4), f"{100 * rate:.0f}%", fill=colour, font=small)
        draw.text((6, top + i * cell + cell / 2 - 7), str(class_names[i])[:16], fill="black", font=small)
        draw.text((left + i * cell + 4, top - 18), str(class_names[i])[:12], fill="black", font=small)
    draw.text((left, top - 38), "predicted", fill="black", font=small)
    draw.text((6, top - 18), "true", fill="black", font=small)
    draw.text((6, 6), title, fill="black", font=font)
    return np.asarray(img)


def save(path: str, figure: np.ndarray) -> None:
    """Writes a uint8 [H, W, 3] figure as PNG, atomically."""
    images.save_png(path, figure)
