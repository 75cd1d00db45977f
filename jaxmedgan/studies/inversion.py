"""GAN inversion ("projection"): the latent with which a trained generator best reproduces an image.

`jaxmedgan project` writes it for many images; `jaxmedgan privacy audit --inversion-steps S` uses
it to ask the stronger memorisation question -- how much better does the generator reproduce
its training images than unseen ones? (jaxmedgan/studies/audit.py).

Spaces (`space`):
* `z`, every latent family (DCGAN/ACGAN, PGGAN, StyleGAN2 through its `generate`): Adam on z [d]
  with the shell prior of latent class optimisation, prior_weight * (||z||^2 / d - 1)^2
  (`lco.prior_penalty`), which keeps z near the sphere where G saw its training latents. Its
  weight is small (1e-3) because the distances it competes with are: a latent drawn from the
  prior pays 2/d * 1e-3 on average (2e-5 at d = 100), beside pixel MSEs of 1e-3..1e-2, while one
  at twice the radius pays 9e-3. (At weight 1, the latents of a 16 px, d = 8 ACGAN's own images
  were recovered to 13-213 % relative error instead of 0-7 %: the prior outweighed the image.)
  Start: per image, the nearest (same distance as the objective) of a fixed pool of `init_pool`
  random latents.
* `w` / `w+`, StyleGAN2: Adam on w [w_dim] (broadcast to every layer) or w+ [num_ws, w_dim]
  through the G-EMA synthesis network, as NVlabs' projector (stylegan2-ada-pytorch
  projector.py): start at the class's mean w (`w_avg_samples` mapped latents of that class: a
  conditional model's class enters W through the mapping only, so the class picks the start and
  the latent-noise scale w_std), Gaussian noise of w_std * latent_noise * max(0, 1 - t /
  noise_ramp)^2 added to w in the first steps (t = step / steps), learning rate ramped up over
  the first `lr_rampup` and down (cosine) over the last `lr_rampdown` of the steps.
  Noise inputs (`noise='optimise'`, StyleGAN2 with use_noise): the per-layer unit-normal planes
  are optimised with the latent, regularised by NVlabs' multi-scale autocorrelation penalty
  (`noise_regulariser`, weight `noise_weight`) and renormalised to zero mean and unit variance
  after every step. The model draws its planes itself (`SynthesisNetwork._noise_planes`; no
  argument takes them), so they are substituted there with `flax.linen.intercept_methods`
  (`_synthesis_with_noise`, which fails loudly if the model stops calling that method).
  `noise='const'` keeps the model's fixed planes (those `generate` uses).

Class condition of a conditional model (`class_mode`): an index (every image), 'label' (each
image's own label) or 'search' (every class is tried and the one with the smaller final distance
kept; K times the work).

Distance (per image): pixel_weight * MSE(G, x) over pixels (images in [-1, 1]) + perceptual_weight
* ||f(G) / |f(G)| - f(x) / |f(x)| ||^2 on the features f of an `evaluators.features.Extractor`
(the domain classifier's embedding or the FID Inception's pool3; unit-normalised like LPIPS'
channels, so 0..4). Without an extractor the distance is the pixel term alone.

Batching: every image has its own latent, noise and PRNG key, G runs in inference mode and Adam
is elementwise, so the sum of the per-image objectives gives every image its own trajectory;
rows are projected `batch_size` at a time (the last batch padded), and the whole step loop is a
`lax.scan` jitted once.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmedgan import atomic_io, checkpointing, images as image_utils, lco, sampling, trainers
from jaxmedgan.data import datasets, readers, tfds_builders
from jaxmedgan.evaluators import features as features_lib
from jaxmedgan.models import stylegan2 as sg

log = logging.getLogger("jaxmedgan")

SPACES = ("z", "w", "w+")
NOISE_MODES = ("optimise", "const")
SEARCH, LABEL = "search", "label"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Hyperparameters of one projection (defaults: NVlabs' projector where it has one)."""

    space: str = "z"              # z | w | w+
    steps: int = 300              # Adam steps per image
    lr: float = 0.1               # peak learning rate
    lr_rampup: float = 0.05       # fraction of the steps the lr ramps up over (linear)
    lr_rampdown: float = 0.25     # fraction of the steps it ramps down over (cosine)
    latent_noise: float = 0.05    # initial latent noise, in latent std units
    noise_ramp: float = 0.75      # fraction of the steps the latent noise decays over (quadratic)
    noise: str = "optimise"       # StyleGAN2 noise planes: optimise | const
    noise_weight: float = 1e5     # weight of the noise autocorrelation penalty
    pixel_weight: float = 1.0     # weight of the pixel MSE
    perceptual_weight: float = 1.0  # weight of the feature distance (ignored without an extractor)
    prior_weight: float = 1e-3    # z: weight of the shell prior (see the module docstring)
    init_pool: int = 64           # z: random latents the start is picked from (per class)
    w_avg_samples: int = 1024     # w, w+: mapped latents per class for the mean w and w_std
    batch_size: int = 8           # rows per jitted call (fixed: one compile)

    def validate(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"--space {self.space!r}; expected one of {SPACES}.")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise={self.noise!r}; expected one of {NOISE_MODES}.")
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}.")
        if self.batch_size < 1 or self.init_pool < 1 or self.w_avg_samples < 2:
            raise ValueError(f"batch_size ({self.batch_size}) and init_pool ({self.init_pool}) must be >= 1, "
                             f"w_avg_samples ({self.w_avg_samples}) >= 2.")
        for name in ("pixel_weight", "perceptual_weight", "prior_weight", "noise_weight", "lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


# ----------------------------------------------------------------------------------------------
# Pure pieces.


def learning_rate(settings: Settings) -> Callable[[jax.Array], jax.Array]:
    """The optax schedule count -> lr: linear ramp-up, cosine ramp-down (NVlabs' projector)."""
    steps = max(settings.steps, 1)

    def schedule(count):
        t = jnp.asarray(count, jnp.float32) / steps
        down = jnp.clip((1.0 - t) / max(settings.lr_rampdown, 1e-8), 0.0, 1.0)
        ramp = 0.5 - 0.5 * jnp.cos(down * jnp.pi)
        if settings.lr_rampup > 0:
            ramp = ramp * jnp.minimum(1.0, t / settings.lr_rampup)
        return settings.lr * ramp

    return schedule


def latent_noise_scale(settings: Settings, step: jax.Array) -> jax.Array:
    """Std of the noise added to the latent at `step`, in latent std units."""
    t = jnp.asarray(step, jnp.float32) / max(settings.steps, 1)
    return settings.latent_noise * jnp.square(jnp.maximum(0.0, 1.0 - t / max(settings.noise_ramp, 1e-8)))


def noise_regulariser(planes: Sequence[jax.Array]) -> jax.Array:
    """NVlabs' noise penalty per image f32 [B]: over planes [B,r,r,1] and their 2x2 average-pooled
    pyramid down to 8 px, the squared mean product with the plane shifted by one pixel (rolled
    cyclically) along each axis; 0 for independent noise in expectation, large for structure."""
    total = 0.0
    for p in planes:
        p = p.astype(jnp.float32)
        while True:
            for axis in (1, 2):
                total = total + jnp.square(jnp.mean(p * jnp.roll(p, 1, axis=axis), axis=(1, 2, 3)))
            if p.shape[1] <= 8:
                break
            b, r = p.shape[0], p.shape[1]
            p = p.reshape(b, r // 2, 2, r // 2, 2, 1).mean(axis=(2, 4))
    return total if not isinstance(total, float) else jnp.zeros(())


def normalise_planes(planes: Sequence[jax.Array]) -> list[jax.Array]:
    """Each image's plane shifted and scaled to zero mean and unit variance."""
    out = []
    for p in planes:
        p = p - jnp.mean(p, axis=(1, 2, 3), keepdims=True)
        out.append(p * jax.lax.rsqrt(jnp.mean(jnp.square(p), axis=(1, 2, 3), keepdims=True) + 1e-12))
    return out


def feature_fn(extractor: features_lib.Extractor | None) -> Callable[[jax.Array], jax.Array] | None:
    """images f32 [B,H,W,C] in [-1, 1] -> unit-norm features f32 [B,D] (differentiable), channels adapted."""
    if extractor is None:
        return None

    def fn(x):
        c, need = x.shape[-1], extractor.channels
        if need is not None and c != need:
            if need == 3 and c == 1:
                x = jnp.repeat(x, 3, axis=-1)
            elif need == 1 and c == 3:
                x = jnp.mean(x, axis=-1, keepdims=True)
            else:
                raise ValueError(f"The {extractor.kind} extractor needs {need}-channel images; got {c}.")
        f = extractor.fn(x).astype(jnp.float32).reshape(x.shape[0], -1)
        return f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-8)

    return fn


def distances(x: jax.Array, target: jax.Array, target_features: jax.Array | None,
              features: Callable | None, settings: Settings) -> dict[str, jax.Array]:
    """Per-image pixel MSE, perceptual distance and their weighted sum ('distance'), each f32 [B]."""
    pixel = jnp.mean(jnp.square(x.astype(jnp.float32) - target), axis=(1, 2, 3))
    if features is None or target_features is None:
        perceptual = jnp.zeros_like(pixel)
        total = settings.pixel_weight * pixel
    else:
        perceptual = jnp.sum(jnp.square(features(x) - target_features), axis=-1)
        total = settings.pixel_weight * pixel + settings.perceptual_weight * perceptual
    return {"pixel_mse": pixel, "perceptual": perceptual, "distance": total}


# ----------------------------------------------------------------------------------------------
# Generators: what inversion needs from a trained family, per space.


@dataclasses.dataclass(frozen=True)
class Adapter:
    """One trained generator seen from one latent space."""

    space: str
    latent_shape: tuple[int, ...]             # one image's latent: (d,), (w_dim,) or (num_ws, w_dim)
    noise_shapes: tuple[tuple[int, ...], ...]  # one image's optimised noise planes (r, r, 1); () = none
    num_classes: int                          # 0: unconditional
    # (state, latent [B,*latent_shape], noise planes [[B,r,r,1], ...], labels int [B]) -> images f32 [B,H,W,C]
    synthesize: Callable[..., jax.Array]
    # latent [B,*latent_shape] -> prior penalty f32 [B] (weighted)
    prior: Callable[[jax.Array], jax.Array]


def default_space(config) -> str:
    """The space `config`'s generator is inverted in unless told: its family's first latent space
    ('z' for a family without one, which `adapter` then refuses)."""
    return (trainers.family(config.trainer).latent_spaces or ("z",))[0]


def adapter(config, trainer: Any, settings: Settings) -> Adapter:
    """The `Adapter` for `config`'s family in `settings.space` (ValueError for what cannot be inverted).

    trainer: the family's module; the 'w' / 'w+' spaces build StyleGAN2's G from its `build_models`.
    """
    family = trainers.family(config.trainer)
    if not family.latent_spaces:
        raise ValueError(f"Projection needs a latent generator; config.trainer={config.trainer!r} is not one "
                         "(label-map families and per-class runs cannot be inverted; project one class's "
                         "workdir of a per-class run instead).")
    if settings.space not in family.latent_spaces:
        raise ValueError(f"--space {settings.space} exists for {', '.join(trainers.with_latent_space(settings.space))} "
                         f"only; {config.trainer!r} ({family.name}) models are inverted in "
                         f"{', '.join(family.latent_spaces)}: use --space {family.latent_spaces[0]}.")
    k = int(config.model.get("num_classes", 0) or 0)
    if settings.space == "z":
        d = int(config.model.latent_dim)

        def synthesize(state, z, noise, labels):
            del noise
            return family.generate(config, state, z, labels if k else None)

        prior = lambda z: settings.prior_weight * lco.prior_penalty(z, "shell")
        return Adapter("z", (d,), (), k, synthesize, prior)
    g, _ = trainer.build_models(config)
    num_ws, w_dim = g.num_ws, int(config.model.w_dim)
    shape = (w_dim,) if settings.space == "w" else (num_ws, w_dim)
    optimise_noise = settings.noise == "optimise" and g.use_noise
    planes = noise_plane_sizes(g.img_resolution) if optimise_noise else ()

    def synthesize(state, w, noise, labels):
        del labels  # the class entered through the start (`initial_w`)
        variables = {"params": state.extra["g_ema_params"], "stats": state.g_stats}
        ws = jnp.broadcast_to(w[:, None, :], (w.shape[0], num_ws, w_dim)) if w.ndim == 2 else w
        if not optimise_noise:
            return g.apply(variables, ws, "const", method=g.synthesize)
        return _synthesis_with_noise(g, variables, ws, noise)

    return Adapter(settings.space, shape, tuple((r, r, 1) for r in planes), k, synthesize,
                   lambda w: jnp.zeros(w.shape[:1], jnp.float32))


def noise_plane_sizes(resolution: int) -> list[int]:
    """Side of each noise plane of a StyleGAN2 synthesis network, in the model's order (4, 8, 8, ...)."""
    return [r for r in sg.synthesis_resolutions(resolution) for _ in range(1 if r == 4 else 2)]


def _synthesis_with_noise(g: sg.Generator, variables: Any, ws: jax.Array, planes: Sequence[jax.Array]) -> jax.Array:
    """G's synthesis of ws [B,num_ws,w_dim] with the given noise planes [B,r,r,1] (model order) in
    place of the ones it would draw: `SynthesisNetwork._noise_planes` is intercepted."""
    sizes = noise_plane_sizes(g.img_resolution)
    if [p.shape[1] for p in planes] != sizes:
        raise ValueError(f"Noise planes of sides {[p.shape[1] for p in planes]} given; the synthesis network "
                         f"takes {sizes}.")
    by_res: dict[int, list[jax.Array]] = {r: [] for r in sg.synthesis_resolutions(g.img_resolution)}
    for p in planes:
        by_res[p.shape[1]].append(p)
    used = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "_noise_planes" and isinstance(context.module, sg.SynthesisNetwork):
            used.append(True)
            return by_res
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        out = g.apply(variables, ws, "const", method=g.synthesize)
    if not used:
        raise RuntimeError("models/stylegan2.py SynthesisNetwork no longer draws its noise in _noise_planes, so "
                           "the projector's noise planes were ignored; update studies/inversion.py "
                           "(_synthesis_with_noise) or project with noise='const'.")
    return out


def initial_w(config, trainer: Any, state: Any, num_classes: int, settings: Settings,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """StyleGAN2: per class the mean w f32 [max(K,1), w_dim] of `w_avg_samples` mapped latents and
    their std (sqrt of the mean squared distance to it, NVlabs' w_std) f32 [max(K,1)]."""
    g, _ = trainer.build_models(config)
    variables = {"params": state.extra["g_ema_params"], "stats": state.g_stats}
    n = settings.w_avg_samples
    z = jax.random.normal(jax.random.PRNGKey(seed), (n, int(config.model.latent_dim)))
    mapw = jax.jit(lambda v, z, c: g.apply(v, z, c, method=g.map)[:, 0])
    means, stds = [], []
    for k in range(max(num_classes, 1)):
        c = jnp.full((n,), k, jnp.int32) if num_classes else None
        w = np.asarray(mapw(variables, z, c), np.float64)
        mean = w.mean(axis=0)
        means.append(mean)
        stds.append(np.sqrt(np.sum(np.square(w - mean)) / n))
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


# ----------------------------------------------------------------------------------------------
# The optimisation.


def project_batch(ad: Adapter, features: Callable | None, settings: Settings, state: Any, targets: jax.Array,
                  labels: jax.Array, latent0: jax.Array, latent_std: jax.Array, noise0: Sequence[jax.Array],
                  keys: jax.Array) -> dict[str, Any]:
    """Projects targets f32 [B,H,W,C] (labels int [B], starts latent0 [B,*latent_shape] with latent
    std f32 [B], noise planes [[B,r,r,1], ...], PRNG keys [B,2]).

    Returns latent, noise, images (the reconstruction), pixel_mse / perceptual / distance f32 [B]
    at the end (no latent noise) and `initial_distance` f32 [B] at the start. Pure: jit with ad,
    features, settings bound.
    """
    targets = targets.astype(jnp.float32)
    target_features = None if features is None else jax.lax.stop_gradient(features(targets))
    tx = optax.adam(learning_rate(settings), b1=0.9, b2=0.999, eps=1e-8)
    std = latent_std.reshape((-1,) + (1,) * len(ad.latent_shape))

    def measure(latent, noise):
        x = ad.synthesize(state, latent, noise, labels)
        return x, distances(x, targets, target_features, features, settings)

    def objective(params, step):
        noise_keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 0), step))(keys)
        eps = jax.vmap(lambda k: jax.random.normal(k, ad.latent_shape))(noise_keys)
        latent = params["latent"] + std * latent_noise_scale(settings, step) * eps
        _, d = measure(latent, params["noise"])
        per_image = d["distance"] + ad.prior(params["latent"])
        if params["noise"]:
            per_image = per_image + settings.noise_weight * noise_regulariser(params["noise"])
        return jnp.sum(per_image)

    grad_fn = jax.grad(objective)

    def step_fn(carry, step):
        params, opt_state = carry
        grads = grad_fn(params, step)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        params = {"latent": params["latent"], "noise": normalise_planes(params["noise"])}
        return (params, opt_state), None

    params = {"latent": latent0.astype(jnp.float32), "noise": [p.astype(jnp.float32) for p in noise0]}
    _, initial = measure(params["latent"], params["noise"])
    (params, _), _ = jax.lax.scan(step_fn, (params, tx.init(params)), jnp.arange(settings.steps))
    x, final = measure(params["latent"], params["noise"])
    return {"latent": params["latent"], "noise": params["noise"], "images": x, **final,
            "initial_distance": initial["distance"]}


