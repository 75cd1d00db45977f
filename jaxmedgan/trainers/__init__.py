"""Trainers, one module per model family, looked up by `config.trainer`.

`family(name)` is the typed contract (`contract.Family`): what callers ask of a family. `get(name)`
is its module, for module-level entry points (`train_and_evaluate`) and a family's own helpers.
"""
from __future__ import annotations

import importlib
from typing import Any

import ml_collections

from jaxmedgan.trainers.contract import Family

TRAINERS = {
    "gan": "jaxmedgan.trainers.gan",
    "classifier": "jaxmedgan.trainers.classifier",
    "stylegan2": "jaxmedgan.trainers.stylegan2",
    "pix2pix": "jaxmedgan.trainers.pix2pix",
    "dual_gan": "jaxmedgan.trainers.dual_gan",
    "pggan": "jaxmedgan.trainers.pggan",
    "per_class": "jaxmedgan.trainers.per_class",  # one unconditional GAN per class (train.per_class=True)
}


def get(name: str) -> Any:
    """Returns the trainer module registered as `name`."""
    if name not in TRAINERS:
        raise ValueError(f"Unknown config.trainer {name!r}; expected one of {sorted(TRAINERS)}.")
    return importlib.import_module(TRAINERS[name])


def family(name: str) -> Family:
    """The `Family` of the trainer registered as `name` (its module's `FAMILY`)."""
    return get(name).FAMILY


def with_latent_space(space: str = "z") -> list[str]:
    """Registered names whose generator is driven from latent `space` (sorted)."""
    return sorted(name for name in TRAINERS if space in family(name).latent_spaces)


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, int | None] | None:
    """(smallest, largest or None) `data.image_size` in px that `config`'s family builds; None when
    `config.trainer` is unset or unknown, or its family sets no limits. `config_validation` takes it."""
    name = config.get("trainer")
    if name not in TRAINERS:
        return None
    sizes = family(name).image_sizes
    return None if sizes is None else sizes(config)
