"""What D sees: the data-efficient augmentation any GAN family can put in front of its discriminator.

`config.d_augment.kind` picks one of KINDS:
  none      D sees raw images.
  diffaug   DiffAugment's fixed policy `config.d_augment.policy` (augment/diffaug.py), every image.
  ada       the ADA pipeline (augment/ada.py, `config.ada.pipeline`) with probability p; p follows
            `config.ada` (augment/controller.py): 'fixed' keeps `ada.p`, 'adaptive' moves it by
            StyleGAN2-ADA's overfitting heuristic r_t = E[sign(D(real))], here inside the jitted
            step (`update_p`), so the families without a host-side step need no extra hook.
  leak_test_<t>  TEST / DEMONSTRATION SWITCH THAT BREAKS TRAINING ON PURPOSE: the fixed transform t
            of augment/leak_transforms.py (hflip, vflip, rot90, rot180, rot270, transpose,
            antitranspose, invert) on every one of D's REAL inputs, never on generated ones, so G
            learns to emit transformed images -- a forced augmentation leak for testing `jaxmedgan
            evaluate leak`. The trainer must say which inputs are real (`__call__(..., real=)`): only
            trainers/gan.py does; the other families (and `pair`) refuse it.

Both pipelines act per image with per-image randomness, so they run under DP-SGD (inside the
per-example clipped loss); an *adaptive* p is refused there, because it is computed from D's
outputs on private data and the accountant does not count it (`check_dp`).

A conditional D that reads (condition map, image) pairs (pix2pix) calls `DAugment.pair`: every
geometric op moves map and image identically (the same draws on their channel concatenation), colour
ops touch the image only. Under ADA the map is resampled like the image (wavelet up-sampling,
bilinear, down-sampling), so a one-hot map stays one-hot (to float error) under integer translation
only: every other geometric op, x-flip and 90-degree rotation included (the sym6 filter is not
symmetric), leaves soft values near label boundaries -- on real and generated pairs alike.

The state a family carries for it (`init_extra`, in `GANState.extra`): `aug_p` f32 [], and for an
adaptive p `aug_sign_sum` / `aug_sign_count` f32 [] since the last update.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from jaxmedgan.augment import ada, controller, diffaug, leak_transforms

LEAK_TEST_PREFIX = "leak_test_"  # + a fixed transform: the forced-leak test switch (module docstring)
LEAK_TEST_KINDS = tuple(LEAK_TEST_PREFIX + t for t in leak_transforms.FIXED if t != "identity")
KINDS = ("none", "diffaug", "ada", *LEAK_TEST_KINDS)


@dataclasses.dataclass(frozen=True)
class DAugment:
    """The configured D augmentation (`from_config`); `kind='none'` is the identity."""

    kind: str = "none"
    ops: tuple[str, ...] = diffaug.OPS  # diffaug only
    ada_settings: controller.AdaSettings = controller.AdaSettings(mode="none")  # ada only
    pipeline: str = "bgc"  # ada only: augment.ada.PIPELINES

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "DAugment":
        """Reads `config.d_augment` (absent: 'none', what runs before it existed trained with) and,
        for kind 'ada', `config.ada`. ValueError naming the key for a bad value."""
        section = config.get("d_augment")
        kind = "none" if section is None else str(section.get("kind", "none"))
        if kind not in KINDS:
            raise ValueError(f"config.d_augment.kind={kind!r} must be one of {KINDS}.")
        if kind == "diffaug":
            ops = diffaug.parse_policy(str(section.get("policy", ",".join(diffaug.OPS))))
            return cls(kind=kind, ops=ops)
        if kind == "ada":
            if config.get("ada") is None:
                raise ValueError("config.d_augment.kind='ada' needs a config.ada section (mode, p, target, "
                                 "interval, kimg, pipeline; see configs/common.py::ada).")
            settings = controller.AdaSettings.from_config(config.ada)
            pipeline = str(config.ada.get("pipeline", "bgc"))
            ada.pipeline(pipeline)  # validates the name
            return cls(kind=kind, ada_settings=settings, pipeline=pipeline)
        return cls(kind=kind)

    @property
    def active(self) -> bool:
        """Whether D's inputs are augmented at all."""
        return (self.kind == "diffaug" or (self.kind == "ada" and self.ada_settings.augments)
                or self.leak_test is not None)

    @property
    def leak_test(self) -> str | None:
        """The fixed transform the leak-test switch applies to D's real inputs (kind 'leak_test_<t>'), else None."""
        return self.kind[len(LEAK_TEST_PREFIX):] if self.kind.startswith(LEAK_TEST_PREFIX) else None

    @property
    def adaptive(self) -> bool:
        return self.kind == "ada" and self.ada_settings.mode == "adaptive"

    def check_dp(self, private: bool) -> None:
        """Refuses an adaptive ADA p under DP (it reads D's outputs on private data)."""
        if private and self.adaptive:
            raise ValueError("DP-SGD is enabled (config.privacy.enabled=True) with config.d_augment.kind='ada' and "
                             "config.ada.mode='adaptive': the adaptive p is computed from D's outputs on private "
                             "images, which the accountant does not count. Use --config.ada.mode=fixed with "
                             "--config.ada.p=P, or --config.d_augment.kind=diffaug (both per example, DP-safe).")

    def init_extra(self) -> dict:
        """The state entries this augmentation needs (empty when inactive)."""
        if self.kind != "ada":
            return {}
        out = {"aug_p": jnp.asarray(self.ada_settings.p if self.ada_settings.augments else 0.0, jnp.float32)}
        if self.adaptive:
            out.update(aug_sign_sum=jnp.zeros((), jnp.float32), aug_sign_count=jnp.zeros((), jnp.float32))
        return out

    def per_example(self, images: jax.Array, key: jax.Array, extra: dict, *, real: bool | None = None) -> jax.Array:
        """`self` applied to each image with its own key (split(key, N)[i]): image i's draw depends
        on (key, i) alone, not on N. DP batches need that: their row count can follow the private
        Poisson draw (privacy.padding_buckets), which must not change any real example's view."""
        keys = jax.random.split(key, images.shape[0])
        return jax.vmap(lambda x, k: self(x[None], k, extra, real=real)[0])(images, keys)

    def __call__(self, images: jax.Array, key: jax.Array, extra: dict, *, real: bool | None = None) -> jax.Array:
        """images f32 [N,H,W,C] in [-1,1] as D should see them (differentiable; the identity if inactive).
        `extra`: the state's extra dict (reads `aug_p` for ADA). `real`: whether these are real images;
        only the leak-test switch reads it, and refuses None (a trainer that does not say)."""
        if self.leak_test is not None:
            if real is None:
                raise ValueError(f"config.d_augment.kind={self.kind!r} is a test switch that transforms D's real "
                                 "inputs only; this trainer does not say which inputs are real (only the DCGAN / "
                                 "ACGAN trainer, trainers/gan.py, does). Use it with that trainer.")
            return leak_transforms.apply(self.leak_test, images) if real else images
        if not self.active:
            return images
        if self.kind == "diffaug":
            return diffaug.augment(images, key, self.ops)
        return ada.augment(images, key, extra["aug_p"], ada.pipeline(self.pipeline))

    def pair(self, cond: jax.Array, images: jax.Array, key: jax.Array, extra: dict) -> tuple[jax.Array, jax.Array]:
        """(condition map f32 [N,H,W,K], images f32 [N,H,W,C] in [-1,1]) as a conditional D should see
        them: geometric ops identical for both, colour on the images only (`diffaug.augment_pair`,
        `ada_pair`); the identity if inactive. The image part equals `self(images, key, extra)`."""
        if self.leak_test is not None:
            raise ValueError(f"config.d_augment.kind={self.kind!r} (a test switch for unconditioned DCGAN / ACGAN "
                             "runs) is not available for (condition map, image) pairs.")
        if not self.active:
            return cond, images
        if self.kind == "diffaug":
            return diffaug.augment_pair(cond, images, key, self.ops)
        return ada_pair(cond, images, key, extra["aug_p"], ada.pipeline(self.pipeline))

    def update_p(self, extra: dict, real_logits: jax.Array, step: jax.Array, batch_size: int) -> dict:
        """The adaptive p after a step (pure, jittable): accumulates sum(sign(D(real))) over
        real_logits f32 [B], and every `ada.interval` completed steps (`step` = steps done, i32 [])
        moves `aug_p` by `controller.adjust`'s rule and resets the sums. Other kinds: `extra` unchanged."""
        if not self.adaptive:
            return extra
        s = self.ada_settings
        sign_sum = extra["aug_sign_sum"] + jnp.sum(jnp.sign(real_logits))
        count = extra["aug_sign_count"] + real_logits.shape[0]
        due = (step % s.interval) == 0
        r_t = sign_sum / jnp.maximum(count, 1.0)
        moved = extra["aug_p"] + jnp.sign(r_t - s.target) * batch_size * s.interval / (s.kimg * 1000.0)
        return {**extra,
                "aug_p": jnp.where(due, jnp.clip(moved, 0.0, 1.0), extra["aug_p"]),
                "aug_sign_sum": jnp.where(due, 0.0, sign_sum),
                "aug_sign_count": jnp.where(due, 0.0, count)}

    def metrics(self, extra: dict) -> dict:
        """`aug_p` for the training log (ADA only)."""
        return {"aug_p": extra["aug_p"]} if self.kind == "ada" else {}


def ada_pair(cond: jax.Array, images: jax.Array, key: jax.Array, p: float | jax.Array,
             config: ada.AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """ADA on (condition map f32 [N,H,W,K], images f32 [N,H,W,C]) pairs: `ada.augment`'s geometric
    transform on their channel concatenation (one draw per example for both), then its colour
    transform on the images only. With the same key the image part equals
    `ada.augment(images, key, p, config)` (the geometric and colour draws use separate sub-keys)."""
    if cond.ndim != 4 or images.ndim != 4 or cond.shape[:3] != images.shape[:3]:
        raise ValueError(f"ADA pairs need NHWC map and image with the same [N,H,W]; got map {cond.shape} "
                         f"and image {images.shape}.")
    geometric = dataclasses.replace(config, **{op: 0.0 for op in ada.PIPELINES["color"]})
    colour = dataclasses.replace(config, **{op: 0.0 for op in ada.PIPELINES["bg"]})
    k = cond.shape[-1]
    x = ada.augment(jnp.concatenate([cond.astype(images.dtype), images], axis=-1), key, p, geometric)
    return x[..., :k].astype(cond.dtype), ada.augment(x[..., k:], key, p, colour)
