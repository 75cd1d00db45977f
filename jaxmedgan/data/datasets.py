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
    if d.source in tfds_builders.CHEST_SOURCES:
        kwargs.update(findings=tuple(d.get("findings", ()) or ()) or None)
        if d.source == "phantom-chest":
            from jaxmedgan.data import chest_phantoms

            kwargs.update(num_examples=(int(d.get("num_train", 0) or chest_phantoms.NUM_TRAIN),
                                        int(d.get("num_test", 0) or chest_phantoms.NUM_TEST)),
                          prevalence=tuple(d.get("prevalence", ()) or ()) or None)
        else:
            kwargs.update(uncertainty=d.get("uncertainty", "u_ones"), frontal_only=bool(d.get("frontal_only", False)))
    root = d.data_dir or default_data_dir()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        if jax.process_index() == 0:
            tfds_builders.build_dataset(d.source, root, **kwargs)
        multihost_utils.sync_global_devices("jaxmedgan dataset built")
    return tfds_builders.build_dataset(d.source, root, **kwargs)  # reuses a complete dataset


def load(config: ml_collections.ConfigDict) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """(train data source, held-out (images f32 [N,H,W,C], labels) or None).

    labels: i32 [N] for single-label sources; multi-hot f32 [N,K] for the chest sources, whose
    training examples carry "label" uint8 [K] (the grain pipeline turns it into int32 [B,K]); only
    unconditional GANs (config.model.num_classes = 0) can train on them.
    """
    data_dir = prepare(config)
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
