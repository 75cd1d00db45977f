"""A trained family's workdir read back, on the trainers' floor: its state (`restore_state`), images
from a latent GAN's state (`generate`) and file-safe class tags (`file_tag`).

The families that draw from their own sub-workdirs (`per_class`, `dual_gan`, `pix2pix`) use these
directly; everything above the trainers reaches them through `jaxmedgan.sampling`, which re-exports
them beside the commands that write samples to disk.
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Any, Callable

import jax
import numpy as np

from jaxmedgan import checkpointing, images, trainers, workdir_lock
from jaxmedgan.trainers.common import latent_batch


def restore_state(workdir: str, step: int | None = None) -> tuple[Any, Any, int]:
    """Loads (config, state, step) from checkpoint `step` (default: the latest) in `workdir`, on one device."""
    config = checkpointing.read_config(workdir)
    family = trainers.family(config.trainer)
    if not family.has_steps:
        raise ValueError(f"{workdir} holds a {config.trainer!r} run, whose family has no step contract to restore "
                         "(a classifier loads with models.trained_classifier; a composite's states lie in its "
                         "sub-workdirs).")
    abstract = jax.eval_shape(functools.partial(family.init_state, config), jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    mngr = checkpointing.manager(workdir, async_save=False)
    if step is not None:
        return config, checkpointing.restore_step(mngr, abstract, step), step
    # A corrupt checkpoint is moved aside unless a live training holds the workdir (then only skipped).
    restored = checkpointing.restore_latest(mngr, abstract, may_move=lambda: workdir_lock.holder(workdir) is None)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints: train first (or wait for the "
                                "first checkpoint).")
    state, step = restored
    return config, state, step


class _GeneratorKey:
    """Hashable (generate function, config) pair; configs compare by their JSON."""

    def __init__(self, fn: Callable, config):
        self.fn, self.config = fn, copy.deepcopy(config)  # a copy: later edits by the caller cannot leak in
        self.json = config.to_json_best_effort(sort_keys=True)

    def __hash__(self) -> int:
        return hash((self.fn, self.json))

    def __eq__(self, other) -> bool:
        return isinstance(other, _GeneratorKey) and (self.fn, self.json) == (other.fn, other.json)


@functools.lru_cache(maxsize=16)
def _jit_generator(key: _GeneratorKey) -> Callable:
    return jax.jit(functools.partial(key.fn, key.config))


def jitted_generator(fn: Callable, config) -> Callable:
    """`jax.jit(partial(fn, config))`, one per (fn, config contents), so drawing from many
    checkpoints of one run (fid_validation.rank_checkpoints) compiles once."""
    return _jit_generator(_GeneratorKey(fn, config))


def file_tag(name: str, k: int) -> str:
    """A class name made safe for file names ([A-Za-z0-9._-]; others become '_'), `class{k}` if nothing is left."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))
    return safe if safe.strip("._") else f"class{k}"


def generate(config, state, family: trainers.Family, num: int, class_id: int | None, seed: int,
             batch_size: int = 64, as_float: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [num,H,W,C] (as_float: float32 in [-1, 1], unrounded) and int labels [num]
    (-1 when unconditional) from `family.generate` on latents."""
    num_classes = config.model.get("num_classes", 0)
    if class_id is not None:
        if not num_classes:
            raise ValueError("--class was given but this model is unconditional (model.num_classes = 0).")
        if not 0 <= class_id < num_classes:
            raise ValueError(f"--class {class_id} is out of range: this model has classes 0..{num_classes - 1}.")
    fn = jitted_generator(family.generate, config)
    rng = jax.random.PRNGKey(seed)
    out_images, out_labels = [], []
    for start in range(0, num, batch_size):
        rng, key = jax.random.split(rng)
        labels = np.full((batch_size,), class_id) if class_id is not None else None
        z, labels = latent_batch(config, key, batch_size, labels)  # fixed batch shape: one compile
        n = min(batch_size, num - start)
        x = np.asarray(fn(state, z, labels), np.float32)[:n]
        out_images.append(np.clip(x, -1.0, 1.0) if as_float else images.to_uint8(x))
        out_labels.append(np.asarray(labels)[:n] if labels is not None else np.full((n,), -1))
    return np.concatenate(out_images), np.concatenate(out_labels).astype(np.int64)
