"""Loaders for the public chest X-ray layouts: CheXpert and NIH ChestX-ray14 (multi-label findings).

CheXpert (Irvin et al. 2019), ``root`` = the folder holding ``train.csv`` (and ``valid.csv``):
columns ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and 14 finding columns (``CHEXPERT_FINDINGS``)
whose cells are ``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not
mentioned, read as negative, as in the CheXpert baselines). ``Path`` is relative to the root's
parent (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``) or to the root.
Uncertain labels follow ``uncertainty``: ``u_ones`` -> 1, ``u_zeros`` -> 0, ``u_ignore`` -> 0 with
``mask`` 0 (the loss should skip that finding for that image). ``frontal_only`` keeps
``Frontal/Lateral == 'Frontal'`` rows. The patient id is the number in ``patientNNNNN`` of the path.
Splits: ``train.csv`` -> 'train', ``valid.csv`` (if present) -> 'test'.

ChestX-ray14 (Wang et al. 2017), ``root`` = the folder holding ``Data_Entry_2017.csv``: columns
``Image Index`` (file name), ``Finding Labels`` (``|``-separated names from ``CXR14_FINDINGS``, or
``No Finding``) and ``Patient ID``; the images in ``root/images/``, ``root/images_NNN/images/`` (the
release's archives unpacked) or ``root/``. Splits: ``test_list.txt`` (one file name a line) ->
'test' and ``train_val_list.txt`` (or every other row) -> 'train'; without ``test_list.txt`` a
``holdout_fraction`` of the patients (drawn with ``seed``) goes to 'test'.

Both give (``labeled.load_chest``) a ``labeled.LabeledSet`` (multi_label=True, groups = patient
ids, so cross-validation and hold-outs never split a patient) over the chosen ``findings`` in the
given order, images read by ``readers.read_image`` and resized (bilinear) to ``image_size``.
Unknown cell values, unknown finding names, missing columns and missing image files raise errors
naming the CSV and its row.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import os
import re
from collections.abc import Sequence

import numpy as np

from jaxmedgan.data import readers

CHEXPERT_FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices")
CXR14_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
CXR14_NO_FINDING = "No Finding"
FINDINGS = {"chexpert": CHEXPERT_FINDINGS, "chestxray14": CXR14_FINDINGS}
# CheXpert's five competition findings; all 14 for ChestX-ray14 (its benchmark).
DEFAULT_FINDINGS = {
    "chexpert": ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"),
    "chestxray14": CXR14_FINDINGS,
}
UNCERTAINTY = ("u_ones", "u_zeros", "u_ignore")
LAYOUT = {
    "chexpert": "ROOT/train.csv and optional ROOT/valid.csv with columns Path,Sex,Age,Frontal/Lateral,"
                "AP/PA,<14 findings>",
    "chestxray14": "ROOT/Data_Entry_2017.csv, images in ROOT/images/ or ROOT/images_*/images/, optional "
                   "ROOT/train_val_list.txt and ROOT/test_list.txt",
}
CHEXPERT_CSV = {"train": "train.csv", "test": "valid.csv"}
CXR14_CSV = "Data_Entry_2017.csv"
CXR14_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}
_CHEXPERT_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": 0.0}
_PATIENT = re.compile(r"patient(\d+)")


@dataclasses.dataclass(frozen=True)
class ChestIndex:
    """One split before images are read: file paths, multi-hot targets f32 [N,K], mask f32 [N,K]."""

    paths: tuple[str, ...]  # absolute image paths
    targets: np.ndarray  # f32 [N,K]: 1 = finding present
    mask: np.ndarray  # f32 [N,K]: 1 = label known, 0 = uncertain and ignored (u_ignore)
    patients: np.ndarray  # i64 [N]: patient id
    rows: tuple[int, ...]  # CSV row of each image (1 = header), for error messages
    findings: tuple[str, ...]
    source: str  # the CSV file

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: np.ndarray) -> "ChestIndex":
        """The rows where `keep` (bool [N]) is True."""
        idx = np.flatnonzero(keep)
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in idx), targets=self.targets[idx],
                                   mask=self.mask[idx], patients=self.patients[idx],
                                   rows=tuple(self.rows[i] for i in idx))


def check_uncertainty(uncertainty: str) -> str:
    """Returns the CheXpert uncertainty policy; raises unless it is one of UNCERTAINTY."""
    if uncertainty not in UNCERTAINTY:
        raise ValueError(f"uncertainty={uncertainty!r}; expected one of {UNCERTAINTY} (config.data.uncertainty)")
    return uncertainty


def check_findings(findings: Sequence[str] | None, kind: str) -> tuple[str, ...]:
    """The requested findings of source `kind` in order (default DEFAULT_FINDINGS[kind])."""
    if kind not in FINDINGS:
        raise ValueError(f"Unknown chest X-ray source {kind!r}; expected one of {sorted(FINDINGS)}")
    if not findings:
        return DEFAULT_FINDINGS[kind]
    names = tuple(findings)
    unknown = [f for f in names if f not in FINDINGS[kind]]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"findings={list(names)} for {kind}: {'unknown ' + str(unknown) if unknown else 'duplicates'}"
                         f"; expected distinct names from {list(FINDINGS[kind])}")
    return names


def _read_csv(path: str, required: Sequence[str], what: str) -> tuple[list[dict], list[str]]:
    """(rows as dicts, header) of a CSV; raises naming the file if it or a required column is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path!r} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or ())]
        reader.fieldnames = header
        rows = list(reader)
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {header}.")
    if not rows:
        raise ValueError(f"{path}: no rows; expected one row per image.")
    return rows, header


