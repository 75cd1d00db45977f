"""`jaxmedgan evaluate --workdir W --metrics fid,kid,pr --num N`: image quality of a trained GAN.

Draws N samples from the latest checkpoint of the GAN workdir W, takes N real images of W's
configured data (`--reals auto`, the default: the held-out 'test' split where the data has one,
else the training images with a warning; `train` / `test` explicitly; or an .npz with an
`images` array; the report records which were used), embeds both
with a feature extractor (`evaluators.features`: the domain classifier by default, named
`*_domain`; or the FID Inception-v3 with user-converted weights) and computes the metrics of
`evaluators.quality`. Writes W/eval/metrics.json (atomic; runs at the same checkpoint step are
merged, so domain and Inception results sit side by side) and logs the scalars as
`quality/<name>` to TensorBoard and W/eval/metrics.jsonl through `metric_writers.MetricWriter`.

Within classes (`--per-class`, class-conditional workdirs: `config.model.num_classes > 0`, or one
GAN per class, `trainers.per_class`): `--num` samples are drawn *per class* (the same seed for
every class, so a model with one latent input gets the same latents under each label), the real
images keep their labels (at most `--num` per class), and `quality.per_class` scores each class
on its own: intra-class diversity ratio in pixels and in features (`diversity`), intra-class FID
(`fid`), precision / recall / density / coverage (`pr`), with percentile-bootstrap 95 % intervals
over `--bootstrap` resamples (see `evaluators.quality`). metrics.json then holds
  per_class: {class name: {diversity_ratio, diversity_ratio_ci, diversity_ratio_feature,
              diversity_ratio_feature_ci, diversity_fake, diversity_real, fid, precision,
              precision_ci, recall, recall_ci, density, density_ci, coverage, coverage_ci,
              num_fake, num_real}}   (NaN, for a class with too few images, is written as null)
  per_class_features: the extractor kind whose features the per-class values use
and in `metrics`, means over classes: `diversity_ratio` and `diversity_ratio_min` (the worst
class; pixels, so no extractor suffix), `diversity_ratio_feature<suffix>`, `intra_fid<suffix>`
(mean of the class FIDs, Miyato & Koyama's intra-FID), and `precision<suffix>`,
`recall<suffix>`, `density<suffix>`, `coverage<suffix>` -- in a per-class run these four are
means over classes, not pooled values (the run record `runs["<kind>/per_class"]` lists which
names are class means and which are pooled). `fid` and `kid` are also computed pooled over all
classes' samples vs all selected real images (`fid<suffix>`, `kid<suffix>`): an overall score
that also charges a class-proportion mismatch, since the samples are class-balanced.
`agreement` (needs `--classifier`): per class, the share of the class-c samples the domain
classifier labels c (`agreement`, bootstrap interval) beside its recall of class c on the real
images (`agreement_real`, the ceiling); means `class_agreement` and `class_agreement_min`.
`diversity` and `agreement` are within classes only: on a class-conditional workdir they turn
`--per-class` on; on an unconditional one they are an error, as is `--per-class`.

`evaluators.training_quality.periodic_metrics` gives training the same measurement every
`config.eval.quality_every` steps on the held-out arrays.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

import ml_collections
import numpy as np

from jaxmedgan import atomic_io, checkpointing, metric_writers, sampling, trainers
from jaxmedgan.data import datasets, tfds_builders
from jaxmedgan.evaluators import features, quality

log = logging.getLogger(__name__)
METRICS_FILE = os.path.join("eval", "metrics.json")


def draw_fakes(workdir: str, num: int, seed: int) -> tuple[np.ndarray, Any]:
    """(uint8 images [num,H,W,C], checkpoint step) from the latest checkpoint of a GAN workdir."""
    config = checkpointing.read_config(workdir)
    family = trainers.family(config.trainer)
    if family.kind != "gan":
        raise ValueError(f"{workdir} is a {family.kind} workdir; --workdir must be a GAN workdir (pass the "
                         "classifier as --classifier).")
    if family.draw is not None:  # map-conditioned families pick their own condition maps
        drawn = family.draw(workdir, num, seed)
        return drawn["images"], drawn["step"]
    fake, _, step = sampling.generate_from_workdir(workdir, num, None, seed)
    return fake, step


def model_classes(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """Class names (label order) of a class-conditional GAN workdir; [] for any other model."""
    family = trainers.family(config.trainer)
    if family.kind != "gan" or family.draw is not None:
        return []  # a classifier, or a model conditioned on label maps
    return list(sampling.class_names(workdir, config))


def draw_per_class(workdir: str, num_classes: int, num: int, seed: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """(uint8 images [K*num,H,W,C], labels int [K*num], checkpoint step(s)): `num` samples of each class."""
    images_, labels, steps = [], [], {}
    step: Any = None
    for c in range(num_classes):
        x, y, step = sampling.generate_from_workdir(workdir, num, c, seed)
        images_.append(x)
        labels.append(np.full(len(x), c, np.int64))
        if isinstance(step, dict):  # one GAN per class: {class name: step}
            steps.update(step)
    return np.concatenate(images_), np.concatenate(labels), (steps if steps else step)


def resolve_reals(config: ml_collections.ConfigDict, reals: str) -> str:
    """'auto' -> 'test' if config.data has a held-out split, else 'train' (logged); others as given."""
    if reals != "auto":
        return reals
    if "test" in tfds_builders.split_names(datasets.prepare(config), config.data.source):
        return "test"
    log.warning("config.data (source %r) has no held-out 'test' split: comparing with the training images. "
                "Rebuild with a hold-out (config.data.holdout_fraction) for an unbiased score.", config.data.source)
    return "train"


def _held_out(config: ml_collections.ConfigDict, eval_arrays):
    """`datasets.load`'s held-out (images, labels), or a ValueError when the data has none."""
    if eval_arrays is None:
        raise ValueError(f"config.data (source {config.data.source!r}) has no held-out 'test' split; "
                         "use --reals train.")
    return eval_arrays


