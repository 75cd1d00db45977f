"""Grain training pipeline: the batch of step k is a pure function of (data, seed, k).

    source -> shuffle(seed) -> repeat() -> to float [-1, 1] -> random_map(Augment, seed)
           -> [process_index::process_count] -> batch(global_batch / process_count)

Everything is a ``grain.MapDataset`` (random access), so ``ds[k]`` *is* the local batch of step k:
resuming at step k (``iterate(ds, k)``) yields exactly the batches an uninterrupted run sees,
with no iterator state to checkpoint. Grain reshuffles every epoch (epoch e uses shuffle seed
``s + e``); the shuffle and augmentation seeds are hashed from ``seed`` so that runs with
neighbouring seeds do not share epoch orders.

Augmentation and shuffling act on the *global* example stream before the per-process slice, so
the global batch of step k (the union over processes) and each example's augmentation are the
same for any process count: host p takes stream positions ``(k * B_local + i) * P + p``, which
are disjoint across hosts and, within an epoch, cover the data once.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from jaxmedgan.privacy import canaries, sampling
from jaxmedgan.privacy import secret as dp_secret

from jaxmedgan.data import transforms


class ArraySource(Sequence):
    """Random-access source over in-memory arrays; element {"image": [H, W, C], "label": int32}."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise ValueError(f"ArraySource expects images [N, H, W, C] and labels [N]; got images "
                             f"{images.shape} and labels {labels.shape}")
        self._images = images
        self._labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self._images[index], "label": self._labels[index]}


def to_model_example(example: dict[str, Any]) -> dict[str, np.ndarray]:
    """Maps a source example to {"image": float32 [H, W, C] in [-1, 1], "label": int32 []}.

    uint8 images map by u8 / 127.5 - 1 (the inverse of tfds_builders.to_uint8); float images
    are taken to be in [-1, 1] already. Other array fields (e.g. a pix2pix condition map "cond"
    [H, W, K]) pass through unchanged, float ones as float32; non-array fields are dropped.
    """
    if not isinstance(example, dict) or "image" not in example or "label" not in example:
        keys = sorted(example) if isinstance(example, dict) else type(example).__name__
        raise ValueError(f"Data source elements must be dicts with 'image' and 'label'; got {keys}")
    image = np.asarray(example["image"])
    if image.ndim != 3:
        raise ValueError(f"Data source 'image' must be [H, W, C]; got shape {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 127.5 - 1.0
    elif np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    else:
        raise ValueError(f"Data source 'image' must be uint8 or float in [-1, 1]; got {image.dtype}")
    extra = {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v)
             for k, v in example.items()
             if k not in ("image", "label") and isinstance(v, np.ndarray) and v.ndim >= 1}
    return {"image": image, "label": np.int32(example["label"]), **extra}


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")