def _chexpert_file(root: str, rel: str) -> str | None:
    """The image for a CheXpert Path: relative to root's parent (official) or to root."""
    rel = rel.replace("\\", "/")
    candidates = [os.path.join(os.path.dirname(root), rel), os.path.join(root, rel)]
    first, _, rest = rel.partition("/")
    if first == os.path.basename(root) and rest:
        candidates.insert(0, os.path.join(root, rest))
    return next((c for c in candidates if os.path.isfile(c)), None)


def read_chexpert_csv(path: str, findings: Sequence[str] | None = None, *, uncertainty: str = "u_ones",
                      frontal_only: bool = False, root: str | None = None) -> ChestIndex:
    """Parses a CheXpert train.csv / valid.csv into a ChestIndex (images resolved against `root`)."""
    findings = check_findings(findings, "chexpert")
    check_uncertainty(uncertainty)
    root = os.path.abspath(root or os.path.dirname(path))
    rows, _ = _read_csv(path, ("Path", "Frontal/Lateral", *findings), "CheXpert labels")
    paths, targets, mask, patients, row_ids = [], [], [], [], []
    for r, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{path} row {r}"
        view = (row["Frontal/Lateral"] or "").strip()
        if view not in ("Frontal", "Lateral"):
            raise ValueError(f"{where}: Frontal/Lateral is {view!r}; expected 'Frontal' or 'Lateral'.")
        if frontal_only and view != "Frontal":
            continue
        rel = (row["Path"] or "").strip()
        match = _PATIENT.search(rel)
        if not match:
            raise ValueError(f"{where}: Path {rel!r} names no patientNNNNN folder (needed for patient-level "
                             "splits).")
        t, m = [], []
        for name in findings:
            cell = (row[name] or "").strip()
            if cell not in _CHEXPERT_VALUES:
                raise ValueError(f"{where}: column {name!r} is {cell!r}; expected 1.0, 0.0, -1.0 or blank.")
            v = _CHEXPERT_VALUES[cell]
            if v == -1.0:  # uncertain
                t.append(1.0 if uncertainty == "u_ones" else 0.0)
                m.append(0.0 if uncertainty == "u_ignore" else 1.0)
            else:
                t.append(v)
                m.append(1.0)
        file = _chexpert_file(root, rel)
        if file is None:
            raise FileNotFoundError(f"{where}: image {rel!r} not found under {os.path.dirname(root)!r} "
                                    f"or {root!r}.")
        paths.append(file)
        targets.append(t)
        mask.append(m)
        patients.append(int(match.group(1)))
        row_ids.append(r)
    k = len(findings)
    return ChestIndex(tuple(paths), np.asarray(targets, np.float32).reshape(-1, k),
                      np.asarray(mask, np.float32).reshape(-1, k), np.asarray(patients, np.int64),
                      tuple(row_ids), findings, path)


