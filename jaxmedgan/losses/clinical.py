"""Clinical loss term: cross-entropy of a frozen domain classifier on generated images.

G's loss gains lambda * CE(classifier(G(z, c)), c): images of class c must look like class c to a
classifier trained on real data. The classifier is frozen (its variables are an input of the
step, never differentiated) and reached through one small interface,
`FrozenClassifier.logits(variables, images) -> [N, K]`, so any classifier can stand in.

On-disk format (`save_classifier` / `load_frozen_classifier`): a directory with
`classifier.json` (format version, `models.classifier.Classifier` fields, image size, channels,
class names) and `variables.msgpack` (Flax variables, `flax.serialization`). It is written into a
temporary sibling directory and renamed, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmedgan import atomic_io
from jaxmedgan.models import classifier as classifier_lib
from jaxmedgan.models import trained_classifier

FORMAT = 1
META_FILE = "classifier.json"
VARIABLES_FILE = "variables.msgpack"


@dataclasses.dataclass(frozen=True)
class FrozenClassifier:
    """A loaded classifier: pure `logits(variables, images)` plus its variables and input spec."""

    module: classifier_lib.Classifier
    variables: Any
    image_size: int
    channels: int
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return self.module.num_classes

    def logits(self, variables: Any, images: jax.Array) -> jax.Array:
        """Class logits f32 [N, K] for images [N, image_size, image_size, channels] in [-1, 1]."""
        expected = (self.image_size, self.image_size, self.channels)
        if images.shape[1:] != expected:
            raise ValueError(f"The clinical classifier was trained on images {expected} (H, W, C); "
                             f"got {images.shape[1:]}. Train it at the GAN's resolution.")
        return classifier_lib.classifier_logits(self.module, variables, images)


def clinical_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy per example: logits [B, K], int labels [B] -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def save_classifier(path: str, module: classifier_lib.Classifier, variables: Any, *, image_size: int,
                    channels: int, class_names: Sequence[str] = ()) -> str:
    """Writes `module`'s fields and `variables` to directory `path` (atomically); returns path."""
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
              if f.name not in ("parent", "name", "dtype")}
    fields["features"] = list(fields["features"])
    meta = {"format": FORMAT, "module": fields, "image_size": int(image_size), "channels": int(channels),
            "class_names": list(class_names)}
    if class_names and len(class_names) != module.num_classes:
        raise ValueError(f"{len(class_names)} class_names given for a {module.num_classes}-class classifier.")
    def write(tmp: str) -> None:
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        with open(os.path.join(tmp, VARIABLES_FILE), "wb") as f:
            f.write(flax.serialization.msgpack_serialize(jax.device_get(flax.serialization.to_state_dict(variables))))

    return atomic_io.write_dir(os.path.abspath(path), write, overwrite=True)


def load_frozen_classifier(path: str) -> Any:
    """A frozen classifier from `path`: a `save_classifier` directory, or a classifier-trainer workdir.

    Either way the result has `logits(variables, images)`, `variables`, `num_classes`,
    `image_size`, `channels` and `class_names`. Errors name the missing or bad file.
    """
    meta_path = os.path.join(path, META_FILE)
    var_path = os.path.join(path, VARIABLES_FILE)
    if not os.path.isfile(meta_path) and os.path.isfile(os.path.join(path, "config.json")):
        return trained_classifier.load_classifier(path)[0]  # a `trainer='classifier'` run
    for p in (meta_path, var_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"Clinical classifier checkpoint {path!r} lacks {os.path.basename(p)}; "
                                    f"expected a directory written by losses.clinical.save_classifier or a "
                                    f"classifier training workdir (config.clinical.checkpoint).")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unsupported classifier format {meta.get('format')!r}; expected {FORMAT}.")
    fields = dict(meta["module"])
    fields["features"] = tuple(fields["features"])
    module = classifier_lib.Classifier(**fields)
    with open(var_path, "rb") as f:
        state = flax.serialization.msgpack_restore(f.read())
    variables = jax.tree_util.tree_map(np.asarray, state)  # numpy: safe to load inside a jit trace
    return FrozenClassifier(module=module, variables=variables, image_size=int(meta["image_size"]),
                            channels=int(meta["channels"]), class_names=tuple(meta.get("class_names", ())))


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """{class k: accuracy over examples of class k} (classes with no examples are left out)."""
    preds = np.argmax(np.asarray(logits), axis=-1)
    labels = np.asarray(labels)
    return {k: float(np.mean(preds[labels == k] == k)) for k in range(num_classes) if np.any(labels == k)}
