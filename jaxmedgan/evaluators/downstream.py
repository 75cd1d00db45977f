"""Downstream study: does synthetic data help a classifier? (Frid-Adar et al. 2018 design.)

Experiments, each a classifier (`trainers.classifier`, classic augmentation on every training
image) trained per cross-validation fold and tested on that fold's held-out *real* images:

  real              (a) real training folds only
  real+synthetic    (b) real training folds + `synthetic_per_class` synthetic images per class
  synthetic         (c) synthetic images only
  real+synthetic_dp (d) real training folds + images of a DP-trained GAN (when given)

Splits are stratified k-fold over groups (`evaluators.folds`: one lesion per image for the liver
phantoms, a `group` column for patient-level splits), redrawn for every repeated seed; within a
(seed, fold) all experiments share the split and the classifier seed, so (a) and (b) are paired.
Metrics are computed on the out-of-fold predictions pooled over folds and seeds (every real image
predicted once per seed); 95 % intervals are percentile bootstraps resampling groups (with all
their seeds' predictions). The paired test of (b) - and (d) - against (a) is the exact McNemar test
on the seed-averaged out-of-fold predictions (one decision per image, primary), plus a paired
sign-flip permutation test on the per-(seed, fold) accuracies (macro AUC for multi-label tasks).

Multi-label tasks (chest findings, configs/downstream_chest.py): the report gives per-finding
sensitivity / specificity / AUC and a finding x experiment AUC table; the synthetic source is a
multi-hot `samples.npz` or a `labels.csv` folder (e.g. a latent class optimisation archive, see
`evaluators.synthetic`), `synthetic_per_class` counting images per distinct label vector.
Unknown real labels (`LabeledSet.mask`, CheXpert U-Ignore) are skipped by training
(`trainers.classifier`) and by every metric and test here: a finding is scored on the images
where its label is known, and an image is "correct" when every known finding is.

Beside the results, each synthetic source's per-class diversity ratio (`evaluators.diversity`,
pixel space, no intervals): the mean pairwise distance of its class-c images over that of the
real *training* images of class c in each (seed, fold), reported as the mean over folds x seeds
with the range; classes are the source classes (before `config.data.relabel`), the labels the
GAN was conditioned on. Well below 1 = the source repeats itself within a class, which caps what
it can add. Not computed for multi-label tasks (no class to measure within).

A synthetic directory with sub-directories fold0 .. fold{k-1} gives one synthetic source per fold
(GANs trained on that fold's training images only, as in the study); otherwise the one source is
used for every fold, and if its GAN saw all real images, (b)-(d) may be optimistic (the report says so).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

from jaxmedgan.data import labeled
from jaxmedgan.evaluators import folds as folds_lib
from jaxmedgan.evaluators import diversity, metrics, plots, synthetic as synthetic_lib

log = logging.getLogger(__name__)

EXPERIMENTS = {
    "real": "(a) real, classic augmentation",
    "real+synthetic": "(b) real + synthetic",
    "synthetic": "(c) synthetic only",
    "real+synthetic_dp": "(d) real + DP synthetic",
}
# Frid-Adar et al., "GAN-based synthetic medical image augmentation for increased CNN performance
# in liver lesion classification", Neurocomputing 321 (2018): 182 lesions, 3-fold CV.
FRID_ADAR_2018 = {
    "real": {"sensitivity": 0.786, "specificity": 0.884},
    "real+synthetic": {"sensitivity": 0.857, "specificity": 0.924},
}
REFERENCES = {"frid-adar-2018": FRID_ADAR_2018}


def _fold_sources(path: str | None, num_folds: int) -> list[str] | None:
    """Per-fold synthetic sources: path/fold{f} when all exist, else the same path for every fold."""
    if path is None:
        return None
    per_fold = [os.path.join(path, f"fold{f}") for f in range(num_folds)]
    if os.path.isdir(path) and all(os.path.isdir(p) for p in per_fold):
        return per_fold
    if os.path.isdir(path) and any(os.path.isdir(p) for p in per_fold):
        found = [p for p in per_fold if os.path.isdir(p)]
        raise ValueError(f"Synthetic source {path!r} has per-fold sub-directories {found} but not all of "
                         f"fold0..fold{num_folds - 1} (config.downstream.num_folds={num_folds}).")
    return [path] * num_folds


def _load_sources(paths: list[str] | None, real: labeled.LabeledSet, d) -> list[labeled.LabeledSet] | None:
    if paths is None:
        return None
    cache: dict[str, labeled.LabeledSet] = {}
    for p in paths:
        if p not in cache:
            cache[p] = synthetic_lib.load(p, real, d.synthetic_per_class, d.synthetic_seed,
                                          success_only=bool(d.get("synthetic_success_only", False)))
    return [cache[p] for p in paths]


def _run_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    with c.unlocked():
        c.seed = int(seed)
        c.train.quiet = True
    return c


def _score(data: labeled.LabeledSet, probs: np.ndarray) -> float:
    """Per-fold score for the permutation test: accuracy (single-label) or macro AUC (multi-label)."""
    if data.multi_label:
        return _metrics(data.targets, probs, data, data.mask)["macro_auc"]
    return float(np.mean(np.argmax(probs, -1) == data.targets))


def _metrics(targets: np.ndarray, probs: np.ndarray, real: labeled.LabeledSet, mask: np.ndarray | None = None) -> dict:
    """Metrics of probs [N,K]; multi-label entries where mask [N,K] is 0 (unknown labels) are skipped."""
    from jaxmedgan.trainers import classifier

    if real.multi_label:
        return classifier.multi_label_metrics(targets, probs, real.class_names, mask)
    return metrics.single_label_metrics(targets, probs, real.class_names)


def _tiled_mask(real: labeled.LabeledSet, s: int) -> np.ndarray | None:
    """The real set's label mask repeated for s seeds' pooled predictions (None: every label known)."""
    return None if real.mask is None else np.concatenate([real.target_mask()] * s)


def _correct(real: labeled.LabeledSet, probs: np.ndarray) -> np.ndarray:
    """bool [N]: the image's call is right (multi-label: every finding whose label is known)."""
    if real.multi_label and real.mask is not None:
        right = (np.asarray(probs) >= 0.5) == (real.targets > 0.5)
        return np.all(right | (real.target_mask() == 0), axis=1)
    return metrics.correct(real.targets, probs, real.multi_label)


