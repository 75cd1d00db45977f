"""Test helpers for DP batches built by hand (the pipeline adds these fields in training)."""
import numpy as np

from jaxmedgan.privacy import secret


def noise_key_rows(n: int, seed: int = 0) -> np.ndarray:
    """u32 [n, 2]: one step's noise key on every row, as data.pipeline.poisson_train_dataset adds it."""
    return np.broadcast_to(secret.from_seed(seed).noise_key(0), (n, 2)).copy()


def with_noise_key(batch: dict, seed: int = 0) -> dict:
    """`batch` plus its `dp_noise_key` field (leading axis from batch['image'])."""
    return {**batch, secret.NOISE_KEY_FIELD: noise_key_rows(len(batch["image"]), seed)}
