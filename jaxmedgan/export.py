"""Shareable synthetic dataset from a trained workdir: `jaxmedgan export`.

    OUT/images/NNNNNN.png   generated images (uint8, 1 or 3 channels)
    OUT/masks/NNNNNN.png    label maps, class index per pixel (pix2pix: the condition map the
                            image was generated from; dual GAN: the stage-I vessel mask)
    OUT/labels.csv          image, mask, label, label_name (one row per image)
    OUT/manifest.json       jaxmedgan version, trainer, checkpoint step(s), seed, config, class
                            names, counts, and the DP guarantee when trained privately

Works for DCGAN/ACGAN (`trainers/gan.py`, via `sampling.restore_state`), pix2pix and dual-GAN
workdirs (their `draw`). Privacy: for each DP-trained model, epsilon at the checkpoint step is
recomputed with `privacy.accounting.epsilon` from the config's privacy section (q = batch_size /
N, sigma, delta = privacy.delta or 1 / (10 N), accountant, sampling); a dual GAN reports each
stage and their sum (both stages read the same images: sequential composition), and is marked
not private when either stage was trained without DP. Everything is written into a temporary
sibling directory renamed into place at the end: an interrupted export leaves nothing behind.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Sequence

import numpy as np

import jaxmedgan
from jaxmedgan import checkpointing, images, sampling, trainers

MANIFEST = "manifest.json"
LABELS_CSV = "labels.csv"


def _num_train_examples(config, workdir: str) -> int:
    """N, the size of the private training set the accountant's q = batch_size / N refers to."""
    stats = os.path.join(os.path.dirname(os.path.abspath(workdir)), "mask_stats.json")
    if config.trainer in ("gan", "stylegan2") and os.path.basename(os.path.abspath(workdir)) == "stage1" and os.path.exists(stats):
        with open(stats) as f:  # dual-GAN stage I: trained on the stage's mask crops
            return int(json.load(f)["num_train"])
    if config.trainer == "pix2pix":
        from jaxmedgan.data import paired

        return len(paired.load_arrays(config)[0]["map"])
    from jaxmedgan.data import datasets

    return len(datasets.load(config)[0])


def privacy_report(config, step: int, num_examples: int | None) -> dict[str, Any] | None:
    """{"epsilon", "delta", "delta_prime", "sampling_rate", "noise_multiplier", "l2_clip", "steps",
    "accountant", "sampling", "num_examples", "randomness", "clinical_classifier"} for a DP-trained
    config at `step`; None if trained without DP.

    q and delta are those `privacy.plan` recorded in the run's config.json; for a config without
    them, q = batch_size / N and delta = 1 / (10 N) with N = `num_examples`. delta' adds the chance
    that a padded Poisson batch truncated (`plan.delta_prime`); read epsilon at delta'."""
    from jaxmedgan.privacy import accounting, plan
    from jaxmedgan.privacy.config import DPConfig

    p = DPConfig.from_config(config)
    if not p.enabled:
        return None
    q = p.sampling_rate or config.train.batch_size / num_examples  # recorded by privacy.plan
    delta = p.delta or 1.0 / (num_examples * 10)
    eps = accounting.epsilon(q, p.noise_multiplier, int(step), delta, accountant=p.accountant,
                             sampling=p.sampling)
    clinical = config.get("clinical")
    uses_clinical = clinical is not None and clinical.get("checkpoint", "") and clinical.get("weight", 0.0)
    return {"epsilon": float(eps), "delta": float(delta),
            "delta_prime": plan.delta_prime(delta, p.overflow_prob, int(step), eps),
            "sampling_rate": float(q), "noise_multiplier": float(p.noise_multiplier), "l2_clip": float(p.l2_clip),
            "steps": int(step), "accountant": p.accountant, "sampling": p.sampling,
            "num_examples": None if num_examples is None else int(num_examples),
            "randomness": ("secret: batch membership and noise from the OS CSPRNG (kept in the workdir's "
                           "private/ folder, not exported)" if p.secure_rng else
                           "PUBLIC: noise derivable from the seed (privacy.secure_rng=False); not private"),
            "clinical_classifier": ({"checkpoint": clinical.checkpoint, "public_data": bool(clinical.get(
                "public_data", False))} if uses_clinical else None)}


def _report(config, workdir: str, step: int) -> dict[str, Any] | None:
    from jaxmedgan.privacy import checks

    if not checks.dp_enabled(config):
        return None
    recorded = config.privacy.get("sampling_rate") and config.privacy.get("delta")
    return privacy_report(config, step, None if recorded else _num_train_examples(config, workdir))