def _flat(m: dict) -> dict[str, float]:
    """The scalar metrics of a metrics dict, flattened (per-class dicts as 'sensitivity/cyst')."""
    out = {k: m[k] for k in ("accuracy", "macro_sensitivity", "macro_specificity", "macro_auc")}
    for key in ("sensitivity", "specificity", "auc"):
        out.update({f"{key}/{name}": v for name, v in m[key].items()})
    return out


def _summarise(name: str, probs: np.ndarray, fold_scores: np.ndarray, real: labeled.LabeledSet, d,
               train_sizes: list[int], seconds: float) -> dict:
    """Pooled metrics, bootstrap CIs and per-seed spread of one experiment; probs [S,N,K]."""
    s, n, _ = probs.shape
    targets = np.concatenate([real.targets] * s)
    pooled = probs.reshape(s * n, -1)
    mask = _tiled_mask(real, s)
    cluster = np.concatenate([real.group_ids()] * s)  # a group carries all its seeds' predictions
    m = _metrics(targets, pooled, real, mask)
    ci = metrics.bootstrap_ci(
        lambda idx: _flat(_metrics(targets[idx], pooled[idx], real, None if mask is None else mask[idx])), cluster,
        num_samples=d.bootstrap_samples, seed=d.bootstrap_seed)
    per_seed = [_flat(_metrics(real.targets, probs[i], real, real.mask)) for i in range(s)]
    spread = {k: {"mean": float(np.nanmean([p[k] for p in per_seed])), "std": float(np.nanstd([p[k] for p in per_seed]))}
              for k in ("accuracy", "macro_sensitivity", "macro_specificity", "macro_auc")}
    return {"description": EXPERIMENTS[name], "metrics": m, "ci95": {k: list(v) for k, v in ci.items()},
            "per_seed": per_seed, "seed_spread": spread, "fold_scores": fold_scores.tolist(),
            "train_size_mean": float(np.mean(train_sizes)), "seconds": seconds}


