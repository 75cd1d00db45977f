"""Drawing samples from a trained workdir: `jaxmedgan sample`.

`sample_to_dir`: unconditional, class-conditional (`--class`) or map-conditioned samples.
`sample_labelled_to_dir`: a labelled archive by latent class optimisation (`--labels`, see
`jaxmedgan/lco.py`) with a multi-label classifier, compared with random sampling + filtering.
`restore_state`, `generate` and `file_tag` live one floor down, in `trainers/drawing.py` (the
families that draw from their own sub-workdirs use them there), and are re-exported here for
everything above the trainers.
"""
from __future__ import annotations

import csv
import functools
import os
from collections.abc import Sequence
from typing import Any, Callable

import jax
import numpy as np

from jaxmedgan import atomic_io, checkpointing, images, lco, trainers
from jaxmedgan.data import datasets
from jaxmedgan.models import trained_classifier
from jaxmedgan.trainers.drawing import file_tag, generate, restore_state  # re-exported


def class_names(workdir: str, config) -> list[str]:
    """The names of a class-conditional model's classes in label order (`class0..` when the workdir
    has no dataset record); [] for an unconditional model."""
    if trainers.family(config.trainer).generate_labelled is not None:  # one GAN per class: the dataset's classes
        return list((datasets.workdir_record(workdir) or {}).get("class_names") or [])
    return datasets.class_names_for(workdir, int(config.model.get("num_classes", 0)))


def resolve_class(value: int | str | None, names: Sequence[str]) -> int | None:
    """`--class NAME|INDEX` -> class index (None stays None); a name wins over a digit string.

    names: the model's class names in label order ([] for an unconditional model).
    """
    if value is None:
        return None
    if not names:
        raise ValueError("--class was given but this model is unconditional (model.num_classes = 0).")
    text = str(value).strip()
    listing = ", ".join(f"{k}={name}" for k, name in enumerate(names))
    if text in names:
        return list(names).index(text)
    try:
        k = int(text)
    except ValueError:
        raise ValueError(f"--class {text!r} is not a class of this model; classes: {listing}.") from None
    if not 0 <= k < len(names):
        raise ValueError(f"--class {k} is out of range: this model has classes 0..{len(names) - 1} ({listing}).")
    return k


def generate_from_workdir(workdir: str, num: int, class_id: int | None, seed: int, *, as_float: bool = False
                          ) -> tuple[np.ndarray, np.ndarray, Any]:
    """(images, labels int [num] (-1 unconditional), checkpoint step(s)) from a latent GAN workdir:
    one model (`generate`) or one GAN per class (`trainers.per_class`). class_id: an index or None."""
    family = trainers.family(checkpointing.read_config(workdir).trainer)
    if family.generate_labelled is not None:
        return family.generate_labelled(workdir, num, class_id, seed, as_float=as_float)
    config, state, step = restore_state(workdir)
    imgs, labels = generate(config, state, family, num, class_id, seed, as_float=as_float)
    return imgs, labels, step


