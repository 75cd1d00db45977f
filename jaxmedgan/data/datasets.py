"""From `config.data` to what a trainer reads: a training data source and held-out arrays."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmedgan import atomic_io
from jaxmedgan.data import chest_phantoms, intensity, registry, tfds_builders

log = logging.getLogger("jaxmedgan")

DATA_DIR_ENV = "JAXMEDGAN_DATA_DIR"


def default_data_dir() -> str:
    """`$JAXMEDGAN_DATA_DIR`, else `~/.cache/jaxmedgan/datasets`."""
    return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/.cache/jaxmedgan/datasets")


def _build_kwargs(config: ml_collections.ConfigDict) -> dict:
    """`tfds_builders.build_dataset` keyword arguments from config.data: the options the source
    declares (`registry.Source.options`), read from their config.data keys."""
    d = config.data
    window = (d.window_center, d.window_width) if d.get("window_width", 0) > 0 else None
    from_config = {
        "image_dir": d.get("image_dir") or None, "window": window,
        "holdout_fraction": d.get("holdout_fraction", 0.0), "class_windows": d.get("class_windows", "") or None,
        "classes": _classes(d) or None, "resize": d.get("resize", "none") or "none",
        "slice_axis": int(d.get("slice_axis", 2)), "findings": tuple(d.get("findings", ()) or ()) or None,
        "uncertainty": d.get("uncertainty", "u_ones"), "frontal_only": bool(d.get("frontal_only", False)),
        "prevalence": tuple(d.get("prevalence", ()) or ()) or None,
    }
    if d.source == "phantom-chest":
        from_config["num_examples"] = (int(d.get("num_train", 0) or chest_phantoms.NUM_TRAIN),
                                       int(d.get("num_test", 0) or chest_phantoms.NUM_TEST))
    options = registry.get(d.source).options
    kwargs = {k: v for k, v in from_config.items() if k in options}
    return dict(image_size=d.image_size, channels=d.channels, seed=config.seed, **kwargs)


def _classes(d) -> tuple[str, ...]:
    value = d.get("classes", "") or ""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(c.strip() for c in items if c.strip())


def read_info(dataset_dir: str) -> dict:
    """The build record (`jaxmedgan_dataset.json`) of a dataset built by `jaxmedgan dataset`."""
    path = os.path.join(dataset_dir, tfds_builders.INFO_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"config.data.dataset_dir={dataset_dir!r} holds no {tfds_builders.INFO_FILE}; point it "
                         "at the directory `jaxmedgan dataset` printed ('Dataset ready in ...').")
    with open(path) as f:
        return json.load(f)


def built_values(info: dict) -> dict:
    """config.data values that reproduce a built dataset (inverse of `_build_kwargs`)."""
    values = {"source": info["source"], "image_size": int(info["image_size"]), "channels": int(info["channels"])}
    if info["source"] in tfds_builders.NATIVE_SOURCES:
        window = info.get("window") or (0.0, 0.0)
        values.update(image_dir=info.get("image_dir", ""), window_center=float(window[0]),
                      window_width=float(window[1]),
                      class_windows=";".join(f"{k}={c:g}/{w:g}" for k, (c, w) in
                                             sorted((info.get("class_windows") or {}).items())),
                      classes=",".join(info.get("classes") or ()), resize=info.get("resize", "none"),
                      holdout_fraction=float(info.get("holdout_fraction", 0.0)),
                      slice_axis=int(info.get("slice_axis", 2)))
    return values


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "class_windows":
        return intensity.parse_class_windows(a) == intensity.parse_class_windows(b)
    if key == "classes":
        return _classes({"classes": a}) == _classes({"classes": b})
    if key == "image_dir":
        return os.path.abspath(str(a)) == os.path.abspath(str(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def adopt_built(config: ml_collections.ConfigDict, explicit: Iterable[str] = ()) -> list[str]:
    """Points config.data at the built dataset `config.data.dataset_dir`: copies its source, size,
    channels, windows, classes (and, for a conditional model, the class count) into `config`.

    `explicit`: config keys the user set on the command line (e.g. "data.image_size"); any of those
    that differ from the built dataset is a ValueError naming the fields. Returns the keys changed.
    """
    d = config.data
    info = read_info(d.dataset_dir)
    explicit = {k[len("data."):] if k.startswith("data.") else k for k in explicit}
    wanted = built_values(info)
    clash = [f"data.{k}={d.get(k)!r} (built: {v!r})" for k, v in wanted.items()
             if k in explicit and k in d and not _same(k, d.get(k), v)]
    if clash:
        raise ValueError(f"config.data.dataset_dir={d.dataset_dir!r} was built with other options than requested: "
                         + "; ".join(clash) + ". Drop those overrides, or build a new dataset with them.")
    changed = []
    for k, v in wanted.items():
        if k in d and not _same(k, d[k], v):
            d[k] = type(d[k])(v) if isinstance(d[k], (int, float, str)) and not isinstance(d[k], bool) else v
            changed.append(f"data.{k}")
    k = config.get("model", {}).get("num_classes", 0) if "model" in config else 0
    names = info.get("class_names") or []
    if k and not info.get("multi_label") and names and k != len(names) and "model.num_classes" not in explicit:
        config.model.num_classes = len(names)
        changed.append("model.num_classes")
    return changed


def check_built(config: ml_collections.ConfigDict) -> str:
    """The absolute dataset_dir after checking config.data agrees with its build record."""
    d = config.data
    info = read_info(d.dataset_dir)
    clash = [f"data.{k}={d.get(k)!r} (built: {v!r})" for k, v in built_values(info).items()
             if k in d and not _same(k, d.get(k), v)]
    if clash:
        raise ValueError(f"config.data.dataset_dir={d.dataset_dir!r} does not match config.data: " + "; ".join(clash)
                         + ". `jaxmedgan train` adopts a built dataset's options; from Python call "
                         "datasets.adopt_built(config) first.")
    return os.path.abspath(d.dataset_dir)


def prepare(config: ml_collections.ConfigDict) -> str:
    """The configured dataset's data_dir: `config.data.dataset_dir` (checked against config.data),
    else built under `config.data.data_dir` if needed (process 0 first, then a barrier)."""
    d = config.data
    if d.get("dataset_dir"):
        return check_built(config)
    kwargs = _build_kwargs(config)
    root = d.data_dir or default_data_dir()
    before = _builds(root, d.source)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        if jax.process_index() == 0:
            tfds_builders.build_dataset(d.source, root, **kwargs)
        multihost_utils.sync_global_devices("jaxmedgan dataset built")
    data_dir = tfds_builders.build_dataset(d.source, root, **kwargs)  # reuses a complete dataset
    if before and os.path.abspath(data_dir) not in before:
        _warn_new_build(data_dir, before)
    return data_dir


def _builds(root: str, source: str) -> dict[str, dict]:
    """{absolute dir: build record} of the complete `source` datasets already under `root`."""
    out = {}
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.abspath(os.path.join(root, name))
            if name.startswith(f"{source}-") and os.path.isfile(os.path.join(path, tfds_builders.INFO_FILE)):
                try:
                    out[path] = read_info(path)
                except (ValueError, json.JSONDecodeError):
                    continue
    return out


def _warn_new_build(data_dir: str, before: dict[str, dict]) -> None:
    """A build next to others of the same source: say which options made it new (the usual cause of
    'my windowed dataset was ignored': an option not repeated on the train command)."""
    info = read_info(data_dir)
    skip = {"data_dir", "fingerprint", "intensity", "splits", "num_files", "class_names", "multi_label"}
    diffs = []
    for path, other in before.items():
        fields = sorted(k for k in set(info) | set(other) if k not in skip and info.get(k) != other.get(k))
        diffs.append((len(fields), path, fields))
    _, path, fields = min(diffs)
    log.warning("Built a new dataset %s although %s exists: options differ in %s (%s). To train on the existing "
                "one, pass --config.data.dataset_dir=%s.", data_dir, path, ", ".join(fields) or "inputs",
                "; ".join(f"{k}: {before[path].get(k)!r} there, {info.get(k)!r} now" for k in fields[:4]), path)


def describe(data_dir: str) -> str:
    """One line for logs: the dataset's directory, source, fingerprint, classes and split sizes."""
    try:
        info = read_info(data_dir)
    except ValueError:
        return data_dir
    return (f"{data_dir} (source {info.get('source')}, fingerprint {info.get('fingerprint', '?')}, "
            f"classes {info.get('class_names')}, window {info.get('window')}, "
            f"intensity {(info.get('intensity') or {}).get('kind', 'uint8')})")