def _derived_seeds(seed: int) -> tuple[int, int]:
    """(shuffle seed, augmentation seed), both in [0, 2**32), hashed from seed."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    shuffle_seed, augment_seed = np.random.SeedSequence([seed, 0x4A4D4731]).generate_state(2)
    return int(shuffle_seed), int(augment_seed)


def train_dataset(
    data_source: Any,
    *,
    global_batch_size: int,
    seed: int,
    augment: bool,
    process_index: int,
    process_count: int,
    augmentation: transforms.Augment | None = None,
) -> grain.MapDataset:
    """Infinite MapDataset; element k = {"image": float32 [B_local,H,W,C], "label": int32 [B_local]}.

    B_local = global_batch_size / process_count. `augmentation` overrides the default
    transforms.Augment() when `augment` is True.
    """
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    _check_process(process_index, process_count)
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} is not divisible by process_count="
                         f"{process_count}; every process needs the same local batch")
    if len(data_source) == 0:
        raise ValueError("data source is empty; expected at least one example")
    shuffle_seed, augment_seed = _derived_seeds(seed)
    ds = grain.MapDataset.source(data_source).shuffle(seed=shuffle_seed).repeat()
    ds = ds.map(to_model_example)
    if augment:
        augmentation = transforms.Augment() if augmentation is None else augmentation
        ds = ds.random_map(augmentation, seed=augment_seed)
    ds = ds[process_index::process_count]
    return ds.batch(global_batch_size // process_count, drop_remainder=True)


def iterate(
    ds: grain.MapDataset, start_step: int, *, num_threads: int = 2, prefetch_buffer_size: int = 4
) -> Iterator[dict[str, np.ndarray]]:
    """Yields ds[start_step], ds[start_step + 1], ... in order, prefetched by num_threads threads."""
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    return iter(ds[start_step:].to_iter_dataset(options))


class _PoissonBatch:
    """Element k of a Poisson-sampled dataset (picklable callable for grain's map)."""

    def __init__(self, data_source, sampling_rate, max_batch_size, secret, seed, augmentation,
                 process_index, process_count, num_canaries=0, cycle_length=1):
        self.source = data_source
        self.q = sampling_rate
        self.max_batch_size = max_batch_size
        self.secret = secret
        self.canary_coins = canaries.coins(secret.words, num_canaries) if num_canaries else None
        self.cycle_length = cycle_length
        self.groups = self.canary_groups = None
        if cycle_length > 1:  # cyclic Poisson (band_mf): a secret group per example and per canary
            rng = secret.partition_rng()
            groups = sampling.cyclic_groups(rng, len(data_source), cycle_length)
            self.groups = [np.flatnonzero(groups == j) for j in range(cycle_length)]
            if num_canaries:
                self.canary_groups = sampling.cyclic_groups(rng, num_canaries, cycle_length)
        _, self.augment_seed = _derived_seeds(seed)
        self.augmentation = augmentation
        self.process_index, self.process_count = process_index, process_count

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = self.secret.sampling_rng(step)
        group = None if self.groups is None else self.groups[step % self.cycle_length]
        rate = self.q * self.cycle_length  # within the step's group (each example: q per step overall)
        drawn = sampling.poisson_batch(rng, len(self.source), rate, self.max_batch_size, population=group)
        positions = range(self.process_index, self.max_batch_size, self.process_count)
        examples = []
        for pos in positions:
            example = to_model_example(self.source[int(drawn.indices[pos])])
            if self.augmentation is not None:
                rng = np.random.default_rng([self.augment_seed, step, pos])
                example = self.augmentation.random_map(example, rng)
            examples.append(example)
        if "mask" in examples[0]:
            raise ValueError("Data source field 'mask' collides with the DP-SGD padding mask of a "
                             "Poisson batch; rename the field (e.g. 'cond' for a condition map).")
        batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}  # + extra fields
        batch["label"] = batch["label"].astype(np.int32)
        if dp_secret.NOISE_KEY_FIELD in batch:
            raise ValueError(f"Data source field {dp_secret.NOISE_KEY_FIELD!r} collides with the DP-SGD noise "
                             "key; rename it.")
        # The step's noise key rides along on every row (the batch is sharded by rows); a step uses row 0.
        noise_key = np.broadcast_to(self.secret.noise_key(step), (len(positions), 2)).copy()
        if self.canary_coins is not None:  # the in-canaries this step's Poisson draw includes, on every row
            eligible = self.canary_coins if self.canary_groups is None else (
                self.canary_coins & (self.canary_groups == step % self.cycle_length))
            active = canaries.step_active(rng, eligible, rate)
            batch[dp_secret.CANARY_FIELD] = np.broadcast_to(active, (len(positions), len(active))).copy()
        return {**batch, "mask": drawn.mask[list(positions)], dp_secret.NOISE_KEY_FIELD: noise_key,
                "num_dropped": np.int32(drawn.num_dropped), "num_real": np.int32(drawn.mask.sum())}


def poisson_train_dataset(
    data_source: Any,
    *,
    sampling_rate: float,
    max_batch_size: int,
    secret: Any,
    seed: int,
    augment: bool,
    process_index: int,
    process_count: int,
    augmentation: transforms.Augment | None = None,
    num_canaries: int = 0,
    cycle_length: int = 1,
) -> grain.MapDataset:
    """DP-SGD input: element k = Poisson-sampled batch of step k, padded to a fixed shape.

    Every example joins step k's batch independently with probability `sampling_rate` (the
    sampling the privacy accountant analyses); the global batch is padded to `max_batch_size`
    with `mask` 0 and this process holds positions [process_index::process_count]:
    {"image": f32 [M_local,H,W,C], "label": i32 [M_local], "mask": f32 [M_local],
    "dp_noise_key": u32 [M_local, 2] (step k's noise key, the same on every row), "num_dropped": i32 [],
    "num_real": i32 [] (the global draw's size, for the host's padding bucket; private, never logged)}
    with M_local = max_batch_size / process_count; with `num_canaries` K > 0 also "dp_canaries":
    f32 [M_local, K], the white-box canaries (privacy/canaries.py) step k includes, on every row.
    `cycle_length` b > 1 (band_mf): cyclic Poisson sampling, i.e. step k draws at rate b x q from
    the k mod b-th of b secret groups (`privacy.sampling.cyclic_groups`), canaries likewise.
    Membership, canaries and noise key come from `secret`
    (`privacy.secret.Secret`: the run's private streams); `seed` only seeds the augmentation.
    """
    _check_process(process_index, process_count)
    if max_batch_size % process_count:
        raise ValueError(f"max_batch_size={max_batch_size} is not divisible by process_count={process_count}")
    if len(data_source) == 0:
        raise ValueError("data source is empty; expected at least one example")
    if augment and augmentation is None:
        augmentation = transforms.Augment()
    fn = _PoissonBatch(data_source, sampling_rate, max_batch_size, secret, seed,
                       augmentation if augment else None, process_index, process_count, num_canaries,
                       cycle_length)
    return grain.MapDataset.range(2**62).map(fn)