def _compare(a: str, b: str, probs: dict, fold_scores: dict, real: labeled.LabeledSet, results: dict) -> dict:
    ens_a, ens_b = probs[a].mean(0), probs[b].mean(0)
    mc = metrics.mcnemar_exact(_correct(real, ens_a), _correct(real, ens_b))
    mc["on"] = "seed-averaged out-of-fold predictions, one per real image"
    perm = metrics.paired_permutation_test(fold_scores[a].ravel(), fold_scores[b].ravel())
    perm["on"] = ("per-(seed, fold) macro AUC" if real.multi_label else "per-(seed, fold) accuracy")
    fa, fb = _flat(results[a]["metrics"]), _flat(results[b]["metrics"])
    return {"baseline": a, "treatment": b, "mcnemar": mc, "permutation": perm, "primary": "mcnemar",
            "difference": {k: fb[k] - fa[k] for k in ("accuracy", "macro_sensitivity", "macro_specificity",
                                                       "macro_auc")}}


def run(config: ml_collections.ConfigDict, synthetic: str | None, out_dir: str, *,
        synthetic_dp: str | None = None) -> dict:
    """Runs experiments (a)-(d) as configured; writes report.md/json and PNGs to out_dir; returns the report."""
    from jaxmedgan import sharding
    from jaxmedgan.trainers import classifier

    t_start = time.perf_counter()
    d = config.downstream
    # Synthetic labels live in the source classes (a GAN over the spine's 4 lesion types), so
    # both sets are read before `config.data.relabel` (e.g. abnormal vs normal) merges classes.
    real_split = d.get("real_split", "train")
    if real_split not in ("train", "test"):
        raise ValueError(f"config.downstream.real_split={real_split!r} must be 'train' or 'test'.")
    raw = labeled.load(config, real_split, apply_relabel=False)
    spec = config.data.get("relabel", "")
    real = labeled.relabel(raw, spec)
    classifier._check_data(config, real, "real set")
    k = d.num_folds
    warnings: list[str] = []

    def relabelled(sets):
        return None if sets is None else [labeled.relabel(x, spec) for x in sets]

    syn_paths, dp_paths = _fold_sources(synthetic, k), _fold_sources(synthetic_dp, k)
    syn_raw, syn_dp_raw = _load_sources(syn_paths, raw, d), _load_sources(dp_paths, raw, d)
    syn, syn_dp = relabelled(syn_raw), relabelled(syn_dp_raw)
    per_fold = {name: paths is not None and len(set(paths)) > 1 for name, paths in
                (("synthetic", syn_paths), ("synthetic_dp", dp_paths))}
    for name, src, path in (("synthetic", syn, synthetic), ("synthetic_dp", syn_dp, synthetic_dp)):
        if src is not None and not per_fold[name] and real_split == "train":
            warnings.append(f"One {name} source ({path}) serves every fold: if its GAN was trained on all real "
                            "images, the test folds leaked into it and (b)-(d) may be optimistic. Give "
                            f"{path}/fold0..fold{k - 1} (a GAN per training fold) for a leak-free study.")
    wanted = [e for e in d.experiments if e in EXPERIMENTS]
    unknown = [e for e in d.experiments if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"config.downstream.experiments has unknown names {unknown}; expected from {list(EXPERIMENTS)}.")
    available = {"real": True, "real+synthetic": syn is not None, "synthetic": syn is not None,
                 "real+synthetic_dp": syn_dp is not None}
    names = [e for e in wanted if available[e]]
    skipped = [e for e in wanted if not available[e]]
    if "real" not in names:
        raise ValueError("config.downstream.experiments must include 'real' (the baseline every other is compared to).")

    mesh = sharding.make_mesh(config.get("mesh"))
    seeds = [int(s) for s in d.seeds]
    probs = {e: np.zeros((len(seeds), len(real), real.num_classes), np.float32) for e in names}
    fold_scores = {e: np.zeros((len(seeds), k)) for e in names}
    train_sizes: dict[str, list[int]] = {e: [] for e in names}
    seconds = {e: 0.0 for e in names}
    splits_per_seed = [folds_lib.stratified_group_kfold(real.targets, real.groups, k, seed, multi_label=real.multi_label)
                       for seed in seeds]
    diversities = {key: _source_diversity(src, raw, splits_per_seed, seeds)
                   for key, src in (("synthetic", syn_raw), ("synthetic_dp", syn_dp_raw))}
    syn_only_once = "synthetic" in names and not per_fold["synthetic"]
    total_runs = len(seeds) * (k * sum(e != "synthetic" or not syn_only_once for e in names)
                               + (1 if syn_only_once else 0))
    bar = tqdm(total=total_runs, desc="downstream", unit="run", dynamic_ncols=True,
               disable=config.train.get("quiet", False))
    try:
        for si, seed in enumerate(seeds):
            splits = splits_per_seed[si]
            if syn_only_once:  # the training set does not depend on the fold: train once per seed
                t = time.perf_counter()
                state = classifier.fit(_run_config(config, seed * 1000 + 999), None, syn[0], mesh=mesh)
                probs["synthetic"][si] = classifier.predict(config, state, real.images)
                train_sizes["synthetic"].append(len(syn[0]))
                seconds["synthetic"] += time.perf_counter() - t
                bar.update(1)
            for f, (train_idx, test_idx) in enumerate(splits):
                train_real, test_real = real.subset(train_idx), real.subset(test_idx)
                sets = {"real": train_real}
                if syn is not None:
                    sets["real+synthetic"] = labeled.concat(train_real, syn[f])
                    sets["synthetic"] = syn[f]
                if syn_dp is not None:
                    sets["real+synthetic_dp"] = labeled.concat(train_real, syn_dp[f])
                for e in names:
                    if e == "synthetic" and syn_only_once:
                        p = probs[e][si, test_idx]
                    else:
                        t = time.perf_counter()
                        state = classifier.fit(_run_config(config, seed * 1000 + f), None, sets[e], mesh=mesh)
                        p = classifier.predict(config, state, test_real.images)
                        probs[e][si, test_idx] = p
                        train_sizes[e].append(len(sets[e]))
                        seconds[e] += time.perf_counter() - t
                        bar.update(1)
                    fold_scores[e][si, f] = _score(test_real, p)
    finally:
        bar.close()

    results = {e: _summarise(e, probs[e], fold_scores[e], real, d, train_sizes[e], seconds[e]) for e in names}
    comparisons = {f"{e} vs real": _compare("real", e, probs, fold_scores, real, results)
                   for e in ("real+synthetic", "real+synthetic_dp") if e in names}
    report = {
        "task": {"class_names": list(real.class_names), "multi_label": real.multi_label, "source": real.source,
                 "num_unknown_labels": 0 if real.mask is None else int((real.mask == 0).sum()),
                 "num_real": len(real), "class_counts": real.class_counts().tolist(),
                 "num_groups": int(len(np.unique(real.group_ids()))), "image_shape": list(real.image_shape)},
        "design": {"real_split": real_split, "leak_free": _leak_free(real_split, per_fold, syn, syn_dp),
                   "num_folds": k, "seeds": seeds, "steps": int(config.train.steps),
                   "batch_size": int(config.train.batch_size), "class_weighting": config.loss.class_weighting,
                   "synthetic_per_class": int(d.synthetic_per_class),
                   "synthetic_per_class_means": ("images per distinct label vector" if real.multi_label
                                                 else "images per class"),
                   "bootstrap_samples": int(d.bootstrap_samples),
                   "test_sizes": [[len(t) for _, t in s] for s in splits_per_seed],
                   "primary_test": "exact McNemar on seed-averaged out-of-fold predictions"},
        "synthetic": _describe(synthetic, syn, per_fold["synthetic"], diversities["synthetic"]),
        "synthetic_dp": _describe(synthetic_dp, syn_dp, per_fold["synthetic_dp"], diversities["synthetic_dp"]),
        "experiments": results,
        "skipped": {e: "no synthetic source given" for e in skipped},
        "comparisons": comparisons,
        "reference": _reference(d, results),
        "warnings": warnings,
        "config": config.to_dict(),
    }
    report["figures"] = _write_figures(out_dir, probs, results, real)
    report["seconds"] = time.perf_counter() - t_start
    write_report(out_dir, report)
    return report


