"""TFDS builders (array_record files) for the phantoms, user image folders and chest X-ray sets.

All write ``image`` as ``Tensor(uint8, [H, W, C])``. Single-label sources (liver, spine, image
folder) write ``label`` as ``ClassLabel``; multi-label chest sources (``phantom-chest``,
``chexpert``, ``chestxray14``) write ``label`` as a multi-hot ``Tensor(uint8, [K])`` with the
finding names in the dataset's metadata (``label_names``; ``class_names`` reads either), and the
real chest sets also ``label_mask`` (uint8 [K], 0 = uncertain label ignored under U-Ignore) and
``group`` (int64 patient index). Why uint8
rather than float32: 4x smaller files and the sources are 8-bit (PNG) or windowed CT, where one
uint8 step (350 HU / 255 = 1.4 HU at the default window) is far below CT noise (8-14 HU); the
stored value is ``round((x + 1) * 127.5)`` for x in [-1, 1] and ``pipeline`` maps it back with
``u8 / 127.5 - 1``. Why ``Tensor`` rather than ``Image``: no PNG codec in the loop and nothing that
could pull in TensorFlow. Examples keep generation order (``disable_shuffling``).

Everything here runs without TensorFlow: TFDS writes array_record through ``array_record`` and
reads back with ``builder.as_data_source(split)`` (``tests/data/tfds_builders_test.py`` checks it
in a subprocess where ``tensorflow`` cannot be imported).

Layout: ``build_dataset`` writes into ``out_dir/<source>-<size>px-<channels>ch-<fingerprint>/``,
where the fingerprint hashes every input that changes the data (builder version, phantom code,
counts, window, image files' names, sizes and mtimes, hold-out fraction and seed), so a dataset on
disk is reused only if it was built from the same inputs. TFDS generates into a temporary
``incomplete.*`` directory next to the final one and renames it when done, so an interrupted
build never leaves a directory that looks complete; the next call rebuilds. With several
processes, build on process 0 and wait at a barrier before the others read (a lost rename race
is tolerated if the winner's dataset is complete).
"""

from collections.abc import Sequence
import functools
import hashlib
import json
import os
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from jaxmedgan import atomic_io
from jaxmedgan.data import chest
from jaxmedgan.data import chest_phantoms
from jaxmedgan.data import intensity
from jaxmedgan.data import native
from jaxmedgan.data import phantoms
from jaxmedgan.data import readers
from jaxmedgan.data import registry
from jaxmedgan.data import spine_phantoms

