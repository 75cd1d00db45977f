"""Privacy audits of a trained GAN: memorisation and membership inference.

Works for private and non-private runs alike, so users can see what DP buys.

* Memorisation: for N synthetic images, the L2 (pixel) distance to the nearest training image
  and to the nearest held-out real image. The training reference is a random subset of the same
  size as the held-out set, so both nearest-neighbour distances come from equally large sets:
  without memorisation the ratio d_train / d_heldout is centred near 1; ratios well below 1
  (synthetic images closer to training images than to unseen ones) indicate copying.
* Membership inference: can an attacker tell training images from held-out ones?
  - D-score attack: the discriminator's real/fake logit; training images tend to score higher.
  - distance attack: a real image's distance to its nearest synthetic image; members are closer.
  Reported as ROC AUC (0.5 = no leakage) computed by the Mann-Whitney statistic.
* Feature-space memorisation (with a feature extractor: `--classifier` or `--inception-weights`):
  the same nearest-neighbour ratios on unit-normalised features (`evaluators.features`), which
  also catch shifted or re-windowed copies that pixel L2 misses; grid of the closest pairs.
* Inversion (`--inversion-steps S` > 0): each of N training and N held-out images is projected
  onto the generator (`studies.inversion`: z with the shell prior, or StyleGAN2's W); a generator
  that reproduces its training images better than unseen ones has memorised them. Reported: the
  reconstruction distances of both sets, the membership-inference AUC of the attack 'smaller
  distance = member' with a bootstrap 95 % interval, and a grid of the training images the
  generator reproduces best (image | reconstruction).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmedgan import atomic_io, batching, sampling, trainers
from jaxmedgan import images as image_utils
from jaxmedgan.data import datasets, tfds_builders
from jaxmedgan.evaluators import features as features_lib
from jaxmedgan.evaluators import metrics as metrics_lib
from jaxmedgan.privacy import canaries, noise, plan, secret
from jaxmedgan.privacy.config import DPConfig
from jaxmedgan.studies import inversion


def nearest(queries: np.ndarray, refs: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """L2 distance f64 [N] and index int [N] of each query's nearest ref; inputs [N,...], [M,...]."""
    q = queries.reshape(len(queries), -1).astype(np.float64)
    r = refs.reshape(len(refs), -1).astype(np.float64)
    r2 = np.sum(r * r, axis=1)
    dist, idx = np.empty(len(q)), np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        block = q[s:s + chunk]
        d2 = np.sum(block * block, axis=1)[:, None] + r2[None, :] - 2.0 * block @ r.T
        j = np.argmin(d2, axis=1)
        idx[s:s + chunk] = j
        dist[s:s + chunk] = np.sqrt(np.maximum(d2[np.arange(len(block)), j], 0.0))
    return dist, idx


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score_pos > score_neg) + P(tie)/2: the ROC AUC by the Mann-Whitney U statistic."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        raise ValueError(f"roc_auc needs both classes; got {len(pos)} positive and {len(neg)} negative scores.")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    u = np.sum(ranks[: len(pos)]) - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def memorisation(synthetic: np.ndarray, train: np.ndarray, heldout: np.ndarray, seed: int = 0) -> dict:
    """Nearest-neighbour distances of synthetic images to (size-matched) train and held-out sets."""
    if synthetic.shape[1:] != train.shape[1:] or train.shape[1:] != heldout.shape[1:]:
        raise ValueError(f"Image shapes differ: synthetic {synthetic.shape[1:]}, train {train.shape[1:]}, "
                         f"held-out {heldout.shape[1:]}.")
    n = min(len(train), len(heldout))
    rng = np.random.default_rng(seed)
    train_ref = rng.choice(len(train), size=n, replace=False)
    held_ref = rng.choice(len(heldout), size=n, replace=False)
    d_train, i_train = nearest(synthetic, train[train_ref])
    d_held, _ = nearest(synthetic, heldout[held_ref])
    ratio = d_train / np.maximum(d_held, 1e-12)
    q = np.quantile(ratio, [0.01, 0.05, 0.25, 0.5, 0.75])
    return {
        "num_synthetic": int(len(synthetic)), "reference_size": int(n),
        "ratio_quantiles": {"p01": q[0], "p05": q[1], "p25": q[2], "p50": q[3], "p75": q[4]},
        "fraction_closer_to_train": float(np.mean(ratio < 1.0)),
        "mean_distance_train": float(np.mean(d_train)), "mean_distance_heldout": float(np.mean(d_held)),
        "_ratio": ratio, "_nearest_train": train_ref[i_train],
    }