def _leak_free(real_split: str, per_fold: dict, syn, syn_dp) -> str:
    """How (or whether) the study keeps the test folds away from the GANs that made the synthetic images."""
    if real_split == "test":
        return ("yes: the real images are the held-out test split, which no GAN trained on the 'train' split "
                "saw; cross-validation runs within it")
    used = [name for name, src in (("synthetic", syn), ("synthetic_dp", syn_dp)) if src is not None]
    if all(per_fold[name] for name in used):
        return "yes: one GAN per training fold (fold<f> sources)" if used else "yes: no synthetic source"
    return "no: one synthetic source serves every fold; its GAN may have seen the test folds"


def _source_diversity(sources: list[labeled.LabeledSet] | None, raw: labeled.LabeledSet,
                      splits_per_seed: list, seeds: list[int]) -> dict | None:
    """Per-class pixel diversity ratio of a synthetic source (per fold, source classes) against the
    real training images of each (seed, fold); None without a source (module docstring)."""
    if sources is None:
        return None
    if raw.multi_label:
        return {"skipped": "multi-label task: no single class per image to measure diversity within"}
    rows = []
    for seed, splits in zip(seeds, splits_per_seed):
        for f, (train_idx, _) in enumerate(splits):
            src, train = sources[f], raw.subset(train_idx)
            out = diversity.class_diversity(src.images, src.targets, train.images, train.targets, raw.class_names,
                                            num_bootstrap=0)
            rows.append({"seed": seed, "fold": f, "diversity_ratio": out["diversity_ratio"],
                         "per_class": {n: {key: v[key] for key in ("ratio", "synthetic", "real", "num_synthetic",
                                                                   "num_real")}
                                       for n, v in out["per_class"].items()}})
    per_class = {}
    for name in raw.class_names:
        ratios = np.array([r["per_class"][name]["ratio"] for r in rows])
        finite = ratios[np.isfinite(ratios)]
        per_class[name] = {
            "ratio": float(finite.mean()) if len(finite) else float("nan"),
            "ratio_range": [float(finite.min()), float(finite.max())] if len(finite) else [float("nan")] * 2,
            "num_synthetic": float(np.mean([r["per_class"][name]["num_synthetic"] for r in rows])),
            "num_real": float(np.mean([r["per_class"][name]["num_real"] for r in rows]))}
    means = [v["ratio"] for v in per_class.values() if np.isfinite(v["ratio"])]
    return {"space": "pixels", "against": "real training images of the same class in each (seed, fold)",
            "aggregate": "mean over folds x seeds (range: min, max)", "classes": "source classes, before "
            "config.data.relabel", "per_class": per_class,
            "diversity_ratio": float(np.mean(means)) if means else float("nan"), "per_fold": rows}


