"""FID-domain and friends during training: `config.eval.quality_every` steps, on the held-out arrays.

The same measurement as `jaxmedgan evaluate` (`studies.quality_cli`), as a callback the training
loop (`trainers.common.fit`) calls with its state; what depends on the family comes in as functions.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmedgan import images
from jaxmedgan.evaluators import features, quality


def periodic_metrics(config: ml_collections.ConfigDict, eval_data: tuple[np.ndarray, Any] | None,
                     generate: Callable[..., jax.Array], latent_batch: Callable[..., tuple[jax.Array, Any]],
                     ) -> Callable[[Any], dict[str, float]]:
    """fn(state) -> {'quality/fid_domain': ...} for the training loop, from `config.eval`:

    quality_classifier (classifier workdir, required), quality_num (samples, default 256),
    quality_metrics ('fid' by default; any of fid,kid,pr). The real features of `eval_data`
    (held-out images f32 [N,H,W,C], labels) are computed once here; each call generates
    quality_num samples from fixed latents (so the value tracks G alone) with the family's
    `generate(config, state, z, labels)`, the latents drawn by the trainer's
    `latent_batch(config, rng, n)` (both handed in: this floor imports no trainer).

    quality_per_class (class-conditional models, `model.num_classes > 0`): also quality_num
    samples of each class k (the same fixed latents under label k), scored against all held-out
    reals of class k: `quality/fid_domain_class{k}` (with 'fid'), `quality/{precision,recall,
    density,coverage}_domain_class{k}` (with 'pr') and `quality/agreement_class{k}` -- the share
    of them the classifier labels k (its classes matched to the model's by index) -- plus the
    mean `quality/class_agreement`. Which class fails shows while training runs.
    """
    e = config.get("eval") or ml_collections.ConfigDict()
    if not e.get("quality_classifier"):
        raise ValueError("config.eval.quality_every > 0 needs config.eval.quality_classifier: a classifier "
                         "workdir trained on the same data (configs/classifier_*.py).")
    if eval_data is None:
        raise ValueError(f"config.eval.quality_every > 0 needs held-out images; config.data (source "
                         f"{config.data.source!r}) has no 'test' split.")
    num = int(e.get("quality_num", 256))
    names = quality.parse_metrics(e.get("quality_metrics", "fid"))
    extractor = features.domain(e.quality_classifier)
    real = np.asarray(eval_data[0], np.float32)[:num]
    f_real = features.extract(extractor, real)
    gen = jax.jit(functools.partial(generate, config))
    batch = 64
    latents = [latent_batch(config, jax.random.PRNGKey(config.seed + 7919 + i), batch)
               for i in range(-(-num // batch))]

    k = int(config.model.get("num_classes", 0)) if e.get("quality_per_class", False) else 0
    if k and (eval_data[1] is None or np.ndim(eval_data[1]) != 1):
        raise ValueError("config.eval.quality_per_class=True needs single-label held-out images (labels int [N]).")
    # Per class: every held-out image (the first quality_num could all be of one class).
    f_real_all = features.extract(extractor, np.asarray(eval_data[0], np.float32)) if k else None
    real_labels = np.asarray(eval_data[1]) if k else None

    def draw(state, labels=None) -> np.ndarray:
        out = [images.to_uint8(np.asarray(gen(state, z, y if labels is None else jnp.full_like(y, labels))))
               for z, y in latents]
        return np.concatenate(out)[:num]

    def measure(state) -> dict[str, float]:
        f_fake = features.extract(extractor, draw(state))
        values = quality.compute(f_real, f_fake, names, suffix=extractor.suffix,
                                 kid_subset_size=min(1000, num), kid_subsets=20, seed=config.seed)
        out = {f"quality/{n}": v for n, v in values.items()}
        if k:
            out.update(_per_class_scalars(state))
        return out

    def _per_class_scalars(state) -> dict[str, float]:
        fakes = [draw(state, c) for c in range(k)]
        f_fake = np.concatenate([features.extract(extractor, f) for f in fakes])
        fake_labels = np.repeat(np.arange(k), [len(f) for f in fakes])
        class_names = [f"class{c}" for c in range(k)]
        table = quality.per_class(f_real_all, real_labels, f_fake, fake_labels, class_names,
                                  [n for n in names if n in quality.CLASS_METRICS], k=5, num_bootstrap=0)
        pred = np.concatenate([features.predict(extractor, f) for f in fakes])
        out = {}
        for c, name in enumerate(class_names):
            for key in ("fid", *quality.PRDC):
                if key in table[name]:
                    out[f"quality/{key}{extractor.suffix}_{name}"] = table[name][key]
            out[f"quality/agreement_{name}"] = float(np.mean(pred[fake_labels == c] == c))
        out["quality/class_agreement"] = float(np.mean([out[f"quality/agreement_{n}"] for n in class_names]))
        return out

    return measure