def _cxr14_image_table(root: str) -> dict[str, str]:
    """file name -> path for the images in root/images, root/images_*/images and root."""
    table: dict[str, str] = {}
    folders = [root, os.path.join(root, "images"), *sorted(glob.glob(os.path.join(root, "images_*", "images")))]
    for folder in folders:
        if os.path.isdir(folder):
            for entry in os.scandir(folder):
                if entry.is_file() and entry.name.lower().endswith(readers.IMAGE_EXTENSIONS):
                    table.setdefault(entry.name, entry.path)
    return table


def read_chestxray14_csv(path: str, findings: Sequence[str] | None = None, *,
                         root: str | None = None) -> ChestIndex:
    """Parses ChestX-ray14's Data_Entry_2017.csv into a ChestIndex (images looked up under `root`)."""
    findings = check_findings(findings, "chestxray14")
    root = os.path.abspath(root or os.path.dirname(path))
    rows, _ = _read_csv(path, ("Image Index", "Finding Labels", "Patient ID"), "ChestX-ray14 labels")
    table = _cxr14_image_table(root)
    column = {name: i for i, name in enumerate(findings)}
    paths, targets, patients, row_ids = [], [], [], []
    for r, row in enumerate(rows, start=2):
        where = f"{path} row {r}"
        name = (row["Image Index"] or "").strip()
        labels = [v.strip() for v in (row["Finding Labels"] or "").split("|") if v.strip()]
        if not labels:
            raise ValueError(f"{where}: empty 'Finding Labels'; expected '|'-separated findings or "
                             f"{CXR14_NO_FINDING!r}.")
        if CXR14_NO_FINDING in labels and len(labels) > 1:
            raise ValueError(f"{where}: 'Finding Labels' {row['Finding Labels']!r} combines "
                             f"{CXR14_NO_FINDING!r} with findings.")
        t = np.zeros(len(findings), np.float32)
        for label in labels:
            if label == CXR14_NO_FINDING:
                continue
            if label not in CXR14_FINDINGS:
                raise ValueError(f"{where}: unknown finding {label!r} in 'Finding Labels'; expected "
                                 f"{CXR14_NO_FINDING!r} or names from {list(CXR14_FINDINGS)}.")
            if label in column:
                t[column[label]] = 1.0
        try:
            patient = int((row["Patient ID"] or "").strip())
        except ValueError:
            raise ValueError(f"{where}: 'Patient ID' is {row['Patient ID']!r}; expected an integer.") from None
        if name not in table:
            raise FileNotFoundError(f"{where}: image {name!r} not found in {root}/images/, "
                                    f"{root}/images_*/images/ or {root}/.")
        paths.append(table[name])
        targets.append(t)
        patients.append(patient)
        row_ids.append(r)
    k = len(findings)
    target_arr = np.asarray(targets, np.float32).reshape(-1, k)
    return ChestIndex(tuple(paths), target_arr, np.ones_like(target_arr), np.asarray(patients, np.int64),
                      tuple(row_ids), findings, path)