# Buildable sources -> TFDS builder name, from the one source list (`registry`).
SOURCES = {name: registry.get(name).tfds_name for name in registry.names(buildable=True)}
NATIVE_SOURCES = registry.names(native=True)  # `native` readers, stored at native intensity
CHEST_SOURCES = registry.names("findings", buildable=True)  # multi-label (multi-hot 'label')
INFO_FILE = "jaxmedgan_dataset.json"  # Human-readable record of the build inputs, in the data_dir.


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Maps float [..] in [-1, 1] to uint8 [..] by round((x + 1) * 127.5)."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    """Maps uint8 [..] to float32 [..] in [-1, 1] by u8 / 127.5 - 1."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def _features(
    height: int, width: int, channels: int, class_names: Sequence[str]
) -> tfds.features.FeaturesDict:
    """Feature spec shared by both builders: image uint8 [H, W, C], label ClassLabel."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(height, width, channels), dtype=np.uint8),
        "label": tfds.features.ClassLabel(names=list(class_names)),
    })


class PhantomLiver(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Phantom CT liver-lesion ROIs (cyst / metastasis / hemangioma); splits 'train' and 'test'."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "phantoms.generate with TRAIN_SEED / TEST_SEED."}

    def __init__(
        self,
        *,
        image_size: int = 64,
        window: tuple[float, float] = (phantoms.WINDOW_LEVEL, phantoms.WINDOW_WIDTH),
        train_counts: Sequence[int] = phantoms.TRAIN_COUNTS,
        test_counts: Sequence[int] = phantoms.TEST_COUNTS,
        **kwargs,
    ):
        self._image_size = int(image_size)
        self._window = (float(window[0]), float(window[1]))
        self._counts = {"train": tuple(train_counts), "test": tuple(test_counts)}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(phantoms.__doc__ or "").split("\n")[0],
            features=_features(self._image_size, self._image_size, 1, phantoms.CLASS_NAMES),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {
            "train": self._generate_examples(self._counts["train"], phantoms.TRAIN_SEED),
            "test": self._generate_examples(self._counts["test"], phantoms.TEST_SEED),
        }

    def _generate_examples(self, counts: Sequence[int], seed: int):
        images, labels = phantoms.generate(counts, seed, self._image_size, window=self._window)
        for i, (image, label) in enumerate(zip(to_uint8(images), labels)):
            yield i, {"image": image, "label": int(label)}


class PhantomSpine(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Phantom lateral spine radiographs (normal / fracture / lytic / sclerotic); 'train' and 'test'."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "spine_phantoms.generate with TRAIN_SEED / TEST_SEED."}

    def __init__(
        self,
        *,
        image_size: int = 64,
        train_counts: Sequence[int] = spine_phantoms.TRAIN_COUNTS,
        test_counts: Sequence[int] = spine_phantoms.TEST_COUNTS,
        **kwargs,
    ):
        self._image_size = int(image_size)
        self._counts = {"train": tuple(train_counts), "test": tuple(test_counts)}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(spine_phantoms.__doc__ or "").split("\n")[0],
            features=_features(self._image_size, self._image_size, 1, spine_phantoms.CLASS_NAMES),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {
            "train": self._generate_examples(self._counts["train"], spine_phantoms.TRAIN_SEED),
            "test": self._generate_examples(self._counts["test"], spine_phantoms.TEST_SEED),
        }

    def _generate_examples(self, counts: Sequence[int], seed: int):
        images, labels = spine_phantoms.generate(counts, seed, self._image_size)
        for i, (image, label) in enumerate(zip(to_uint8(images), labels)):
            yield i, {"image": image, "label": int(label)}


def _multi_label_features(height: int, width: int, channels: int, num_labels: int,
                          extras: bool = False) -> tfds.features.FeaturesDict:
    """image uint8 [H, W, C], label multi-hot uint8 [K] (+ label_mask uint8 [K], group int64)."""
    spec = {
        "image": tfds.features.Tensor(shape=(height, width, channels), dtype=np.uint8),
        "label": tfds.features.Tensor(shape=(num_labels,), dtype=np.uint8),
    }
    if extras:
        spec["label_mask"] = tfds.features.Tensor(shape=(num_labels,), dtype=np.uint8)
        spec["group"] = tfds.features.Scalar(dtype=np.int64)
    return tfds.features.FeaturesDict(spec)


class PhantomChest(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Phantom PA chest radiographs with multi-label findings; 'train' and 'test' (distinct seeds)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "chest_phantoms.generate with TRAIN_SEED / TEST_SEED."}

    def __init__(
        self,
        *,
        image_size: int = 64,
        num_examples: Sequence[int] = (chest_phantoms.NUM_TRAIN, chest_phantoms.NUM_TEST),
        prevalence: Sequence[float] = chest_phantoms.DEFAULT_PREVALENCE,
        findings: Sequence[str] = chest_phantoms.FINDING_NAMES,
        **kwargs,
    ):
        self._image_size = int(image_size)
        self._num = {"train": int(num_examples[0]), "test": int(num_examples[1])}
        self._prevalence = tuple(map(float, prevalence))
        self._columns = [chest_phantoms.FINDING_NAMES.index(f) for f in findings]
        self._findings = tuple(findings)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(chest_phantoms.__doc__ or "").split("\n")[0],
            features=_multi_label_features(self._image_size, self._image_size, 1, len(self._findings)),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(label_names=list(self._findings), multi_label=True),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {
            "train": self._generate_examples(self._num["train"], chest_phantoms.TRAIN_SEED),
            "test": self._generate_examples(self._num["test"], chest_phantoms.TEST_SEED),
        }

    def _generate_examples(self, n: int, seed: int):
        images, targets = chest_phantoms.generate(n, seed, self._image_size, self._prevalence)
        targets = targets[:, self._columns].astype(np.uint8)
        for i, (image, label) in enumerate(zip(to_uint8(images), targets)):
            yield i, {"image": image, "label": label}


class ChestXRays(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A CheXpert or ChestX-ray14 root (see `chest`), resized; 'train' and 'test' where the root has one."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "chest.index_splits + readers.read_image (bilinear resize)."}

    KIND = ""  # 'chexpert' | 'chestxray14' (the subclasses below)

    def __init__(self, *, root: str, image_size: int = 64, channels: int = 1,
                 findings: Sequence[str] = (), uncertainty: str = "u_ones", frontal_only: bool = False,
                 holdout_fraction: float = 0.0, seed: int = 0, **kwargs):
        self._kind, self._root = self.KIND, root
        self._image_size, self._channels = int(image_size), int(channels)
        self._findings = chest.check_findings(findings, self.KIND)
        self._split_kwargs = dict(findings=self._findings, uncertainty=uncertainty, frontal_only=frontal_only,
                                  holdout_fraction=holdout_fraction, seed=seed)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self._kind} images from {self._root}",
            features=_multi_label_features(self._image_size, self._image_size, self._channels,
                                           len(self._findings), extras=True),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(label_names=list(self._findings), multi_label=True),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        splits = chest.index_splits(self._kind, self._root, **self._split_kwargs)
        return {name: self._generate_examples(index) for name, index in splits.items()}

    def _generate_examples(self, index):
        for i in range(len(index)):  # one image at a time: the full-size files never sit in memory together
            image = chest.read_one(index, i, self._image_size, self._channels)
            yield i, {"image": to_uint8(image), "label": index.targets[i].astype(np.uint8),
                      "label_mask": index.mask[i].astype(np.uint8), "group": int(index.patients[i])}


class CheXpert(ChestXRays, skip_registration=True):
    """CheXpert train.csv ('train') / valid.csv ('test'), see `chest`."""

    name = "chexpert"
    KIND = "chexpert"


class ChestXray14(ChestXRays, skip_registration=True):
    """NIH ChestX-ray14 Data_Entry_2017.csv with its train_val / test lists, see `chest`."""

    name = "chestxray14"
    KIND = "chestxray14"


holdout_split = native.holdout_split  # stratified seeded hold-out (kept here for callers)


class NativeImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """User images at native intensity (`native`): image folders, MedMNIST .npz, StyleGAN folders.

    Features: image float32 [H, W, C] native values, label ClassLabel, window float32 [2] (center,
    width), invert uint8 [] (1 = MONOCHROME1); splits as the source gives them ('train', plus
    'test' / 'validation'). `load_split` applies each example's window (`intensity`).
    """

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "readers.read_image_folder, stratified hold-out, uint8.",
                     "2.0.0": "Native float32 intensities with a per-image window; npz and StyleGAN sources."}

    def __init__(self, *, records: "native.NativeRecords", image_size: int, channels: int, **kwargs):
        self._records = records
        self._shape = (int(image_size), int(image_size), int(channels))
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        r = self._records
        return tfds.core.DatasetInfo(
            builder=self,
            description="User images at native intensity with a per-image window (jaxmedgan.data.native).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=self._shape, dtype=np.float32),
                "label": (tfds.features.Tensor(shape=(len(r.class_names),), dtype=np.uint8) if r.multi_label
                          else tfds.features.ClassLabel(names=list(r.class_names))),
                "window": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                "invert": tfds.features.Tensor(shape=(), dtype=np.uint8),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(intensity=r.summary(), **(
                {"label_names": list(r.class_names), "multi_label": True} if r.multi_label else {})),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        r = self._records
        return {split: self._generate_examples(np.flatnonzero(r.splits == split))
                for split in sorted(set(r.splits.tolist()))}

    def _generate_examples(self, index: np.ndarray):
        r = self._records
        for i, j in enumerate(index):
            yield i, {"image": r.images[j], "label": r.labels[j] if r.multi_label else int(r.labels[j]),
                      "window": r.windows[j],
                      "invert": np.uint8(r.inverts[j])}


def _check_source(source: str) -> str:
    """Returns the TFDS builder name for a source ('phantom-liver' or its TFDS name 'phantom_liver')."""
    if source in SOURCES:
        return SOURCES[source]
    if source in SOURCES.values():
        return source
    spec = registry.get(source)  # raises for unknown names; a known one here is not buildable
    raise ValueError(f"Source {source!r} is read in memory by its consumers ({spec.kind}); "
                     f"`jaxmedgan dataset` builds {', '.join(SOURCES)}")


def _check_findings(findings: Sequence[str] | None, known: Sequence[str], source: str) -> tuple[str, ...]:
    """The requested findings in order (default: all of `known`)."""
    if not findings:
        return tuple(known)
    names = tuple(findings)
    unknown = [f for f in names if f not in known]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"findings={list(names)} for source {source!r}: "
                         f"{'unknown ' + str(unknown) if unknown else 'duplicates'}; expected distinct "
                         f"names from {list(known)}")
    return names


def _source_listing(source: str, image_dir: str) -> list[tuple[str, int, int]]:
    """(relative path, bytes, mtime ns) of every input file, for the build fingerprint."""
    if source == "image-folder":
        paths = [path for path, _ in readers.list_image_folder(image_dir)[1]]
    elif os.path.isdir(image_dir):
        paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(image_dir) for f in fs)
    elif os.path.isfile(image_dir):
        paths = [image_dir]
    else:
        raise ValueError(f"source {source!r}: {image_dir!r} does not exist; expected {registry.get(source).layout}")
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((os.path.relpath(path, os.path.dirname(image_dir) if path == image_dir else image_dir),
                    st.st_size, st.st_mtime_ns))
    return out


def _is_complete(data_dir: str, name: str) -> bool:
    """True if data_dir/name/<version>/dataset_info.json exists (TFDS writes it last, then renames)."""
    root = os.path.join(data_dir, name)
    return os.path.isdir(root) and any(
        not v.startswith(".") and "incomplete" not in v
        and os.path.isfile(os.path.join(root, v, "dataset_info.json"))
        for v in os.listdir(root))


def _code_hash(module) -> str:
    with open(module.__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _plan_phantom_liver(o: dict) -> tuple[dict, type, dict]:
    window = tuple(o["window"]) if o["window"] is not None else (phantoms.WINDOW_LEVEL, phantoms.WINDOW_WIDTH)
    counts = [list(map(int, c)) for c in o["phantom_counts"] or (phantoms.TRAIN_COUNTS, phantoms.TEST_COUNTS)]
    params = dict(version=str(PhantomLiver.VERSION), window=list(map(float, window)), counts=counts,
                  phantom_code=_code_hash(phantoms))
    return params, PhantomLiver, dict(image_size=o["image_size"], window=window, train_counts=counts[0],
                                      test_counts=counts[1])


def _plan_phantom_spine(o: dict) -> tuple[dict, type, dict]:
    spine_phantoms.check_size(o["image_size"])
    counts = [list(map(int, c)) for c in
              o["phantom_counts"] or (spine_phantoms.TRAIN_COUNTS, spine_phantoms.TEST_COUNTS)]
    params = dict(version=str(PhantomSpine.VERSION), counts=counts, phantom_code=_code_hash(spine_phantoms))
    return params, PhantomSpine, dict(image_size=o["image_size"], train_counts=counts[0], test_counts=counts[1])


def _plan_phantom_chest(o: dict) -> tuple[dict, type, dict]:
    chest_phantoms.check_size(o["image_size"])
    num = tuple(map(int, o["num_examples"] or (chest_phantoms.NUM_TRAIN, chest_phantoms.NUM_TEST)))
    if len(num) != 2 or min(num) < 0:
        raise ValueError(f"num_examples must be (train, test) counts >= 0, got {o['num_examples']}")
    prevalence = o["prevalence"]
    prev = tuple(map(float, chest_phantoms.check_prevalence(
        chest_phantoms.DEFAULT_PREVALENCE if prevalence is None or not len(prevalence) else prevalence)))
    names = _check_findings(o["findings"], chest_phantoms.FINDING_NAMES, "phantom-chest")
    params = dict(version=str(PhantomChest.VERSION), num_examples=list(num), prevalence=list(prev),
                  findings=list(names), phantom_code=_code_hash(chest_phantoms))
    return params, PhantomChest, dict(image_size=o["image_size"], num_examples=num, prevalence=prev, findings=names)


def _plan_chest(o: dict) -> tuple[dict, type, dict]:
    source, image_dir = o["source"], os.path.abspath(o["image_dir"])
    names = chest.check_findings(o["findings"], source)
    chest.check_uncertainty(o["uncertainty"])
    params = dict(version=str(ChestXRays.VERSION), image_dir=image_dir, findings=list(names),
                  uncertainty=o["uncertainty"], frontal_only=bool(o["frontal_only"]),
                  holdout_fraction=float(o["holdout_fraction"]), seed=int(o["seed"]),
                  index_files=chest.index_fingerprint(source, image_dir))
    kwargs = dict(root=image_dir, image_size=o["image_size"], channels=o["channels"], findings=names,
                  uncertainty=o["uncertainty"], frontal_only=bool(o["frontal_only"]),
                  holdout_fraction=float(o["holdout_fraction"]), seed=int(o["seed"]))
    return params, CheXpert if source == "chexpert" else ChestXray14, kwargs


def _plan_native(o: dict) -> tuple[dict, type, dict]:
    source, image_dir, window = o["source"], os.path.abspath(o["image_dir"]), o["window"]
    resize = "area" if o["resize"] is True else (o["resize"] or "none")
    if resize not in readers.RESIZE_MODES:
        raise ValueError(f"resize={resize!r}; expected one of {readers.RESIZE_MODES}")
    cw = intensity.parse_class_windows(o["class_windows"])
    classes = o["classes"]
    params = dict(version=str(NativeImages.VERSION), image_dir=image_dir, files=_source_listing(source, image_dir),
                  window=None if window is None else list(map(float, window)),
                  class_windows={k: list(v) for k, v in sorted(cw.items())},
                  classes=list(classes) if classes else None, resize=resize,
                  holdout_fraction=float(o["holdout_fraction"]), seed=int(o["seed"]), slice_axis=int(o["slice_axis"]))
    read = functools.partial(native.READERS[source], image_dir, image_size=o["image_size"], channels=o["channels"],
                             resize=resize, window=None if window is None else tuple(window), class_windows=cw,
                             classes=classes, holdout_fraction=o["holdout_fraction"], seed=o["seed"],
                             slice_axis=int(o["slice_axis"]))
    return params, NativeImages, dict(read=read, image_size=o["image_size"], channels=o["channels"])


# How each buildable source turns its options into (fingerprint params, builder class, builder kwargs).
PLANNERS = {"phantom-liver": _plan_phantom_liver, "phantom-spine": _plan_phantom_spine,
            "phantom-chest": _plan_phantom_chest, "chexpert": _plan_chest, "chestxray14": _plan_chest,
            **{name: _plan_native for name in NATIVE_SOURCES}}
# Options every source takes (seed: ignored by sources with fixed splits).
COMMON_OPTIONS = ("image_size", "channels", "seed")
# Each build option's "not given" value (anything else is a request the source must accept).
_UNSET = {"image_dir": (None, ""), "window": (None,), "holdout_fraction": (0, 0.0, None), "resize": (False, None, "none"),
          "phantom_counts": (None,), "num_examples": (None,), "prevalence": (None, ()), "findings": (None, ()),
          "uncertainty": ("u_ones",), "frontal_only": (False,), "class_windows": (None, "", {}),
          "classes": (None, ()), "slice_axis": (2,)}


def _check_options(source: str, options: dict) -> None:
    """Refuses options `source` does not declare (`registry.Source.options`), naming who takes them."""
    spec = registry.get(source)
    extra = [k for k, v in options.items() if k not in COMMON_OPTIONS and k not in spec.options
             and not (v in _UNSET[k] if not isinstance(v, (list, tuple, dict)) else len(v) == 0 or v in _UNSET[k])]
    if extra:
        takers = {k: [n for n in registry.names(buildable=True) if k in registry.get(n).options] for k in extra}
        raise ValueError(f"source {source!r} takes {', '.join(spec.options) or 'no options'} (besides "
                         f"{', '.join(COMMON_OPTIONS)}); got " + "; ".join(
                             f"{k}={options[k]!r} (applies to {', '.join(takers[k]) or 'no source'})" for k in extra))
    if spec.needs_image_dir and not options.get("image_dir"):
        raise ValueError(f"source {source!r} needs image_dir: {spec.layout}")
    if spec.channels and options["channels"] != spec.channels:
        raise ValueError(f"source {source!r} is {spec.channels}-channel; got channels={options['channels']}")


def build_dataset(
    source: str,
    out_dir: str,
    *,
    image_dir: str | None = None,
    image_size: int = 64,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    seed: int = 0,
    holdout_fraction: float = 0.0,
    resize: bool | str = False,
    phantom_counts: tuple[Sequence[int], Sequence[int]] | None = None,
    num_examples: tuple[int, int] | None = None,
    prevalence: Sequence[float] | None = None,
    findings: Sequence[str] | None = None,
    uncertainty: str = "u_ones",
    frontal_only: bool = False,
    class_windows=None,
    classes: Sequence[str] | None = None,
    slice_axis: int = 2,
) -> str:
    """Builds (or reuses) a dataset under out_dir; returns the data_dir for load_split / load_arrays.

    source "phantom-liver": phantoms.generate train/test splits (fixed TRAIN_SEED / TEST_SEED;
    `seed` and `holdout_fraction` do not apply); `window` (level, width) HU defaults to 50 / 350.
    source "phantom-spine": spine_phantoms.generate train/test splits (fixed seeds; no window).
    `phantom_counts` (train, test) per-class counts default to the phantom module's.
    sources "image-folder", "npz", "stylegan-folder" (`native`): `image_dir` is the folder / file;
    images are stored at native intensity with a per-image window: `class_windows` ({name:
    (center, width)} or 'name=c/w;...') over `window` (center, width) over the file's own;
    `classes` picks and orders the classes (default: natural order of the folders / label
    indices); `resize` none|area|pad|crop (True = area); a stratified `holdout_fraction` drawn
    with `seed` becomes 'test' (an .npz keeps its own train / validation / test); NIfTI volumes
    in an image folder are sliced along `slice_axis` (a volume's slices stay in one split).
    source "phantom-chest": chest_phantoms.generate, `num_examples` (train, test) images (default
    NUM_TRAIN / NUM_TEST) with per-finding `prevalence` (default DEFAULT_PREVALENCE), fixed seeds.
    sources "chexpert" / "chestxray14": `image_dir` is the dataset root (see `chest`); `findings`
    picks label columns (default `chest.DEFAULT_FINDINGS`), `uncertainty` u_ones|u_zeros|u_ignore
    and `frontal_only` apply to CheXpert, `holdout_fraction` / `seed` to a ChestX-ray14 root
    without test_list.txt (patient-level split). Images are resized to `image_size`.
    Chest sources store a multi-hot label; `findings` selects and orders the label columns.
    """
    name = _check_source(source)
    if source not in SOURCES:
        source = {v: k for k, v in SOURCES.items()}[name]
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1 px, got {image_size}")
    if window is not None and not float(window[1]) > 0:
        raise ValueError(f"window (center, width) must have width > 0, got {tuple(window)}")
    options = dict(image_dir=image_dir, image_size=int(image_size), channels=int(channels), window=window,
                   seed=int(seed), holdout_fraction=holdout_fraction, resize=resize, phantom_counts=phantom_counts,
                   num_examples=num_examples, prevalence=prevalence, findings=findings, uncertainty=uncertainty,
                   frontal_only=frontal_only, class_windows=class_windows, classes=classes, slice_axis=slice_axis)
    _check_options(source, options)
    extra, builder_cls, kwargs = PLANNERS[source]({**options, "source": source})
    params: dict = {"source": source, "image_size": int(image_size), "channels": int(channels), **extra}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    data_dir = os.path.join(out_dir, f"{source}-{image_size}px-{channels}ch-{digest}")
    if not _is_complete(data_dir, name):
        if "read" in kwargs:  # sources read into memory first (`native`)
            kwargs = dict(records=kwargs["read"](), image_size=image_size, channels=channels)
        builder = builder_cls(data_dir=data_dir, file_format=tfds.core.FileFormat.ARRAY_RECORD, **kwargs)
        config = tfds.download.DownloadConfig(
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS, try_download_gcs=False)
        # Nothing is downloaded; keep TFDS's empty downloads/ folders out of data_dir.
        with tempfile.TemporaryDirectory(prefix="jaxmedgan_tfds_") as download_dir:
            try:
                builder.download_and_prepare(download_dir=download_dir, download_config=config)
            except OSError:
                if not _is_complete(data_dir, name):  # A concurrent build may have won the rename.
                    raise
    info = {k: v for k, v in params.items() if k not in ("files", "index_files")}
    if "files" in params:
        info["num_files"] = len(params["files"])
    info.update(fingerprint=digest, data_dir=os.path.abspath(data_dir), class_names=list(class_names(data_dir, source)),
                splits=list(split_names(data_dir, source)), multi_label=is_multi_label(data_dir, source))
    meta = _builder(data_dir, source).info.metadata or {}
    if "intensity" in meta:
        info["intensity"] = meta["intensity"]
    atomic_io.write_json(os.path.join(data_dir, INFO_FILE), info, indent=1, sort_keys=True)
    return data_dir


def _builder(data_dir: str, source_name: str) -> tfds.core.DatasetBuilder:
    """Read-only builder for the newest complete version of source_name under data_dir."""
    name = _check_source(source_name)
    root = os.path.join(data_dir, name)
    versions = []
    if os.path.isdir(root):
        for v in os.listdir(root):
            if os.path.isfile(os.path.join(root, v, "dataset_info.json")):
                try:
                    versions.append((tfds.core.Version(v), v))
                except ValueError:
                    continue  # incomplete.* and other non-version folders.
    if not versions:
        found = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else "directory does not exist"
        raise ValueError(f"No complete {name!r} dataset under {data_dir!r} (found: {found}); build it "
                         f"with tfds_builders.build_dataset or `jaxmedgan dataset --source ...`")
    return tfds.builder_from_directory(os.path.join(root, max(versions)[1]))


class WindowedSource:
    """A native dataset split read through each example's window: element {"image": float32 [H,W,C]
    in [-1, 1], "label": int}; random access like the TFDS data source it wraps."""

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    @staticmethod
    def _window(example: dict) -> dict:
        w = np.asarray(example["window"], np.float32)
        image = intensity.to_model_range(example["image"], w[0], w[1], bool(example["invert"]))
        return {"image": image, "label": example["label"]}

    def __getitem__(self, index):
        return self._window(self._source[index])

    def __getitems__(self, indices):
        return [self._window(e) for e in self._source.__getitems__(list(indices))]


def is_native(data_dir: str, source_name: str) -> bool:
    """True if the dataset stores native intensities with per-image windows (`NativeImages`)."""
    return "window" in _builder(data_dir, source_name).info.features


def load_split(data_dir: str, source_name: str, split: str):
    """Random-access data source for one split; element {"image": uint8 [H,W,C] or float32 [H,W,C]
    in [-1, 1] (native datasets, windowed on read), "label": int}."""
    builder = _builder(data_dir, source_name)
    if split not in builder.info.splits:
        raise ValueError(f"Split {split!r} not in {builder.data_dir}; "
                         f"available: {sorted(builder.info.splits)}")
    source = builder.as_data_source(split)
    return WindowedSource(source) if "window" in builder.info.features else source


def to_model_range(images: np.ndarray) -> np.ndarray:
    """Stored images -> float32 in [-1, 1]: uint8 by u8 / 127.5 - 1, float (already windowed) as is."""
    images = np.asarray(images)
    return from_uint8(images) if images.dtype == np.uint8 else images.astype(np.float32)


def split_names(data_dir: str, source_name: str) -> tuple[str, ...]:
    """Names of the splits of a built dataset (e.g. ("test", "train"))."""
    return tuple(sorted(_builder(data_dir, source_name).info.splits))


def class_names(data_dir: str, source_name: str) -> tuple[str, ...]:
    """Class names (single-label) or finding names (multi-label) of a built dataset, in label order."""
    builder = _builder(data_dir, source_name)
    label = builder.info.features["label"]
    if isinstance(label, tfds.features.ClassLabel):
        return tuple(label.names)
    names = (builder.info.metadata or {}).get("label_names")
    if not names:
        raise ValueError(f"The multi-hot 'label' of {builder.data_dir} has no 'label_names' in its "
                         "metadata.json; rebuild it with tfds_builders.build_dataset")
    return tuple(names)


def is_multi_label(data_dir: str, source_name: str) -> bool:
    """True if the dataset's 'label' is multi-hot [K] (chest findings) rather than a ClassLabel."""
    return not isinstance(_builder(data_dir, source_name).info.features["label"], tfds.features.ClassLabel)


def load_examples(data_dir: str, source_name: str, split: str) -> dict[str, np.ndarray]:
    """Every feature of a split stacked: {"image": uint8 [N,H,W,C] (float32 in [-1, 1] for native
    datasets, already windowed), "label": [N] or [N,K], ...}."""
    source = load_split(data_dir, source_name, split)
    n = len(source)
    examples = source.__getitems__(list(range(n))) if n else []
    features = _builder(data_dir, source_name).info.features
    if not examples:
        return {k: np.zeros((0, *features[k].shape), features[k].np_dtype) for k in features.keys()
                if k not in ("window", "invert")}
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def load_arrays(data_dir: str, source_name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole split: (images float32 [N,H,W,C] in [-1,1], labels).

    labels: int32 [N] for single-label sources, multi-hot float32 [N,K] for chest sources.
    """
    ex = load_examples(data_dir, source_name, split)
    images = to_model_range(ex["image"])
    if is_multi_label(data_dir, source_name):
        return images, ex["label"].astype(np.float32)
    return images, ex["label"].astype(np.int32)