def _describe(path: str | None, sets: list[labeled.LabeledSet] | None, per_fold: bool,
              diversity_report: dict | None = None) -> dict | None:
    if sets is None:
        return None
    out = {"path": path, "kind": synthetic_lib.kind(path if not per_fold else os.path.join(path, "fold0")),
           "per_fold": per_fold, "num_images": [len(s) for s in sets] if per_fold else len(sets[0]),
           "class_counts": sets[0].class_counts().tolist(), "from": sets[0].source}
    if sets[0].multi_label:  # positives per finding above; images per requested finding vector here
        out["label_vectors"] = synthetic_lib.label_vectors(sets[0])
    if diversity_report is not None:
        out["diversity"] = diversity_report
    return out


def _reference(d, results: dict) -> dict | None:
    ref = REFERENCES.get(d.get("reference", ""))
    if ref is None:
        return None
    rows = {}
    for e, theirs in ref.items():
        ours = results.get(e)
        rows[e] = {"theirs": theirs, "ours": None if ours is None else {
            "sensitivity": ours["metrics"]["macro_sensitivity"], "specificity": ours["metrics"]["macro_specificity"],
            "accuracy": ours["metrics"]["accuracy"],
            "sensitivity_ci95": ours["ci95"]["macro_sensitivity"], "specificity_ci95": ours["ci95"]["macro_specificity"]}}
    return {"name": d.reference, "citation": "Frid-Adar et al., Neurocomputing 321 (2018) 321-331",
            "note": "ours: macro (class-averaged) one-vs-rest sensitivity/specificity on pooled out-of-fold "
                    "predictions of the phantom lesions; theirs: 182 real CT lesions, 3-fold CV", "rows": rows}


