"""Retina dual-GAN figure and stage-I statistics from a trained dual-GAN workdir.

  python docs/figures/make_retina_figure.py --workdir runs/dual_gan_retina \
      --out docs/figures/retina_dual_gan.png [--stats runs/dual_gan_retina/stage1_stats.json]

Figure rows (8 columns, 32 px shown at 3x): stage-I masks | stage II on them | real held-out
masks | stage II on them | the real crops of those masks.

Printed statistics (and written to --stats as JSON), on binary 32 px masks:
* vessel_fraction: mean fraction of vessel pixels (training masks: W/mask_stats.json);
* pairwise_l1 / pairwise_iou: mean over distinct pairs of the fraction of differing pixels / the
  IoU of the vessel sets -- diversity: a collapsed generator scores l1 ~0, iou ~1;
* nn_train_iou: mean IoU of each mask with its nearest training mask (memorisation: 1 = copies);
* shift8_iou: mean IoU of a mask with itself shifted by 8 px (rows and columns, circularly) --
  a motif tiled on the 4x4 base grid of a 32 px generator scores ~1, vessel trees score low;
* gap: stage II's green-channel background minus vessel mean ([-1, 1] units), on generated and
  on held-out real masks; heldout_l1: stage II's mean |fake - real| on the held-out pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from jaxmedgan import checkpointing, images, sampling  # noqa: E402
from jaxmedgan.trainers import dual_gan, pix2pix  # noqa: E402


def pairwise(masks: np.ndarray) -> tuple[float, float]:
    """(mean pairwise fraction of differing pixels, mean pairwise IoU) over distinct pairs of
    binary masks [N,H,W]; IoU of two empty masks counts as 1."""
    x = masks.reshape(len(masks), -1).astype(np.float64)
    inter = x @ x.T
    area = x.sum(1)
    union = area[:, None] + area[None, :] - inter
    diff = (area[:, None] + area[None, :] - 2 * inter) / x.shape[1]
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    off = ~np.eye(len(x), dtype=bool)
    return float(diff[off].mean()), float(iou[off].mean())


def nearest_iou(masks: np.ndarray, reference: np.ndarray) -> float:
    """Mean over `masks` of the best IoU with any mask of `reference` (both binary [N,H,W])."""
    a = masks.reshape(len(masks), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).max(axis=1).mean())


def shift_iou(masks: np.ndarray, shift: int = 8) -> float:
    """Mean IoU of each binary mask [N,H,W] with itself rolled by `shift` px (rows, then columns)."""
    out = []
    for axis in (1, 2):
        rolled = np.roll(masks, shift, axis=axis).astype(bool)
        m = masks.astype(bool)
        inter = (m & rolled).sum((1, 2))
        union = (m | rolled).sum((1, 2))
        out.append(np.where(union > 0, inter / np.maximum(union, 1), 1.0))
    return float(np.mean(out))


def green_gap(fake: np.ndarray, masks: np.ndarray) -> float:
    """Mean over images holding both classes of background minus vessel green level ([-1, 1])."""
    gaps = [fake[i, ..., 1][masks[i] == 0].mean() - fake[i, ..., 1][masks[i] == 1].mean()
            for i in range(len(masks)) if 0 < masks[i].mean() < 1]
    return float(np.mean(gaps)) if gaps else float("nan")


def mask_stats(masks: np.ndarray, train_maps: np.ndarray) -> dict[str, float]:
    l1, iou = pairwise(masks)
    return {"vessel_fraction": float(masks.mean()), "pairwise_l1": l1, "pairwise_iou": iou,
            "nn_train_iou": nearest_iou(masks, train_maps), "shift8_iou": shift_iou(masks),
            "num": int(len(masks))}


def show(x: np.ndarray, scale: int = 3) -> np.ndarray:
    """uint8 [N,H,W,C] (C 1 or 3) -> RGB upscaled by `scale` (nearest)."""
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x.repeat(scale, axis=1).repeat(scale, axis=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="dual-GAN workdir (W/stage1, W/stage2)")
    ap.add_argument("--out", required=True, help="figure PNG to write")
    ap.add_argument("--stats", default="", help="optional JSON file for the statistics")
    ap.add_argument("--num", type=int, default=256, help="generated masks for the statistics")
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mask_threshold", default=None, choices=("zero", "fraction"),
                    help="override the workdir's mask_threshold for the generated masks")
    args = ap.parse_args(argv)
    from jaxmedgan.data import paired

    config = checkpointing.read_config(args.workdir)
    train, test = paired.load_arrays(dual_gan.stage_config(config, "stage2"))
    drawn = dual_gan.draw(args.workdir, args.num, args.seed, threshold=args.mask_threshold)
    gen_masks, gen_images = drawn["masks"], drawn["images"]
    cfg2, state2, _ = sampling.restore_state(os.path.join(args.workdir, "stage2"))
    real_fake = pix2pix.generate_batched(cfg2, state2, test["map"])
    gen_fake = gen_images.astype(np.float32) / 127.5 - 1.0

    rng = np.random.default_rng(args.seed)
    train_sub = train["map"][rng.choice(len(train["map"]), min(args.num, len(train["map"])), replace=False)]
    stats = {
        "workdir": os.path.abspath(args.workdir), "stage1_family": dual_gan.stage1_family(config),
        "step": drawn["step"], "mask_threshold": args.mask_threshold or config.get("mask_threshold", "zero"),
        "generated": {**mask_stats(gen_masks, train["map"]), "gap": green_gap(gen_fake, gen_masks)},
        "heldout_real": {**mask_stats(test["map"], train["map"]), "gap": green_gap(real_fake, test["map"]),
                         "heldout_l1": float(np.abs(real_fake - test["image"]).mean()),
                         "real_gap": green_gap(test["image"], test["map"])},
        "train_real_sample": {k: v for k, v in mask_stats(train_sub, train["map"]).items()
                              if k != "nn_train_iou"},  # nearest neighbour of a training mask is itself
    }
    print(json.dumps(stats, indent=1))
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats, f, indent=1)

    k = args.cols
    mask_u8 = lambda m: (m[..., None] * 255).astype(np.uint8)
    rows = [mask_u8(gen_masks[:k]), gen_images[:k], mask_u8(test["map"][:k]),
            images.to_uint8(real_fake[:k]), images.to_uint8(test["image"][:k])]
    grid = images.grid(np.concatenate([show(r) for r in rows]), rows=len(rows), pad=6)
    images.save_png(args.out, grid)
    print(f"wrote {args.out} {grid.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
