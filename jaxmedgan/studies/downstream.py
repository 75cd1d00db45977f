"""Downstream study: does synthetic data help a classifier? (Frid-Adar et al. 2018 design.)

Experiments, each a classifier (`trainers.classifier`, classic augmentation on every training
image) trained per cross-validation fold and tested on that fold's held-out *real* images:

  real              (a) real training folds only
  real+synthetic    (b) real training folds + `synthetic_per_class` synthetic images per class
  synthetic         (c) synthetic images only
  real+synthetic_dp (d) real training folds + images of a DP-trained GAN (when given)
  real+synthetic_filtered, real+synthetic_balanced  (e), (f): sample selection (learning curve, below)

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
`studies.synthetic`), `synthetic_per_class` counting images per distinct label vector.
Unknown real labels (`LabeledSet.mask`, CheXpert U-Ignore) are skipped by training
(`trainers.classifier`) and by every metric and test here: a finding is scored on the images
where its label is known, and an image is "correct" when every known finding is.

Beside the results, each synthetic source's per-class diversity ratio (`evaluators.diversity`,
pixel space, no intervals): the mean pairwise distance of its class-c images over that of the
real *training* images of class c in each (seed, fold), reported as the mean over folds x seeds
with the range; classes are the source classes (before `config.data.relabel`), the labels the
GAN was conditioned on. Well below 1 = the source repeats itself within a class, which caps what
it can add. Not computed for multi-label tasks (no class to measure within).

Where the synthetic images come from (`design.synthetic_design` and `design.leak_free` in every report):
  * no --synthetic and `downstream.gan_config` set (the liver default): one GAN per (fraction, seed,
    fold), trained on exactly the real images classifier (a) of that (fraction, seed, fold) sees
    (`studies.fold_gans`: OUT/gans/frac{r}/seed{s}/fold{f}, reused when finished, its fold_gan.json
    recording the training indices), `synthetic_per_class` images per class drawn from it;
  * --synthetic DIR with DIR/fold0 .. fold{k-1}: one source per fold, reused for every seed and
    fraction. Folds are redrawn per seed, so it can be leak-free for one seed only (the first, if
    the GANs were trained on that seed's folds); with several seeds the report says "no" and warns;
  * any other --synthetic: one shared source for every fold; if its GAN saw all real images, the
    test folds leaked into (b)-(f) (the report says so and warns).

Learning curve (`downstream.real_fractions`, `evaluators.learning_curve`): for each fraction r every
(seed, fold)'s training part is cut to r (stratified, nested across fractions, seeded by (seed,
fold)); the GAN (above) and every classifier of that (r, seed, fold) train on that subset, tested
on the full held-out fold. Two sample-selection arms join (b):
  real+synthetic_filtered (e) keep the synthetic images (b) uses that (a)'s classifier of the same
                              (r, seed, fold) assigns to their requested class with probability
                              >= `downstream.filter_threshold`; the kept counts per class are reported
  real+synthetic_balanced (f) add per class max_c n_c - n_c synthetic images (n_c: real training
                              images of class c), so the training set is class-balanced
Per (fraction, experiment), on pooled out-of-fold predictions: macro sensitivity / specificity,
balanced accuracy, macro AUC with 95 % group-bootstrap intervals; each arm against (a) at the same
fraction: exact McNemar and a paired bootstrap (one group resample scores both arms) of the
difference in balanced accuracy and in macro AUC. report.json `learning_curve`, a report.md table
and learning_curve.png. The per-experiment sections above it describe the largest fraction.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

from jaxmedgan import atomic_io, sharding
from jaxmedgan.data import labeled
from jaxmedgan.evaluators import folds as folds_lib
from jaxmedgan.evaluators import diversity, learning_curve, metrics, plots
from jaxmedgan.studies import fold_gans
from jaxmedgan.studies import synthetic as synthetic_lib
from jaxmedgan.trainers import classifier

log = logging.getLogger(__name__)

EXPERIMENTS = {
    "real": "(a) real, classic augmentation",
    "real+synthetic": "(b) real + synthetic",
    "synthetic": "(c) synthetic only",
    "real+synthetic_dp": "(d) real + DP synthetic",
    "real+synthetic_filtered": "(e) real + synthetic kept by (a)'s classifier",
    "real+synthetic_balanced": "(f) real + synthetic to class balance",
}
SYNTHETIC_ARMS = ("real+synthetic", "synthetic", "real+synthetic_filtered", "real+synthetic_balanced")
# Frid-Adar et al., "GAN-based synthetic medical image augmentation for increased CNN performance
# in liver lesion classification", Neurocomputing 321 (2018): 182 lesions, 3-fold CV.
FRID_ADAR_2018 = {
    "real": {"sensitivity": 0.786, "specificity": 0.884},
    "real+synthetic": {"sensitivity": 0.857, "specificity": 0.924},
}
REFERENCES = {"frid-adar-2018": FRID_ADAR_2018}


@dataclasses.dataclass(frozen=True)
class Options:
    """config.downstream, read and checked in one place (keys an older config lacks get these defaults)."""

    experiments: tuple[str, ...]
    num_folds: int
    seeds: tuple[int, ...]
    synthetic_per_class: int
    synthetic_seed: int = 0  # which synthetic images (and GAN latents) are drawn
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    reference: str = ""  # published numbers shown beside ours (REFERENCES); "" = none
    real_split: str = "train"  # 'test': cross-validate within the held-out split no GAN saw
    synthetic_success_only: bool = False  # LCO archives: drop samples the classifier disagreed with
    real_fractions: tuple[float, ...] = (1.0,)  # learning curve: shares of each training fold
    gan_config: str = ""  # no --synthetic: train this GAN per (fraction, seed, fold); "" = none
    gan_overrides: tuple[str, ...] = ()  # 'key=value' applied to gan_config
    filter_threshold: float = 0.5  # real+synthetic_filtered: min p(requested class) under (a)'s classifier

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Options":
        d = config.get("downstream")
        if d is None:
            raise ValueError("The config has no 'downstream' section; use configs/downstream_*.py.")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise ValueError(f"config.downstream lacks {missing}; see configs/downstream_liver.py.")
        v = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        unknown = [e for e in v["experiments"] if e not in EXPERIMENTS]
        if unknown:
            raise ValueError(f"config.downstream.experiments has unknown names {unknown}; expected from "
                             f"{list(EXPERIMENTS)}.")
        if v.get("real_split", "train") not in ("train", "test"):
            raise ValueError(f"config.downstream.real_split={v['real_split']!r} must be 'train' or 'test'.")
        threshold = v.get("filter_threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(f"config.downstream.filter_threshold={threshold!r} must be a probability in [0, 1].")
        overrides = v.get("gan_overrides", ())
        overrides = (overrides,) if isinstance(overrides, str) else tuple(overrides)
        if not all(isinstance(o, str) for o in overrides):
            raise ValueError(f"config.downstream.gan_overrides={overrides!r} must be 'key=value' strings.")
        v.update(experiments=tuple(v["experiments"]), seeds=tuple(int(s) for s in v["seeds"]),
                 real_fractions=learning_curve.parse_fractions(v.get("real_fractions", (1.0,)),
                                                               "config.downstream.real_fractions"),
                 gan_overrides=overrides, gan_config=str(v.get("gan_config", "") or ""), filter_threshold=float(threshold))
        return cls(**v)


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


def _load_sources(paths: list[str] | None, real: labeled.LabeledSet, opts: Options) -> list[labeled.LabeledSet] | None:
    if paths is None:
        return None
    cache: dict[str, labeled.LabeledSet] = {}
    for p in paths:
        if p not in cache:
            cache[p] = synthetic_lib.load(p, real, opts.synthetic_per_class, opts.synthetic_seed,
                                          success_only=opts.synthetic_success_only)
    return [cache[p] for p in paths]


def _run_config(config: ml_collections.ConfigDict, seed: int, batch_size: int | None = None) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    with c.unlocked():
        c.seed = int(seed)
        c.train.quiet = True
        if batch_size is not None:
            c.train.batch_size = int(batch_size)
    return c


def _score(data: labeled.LabeledSet, probs: np.ndarray) -> float:
    """Per-fold score for the permutation test: accuracy (single-label) or macro AUC (multi-label)."""
    if data.multi_label:
        return _metrics(data.targets, probs, data, data.mask)["macro_auc"]
    return float(np.mean(np.argmax(probs, -1) == data.targets))


def _metrics(targets: np.ndarray, probs: np.ndarray, real: labeled.LabeledSet, mask: np.ndarray | None = None) -> dict:
    """Metrics of probs [N,K] (+ balanced accuracy); multi-label entries where mask [N,K] is 0 are skipped."""
    if real.multi_label:
        m = classifier.multi_label_metrics(targets, probs, real.class_names, mask)
    else:
        m = metrics.single_label_metrics(targets, probs, real.class_names)
    m["balanced_accuracy"] = learning_curve.curve_scalars(m, real.multi_label)["balanced_accuracy"]
    return m


def _tiled_mask(real: labeled.LabeledSet, s: int) -> np.ndarray | None:
    """The real set's label mask repeated for s seeds' pooled predictions (None: every label known)."""
    return None if real.mask is None else np.concatenate([real.target_mask()] * s)


def _correct(real: labeled.LabeledSet, probs: np.ndarray) -> np.ndarray:
    """bool [N]: the image's call is right (multi-label: every finding whose label is known)."""
    if real.multi_label and real.mask is not None:
        right = (np.asarray(probs) >= 0.5) == (real.targets > 0.5)
        return np.all(right | (real.target_mask() == 0), axis=1)
    return metrics.correct(real.targets, probs, real.multi_label)


