"""The typed contract of a trainer family: what `config.trainer` names, read through
`trainers.family(name)`.

Callers outside `trainers/` ask a family what it can do by reading these fields (a field is None,
or an empty tuple, when the family lacks the capability); they never probe a module with
`hasattr` or branch on a family's name. Light on purpose (no JAX import): configs and the
composite families import it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

KINDS = ("gan", "classifier")  # what a family's workdir holds: an image generator, or a classifier
STEP_FIELDS = ("init_state", "train_step", "generate")  # the step contract comes whole or not at all


@dataclasses.dataclass(frozen=True)
class Family:
    """One registered trainer: the pure functions `common.fit` drives, and optional capabilities.

    Every function takes the config first unless it takes a workdir. Images are f32 NHWC in
    [-1, 1] unless called uint8.

    The step contract (GAN families that train through `common.fit`: gan, stylegan2, pggan,
    pix2pix; None for entries that train through their own `train_and_evaluate`: the classifier,
    and the composites dual_gan and per_class, which run `fit` on other families):
    init_state(config, rng) -> state
    train_step(config, state, batch, *, mesh) -> (state, metrics)  # batch: image [B,H,W,C], label [B]
                                                                   # (+ mask [B] under DP)
    generate(config, state, z, labels) -> images [N,H,W,C]     # z [N, model.latent_dim] (pix2pix:
                                                               # one-hot maps [N,H,W,K]); labels [N] or None
    evaluate(config, state, eval_data) -> {name: float}        # host-side orchestration
    make_step(config, state_shardings, batch_sharding, replicated) -> step(state, batch, step: int)
        # optional; when given, fit calls this host-side callable (it jits what it needs, e.g.
        # StyleGAN2's separate phases) instead of jitting train_step; its metric keys may vary
        # from step to step (each key is averaged over the steps that reported it)
    sample_grid(config, state, eval_data) -> uint8 grid [H,W,C]  # optional; default: fixed-latent
                                                               # grid (conditional-map families)
    dp_public_metrics: metric names that stay public under DP (computed from noised gradients,
        generated images or G alone); every other metric of a DP run is private
        (privacy/monitoring.py).

    Capabilities (None / () when absent):
    kind: 'gan' (the workdir holds an image generator) or 'classifier'.
    discriminate(config, state, images [N,H,W,C]) -> D's real/fake logit f32 [N]  # gan, pggan:
        the audits' D-logit membership score
    latent_spaces: spaces G can be driven from, the default (what inversion uses unless told)
        first; 'z' is `generate`'s z ~ N(0, I) [N, model.latent_dim] (LCO, inversion), 'w' / 'w+'
        StyleGAN2's mapped latents [N, w_dim] / [N, num_ws, w_dim]. () : not a latent generator.
    draw(workdir, num, seed) -> {"images" uint8 [N,H,W,C], "masks" uint8 [N,H,W] (class per pixel),
        "labels" int [N], "label_names", "class_names" (mask classes), "step", "config"}
        # families conditioned on label maps pick their own maps (pix2pix, dual_gan)
    generate_labelled(workdir, num, class_id, seed, *, as_float=False) -> (images [N,H,W,C] uint8
        (as_float: f32 in [-1, 1]), labels int [N], {class name: checkpoint step})
        # one GAN per class (per_class), drawn like a class-conditional model
    stages: sub-workdirs W/<stage>/ of a composite run, trained in order on the same private
        images (each an ordinary workdir of its own family); export composes their privacy.
    stage_training_set_size(workdir, stage) -> int | None: N of stage W/<stage> as the composite
        recorded it (None: the stage's own family counts it).
    training_set_size(config) -> int: N, the training examples a run of `config` sees (the
        accountant's q = batch_size / N when config.json records none); None: the length of
        `datasets.load(config)`'s training source.
    check_private_generator(config) -> None: raises ValueError when G itself reads private data
        per example and its layers would mix examples under DP (pix2pix).
    image_sizes(config) -> (smallest, largest or None = unbounded) power-of-two `data.image_size`
        in px the model builds; `config_validation` checks against it.
    """

    name: str
    init_state: Callable[..., Any] | None = None
    train_step: Callable[..., tuple[Any, dict]] | None = None
    generate: Callable[..., Any] | None = None
    evaluate: Callable[..., dict] | None = None
    make_step: Callable[..., Callable[[Any, Any, int], tuple[Any, dict]]] | None = None
    sample_grid: Callable[..., np.ndarray] | None = None
    dp_public_metrics: tuple[str, ...] = ()
    kind: str = "gan"
    discriminate: Callable[..., Any] | None = None
    latent_spaces: tuple[str, ...] = ()
    draw: Callable[..., dict[str, Any]] | None = None
    generate_labelled: Callable[..., tuple[np.ndarray, np.ndarray, dict[str, int]]] | None = None
    stages: tuple[str, ...] = ()
    stage_training_set_size: Callable[[str, str], int | None] | None = None
    training_set_size: Callable[..., int] | None = None
    check_private_generator: Callable[..., None] | None = None
    image_sizes: Callable[..., tuple[int, int | None]] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Family {self.name!r}: kind {self.kind!r}; expected one of {KINDS}.")
        given = [f for f in STEP_FIELDS if getattr(self, f) is not None]
        if given and len(given) != len(STEP_FIELDS):
            raise ValueError(f"Family {self.name!r} sets {given} of the step contract {STEP_FIELDS}; give all or none.")

    @property
    def has_steps(self) -> bool:
        """Whether `common.fit` can train this family (it supplies the step contract)."""
        return self.init_state is not None
