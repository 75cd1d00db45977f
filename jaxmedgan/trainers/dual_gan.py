"""Dual GAN for retinal images (Guibas et al. 2017): stage I geometry, stage II appearance.

Stage I  = an unconditional 1-channel GAN trained on the vessel masks of the real crops (mask
           {0, 1} -> image {-1, 1}); it generates vessel trees. `config.stage1_family` picks it:
           'gan' (the project's DCGAN, `trainers/gan.py`; also what a config without the key
           means) or 'stylegan2' (StyleGAN2-ADA, `trainers/stylegan2.py`). `config.stage1` is that
           trainer's config (its `trainer` key must name the same family).
Stage II = pix2pix (`trainers/pix2pix.py`) trained on (mask, fundus crop) pairs; it paints a
           fundus image (3 channels) onto a mask.
Sampling chains them: stage-I sample -> binary mask -> one-hot -> pix2pix -> image. Stage I (either
family) is trained on masks softened by a Gaussian of `data.mask_blur_px` (0.7 px): exactly
binary reals let the DCGAN's D win by spotting any non-binary pixel (measured: D accuracy ~0.95
and an all-background G after 300 steps), soft ones do not. Its output is binarised by
`mask_threshold`: 'zero' (> 0, the midpoint of [-1, 1]) or 'fraction' (per image, the brightest
pixels up to the training masks' vessel fraction, stored in W/mask_stats.json -- for briefly
trained stage-I models whose output has not yet crossed 0).

Workdir layout: W/config.json (this config), W/stage1/ and W/stage2/ (ordinary `common.fit`
workdirs with their own checkpoints, metrics and sample grids). Stages run in order and each
resumes from its own checkpoint, so rerunning the command after an interruption continues where
it stopped. `config.data` (retina fields) is shared: it is copied into both stage configs, so
`--config.data.image_size=...` reaches both; `--config.stage1.train.steps=...` reaches one.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import ml_collections
import numpy as np

from jaxmedgan import atomic_io, checkpointing, images, trainers
from jaxmedgan.data import paired, pipeline
from jaxmedgan.trainers import common, contract, drawing, pix2pix

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2")
MASK_STATS = "mask_stats.json"  # vessel fraction of the training masks (for mask_threshold='fraction')
STAGE1_FAMILIES = ("gan", "stylegan2")  # trainer registry keys a stage I may use


def stage1_family(config: ml_collections.ConfigDict) -> str:
    """The stage-I trainer key of a dual-GAN config: `config.stage1_family`, 'gan' when absent
    (configs written before StyleGAN2 stage I existed); checked against `config.stage1.trainer`."""
    family = config.get("stage1_family", "gan")
    if family not in STAGE1_FAMILIES:
        raise ValueError(f"config.stage1_family must be one of {STAGE1_FAMILIES}, got {family!r}.")
    trainer = config.stage1.get("trainer", "gan")
    if trainer != family:
        raise ValueError(f"config.stage1_family={family!r} but config.stage1 is a {trainer!r} config "
                         f"(config.stage1.trainer); pick the family with --config "
                         f"configs/dual_gan_retina.py:{family}, which builds the matching stage1 section.")
    return family


def stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
    """The full config of one stage: `config.<stage>` with the shared seed, mesh and data fields."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
    c = ml_collections.ConfigDict(config[stage].to_dict())
    c.seed = config.seed
    c.mesh = ml_collections.ConfigDict(config.mesh.to_dict())
    size = config.data.image_size
    if stage == "stage1":
        family = stage1_family(config)
        c.data.image_size, c.data.channels, c.data.augment = size, 1, False
        c.model.num_classes = 0
        if family == "stylegan2" and c.loss.r1_gamma < 0:  # StyleGAN2-ADA 'auto' gamma
            c.loss.r1_gamma = 0.0002 * size**2 / c.train.batch_size
    else:
        c.data = ml_collections.ConfigDict(config.data.to_dict())
    return c


def masks_to_images(maps: np.ndarray, blur_px: float = 0.0) -> np.ndarray:
    """Vessel maps uint8 {0,1} [N,H,W] -> stage-I training images f32 [N,H,W,1] in [-1, 1]
    (Gaussian-softened by `blur_px` px)."""
    from scipy import ndimage

    soft = maps.astype(np.float32)
    if blur_px > 0:
        soft = np.stack([ndimage.gaussian_filter(m, blur_px) for m in soft])
    return (soft * 2.0 - 1.0)[..., None].astype(np.float32)


