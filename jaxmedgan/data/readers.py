"""Readers for user image files and folders ``DIR/<class_name>/*``: native values and [-1, 1].

``read_native`` returns what a file holds (``NativeImage``): float32 pixels in the file's own
units and the window that file suggests; ``read_image`` applies a window on top (``intensity``).

PNG / JPEG / TIFF (Pillow): 8-bit images hold 0..255, 16-bit grayscale PNG / TIFF 0..65535 (no
quantisation, no per-image stretch); their default window is the bit depth's full range, so
an 8-bit file maps ``u8 / 127.5 - 1`` and a 16-bit one ``u16 / 32767.5 - 1``. ``channels=1``
reads grayscale; an RGB file is accepted for ``channels=1`` only if its three channels are equal
(a gray image saved as RGB), otherwise it is an error rather than a silent colour-to-gray
conversion. ``channels=3`` reads RGB (a gray file is replicated into three channels).

NIfTI volumes (``.nii`` / ``.nii.gz``, nibabel) in a class folder contribute their slices along
one axis (``read_nifti_slices``), windowed by the volume's min..max unless a window is given.

DICOM (pydicom) is recognised by content (the ``DICM`` marker at byte 128), so files without an
extension (``IM_0001``) are read too; ``.dcm`` / ``.dicom`` files without the marker are tried as
well. Native values are ``stored * RescaleSlope + RescaleIntercept`` (Hounsfield units for CT;
slope 1 / intercept 0 when absent); the suggested window is the first WindowCenter / WindowWidth
(source ``tags``), else the image's own min..max (source ``minmax``, announced by the builders);
``MONOCHROME1`` (bright = low values) sets ``invert``. Colour DICOMs (SamplesPerPixel 3) hold
their stored values with a bit-depth window.

Resizing (``resize``) acts on native values: ``area`` (box-filter resample to N x N; bilinear
when enlarging), ``pad`` (an image no larger than N x N is padded to it with its minimum, without
resampling, e.g. MedMNIST 28 -> 32; a larger one is padded to a square, then area), ``crop``
(centre square, then area); ``none`` refuses a file of another size. Any mismatch, unreadable file, empty class
folder or folder without class sub-folders is a ValueError that names the path and what was
expected.
"""

from collections.abc import Sequence
import dataclasses
import logging
import os
import re

import numpy as np
from PIL import Image

from jaxmedgan.data import brain_mri, intensity

PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
IMAGE_EXTENSIONS = PIL_EXTENSIONS + DICOM_EXTENSIONS
RESIZE_MODES = ("none", "area", "pad", "crop")


@dataclasses.dataclass(frozen=True)
class NativeImage:
    """pixels: float32 [H, W, C] in the file's units; kind: 'dicom' | '8-bit' | '16-bit' | 'nifti';
    window: the file's own suggestion (DICOM tags, else min..max; PIL: bit depth)."""

    pixels: np.ndarray
    kind: str
    window: intensity.Window


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int or an (H, W) pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def natural_key(name: str) -> list:
    """Sort key that orders '1', '2', '10' numerically and text case-insensitively."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def is_dicom(path: str) -> bool:
    """True if the file carries the DICOM marker 'DICM' at byte 128 (or ends in .dcm/.dicom)."""
    if os.path.splitext(path)[1].lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_nifti(path: str) -> bool:
    """True for a .nii / .nii.gz file name."""
    return path.lower().endswith(NIFTI_EXTENSIONS)


def is_image_file(path: str) -> bool:
    """True for a PNG/JPEG/TIFF/DICOM/NIfTI by extension, or a DICOM by content."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS or is_nifti(path) or is_dicom(path)


def read_nifti_slices(path: str, *, axis: int = 2, channels: int = 1, min_fraction: float = 0.05
                      ) -> tuple[list[NativeImage], list[int]]:
    """The 2-D slices of a NIfTI volume along `axis` as native images, with their slice indices.

    Slices whose non-background share (voxels above the volume minimum) is under `min_fraction`
    are skipped (air above the head). Window: the volume's own min..max (source 'minmax'), one for
    all its slices so they stay comparable.
    """
    if channels != 1:
        raise ValueError(f"{path}: NIfTI volumes are single-channel; got channels={channels}")
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2; got {axis}")
    vol = brain_mri.read_nifti(path)
    lo, hi = float(vol.min()), float(vol.max())
    window = intensity.Window((lo + hi) / 2.0, max(hi - lo, 1e-6), False, "minmax")
    slices, index = [], []
    for i in range(vol.shape[axis]):
        sl = np.take(vol, i, axis=axis)
        if (sl > lo).mean() >= min_fraction:
            slices.append(NativeImage(sl[..., None].astype(np.float32), "nifti", window))
            index.append(i)
    if not slices:
        raise ValueError(f"{path}: no slice along axis {axis} has >= {min_fraction:.0%} non-background voxels")
    return slices, index


