"""The one list of data sources: what each `config.data.source` / `dataset --source` name is.

Every consumer asks this module instead of keeping its own list: the `dataset` command's choices,
the TFDS builder name a source is stored under, which sources need `image_dir`, which are
(label map, image) pairs for pix2pix / the dual GAN / segmentation, and the names of their map
classes. `get(name)` refuses an unknown name with the closest match and the full list.

kinds:
  labels    single-label images (a class per image): GANs, classifiers, downstream studies
  findings  multi-label images (multi-hot findings): unconditional GANs, classifiers, LCO
  pairs     (label map, image) pairs: pix2pix, dual GAN stage II, the segmentation study
"""
from __future__ import annotations

import dataclasses
import difflib


@dataclasses.dataclass(frozen=True)
class Source:
    """One data source: its name, kind, where its files come from and what its labels mean."""

    name: str
    kind: str  # labels | findings | pairs
    layout: str  # what image_dir must hold ("" = embedded, nothing to point at)
    tfds_name: str = ""  # the builder a `dataset` build is stored under ("" = read in memory, not built)
    native: bool = False  # stored at native intensity with a per-image window (`data.native`)
    options: tuple[str, ...] = ()  # `build_dataset` options it takes besides image_size, channels, seed
    channels: int = 0  # the only channel count it has (0 = 1 or 3, as asked)
    map_names: tuple[str, ...] = ()  # pairs: names of the map classes (empty = class0.. from num_labels)
    lesion: str = "lesion"  # pairs: what a positive map class is called in labels ("no_<lesion>" / lesion)

    @property
    def needs_image_dir(self) -> bool:
        return bool(self.layout)

    @property
    def buildable(self) -> bool:
        """True if `jaxmedgan dataset --source NAME` builds it."""
        return bool(self.tfds_name)


_BRAIN = ("background", "csf", "grey_matter", "white_matter", "tumour_core", "oedema")  # brain_mri.CLASS_NAMES
_NATIVE = ("image_dir", "window", "class_windows", "classes", "resize", "holdout_fraction")
_SOURCES = (
    Source("phantom-liver", "labels", "", "phantom_liver", options=("window", "phantom_counts"), channels=1),
    Source("phantom-spine", "labels", "", "phantom_spine", options=("phantom_counts",), channels=1),
    Source("phantom-chest", "findings", "", "phantom_chest", options=("num_examples", "prevalence", "findings"),
           channels=1),
    Source("image-folder", "labels", "DIR/<class_name>/* (PNG, JPEG, TIFF, DICOM by content, NIfTI volumes)",
           "native_images", native=True, options=(*_NATIVE, "slice_axis")),
    Source("npz", "labels", "a MedMNIST-style .npz with train/val/test _images and _labels", "native_images",
           native=True, options=tuple(o for o in _NATIVE if o != "holdout_fraction")),
    Source("stylegan-folder", "labels", "a StyleGAN2-ADA dataset folder or .zip with dataset.json",
           "native_images", native=True, options=_NATIVE),
    Source("chexpert", "findings", "the CheXpert root (train.csv, valid.csv)", "chexpert",
           options=("image_dir", "findings", "uncertainty", "frontal_only")),
    Source("chestxray14", "findings", "the ChestX-ray14 root (Data_Entry_2017.csv, images*/)", "chestxray14",
           options=("image_dir", "findings", "holdout_fraction")),
    Source("labels-csv", "labels", "a file,label[,group] CSV (config.data.labels_csv)"),
    Source("mni-brain", "pairs", "", map_names=_BRAIN, lesion="tumour"),
    Source("brats-folder", "pairs", "a BraTS root (<case>/<case>_t1|flair|seg.nii.gz)", map_names=_BRAIN,
           lesion="tumour"),
    Source("nifti-folder", "pairs", "DIR/images/*.nii.gz with DIR/labels/*.nii.gz", map_names=_BRAIN),
    Source("retina", "pairs", "", map_names=("background", "vessel"), lesion="vessel"),
    Source("fundus-folder", "pairs", "a DRIVE / STARE / HRF style fundus folder (images + vessel masks)",
           map_names=("background", "vessel"), lesion="vessel"),
)
SOURCES: dict[str, Source] = {s.name: s for s in _SOURCES}


def get(name: str) -> Source:
    """The source called `name`; ValueError with the closest name and the list otherwise."""
    if name in SOURCES:
        return SOURCES[name]
    hint = difflib.get_close_matches(str(name), SOURCES, n=1)
    raise ValueError(f"Unknown data source {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                     + f"; known sources: {', '.join(SOURCES)}.")


def names(*kinds: str, buildable: bool | None = None, native: bool | None = None) -> tuple[str, ...]:
    """Source names in registry order, filtered by kind(s), `buildable` and `native`."""
    return tuple(s.name for s in _SOURCES if (not kinds or s.kind in kinds)
                 and (buildable is None or s.buildable == buildable) and (native is None or s.native == native))
