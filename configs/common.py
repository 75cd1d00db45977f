"""Config sections every experiment shares (one definition; configs import them)."""
import dataclasses

import ml_collections

from jaxmedgan.privacy.config import DPConfig


def privacy(**overrides) -> ml_collections.ConfigDict:
    """The privacy section with DPConfig's defaults (fields documented in jaxmedgan/privacy/config.py),
    DP off unless `enabled=True` is passed; `overrides` set any field."""
    section = dataclasses.asdict(DPConfig())
    unknown = set(overrides) - set(section)
    if unknown:
        raise ValueError(f"Unknown privacy field(s) {sorted(unknown)}; known: {sorted(section)}.")
    section.update(overrides)
    return ml_collections.ConfigDict(section)