def real_images(config: ml_collections.ConfigDict, num: int, reals: str, seed: int) -> np.ndarray:
    """Up to `num` real images f32 [n,H,W,C] in [-1, 1]: 'train', 'test' (config.data) or an .npz path."""
    rng = np.random.default_rng(seed)
    if reals.endswith(".npz"):
        with np.load(reals) as z:
            if "images" not in z.files:
                raise ValueError(f"--reals {reals} has no 'images' array (found {z.files}).")
            x = z["images"]
    elif reals in ("train", "test"):
        train_source, eval_arrays = datasets.load(config)
        if reals == "test":
            x = _held_out(config, eval_arrays)[0]
        else:
            idx = np.sort(rng.choice(len(train_source), min(num, len(train_source)), replace=False))
            x = tfds_builders.to_model_range(np.stack([train_source[int(i)]["image"] for i in idx]))
    else:
        raise ValueError(f"--reals must be 'train', 'test' or a .npz file; got {reals!r}.")
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"Real images must be [N,H,W,C]; got {x.shape} from --reals {reals}.")
    if len(x) > num:
        x = x[np.sort(rng.choice(len(x), num, replace=False))]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 127.5 - 1.0
    return x.astype(np.float32)


def real_images_labelled(config: ml_collections.ConfigDict, num_per_class: int, reals: str, seed: int,
                         num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `num_per_class` real images of each class: (f32 [n,H,W,C] in [-1, 1], int labels [n]).

    reals: 'train' / 'test' (config.data; train labels are read from the source's elements) or an
    .npz with `images` and int `labels` arrays.
    """
    rng = np.random.default_rng(seed)
    if reals.endswith(".npz"):
        with np.load(reals) as z:
            if "images" not in z.files or "labels" not in z.files:
                raise ValueError(f"--reals {reals} needs 'images' and 'labels' arrays for per-class metrics "
                                 f"(found {z.files}).")
            x, y = z["images"], z["labels"]
    elif reals in ("train", "test"):
        train_source, eval_arrays = datasets.load(config)
        if reals == "test":
            x, y = _held_out(config, eval_arrays)
        else:  # visit the training images in a seeded order until every class has enough
            counts, xs, ys = np.zeros(num_classes, np.int64), [], []
            for i in rng.permutation(len(train_source)):
                element = train_source[int(i)]
                label = np.asarray(element["label"])
                if label.ndim:
                    raise ValueError(f"config.data (source {config.data.source!r}) is multi-label; per-class "
                                     "metrics need one class per image.")
                if 0 <= int(label) < num_classes and counts[int(label)] < num_per_class:
                    xs.append(element["image"])
                    ys.append(int(label))
                    counts[int(label)] += 1
                    if (counts >= num_per_class).all():
                        break
            if not xs:
                raise ValueError(f"config.data (source {config.data.source!r}) has no training images of "
                                 f"classes 0..{num_classes - 1}.")
            x, y = tfds_builders.to_model_range(np.stack(xs)), np.asarray(ys)
    else:
        raise ValueError(f"--reals must be 'train', 'test' or a .npz file; got {reals!r}.")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4:
        raise ValueError(f"Real images must be [N,H,W,C]; got {x.shape} from --reals {reals}.")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Per-class metrics need one int class label per real image; --reals {reals} gives "
                         f"labels {y.dtype} {y.shape} for {len(x)} images (multi-label data has no classes).")
    keep = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        keep.append(np.sort(rng.choice(idx, num_per_class, replace=False)) if len(idx) > num_per_class else idx)
    keep = np.sort(np.concatenate(keep))
    x, y = x[keep], y[keep]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 127.5 - 1.0
    return x.astype(np.float32), y.astype(np.int64)


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python, recursively."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def per_class_mode(workdir: str, names: Sequence[str], per_class: bool) -> bool:
    """Whether a run of `names` on `workdir` is per class ('diversity' and 'agreement' imply it); a
    clear error when it is asked of a workdir without classes."""
    within = [n for n in ("diversity", "agreement") if n in names]
    if not (per_class or within):
        return False
    config = checkpointing.read_config(workdir)
    if not model_classes(workdir, config):
        what = "--per-class" if per_class else f"the {within[0]!r} metric (within classes)"
        raise ValueError(f"{what} needs a class-conditional GAN workdir (config.model.num_classes > 0, or "
                         f"train.per_class); {workdir} holds an unconditional {config.trainer!r} model "
                         f"(model.num_classes={config.model.get('num_classes', 0)}).")
    if not per_class:
        log.info("%s is measured within classes: scoring %s per class.", within[0], workdir)
    return True


def _merge_report(workdir: str, step_value: Any, values: dict, run_key: str, run: dict, extra: dict) -> dict:
    """Merges into W/eval/metrics.json (runs at the same checkpoint step side by side), writes it atomically."""
    path = os.path.join(workdir, METRICS_FILE)
    report = {"checkpoint_step": step_value, "metrics": {}, "runs": {}}
    if os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("checkpoint_step") == step_value:  # same model: keep the other extractor's results
            report = previous
    report["metrics"].update(_json_safe(values))
    report["runs"][run_key] = run
    report.update(_json_safe(extra))
    atomic_io.write_json(path, report, indent=2, sort_keys=True)
    return report


def _write_scalars(workdir: str, step_value: Any, scalars: dict[str, float]) -> None:
    writer = metric_writers.MetricWriter(os.path.join(workdir, "eval"))
    try:
        tb_step = step_value if isinstance(step_value, int) else max(step_value.values())
        writer.write_scalars(tb_step, {n: v for n, v in scalars.items() if v is not None and np.isfinite(v)})
    finally:
        writer.close()


def _step_value(step: Any) -> Any:
    return int(step) if not isinstance(step, dict) else {k_: int(v) for k_, v in step.items()}


def evaluate(workdir: str, *, metrics: str | Sequence[str] = "fid,kid,pr", num: int = 1000,
             extractor: features.Extractor, reals: str = "auto", seed: int = 0, batch_size: int = 64,
             kid_subset_size: int = 1000, kid_subsets: int = 100, k: int = 5, save_samples: bool = False,
             per_class: bool = False, num_bootstrap: int = 200) -> dict:
    """Computes, writes (W/eval/metrics.json, TensorBoard) and returns {"metrics": {...}, ...}.

    save_samples: also writes the scored samples to W/eval/samples.npz (images uint8 [N,H,W,C],
    step; per class also labels int [N] and class_names). per_class: `num` samples per class,
    scored within each class (module docstring); `num_bootstrap` resamples for its intervals.
    """
    names = quality.parse_metrics(metrics)
    if num < 2:
        raise ValueError(f"--num must be >= 2 (covariances, KID), got {num}.")
    if per_class_mode(workdir, names, per_class):
        return _evaluate_per_class(workdir, names, num=num, extractor=extractor, reals=reals, seed=seed,
                                   batch_size=batch_size, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets,
                                   k=k, save_samples=save_samples, num_bootstrap=num_bootstrap)
    config = checkpointing.read_config(workdir)
    fake, step = draw_fakes(workdir, num, seed)
    reals = resolve_reals(config, reals)
    real = real_images(config, num, reals, seed + 1)
    if len(real) < num:
        log.warning("Only %d real images for %d samples (--reals %s); using all of them.", len(real), num, reals)
    if "pr" in names and min(len(real), len(fake)) <= k:
        raise ValueError(f"Precision/recall with k={k} needs more than {k} images per set.")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"Real images {real.shape[1:]} and samples {fake.shape[1:]} differ in shape "
                         f"(H, W, C); check --reals {reals}.")
    if save_samples:
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        np.savez_compressed(os.path.join(workdir, "eval", "samples.npz"), images=fake,
                            step=np.asarray(step if not isinstance(step, dict) else max(step.values())))
    f_real = features.extract(extractor, real, batch_size)
    f_fake = features.extract(extractor, fake, batch_size)
    values = quality.compute(f_real, f_fake, names, suffix=extractor.suffix, kid_subset_size=kid_subset_size,
                             kid_subsets=kid_subsets, k=k, seed=seed)
    step_value = _step_value(step)
    run = {"features": extractor.kind, "feature_description": extractor.description,
           "feature_dim": int(f_real.shape[1]), "num_fake": int(len(fake)), "num_real": int(len(real)),
           "reals": reals, "seed": seed, "metrics": sorted(values)}
    report = _merge_report(workdir, step_value, values, extractor.kind, run, {})
    _write_scalars(workdir, step_value, {f"quality/{n}": v for n, v in values.items()})
    return report


# Per-class keys that also get a TensorBoard scalar quality_per_class/<class>/<key>.
_PER_CLASS_SCALARS = ("diversity_ratio", "diversity_ratio_feature", "fid", "recall", "coverage", "agreement")


def _predict_as(extractor: features.Extractor, images: np.ndarray, classes: Sequence[str], batch_size: int) -> np.ndarray:
    """The domain classifier's labels int [N] for images, as indices into `classes` (the model's
    classes, matched by name; -1 for a classifier class the model lacks). ValueError when the
    classifier does not know one of the model's classes."""
    if extractor.class_names is None:
        features.predict(extractor, images[:1], batch_size)  # raises: no classifier head
    missing = [c for c in classes if c not in extractor.class_names]
    if missing:
        raise ValueError(f"The classifier ({extractor.description}) has no class {missing}; the model's classes "
                         f"are {list(classes)}. Class agreement needs a classifier over the same classes.")
    index = {name: classes.index(name) if name in classes else -1 for name in extractor.class_names}
    pred = features.predict(extractor, images, batch_size)
    return np.asarray([index[extractor.class_names[p]] for p in pred], np.int64)


def _evaluate_per_class(workdir: str, names: tuple[str, ...], *, num: int, extractor: features.Extractor,
                        reals: str, seed: int, batch_size: int, kid_subset_size: int, kid_subsets: int, k: int,
                        save_samples: bool, num_bootstrap: int) -> dict:
    """`evaluate` within classes (module docstring)."""
    config = checkpointing.read_config(workdir)
    classes = model_classes(workdir, config)
    reals = resolve_reals(config, reals)
    real, real_labels = real_images_labelled(config, num, reals, seed + 1, len(classes))  # fails before drawing
    fake, fake_labels, step = draw_per_class(workdir, len(classes), num, seed)
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"Real images {real.shape[1:]} and samples {fake.shape[1:]} differ in shape "
                         f"(H, W, C); check --reals {reals}.")
    short = {name: int((real_labels == c).sum()) for c, name in enumerate(classes) if (real_labels == c).sum() < num}
    if short:
        log.warning("Fewer than %d real images (--reals %s) for classes %s; using all of them.", num, reals, short)
    if save_samples:
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        np.savez_compressed(os.path.join(workdir, "eval", "samples.npz"), images=fake, labels=fake_labels,
                            class_names=np.asarray(classes, dtype=str),
                            step=np.asarray(step if not isinstance(step, dict) else max(step.values())))
    f_real = features.extract(extractor, real, batch_size)
    f_fake = features.extract(extractor, fake, batch_size)
    fake_pixels = fake.astype(np.float32) / 127.5 - 1.0  # the reals' range, so pixel distances compare
    table = quality.per_class(f_real, real_labels, f_fake, fake_labels, classes, names, real_pixels=real,
                              fake_pixels=fake_pixels, k=k, num_bootstrap=num_bootstrap, seed=seed)
    sfx = extractor.suffix
    pooled = quality.compute(f_real, f_fake, [n for n in names if n in ("fid", "kid")], suffix=sfx,
                             kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, k=k,
                             seed=seed) if {"fid", "kid"} & set(names) else {}
    means: dict[str, float] = {}
    if "diversity" in names:
        ratios = [v["diversity_ratio"] for v in table.values() if np.isfinite(v["diversity_ratio"])]
        means["diversity_ratio"] = quality.class_means(table, "diversity_ratio")
        means["diversity_ratio_min"] = float(np.min(ratios)) if ratios else float("nan")
        means[f"diversity_ratio_feature{sfx}"] = quality.class_means(table, "diversity_ratio_feature")
    if "fid" in names:
        means[f"intra_fid{sfx}"] = quality.class_means(table, "fid")
    if "pr" in names:
        means.update({f"{p}{sfx}": quality.class_means(table, p) for p in quality.PRDC})
    if "agreement" in names:
        agreement = quality.class_agreement(
            _predict_as(extractor, fake_pixels, classes, batch_size), fake_labels,
            _predict_as(extractor, real, classes, batch_size), real_labels, classes,
            num_bootstrap=num_bootstrap, seed=seed)
        for name in classes:
            table[name].update(agreement[name])
        means["class_agreement"] = quality.class_means(table, "agreement")
        means["class_agreement_min"] = float(np.nanmin([v["agreement"] for v in table.values()]))
    values = {**pooled, **means}
    step_value = _step_value(step)
    run = {"features": extractor.kind, "feature_description": extractor.description,
           "feature_dim": int(f_real.shape[1]), "per_class": True, "class_names": list(classes),
           "num_per_class": num, "num_fake": int(len(fake)), "num_real": int(len(real)), "reals": reals,
           "seed": seed, "k": k, "metrics": sorted(values),
           "class_mean_metrics": sorted(n for n in means if not n.endswith("_min")),
           "pooled_metrics": sorted(pooled),
           "intervals": f"percentile bootstrap, {num_bootstrap} resamples of each set with replacement, 95 %"}
    report = _merge_report(workdir, step_value, values, f"{extractor.kind}/per_class", run,
                           {"per_class": table, "per_class_features": extractor.kind})
    scalars = {f"quality/{n}": v for n, v in values.items()}
    scalars.update({f"quality_per_class/{name}/{key}": v[key] for name, v in table.items()
                    for key in _PER_CLASS_SCALARS if key in v})
    _write_scalars(workdir, step_value, scalars)
    return report


