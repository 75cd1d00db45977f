"""A trained image classifier: its checkpointed state, its network from config, the one frozen format.

The frozen format is the classifier trainer's workdir: `config.json` (`checkpointing.write_config`),
`classes.json` (class names in logit order, task type) and an orbax checkpoint of
`ClassifierState` under `checkpoints/`. `trainers.classifier` writes it while training; `save`
writes one from any state (a classifier trained elsewhere, tests). Everything that uses a
classifier frozen -- the clinical loss of StyleGAN2 (`config.clinical.checkpoint`), FID-domain
features (`evaluators.features`), latent class optimisation (`lco`, `sampling`), the studies --
loads it here with `load_classifier(workdir)`, below every trainer.
`config.model.arch` picks the network: 'resnet' (`models/resnet_classifier.py`, default) or
'cnn' (the plain CNN of `models/classifier.py`). The optimiser is defined here too: its state is
part of what a checkpoint holds, so restoring one needs the same pytree.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxmedgan import atomic_io, checkpointing, workdir_lock
from jaxmedgan.models import classifier as classifier_lib
from jaxmedgan.models import layers, resnet_classifier

CLASSES_FILE = "classes.json"
ARCHS = ("resnet", "cnn")


@flax.struct.dataclass
class ClassifierState:
    """Everything a step reads and writes; the per-step key is fold_in(rng, step)."""

    step: jax.Array  # int32 scalar: completed steps
    rng: jax.Array  # base PRNG key (dropout)
    params: Any
    batch_stats: Any  # BatchNorm running statistics ({} for the default GroupNorm)
    opt_state: Any
    class_weights: jax.Array  # f32 [K]: per-class (single-label) or positive (multi-label) weights

    def variables(self) -> dict:
        """Flax variables dict of the classifier."""
        return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The classifier named by `config.model.arch` (K = config.model.num_classes).

    'resnet': `models.resnet_classifier.ResNetClassifier`; 'cnn': the small plain CNN of
    `models.classifier.Classifier`.
    """
    m = config.model
    arch = m.get("arch", "resnet")
    dtype = layers.compute_dtype(config)
    if arch == "resnet":
        return resnet_classifier.ResNetClassifier(
            num_classes=m.num_classes, features=tuple(m.features), blocks_per_stage=m.blocks_per_stage,
            norm=m.norm, dropout=m.dropout, stem_stride=m.get("stem_stride", 1), dtype=dtype)
    if arch == "cnn":
        return classifier_lib.Classifier(num_classes=m.num_classes, features=tuple(m.features),
                                         convs_per_stage=m.get("convs_per_stage", 2), norm=m.norm,
                                         dropout=m.dropout, dtype=dtype)
    raise ValueError(f"config.model.arch={arch!r}; expected one of {ARCHS}.")