def load(config: ml_collections.ConfigDict, data_dir: str | None = None
         ) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """(train data source, held-out (images f32 [N,H,W,C], labels) or None).

    labels: i32 [N] for single-label sources; multi-hot f32 [N,K] for the chest sources, whose
    training examples carry "label" uint8 [K] (the grain pipeline turns it into int32 [B,K]); only
    unconditional GANs (config.model.num_classes = 0) can train on them.
    """
    data_dir = data_dir or prepare(config)
    log.info("Dataset %s", describe(data_dir))
    source = config.data.source
    names = tfds_builders.class_names(data_dir, source)
    k = config.model.get("num_classes", 0)
    if k and tfds_builders.is_multi_label(data_dir, source):
        raise ValueError(f"config.model.num_classes={k} asks for a class-conditional GAN, but the {source!r} "
                         f"dataset in {data_dir} is multi-label (findings {names}); set "
                         "--config.model.num_classes=0 (unconditional) or use a single-label source.")
    if k and k != len(names):
        raise ValueError(f"config.model.num_classes={k} but the {source!r} dataset in {data_dir} has "
                         f"{len(names)} classes {names}; set --config.model.num_classes={len(names)}.")
    train = tfds_builders.load_split(data_dir, source, "train")
    eval_arrays = None  # an image folder built without a hold-out split has no "test"
    if "test" in tfds_builders.split_names(data_dir, source):
        eval_arrays = tfds_builders.load_arrays(data_dir, source, "test")
    return train, eval_arrays


WORKDIR_RECORD = "dataset.json"  # in a training workdir: what the run trained on (class names, windows)


def record_in_workdir(workdir: str, data_dir: str) -> dict:
    """Copies the dataset's build record into WORKDIR/dataset.json (atomically); returns it.

    Keys: source, data_dir (absolute), fingerprint, class_names (label order), multi_label,
    window ([center, width] or None), intensity ({kind, class_windows: {name: {center, width,
    invert} | None}, window_sources} for native datasets; absent for uint8 ones), splits.
    """
    info = read_info(data_dir)
    info["data_dir"] = os.path.abspath(data_dir)
    atomic_io.write_json(os.path.join(workdir, WORKDIR_RECORD), info, indent=1, sort_keys=True)
    return info


def workdir_record(workdir: str) -> dict | None:
    """WORKDIR/dataset.json (see `record_in_workdir`), or None for runs that have none."""
    return atomic_io.read_json(os.path.join(workdir, WORKDIR_RECORD))


def class_names_for(workdir: str, num_classes: int) -> list[str]:
    """The class names a workdir's model was trained with (label order); class0.. when unknown."""
    record = workdir_record(workdir) or {}
    names = list(record.get("class_names") or [])
    if len(names) == num_classes and not record.get("multi_label"):
        return names
    return [f"class{i}" for i in range(num_classes)]