@dataclasses.dataclass
class Result:
    """Projections of N images (numpy)."""

    latents: np.ndarray            # f32 [N, *latent_shape]
    noise: list[np.ndarray]        # StyleGAN2 with optimised noise: f32 [N,r,r,1] per plane; else []
    labels: np.ndarray             # int [N]: the class used (-1 unconditional)
    reconstructions: np.ndarray    # f32 [N,H,W,C] in [-1, 1]
    pixel_mse: np.ndarray          # f32 [N]
    perceptual: np.ndarray         # f32 [N] (0 without an extractor)
    distance: np.ndarray           # f32 [N]: the weighted sum the optimiser minimised (without priors)
    initial_distance: np.ndarray   # f32 [N]: at the start
    class_distance: np.ndarray | None  # f32 [N,K] final distance per tried class ('search'), else None


class Projector:
    """A trained generator's projector: compiled once, called on any number of images."""

    def __init__(self, config, state: Any, settings: Settings, *, extractor: features_lib.Extractor | None = None,
                 seed: int = 0):
        settings.validate()
        self.config, self.state, self.settings, self.seed = config, state, settings, seed
        self.trainer = trainers.get(config.trainer)
        self.adapter = adapter(config, self.trainer, settings)
        self.extractor = extractor
        self.features = feature_fn(extractor)
        self.num_classes = self.adapter.num_classes
        self._fn = jax.jit(functools.partial(project_batch, self.adapter, self.features, settings))
        self._gen = jax.jit(lambda st, z, lab: self.adapter.synthesize(st, z, [], lab))
        self._feat = None if self.features is None else jax.jit(self.features)
        self._start = None

    # -- starts --------------------------------------------------------------------------------

    def _starts(self):
        """Per class: (start latents pool [M,*latent_shape] or one mean w, latent std, pool images | None)."""
        if self._start is None:
            s, k = self.settings, max(self.num_classes, 1)
            if self.adapter.space == "z":
                z = np.asarray(jax.random.normal(jax.random.PRNGKey(self.seed ^ 0x1A7E), (s.init_pool,
                                                                                         *self.adapter.latent_shape)))
                pools = []
                for c in range(k):
                    labels = np.full((s.init_pool,), c if self.num_classes else -1, np.int32)
                    pools.append(self._synthesize_rows(z, labels))
                self._start = {"pool": z, "pool_images": pools, "pool_features": {}, "std": np.ones((k,), np.float32)}
            else:
                means, stds = initial_w(self.config, self.trainer, self.state, self.num_classes, s, self.seed)
                if self.adapter.space == "w+":
                    means = np.repeat(means[:, None, :], self.adapter.latent_shape[0], axis=1)
                self._start = {"mean": means, "std": stds}
        return self._start

    def _synthesize_rows(self, latents: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """G's images f32 [M,H,W,C] for latents [M,*latent_shape] and labels int [M] (without noise planes)."""
        b = self.settings.batch_size
        out = []
        for i in range(0, len(latents), b):
            z, lab = _pad(latents[i:i + b], b), _pad(labels[i:i + b], b)
            out.append(np.asarray(self._gen(self.state, z, lab), np.float32)[:len(latents[i:i + b])])
        return np.concatenate(out)

    def _initial(self, targets: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start latents f32 [R,*latent_shape], latent std f32 [R]) for rows of targets and classes."""
        st = self._starts()
        cls = np.maximum(labels, 0)
        if self.adapter.space != "z":
            return st["mean"][cls], st["std"][cls]
        out = np.empty((len(targets), *self.adapter.latent_shape), np.float32)
        feats = self.features
        for c in np.unique(cls):
            rows = np.flatnonzero(cls == c)
            pool = st["pool_images"][c]
            d = self.settings.pixel_weight * _pairwise_mse(targets[rows], pool)
            if feats is not None:
                if c not in st["pool_features"]:
                    st["pool_features"][c] = self._features(pool)
                ft, fp = self._features(targets[rows]), st["pool_features"][c]
                d = d + self.settings.perceptual_weight * np.sum(np.square(ft[:, None] - fp[None]), axis=-1)
            out[rows] = st["pool"][np.argmin(d, axis=1)]
        return out, st["std"][cls]

    def _features(self, x: np.ndarray) -> np.ndarray:
        """Unit-norm features f32 [M,D] of images [M,H,W,C] (`feature_fn`)."""
        b = self.settings.batch_size
        return np.concatenate([np.asarray(self._feat(_pad(x[i:i + b], b)))[:len(x[i:i + b])]
                               for i in range(0, len(x), b)])

    # -- projection ----------------------------------------------------------------------------

    def classes_for(self, labels: np.ndarray | None, class_mode: int | str | None) -> list:
        """The tries: per try the class of every image (an int, or int [N] for 'label'; None when
        unconditional); K tries for 'search', else one."""
        if not self.num_classes:
            if class_mode is not None:
                raise ValueError("--class was given but this model is unconditional (model.num_classes = 0).")
            return [None]
        if class_mode == SEARCH:
            return [k for k in range(self.num_classes)]
        if class_mode == LABEL:
            if labels is None or np.any(np.asarray(labels) < 0) or np.asarray(labels).ndim != 1:
                raise ValueError("--class label needs every image's class label (int >= 0); these images have "
                                 "none: pass --class NAME|INDEX or --class search.")
            if np.any(np.asarray(labels) >= self.num_classes):
                raise ValueError(f"Image labels go up to {int(np.max(labels))} but the model has classes "
                                 f"0..{self.num_classes - 1}.")
            return [np.asarray(labels, np.int32)]
        if class_mode is None or not 0 <= int(class_mode) < self.num_classes:
            raise ValueError(f"Class {class_mode!r}: expected an index in 0..{self.num_classes - 1}, "
                             f"'{LABEL}' or '{SEARCH}'.")
        return [int(class_mode)]

    def __call__(self, images: np.ndarray, labels: np.ndarray | None = None, class_mode: int | str | None = None,
                 indices: np.ndarray | None = None) -> Result:
        """Projects images f32 [N,H,W,C] in [-1, 1]; `indices` int [N] seed each image's PRNG key
        (default 0..N-1), so a chunk of a longer list gets the keys it would get in one call."""
        images = np.asarray(images, np.float32)
        expected = tuple(int(v) for v in (self.config.data.image_size, self.config.data.image_size,
                                          self.config.data.channels))
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"Images to project must be [N, {expected[0]}, {expected[1]}, {expected[2]}] (the "
                             f"model's data.image_size and data.channels); got {images.shape}.")
        n = len(images)
        indices = np.arange(n) if indices is None else np.asarray(indices)
        tries = self.classes_for(labels, class_mode)
        results = []
        for t, cls in enumerate(tries):
            row_labels = (np.full((n,), -1, np.int32) if cls is None else
                          np.broadcast_to(np.asarray(cls, np.int32), (n,)).copy())
            results.append(self._rows(images, row_labels, indices, t))
        if len(results) == 1:
            out = results[0]
            return Result(**out, class_distance=None)
        dist = np.stack([r["distance"] for r in results], axis=1)  # [N, K]
        best = np.argmin(dist, axis=1)
        pick = lambda key: np.stack([results[k][key][i] for i, k in enumerate(best)])
        return Result(latents=pick("latents"),
                      noise=[np.stack([results[k]["noise"][j][i] for i, k in enumerate(best)])
                             for j in range(len(results[0]["noise"]))],
                      labels=best.astype(np.int32), reconstructions=pick("reconstructions"),
                      pixel_mse=pick("pixel_mse"), perceptual=pick("perceptual"), distance=pick("distance"),
                      initial_distance=pick("initial_distance"), class_distance=dist.astype(np.float32))

    def _rows(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, attempt: int) -> dict:
        latent0, std = self._initial(images, labels)
        base = jax.random.PRNGKey(self.seed)
        keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), attempt))(
            jnp.asarray(indices, jnp.uint32)))
        noise0 = [np.asarray(jax.vmap(lambda k: jax.random.normal(
            jax.random.fold_in(jax.random.fold_in(k, 1), j), shape))(keys),
                             np.float32) for j, shape in enumerate(self.adapter.noise_shapes)]
        b = self.settings.batch_size
        parts = []
        for i in range(0, len(images), b):
            m = len(images[i:i + b])
            args = [_pad(a[i:i + b], b) for a in (images, labels, latent0, std)]
            out = self._fn(self.state, *args, [_pad(p[i:i + b], b) for p in noise0], _pad(keys[i:i + b], b))
            parts.append(jax.tree_util.tree_map(lambda v: np.asarray(v)[:m], out))
        cat = lambda key: np.concatenate([p[key] for p in parts])
        return {"latents": cat("latent").astype(np.float32),
                "noise": [np.concatenate([p["noise"][j] for p in parts]) for j in range(len(noise0))],
                "labels": labels.astype(np.int32), "reconstructions": np.clip(cat("images"), -1, 1),
                "pixel_mse": cat("pixel_mse"), "perceptual": cat("perceptual"), "distance": cat("distance"),
                "initial_distance": cat("initial_distance")}


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    """x [m, ...] padded to [n, ...] by repeating its last row (m <= n)."""
    x = np.asarray(x)
    if len(x) == n:
        return x
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def _pairwise_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared pixel difference f64 [N,M] between images a [N,...] and b [M,...]."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    d2 = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0) / a.shape[1]


# ----------------------------------------------------------------------------------------------
# Images to project.


def load_images(path: str, image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(images f32 [N,H,W,C] in [-1, 1], labels int [N] or None) from an .npz (`images` uint8, or
    float in [-1, 1]; optional `labels`, e.g. `jaxmedgan sample`'s samples.npz) or a folder of
    PNG/JPEG files (natural order)."""
    from PIL import Image

    expected = (image_size, image_size, channels)
    if os.path.isfile(path) and path.endswith(".npz"):
        with np.load(path) as npz:
            if "images" not in npz:
                raise ValueError(f"{path} has no 'images' array (keys: {sorted(npz.files)}).")
            x = np.asarray(npz["images"])
            labels = np.asarray(npz["labels"]).astype(np.int64) if "labels" in npz and npz["labels"].ndim == 1 else None
        if x.ndim == 3:
            x = x[..., None]
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 127.5 - 1.0
        elif x.size and (x.min() < -1.01 or x.max() > 1.01):
            raise ValueError(f"{path}: float 'images' must lie in [-1, 1]; found {x.min():.3g}..{x.max():.3g}.")
        if x.shape[1:] != expected:
            raise ValueError(f"{path}: images are {x.shape[1:]} (H, W, C) but the model makes {expected}.")
        return x.astype(np.float32), labels
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--images {path}: neither a folder of images nor an .npz file.")
    files = sorted((f for f in os.listdir(path) if f.lower().endswith((".png", ".jpg", ".jpeg"))),
                   key=readers.natural_key)
    if not files:
        raise ValueError(f"--images {path} holds no .png/.jpg files.")
    out = []
    for f in files:
        with Image.open(os.path.join(path, f)) as im:
            a = np.asarray(im.convert("L" if channels == 1 else "RGB"))
        a = a[..., None] if a.ndim == 2 else a
        if a.shape != expected:
            raise ValueError(f"{os.path.join(path, f)} is {a.shape} (H, W, C) but the model makes {expected}; "
                             "resize the images first.")
        out.append(a)
    return np.stack(out).astype(np.float32) / 127.5 - 1.0, None


def split_images(config, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images f32 [N,H,W,C] in [-1, 1], labels int [N] or None) of the run's dataset split:
    'train' or 'heldout' (the built dataset's 'test' split)."""
    data_dir = datasets.prepare(config)
    name = {"train": "train", "heldout": "test"}[split]
    if name not in tfds_builders.split_names(data_dir, config.data.source):
        raise ValueError(f"The dataset in {data_dir} has no '{name}' split (build it with a hold-out fraction).")
    x, y = tfds_builders.load_arrays(data_dir, config.data.source, name)
    return x, (np.asarray(y, np.int64) if np.asarray(y).ndim == 1 else None)


# ----------------------------------------------------------------------------------------------
# Resumable projection of many images into a folder.


def project_to_dir(workdir: str, out: str, images: np.ndarray, labels: np.ndarray | None, settings: Settings, *,
                   class_mode: int | str | None = None, extractor: features_lib.Extractor | None = None,
                   source: dict | None = None, chunk: int = 64, seed: int = 0, step: int | None = None) -> dict:
    """Projects images f32 [N,H,W,C] onto the generator of `workdir` (checkpoint `step`, default latest), `chunk`
    images at a time; each finished chunk is written (OUT/chunks/chunk_SSSSSS.npz then .json,
    atomically) and skipped when the same command runs again. Then writes:

    * latents.npz: latents f32 [N,*latent_shape], noise_J f32 [N,r,r,1] (StyleGAN2 planes, model
      order), labels (class used; -1 unconditional), index (into the given images),
      reconstructions and targets uint8 [N,H,W,C], pixel_mse, perceptual, distance,
      initial_distance f32 [N], class_distance f32 [N,K] ('search');
    * distances.json: one record per image; inversion.json: settings and summary;
    * grid.png: target | reconstruction pairs (up to 32, in order).
    Returns the summary.
    """
    config, state, ckpt_step = sampling.restore_state(workdir, step)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}.")
    projector = Projector(config, state, settings, extractor=extractor, seed=seed)
    names = sampling.class_names(workdir, config) if projector.num_classes else []
    run = {"workdir": os.path.abspath(workdir), "checkpoint_step": int(ckpt_step), "settings": dataclasses.asdict(settings),
           "class_mode": class_mode, "features": None if extractor is None else extractor.description,
           "source": source or {}, "num_images": int(len(images)), "chunk": chunk, "seed": seed,
           "images_sha1": hashlib.sha1(np.ascontiguousarray(images, np.float32).tobytes()).hexdigest()}
    run_path = os.path.join(out, "run.json")
    previous = atomic_io.read_json(run_path)
    if previous is not None and previous != json.loads(json.dumps(run)):
        diff = sorted(k for k in set(previous) | set(run) if previous.get(k) != json.loads(json.dumps(run)).get(k))
        raise ValueError(f"{out} holds a projection made with other settings (differing: {', '.join(diff)}); "
                         "choose another --out or repeat the original command to resume it.")
    os.makedirs(os.path.join(out, "chunks"), exist_ok=True)
    atomic_io.write_json(run_path, run, indent=1)
    done = skipped = 0
    for start in range(0, len(images), chunk):
        base = os.path.join(out, "chunks", f"chunk_{start:06d}")
        if os.path.isfile(base + ".json") and os.path.isfile(base + ".npz"):
            skipped += 1
            continue
        stop = min(start + chunk, len(images))
        res = projector(images[start:stop], None if labels is None else labels[start:stop], class_mode,
                        indices=np.arange(start, stop))
        arrays = {"latents": res.latents, "labels": res.labels, "reconstructions": image_utils.to_uint8(res.reconstructions),
                  "pixel_mse": res.pixel_mse, "perceptual": res.perceptual, "distance": res.distance,
                  "initial_distance": res.initial_distance, "index": np.arange(start, stop)}
        arrays.update({f"noise_{j}": p for j, p in enumerate(res.noise)})
        if res.class_distance is not None:
            arrays["class_distance"] = res.class_distance
        atomic_io.write_npz(base + ".npz", arrays)
        atomic_io.write_json(base + ".json", {"start": start, "stop": stop, "mean_distance": float(res.distance.mean())})
        done += 1
        log.info("Projected images %d..%d of %d (mean distance %.4g, from %.4g at the start).", start, stop - 1,
                 len(images), float(res.distance.mean()), float(res.initial_distance.mean()))
    if skipped:
        log.info("Skipped %d chunk(s) already projected in %s.", skipped, out)
    return _assemble(out, images, run, names, done, skipped)


def _assemble(out: str, images: np.ndarray, run: dict, names: Sequence[str], done: int, skipped: int) -> dict:
    parts = []
    for start in range(0, run["num_images"], run["chunk"]):
        with np.load(os.path.join(out, "chunks", f"chunk_{start:06d}.npz")) as npz:
            parts.append({k: npz[k] for k in npz.files})
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    merged["targets"] = image_utils.to_uint8(images)
    merged["class_names"] = np.asarray(list(names), dtype=str)
    merged["checkpoint_step"] = run["checkpoint_step"]
    atomic_io.write_npz(os.path.join(out, "latents.npz"), merged)
    name = lambda k: (names[k] if 0 <= k < len(names) else None)
    records = []
    for i in range(len(merged["index"])):
        r = {"index": int(merged["index"][i]), "class": name(int(merged["labels"][i])),
             "label": int(merged["labels"][i]), "pixel_mse": float(merged["pixel_mse"][i]),
             "perceptual": float(merged["perceptual"][i]), "distance": float(merged["distance"][i]),
             "initial_distance": float(merged["initial_distance"][i])}
        if "class_distance" in merged:
            r["class_distance"] = {name(k) or str(k): float(v) for k, v in enumerate(merged["class_distance"][i])}
        records.append(r)
    atomic_io.write_json(os.path.join(out, "distances.json"), records, indent=1)
    d, d0 = merged["distance"], merged["initial_distance"]
    summary = {**run, "class_names": list(names), "chunks_projected": done, "chunks_skipped": skipped,
               "mean_distance": float(d.mean()), "median_distance": float(np.median(d)),
               "mean_initial_distance": float(d0.mean()), "mean_pixel_mse": float(merged["pixel_mse"].mean()),
               "mean_perceptual": float(merged["perceptual"].mean()),
               "outputs": {"latents": "latents.npz", "distances": "distances.json", "grid": "grid.png"}}
    atomic_io.write_json(os.path.join(out, "inversion.json"), summary, indent=1)
    m = min(32, len(d))
    pairs = np.concatenate([merged["targets"][:m], merged["reconstructions"][:m]], axis=2)
    image_utils.save_png(os.path.join(out, "grid.png"), image_utils.grid(pairs, rows=max(1, -(-m // 4))))
    return summary


# ----------------------------------------------------------------------------------------------
# `jaxmedgan project`.


def project_command(argv: list[str]) -> int:
    """`jaxmedgan project --workdir W (--images DIR|NPZ | --split train|heldout) --out DIR ...`."""
    p = argparse.ArgumentParser(prog="jaxmedgan project", description="GAN inversion: the latents with which a "
                                "trained generator best reproduces given images (resumable: rerun to continue).")
    p.add_argument("--workdir", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", default=None, help="a folder of PNG/JPEG images or an .npz with 'images' "
                     "(uint8, or float in [-1, 1]) and optional 'labels'")
    src.add_argument("--split", choices=("train", "heldout"), default=None, help="the run's own dataset split")
    p.add_argument("--num", type=int, default=None, help="images to project (default all; a --split is "
                   "subsampled at random by --seed, --images takes the first N)")
    p.add_argument("--out", required=True)
    p.add_argument("--space", choices=SPACES, default=None,
                   help="latent space (default: the family's first of Family.latent_spaces: w for StyleGAN2, else z)")
    p.add_argument("--class", dest="class_id", default=None, metavar="NAME|INDEX|label|search",
                   help="conditional models: a class for every image, each image's own label, or try every "
                   "class and keep the best (default search)")
    p.add_argument("--steps", type=int, default=Settings.steps)
    p.add_argument("--lr", type=float, default=Settings.lr)
    p.add_argument("--noise", choices=NOISE_MODES, default=Settings.noise,
                   help="StyleGAN2 noise inputs: optimised with NVlabs' regulariser, or the model's const planes")
    p.add_argument("--noise-weight", type=float, default=Settings.noise_weight)
    p.add_argument("--pixel-weight", type=float, default=Settings.pixel_weight)
    p.add_argument("--perceptual-weight", type=float, default=Settings.perceptual_weight)
    p.add_argument("--prior-weight", type=float, default=Settings.prior_weight, help="z: shell prior weight")
    p.add_argument("--features", choices=("none", *features_lib.KINDS), default=None,
                   help="perceptual distance features (default: domain with --classifier, inception with "
                   "--inception-weights, else none = pixel distance only)")
    p.add_argument("--classifier", default=None, help="classifier workdir for --features domain")
    p.add_argument("--inception-weights", default=None, help="converted Inception npz for --features inception")
    p.add_argument("--batch-size", type=int, default=Settings.batch_size)
    p.add_argument("--chunk", type=int, default=64, help="images per resumable chunk")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        config = checkpointing.read_config(args.workdir)
        space = args.space or default_space(config)
        settings = Settings(space=space, steps=args.steps, lr=args.lr, noise=args.noise, noise_weight=args.noise_weight,
                            pixel_weight=args.pixel_weight, perceptual_weight=args.perceptual_weight,
                            prior_weight=args.prior_weight, batch_size=args.batch_size)
        settings.validate()
        extractor = make_extractor(args.features, args.classifier, args.inception_weights)
        if args.num is not None and args.num < 1:
            raise ValueError(f"--num must be >= 1, got {args.num}.")
        if args.images:
            images, labels = load_images(args.images, int(config.data.image_size), int(config.data.channels))
            pick = np.arange(len(images))[:args.num]
        else:
            images, labels = split_images(config, args.split)
            n = len(images) if args.num is None else min(args.num, len(images))
            pick = np.sort(np.random.default_rng(args.seed).choice(len(images), size=n, replace=False))
        images, labels = images[pick], (None if labels is None else labels[pick])
        class_mode = parse_class(args.class_id, args.workdir, config)
        source = {"images": os.path.abspath(args.images) if args.images else None, "split": args.split,
                  "source_index": pick.tolist()}
        summary = project_to_dir(args.workdir, args.out, images, labels, settings, class_mode=class_mode,
                                 extractor=extractor, source=source, chunk=args.chunk, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"jaxmedgan project: error: {e}", file=sys.stderr)
        return 1
    print(f"Projected {summary['num_images']} images in {space} ({summary['chunks_skipped']} chunk(s) resumed): mean "
          f"distance {summary['mean_distance']:.4g} (pixel MSE {summary['mean_pixel_mse']:.4g}), from "
          f"{summary['mean_initial_distance']:.4g} at the start. Wrote {args.out}/latents.npz, distances.json, "
          "inversion.json, grid.png")
    return 0


def make_extractor(kind: str | None, classifier: str | None, inception_weights: str | None
                   ) -> features_lib.Extractor | None:
    """The perceptual extractor named by `--features` (None: 'none', or nothing given)."""
    if kind is None:
        kind = "domain" if classifier else ("inception" if inception_weights else "none")
    if kind == "none":
        return None
    return features_lib.make(kind, classifier=classifier, inception_weights=inception_weights)


def parse_class(value: str | None, workdir: str, config) -> int | str | None:
    """`--class` -> a class index, 'label', 'search' or None (default: 'search' for a conditional model)."""
    k = int(config.model.get("num_classes", 0) or 0)
    if value is None:
        return SEARCH if k else None
    if value in (SEARCH, LABEL):
        if not k:
            raise ValueError(f"--class {value} applies to class-conditional models; this one is unconditional.")
        return value
    return sampling.resolve_class(value, sampling.class_names(workdir, config))