def _pil_native(path: str, channels: int) -> NativeImage:
    """A PNG/JPEG/TIFF as float32 [H, W, channels] raw values, window = its bit depth."""
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
                         "expected 8-bit or 16-bit PNG/JPEG/TIFF")
    if mode.startswith("I"):  # 16-bit grayscale (Pillow opens it as 'I;16' or 'I').
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"{path}: mode {mode!r} image has values in [{arr.min()}, {arr.max()}]; "
                             "expected 16-bit values 0..65535")
        raw, kind, top = arr[..., None], "16-bit", 65535
    elif mode in ("L", "LA", "1") or (mode == "P" and _is_gray(arr)):
        raw, kind, top = arr[..., :1], "8-bit", 255
    else:
        raw, kind, top = arr, "8-bit", 255
    return NativeImage(_to_channels(raw, channels, path).astype(np.float32), kind,
                       intensity.bit_depth_window(top))


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


def _dicom_own_window(hu: np.ndarray, ds, path: str) -> intensity.Window:
    """The file's first WindowCenter/WindowWidth (source 'tags'), else its min..max ('minmax')."""
    invert = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        wc, ww = ds.WindowCenter, ds.WindowWidth
        center = float(wc[0] if _is_multi(wc) else wc)
        width = float(ww[0] if _is_multi(ww) else ww)
        if not width > 0:
            raise ValueError(f"{path}: window width from WindowCenter/WindowWidth tags is {width}; expected > 0")
        return intensity.Window(center, width, invert, "tags")
    lo, hi = float(hu.min()), float(hu.max())
    return intensity.Window((lo + hi) / 2.0, max(hi - lo, 1.0), invert, "minmax")


def _is_multi(value) -> bool:
    """True for pydicom MultiValue / list values (a tag holding several windows)."""
    from pydicom.multival import MultiValue

    return isinstance(value, (list, tuple, MultiValue))


def _dicom_native(path: str, channels: int) -> NativeImage:
    """A DICOM as float32 [H, W, channels] modality values (rescaled), with its own window."""
    import pydicom  # Imported on use: only DICOM folders need it.

    try:
        ds = pydicom.dcmread(path, force=True)
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
        return NativeImage(_to_channels(pixels.astype(np.float32), channels, path), "dicom",
                           intensity.bit_depth_window(2**bits - 1))
    if samples != 1 or pixels.ndim != 2:
        raise ValueError(f"{path}: DICOM pixel array of shape {pixels.shape} with SamplesPerPixel="
                         f"{samples}; expected a single 2-D slice")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    hu = pixels.astype(np.float64) * slope + intercept
    return NativeImage(_to_channels(hu[..., None], channels, path).astype(np.float32), "dicom",
                       _dicom_own_window(hu, ds, path))


def read_native(path: str, *, channels: int = 1) -> NativeImage:
    """Reads one PNG/JPEG/TIFF/DICOM as native float32 [H, W, channels] values (module doc)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if is_dicom(path):
        return _dicom_native(path, channels)
    ext = os.path.splitext(path)[1].lower()
    if ext not in PIL_EXTENSIONS:
        raise ValueError(f"{path}: not a DICOM file and extension {ext!r} is not one of {IMAGE_EXTENSIONS}")
    return _pil_native(path, channels)


def _area(native: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Box-filter (area) resample of float [H, W, C] to hw, per channel, in float32."""
    h, w = hw
    out = [np.asarray(Image.fromarray(native[..., c].astype(np.float32), mode="F")
                      .resize((w, h), Image.Resampling.BOX if native.shape[0] >= h else
                              Image.Resampling.BILINEAR)) for c in range(native.shape[-1])]
    return np.stack(out, axis=-1).astype(np.float32)


def resize_native(native: np.ndarray, hw: tuple[int, int], mode: str, path: str = "<image>") -> np.ndarray:
    """Resizes float [H, W, C] to hw by `mode` (RESIZE_MODES; module doc)."""
    if native.shape[:2] == tuple(hw):
        return native
    if mode in (None, "none", False):
        raise ValueError(f"{path}: image shape {native.shape} (H, W, C) does not match expected "
                         f"{(*hw, native.shape[-1])}; resize the files or pass --resize area|pad|crop")
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")
    h, w = native.shape[:2]
    if mode == "pad" and h <= hw[0] and w <= hw[1]:  # smaller: pad to the target, no resampling
        top, left = (hw[0] - h) // 2, (hw[1] - w) // 2
        padded = np.full((*hw, native.shape[-1]), native.min(), np.float32)
        padded[top:top + h, left:left + w] = native
        return padded
    if mode == "pad" and h != w:
        s = max(h, w)
        top, left = (s - h) // 2, (s - w) // 2
        padded = np.full((s, s, native.shape[-1]), native.min(), np.float32)
        padded[top:top + h, left:left + w] = native
        native = padded
    elif mode == "crop" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        native = native[top:top + s, left:left + s]
    return _area(native, hw)