SCALARS = ("accuracy", "macro_sensitivity", "macro_specificity", "macro_auc", "balanced_accuracy")


def _flat(m: dict) -> dict[str, float]:
    """The scalar metrics of a metrics dict, flattened (per-class dicts as 'sensitivity/cyst')."""
    out = {k: m[k] for k in SCALARS}
    for key in ("sensitivity", "specificity", "auc"):
        out.update({f"{key}/{name}": v for name, v in m[key].items()})
    return out


def _pooled(real: labeled.LabeledSet, probs: np.ndarray):
    """(targets, pooled probs [S*N,K], mask or None, cluster int [S*N]) of probs [S,N,K] over S seeds."""
    s, n, _ = probs.shape
    cluster = np.concatenate([real.group_ids()] * s)  # a group carries all its seeds' predictions
    return np.concatenate([real.targets] * s), probs.reshape(s * n, -1), _tiled_mask(real, s), cluster


def _summarise(name: str, probs: np.ndarray, fold_scores: np.ndarray, real: labeled.LabeledSet, opts: Options,
               train_sizes: list[int], seconds: float) -> dict:
    """Pooled metrics, bootstrap CIs and per-seed spread of one experiment; probs [S,N,K]."""
    s = probs.shape[0]
    targets, pooled, mask, cluster = _pooled(real, probs)
    m = _metrics(targets, pooled, real, mask)
    ci = metrics.bootstrap_ci(
        lambda idx: _flat(_metrics(targets[idx], pooled[idx], real, None if mask is None else mask[idx])), cluster,
        num_samples=opts.bootstrap_samples, seed=opts.bootstrap_seed)
    per_seed = [_flat(_metrics(real.targets, probs[i], real, real.mask)) for i in range(s)]
    spread = {k: {"mean": float(np.nanmean([p[k] for p in per_seed])), "std": float(np.nanstd([p[k] for p in per_seed]))}
              for k in ("accuracy", "macro_sensitivity", "macro_specificity", "macro_auc")}
    return {"description": EXPERIMENTS[name], "metrics": m, "ci95": {k: list(v) for k, v in ci.items()},
            "per_seed": per_seed, "seed_spread": spread, "fold_scores": fold_scores.tolist(),
            "train_size_mean": float(np.mean(train_sizes)), "seconds": seconds}


