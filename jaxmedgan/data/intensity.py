"""Native intensities and windows: what a built dataset stores, and how it becomes model input.

A dataset built from user files stores each image's *native* values as float32: Hounsfield units
(or the modality's units) for DICOM after ``stored * RescaleSlope + RescaleIntercept``, the raw
0..255 / 0..65535 values for 8-/16-bit PNG, JPEG and TIFF. Beside each image it stores the window
``(center, width)`` that maps it to the model's [-1, 1] range and whether the display is inverted
(DICOM MONOCHROME1). Windowing is therefore a recorded transform applied when the data is read
(``to_model_range``), and ``from_model_range`` maps generated images back to native units.

Where a window comes from, in order (``WindowSource``):

1. ``class``: a per-class window (``class_windows``, e.g. a CT and an MR class in one dataset);
2. ``argument``: the dataset-wide window (``dataset --window C W``, ``config.data.window_*``);
3. ``tags``: the DICOM file's first WindowCenter / WindowWidth;
4. ``bit-depth``: PNG / JPEG / TIFF without a window: the full range of the file's bit depth
   (8-bit: center 127.5, width 255 -- exactly ``u8 / 127.5 - 1``; 16-bit: 32767.5 / 65535);
5. ``minmax``: a DICOM without window tags: that image's own min..max (a per-image stretch, so
   intensities are not comparable across such images). Builds log a warning with the count and
   record it in the dataset's ``jaxmedgan_dataset.json``.

The linear window is ``y = clip((v - (c - w/2)) / w, 0, 1)``, ``x = 2y - 1`` (inverted:
``x = 1 - 2y``); it differs from DICOM's LINEAR VOI function by under 1/w.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

WINDOW_SOURCES = ("class", "argument", "tags", "bit-depth", "minmax")


@dataclasses.dataclass(frozen=True)
class Window:
    """A linear window: native value `center` maps to 0, center +/- width/2 to +/-1 (or -/+1 inverted)."""

    center: float
    width: float
    invert: bool = False
    source: str = "argument"  # one of WINDOW_SOURCES

    def __post_init__(self):
        if not float(self.width) > 0:
            raise ValueError(f"window width must be > 0; got (center {self.center}, width {self.width}) "
                             f"from {self.source}")
        if self.source not in WINDOW_SOURCES:
            raise ValueError(f"window source {self.source!r} is not one of {WINDOW_SOURCES}")


def to_model_range(native: np.ndarray, center, width, invert=False) -> np.ndarray:
    """Native values [..., H, W, C] -> float32 in [-1, 1] through the window (saturating outside it).

    center, width, invert: scalars, or arrays broadcasting against `native`'s leading batch axis
    (shape [N] for native [N, H, W, C]).
    """
    native = np.asarray(native, np.float32)
    c, w, inv = (np.asarray(v, np.float32) for v in (center, width, invert))
    extra = native.ndim - c.ndim
    c, w, inv = (v.reshape(v.shape + (1,) * extra) for v in (c, w, inv))
    y = np.clip((native - (c - w / 2.0)) / w, 0.0, 1.0)
    y = np.where(inv > 0, 1.0 - y, y)
    return (2.0 * y - 1.0).astype(np.float32)


def from_model_range(x: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Inverse of `to_model_range` inside the window: [-1, 1] -> native float64 values."""
    y = (np.asarray(x, np.float64) + 1.0) / 2.0
    if invert:
        y = 1.0 - y
    return y * float(width) + (float(center) - float(width) / 2.0)


def bit_depth_window(max_value: int) -> Window:
    """The identity window of an integer image with values 0..max_value (255, 65535)."""
    return Window(max_value / 2.0, float(max_value), False, "bit-depth")


def parse_class_windows(text: str | Mapping | None, class_names: Sequence[str] | None = None
                        ) -> dict[str, tuple[float, float]]:
    """'cyst=40/400;mr=300/600' (or a mapping name -> (center, width)) -> {name: (center, width)}.

    Names are checked against `class_names` when given; an unknown name is an error listing them.
    """
    if not text:
        return {}
    if isinstance(text, Mapping):
        items = [(str(k), tuple(v)) for k, v in text.items()]
    else:
        items = []
        for part in str(text).replace(",", ";").split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            c, slash, w = value.partition("/")
            try:
                if not sep or not slash:
                    raise ValueError
                items.append((name.strip(), (float(c), float(w))))
            except ValueError:
                raise ValueError(f"class window {part!r}: expected NAME=CENTER/WIDTH, e.g. 'liver=60/400'") from None
    out = {}
    for name, (c, w) in items:
        if not float(w) > 0:
            raise ValueError(f"class window for {name!r} has width {w}; expected > 0")
        if class_names is not None and name not in class_names:
            raise ValueError(f"class window given for {name!r}, which is not a class of this dataset "
                             f"(classes {list(class_names)})")
        out[name] = (float(c), float(w))
    return out


def summarise(windows: np.ndarray, inverts: np.ndarray, sources: Sequence[str], labels: np.ndarray,
              class_names: Sequence[str]) -> dict:
    """What a build records: per class the window all its images share (or None when they differ),
    and how many images took their window from each source.

    windows: f32 [N, 2] (center, width); inverts: bool [N]; sources: N strings; labels: i32 [N].
    """
    per_class = {}
    for k, name in enumerate(class_names):
        sel = labels == k
        uniq = {(float(c), float(w), bool(i)) for (c, w), i in zip(windows[sel], inverts[sel])}
        per_class[name] = dict(zip(("center", "width", "invert"), uniq.pop())) if len(uniq) == 1 else None
    counts = {s: int(sum(1 for x in sources if x == s)) for s in WINDOW_SOURCES}
    return {"class_windows": per_class, "window_sources": {k: v for k, v in counts.items() if v}}