def _write_json(path: str, obj: dict) -> None:
    atomic_io.write_json(path, obj, indent=1, sort_keys=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data=None) -> dict[str, Any]:
    """Trains stage I then stage II into workdir/stage1, workdir/stage2; returns both states.

    `data` optionally gives the (train, held-out) dicts {"image", "map"} (default: config.data).
    """
    checkpointing.write_config(workdir, config)
    train, test = paired.load_arrays(config) if data is None else data
    cfg2 = stage_config(config, "stage2")
    paired.check_arrays(train, cfg2, "training")
    paired.check_arrays(test, cfg2, "held-out")
    log.info("dual GAN: %d training crops (vessel fraction %.3f), %d held out.", len(train["map"]),
             float(train["map"].mean()), len(test["map"]))
    _write_json(os.path.join(workdir, MASK_STATS), {"vessel_fraction": float(train["map"].mean()),
                                                    "num_train": int(len(train["map"]))})
    cfg1 = stage_config(config, "stage1")
    masks = pipeline.ArraySource(masks_to_images(train["map"], config.data.get("mask_blur_px", 0.0)),
                                 np.zeros(len(train["map"]), np.int32))
    log.info("dual GAN: stage I is %s.", cfg1.trainer)
    state1 = common.fit(cfg1, os.path.join(workdir, "stage1"), trainers.family(cfg1.trainer),
                        data=(masks, None))
    source = paired.PairSource(train["image"], train["map"], cfg2.data.num_labels)
    state2 = pix2pix.train_and_evaluate(cfg2, os.path.join(workdir, "stage2"), data=(source, test))
    return {"stage1": state1, "stage2": state2}


def generate_masks(config: ml_collections.ConfigDict, state, num: int, seed: int, *,
                   threshold: str = "zero", fraction: float = 0.0, batch_size: int = 64) -> np.ndarray:
    """Stage-I vessel masks uint8 {0,1} [num,H,W] from the stage-I `config` (its `trainer` picks
    the family: 'gan' or 'stylegan2') and `state`: output > 0 ('zero'), or its top `fraction` of
    pixels per image ('fraction')."""
    if config.trainer not in STAGE1_FAMILIES:
        raise ValueError(f"The stage-I config has trainer {config.trainer!r}; expected one of {STAGE1_FAMILIES}.")
    imgs, _ = drawing.generate(config, state, trainers.family(config.trainer), num, None, seed,
                                batch_size=batch_size)
    x = imgs[..., 0].astype(np.float32)
    if threshold == "zero":
        return (x > 127.5).astype(np.uint8)  # uint8 127.5 <-> 0.0 in [-1, 1]
    if threshold == "fraction":
        if not 0 < fraction < 1:
            raise ValueError(f"mask fraction must be in (0, 1), got {fraction}.")
        cut = np.quantile(x.reshape(num, -1), 1.0 - fraction, axis=1)[:, None, None]
        return (x > cut).astype(np.uint8)
    raise ValueError(f"config.mask_threshold must be 'zero' or 'fraction', got {threshold!r}.")


def draw(workdir: str, num: int, seed: int, threshold: str | None = None) -> dict[str, Any]:
    """Mask + image pairs from a dual-GAN workdir: {"images" uint8 [N,H,W,3], "masks" uint8
    {0,1} [N,H,W], "labels" int [N] (1 if the mask holds vessels), "label_names", "step", "config",
    "class_names"}. `threshold` overrides the workdir's `mask_threshold` ('zero' | 'fraction')."""
    config = checkpointing.read_config(workdir)
    cfg1, state1, step1 = drawing.restore_state(os.path.join(workdir, "stage1"))
    if cfg1.trainer != stage1_family(config):
        raise ValueError(f"{workdir}/config.json names stage-I family {stage1_family(config)!r} but "
                         f"{workdir}/stage1/config.json holds a {cfg1.trainer!r} model.")
    cfg2, state2, step2 = drawing.restore_state(os.path.join(workdir, "stage2"))
    with open(os.path.join(workdir, MASK_STATS)) as f:
        fraction = json.load(f)["vessel_fraction"]
    masks = generate_masks(cfg1, state1, num, seed, threshold=threshold or config.get("mask_threshold", "zero"),
                           fraction=fraction)
    fake = pix2pix.generate_batched(cfg2, state2, masks)
    return {"images": images.to_uint8(fake), "masks": masks,
            "labels": masks.reshape(num, -1).max(axis=1).astype(np.int64),
            "label_names": ["no_vessel", "vessel"], "step": {"stage1": step1, "stage2": step2},
            "config": config, "class_names": ["background", "vessel"]}


def stage_training_set_size(workdir: str, stage: str) -> int | None:
    """N of stage I (trained on the masks of the training crops, W/mask_stats.json); None for stage II
    (pix2pix counts its pairs itself) or a run without the record."""
    path = os.path.join(workdir, MASK_STATS)
    if stage != "stage1" or not os.path.exists(path):
        return None
    with open(path) as f:
        return int(json.load(f)["num_train"])


FAMILY = contract.Family(
    name="dual_gan",
    draw=draw,
    stages=STAGES,
    stage_training_set_size=stage_training_set_size,
)
