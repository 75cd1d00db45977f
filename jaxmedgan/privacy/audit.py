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
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable

import numpy as np

from jaxmedgan import images as image_utils


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


def canary_audit(config: Any, state: Any, step: int, workdir: str) -> dict | None:
    """The white-box canary audit of a DP run with `privacy.canaries` > 0 (None otherwise).

    Scores are the noised sums at the canaries' coordinates, accumulated over the run by D's noise
    transformation (the view the accountant grants an attacker); the in/out coins come from the
    run's secret in WORKDIR/private. For a run whose noise follows from the public seed
    (privacy.secure_rng=False) the attacker replays that noise from config.seed and subtracts it.
    """
    import jax
    import jax.numpy as jnp

    from jaxmedgan.privacy import canaries, noise, plan, secret
    from jaxmedgan.privacy.config import DPConfig

    dp = DPConfig.from_config(config)
    if not dp.enabled or not dp.canaries:
        return None
    noise_states = [s for s in state.d_opt_state if isinstance(s, noise.NoiseState)]
    if not noise_states:
        raise ValueError(f"{workdir}: D's optimiser state holds no noise transformation; was it trained with DP?")
    scores = np.asarray(noise_states[0].canary_scores, np.float64)
    run_secret = secret.load_or_create(workdir, secure=dp.secure_rng, seed=config.seed, resuming=True)
    in_coins = canaries.coins(run_secret.words, dp.canaries)
    mechanism = dp.break_mechanism or "correct"
    if run_secret.public:
        mechanism = "public_noise" if mechanism == "correct" else f"{mechanism}+public_noise"
        tree = noise.joint(jax.tree_util.tree_map(jnp.zeros_like, state.d_params), jnp.zeros((dp.canaries,)))
        std = 0.0 if dp.break_mechanism == "no_noise" else dp.noise_multiplier * dp.l2_clip
        canary_noise = jax.jit(lambda key: noise.add_noise(tree, std, key)[1])  # the draw each step added
        scores = scores - sum(np.asarray(canary_noise(run_secret.noise_key(t)), np.float64) for t in range(step))
    eps, delta_prime = plan.run_guarantee(config, step)
    report = canaries.audit(scores[in_coins], scores[~in_coins], epsilon=eps, delta=delta_prime)
    report.update(kind="white-box gradient canaries", mechanism=mechanism, steps=int(step),
                  canary_norm=dp.canary_norm,
                  attacker_view=("the sum over steps of the noised clipped-gradient sums (before the optimiser)"
                                 + (", minus the noise replayed from the public seed" if run_secret.public else "")))
    return report


def audit(workdir: str, out: str, *, num: int = 500, seed: int = 0, num_pairs: int = 16) -> dict:
    """Runs both audits on the latest checkpoint of `workdir`; writes audit.json, audit.md and
    closest_pairs.png (synthetic | nearest training image, most train-like first) to `out`."""
    import jax

    from jaxmedgan import sampling, trainers
    from jaxmedgan.data import datasets, tfds_builders
    from jaxmedgan.privacy import plan

    config, state, step = sampling.restore_state(workdir)
    trainer = trainers.get(config.trainer)
    data_dir = datasets.prepare(config)
    train, _ = tfds_builders.load_arrays(data_dir, config.data.source, "train")
    if "test" not in tfds_builders.split_names(data_dir, config.data.source):
        raise ValueError(f"The dataset in {data_dir} has no held-out 'test' split; the audit compares "
                         "training images with held-out ones (build image folders with a hold-out fraction).")
    heldout, _ = tfds_builders.load_arrays(data_dir, config.data.source, "test")
    synth_u8, _ = sampling.generate(config, state, trainer, num, None, seed)
    synthetic = synth_u8.astype(np.float32) / 127.5 - 1.0
    mem = memorisation(synthetic, train, heldout, seed)
    d_score = None
    if hasattr(trainer, "discriminate"):
        fn = jax.jit(lambda x: trainer.discriminate(config, state, x))
        d_score = lambda x: np.concatenate([np.asarray(fn(x[i:i + 64])) for i in range(0, len(x), 64)])
    mia = membership_inference(train, heldout, synthetic, d_score, seed)
    ratio, nearest_train = mem.pop("_ratio"), mem.pop("_nearest_train")
    report = {"workdir": os.path.abspath(workdir), "checkpoint_step": int(step), "seed": seed,
              "dp_epsilon": plan.run_epsilon(config, int(step)),
              "dp_delta_prime": (plan.run_guarantee(config, int(step)) or (None, None))[1], "memorisation": mem,
              "membership_inference": mia, "canary_audit": canary_audit(config, state, int(step), workdir)}
    order = np.argsort(ratio)[:num_pairs]
    pairs = np.stack([np.concatenate([synth_u8[i], image_utils.to_uint8(train[nearest_train[i]])], axis=1)
                      for i in order])
    _write(out, report, image_utils.grid(pairs, rows=max(1, len(order) // 4)))
    return report


def _write(out: str, report: dict, pairs_grid: np.ndarray) -> None:
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".audit-", dir=parent)
    try:
        with open(os.path.join(tmp, "audit.json"), "w") as f:
            json.dump(report, f, indent=2, default=float)
        with open(os.path.join(tmp, "audit.md"), "w") as f:
            f.write(_markdown(report))
        image_utils.save_png(os.path.join(tmp, "closest_pairs.png"), pairs_grid)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    lines += canary_markdown(r.get("canary_audit"))
    return "\n".join(lines)


def canary_markdown(c: dict | None) -> list[str]:
    """The canary audit's section of audit.md (empty without canaries)."""
    if not c:
        return []
    return ["## Canary audit (empirical epsilon lower bounds, 95 % confidence)", "",
            f"{c['kind']}: {c['num_in']} in / {c['num_out']} out, mechanism '{c['mechanism']}', {c['steps']} steps; "
            f"attacker view: {c['attacker_view']}.", "",
            "| reported epsilon (delta') | one-run bound (cap for M) | one-run f-DP bound (cap for M) | "
            "AUROC | TPR at FPR 0.01 |", "|---:|---:|---:|---:|---:|",
            f"| {c['epsilon']:.3g} ({c['delta']:.2g}) | {c['epsilon_lower_bound']:.3g} "
            f"({c['max_provable_epsilon']:.3g}) | {c['epsilon_lower_bound_fdp']:.3g} "
            f"({c['max_provable_epsilon_fdp']:.3g}) | {c['auroc']:.3f} | {c['tpr_at_fpr_0_01']:.3f} |", "",
            "A cap is the bound perfectly separated scores would give: the most this many canaries can show.", ""]


def audit_command(argv: list[str]) -> int:
    """`jaxmedgan privacy audit --workdir W [--num N] [--out DIR] [--seed S]`."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="jaxmedgan privacy audit", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--num", type=int, default=500, help="synthetic images to draw")
    p.add_argument("--out", default=None, help="output directory (default WORKDIR/audit)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        report = audit(args.workdir, args.out or os.path.join(args.workdir, "audit"), num=args.num, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"jaxmedgan privacy audit: error: {e}", file=sys.stderr)
        return 1
    print(_markdown(report))
    return 0