def _compare(a: str, b: str, probs: dict, fold_scores: dict, real: labeled.LabeledSet, results: dict,
             opts: Options) -> dict:
    """b against a on the same images: McNemar, sign-flip permutation, paired bootstrap of differences."""
    ens_a, ens_b = probs[a].mean(0), probs[b].mean(0)
    mc = metrics.mcnemar_exact(_correct(real, ens_a), _correct(real, ens_b))
    mc["on"] = "seed-averaged out-of-fold predictions, one per real image"
    perm = metrics.paired_permutation_test(fold_scores[a].ravel(), fold_scores[b].ravel())
    perm["on"] = ("per-(seed, fold) macro AUC" if real.multi_label else "per-(seed, fold) accuracy")
    targets, pooled_a, mask, cluster = _pooled(real, probs[a])
    pooled_b = _pooled(real, probs[b])[1]

    def stat(pooled: np.ndarray):
        return lambda idx: _metrics(targets[idx], pooled[idx], real, None if mask is None else mask[idx])

    boot = learning_curve.paired_bootstrap(stat(pooled_a), stat(pooled_b), cluster, ("balanced_accuracy", "macro_auc"),
                                           num_samples=opts.bootstrap_samples, seed=opts.bootstrap_seed)
    boot["on"] = "pooled out-of-fold predictions; each resample draws groups once and scores both arms"
    fa, fb = _flat(results[a]["metrics"]), _flat(results[b]["metrics"])
    return {"baseline": a, "treatment": b, "mcnemar": mc, "permutation": perm, "paired_bootstrap": boot,
            "primary": "mcnemar", "difference": {k: fb[k] - fa[k] for k in SCALARS}}


def _fraction_subsets(raw: labeled.LabeledSet, train_idx: np.ndarray, fractions: tuple[float, ...], seed: int,
                      fold: int) -> dict[float, np.ndarray]:
    """{fraction: sorted real indices int64 [M_r]}: the fold's training part cut to each fraction, by
    whole groups, stratified by source class (before relabel: every class the GAN is conditioned on)."""
    groups = raw.group_ids()[train_idx]
    strata = folds_lib.group_strata(groups, raw.targets[train_idx], raw.multi_label)
    units = np.unique(groups)
    chosen = learning_curve.nested_subsets(np.asarray([strata[int(g)] for g in units]), fractions, seed, fold)
    return {r: np.sort(train_idx[np.isin(groups, units[pos])]) for r, pos in chosen.items()}