def membership_inference(train: np.ndarray, heldout: np.ndarray, synthetic: np.ndarray,
                         d_score: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0) -> dict:
    """AUCs of the D-score and distance attacks for training (members) vs held-out reals."""
    n = min(len(train), len(heldout))
    rng = np.random.default_rng(seed)
    members = train[rng.choice(len(train), size=n, replace=False)]
    others = heldout[rng.choice(len(heldout), size=n, replace=False)]
    d_members, _ = nearest(members, synthetic)
    d_others, _ = nearest(others, synthetic)
    out = {"num_each": int(n), "distance_attack_auc": roc_auc(-d_members, -d_others)}
    if d_score is not None:
        out["d_score_attack_auc"] = roc_auc(np.asarray(d_score(members)), np.asarray(d_score(others)))
    return out


def auc_with_ci(member_scores: np.ndarray, other_scores: np.ndarray, *, num_bootstrap: int = 1000,
                seed: int = 0) -> dict:
    """ROC AUC of scores f [N] (members) vs [M] (others; higher = more member-like) with its
    percentile-bootstrap 95 % interval (images resampled with replacement; `metrics.bootstrap_ci`)."""
    pos, neg = np.asarray(member_scores, np.float64), np.asarray(other_scores, np.float64)
    scores, is_member = np.concatenate([pos, neg]), np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]

    def statistic(index: np.ndarray) -> float:
        m = is_member[index]
        if m.all() or not m.any():
            return float("nan")
        return roc_auc(scores[index][m], scores[index][~m])

    out = {"auc": roc_auc(pos, neg)}
    if num_bootstrap:
        lo, hi = metrics_lib.bootstrap_ci(statistic, np.arange(len(scores)), num_samples=num_bootstrap, seed=seed)[""]
        out["ci95"] = [lo, hi]
    return out


