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

`periodic_metrics(config, eval_data)` gives training the same measurement every
`config.eval.quality_every` steps on the held-out arrays.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import tempfile
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from jaxmedgan import checkpointing, images, metric_writers
from jaxmedgan.evaluators import features, quality

log = logging.getLogger(__name__)
METRICS_FILE = os.path.join("eval", "metrics.json")


def draw_fakes(workdir: str, num: int, seed: int) -> tuple[np.ndarray, Any]:
    """(uint8 images [num,H,W,C], checkpoint step) from the latest checkpoint of a GAN workdir."""
    from jaxmedgan import sampling, trainers

    config = checkpointing.read_config(workdir)
    trainer = trainers.get(config.trainer)
    if config.trainer == "classifier":
        raise ValueError(f"{workdir} is a classifier workdir; --workdir must be a GAN workdir (pass the "
                         "classifier as --classifier).")
    if hasattr(trainer, "draw"):  # map-conditioned families pick their own condition maps
        drawn = trainer.draw(workdir, num, seed)
        return drawn["images"], drawn["step"]
    config, state, step = sampling.restore_state(workdir)
    fake, _ = sampling.generate(config, state, trainer, num, None, seed)
    return fake, step


def resolve_reals(config: ml_collections.ConfigDict, reals: str) -> str:
    """'auto' -> 'test' if config.data has a held-out split, else 'train' (logged); others as given."""
    if reals != "auto":
        return reals
    from jaxmedgan.data import datasets, tfds_builders

    if "test" in tfds_builders.split_names(datasets.prepare(config), config.data.source):
        return "test"
    log.warning("config.data (source %r) has no held-out 'test' split: comparing with the training images. "
                "Rebuild with a hold-out (config.data.holdout_fraction) for an unbiased score.", config.data.source)
    return "train"


def real_images(config: ml_collections.ConfigDict, num: int, reals: str, seed: int) -> np.ndarray:
    """Up to `num` real images f32 [n,H,W,C] in [-1, 1]: 'train', 'test' (config.data) or an .npz path."""
    rng = np.random.default_rng(seed)
    if reals.endswith(".npz"):
        with np.load(reals) as z:
            if "images" not in z.files:
                raise ValueError(f"--reals {reals} has no 'images' array (found {z.files}).")
            x = z["images"]
    elif reals in ("train", "test"):
        from jaxmedgan.data import datasets, tfds_builders

        train_source, eval_arrays = datasets.load(config)
        if reals == "test":
            if eval_arrays is None:
                raise ValueError(f"config.data (source {config.data.source!r}) has no held-out 'test' split; "
                                 "use --reals train.")
            x = eval_arrays[0]
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


def _write_json_atomic(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".metrics-", suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def evaluate(workdir: str, *, metrics: str | Sequence[str] = "fid,kid,pr", num: int = 1000,
             extractor: features.Extractor, reals: str = "auto", seed: int = 0, batch_size: int = 64,
             kid_subset_size: int = 1000, kid_subsets: int = 100, k: int = 5, save_samples: bool = False) -> dict:
    """Computes, writes (W/eval/metrics.json, TensorBoard) and returns {"metrics": {...}, ...}.

    save_samples: also writes the scored samples to W/eval/samples.npz (images uint8 [N,H,W,C], step).
    """
    names = quality.parse_metrics(metrics)
    if num < 2:
        raise ValueError(f"--num must be >= 2 (covariances, KID), got {num}.")
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
    step_value = int(step) if not isinstance(step, dict) else {k_: int(v) for k_, v in step.items()}
    run = {"features": extractor.kind, "feature_description": extractor.description,
           "feature_dim": int(f_real.shape[1]), "num_fake": int(len(fake)), "num_real": int(len(real)),
           "reals": reals, "seed": seed, "metrics": sorted(values)}
    path = os.path.join(workdir, METRICS_FILE)
    report = {"checkpoint_step": step_value, "metrics": {}, "runs": {}}
    if os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)
        if previous.get("checkpoint_step") == step_value:  # same model: keep the other extractor's results
            report = previous
    report["metrics"].update(values)
    report["runs"][extractor.kind] = run
    _write_json_atomic(path, report)
    writer = metric_writers.MetricWriter(os.path.join(workdir, "eval"))
    try:
        tb_step = step_value if isinstance(step_value, int) else max(step_value.values())
        writer.write_scalars(tb_step, {f"quality/{n}": v for n, v in values.items()})
    finally:
        writer.close()
    return report