def run(config: ml_collections.ConfigDict, synthetic: str | None, out_dir: str, *,
        synthetic_dp: str | None = None) -> dict:
    """Runs the configured experiments at every real fraction; writes report.md/json and PNGs to out_dir;
    returns the report (its per-experiment sections: the largest fraction; all: `learning_curve`)."""
    t_start = time.perf_counter()
    opts = Options.from_config(config)
    # Synthetic labels live in the source classes (a GAN over the spine's 4 lesion types), so
    # both sets are read before `config.data.relabel` (e.g. abnormal vs normal) merges classes.
    raw = labeled.load(config, opts.real_split, apply_relabel=False)
    spec = config.data.get("relabel", "")
    real = labeled.relabel(raw, spec)
    classifier._check_data(config, real, "real set")
    k, seeds, fractions = opts.num_folds, list(opts.seeds), opts.real_fractions
    main = fractions[-1]  # the per-experiment sections, figures and top-level comparisons describe it
    warnings: list[str] = []
    selection = [e for e in opts.experiments if e in ("real+synthetic_filtered", "real+synthetic_balanced")]
    if real.multi_label and selection:
        raise ValueError(f"config.downstream.experiments {selection} select synthetic images per class; the real "
                         f"set ({real.source}) is multi-label. Leave them out for multi-label tasks.")

    def relabelled(sets):
        return None if sets is None else [labeled.relabel(x, spec) for x in sets]

    gan = None  # the GAN config of the per-fold GANs, when the study trains them
    if synthetic is None and opts.gan_config and any(e in SYNTHETIC_ARMS for e in opts.experiments):
        gan = fold_gans.load_gan_config(opts.gan_config, opts.gan_overrides)
        fold_gans.check_compatible(gan, raw, opts.gan_config)
    elif synthetic is not None and opts.gan_config:
        log.info("--synthetic %s given: config.downstream.gan_config=%r is not used.", synthetic, opts.gan_config)
    syn_paths, dp_paths = _fold_sources(synthetic, k), _fold_sources(synthetic_dp, k)
    syn_raw, syn_dp_raw = _load_sources(syn_paths, raw, opts), _load_sources(dp_paths, raw, opts)
    syn, syn_dp = relabelled(syn_raw), relabelled(syn_dp_raw)
    per_fold = {name: paths is not None and len(set(paths)) > 1 for name, paths in
                (("synthetic", syn_paths), ("synthetic_dp", dp_paths))}
    for name, src, path in (("synthetic", syn, synthetic), ("synthetic_dp", syn_dp, synthetic_dp)):
        if src is None or opts.real_split == "test":
            continue
        if not per_fold[name]:
            warnings.append(f"One {name} source ({path}) serves every fold: if its GAN was trained on all real "
                            "images, the test folds leaked into it and (b)-(f) may be optimistic. Leave out "
                            "--synthetic (one GAN per fold is trained, config.downstream.gan_config) or give "
                            f"{path}/fold0..fold{k - 1} with one seed for a leak-free study.")
        elif len(seeds) > 1:
            warnings.append(f"The {name} sources {path}/fold0..fold{k - 1} serve every seed {seeds}, but the folds "
                            f"are redrawn per seed: at most seed {seeds[0]}'s test folds are unseen by them (if "
                            f"they were trained on its folds); the others leaked. Use --config.downstream.seeds="
                            f"({seeds[0]},) or leave out --synthetic (one GAN per (fraction, seed, fold)).")
    available = {"real": True, "real+synthetic_dp": syn_dp is not None,
                 **{e: syn is not None or gan is not None for e in SYNTHETIC_ARMS}}
    names = [e for e in opts.experiments if available[e]]
    skipped = [e for e in opts.experiments if not available[e]]
    if "real" not in names:
        raise ValueError("config.downstream.experiments must include 'real' (the baseline every other is compared to).")
    order = ["real"] + [e for e in names if e != "real"]  # (e) filters with (a)'s classifier

    mesh = sharding.make_mesh(config.get("mesh"))
    data_devices = mesh.shape[sharding.DATA_AXIS]
    n_seeds, kk = len(seeds), real.num_classes
    probs = {r: {e: np.zeros((n_seeds, len(real), kk), np.float32) for e in names} for r in fractions}
    fold_scores = {r: {e: np.zeros((n_seeds, k)) for e in names} for r in fractions}
    train_sizes: dict = {r: {e: [] for e in names} for r in fractions}
    seconds = {r: {e: 0.0 for e in names} for r in fractions}
    selected = {r: {key: np.zeros(kk, np.int64) for key in ("kept", "offered", "added", "short")} for r in fractions}
    real_sizes: dict = {r: [] for r in fractions}
    batches: dict = {r: [] for r in fractions}
    gan_runs: list[dict] = []
    diversity_rows: dict = {"synthetic": [], "synthetic_dp": []}
    splits_per_seed = [folds_lib.stratified_group_kfold(real.targets, real.groups, k, seed, multi_label=real.multi_label)
                       for seed in seeds]
    subsets = {(si, f): _fraction_subsets(raw, train_idx, fractions, seed, f)
               for si, seed in enumerate(seeds) for f, (train_idx, _) in enumerate(splits_per_seed[si])}
    # A shared source's synthetic-only training set depends on neither fold nor fraction: once per seed.
    syn_only_once = "synthetic" in names and syn is not None and not per_fold["synthetic"]
    per_run = sum(e != "synthetic" or not syn_only_once for e in names)
    total_runs = (len(fractions) * n_seeds * k * (per_run + (gan is not None))
                  + (n_seeds if syn_only_once else 0))
    shared_probs: dict[int, np.ndarray] = {}
    bar = tqdm(total=total_runs, desc="downstream", unit="run", dynamic_ncols=True,
               disable=config.train.get("quiet", False))
    try:
        for r in fractions:
            for si, seed in enumerate(seeds):
                for f, (_, test_idx) in enumerate(splits_per_seed[si]):
                    where = f"fraction {r:g}, seed {seed}, fold {f}"
                    sub = subsets[si, f][r]
                    train_real, test_real = real.subset(sub), real.subset(test_idx)
                    real_sizes[r].append(train_real.class_counts())
                    syn_f = pool = src_raw = None
                    if gan is not None:
                        bar.set_postfix_str(f"GAN {where}")
                        need = (int(learning_curve.balance_extra(train_real.class_counts()).max())
                                if "real+synthetic_balanced" in names else 0)
                        run_info, src_raw, drawn = _fold_gan_source(gan, out_dir, raw, sub, test_idx,
                                                                    (r, seed, f), opts, need)
                        gan_runs.append(run_info)
                        bar.update(1)
                        syn_f, pool = labeled.relabel(src_raw, spec), labeled.relabel(drawn, spec)
                    elif syn is not None:
                        src_raw, syn_f, pool = syn_raw[f], syn[f], syn[f]
                    if r == main:
                        if src_raw is not None:
                            diversity_rows["synthetic"].append((seed, f, src_raw, raw.subset(sub)))
                        if syn_dp_raw is not None:
                            diversity_rows["synthetic_dp"].append((seed, f, syn_dp_raw[f], raw.subset(sub)))
                    sets = {"real": train_real}
                    if syn_f is not None:
                        sets["real+synthetic"] = labeled.concat(train_real, syn_f)
                        sets["synthetic"] = syn_f
                        if "real+synthetic_balanced" in names:
                            extra = learning_curve.balance_extra(train_real.class_counts())
                            pick, have = learning_curve.first_per_class(pool.targets, extra)
                            selected[r]["added"] += pool.subset(pick).class_counts()
                            selected[r]["short"] += np.maximum(extra - have, 0)
                            sets["real+synthetic_balanced"] = labeled.concat(train_real, pool.subset(pick))
                    if syn_dp is not None:
                        sets["real+synthetic_dp"] = labeled.concat(train_real, syn_dp[f])
                    smallest = min(len(sets[e]) for e in names if e in sets and not (e == "synthetic" and syn_only_once))
                    batch = learning_curve.fitted_batch(int(config.train.batch_size), smallest, data_devices,
                                                        f"The classifier's training set ({where})")
                    batches[r].append(batch)
                    state_real = None
                    for e in order:
                        if e == "synthetic" and syn_only_once:
                            if si not in shared_probs:  # the training set does not depend on fold or fraction
                                t = time.perf_counter()
                                once = learning_curve.fitted_batch(int(config.train.batch_size), len(syn[0]),
                                                                   data_devices, "The synthetic-only training set")
                                state = classifier.fit(_run_config(config, seed * 1000 + 999, once), None, syn[0],
                                                       mesh=mesh)
                                shared_probs[si] = classifier.predict(config, state, real.images)
                                seconds[r][e] += time.perf_counter() - t
                                bar.update(1)
                            p = shared_probs[si][test_idx]
                            probs[r][e][si, test_idx] = p
                            if f == 0:  # one run per seed, shared by its folds and fractions
                                train_sizes[r][e].append(len(syn[0]))
                        else:
                            t = time.perf_counter()
                            if e == "real+synthetic_filtered":
                                keep = learning_curve.filter_keep(classifier.predict(config, state_real, syn_f.images),
                                                                  syn_f.targets, opts.filter_threshold)
                                kept = syn_f.subset(np.flatnonzero(keep))
                                selected[r]["kept"] += kept.class_counts()
                                selected[r]["offered"] += syn_f.class_counts()
                                sets[e] = labeled.concat(train_real, kept)
                            bar.set_postfix_str(f"{e} {where}")
                            log.info("Classifier %s (%s): %d training images %s, batch %d.", e, where, len(sets[e]),
                                     sets[e].class_counts().tolist(), batch)
                            state = classifier.fit(_run_config(config, seed * 1000 + f, batch), None, sets[e], mesh=mesh)
                            if e == "real":
                                state_real = state
                            p = classifier.predict(config, state, test_real.images)
                            probs[r][e][si, test_idx] = p
                            train_sizes[r][e].append(len(sets[e]))
                            seconds[r][e] += time.perf_counter() - t
                            bar.update(1)
                        fold_scores[r][e][si, f] = _score(test_real, p)
    finally:
        bar.close()

    per_fraction = {}
    for r in fractions:
        results = {e: _summarise(e, probs[r][e], fold_scores[r][e], real, opts, train_sizes[r][e], seconds[r][e])
                   for e in names}
        per_fraction[r] = (results, {f"{e} vs real": _compare("real", e, probs[r], fold_scores[r], real, results, opts)
                                     for e in names if e != "real"})
    results, all_comparisons = per_fraction[main]
    comparisons = {key: c for key, c in all_comparisons.items() if c["treatment"] != "synthetic"}
    sources = _sources(synthetic, synthetic_dp, per_fold, gan is not None, seeds)
    report = {
        "task": {"class_names": list(real.class_names), "multi_label": real.multi_label, "source": real.source,
                 "num_unknown_labels": 0 if real.mask is None else int((real.mask == 0).sum()),
                 "num_real": len(real), "class_counts": real.class_counts().tolist(),
                 "num_groups": int(len(np.unique(real.group_ids()))), "image_shape": list(real.image_shape)},
        "design": {"real_split": opts.real_split, "leak_free": _leak_free(opts.real_split, sources),
                   "synthetic_design": sources.get("synthetic", {}).get("design", "no synthetic source"),
                   "num_folds": k, "seeds": seeds, "steps": int(config.train.steps),
                   "batch_size": int(config.train.batch_size), "class_weighting": config.loss.class_weighting,
                   "synthetic_per_class": int(opts.synthetic_per_class),
                   "synthetic_per_class_means": ("images per distinct label vector" if real.multi_label
                                                 else "images per class"),
                   "bootstrap_samples": int(opts.bootstrap_samples),
                   "test_sizes": [[len(t) for _, t in s] for s in splits_per_seed],
                   "primary_test": "exact McNemar on seed-averaged out-of-fold predictions",
                   "real_fractions": list(fractions), "main_fraction": main,
                   "filter_threshold": opts.filter_threshold,
                   "gan": None if gan is None else {
                       "config": opts.gan_config, "overrides": list(opts.gan_overrides), "trainer": gan.trainer,
                       "steps": int(gan.train.steps), "batch_size": int(gan.train.batch_size),
                       "workdirs": "gans/frac{r}/seed{s}/fold{f} (fold_gan.json: training indices)",
                       "eval_data": "none: no GAN sees its test fold"}},
        "synthetic": (_describe_gans(out_dir, gan_runs, diversity_rows["synthetic"], raw) if gan is not None else
                      _describe(synthetic, syn, per_fold["synthetic"], _source_diversity(
                          diversity_rows["synthetic"] if syn is not None else None, raw))),
        "synthetic_dp": _describe(synthetic_dp, syn_dp, per_fold["synthetic_dp"], _source_diversity(
            diversity_rows["synthetic_dp"] if syn_dp is not None else None, raw)),
        "experiments": results,
        "skipped": {e: "no synthetic source given" for e in skipped},
        "comparisons": comparisons,
        "reference": _reference(opts, results),
        "warnings": warnings + [f"Fraction {r:g}: the synthetic images of class {n!r} fell short of class balance "
                                f"by {int(s)} (over seeds x folds); raise config.downstream.synthetic_per_class."
                                for r in fractions for n, s in zip(real.class_names, selected[r]["short"]) if s],
        "config": config.to_dict(),
    }
    report["figures"] = _write_figures(out_dir, probs[main], results, real)
    report["learning_curve"] = _learning_curve(out_dir, per_fraction, names, real, real_sizes, batches, selected,
                                               gan_runs, opts)
    report["seconds"] = time.perf_counter() - t_start
    write_report(out_dir, report)
    return report