def sample_to_dir(workdir: str, num: int, out: str, *, class_id: int | str | None = None, seed: int = 0) -> str:
    """Writes `num` PNGs and `samples.npz` (images uint8 NHWC, labels int, class_names str [K]) to
    `out`; returns it.

    `class_id`: a class name or index (`resolve_class`). A class-conditional sample's file is
    `NNNNNN_<class name>.png` (`file_tag`). Map-conditioned families (`Family.draw`: pix2pix,
    dual_gan) also write `NNNNNN_mask.png` (class k scaled to k * 255 / (K - 1) for
    viewing), and `masks` (class indices uint8 [N,H,W]) and `mask_class_names` in the npz. Files go
    to a temporary sibling directory that is renamed into place when complete, so a failure never
    leaves a partial sample set behind.
    """
    _check_out(out, num)
    config = checkpointing.read_config(workdir)
    family = trainers.family(config.trainer)
    masks, mask_scale, names, extra = None, 0, [], {}
    if family.draw is not None:  # the family picks its own condition maps (pix2pix, dual GAN)
        if class_id is not None:
            raise ValueError("--class applies to class-conditional GANs only; this workdir's model is "
                             "conditioned on label maps.")
        drawn = family.draw(workdir, num, seed)
        imgs, masks, step = drawn["images"], drawn["masks"], drawn["step"]
        labels = np.full((num,), -1, np.int64)
        mask_scale = 255 // max(len(drawn["class_names"]) - 1, 1)
        extra = {"masks": masks, "mask_class_names": np.asarray(drawn["class_names"], dtype=str)}
    else:
        names = class_names(workdir, config)
        class_id = resolve_class(class_id, names)  # before restoring: a bad --class fails fast
        imgs, labels, step = generate_from_workdir(workdir, num, class_id, seed)
    tags = [file_tag(name, k) for k, name in enumerate(names)]
    steps = _step_fields(step)

    def write(tmp: str) -> None:
        for i, (img, lab) in enumerate(zip(imgs, labels)):
            suffix = f"_{tags[lab]}" if 0 <= lab < len(tags) else ""
            images.save_png(os.path.join(tmp, f"{i:06d}{suffix}.png"), img)
            if masks is not None:
                images.save_png(os.path.join(tmp, f"{i:06d}_mask.png"), (masks[i] * mask_scale)[..., None])
        np.savez_compressed(os.path.join(tmp, "samples.npz"), images=imgs, labels=labels,
                            class_names=np.asarray(names, dtype=str), seed=seed, **steps, **extra)

    return _write_atomically(out, write)


def _step_fields(step) -> dict:
    return ({f"checkpoint_step_{k}": v for k, v in step.items()} if isinstance(step, dict)
            else {"checkpoint_step": step})


def _check_out(out: str, num: int) -> None:
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}.")
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"Output directory {out!r} exists and is not empty; choose another --out.")


def _write_atomically(out: str, write: Callable[[str], None]) -> str:
    """Runs write(tmp) on a temporary sibling directory of `out`, then renames it to `out` (empty or absent)."""
    return atomic_io.write_dir(out, write)


# ----------------------------------------------------------------------------------------------
# Labelled sampling: latent class optimisation (jaxmedgan/lco.py) on an unconditional generator.


def lco_settings(config) -> dict:
    """LCO hyperparameters: `config.lco` of the generator's config over `lco.DEFAULTS`."""
    section = config.get("lco") or {}
    return {key: type(default)(section.get(key, default)) for key, default in lco.DEFAULTS.items()}