def model_logits(module: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    """Pure inference: logits f32 [N,K] of either architecture on images [N,H,W,C] in [-1, 1]."""
    return module.apply(variables, images, train=False)


def model_features(module: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    """Pure inference: penultimate embedding f32 [N,D] (the globally pooled last stage) of either architecture."""
    if isinstance(module, resnet_classifier.ResNetClassifier):
        return resnet_classifier.features(module, variables, images)
    # models.classifier.Classifier pools its last conv block's output into the head: capture it.
    last = f"conv{len(module.features) - 1}_{module.convs_per_stage - 1}"
    _, state = module.apply(variables, images, train=False, mutable=["intermediates"],
                            capture_intermediates=lambda mdl, method: mdl.name == last and method == "__call__")
    return jnp.mean(state["intermediates"][last]["__call__"][0].astype(jnp.float32), axis=(1, 2))


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 0 over `config.train.steps`."""
    o = config.optim
    steps = max(int(config.train.steps), 1)
    warmup = min(int(o.warmup_steps), steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, o.lr, max(warmup, 1), steps, end_value=0.0)
    return optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> ClassifierState:
    """Initial state with unit class weights (pure; jit with out_shardings to create it sharded)."""
    model = build_model(config)
    k_init, k_run = jax.random.split(rng)
    # Threefry-drawn initial weights take ~10 s to compile on CPU for this small net; an
    # RngBitGenerator ('rbg') key derived from the run key draws the same distributions and
    # compiles in ~2 s. Parameters are replicated, so every device computes the same values.
    k_init = jax.random.wrap_key_data(jax.random.bits(k_init, (4,), jnp.uint32), impl="rbg")
    size, ch = config.data.image_size, config.data.channels
    variables = model.init(k_init, jnp.zeros((2, size, size, ch)), train=False)
    params = variables["params"]
    return ClassifierState(step=jnp.zeros((), jnp.int32), rng=k_run, params=params,
                           batch_stats=variables.get("batch_stats", {}),
                           opt_state=build_optimizer(config).init(params),
                           class_weights=jnp.ones((config.model.num_classes,), jnp.float32))


@dataclasses.dataclass(frozen=True)
class LoadedClassifier:
    """A trained classifier: `self(images) -> logits [N,K]`, `features(images) -> [N,D]`.

    Also `logits(variables, images)` (pure, differentiable in images: what the clinical loss
    differentiates through), `variables`, `num_classes`, `image_size`, `channels`.
    """

    module: nn.Module  # ResNetClassifier or models.classifier.Classifier
    variables: Any
    image_size: int
    channels: int
    class_names: tuple[str, ...]
    multi_label: bool
    step: int
    _jit_logits: Callable | None = dataclasses.field(default=None, repr=False, compare=False)
    _jit_features: Callable | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return self.module.num_classes

    def _check(self, images) -> None:
        expected = (self.image_size, self.image_size, self.channels)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"This classifier was trained on images {expected} (H, W, C); got "
                             f"{tuple(images.shape[1:])}.")

    def logits(self, variables: Any, images: jax.Array) -> jax.Array:
        """Logits f32 [N,K] for images [N,H,W,C] in [-1, 1] (pure; jit/grad freely)."""
        self._check(images)
        return model_logits(self.module, variables, images)

    def __call__(self, images: jax.Array) -> jax.Array:
        """Logits f32 [N,K] for images [N,H,W,C] in [-1, 1], with the trained variables (jitted)."""
        self._check(images)
        fn = self._jit_logits or functools.partial(model_logits, self.module)
        return fn(self.variables, images)

    def features(self, images: jax.Array) -> jax.Array:
        """Penultimate (global-average-pooled) embedding f32 [N,D] for images [N,H,W,C] in [-1, 1] (jitted)."""
        self._check(images)
        fn = self._jit_features or functools.partial(model_features, self.module)
        return fn(self.variables, images)


def write_classes(workdir: str, class_names: Sequence[str], multi_label: bool) -> None:
    """Writes `workdir/classes.json` (class names in logit order, task type) atomically."""
    atomic_io.write_json(os.path.join(workdir, CLASSES_FILE),
                         {"class_names": list(class_names), "multi_label": bool(multi_label)})


def save(workdir: str, config: ml_collections.ConfigDict, state: ClassifierState, class_names: Sequence[str],
         multi_label: bool = False) -> str:
    """Writes a complete frozen classifier into `workdir` (config, classes, checkpoint at `state.step`,
    waited for) in the format `load_classifier` reads; returns workdir."""
    if len(class_names) != config.model.num_classes:
        raise ValueError(f"{len(class_names)} class names for config.model.num_classes="
                         f"{config.model.num_classes}.")
    checkpointing.write_config(workdir, config)
    write_classes(workdir, class_names, multi_label)
    mngr = checkpointing.manager(workdir, async_save=False)
    checkpointing.save(mngr, int(state.step), state, config)
    checkpointing.finalize(mngr)
    return workdir


def load_classifier(workdir: str) -> tuple[LoadedClassifier, tuple[str, ...]]:
    """(apply_fn: images [N,H,W,C] in [-1,1] -> logits [N,K], class names) from a trained workdir."""
    if not os.path.isfile(os.path.join(workdir, checkpointing.CONFIG_FILE)):
        raise FileNotFoundError(f"No {checkpointing.CONFIG_FILE} in {workdir!r}: a frozen classifier is a classifier "
                                "training workdir (`jaxmedgan train --config configs/classifier_*.py`, or "
                                "`models.trained_classifier.save`).")
    config = checkpointing.read_config(workdir)
    if config.get("trainer") != "classifier":
        raise ValueError(f"{workdir}/config.json has trainer={config.get('trainer')!r}; expected a "
                         "classifier workdir (trainer='classifier').")
    classes_path = os.path.join(workdir, CLASSES_FILE)
    if not os.path.isfile(classes_path):
        raise FileNotFoundError(f"No {CLASSES_FILE} in classifier workdir {workdir!r}; was it trained with "
                                "`jaxmedgan train --config configs/classifier_*.py`?")
    with open(classes_path) as f:
        classes = json.load(f)
    config.model.features = tuple(config.model.features)
    abstract = jax.eval_shape(functools.partial(init_state, config), jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    restored = checkpointing.restore_latest(checkpointing.manager(workdir, async_save=False), abstract,
                                            may_move=lambda: workdir_lock.holder(workdir) is None)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints: train the classifier first.")
    state, step = restored
    names = tuple(classes["class_names"])
    module = build_model(config)
    clf = LoadedClassifier(module=module, variables=state.variables(),
                           image_size=int(config.data.image_size), channels=int(config.data.channels),
                           class_names=names, multi_label=bool(classes.get("multi_label", False)), step=int(step),
                           _jit_logits=jax.jit(functools.partial(model_logits, module)),
                           _jit_features=jax.jit(functools.partial(model_features, module)))
    return clf, names