def _privacy(config, workdir: str, step) -> dict[str, Any] | None:
    if config.trainer != "dual_gan":
        return _report(config, workdir, step)
    stages = {stage: _report(checkpointing.read_config(os.path.join(workdir, stage)),
                             os.path.join(workdir, stage), step[stage]) for stage in ("stage1", "stage2")}
    if all(s is None for s in stages.values()):
        return None
    private = all(s is not None for s in stages.values())
    total = sum(s["epsilon"] for s in stages.values()) if private else None
    return {"epsilon": total, "delta": sum(s["delta"] for s in stages.values()) if private else None,
            "delta_prime": sum(s["delta_prime"] for s in stages.values()) if private else None,
            "composition": "sequential (sum over stages)", "stages": stages,
            "note": None if private else "one stage was trained without DP: the dataset is not private"}


def _draw(workdir: str, num: int, seed: int, class_id: int | None) -> dict[str, Any]:
    """{"images", "masks" (or None), "labels", "label_names", "class_names", "step", "config"}."""
    config = checkpointing.read_config(workdir)
    trainer = trainers.get(config.trainer)
    if hasattr(trainer, "draw"):
        if class_id is not None:
            raise ValueError("--class applies to class-conditional GANs only; this workdir's model is "
                             "conditioned on label maps.")
        return trainer.draw(workdir, num, seed)
    config, state, step = sampling.restore_state(workdir)
    imgs, labels = sampling.generate(config, state, trainer, num, class_id, seed)
    k = config.model.get("num_classes", 0)
    names = [f"class{i}" for i in range(k)]
    if k and config.data.get("source") == "phantom-liver":
        from jaxmedgan.data import phantoms

        names = list(phantoms.CLASS_NAMES)
    return {"images": imgs, "masks": None, "labels": labels, "label_names": names, "class_names": None,
            "step": step, "config": config}


def export(workdir: str, num: int, out: str, *, seed: int = 0, class_id: int | None = None) -> str:
    """Writes `num` generated examples from `workdir` as a dataset in `out` (module doc); returns out."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}.")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"Output {out!r} exists and is not an empty directory; choose another --out.")
    drawn = _draw(workdir, num, seed, class_id)
    config, step, imgs, masks, labels = (drawn["config"], drawn["step"], drawn["images"], drawn["masks"],
                                         drawn["labels"])
    privacy = _privacy(config, workdir, step)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        rows = []
        for i in range(num):
            name = f"{i:06d}.png"
            images.save_png(os.path.join(tmp, "images", name), imgs[i])
            mask_name = ""
            if masks is not None:
                mask_name = f"masks/{name}"
                images.save_png(os.path.join(tmp, mask_name), masks[i][..., None].astype(np.uint8))
            lab = int(labels[i])
            label_name = drawn["label_names"][lab] if 0 <= lab < len(drawn["label_names"]) else ""
            rows.append({"image": f"images/{name}", "mask": mask_name, "label": lab, "label_name": label_name})
        with open(os.path.join(tmp, LABELS_CSV), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "mask", "label", "label_name"])
            writer.writeheader()
            writer.writerows(rows)
        manifest = {
            "jaxmedgan_version": jaxmedgan.__version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "workdir": os.path.abspath(workdir),
            "trainer": config.trainer,
            "checkpoint_step": step,
            "seed": seed,
            "class_id": class_id,
            "num_images": num,
            "image_shape": list(imgs.shape[1:]),
            "num_masks": 0 if masks is None else num,
            "mask_encoding": None if masks is None else "uint8 class index per pixel",
            "mask_classes": drawn["class_names"],
            "label_names": drawn["label_names"],
            "privacy": privacy,
            "config": json.loads(config.to_json_best_effort()),
        }
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        if os.path.exists(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_command(argv: Sequence[str]) -> int:
    """`jaxmedgan export`: argv are the arguments after the command name; returns the exit code."""
    p = argparse.ArgumentParser(prog="jaxmedgan export",
                                description="Write a shareable synthetic dataset from a trained workdir.")
    p.add_argument("--workdir", required=True, help="training workdir (gan, pix2pix or dual_gan)")
    p.add_argument("--num", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="class_id", type=int, default=None, help="class index (ACGAN)")
    args = p.parse_args(list(argv))
    try:
        path = export(args.workdir, args.num, args.out, seed=args.seed, class_id=args.class_id)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"jaxmedgan export: error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {args.num} examples to {path}")
    return 0