def sample_labelled_to_dir(workdir: str, num: int, out: str, labels: str, *, classifier_workdir: str | None = None,
                           lco_steps: int | None = None, seed: int = 0,
                           baseline_num: int | None = None) -> tuple[str, list[dict]]:
    """Labelled archive by LCO; returns (out, per-target comparison rows of `lco.compare`).

    `labels`: one finding vector, or several separated by ';' (`lco.parse_targets`); `num`
    samples per vector. The classifier is `classifier_workdir`, else the generator config's
    `lco.classifier_workdir`. Writes to `out` (atomically, like `sample_to_dir`):

    * `NNNNNN_<findings>.png` per sample (`none` for the no-finding vector);
    * `samples.npz`: images uint8 [M,H,W,C], labels f32 [M,K] (requested multi-hot),
      probabilities f32 [M,K] (classifier on the saved images), success bool [M], target i64 [M],
      latents f32 [M,d], lco_losses f32 [steps+1, T] (mean objective per step, first chunk of
      latents), class_names, seed, lco_steps, checkpoint_step, classifier_step;
    * `labels.csv`: file, label (requested findings '|'-separated, the `labeled.read_labels_csv`
      format), target, p_<finding> per finding, success (0/1);
    * `summary.json`: the comparison rows (LCO vs random + filter) and the settings.

    Failed samples (success 0) are kept and flagged, so the archive never hides LCO's failures.
    """
    import json

    _check_out(out, num)
    config = checkpointing.read_config(workdir)
    family = trainers.family(config.trainer)
    if "z" not in family.latent_spaces:
        raise ValueError(f"--labels needs an unconditional latent generator; {workdir} holds a "
                         f"{config.trainer!r} model conditioned on label maps.")
    if config.model.get("num_classes", 0):
        raise ValueError(f"--labels (latent class optimisation) needs an unconditional generator; {workdir}'s "
                         f"model is class-conditional (model.num_classes={config.model.num_classes}): use --class.")
    settings = lco_settings(config)
    if lco_steps is not None:
        settings["steps"] = int(lco_steps)
    classifier_workdir = classifier_workdir or (config.get("lco") or {}).get("classifier_workdir", "")
    if not classifier_workdir:
        raise ValueError(f"--labels needs a multi-label classifier: pass --classifier CLASSIFIER_WORKDIR or set "
                         f"lco.classifier_workdir in {workdir}/config.json.")
    clf, class_names = trained_classifier.load_classifier(classifier_workdir)
    if not clf.multi_label:
        raise ValueError(f"{classifier_workdir} holds a single-label classifier {list(class_names)}; LCO needs a "
                         "multi-label one (config.data.multi_label=True).")
    targets, target_names = lco.parse_targets(labels, class_names)
    config, state, step = restore_state(workdir)
    generate_fn = functools.partial(_generate_unconditional, family.generate, config)
    k_lco, k_base = jax.random.split(jax.random.PRNGKey(seed))
    latent_dim = int(config.model.latent_dim)
    result = lco.run_lco(generate_fn, state, clf, targets, num, k_lco, latent_dim=latent_dim, **settings)
    baseline_num = baseline_num or max(256, 4 * num)
    baseline = lco.random_filter(generate_fn, state, clf, targets, baseline_num, k_base, latent_dim=latent_dim)
    rows = lco.compare(result, baseline, target_names)

    t, n = result.success.shape
    flat_images = result.images.reshape(t * n, *result.images.shape[2:])
    flat_probs = result.probabilities.reshape(t * n, -1)
    flat_success = result.success.reshape(t * n)
    target_index = np.repeat(np.arange(t), n)
    files = [f"{i:06d}_{target_names[target_index[i]]}.png" for i in range(t * n)]

    def write(tmp: str) -> None:
        for file, img in zip(files, flat_images):
            images.save_png(os.path.join(tmp, file), img)
        np.savez_compressed(os.path.join(tmp, "samples.npz"), images=flat_images, labels=targets[target_index],
                            probabilities=flat_probs, success=flat_success, target=target_index.astype(np.int64),
                            latents=result.z.reshape(t * n, -1), lco_losses=result.losses,
                            class_names=np.asarray(class_names), seed=seed,
                            lco_steps=settings["steps"], classifier_step=clf.step, **_step_fields(step))
        with open(os.path.join(tmp, "labels.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "target", *(f"p_{name}" for name in class_names), "success"])
            for i, file in enumerate(files):
                hot = targets[target_index[i]]
                w.writerow([file, "|".join(class_names[k] for k in np.flatnonzero(hot)), target_names[target_index[i]],
                            *(f"{p:.4f}" for p in flat_probs[i]), int(flat_success[i])])
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump({"targets": rows, "settings": settings, "num_per_target": num,
                       "baseline_draws": baseline_num, "classifier_workdir": classifier_workdir,
                       "class_names": list(class_names)}, f, indent=1, default=float)

    return _write_atomically(out, write), rows


def _generate_unconditional(generate, config, state, z: jax.Array) -> jax.Array:
    """generate(config, state, z, None): images f32 [N,H,W,C] in [-1,1] for z [N,d]."""
    return generate(config, state, z, None)
