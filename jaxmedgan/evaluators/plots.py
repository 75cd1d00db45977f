"""ROC curves, confusion matrices and learning curves as PNG, drawn with Pillow (no matplotlib dependency)."""
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


Point = tuple[float, float | None, float | None, float | None]  # (x, value, CI low, CI high)


def _finite(v) -> bool:
    return v is not None and np.isfinite(v)


def learning_curve_figure(series: Sequence[tuple[str, Sequence[Point], Sequence[Point]]],
                          titles: tuple[str, str] = ("balanced accuracy", "macro AUC"),
                          width: int = 960, height: int = 440) -> np.ndarray:
    """uint8 [height, width, 3]: two panels (e.g. balanced accuracy, macro AUC) against the real fraction.

    series: (name, left-panel points, right-panel points) per experiment, each point (fraction, value,
    CI low, CI high); one line per experiment with its 95 % interval as a translucent band (an error
    bar where there is one fraction). Missing values (None / NaN) are left out.
    """
    img = Image.new("RGBA", (width, height), "white")
    bands = Image.new("RGBA", (width, height), (255, 255, 255, 0))
    draw, band_draw = ImageDraw.Draw(img), ImageDraw.Draw(bands)
    font, small = _font(14), _font(12)
    xs = sorted({float(p[0]) for _, a, b in series for p in (*a, *b)}) or [1.0]
    x_lo, x_hi = (xs[0], xs[-1]) if xs[-1] > xs[0] else (xs[0] - 0.5, xs[0] + 0.5)
    panel_w = width // 2
    lines = []  # drawn after the bands are composited

    for panel, title in enumerate(titles):
        left, top, right, bottom = panel * panel_w + 70, 40, (panel + 1) * panel_w - 20, height - 50 - 18 * (
            (len(series) + 1) // 2)
        values = [v for _, *pts in series for p in pts[panel] for v in p[1:] if _finite(v)]
        y0, y1 = (min(values), max(values)) if values else (0.0, 1.0)
        pad = max(0.02, 0.08 * (y1 - y0))
        y0, y1 = max(0.0, y0 - pad), min(1.0, y1 + pad)
        if y1 - y0 < 1e-9:
            y0, y1 = y0 - 0.05, y1 + 0.05

        def fx(x: float) -> float:
            return left + 20 + (x - x_lo) / (x_hi - x_lo) * (right - left - 40)

        def fy(v: float) -> float:
            return bottom - (v - y0) / (y1 - y0) * (bottom - top)

        for t in np.linspace(y0, y1, 6):
            draw.line([(left, fy(t)), (right, fy(t))], fill=(235, 235, 235))
            draw.text((left - 44, fy(t) - 7), f"{t:.2f}", fill="black", font=small)
        for x in xs:
            draw.line([(fx(x), top), (fx(x), bottom)], fill=(245, 245, 245))
            draw.text((fx(x) - 10, bottom + 6), f"{x:g}", fill="black", font=small)
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, 12), f"{title} vs real fraction (95 % CI)", fill="black", font=font)
        draw.text((left + (right - left) / 2 - 70, bottom + 24), "fraction of real training images", fill="black",
                  font=small)
        for i, (name, *pts) in enumerate(series):
            colour = COLOURS[i % len(COLOURS)]
            ok = [p for p in sorted(pts[panel]) if _finite(p[1])]
            with_ci = [p for p in ok if _finite(p[2]) and _finite(p[3])]
            if len(with_ci) > 1:
                band_draw.polygon([(fx(p[0]), fy(p[3])) for p in with_ci] +
                                  [(fx(p[0]), fy(p[2])) for p in reversed(with_ci)], fill=(*colour, 48))
            else:
                for p in with_ci:
                    lines.append(([(fx(p[0]) + 3 * i, fy(p[2])), (fx(p[0]) + 3 * i, fy(p[3]))], colour, 1))
            if len(ok) > 1:
                lines.append(([(fx(p[0]), fy(p[1])) for p in ok], colour, 2))
            lines += [([(fx(p[0]) - 3, fy(p[1]) - 3), (fx(p[0]) + 3, fy(p[1]) + 3)], colour, -1) for p in ok]
            if panel == 0:  # legend once, under both panels, two per row
                lx, ly = 70 + (i % 2) * panel_w, height - 14 - 18 * ((len(series) + 1) // 2 - i // 2)
                draw.rectangle([lx, ly, lx + 12, ly + 12], fill=colour)
                draw.text((lx + 18, ly - 1), name, fill="black", font=small)
    img = Image.alpha_composite(img, bands)
    draw = ImageDraw.Draw(img)
    for xy, colour, w in lines:
        if w < 0:
            draw.ellipse(xy, fill=colour)
        else:
            draw.line(xy, fill=colour, width=w)
    return np.asarray(img.convert("RGB"))


def save(path: str, figure: np.ndarray) -> None:
    """Writes a uint8 [H, W, 3] figure as PNG, atomically."""
    images.save_png(path, figure)