def feature_memorisation(extractor: features_lib.Extractor, synthetic: np.ndarray, train: np.ndarray,
                         heldout: np.ndarray, seed: int = 0) -> dict:
    """`memorisation` on the extractor's unit-normalised features of images f32 [N,H,W,C] in [-1, 1]."""

    def feats(x: np.ndarray) -> np.ndarray:
        f = features_lib.extract(extractor, x).reshape(len(x), -1).astype(np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    out = memorisation(feats(synthetic), feats(train), feats(heldout), seed)
    out["features"] = extractor.description
    return out


def inversion_membership(config: Any, state: Any, train: np.ndarray, train_labels: np.ndarray | None,
                         heldout: np.ndarray, heldout_labels: np.ndarray | None, *, steps: int, num: int = 64,
                         space: str | None = None, extractor: features_lib.Extractor | None = None, seed: int = 0,
                         num_bootstrap: int = 1000, num_best: int = 16) -> tuple[dict, np.ndarray]:
    """Inversion membership inference: N = min(num, #train, #held-out) images of each set, drawn
    at random (`seed`), projected for `steps` Adam steps (a conditional model with each image's own
    class: the attacker who holds a patient's image knows its diagnosis). Returns (report, uint8
    grid of the `num_best` best-reproduced training images, each | its reconstruction)."""
    n = min(num, len(train), len(heldout))
    if n < 1:
        raise ValueError(f"The inversion audit needs training and held-out images; got {len(train)} and {len(heldout)}.")
    rng = np.random.default_rng(seed)
    members, others = rng.choice(len(train), n, replace=False), rng.choice(len(heldout), n, replace=False)
    settings = inversion.Settings(space=space or inversion.default_space(config), steps=steps)
    projector = inversion.Projector(config, state, settings, extractor=extractor, seed=seed)
    class_mode = inversion.LABEL if projector.num_classes else None
    single = lambda y, idx: None if y is None or np.asarray(y).ndim != 1 else np.asarray(y)[idx]
    r_in = projector(train[members], single(train_labels, members), class_mode, indices=np.arange(n))
    r_out = projector(heldout[others], single(heldout_labels, others), class_mode, indices=np.arange(n, 2 * n))
    summary = lambda d: {"mean": float(np.mean(d)), "median": float(np.median(d))}
    best = np.argsort(r_in.distance, kind="stable")[:num_best]
    report = {
        "space": settings.space, "steps": steps, "num_each": int(n), "class_mode": class_mode,
        "features": None if extractor is None else extractor.description,
        "pixel_weight": settings.pixel_weight, "perceptual_weight": settings.perceptual_weight if extractor else 0.0,
        "distance_train": summary(r_in.distance), "distance_heldout": summary(r_out.distance),
        "pixel_mse_train": summary(r_in.pixel_mse), "pixel_mse_heldout": summary(r_out.pixel_mse),
        "initial_distance_train": summary(r_in.initial_distance),
        "initial_distance_heldout": summary(r_out.initial_distance),
        # Members are reproduced better: the attacker's score is minus the distance.
        "auc_distance": auc_with_ci(-r_in.distance, -r_out.distance, num_bootstrap=num_bootstrap, seed=seed),
        "auc_pixel_mse": auc_with_ci(-r_in.pixel_mse, -r_out.pixel_mse, num_bootstrap=num_bootstrap, seed=seed),
        "best_reproduced_train": [{"train_index": int(members[i]), "distance": float(r_in.distance[i]),
                                   "pixel_mse": float(r_in.pixel_mse[i])} for i in best],
    }
    pairs = np.concatenate([image_utils.to_uint8(train[members[best]]),
                            image_utils.to_uint8(r_in.reconstructions[best])], axis=2)
    return report, image_utils.grid(pairs, rows=max(1, -(-len(best) // 4)))


def canary_scores(config: Any, state: Any, step: int, workdir: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(scores f64 [K], in-coins bool [K], mechanism name) of a DP run's white-box canaries.

    Scores are the noised sums at the canaries' coordinates, accumulated over the run by D's noise
    transformation (the view the accountant grants an attacker); the in/out coins come from the
    run's secret in WORKDIR/private. For a run whose noise follows from the public seed
    (privacy.secure_rng=False) the attacker replays that noise from config.seed and subtracts it.
    """
    dp = DPConfig.from_config(config)
    held = noise.noise_state(state.d_opt_state)
    if held is None:
        raise ValueError(f"{workdir}: D's optimiser state holds no noise transformation; was it trained with DP?")
    scores = np.asarray(held.canary_scores, np.float64)
    run_secret = secret.load_or_create(workdir, secure=dp.secure_rng, seed=config.seed, resuming=True)
    in_coins = canaries.coins(run_secret.words, dp.canaries)
    mechanism = dp.break_mechanism or "correct"
    if run_secret.public:
        mechanism = "public_noise" if mechanism == "correct" else f"{mechanism}+public_noise"
        scores = scores - _replayed_canary_noise(dp, config.train.steps, state.d_params, run_secret, step)
    return scores, in_coins, mechanism


def canary_audit(config: Any, state: Any, step: int, workdir: str) -> dict | None:
    """The white-box canary audit of a DP run with `privacy.canaries` > 0 (None otherwise): the
    empirical epsilon lower bounds of `canary_scores` beside the accountant's epsilon."""
    dp = DPConfig.from_config(config)
    if not dp.enabled or not dp.canaries:
        return None
    scores, in_coins, mechanism = canary_scores(config, state, step, workdir)
    public = mechanism.endswith("public_noise")
    eps, delta_prime = plan.run_guarantee(config, step)
    report = canaries.audit(scores[in_coins], scores[~in_coins], epsilon=eps, delta=delta_prime)
    report.update(kind="white-box gradient canaries", mechanism=mechanism, steps=int(step),
                  canary_norm=dp.canary_norm,
                  attacker_view=("the sum over steps of the noised clipped-gradient sums (before the optimiser)"
                                 + (", minus the noise replayed from the public seed" if public else "")))
    return report


def d_scorer(config: Any, state: Any, family: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """D's real/fake logit f32 [N] of images [N,H,W,C] in [-1, 1] (`Family.discriminate`, jitted, in
    padded batches of 64); None when the family has no such score."""
    if family.discriminate is None:
        return None
    fn = jax.jit(lambda x: family.discriminate(config, state, x))
    return lambda x: batching.map_padded(fn, x, 64)


def input_canary_audit(config: Any, state: Any, step: int, workdir: str, family: Any, shape: tuple[int, int, int],
                       d_score: Callable[[np.ndarray], np.ndarray] | None = None, *, num_samples: int = 256,
                       seed: int = 0) -> list[dict] | None:
    """The input-space (black-box) canary audit of a DP run with `privacy.input_canaries` > 0 (None
    otherwise): one report per score, D's logit on each canary (if `d_score`, f32 [N] of images
    [N, H, W, C] in [-1, 1], is given) and minus the distance from each canary to its nearest of
    `num_samples` generated images (of the canary's class for a class-conditional G). Canary images
    and coins are regenerated from the run's secret (`canaries.input_canaries`, `shape` = [H, W, C])."""
    dp = DPConfig.from_config(config)
    if not dp.enabled or not dp.input_canaries:
        return None
    run_secret = secret.load_or_create(workdir, secure=dp.secure_rng, seed=config.seed, resuming=True)
    num_classes = config.model.get("num_classes", 0)
    images, labels, is_in = canaries.input_canaries(run_secret.words, dp.input_canaries, shape, num_classes)
    eps, delta_prime = plan.run_guarantee(config, step)
    reports = []
    if d_score is not None:
        scores = np.asarray(d_score(images), np.float64)
        reports.append({**canaries.audit(scores[is_in], scores[~is_in], epsilon=eps, delta=delta_prime),
                        "kind": "input-space canaries: D logit", "steps": int(step),
                        "attacker_view": "the final discriminator's real/fake logit on each canary (a checkpoint)"})
    distance = np.zeros(len(images))
    for c in range(max(num_classes, 1)):
        rows = labels == c
        if not rows.any():
            continue
        fake_u8, _ = sampling.generate(config, state, family, num_samples, c if num_classes else None, seed + c)
        distance[rows] = nearest(images[rows], fake_u8.astype(np.float32) / 127.5 - 1.0)[0]
    scores = -distance  # closer to a generated image = more likely in
    reports.append({**canaries.audit(scores[is_in], scores[~is_in], epsilon=eps, delta=delta_prime),
                    "kind": "input-space canaries: G nearest sample", "steps": int(step),
                    "num_samples_per_class": int(num_samples),
                    "attacker_view": f"{num_samples} samples of the released generator per class; a canary's "
                                     "score is minus its L2 distance to the nearest one"})
    return reports


def _replayed_canary_noise(dp: Any, steps: int, d_params: Any, run_secret: Any, step: int) -> np.ndarray:
    """f64 [K]: the noise the first `step` steps added at the canaries' coordinates, replayed from the
    (public) noise keys as anyone holding the config could: the run's own noise transformation
    (either mechanism, and its test-only breaks) fed zero gradients, whose canary scores are then
    the noise alone."""
    tx = noise.private(optax.identity(), dp, 1.0, steps)  # E[B] only scales what reaches the optimiser
    zeros = jax.tree_util.tree_map(jnp.zeros_like, d_params)
    no_canary = jnp.zeros((dp.canaries,), jnp.float32)
    advance = jax.jit(lambda s, key: tx.update(zeros, s, zeros, noise_key=key, canary_sum=no_canary)[1])
    state = tx.init(zeros)
    for t in range(step):
        state = advance(state, run_secret.noise_key(t))
    return np.asarray(noise.noise_state(state).canary_scores, np.float64)


def audit(workdir: str, out: str, *, num: int = 500, seed: int = 0, num_pairs: int = 16,
          extractor: features_lib.Extractor | None = None, inversion_steps: int = 0, inversion_num: int = 64,
          inversion_space: str | None = None, num_bootstrap: int = 1000) -> dict:
    """Runs the audits on the latest checkpoint of `workdir`; writes audit.json, audit.md and
    closest_pairs.png (synthetic | nearest training image, most train-like first) to `out`; with
    an `extractor` also feature_pairs.png (the same in feature space), with `inversion_steps` > 0
    also inversion_best.png (training image | reconstruction, best reproduced first)."""
    config, state, step = sampling.restore_state(workdir)
    family = trainers.family(config.trainer)
    data_dir = datasets.prepare(config)
    train, train_labels = tfds_builders.load_arrays(data_dir, config.data.source, "train")
    if "test" not in tfds_builders.split_names(data_dir, config.data.source):
        raise ValueError(f"The dataset in {data_dir} has no held-out 'test' split; the audit compares "
                         "training images with held-out ones (build image folders with a hold-out fraction).")
    heldout, heldout_labels = tfds_builders.load_arrays(data_dir, config.data.source, "test")
    synth_u8, _ = sampling.generate(config, state, family, num, None, seed)
    synthetic = synth_u8.astype(np.float32) / 127.5 - 1.0
    mem = memorisation(synthetic, train, heldout, seed)
    d_score = d_scorer(config, state, family)
    mia = membership_inference(train, heldout, synthetic, d_score, seed)
    ratio, nearest_train = mem.pop("_ratio"), mem.pop("_nearest_train")
    report = {"workdir": os.path.abspath(workdir), "checkpoint_step": int(step), "seed": seed,
              "dp_epsilon": plan.run_epsilon(config, int(step)),
              "dp_delta_prime": (plan.run_guarantee(config, int(step)) or (None, None))[1], "memorisation": mem,
              "membership_inference": mia, "canary_audit": canary_audit(config, state, int(step), workdir),
              "input_canary_audit": input_canary_audit(config, state, int(step), workdir, family, train.shape[1:],
                                                       d_score, seed=seed)}
    grids = {"closest_pairs.png": _pairs_grid(synth_u8, train, ratio, nearest_train, num_pairs)}
    report["feature_memorisation"] = None
    if extractor is not None:
        fmem = feature_memorisation(extractor, synthetic, train, heldout, seed)
        f_ratio, f_nearest = fmem.pop("_ratio"), fmem.pop("_nearest_train")
        report["feature_memorisation"] = fmem
        grids["feature_pairs.png"] = _pairs_grid(synth_u8, train, f_ratio, f_nearest, num_pairs)
    report["inversion"] = None
    if inversion_steps > 0:
        report["inversion"], grids["inversion_best.png"] = inversion_membership(
            config, state, train, train_labels, heldout, heldout_labels, steps=inversion_steps, num=inversion_num,
            space=inversion_space, extractor=extractor, seed=seed, num_bootstrap=num_bootstrap, num_best=num_pairs)
    _write(out, report, grids)
    return report


def _pairs_grid(synth_u8: np.ndarray, train: np.ndarray, ratio: np.ndarray, nearest_train: np.ndarray,
                num_pairs: int) -> np.ndarray:
    """uint8 grid of synthetic | nearest training image pairs, smallest ratio (most train-like) first."""
    order = np.argsort(ratio)[:num_pairs]
    pairs = np.stack([np.concatenate([synth_u8[i], image_utils.to_uint8(train[nearest_train[i]])], axis=1)
                      for i in order])
    return image_utils.grid(pairs, rows=max(1, len(order) // 4))


def _write(out: str, report: dict, grids: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(os.path.join(tmp, "audit.json"), "w") as f:
            json.dump(report, f, indent=2, default=float)
        with open(os.path.join(tmp, "audit.md"), "w") as f:
            f.write(_markdown(report))
        for name, image in grids.items():
            image_utils.save_png(os.path.join(tmp, name), image)

    atomic_io.write_dir(out, write, overwrite=True)


def _markdown(r: dict) -> str:
    m, a = r["memorisation"], r["membership_inference"]
    eps = "not private" if r["dp_epsilon"] is None else f"epsilon = {r['dp_epsilon']:.3g}"
    lines = [f"# Privacy audit of {r['workdir']} (step {r['checkpoint_step']}, {eps})", "",
             "## Memorisation (nearest-neighbour L2 distance in pixel space)", "",
             f"{m['num_synthetic']} synthetic images vs {m['reference_size']} training and "
             f"{m['reference_size']} held-out images.", "",
             "| d_train / d_heldout quantile | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in m["ratio_quantiles"].items()]
    lines += ["", f"Fraction of synthetic images closer to a training than to a held-out image: "
              f"{m['fraction_closer_to_train']:.3f} (about 0.5 without memorisation).", "",
              "## Membership inference (AUC; 0.5 = the attacker learns nothing)", "",
              "| attack | AUC |", "|---|---|", f"| distance to nearest synthetic | {a['distance_attack_auc']:.3f} |"]
    if "d_score_attack_auc" in a:
        lines.append(f"| discriminator score | {a['d_score_attack_auc']:.3f} |")
    lines += ["", "`closest_pairs.png`: synthetic | nearest training image, most train-like first.", ""]
    f = r.get("feature_memorisation")
    if f:
        lines += ["## Memorisation in feature space (nearest neighbours of unit-normalised features)", "",
                  f"Features: {f['features']}.", "", "| d_train / d_heldout quantile | value |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in f["ratio_quantiles"].items()]
        lines += ["", f"Fraction closer to a training image: {f['fraction_closer_to_train']:.3f} (about 0.5 "
                  "without memorisation). `feature_pairs.png`: synthetic | nearest training image in feature "
                  "space, most train-like first.", ""]
    lines += inversion_markdown(r.get("inversion"))
    lines += canary_markdown([r.get("canary_audit"), *(r.get("input_canary_audit") or [])])
    return "\n".join(lines)


def inversion_markdown(v: dict | None) -> list[str]:
    """The inversion audit's section of audit.md (empty when it did not run)."""
    if not v:
        return []
    ci = lambda a: (f"{a['auc']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]" if "ci95" in a else f"{a['auc']:.3f}")
    return ["## Is it copying? Reconstruction by GAN inversion", "",
            f"{v['num_each']} training and {v['num_each']} held-out images projected in {v['space']} "
            f"({v['steps']} Adam steps, class: {v['class_mode'] or 'unconditional'}; distance: pixel MSE"
            + (f" + perceptual on {v['features']}" if v["features"] else "") + ").", "",
            "| | training | held-out |", "|---|---:|---:|",
            f"| mean distance | {v['distance_train']['mean']:.4g} | {v['distance_heldout']['mean']:.4g} |",
            f"| median distance | {v['distance_train']['median']:.4g} | {v['distance_heldout']['median']:.4g} |",
            f"| mean pixel MSE | {v['pixel_mse_train']['mean']:.4g} | {v['pixel_mse_heldout']['mean']:.4g} |", "",
            f"Membership-inference AUC (smaller reconstruction distance = member; 0.5 = no leakage, "
            f"[bootstrap 95 % CI]): distance {ci(v['auc_distance'])}, pixel MSE {ci(v['auc_pixel_mse'])}.", "",
            "`inversion_best.png`: the training images the generator reproduces best | their reconstructions.", ""]


def canary_markdown(reports: list[dict | None]) -> list[str]:
    """The canary audits' section of audit.md, one row per canary kind (empty without canaries)."""
    reports = [c for c in reports if c]
    if not reports:
        return []
    lines = ["## Canary audit (empirical epsilon lower bounds, 95 % confidence)", ""]
    for c in reports:
        mechanism = f", mechanism '{c['mechanism']}'" if "mechanism" in c else ""
        lines.append(f"- {c['kind']}: {c['num_in']} in / {c['num_out']} out{mechanism}, {c['steps']} steps; "
                     f"attacker view: {c['attacker_view']}.")
    lines += ["", "| canaries | reported epsilon (delta') | one-run bound (cap for M) | one-run f-DP bound (cap for M) | "
              "AUROC | TPR at FPR 0.01 |", "|:---|---:|---:|---:|---:|---:|"]
    lines += [f"| {c['kind']} | {c['epsilon']:.3g} ({c['delta']:.2g}) | {c['epsilon_lower_bound']:.3g} "
              f"({c['max_provable_epsilon']:.3g}) | {c['epsilon_lower_bound_fdp']:.3g} "
              f"({c['max_provable_epsilon_fdp']:.3g}) | {c['auroc']:.3f} | {c['tpr_at_fpr_0_01']:.3f} |" for c in reports]
    return lines + ["", "A cap is the bound perfectly separated scores would give: the most this many canaries can show.", ""]


def audit_command(argv: list[str]) -> int:
    """`jaxmedgan privacy audit --workdir W [--num N] [--out DIR] [--seed S] [--classifier C | --inception-weights F]
    [--inversion-steps S --inversion-num N]`."""
    p = argparse.ArgumentParser(prog="jaxmedgan privacy audit", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--num", type=int, default=500, help="synthetic images to draw")
    p.add_argument("--out", default=None, help="output directory (default WORKDIR/audit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", choices=features_lib.KINDS, default=None,
                   help="feature-space nearest neighbours and the inversion's perceptual distance (default: "
                   "domain with --classifier, inception with --inception-weights, else neither)")
    p.add_argument("--classifier", default=None, help="classifier workdir (domain features)")
    p.add_argument("--inception-weights", default=None, help="converted FID Inception npz (inception features)")
    p.add_argument("--inversion-steps", type=int, default=0,
                   help="Adam steps of the inversion membership audit (0 = off)")
    p.add_argument("--inversion-num", type=int, default=64, help="training and held-out images to project (each)")
    p.add_argument("--inversion-space", choices=("z", "w", "w+"), default=None,
                   help="latent space of the inversion (default: w for StyleGAN2, else z)")
    args = p.parse_args(argv)
    try:
        if args.inversion_steps < 0 or args.inversion_num < 1:
            raise ValueError(f"--inversion-steps must be >= 0 and --inversion-num >= 1; got {args.inversion_steps} "
                             f"and {args.inversion_num}.")
        kind = args.features or ("domain" if args.classifier else "inception" if args.inception_weights else None)
        extractor = None if kind is None else features_lib.make(kind, classifier=args.classifier,
                                                                 inception_weights=args.inception_weights)
        report = audit(args.workdir, args.out or os.path.join(args.workdir, "audit"), num=args.num, seed=args.seed,
                       extractor=extractor, inversion_steps=args.inversion_steps, inversion_num=args.inversion_num,
                       inversion_space=args.inversion_space)
    except (FileNotFoundError, ValueError) as e:
        print(f"jaxmedgan privacy audit: error: {e}", file=sys.stderr)
        return 1
    print(_markdown(report))
    return 0