def _fold_gan_source(gan: ml_collections.ConfigDict, out_dir: str, raw: labeled.LabeledSet,
                     sub: np.ndarray, test_idx: np.ndarray, at: tuple[float, int, int], opts: Options,
                     need: int) -> tuple[dict, labeled.LabeledSet, labeled.LabeledSet]:
    """Trains (or reuses) the GAN of (fraction, seed, fold) `at` on raw[sub] and draws from it:
    (its run summary, `synthetic_per_class` images per source class for (b)/(c)/(e), the whole draw of
    max(synthetic_per_class, need) per class that (f) tops classes up from)."""
    r, seed, f = at
    where = f"fraction {r:g}, seed {seed}, fold {f}"
    wd = fold_gans.workdir_for(out_dir, r, seed, f)
    size = fold_gans.run_size(gan, raw.subset(sub))
    record = fold_gans.train(fold_gans.run_config(gan, seed * 1000 + f, size, f"fold GAN ({where})"), wd,
                             raw.subset(sub), sub, {"fraction": r, "seed": seed, "fold": f,
                                                    "real_split": opts.real_split, "test_indices": test_idx.tolist(),
                                                    "gan_config": opts.gan_config,
                                                    "gan_overrides": list(opts.gan_overrides)})
    info = {"fraction": r, "seed": seed, "fold": f, "workdir": os.path.relpath(wd, out_dir),
            **{key: record[key] for key in ("reused", "steps", "batch_size", "num_images", "class_counts", "seconds")}}
    drawn = synthetic_lib.load(wd, raw, max(opts.synthetic_per_class, need), opts.synthetic_seed)
    first, _ = learning_curve.first_per_class(drawn.targets, [opts.synthetic_per_class] * raw.num_classes)
    return info, drawn.subset(first), drawn


