"""Config sections every experiment shares (one definition; configs import them).

mesh, train, checkpoint and samples hold the keys every trainer reads (`config_drift` lists which
of them may change on resume); data, privacy, ada, ema and d_augment the shared defaults of their
sections. A config passes its own values and adds family keys through the keyword arguments.
"""
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


def data(source: str, image_size: int, **fields) -> ml_collections.ConfigDict:
    """The data section's shared keys (README "Your data"); `fields` set them or add family keys.

    source: a `jaxmedgan dataset --source` name; dataset_dir: a dataset built by `jaxmedgan dataset`
    (then source, size, channels, windows and classes come from it); image_dir: the user folder /
    file of image-folder | npz | stylegan-folder | chexpert | chestxray14; window_center/width: the
    dataset window in native units (width 0 = each file's own); class_windows: 'name=c/w;...';
    classes: comma-separated class folders to keep, in label order ('' = all, natural order);
    resize: none | area | pad | crop; holdout_fraction: stratified held-out share of user sources;
    slice_axis: the axis NIfTI volumes in an image folder are sliced along.
    """
    section = ml_collections.ConfigDict(dict(
        source=source, data_dir="", dataset_dir="", image_dir="", image_size=image_size, channels=1,
        augment=True, window_center=0.0, window_width=0.0, class_windows="", classes="", resize="none",
        holdout_fraction=0.1, slice_axis=2))
    section.update(fields)
    return section


def ada(**overrides) -> ml_collections.ConfigDict:
    """ADA's section (augment/controller.py AdaSettings + the pipeline name): p adapted from 0 by
    StyleGAN2-ADA's heuristic, target 0.6, every 4 steps, 500 kimg per unit of p, pipeline 'bgc'."""
    section = ml_collections.ConfigDict(dict(mode="adaptive", p=0.0, target=0.6, interval=4, kimg=500.0,
                                             pipeline="bgc"))
    section.update(overrides)
    return section


def ema(enabled: bool = False) -> ml_collections.ConfigDict:
    """G EMA for sampling (trainers/common.py ema_beta): half-life kimg (<= 0: batch * 10 / 32 kimg,
    StyleGAN2-ADA's 'auto'), ramped up to rampup x images seen; off unless `enabled`."""
    return ml_collections.ConfigDict(dict(enabled=enabled, kimg=-1.0, rampup=0.05))


def d_augment(kind: str = "none", policy: str = "color,translation,cutout") -> ml_collections.ConfigDict:
    """What D sees (augment/policy.py): kind none | diffaug (DiffAugment `policy`) | ada (config.ada)."""
    return ml_collections.ConfigDict(dict(kind=kind, policy=policy))


def mesh() -> ml_collections.ConfigDict:
    """The device mesh (sharding.py): every device on the data axis (-1: all), 1 on the model axis."""
    return ml_collections.ConfigDict(dict(data=-1, model=1))


def train(steps: int, batch_size: int, *, log_every: int, eval_every: int, **fields) -> ml_collections.ConfigDict:
    """The train section: `steps`, `batch_size` (global, over all devices and processes), how often to
    log and evaluate, compute dtype float32 (params and optimiser state stay float32; bfloat16 on
    accelerators), quiet=False (True hides the progress bar); `fields` add family keys."""
    section = ml_collections.ConfigDict(dict(steps=steps, batch_size=batch_size, log_every=log_every,
                                             eval_every=eval_every, dtype="float32", quiet=False))
    section.update(fields)
    return section


def checkpoint(every: int, keep: int) -> ml_collections.ConfigDict:
    """The checkpoint section (checkpointing.py): every `every` steps, the newest `keep` kept, saved
    asynchronously."""
    return ml_collections.ConfigDict(dict(every=every, keep=keep, async_save=True))


def samples(every: int, **fields) -> ml_collections.ConfigDict:
    """The sample-grid section: a grid every `every` steps, 8 per row, from fixed latents (seed 1234)
    so grids compare across steps; `fields` add family keys (e.g. StyleGAN2's truncation_psi)."""
    section = ml_collections.ConfigDict(dict(every=every, per_row=8, seed=1234))
    section.update(fields)
    return section
