"""Readers for user image folders ``DIR/<class_name>/*.png|*.jpg|*.jpeg|*.dcm|*.dicom`` -> float32 in [-1, 1].

PNG / JPEG (Pillow): 8-bit images map ``u8 / 127.5 - 1``; 16-bit grayscale PNGs map
``u16 / 32767.5 - 1`` (full 16-bit range, no per-image stretch). ``channels=1`` reads grayscale
('L'); an RGB file is accepted for ``channels=1`` only if its three channels are equal (a gray
image saved as RGB), otherwise it is an error rather than a silent colour-to-gray conversion.
``channels=3`` reads 'RGB' (a gray file is replicated into three channels).

DICOM (pydicom), windowing, in this order:

1. Modality rescale to Hounsfield units: ``hu = stored * RescaleSlope + RescaleIntercept``
   (slope 1 / intercept 0 when the tags are absent).
2. Window ``(center, width)``: the ``window`` argument if given, else the file's first
   ``WindowCenter`` / ``WindowWidth`` values, else the image's own min..max.
   ``y = clip((hu - (center - width / 2)) / width, 0, 1)`` (the plain linear window; it differs
   from DICOM's exact LINEAR VOI function by under 1 / width).
3. ``MONOCHROME1`` (bright = low values) is inverted: ``y = 1 - y``.
4. ``x = 2 * y - 1``.

Colour DICOMs (SamplesPerPixel 3) are scaled by their bit depth, without rescale or window.
Every file must already be ``image_size`` px with ``channels`` channels unless ``resize=True``
(bilinear, antialiased, in float); any mismatch, unreadable file, empty class folder or folder
without class sub-folders is a ValueError that names the path and what was expected.
"""

from collections.abc import Sequence
import logging
import os

import numpy as np
from PIL import Image

PIL_EXTENSIONS = (".png", ".jpg", ".jpeg")
DICOM_EXTENSIONS = (".dcm", ".dicom")
IMAGE_EXTENSIONS = PIL_EXTENSIONS + DICOM_EXTENSIONS


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int or an (H, W) pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _pil_to_unit(path: str, channels: int) -> np.ndarray:
    """Reads a PNG/JPEG as float64 [H, W, channels] in [0, 1]."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img).astype(np.float64)
            else:
                arr = np.asarray(img.convert("RGB"), np.float64)
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError).
        raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    if mode == "F":
        raise ValueError(f"{path}: floating-point (mode 'F') images are not supported; "
                         "expected 8-bit or 16-bit PNG/JPEG")
    if mode.startswith("I"):  # 16-bit grayscale (Pillow opens it as 'I;16' or 'I').
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"{path}: mode {mode!r} image has values in [{arr.min()}, {arr.max()}]; "
                             "expected 16-bit values 0..65535")
        unit = arr[..., None] / 65535.0
    elif mode in ("L", "LA", "1") or (mode == "P" and _is_gray(arr)):
        unit = arr[..., :1] / 255.0
    else:
        unit = arr / 255.0
    return _to_channels(unit, channels, path)


def _is_gray(rgb: np.ndarray) -> bool:
    """True if an [H, W, 3] image has three equal channels."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


def _to_channels(unit: np.ndarray, channels: int, path: str) -> np.ndarray:
    """Converts [H, W, 1|3] to [H, W, channels]; refuses to drop colour information."""
    c = unit.shape[-1]
    if c == channels:
        return unit
    if c == 1 and channels == 3:
        return np.repeat(unit, 3, axis=-1)
    if c == 3 and channels == 1:
        if _is_gray(unit):
            return unit[..., :1]
        raise ValueError(f"{path}: colour image of shape {unit.shape} (H, W, C) has distinct RGB "
                         f"channels; expected {channels} channel (set channels=3 to keep colour)")
    raise ValueError(f"{path}: image has {c} channels; expected {channels}")


def dicom_window(
    hu: np.ndarray, window: tuple[float, float] | None, ds, path: str = "<dicom>"
) -> tuple[float, float]:
    """Returns the (center, width) used for a DICOM: `window`, else the file's tags, else min..max."""
    if window is not None:
        center, width = float(window[0]), float(window[1])
        source = "window argument"
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        wc, ww = ds.WindowCenter, ds.WindowWidth
        center = float(wc[0] if _is_multi(wc) else wc)
        width = float(ww[0] if _is_multi(ww) else ww)
        source = "WindowCenter/WindowWidth tags"
    else:
        lo, hi = float(hu.min()), float(hu.max())
        return (lo + hi) / 2.0, hi - lo
    if not width > 0:
        raise ValueError(f"{path}: window width from {source} is {width}; expected > 0")
    return center, width


def _is_multi(value) -> bool:
    """True for pydicom MultiValue / list values (a tag holding several windows)."""
    from pydicom.multival import MultiValue

    return isinstance(value, (list, tuple, MultiValue))