def _sources(synthetic: str | None, synthetic_dp: str | None, per_fold: dict, own_gans: bool,
             seeds: list[int]) -> dict:
    """{'synthetic' / 'synthetic_dp': {'design', 'leak_free'}} for each synthetic source in use."""
    out = {}
    if own_gans:
        out["synthetic"] = {"design": "one GAN per (fraction, seed, fold), trained on that fold's training images only",
                            "leak_free": "yes: one GAN per (fraction, seed, fold), trained on that fold's training "
                                         "images only (indices in gans/.../fold_gan.json); none saw its test fold"}
    for name, path in (("synthetic", synthetic), ("synthetic_dp", synthetic_dp)):
        if path is None:
            continue
        if not per_fold[name]:
            out[name] = {"design": "one shared source",
                         "leak_free": "no: one synthetic source serves every fold; its GAN may have seen the test folds"}
        elif len(seeds) == 1:
            out[name] = {"design": "one source per fold (fold<f>), reused for every fraction",
                         "leak_free": f"only if {path}/fold<f> was trained on nothing but the training part of "
                                      f"seed {seeds[0]}'s fold f"}
        else:
            out[name] = {"design": "one source per fold (fold<f>), reused for every seed and fraction",
                         "leak_free": f"no: folds are redrawn per seed, so seeds {seeds[1:]} test images the fold<f> "
                                      f"GANs trained on (at best seed {seeds[0]} is leak-free)"}
    return out


def _leak_free(real_split: str, sources: dict) -> str:
    """How (or whether) the study keeps the test folds away from the GANs that made the synthetic images."""
    if real_split == "test":
        return ("yes: the real images are the held-out test split, which no GAN trained on the 'train' split "
                "saw; cross-validation runs within it")
    texts = {name: s["leak_free"] for name, s in sources.items()}
    if not texts:
        return "yes: no synthetic source"
    if len(texts) == 1:
        return next(iter(texts.values()))
    verdict = ("no" if any(t.startswith("no") for t in texts.values()) else
               "yes" if all(t.startswith("yes") for t in texts.values()) else "only if")
    return f"{verdict}: " + "; ".join(f"{name}: {t}" for name, t in texts.items())


def _source_diversity(rows: list[tuple] | None, raw: labeled.LabeledSet) -> dict | None:
    """Per-class pixel diversity ratio of a synthetic source against the real training images of each
    (seed, fold); rows: (seed, fold, source set, real training set), source classes. None without a source."""
    if rows is None:
        return None
    if raw.multi_label:
        return {"skipped": "multi-label task: no single class per image to measure diversity within"}
    out_rows = []
    for seed, f, src, train in rows:
        out = diversity.class_diversity(src.images, src.targets, train.images, train.targets, raw.class_names,
                                        num_bootstrap=0)
        out_rows.append({"seed": seed, "fold": f, "diversity_ratio": out["diversity_ratio"],
                         "per_class": {n: {key: v[key] for key in ("ratio", "synthetic", "real", "num_synthetic",
                                                                   "num_real")}
                                       for n, v in out["per_class"].items()}})
    per_class = {}
    for name in raw.class_names:
        ratios = np.array([r["per_class"][name]["ratio"] for r in out_rows])
        finite = ratios[np.isfinite(ratios)]
        per_class[name] = {
            "ratio": float(finite.mean()) if len(finite) else float("nan"),
            "ratio_range": [float(finite.min()), float(finite.max())] if len(finite) else [float("nan")] * 2,
            "num_synthetic": float(np.mean([r["per_class"][name]["num_synthetic"] for r in out_rows])),
            "num_real": float(np.mean([r["per_class"][name]["num_real"] for r in out_rows]))}
    means = [v["ratio"] for v in per_class.values() if np.isfinite(v["ratio"])]
    return {"space": "pixels", "against": "real training images of the same class in each (seed, fold)",
            "aggregate": "mean over folds x seeds (range: min, max)", "classes": "source classes, before "
            "config.data.relabel", "per_class": per_class,
            "diversity_ratio": float(np.mean(means)) if means else float("nan"), "per_fold": out_rows}


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


def _describe_gans(out_dir: str, gan_runs: list[dict], rows: list[tuple], raw: labeled.LabeledSet) -> dict:
    """The 'synthetic' section when the study trained its own GANs (largest fraction's sources)."""
    sets = [src for _, _, src, _ in rows]
    return {"path": os.path.join(out_dir, "gans"), "kind": "workdir", "per_fold": True,
            "per": "(fraction, seed, fold)", "num_images": [len(s) for s in sets],
            "class_counts": sets[0].class_counts().tolist() if sets else [],
            "from": f"{len(gan_runs)} fold GANs ({sum(g['reused'] for g in gan_runs)} reused)",
            "diversity": _source_diversity(rows, raw) if sets else None}


