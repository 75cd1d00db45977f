"""From `config.data` to what a trainer reads: a training data source and held-out arrays."""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmedgan.data import tfds_builders

DATA_DIR_ENV = "JAXMEDGAN_DATA_DIR"


def default_data_dir() -> str:
    """`$JAXMEDGAN_DATA_DIR`, else `~/.cache/jaxmedgan/datasets`."""
    return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/.cache/jaxmedgan/datasets")


def prepare(config: ml_collections.ConfigDict) -> str:
    """Builds the configured dataset if needed (process 0 first) and returns its data_dir."""
    d = config.data
    window = (d.window_center, d.window_width) if d.window_width > 0 else None
    kwargs = dict(image_dir=d.image_dir or None, image_size=d.image_size, channels=d.channels,
                  window=window, seed=config.seed, holdout_fraction=d.get("holdout_fraction", 0.0))
    root = d.data_dir or default_data_dir()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        if jax.process_index() == 0:
            tfds_builders.build_dataset(d.source, root, **kwargs)
        multihost_utils.sync_global_devices("jaxmedgan dataset built")
    return tfds_builders.build_dataset(d.source, root, **kwargs)  # reuses a complete dataset


def load(config: ml_collections.ConfigDict) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """(train data source, held-out (images f32 [N,H,W,C], labels i32 [N]) or None)."""
    data_dir = prepare(config)
    source = config.data.source
    names = tfds_builders.class_names(data_dir, source)
    k = config.model.get("num_classes", 0)
    if k and k != len(names):
        raise ValueError(f"config.model.num_classes={k} but the {source!r} dataset in {data_dir} has "
                         f"{len(names)} classes {names}; set --config.model.num_classes={len(names)}.")
    train = tfds_builders.load_split(data_dir, source, "train")
    eval_arrays = None  # an image folder built without a hold-out split has no "test"
    if "test" in tfds_builders.split_names(data_dir, source):
        eval_arrays = tfds_builders.load_arrays(data_dir, source, "test")
    return train, eval_arrays