def _read_list(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def patient_holdout(patients: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """bool [N], True = test: round(fraction * #patients) whole patients drawn with `seed`."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {fraction}")
    unique = np.unique(patients)
    n_test = int(round(fraction * len(unique)))
    if fraction > 0 and len(unique) >= 2:
        n_test = min(max(n_test, 1), len(unique) - 1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x43485354]))  # "CHST"
    test_patients = rng.permutation(unique)[:n_test]
    return np.isin(patients, test_patients)


def index_splits(kind: str, root: str, *, findings: Sequence[str] | None = None, uncertainty: str = "u_ones",
                 frontal_only: bool = False, holdout_fraction: float = 0.0,
                 seed: int = 0) -> dict[str, ChestIndex]:
    """{'train': ChestIndex[, 'test': ChestIndex]} of a CheXpert or ChestX-ray14 root (see module doc)."""
    findings = check_findings(findings, kind)
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{kind} root {root!r} is not a directory; expected {LAYOUT[kind]}.")
    splits: dict[str, ChestIndex] = {}
    if kind == "chexpert":
        for split, name in CHEXPERT_CSV.items():
            path = os.path.join(root, name)
            if split == "train" or os.path.isfile(path):
                splits[split] = read_chexpert_csv(path, findings, uncertainty=uncertainty,
                                                  frontal_only=frontal_only, root=root)
    else:
        full = read_chestxray14_csv(os.path.join(root, CXR14_CSV), findings, root=root)
        names = np.asarray([os.path.basename(p) for p in full.paths])
        test_list = os.path.join(root, CXR14_LISTS["test"])
        if os.path.isfile(test_list):
            lists = {s: os.path.join(root, f) for s, f in CXR14_LISTS.items() if os.path.isfile(os.path.join(root, f))}
            chosen = {}
            for split, list_path in lists.items():
                wanted = _read_list(list_path)
                unknown = sorted(set(wanted) - set(names))
                if unknown:
                    raise ValueError(f"{list_path}: {len(unknown)} file name(s) not in {full.source}, e.g. "
                                     f"{unknown[:3]}.")
                chosen[split] = np.isin(names, wanted)
            if "train" not in chosen:
                chosen["train"] = ~chosen["test"]
            if (chosen["train"] & chosen["test"]).any():
                raise ValueError(f"{lists['test']} and {lists.get('train')} share images, e.g. "
                                 f"{names[chosen['train'] & chosen['test']][:3].tolist()}.")
            splits = {s: full.subset(keep) for s, keep in chosen.items()}
        else:
            splits["train"] = full
    if "test" in splits and holdout_fraction:
        raise ValueError(f"The {kind} root {root} has its own test split; holdout_fraction must be 0, got "
                         f"{holdout_fraction}.")
    if holdout_fraction:
        is_test = patient_holdout(splits["train"].patients, holdout_fraction, seed)
        splits = {"train": splits["train"].subset(~is_test), "test": splits["train"].subset(is_test)}
    return splits


def read_images(index: ChestIndex, image_size: int, channels: int = 1) -> np.ndarray:
    """float32 [N, image_size, image_size, channels] in [-1, 1]; errors name the CSV row."""
    out = np.zeros((len(index), image_size, image_size, channels), np.float32)
    for i in range(len(index)):
        out[i] = read_one(index, i, image_size, channels)
    return out


def read_one(index: ChestIndex, i: int, image_size: int, channels: int = 1) -> np.ndarray:
    """float32 [image_size, image_size, channels] in [-1, 1]: image i resized (bilinear)."""
    try:
        return readers.read_image(index.paths[i], image_size=image_size, channels=channels, resize=True)
    except ValueError as e:
        raise ValueError(f"{index.source} row {index.rows[i]}: {e}") from e


def index_fingerprint(kind: str, root: str) -> list[tuple[str, int, int]]:
    """(file, bytes, mtime ns) of the label/list files of a root, for the TFDS build fingerprint."""
    names = list(CHEXPERT_CSV.values()) if kind == "chexpert" else [CXR14_CSV, *CXR14_LISTS.values()]
    out = []
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            st = os.stat(path)
            out.append((name, st.st_size, st.st_mtime_ns))
    return out