def _write_figures(out_dir: str, probs: dict, results: dict, real: labeled.LabeledSet) -> dict:
    figures = {}
    for e, p in probs.items():
        s, n, _ = p.shape
        targets = np.concatenate([real.targets] * s)
        pooled = p.reshape(s * n, -1)
        mask = _tiled_mask(real, s)
        curves = []
        for c, name in enumerate(real.class_names):
            positive = targets[:, c] > 0.5 if real.multi_label else targets == c
            known = np.ones(len(pooled), bool) if mask is None else mask[:, c] > 0  # U-Ignore: skip unknown
            fpr, tpr, _ = metrics.roc_curve(positive[known], pooled[known, c])
            curves.append((name, fpr, tpr, results[e]["metrics"]["auc"][name]))
        slug = e.replace("+", "_plus_")
        roc = f"roc_{slug}.png"
        plots.save(os.path.join(out_dir, roc), plots.roc_figure(curves, f"ROC, {EXPERIMENTS[e]} (one-vs-rest)"))
        figures[e] = {"roc": roc, "confusion": []}
        cms = results[e]["metrics"]["confusion_matrix"]
        if real.multi_label:
            for name, cm in cms.items():
                file = f"confusion_{slug}_{name}.png"
                plots.save(os.path.join(out_dir, file), plots.confusion_figure(np.asarray(cm), ("absent", "present"),
                                                                               f"{name}, {EXPERIMENTS[e]}"))
                figures[e]["confusion"].append(file)
        else:
            file = f"confusion_{slug}.png"
            plots.save(os.path.join(out_dir, file), plots.confusion_figure(np.asarray(cms), real.class_names,
                                                                           EXPERIMENTS[e]))
            figures[e]["confusion"].append(file)
    return figures


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _ci(pair) -> str:
    if pair is None or any(v is None or not np.isfinite(v) for v in pair):
        return ""
    return f" [{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def _vectors_md(vectors: dict | None, most: int = 8) -> str:
    """'; images per label vector {...}' (the `most` largest when there are more)."""
    if not vectors:
        return ""
    top = sorted(vectors.items(), key=lambda kv: -kv[1])[:most]
    more = f" and {len(vectors) - most} more" if len(vectors) > most else ""
    return f"; images per label vector ({len(vectors)} distinct) " + ", ".join(f"{k} {v}" for k, v in top) + more