def periodic_metrics(config: ml_collections.ConfigDict, eval_data: tuple[np.ndarray, Any] | None,
                     family: Any = None) -> Callable[[Any], dict[str, float]]:
    """fn(state) -> {'quality/fid_domain': ...} for the training loop, from `config.eval`:

    quality_classifier (classifier workdir, required), quality_num (samples, default 256),
    quality_metrics ('fid' by default; any of fid,kid,pr). The real features of `eval_data`
    (held-out images f32 [N,H,W,C], labels) are computed once here; each call generates
    quality_num samples from fixed latents (so the value tracks G alone) with `family.generate`.
    """
    import jax

    from jaxmedgan.trainers.common import latent_batch

    e = config.get("eval") or ml_collections.ConfigDict()
    if not e.get("quality_classifier"):
        raise ValueError("config.eval.quality_every > 0 needs config.eval.quality_classifier: a classifier "
                         "workdir trained on the same data (configs/classifier_*.py).")
    if eval_data is None:
        raise ValueError(f"config.eval.quality_every > 0 needs held-out images; config.data (source "
                         f"{config.data.source!r}) has no 'test' split.")
    if family is None:
        from jaxmedgan import trainers

        family = trainers.get(config.trainer).FAMILY
    num = int(e.get("quality_num", 256))
    names = quality.parse_metrics(e.get("quality_metrics", "fid"))
    extractor = features.domain(e.quality_classifier)
    real = np.asarray(eval_data[0], np.float32)[:num]
    f_real = features.extract(extractor, real)
    gen = jax.jit(functools.partial(family.generate, config))
    batch = 64
    latents = [latent_batch(config, jax.random.PRNGKey(config.seed + 7919 + i), batch)
               for i in range(-(-num // batch))]

    def measure(state) -> dict[str, float]:
        fake = np.concatenate([images.to_uint8(np.asarray(gen(state, z, y))) for z, y in latents])[:num]
        f_fake = features.extract(extractor, fake)
        values = quality.compute(f_real, f_fake, names, suffix=extractor.suffix,
                                 kid_subset_size=min(1000, num), kid_subsets=20, seed=config.seed)
        return {f"quality/{n}": v for n, v in values.items()}

    return measure


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmedgan evaluate",
                                description="Image-quality metrics (FID, KID, precision/recall) of a GAN workdir.")
    p.add_argument("--workdir", required=True, help="trained GAN workdir")
    p.add_argument("--metrics", default="fid,kid,pr", help="comma-separated subset of fid,kid,pr")
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
    return p


def quality_command(argv: Sequence[str]) -> int:
    """Entry point of `jaxmedgan evaluate --metrics ...` (argv without the program/command names)."""
    args = build_parser().parse_args(list(argv))
    extractor = features.make(args.features, classifier=args.classifier, inception_weights=args.inception_weights)
    report = evaluate(args.workdir, metrics=args.metrics, num=args.num, extractor=extractor, reals=args.reals,
                      seed=args.seed, batch_size=args.batch_size, kid_subset_size=args.kid_subset_size,
                      kid_subsets=args.kid_subsets, k=args.k, save_samples=args.save_samples)
    run = report["runs"][extractor.kind]
    print(f"{args.workdir} (checkpoint step {report['checkpoint_step']}), {run['num_fake']} samples vs "
          f"{run['num_real']} real ({run['reals']}), features: {run['feature_description']}")
    for name in run["metrics"]:
        print(f"  {name:22s} {report['metrics'][name]:.6g}")
    print(f"wrote {os.path.join(args.workdir, METRICS_FILE)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(quality_command(sys.argv[1:]))
