"""Drawing samples from a trained workdir: `jaxmedgan sample`."""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np

from jaxmedgan import checkpointing, images, trainers


def restore_state(workdir: str) -> tuple[Any, Any, int]:
    """Loads (config, state, step) from the latest checkpoint in `workdir`, on one device."""
    config = checkpointing.read_config(workdir)
    trainer = trainers.get(config.trainer)
    abstract = jax.eval_shape(functools.partial(trainer.FAMILY.init_state, config), jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    mngr = checkpointing.manager(workdir, async_save=False)
    restored = checkpointing.restore_latest(mngr, abstract)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints: train first (or wait for the "
                                "first checkpoint).")
    state, step = restored
    return config, state, step


def generate(config, state, trainer, num: int, class_id: int | None, seed: int,
             batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [num,H,W,C] and int labels [num] (-1 when unconditional)."""
    from jaxmedgan.trainers.common import latent_batch

    num_classes = config.model.get("num_classes", 0)
    if class_id is not None:
        if not num_classes:
            raise ValueError("--class was given but this model is unconditional (model.num_classes = 0).")
        if not 0 <= class_id < num_classes:
            raise ValueError(f"--class {class_id} is out of range: this model has classes 0..{num_classes - 1}.")
    fn = jax.jit(functools.partial(trainer.FAMILY.generate, config))
    rng = jax.random.PRNGKey(seed)
    out_images, out_labels = [], []
    for start in range(0, num, batch_size):
        rng, key = jax.random.split(rng)
        labels = np.full((batch_size,), class_id) if class_id is not None else None
        z, labels = latent_batch(config, key, batch_size, labels)  # fixed batch shape: one compile
        n = min(batch_size, num - start)
        out_images.append(images.to_uint8(np.asarray(fn(state, z, labels)))[:n])
        out_labels.append(np.asarray(labels)[:n] if labels is not None else np.full((n,), -1))
    return np.concatenate(out_images), np.concatenate(out_labels).astype(np.int64)


def sample_to_dir(workdir: str, num: int, out: str, *, class_id: int | None = None, seed: int = 0) -> str:
    """Writes `num` PNGs and `samples.npz` (images uint8 NHWC, labels int) to `out`; returns it.

    Map-conditioned families (trainer modules with `draw`: pix2pix, dual_gan) also write
    `NNNNNN_mask.png` (class k scaled to k * 255 / (K - 1) for viewing) and `masks` (class
    indices uint8 [N,H,W]) in the npz. Files go to a temporary sibling directory that is renamed
    into place when complete, so a failure never leaves a partial sample set behind.
    """
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}.")
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"Output directory {out!r} exists and is not empty; choose another --out.")
    trainer = trainers.get(checkpointing.read_config(workdir).trainer)
    masks, mask_scale = None, 0
    if hasattr(trainer, "draw"):  # the family picks its own condition maps (pix2pix, dual GAN)
        if class_id is not None:
            raise ValueError("--class applies to class-conditional GANs only; this workdir's model is "
                             "conditioned on label maps.")
        drawn = trainer.draw(workdir, num, seed)
        imgs, masks, step = drawn["images"], drawn["masks"], drawn["step"]
        labels = np.full((num,), -1, np.int64)
        mask_scale = 255 // max(len(drawn["class_names"]) - 1, 1)
    else:
        config, state, step = restore_state(workdir)
        imgs, labels = generate(config, state, trainer, num, class_id, seed)
    steps = ({f"checkpoint_step_{k}": v for k, v in step.items()} if isinstance(step, dict)
             else {"checkpoint_step": step})
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sampling-", dir=parent)
    try:
        for i, (img, lab) in enumerate(zip(imgs, labels)):
            suffix = f"_class{lab}" if lab >= 0 else ""
            images.save_png(os.path.join(tmp, f"{i:06d}{suffix}.png"), img)
            if masks is not None:
                images.save_png(os.path.join(tmp, f"{i:06d}_mask.png"), (masks[i] * mask_scale)[..., None])
        np.savez_compressed(os.path.join(tmp, "samples.npz"), images=imgs, labels=labels, seed=seed,
                            **steps, **({"masks": masks} if masks is not None else {}))
        if os.path.exists(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
