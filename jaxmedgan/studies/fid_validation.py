"""Does FID-domain rank corruptions of real X-rays monotonically? (Heusel et al. 2017, Fig. 1-2)

Real phantom radiographs (the held-out seed, so the domain classifier never saw them) are split
into two disjoint sets: a reference set A and a test set B. B is corrupted at increasing
strength and FID(A, corrupted B) is measured with the domain classifier's features; strength 0
gives the finite-sample baseline FID(A, B). Corruptions (images in [-1, 1], lengths scale with
size / 64 px):

  noise   additive Gaussian noise, std sigma in display units, clipped to [-1, 1]
  blur    Gaussian blur, sigma in px at 64 px (scipy.ndimage.gaussian_filter, reflect)
  swirl   skimage.transform.swirl about the centre (radius 2 x size), angle `strength` rad at the centre
  mix     a fraction of B replaced by images of another source (lateral spine phantoms, or
          samples of a GAN workdir: "mixing with generated images")

    python -m jaxmedgan.studies.fid_validation --classifier runs/classifier_chest \\
        --num 400 --out runs/fid_validation

writes OUT/fid_validation.json and OUT/fid_validation.md (the table, with a monotonic yes/no
per corruption).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from jaxmedgan import checkpointing, sampling, trainers
from jaxmedgan.data import chest_phantoms, spine_phantoms
from jaxmedgan.evaluators import features, quality
from jaxmedgan.studies import quality_cli

log = logging.getLogger(__name__)

STRENGTHS = {
    "noise": (0.0, 0.05, 0.1, 0.2, 0.4),   # std, display units ([-1, 1] range)
    "blur": (0.0, 0.5, 1.0, 2.0, 3.0),     # sigma, px at 64 px
    "swirl": (0.0, 0.5, 1.0, 2.0, 4.0),    # rad at the centre
    "mix": (0.0, 0.1, 0.25, 0.5, 0.75),    # fraction of images from the other source
}


def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """x [N,H,W,C] + N(0, sigma²), clipped to [-1, 1]."""
    return np.clip(x + sigma * rng.standard_normal(x.shape).astype(np.float32), -1.0, 1.0)


def gaussian_blur(x: np.ndarray, sigma_px64: float) -> np.ndarray:
    """Blur over H, W of x [N,H,W,C] with sigma = sigma_px64 * H / 64 px."""
    if sigma_px64 == 0:
        return x.copy()
    s = sigma_px64 * x.shape[1] / 64
    return ndimage.gaussian_filter(x, sigma=(0, s, s, 0), mode="reflect").astype(np.float32)


def swirl(x: np.ndarray, strength: float) -> np.ndarray:
    """skimage swirl of each image of x [N,H,W,C] about its centre.

    skimage's `radius` r gives an angle strength * exp(-rho ln2 / (r / 5)): r = 2 x size makes the
    twist fall to 1/e at 0.28 x size from the centre, so the whole image swirls.
    """
    from skimage import transform

    if strength == 0:
        return x.copy()
    out = np.empty_like(x)
    centre = ((x.shape[2] - 1) / 2, (x.shape[1] - 1) / 2)  # (col, row) of the middle of the pixel grid
    for i in range(len(x)):
        for c in range(x.shape[-1]):
            out[i, ..., c] = transform.swirl(x[i, ..., c], centre, strength=strength, radius=2 * x.shape[1],
                                             mode="reflect", preserve_range=True)
    return out


def mix(x: np.ndarray, fraction: float, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x [N,...] with round(fraction * N) random images replaced by the first images of `other`."""
    m = int(round(fraction * len(x)))
    if m > len(other):
        raise ValueError(f"Mixing {fraction:.0%} of {len(x)} images needs {m} other images; got {len(other)}.")
    out = x.copy()
    out[rng.choice(len(x), m, replace=False)] = other[:m]
    return out


def corrupt(name: str, x: np.ndarray, strength: float, *, other: np.ndarray | None, seed: int) -> np.ndarray:
    """Corruption `name` (noise | blur | swirl | mix) of x [N,H,W,C] at `strength`."""
    rng = np.random.default_rng(seed)
    if name == "noise":
        return gaussian_noise(x, strength, rng)
    if name == "blur":
        return gaussian_blur(x, strength)
    if name == "swirl":
        return swirl(x, strength)
    if name == "mix":
        if other is None:
            raise ValueError("The 'mix' corruption needs images of another source.")
        return mix(x, strength, other, rng)
    raise ValueError(f"Unknown corruption {name!r}; expected one of {sorted(STRENGTHS)}.")