def _fmt(value: Any, ci: Any = None, digits: int = 3) -> str:
    text = "n/a" if value is None else f"{value:.{digits}g}"
    if ci and all(c is not None for c in ci):
        text += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
    return text


_TABLE = (("diversity_ratio", "diversity ratio"), ("diversity_ratio_feature", "diversity ratio (features)"),
          ("fid", "FID"), ("precision", "precision"), ("recall", "recall"), ("density", "density"),
          ("coverage", "coverage"), ("agreement", "classifier agrees"), ("agreement_real", "on reals"))


def per_class_table(per_class: dict[str, dict]) -> str:
    """The per-class metrics as a text table (values [95 % interval]; n/a: too few images)."""
    cols = [(key, title) for key, title in _TABLE if any(key in v for v in per_class.values())]
    rows = [["class", "fake/real", *(title for _, title in cols)]]
    for name, v in per_class.items():
        rows.append([name, f"{v['num_fake']}/{v['num_real']}",
                     *(_fmt(v.get(key), v.get(f"{key}_ci")) for key, _ in cols)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmedgan evaluate",
                                description="Image-quality metrics (FID, KID, precision/recall) of a GAN workdir.")
    p.add_argument("--workdir", required=True, help="trained GAN workdir")
    p.add_argument("--metrics", default="fid,kid,pr",
                   help="comma-separated subset of fid,kid,pr,diversity,agreement (diversity, agreement: within "
                        "classes, imply --per-class; agreement needs --classifier)")
    p.add_argument("--num", type=int, default=1000, help="samples drawn, and real images compared")
    p.add_argument("--features", choices=features.KINDS, default="domain",
                   help="domain: a classifier trained on the real data (reported as *_domain); "
                        "inception: the FID Inception-v3 (needs --inception-weights)")
    p.add_argument("--classifier", default=None, help="classifier workdir for --features domain")
    p.add_argument("--inception-weights", default=None,
                   help="npz from `python -m jaxmedgan.evaluators.inception_convert`")
    p.add_argument("--reals", default="auto", help="auto (held-out 'test' if the data has one, else train) | "
                   "train | test (the workdir config's data) | FILE.npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--k", type=int, default=5, help="nearest neighbours for precision/recall/density/coverage")
    p.add_argument("--save-samples", action="store_true", help="also write the scored samples to W/eval/samples.npz")
    p.add_argument("--per-class", action="store_true",
                   help="class-conditional workdirs: --num samples per class, every metric within each class, "
                        "with bootstrap 95%% intervals (metrics.json per_class)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the per-class intervals")
    return p


def quality_command(argv: Sequence[str]) -> int:
    """Entry point of `jaxmedgan evaluate --metrics ...` (argv without the program/command names)."""
    args = build_parser().parse_args(list(argv))
    extractor = features.make(args.features, classifier=args.classifier, inception_weights=args.inception_weights)
    report = evaluate(args.workdir, metrics=args.metrics, num=args.num, extractor=extractor, reals=args.reals,
                      seed=args.seed, batch_size=args.batch_size, kid_subset_size=args.kid_subset_size,
                      kid_subsets=args.kid_subsets, k=args.k, save_samples=args.save_samples,
                      per_class=args.per_class, num_bootstrap=args.bootstrap)
    per_class = args.per_class or bool({"diversity", "agreement"} & set(quality.parse_metrics(args.metrics)))
    run = report["runs"][f"{extractor.kind}/per_class" if per_class else extractor.kind]
    print(f"{args.workdir} (checkpoint step {report['checkpoint_step']}), {run['num_fake']} samples vs "
          f"{run['num_real']} real ({run['reals']}), features: {run['feature_description']}")
    for name in run["metrics"]:
        kind = (" (mean over classes)" if name in run.get("class_mean_metrics", ())
                else " (worst class)" if name.endswith("_min") else "")
        print(f"  {name:30s} {_fmt(report['metrics'][name], digits=6)}{kind}")
    if per_class:
        print(f"per class ({run['num_per_class']} samples each; [95 % bootstrap interval]):")
        print(per_class_table(report["per_class"]))
    print(f"wrote {os.path.join(args.workdir, METRICS_FILE)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(quality_command(sys.argv[1:]))
