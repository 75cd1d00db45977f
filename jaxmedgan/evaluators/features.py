"""Feature extractors for the image-quality metrics: 'domain' (offline default) and 'inception'.

* domain: the penultimate embedding of a classifier trained on the real data with
  `jaxmedgan train --config configs/classifier_*.py` (`models.trained_classifier.load_classifier`).
  Metrics on these features are reported with a `_domain` suffix (`fid_domain`, ...) and called
  "FID-domain": they rank models on one data set but are not comparable with published FID.
* inception: the FID Inception-v3 (`models.inception`) with user-supplied weights converted by
  `python -m jaxmedgan.evaluators.inception_convert`; metrics keep their published names (`fid`).

An extractor maps images f32 [N,H,W,C] in [-1, 1] to features f32 [N,D]; `extract` runs it in
fixed-size batches (the last one padded) so it compiles once.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmedgan import batching
from jaxmedgan.models import inception as inception_lib
from jaxmedgan.models import trained_classifier

log = logging.getLogger(__name__)
KINDS = ("domain", "inception")


@dataclasses.dataclass(frozen=True)
class Extractor:
    """images f32 [B,H,W,C] in [-1, 1] -> features [B,D] (jittable `fn`), plus naming for reports."""

    kind: str                     # "domain" | "inception"
    fn: Callable[[jax.Array], jax.Array]
    suffix: str                   # appended to metric names: "_domain" or ""
    description: str              # for metrics.json
    image_size: int | None = None  # px the extractor needs (images are resized to it); None = any
    channels: int | None = None    # channels it needs (None = 1 or 3)
    classify: Callable[[jax.Array], jax.Array] | None = None  # images -> class logits [B,K] (domain only)
    class_names: tuple[str, ...] | None = None  # the classes of `classify`'s logits


def _resize(images: jax.Array, size: int) -> jax.Array:
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    return jax.image.resize(images, (n, size, size, c), method="bilinear", antialias=True)


def domain(classifier_workdir: str) -> Extractor:
    """The trained classifier in `classifier_workdir` (its global-average-pooled embedding)."""
    clf, names = trained_classifier.load_classifier(classifier_workdir)
    size, channels = clf.image_size, clf.channels

    def fn(images):
        return clf.features(_resize(images, size))

    def classify(images):
        return clf(_resize(images, size))

    return Extractor("domain", fn, "_domain",
                     f"domain classifier {classifier_workdir} (step {clf.step}, classes {list(names)})",
                     image_size=size, channels=channels, classify=classify, class_names=tuple(names))


def inception(weights_path: str, *, resize_to: int | None = 299) -> Extractor:
    """The FID Inception-v3 with the converted weights in `weights_path` (npz)."""
    variables = inception_lib.load_variables(weights_path)
    model = inception_lib.InceptionV3FID(resize_to=resize_to)
    apply = jax.jit(model.apply)
    return Extractor("inception", functools.partial(apply, variables), "",
                     f"FID Inception-v3 pool3, weights {weights_path}")


def make(kind: str, *, classifier: str | None = None, inception_weights: str | None = None) -> Extractor:
    """The extractor named `kind` ('domain' needs `classifier`, 'inception' needs `inception_weights`)."""
    if kind == "domain":
        if not classifier:
            raise ValueError("--features domain needs --classifier CLASSIFIER_WORKDIR (train one with "
                             "`jaxmedgan train --config configs/classifier_*.py` on the same data).")
        return domain(classifier)
    if kind == "inception":
        if not inception_weights:
            raise ValueError("--features inception needs --inception-weights FILE.npz (convert "
                             "pt_inception-2015-12-05-6726825d.pth with `python -m "
                             "jaxmedgan.evaluators.inception_convert`).")
        return inception(inception_weights)
    raise ValueError(f"Unknown feature extractor {kind!r}; expected one of {KINDS}.")


def predict(extractor: Extractor, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The classifier's class int [N] for images [N,H,W,C] (domain extractors; ValueError otherwise)."""
    if extractor.classify is None:
        raise ValueError(f"The {extractor.kind} extractor has no classifier head; class agreement needs "
                         "--classifier (a trained classifier workdir).")
    return np.argmax(extract(extractor, images, batch_size, fn=extractor.classify), axis=-1)


def extract(extractor: Extractor, images: np.ndarray, batch_size: int = 64,
            fn: Callable[[jax.Array], jax.Array] | None = None) -> np.ndarray:
    """Features f32 [N,D] of images [N,H,W,C] (f32 in [-1, 1], or uint8 0..255); `fn` instead of
    `extractor.fn` (e.g. its `classify`) on the same preprocessing."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"Images must be [N,H,W,C]; got shape {images.shape}.")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 127.5 - 1.0
    images = images.astype(np.float32)
    c = images.shape[-1]
    if extractor.channels is not None and c != extractor.channels:
        if extractor.channels == 3 and c == 1:
            images = np.repeat(images, 3, axis=-1)
        elif extractor.channels == 1 and c == 3:
            images = images.mean(axis=-1, keepdims=True)
        else:
            raise ValueError(f"The {extractor.kind} extractor needs {extractor.channels}-channel images; got {c}.")
    n = len(images)
    if n == 0:
        raise ValueError("No images to extract features from.")
    apply = fn or extractor.fn
    return batching.map_padded(lambda chunk: np.asarray(apply(jnp.asarray(chunk)), np.float32), images,
                               min(batch_size, n))