def _learning_curve(out_dir: str, per_fraction: dict, names: list[str], real: labeled.LabeledSet, real_sizes: dict,
                    batches: dict, selected: dict, gan_runs: list[dict], opts: Options) -> dict:
    """report['learning_curve']: per fraction and experiment the curve metrics with CIs and the paired
    comparisons against (a); writes learning_curve.png."""
    rows = []
    for r, (results, comparisons) in per_fraction.items():
        sizes = np.asarray(real_sizes[r]).sum(1)
        exps = {}
        for e in names:
            res = results[e]
            vs = comparisons.get(f"{e} vs real")
            exps[e] = {"description": EXPERIMENTS[e],
                       "metrics": learning_curve.curve_scalars(res["metrics"], real.multi_label),
                       "ci95": {key: res["ci95"][src] for key, src in (
                           ("sensitivity", "macro_sensitivity"), ("specificity", "macro_specificity"),
                           ("balanced_accuracy", "balanced_accuracy"), ("macro_auc", "macro_auc"),
                           ("accuracy", "accuracy"))},
                       "train_size_mean": res["train_size_mean"], "seconds": res["seconds"],
                       "vs_real": None if vs is None else {
                           "mcnemar": vs["mcnemar"], "paired_bootstrap": vs["paired_bootstrap"],
                           "permutation": vs["permutation"]}}
        sel = selected[r]
        rows.append({
            "fraction": r, "real_train_images": {"mean": float(sizes.mean()), "min": int(sizes.min()),
                                                 "max": int(sizes.max())},
            "real_class_counts_mean": np.asarray(real_sizes[r]).mean(0).tolist(),
            "classifier_batch_size": [int(min(batches[r])), int(max(batches[r]))],
            "experiments": exps,
            "filter": None if "real+synthetic_filtered" not in names else {
                "threshold": opts.filter_threshold, "totals_over": "seeds x folds",
                "per_class": {n: {"kept": int(a), "offered": int(b)} for n, a, b in
                              zip(real.class_names, sel["kept"], sel["offered"])},
                "kept": int(sel["kept"].sum()), "offered": int(sel["offered"].sum())},
            "balance": None if "real+synthetic_balanced" not in names else {
                "totals_over": "seeds x folds",
                "per_class_added": dict(zip(real.class_names, sel["added"].tolist())),
                "per_class_short": dict(zip(real.class_names, sel["short"].tolist()))}})
    figure = "learning_curve.png"
    series = {}
    for e in names:
        for key in ("balanced_accuracy", "macro_auc"):
            pts = [(row["fraction"], row["experiments"][e]["metrics"][key], *row["experiments"][e]["ci95"][key])
                   for row in rows]
            series.setdefault(e, {})[key] = pts
    plots.save(os.path.join(out_dir, figure), plots.learning_curve_figure(
        [(EXPERIMENTS[e], series[e]["balanced_accuracy"], series[e]["macro_auc"]) for e in names]))
    return {"fractions": [row["fraction"] for row in rows], "experiments": list(names),
            "metrics": list(learning_curve.CURVE_METRICS),
            "subsets": "each (seed, fold)'s training part cut to the fraction by whole groups, stratified by source "
                       "class (>= 1 per class), nested across fractions, seeded by (seed, fold)",
            "per_fraction": rows, "gans": gan_runs, "figure": figure}