def validate(reference: np.ndarray, test: np.ndarray, embed: Callable[[np.ndarray], np.ndarray], *,
             other: np.ndarray | None = None, strengths: dict[str, Sequence[float]] | None = None,
             seed: int = 0, kid_subset_size: int = 200) -> dict:
    """{"rows": [{corruption, strength, fid, kid}], "monotonic": {corruption: bool}, ...}.

    reference, test: disjoint real sets f32 [N,H,W,C] in [-1, 1]; embed: images -> features [N,D].
    "monotonic" is True when FID strictly increases with every strength step.
    """
    strengths = dict(strengths or STRENGTHS)
    if other is None:
        strengths.pop("mix", None)
    f_ref = embed(reference)
    rows, monotonic = [], {}
    for name, levels in strengths.items():
        fids = []
        for level in levels:
            f = embed(corrupt(name, test, level, other=other, seed=seed))
            value = quality.fid(f_ref, f)
            k_mean, k_std = quality.kid(f_ref, f, subset_size=kid_subset_size, num_subsets=20, seed=seed)
            rows.append({"corruption": name, "strength": float(level), "fid": value, "kid": k_mean,
                         "kid_std": k_std})
            fids.append(value)
            log.info("%s %.3g: FID %.4g, KID %.4g", name, level, value, k_mean)
        monotonic[name] = bool(all(b > a for a, b in zip(fids, fids[1:])))
    return {"rows": rows, "monotonic": monotonic, "num_reference": int(len(reference)),
            "num_test": int(len(test)), "feature_dim": int(f_ref.shape[1])}


def aggregate(runs: Sequence[dict]) -> dict:
    """Mean and sd over repeated `validate` results (same corruptions and strengths, new data/seeds).

    "monotonic" is judged on the mean FID; "monotonic_runs" counts the repeats that were monotonic.
    """
    first = runs[0]
    rows = []
    for i, r in enumerate(first["rows"]):
        fids = np.array([run["rows"][i]["fid"] for run in runs])
        kids = np.array([run["rows"][i]["kid"] for run in runs])
        rows.append({"corruption": r["corruption"], "strength": r["strength"], "fid": float(fids.mean()),
                     "fid_sd": float(fids.std(ddof=1)) if len(runs) > 1 else 0.0, "fids": fids.tolist(),
                     "kid": float(kids.mean()), "kid_sd": float(kids.std(ddof=1)) if len(runs) > 1 else 0.0})
    monotonic = {}
    for name in first["monotonic"]:
        means = [r["fid"] for r in rows if r["corruption"] == name]
        monotonic[name] = bool(all(b > a for a, b in zip(means, means[1:])))
    return {"rows": rows, "monotonic": monotonic,
            "monotonic_runs": {k: int(sum(run["monotonic"][k] for run in runs)) for k in first["monotonic"]},
            "repeats": len(runs), "num_reference": first["num_reference"], "num_test": first["num_test"],
            "feature_dim": first["feature_dim"]}


