"""Test helpers for DP batches built by hand (the pipeline adds these fields in training)."""
import numpy as np

from jaxmedgan.privacy import secret


def noise_key_rows(n: int, seed: int = 0) -> np.ndarray:
    """u32 [n, 2]: one step's noise key on every row, as data.pipeline.poisson_train_dataset adds it."""
    return np.broadcast_to(secret.from_seed(seed).noise_key(0), (n, 2)).copy()


def with_noise_key(batch: dict, seed: int = 0) -> dict:
    """`batch` plus its `dp_noise_key` field (leading axis from batch['image'])."""
    return {**batch, secret.NOISE_KEY_FIELD: noise_key_rows(len(batch["image"]), seed)}


def through_noise(sum_scale_grads, config, key=None):
    """What the optimiser's first transformation makes of a family's sum-scale DP gradient:
    (grads + N(0, sigma^2 C^2)) / E[B] with the config's sigma, C and E[B] = train.batch_size."""
    import jax

    from jaxmedgan.privacy import noise

    p = config.privacy
    tx = noise.gaussian_noise(p.noise_multiplier, p.l2_clip, config.train.batch_size)
    key = jax.random.PRNGKey(0) if key is None else key
    return tx.update(sum_scale_grads, tx.init(sum_scale_grads), noise_key=key)[0]