def _reference(opts: Options, results: dict) -> dict | None:
    ref = REFERENCES.get(opts.reference)
    if ref is None:
        return None
    rows = {}
    for e, theirs in ref.items():
        ours = results.get(e)
        rows[e] = {"theirs": theirs, "ours": None if ours is None else {
            "sensitivity": ours["metrics"]["macro_sensitivity"], "specificity": ours["metrics"]["macro_specificity"],
            "accuracy": ours["metrics"]["accuracy"],
            "sensitivity_ci95": ours["ci95"]["macro_sensitivity"], "specificity_ci95": ours["ci95"]["macro_specificity"]}}
    return {"name": opts.reference, "citation": "Frid-Adar et al., Neurocomputing 321 (2018) 321-331",
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


def _diff(d: dict | None) -> str:
    """'+1.2 [-0.5, +3.0]*' (points; * = the paired bootstrap interval excludes 0) or ''."""
    if not d or d.get("difference") is None:
        return ""
    lo, hi = d["ci95"]
    ci = "" if lo is None or hi is None else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{100 * d['difference']:+.1f}{ci}{'*' if d['excludes_zero'] else ''}"


def _learning_curve_md(report: dict) -> list[str]:
    """The fraction x experiment table, the paired differences against (a) and the selection counts."""
    lc = report.get("learning_curve")
    if not lc:
        return []
    fracs = ", ".join(f"{r:g}" for r in lc["fractions"])
    lines = ["## Learning curve", "",
             f"Real fractions {fracs} ({lc['subsets']}); every classifier (and fold GAN) of a (fraction, seed, fold) "
             "trains on that subset and is tested on the whole held-out fold. Percentages on pooled out-of-fold "
             "predictions [95 % bootstrap interval]; differences against (a) at the same fraction in points, with "
             "a paired bootstrap interval (* = excludes 0), and the exact McNemar p.", "",
             "| real fraction | real images | experiment | sensitivity | specificity | balanced accuracy | macro AUC "
             "| balanced accuracy vs (a) | macro AUC vs (a) | McNemar p |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in lc["per_fraction"]:
        for e, x in row["experiments"].items():
            m, ci, vs = x["metrics"], x["ci95"], x["vs_real"] or {}
            boot = vs.get("paired_bootstrap") or {}
            p = vs.get("mcnemar", {}).get("p_value")
            lines.append(f"| {row['fraction']:g} | {row['real_train_images']['mean']:.0f} | {x['description']} | "
                         + " | ".join(f"{_pct(m[k])}{_ci(ci.get(k))}" for k in
                                      ("sensitivity", "specificity", "balanced_accuracy", "macro_auc"))
                         + f" | {_diff(boot.get('balanced_accuracy'))} | {_diff(boot.get('macro_auc'))} | "
                         + ("" if p is None else f"{p:.3g}") + " |")
    lines.append("")
    for row in lc["per_fraction"]:
        if row.get("filter"):
            flt = row["filter"]
            lines.append(f"- Fraction {row['fraction']:g}, (e) filter at p >= {flt['threshold']:g}: kept "
                         f"{flt['kept']} of {flt['offered']} synthetic images (" + ", ".join(
                             f"{n} {v['kept']}/{v['offered']}" for n, v in flt["per_class"].items())
                         + "; totals over seeds x folds).")
        if row.get("balance"):
            lines.append(f"- Fraction {row['fraction']:g}, (f) class balance: added " + ", ".join(
                f"{n} {v}" for n, v in row["balance"]["per_class_added"].items())
                + " synthetic images (totals over seeds x folds).")
    if lc.get("gans"):
        g = lc["gans"]
        lines.append(f"- {len(g)} fold GANs ({sum(x['reused'] for x in g)} reused), {g[0]['steps']} steps each, in "
                     "gans/frac{r}/seed{s}/fold{f}.")
    return lines + ["", f"![learning curve]({lc['figure']})", ""]


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
              f"Real images from the '{design.get('real_split', 'train')}' split. Synthetic images: "
              f"{design.get('synthetic_design', 'not recorded')}. Leak-free: {design.get('leak_free', 'not recorded')}.",
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
        lines += ["## Paired tests against (a)", "", "| comparison | accuracy difference | balanced accuracy "
                  "difference [paired bootstrap] | McNemar exact p (a-only / b-only correct) | permutation p "
                  "(per-fold) |", "|---|---|---|---|---|"]
        for name, c in report["comparisons"].items():
            mc, pm = c["mcnemar"], c["permutation"]
            lines.append(f"| {EXPERIMENTS[c['treatment']]} vs {EXPERIMENTS[c['baseline']]} | "
                         f"{100 * c['difference']['accuracy']:+.1f} points | "
                         f"{_diff((c.get('paired_bootstrap') or {}).get('balanced_accuracy'))} | {mc['p_value']:.3g} "
                         f"({mc['a_only_correct']} / {mc['b_only_correct']}) | {pm['p_value']:.3g} |")
        lines += ["", "Primary test: exact (binomial) McNemar on the seed-averaged out-of-fold predictions, one "
                  "decision per real image. Secondary: paired sign-flip permutation test on per-(seed, fold) "
                  + ("macro AUC." if task["multi_label"] else "accuracy."), ""]
    lines += _learning_curve_md(report)
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


def write_report(out_dir: str, report: dict) -> None:
    """Writes out_dir/report.json and out_dir/report.md (each atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    clean = _clean(report)
    atomic_io.write_text(os.path.join(out_dir, "report.json"), json.dumps(clean, indent=1, sort_keys=False, allow_nan=False))
    atomic_io.write_text(os.path.join(out_dir, "report.md"), render_markdown(clean))


USAGE = ("usage: jaxmedgan evaluate downstream --config configs/downstream_liver.py --out DIR "
         "[--synthetic DIR_OR_WORKDIR] [--synthetic-dp DIR] [--gan-config PATH] [--gan-steps N] "
         "[--real-fractions 0.1,0.25,0.5,1.0] [--config.section.key=value ...]")
# Dashed spellings the docs use -> absl's underscored flag names.
DASHED = {"--synthetic-dp": "--synthetic_dp", "--gan-config": "--gan_config", "--gan-steps": "--gan_steps",
          "--real-fractions": "--real_fractions"}


def _undash(arg: str) -> str:
    name, sep, value = arg.partition("=")
    return DASHED.get(name, name) + sep + value


def _apply_flags(config: ml_collections.ConfigDict, gan_config: str | None, gan_steps: int | None,
                 real_fractions: str | None) -> None:
    """--gan-config / --gan-steps / --real-fractions into config.downstream (gan_steps: a train.steps override)."""
    d = config.downstream
    with d.unlocked():  # an older config may lack the keys
        if gan_config is not None:
            d.gan_config = gan_config
        if gan_steps is not None:
            if gan_steps < 1:
                raise ValueError(f"--gan-steps {gan_steps}: expected a positive number of GAN training steps.")
            d.gan_overrides = tuple(d.get("gan_overrides", ())) + (f"train.steps={gan_steps}",)
        if real_fractions is not None:
            d.real_fractions = learning_curve.parse_fractions(real_fractions, "--real-fractions "
                                                                              "(config.downstream.real_fractions)")


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a record comes (a captured stream may since have closed)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _log_study_progress() -> None:
    """The study's INFO lines (which GAN / classifier trains where, GANs reused) on stderr; every other
    jaxmedgan logger keeps its level (the trainers' per-run parameter tables stay hidden)."""
    top = logging.getLogger("jaxmedgan")
    if not any(getattr(h, "_jaxmedgan", False) for h in top.handlers):  # training.setup_logging's marker
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._jaxmedgan = True
        top.addHandler(handler)
        top.propagate = False
    for name in (__name__, "jaxmedgan.studies.fold_gans"):
        logging.getLogger(name).setLevel(logging.INFO)


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
    args = [_undash(a) for a in args]
    sys_argv = ["jaxmedgan evaluate downstream"] + args
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Downstream config (configs/downstream_*.py).",
                                    flag_values=fv, lock_config=True, sys_argv=sys_argv)
    flags.DEFINE_string("synthetic", None, "GAN workdir, samples.npz (or its directory) or exported folder "
                        "(default: one GAN per (fraction, seed, fold), config.downstream.gan_config).", flag_values=fv)
    flags.DEFINE_string("synthetic_dp", None, "Synthetic images of a DP-trained GAN (same kinds).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output directory for report.md, report.json, PNGs (and gans/).", flag_values=fv)
    flags.DEFINE_string("gan_config", None, "GAN config trained per (fraction, seed, fold) without --synthetic "
                        "(overrides config.downstream.gan_config; '' = none).", flag_values=fv)
    flags.DEFINE_integer("gan_steps", None, "The fold GANs' train.steps (appended to config.downstream.gan_overrides).",
                         flag_values=fv)
    flags.DEFINE_string("real_fractions", None, "Comma-separated shares of each training fold, e.g. 0.1,0.25,0.5,1.0 "
                        "(overrides config.downstream.real_fractions).", flag_values=fv)
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
        _apply_flags(config, fv.gan_config, fv.gan_steps, fv.real_fractions)
        _log_study_progress()
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
    lc = report["learning_curve"]
    if len(lc["fractions"]) > 1:
        for row in lc["per_fraction"]:
            print(f"fraction {row['fraction']:g}: balanced accuracy " + ", ".join(
                f"{e} {_pct(x['metrics']['balanced_accuracy'])}%" for e, x in row["experiments"].items()))
    print(f"Leak-free: {report['design']['leak_free']}")
    print(f"Report: {os.path.join(fv.out, 'report.md')}")
    return 0