def render_markdown(result: dict, title: str = "FID-domain under corruptions") -> str:
    """The table of a `validate` (or `aggregate`) result: one row per corruption and strength."""
    units = {"noise": "std", "blur": "sigma px@64", "swirl": "rad", "mix": "fraction"}
    repeats = result.get("repeats", 1)
    sd = (lambda r, k: f" ± {r[k + '_sd']:.2g}") if repeats > 1 else (lambda r, k: "")
    head = (f"mean ± sd over {repeats} repeats (new real sets and corruption seeds)" if repeats > 1 else "one run")
    lines = [f"### {title}", "",
             f"{result['num_reference']} reference vs {result['num_test']} test images per run, {head}; "
             f"{result['feature_dim']}-d features. {result.get('description', '')}".strip(), "",
             "| corruption | strength | FID-domain | KID-domain (x10^3) |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        kid_sd = f" ± {1e3 * r['kid_sd']:.2g}" if repeats > 1 else ""
        lines.append(f"| {r['corruption']} | {r['strength']:g} {units.get(r['corruption'], '')} | "
                     f"{r['fid']:.4g}{sd(r, 'fid')} | {1e3 * r['kid']:.3g}{kid_sd} |")
    runs = result.get("monotonic_runs")
    lines += ["", "Monotonic (mean FID-domain strictly rises with every strength step): " +
              ", ".join(f"{k} {'yes' if v else 'NO'}" + (f" ({runs[k]}/{repeats} runs)" if runs else "")
                        for k, v in result["monotonic"].items()), ""]
    return "\n".join(lines)


def phantom_images(source: str, num: int, size: int, seed: int) -> np.ndarray:
    """num phantom X-rays f32 [num,size,size,1]: 'chest' (chest_phantoms) or 'spine' (spine_phantoms)."""
    if source == "chest":
        return chest_phantoms.generate(num, seed, size)[0]
    if source == "spine":
        k = len(spine_phantoms.CLASS_NAMES)
        counts = [num // k + (i < num % k) for i in range(k)]
        x = spine_phantoms.generate(counts, seed, size)[0]
        return x[np.random.default_rng(seed).permutation(len(x))]
    raise ValueError(f"Unknown phantom source {source!r}; expected 'chest' or 'spine'.")


def rank_checkpoints(workdir: str, extractor: features.Extractor, *, num: int, reals: str = "test",
                     seed: int = 0) -> dict:
    """FID-domain of every saved checkpoint of a GAN workdir against the same real images.

    Returns {"rows": [{"step", "fid_domain", + "level"/"alpha"/"kimg" for PGGAN}], "spearman_step_fid",
    "monotone_decreasing"}: FID-domain should fall as training proceeds (Segal et al.'s check that
    FID ranks checkpoints in training order). Samples use the same seed at every checkpoint.
    """
    from scipy import stats

    config = checkpointing.read_config(workdir)
    family = trainers.family(config.trainer)
    steps = sorted(checkpointing.manager(workdir, async_save=False).all_steps())
    if len(steps) < 2:
        raise ValueError(f"{workdir} holds {len(steps)} checkpoint(s); ranking needs at least 2 "
                         "(raise config.checkpoint.keep).")
    f_real = features.extract(extractor, quality_cli.real_images(config, num, reals, seed + 1))
    rows = []
    for step in steps:
        config, state, _ = sampling.restore_state(workdir, step)
        fake, _ = sampling.generate(config, state, family, num, None, seed)
        row = {"step": int(step), "fid_domain": quality.fid(f_real, features.extract(extractor, fake))}
        extra = getattr(state, "extra", None)
        if isinstance(extra, dict):  # PGGAN: where in the growing schedule this checkpoint is
            for key in ("level", "alpha", "images_seen"):
                if key in extra:
                    row[key] = float(np.asarray(extra[key]))
        rows.append(row)
    fids = [r["fid_domain"] for r in rows]
    rho = float(stats.spearmanr(steps, fids).statistic)
    return {"workdir": workdir, "features": extractor.description, "num": num, "reals": reals, "rows": rows,
            "spearman_step_fid": rho, "monotone_decreasing": bool(all(b < a for a, b in zip(fids, fids[1:])))}


def render_ranking(result: dict) -> str:
    """Markdown table of `rank_checkpoints`."""
    extra = [k for k in ("level", "alpha", "images_seen") if k in result["rows"][0]]
    lines = [f"FID-domain of the checkpoints of {result['workdir']} ({result['num']} samples vs "
             f"{result['reals']} reals; {result['features']})", "",
             "| step | " + " | ".join(extra + ["FID-domain"]) + " |", "|---:|" + "---:|" * (len(extra) + 1)]
    for r in result["rows"]:
        lines.append(f"| {r['step']} | " + " | ".join([f"{r[k]:g}" for k in extra] + [f"{r['fid_domain']:.4g}"]) + " |")
    lines += ["", f"Spearman(step, FID-domain) = {result['spearman_step_fid']:.3f}; strictly decreasing: "
              f"{'yes' if result['monotone_decreasing'] else 'no'}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmedgan.studies.fid_validation", description=__doc__.split("\n")[0])
    p.add_argument("--classifier", required=True, help="domain classifier workdir (trained on the source's train split)")
    p.add_argument("--source", default="chest", choices=("chest", "spine"), help="real phantom X-rays")
    p.add_argument("--num", type=int, default=400, help="images in each of the reference and test sets")
    p.add_argument("--mix-source", default="spine", help="'chest' | 'spine' phantoms, or a GAN workdir to mix in")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="independent runs (new real sets and seeds)")
    p.add_argument("--rank-workdir", default=None,
                   help="instead of corruptions: FID-domain of every checkpoint of this GAN workdir")
    p.add_argument("--reals", default="test", help="--rank-workdir: train | test | FILE.npz")
    args = p.parse_args(argv)
    if args.rank_workdir:
        result = rank_checkpoints(args.rank_workdir, features.domain(args.classifier), num=args.num,
                                  reals=args.reals, seed=args.seed)
        _write_report(args.out, "checkpoint_ranking", result, render_ranking(result))
        return 0

    extractor = features.domain(args.classifier)
    size = extractor.image_size

    embed = lambda x: features.extract(extractor, x)
    runs = []
    for r in range(args.repeats):
        seed = args.seed + 1000 * r
        # Held-out seeds: the classifier was trained on the TRAIN_SEED images.
        real = phantom_images(args.source, 2 * args.num, size, chest_phantoms.TEST_SEED + seed)
        if args.mix_source in ("chest", "spine"):
            other = phantom_images(args.mix_source, args.num, size, 777 + seed)
            mix_desc = f"{args.mix_source} phantoms"
        else:
            fake, step = quality_cli.draw_fakes(args.mix_source, args.num, seed)
            other = fake.astype(np.float32) / 127.5 - 1.0
            mix_desc = f"samples of {args.mix_source} (checkpoint {step})"
        runs.append(validate(real[:args.num], real[args.num:], embed, other=other, seed=seed))
    result = aggregate(runs)
    result["description"] = (f"Real {args.source} phantoms at {size} px (held-out seed); features: "
                             f"{extractor.description}; mix source: {mix_desc}.")
    _write_report(args.out, "fid_validation", result, render_markdown(result))
    return 0


def _write_report(out: str, stem: str, result: dict, markdown: str) -> None:
    """Writes out/<stem>.json and out/<stem>.md and prints the markdown."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(markdown)
    print(markdown)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