def read_image(
    path: str,
    *,
    image_size: int | Sequence[int] | None = None,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    resize: bool | str = False,
) -> np.ndarray:
    """Reads one file as float32 [H, W, channels] in [-1, 1]: native values through `window`
    (center, width) if given, else the file's own window (module doc). resize: True = 'area'."""
    img = read_native(path, channels=channels)
    pixels = img.pixels
    if image_size is not None:
        mode = "area" if resize is True else (resize or "none")
        pixels = resize_native(pixels, _as_hw(image_size), mode, path)
    w = img.window if window is None else intensity.Window(float(window[0]), float(window[1]),
                                                           img.window.invert, "argument")
    return intensity.to_model_range(pixels, w.center, w.width, w.invert)


def list_image_folder(root: str, classes: Sequence[str] | None = None
                      ) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """Returns (class_names, [(file path, label)]) sorted by class then file name, both in natural
    order ('2' before '10'); `classes` picks and orders the class folders instead."""
    if not os.path.isdir(root):
        raise ValueError(f"Image folder {root!r} does not exist or is not a directory; expected "
                         "DIR/<class_name>/*.png|*.jpg|*.tif|*.dcm")
    found = sorted((d for d in os.listdir(root)
                    if not d.startswith(".") and os.path.isdir(os.path.join(root, d))), key=natural_key)
    if not found:
        raise ValueError(f"Image folder {root!r} has no class sub-folders; expected "
                         "DIR/<class_name>/*.png|*.jpg|*.tif|*.dcm")
    if classes:
        missing = [c for c in classes if c not in found]
        if missing or len(set(classes)) != len(classes):
            raise ValueError(f"classes {list(classes)} for {root!r}: "
                             f"{'no folder for ' + str(missing) if missing else 'duplicates'}; "
                             f"class folders are {found}")
        found = list(classes)
    class_names = tuple(found)
    files = []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(root, name)
        entries = sorted((f for f in os.listdir(class_dir) if not f.startswith(".")), key=natural_key)
        images = [f for f in entries if os.path.isfile(os.path.join(class_dir, f))
                  and is_image_file(os.path.join(class_dir, f))]
        if not images:
            raise ValueError(f"Class folder {class_dir!r} holds no images; expected PNG/JPEG/TIFF files "
                             f"({', '.join(PIL_EXTENSIONS)}), NIfTI volumes (.nii, .nii.gz) or DICOM files (any name)")
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
    resize: bool | str = False,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Reads DIR/<class>/* into (images float32 [N,H,W,C] in [-1,1], labels int32 [N], class_names)."""
    class_names, files = list_image_folder(root, classes)
    images = [read_image(path, image_size=image_size, channels=channels, window=window, resize=resize)
              for path, _ in files]
    labels = np.asarray([label for _, label in files], np.int32)
    return np.stack(images), labels, class_names


def new_dicom(sop_class_uid: str, rows: int, columns: int, *, signed: bool, photometric: str = "MONOCHROME2"):
    """A pydicom Dataset with file meta (explicit VR little endian), fresh SOP instance UID, and the
    pixel-module tags of one 16-bit grayscale frame (rows x columns); the caller sets PixelData and
    the rest (modality, rescale, window). Shared by `export` and the tests / benchmarks that write DICOM."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = int(rows), int(columns)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    return ds


def split_cases(cases: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train cases, held-out cases) of a user folder: a seeded `fraction` of cases (>= 1 when 2+
    cases) held out, so no case (patient, fundus) sits on both sides."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"config.data.holdout_fraction must be in (0, 1) for user folders, got {fraction}.")
    if len(cases) < 2:
        raise ValueError(f"need >= 2 cases to hold some out for evaluation; found {len(cases)}.")
    order = np.random.default_rng([seed, 0x484F4C44]).permutation(len(cases))
    n_test = min(max(int(round(fraction * len(cases))), 1), len(cases) - 1)
    test = set(order[:n_test].tolist())
    return [c for i, c in enumerate(cases) if i not in test], [c for i, c in enumerate(cases) if i in test]