def _num(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _diversity_md(report: dict) -> list[str]:
    """Per-class diversity ratio table(s) of the synthetic source(s), or a line saying why there is none."""
    lines = []
    for key, title in (("synthetic", "Synthetic"), ("synthetic_dp", "DP synthetic")):
        div = (report.get(key) or {}).get("diversity")
        if not div:
            continue
        if div.get("skipped"):
            lines += [f"{title} source diversity: not computed ({div['skipped']}).", ""]
            continue
        lines += [f"{title} source, intra-class diversity ratio (pixel space; mean pairwise distance of its "
                  f"class-c images / of the real training images of class c, {div['aggregate']}; "
                  f"{div['classes']}): mean {_num(div['diversity_ratio'])}. Near 1 = as varied as the data; "
                  "well below 1 = near-copies within the class.", "",
                  "| class | diversity ratio | range | synthetic images | real training images |",
                  "|---|---|---|---|---|"]
        for name, v in div["per_class"].items():
            lo, hi = v["ratio_range"]
            lines.append(f"| {name} | {_num(v['ratio'])} | {_num(lo)} - {_num(hi)} | {_num(v['num_synthetic'], 0)} "
                         f"| {_num(v['num_real'], 0)} |")
        lines.append("")
    return lines


def render_markdown(report: dict) -> str:
    """The human-readable report (report.md) of a `run` report dict."""
    task, design = report["task"], report["design"]
    lines = ["# Downstream study: does synthetic data help the classifier?", ""]
    lines += [f"Real set: {task['num_real']} images ({task['source']}), "
              f"{'findings' if task['multi_label'] else 'classes'} "
              + ", ".join(f"{n} ({c})" for n, c in zip(task["class_names"], task["class_counts"]))
              + f"; {task['num_groups']} groups, image {tuple(task['image_shape'])}.",
              f"Design: {design['num_folds']}-fold stratified group cross-validation x seeds {design['seeds']}; "
              f"{design['steps']} steps of batch {design['batch_size']} per classifier; class weighting "
              f"{design['class_weighting']}; {design['synthetic_per_class']} synthetic images per "
              f"{'distinct label vector (finding combination)' if task['multi_label'] else 'class'}.",
              f"Real images from the '{design.get('real_split', 'train')}' split. Leak-free: "
              f"{design.get('leak_free', 'not recorded')}.",
              f"Numbers are percentages on out-of-fold predictions pooled over folds and seeds; [95 % bootstrap "
              f"interval, {design['bootstrap_samples']} group resamples]. Sensitivity/specificity are one-vs-rest, "
              "averaged over classes (macro)."
              + (" Accuracy is exact match (every finding of an image called right at p = 0.5)."
                 if task["multi_label"] else ""), ""]
    for key in ("synthetic", "synthetic_dp"):
        s = report.get(key)
        if s:
            counts = "positives per finding" if task["multi_label"] else "class counts"
            lines.append(f"{'Synthetic' if key == 'synthetic' else 'DP synthetic'} source: {s['path']} ({s['kind']}"
                         f"{', one per fold' if s['per_fold'] else ''}), {counts} {s['class_counts']}"
                         + _vectors_md(s.get("label_vectors")) + ".")
    if task.get("num_unknown_labels"):
        lines.append(f"{task['num_unknown_labels']} real labels are unknown (U-Ignore): skipped in training and "
                     "in every metric.")
    div_lines = _diversity_md(report)
    if div_lines:
        lines += [""] + div_lines[:-1]
    lines += ["", "| experiment | accuracy | macro sensitivity | macro specificity | macro AUC | train images | minutes |",
              "|---|---|---|---|---|---|---|"]
    for e, r in report["experiments"].items():
        m, ci = r["metrics"], r["ci95"]
        lines.append(f"| {r['description']} | {_pct(m['accuracy'])}{_ci(ci.get('accuracy'))} | "
                     f"{_pct(m['macro_sensitivity'])}{_ci(ci.get('macro_sensitivity'))} | "
                     f"{_pct(m['macro_specificity'])}{_ci(ci.get('macro_specificity'))} | "
                     f"{_pct(m['macro_auc'])}{_ci(ci.get('macro_auc'))} | {r['train_size_mean']:.0f} | "
                     f"{r['seconds'] / 60:.1f} |")
    for e, reason in report.get("skipped", {}).items():
        lines.append(f"| {EXPERIMENTS[e]} | skipped: {reason} | | | | | |")
    lines.append("")
    if task["multi_label"]:
        exps = list(report["experiments"].items())
        lines += ["## Per-finding AUC", "", "| finding | " + " | ".join(r["description"] for _, r in exps) + " |",
                  "|---" * (len(exps) + 1) + "|"]
        for name in task["class_names"]:
            lines.append(f"| {name} | " + " | ".join(
                f"{_pct(r['metrics']['auc'][name])}{_ci(r['ci95'].get('auc/' + name))}" for _, r in exps) + " |")
        lines.append("")
    for e, r in report["experiments"].items():
        m, ci = r["metrics"], r["ci95"]
        lines += [f"## {r['description']}", "", f"| {'finding' if task['multi_label'] else 'class'} | sensitivity | "
                  "specificity | AUC |", "|---|---|---|---|"]
        for name in task["class_names"]:
            lines.append(f"| {name} | {_pct(m['sensitivity'][name])}{_ci(ci.get('sensitivity/' + name))} | "
                         f"{_pct(m['specificity'][name])}{_ci(ci.get('specificity/' + name))} | "
                         f"{_pct(m['auc'][name])}{_ci(ci.get('auc/' + name))} |")
        spread = r["seed_spread"]
        lines += ["", "Across seeds (mean +- std): " + ", ".join(
            f"{k} {_pct(v['mean'])} +- {_pct(v['std'])}" for k, v in spread.items()) + ".", ""]
        figs = report.get("figures", {}).get(e)
        if figs:
            lines += [f"![ROC]({figs['roc']})"] + [f"![confusion]({c})" for c in figs["confusion"]] + [""]
    if report["comparisons"]:
        lines += ["## Paired tests against (a)", "", "| comparison | accuracy difference | McNemar exact p "
                  "(a-only / b-only correct) | permutation p (per-fold) |", "|---|---|---|---|"]
        for name, c in report["comparisons"].items():
            mc, pm = c["mcnemar"], c["permutation"]
            lines.append(f"| {EXPERIMENTS[c['treatment']]} vs {EXPERIMENTS[c['baseline']]} | "
                         f"{100 * c['difference']['accuracy']:+.1f} points | {mc['p_value']:.3g} "
                         f"({mc['a_only_correct']} / {mc['b_only_correct']}) | {pm['p_value']:.3g} |")
        lines += ["", "Primary test: exact (binomial) McNemar on the seed-averaged out-of-fold predictions, one "
                  "decision per real image. Secondary: paired sign-flip permutation test on per-(seed, fold) "
                  + ("macro AUC." if task["multi_label"] else "accuracy."), ""]
    ref = report.get("reference")
    if ref:
        lines += [f"## Against {ref['citation']}", "", "| | their sensitivity | their specificity | our sensitivity | "
                  "our specificity | our accuracy |", "|---|---|---|---|---|---|"]
        for e, row in ref["rows"].items():
            o = row["ours"] or {}
            lines.append(f"| {EXPERIMENTS[e]} | {_pct(row['theirs']['sensitivity'])} | "
                         f"{_pct(row['theirs']['specificity'])} | {_pct(o.get('sensitivity'))}"
                         f"{_ci(o.get('sensitivity_ci95'))} | {_pct(o.get('specificity'))}"
                         f"{_ci(o.get('specificity_ci95'))} | {_pct(o.get('accuracy'))} |")
        lines += ["", f"Note: {ref['note']}.", ""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    lines.append(f"Total time: {report.get('seconds', 0) / 60:.1f} minutes.")
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(out_dir: str, report: dict) -> None:
    """Writes out_dir/report.json and out_dir/report.md (each atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    clean = _clean(report)
    _write_atomic(os.path.join(out_dir, "report.json"), json.dumps(clean, indent=1, sort_keys=False, allow_nan=False))
    _write_atomic(os.path.join(out_dir, "report.md"), render_markdown(clean))


USAGE = ("usage: jaxmedgan evaluate downstream --config configs/downstream_liver.py --synthetic DIR_OR_WORKDIR "
         "[--synthetic-dp DIR] --out DIR [--config.section.key=value ...]")


def downstream_command(argv: list[str]) -> int:
    """`jaxmedgan evaluate downstream ...`: argv = the arguments after `downstream` (a leading program
    or 'downstream' token is tolerated). Returns 0 on success, 2 on a usage error, 1 on bad input."""
    from absl import flags
    from ml_collections import config_flags

    args = list(argv)
    if args and not args[0].startswith("-"):
        args = args[1:]  # program name / "downstream"
    if any(a in ("-h", "--help") for a in args):
        print(USAGE + "\n\n" + (__doc__ or ""))
        return 0
    args = [a.replace("--synthetic-dp", "--synthetic_dp") for a in args]
    sys_argv = ["jaxmedgan evaluate downstream"] + args
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Downstream config (configs/downstream_*.py).",
                                    flag_values=fv, lock_config=True, sys_argv=sys_argv)
    flags.DEFINE_string("synthetic", None, "GAN workdir, samples.npz (or its directory) or exported folder.",
                        flag_values=fv)
    flags.DEFINE_string("synthetic_dp", None, "Synthetic images of a DP-trained GAN (same kinds).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output directory for report.md, report.json and PNGs.", flag_values=fv)
    try:
        fv(sys_argv)
        config = fv.config
        if config is not None:
            config.keys()  # a config that failed to load raises only when first used
    except (flags.UnrecognizedFlagError, flags.IllegalFlagValueError) as e:
        print(f"jaxmedgan evaluate downstream: error: {e}\n{USAGE}", file=sys.stderr)
        return 2
    except Exception as e:  # config file missing, failing to load, unknown key in an override
        print(f"jaxmedgan evaluate downstream: error: could not load --config: {e}", file=sys.stderr)
        return 2
    if config is None or fv.out is None:
        print(f"jaxmedgan evaluate downstream: error: --config and --out are required.\n{USAGE}", file=sys.stderr)
        return 2
    if config.get("downstream") is None:
        print("jaxmedgan evaluate downstream: error: the config has no 'downstream' section; use "
              "configs/downstream_*.py.", file=sys.stderr)
        return 2
    try:
        report = run(config, fv.synthetic, fv.out, synthetic_dp=fv.synthetic_dp)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"jaxmedgan evaluate downstream: error: {e}", file=sys.stderr)
        return 1
    for e, r in report["experiments"].items():
        m = r["metrics"]
        print(f"{r['description']}: accuracy {_pct(m['accuracy'])}%, macro sensitivity "
              f"{_pct(m['macro_sensitivity'])}%, specificity {_pct(m['macro_specificity'])}%, "
              f"AUC {_pct(m['macro_auc'])}%")
        if report["task"]["multi_label"]:
            print("  per-finding AUC: " + ", ".join(f"{n} {_pct(v)}%" for n, v in m["auc"].items()))
    for key in ("synthetic", "synthetic_dp"):
        div = (report.get(key) or {}).get("diversity") or {}
        if div.get("per_class"):
            print(f"{key} diversity ratio per class (pixels, vs real training images): " + ", ".join(
                f"{n} {_num(v['ratio'])}" for n, v in div["per_class"].items()))
    print(f"Report: {os.path.join(fv.out, 'report.md')}")
    return 0