def _dicom_to_unit(path: str, channels: int, window: tuple[float, float] | None) -> np.ndarray:
    """Reads a DICOM as float64 [H, W, channels] in [0, 1] (rescale, window, MONOCHROME1 inversion)."""
    import pydicom  # Imported on use: only DICOM folders need it.

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as e:  # InvalidDicomError, missing PixelData, unsupported transfer syntax, ...
        raise ValueError(f"{path}: cannot read DICOM pixel data ({type(e).__name__}: {e})") from e
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ValueError(f"{path}: DICOM has {frames} frames of shape {pixels.shape[-3:]}; "
                         "expected a single 2-D slice")
    if samples == 3:
        bits = int(ds.get("BitsStored", 8))
        unit = pixels.astype(np.float64) / float(2**bits - 1)
        return _to_channels(np.clip(unit, 0.0, 1.0), channels, path)
    if samples != 1 or pixels.ndim != 2:
        raise ValueError(f"{path}: DICOM pixel array of shape {pixels.shape} with SamplesPerPixel="
                         f"{samples}; expected a single 2-D slice")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    hu = pixels.astype(np.float64) * slope + intercept
    center, width = dicom_window(hu, window, ds, path)
    if width > 0:
        unit = np.clip((hu - (center - width / 2.0)) / width, 0.0, 1.0)
    else:  # Constant image without a window: map to 0.
        unit = np.zeros_like(hu)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        unit = 1.0 - unit
    return _to_channels(unit[..., None], channels, path)


def _resize(unit: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of float [H, W, C] in [0, 1] to hw, per channel, in float32."""
    h, w = hw
    out = [np.asarray(Image.fromarray(unit[..., c].astype(np.float32), mode="F")
                      .resize((w, h), Image.Resampling.BILINEAR)) for c in range(unit.shape[-1])]
    return np.clip(np.stack(out, axis=-1), 0.0, 1.0)


def read_image(
    path: str,
    *,
    image_size: int | Sequence[int] | None = None,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    resize: bool = False,
) -> np.ndarray:
    """Reads one PNG/JPEG/DICOM as float32 [H, W, channels] in [-1, 1] (H, W = image_size if given)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    ext = os.path.splitext(path)[1].lower()
    if ext in DICOM_EXTENSIONS:
        unit = _dicom_to_unit(path, channels, window)
    elif ext in PIL_EXTENSIONS:
        unit = _pil_to_unit(path, channels)
    else:
        raise ValueError(f"{path}: unsupported extension {ext!r}; expected one of {IMAGE_EXTENSIONS}")
    if image_size is not None:
        hw = _as_hw(image_size)
        if unit.shape[:2] != hw:
            if not resize:
                raise ValueError(f"{path}: image shape {unit.shape} (H, W, C) does not match expected "
                                 f"{(*hw, channels)}; resize the files or pass resize=True")
            unit = _resize(unit, hw)
    return (unit * 2.0 - 1.0).astype(np.float32)


def list_image_folder(root: str) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """Returns (class_names sorted, [(file path, label)] sorted by class then file name)."""
    if not os.path.isdir(root):
        raise ValueError(f"Image folder {root!r} does not exist or is not a directory; expected "
                         "DIR/<class_name>/*.png|*.jpg|*.dcm")
    class_names = tuple(sorted(d for d in os.listdir(root)
                               if not d.startswith(".") and os.path.isdir(os.path.join(root, d))))
    if not class_names:
        raise ValueError(f"Image folder {root!r} has no class sub-folders; expected "
                         "DIR/<class_name>/*.png|*.jpg|*.dcm")
    files = []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(root, name)
        entries = sorted(f for f in os.listdir(class_dir) if not f.startswith("."))
        images = [f for f in entries if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(class_dir, f))]
        if not images:
            raise ValueError(f"Class folder {class_dir!r} holds no images; expected files ending in "
                             f"{', '.join(IMAGE_EXTENSIONS)} (case-insensitive)")
        ignored = sorted(set(entries) - set(images))
        if ignored:
            logging.warning("Ignoring %d non-image entries in %s, e.g. %s", len(ignored), class_dir,
                            ignored[:3])
        files.extend((os.path.join(class_dir, f), label) for f in images)
    return class_names, files


def read_image_folder(
    root: str,
    *,
    image_size: int | Sequence[int] = 64,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    resize: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Reads DIR/<class>/* into (images float32 [N,H,W,C] in [-1,1], labels int32 [N], class_names sorted)."""
    class_names, files = list_image_folder(root)
    images = [read_image(path, image_size=image_size, channels=channels, window=window, resize=resize)
              for path, _ in files]
    labels = np.asarray([label for _, label in files], np.int32)
    return np.stack(images), labels, class_names
