"""DCGAN / ACGAN trainer (liver-lesion ROIs): pure step functions + `train_and_evaluate`.

One step updates D on a real batch and a fake batch, then G, with the non-saturating logistic
loss. With `model.num_classes > 0` G is conditioned on the class, and D as `model.cond` says
(`Objective`; CE = softmax cross-entropy, w = `loss.aux_weight`):
  aux         ACGAN: D adds w CE(aux(x), y) on real and generated images, G adds w CE(aux(G(z, y)), y).
  projection  D(x, y) = psi(phi(x)) + <e_y, phi(x)>, real images with their label, generated ones
              with the label they were drawn for; no class loss.
  tac         TAC-GAN: D adds w CE(aux(x), y) on real images only and w CE(twin(G(z, y)), y) on
              generated ones; G adds w (CE(aux(G(z, y)), y) - CE(twin(G(z, y)), y)).
  proj_aux    the projection logit, plus an aux head D fits to real images only (w CE(aux(x), y))
              and G adds w CE(aux(G(z, y)), y): distribution matching per class from the projection,
              class fidelity from a classifier that generated images never train.
  d2dce       ReACGAN (Kang et al. 2021): D embeds each image, f(x), next to learnable class proxies v_k
              (unit vectors); D adds w D2DCE(f(x), v, y) on real images, G adds w D2DCE(f(G(z, y)), v, y)
              (losses/gan.py `d2dce`: proxy vs other-class samples of the batch, temperature
              `loss.d2dce_temperature`, margin m_p = `loss.d2dce_margin`; ReACGAN's 0.5 and 0.98).
`loss.kind` is the adversarial loss: 'nonsaturating' (logistic, DCGAN) or 'hinge'.
`loss.mode_seeking` = lambda > 0 adds MSGAN's lambda / (mean|G(z1,y) - G(z2,y)| / mean|z1 - z2| + 1e-5)
to G's loss, G's step then generating a second batch for z2 with the same labels (both batches
go through D). All of D's terms are per example, so each option runs under DP-SGD (mode seeking
is G-only), except d2dce: a real image's term reads the batch's other images, refused under DP.

Data-efficient options (small medical sets; issue #18): `d_augment.kind` puts DiffAugment or ADA
(`augment/policy.py`) in front of D for every image it sees (real, generated, in D's and G's step;
R1 is taken at the augmented reals); `ema.enabled` keeps an EMA of G's weights (`extra
['g_ema_params']`, half-life `ema.kimg`, StyleGAN2-ADA's ramp-up) that `generate` samples from;
`model.g_upsample` = 'nearest' | 'fir' swaps G's transposed convs for resize-convs (no
checkerboard); `loss.r1_gamma` the zero-centred gradient penalty. All are per example (DP-safe),
except an adaptive ADA p, refused under DP.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmedgan.augment import policy as aug_policy
from jaxmedgan.losses import gan as gan_losses
from jaxmedgan.models import dcgan, layers
from jaxmedgan.privacy import checks, dp_sgd
from jaxmedgan.privacy import noise as dp_noise
from jaxmedgan.privacy.config import DPConfig, dp_enabled
from jaxmedgan.state import GANState
from jaxmedgan.trainers import common


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a step minimises: `config.model.{num_classes, cond}` and `config.loss`, read only here."""

    num_classes: int = 0  # 0: unconditional DCGAN
    cond: str = "aux"  # dcgan.CONDITIONINGS; how D sees the class (only when num_classes > 0)
    aux_weight: float = 1.0  # w of every class cross-entropy term (aux and twin heads)
    mode_seeking: float = 0.0  # MSGAN lambda (0: off)
    r1_gamma: float = 0.0  # R1 gamma (0: off)
    adversarial: str = "nonsaturating"  # loss.kind: a key of losses.gan.ADVERSARIAL
    d2dce_temperature: float = 0.5  # T of cond='d2dce' (ReACGAN's CIFAR10 config: 0.5)
    d2dce_margin: float = 0.98  # m_p of cond='d2dce' (StudioGAN LOSS.m_p; negatives' margin is 1 - m_p)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Objective":
        """ValueError naming the key for a bad value. `model.cond` / `loss.mode_seeking` may be absent
        (workdirs written before they existed): 'aux' / 0, what those runs trained with; the
        `loss.d2dce_*` keys take ReACGAN's values when absent."""
        m, loss = config.model, config.loss
        obj = cls(num_classes=int(m.num_classes), cond=str(m.get("cond", "aux")),
                  aux_weight=float(loss.aux_weight), mode_seeking=float(loss.get("mode_seeking", 0.0)),
                  r1_gamma=float(loss.get("r1_gamma", 0.0)), adversarial=str(loss.get("kind", "nonsaturating")),
                  d2dce_temperature=float(loss.get("d2dce_temperature", cls.d2dce_temperature)),
                  d2dce_margin=float(loss.get("d2dce_margin", cls.d2dce_margin)))
        if obj.adversarial not in gan_losses.ADVERSARIAL:
            raise ValueError(f"config.loss.kind={obj.adversarial!r} must be one of {sorted(gan_losses.ADVERSARIAL)}.")
        if obj.num_classes and obj.cond not in dcgan.CONDITIONINGS:
            raise ValueError(f"config.model.cond={obj.cond!r} must be one of {dcgan.CONDITIONINGS}.")
        for key, value in (("loss.aux_weight", obj.aux_weight), ("loss.mode_seeking", obj.mode_seeking),
                           ("loss.r1_gamma", obj.r1_gamma)):
            if not value >= 0:
                raise ValueError(f"config.{key}={value!r} must be >= 0.")
        if not obj.d2dce_temperature > 0:
            raise ValueError(f"config.loss.d2dce_temperature={obj.d2dce_temperature!r} must be > 0.")
        if not 0 <= obj.d2dce_margin <= 1:
            raise ValueError(f"config.loss.d2dce_margin={obj.d2dce_margin!r} (a cosine similarity) must be in [0, 1].")
        return obj

    def check_dp(self, private: bool) -> None:
        """Refuses, under DP, a class term that is not per example (cond='d2dce')."""
        if private and self.d2dce:
            raise ValueError("DP-SGD is enabled (config.privacy.enabled=True) but config.model.cond='d2dce' is not "
                             "per example: each real image's D2DCE term uses the batch's other images as negatives, so "
                             "clipping one image's gradient does not bound its influence; use aux, projection, tac or "
                             "proj_aux under DP.")

    def d_real(self, logit: jax.Array) -> jax.Array:
        """D's adversarial term on real images, per example [B]."""
        return gan_losses.ADVERSARIAL[self.adversarial][0](logit)

    def d_fake(self, logit: jax.Array) -> jax.Array:
        """D's adversarial term on generated images, per example [B]."""
        return gan_losses.ADVERSARIAL[self.adversarial][1](logit)

    def g_adv(self, logit: jax.Array) -> jax.Array:
        """G's adversarial term, per example [B]."""
        return gan_losses.ADVERSARIAL[self.adversarial][2](logit)

    @property
    def aux_head(self) -> bool:
        """D has an auxiliary classifier head (aux, tac, proj_aux)."""
        return bool(self.num_classes) and self.cond in ("aux", "tac", "proj_aux")

    @property
    def projection(self) -> bool:
        """D's logit is a projection D(x, y) (projection, proj_aux)."""
        return bool(self.num_classes) and self.cond in ("projection", "proj_aux")

    @property
    def aux_real_only(self) -> bool:
        """The aux head is fitted to real images only (tac, proj_aux)."""
        return bool(self.num_classes) and self.cond in ("tac", "proj_aux")

    @property
    def tac(self) -> bool:
        return bool(self.num_classes) and self.cond == "tac"

    @property
    def d2dce(self) -> bool:
        """D embeds images next to class proxies; the class term is ReACGAN's D2DCE (not per example)."""
        return bool(self.num_classes) and self.cond == "d2dce"

    def d2dce_loss(self, heads: jax.Array, labels: jax.Array) -> jax.Array:
        """D2DCE over a batch f32 [B] from a d2dce D's heads f32 [B, 1 + K, E] and labels int [B]."""
        return gan_losses.d2dce(heads[:, 0], heads[0, 1:], labels, temperature=self.d2dce_temperature,
                                m_p=self.d2dce_margin)

    def class_logits(self, heads: jax.Array | None) -> jax.Array | None:
        """D's class scores f32 [B, K] read from its heads: the aux head's logits (aux, tac, proj_aux), or
        cos(f(x), v_k) / T (d2dce: the nearest proxy is the predicted class); None otherwise."""
        if self.d2dce:
            return jnp.einsum("be,bke->bk", heads[:, 0], heads[:, 1:]) / self.d2dce_temperature
        return self.split_heads(heads)[0]

    def d_labels(self, labels: jax.Array | None) -> jax.Array | None:
        """The labels D is called with: a projection D needs them, the others do not read them."""
        return labels if self.projection else None

    def split_heads(self, heads: jax.Array | None) -> tuple[jax.Array | None, jax.Array | None]:
        """D's heads output -> (aux logits [B, K] or None, twin logits [B, K] or None)."""
        if not self.aux_head:
            return None, None
        return (heads[:, 0], heads[:, 1]) if self.tac else (heads, None)

    def d_class_loss(self, logit: jax.Array, heads: jax.Array | None, labels: jax.Array | None, *,
                     real: bool) -> jax.Array:
        """D's unweighted class term per example [B]: CE of the aux head on real and generated images
        (aux), of the aux head on real and the twin head on generated images (tac), of the aux head
        on real images only (proj_aux); D2DCE on real images only (d2dce: each row reads the whole
        batch); 0 otherwise."""
        if self.d2dce:
            return self.d2dce_loss(heads, labels) if real else jnp.zeros_like(logit)
        aux, twin = self.split_heads(heads)
        if aux is None or (not real and self.aux_real_only and twin is None):
            return jnp.zeros_like(logit)
        return gan_losses.class_cross_entropy(aux if real or twin is None else twin, labels)

    def g_class_loss(self, logit: jax.Array, heads: jax.Array | None, labels: jax.Array | None) -> jax.Array:
        """G's unweighted class term per example [B]: CE(aux) (aux), CE(aux) - CE(twin) (tac), D2DCE over
        the generated batch (d2dce); 0 otherwise."""
        if self.d2dce:
            return self.d2dce_loss(heads, labels)
        aux, twin = self.split_heads(heads)
        if aux is None:
            return jnp.zeros_like(logit)
        if twin is None:
            return gan_losses.class_cross_entropy(aux, labels)
        return gan_losses.tac_generator_class_loss(aux, twin, labels)


def build_models(config: ml_collections.ConfigDict) -> tuple[dcgan.Generator, dcgan.Discriminator]:
    """Instantiates G and D from `config.model` and `config.data`."""
    m, d = config.model, config.data
    dtype = common.compute_dtype(config)
    obj = Objective.from_config(config)
    if m.get("g_upsample", "transpose") not in layers.UPSAMPLES:
        raise ValueError(f"config.model.g_upsample={m.g_upsample!r} must be one of {layers.UPSAMPLES}.")
    g = dcgan.Generator(image_size=d.image_size, channels=d.channels, latent_dim=m.latent_dim,
                        num_classes=m.num_classes, base_features=m.g_features,
                        max_features=m.max_features, norm=m.g_norm,
                        upsample=m.get("g_upsample", "transpose"), dtype=dtype)
    disc = dcgan.Discriminator(image_size=d.image_size, base_features=m.d_features,
                               max_features=m.max_features, num_classes=m.num_classes, cond=obj.cond,
                               norm=m.d_norm, dropout=m.d_dropout,
                               mbstd_group_size=m.get("mbstd_group_size", 0), dtype=dtype)
    return g, disc


def build_optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """Adam for G and D (DCGAN's lr 2e-4, beta1 0.5 by default); under DP, D's with the noise in front."""
    o = config.optim
    g_tx = optax.adam(o.g_lr, b1=o.b1, b2=o.b2)
    d_tx = dp_noise.private(optax.adam(o.d_lr, b1=o.b1, b2=o.b2), DPConfig.from_config(config),
                            config.train.batch_size, config.train.steps)
    return g_tx, d_tx


def init_state(config: ml_collections.ConfigDict, rng: jax.Array) -> GANState:
    """Initial state (pure; jit it with out_shardings to create it sharded). Under DP, refuses a D
    that mixes examples (BatchNorm, minibatch-stddev group > 1) or an adaptive ADA p before anything
    is built. extra: `g_ema_params` (ema.enabled) and the D augmentation's entries (`augment.policy`)."""
    checks.check_dp_compatible(config, {})
    Objective.from_config(config).check_dp(dp_enabled(config))
    aug = aug_policy.DAugment.from_config(config)
    aug.check_dp(dp_enabled(config))
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    k_g, k_d, k_run = jax.random.split(rng, 3)
    size, ch = config.data.image_size, config.data.channels
    z = jnp.zeros((2, config.model.latent_dim))
    labels = jnp.zeros((2,), jnp.int32) if config.model.num_classes else None
    g_vars = g.init(k_g, z, labels, train=False)
    d_vars = d.init(k_d, jnp.zeros((2, size, size, ch)), Objective.from_config(config).d_labels(labels),
                    train=False)
    extra = aug.init_extra()
    if common.ema_enabled(config):
        extra["g_ema_params"] = jax.tree_util.tree_map(jnp.copy, g_vars["params"])
    return GANState(
        step=jnp.zeros((), jnp.int32), rng=k_run,
        g_params=g_vars["params"], d_params=d_vars["params"],
        g_stats=g_vars.get("batch_stats", {}), d_stats=d_vars.get("batch_stats", {}),
        g_opt_state=g_tx.init(g_vars["params"]), d_opt_state=d_tx.init(d_vars["params"]), extra=extra)


def _draw_latents(config, rng, n: int) -> tuple[jax.Array, jax.Array | None]:
    k_z, k_c = jax.random.split(rng)
    z = jax.random.normal(k_z, (n, config.model.latent_dim))
    labels = None
    if config.model.num_classes:
        labels = jax.random.randint(k_c, (n,), 0, config.model.num_classes)
    return z, labels


def _d_variables(d_params, d_stats) -> dict:
    return {"params": d_params, **({"batch_stats": d_stats} if d_stats else {})}


def _r1(d, d_vars: dict, real: jax.Array, d_labels: jax.Array | None, rng: jax.Array, gamma: float) -> jax.Array:
    """R1 penalty gamma/2 * ||grad_x D(x)||^2 per real example [B] (Mescheder et al. 2018).

    Stabilises D on small data (the retina dual GAN's stage I). D's running statistics from this
    extra forward pass are discarded; with a per-example D (layer norm) row i depends on x_i only.
    d_labels: int [B] for a projection D (D(x, y) with the real label), else None.
    """
    from jaxmedgan.losses import stylegan2 as sg2_losses

    def logits(x):
        (logit, _), _ = layers.apply(d, d_vars, x, d_labels, train=True, rngs={"dropout": rng})
        return logit

    return sg2_losses.r1_penalty(logits, real, gamma)


def private_config(config: ml_collections.ConfigDict) -> DPConfig:
    """The run's DPConfig, clip_method 'auto' resolved: ghost clipping covers D's Conv/Dense/norm
    layers, but not R1 (a gradient of D's input gradient inside the clipped loss)."""
    return DPConfig.from_config(config).with_clip_method(
        ghost_supported=not Objective.from_config(config).r1_gamma,
        why_not="loss.r1_gamma > 0 puts R1 (a gradient of D's input gradient) in the clipped loss")


def _d_update_private(config, state: GANState, batch: dict, fake, fake_labels, rng, mesh):
    """D update under DP-SGD: (sum-scale gradient for the optimiser's noise transformation, metrics, stats).

    `batch["image"]` and `fake` arrive augmented (what D sees; the augmentation is per example).
    Only D's loss on real example i (softplus(-D(x_i[, y_i])) + w aux CE [+ R1]) touches private
    data; it is clipped per example in `dp_sgd.d_gradient`. Generated images carry no private
    information, so their term (softplus(D(G(z)[, y])) + w aux or twin CE) gets no noise; it is
    still clipped per example to the same C (privacy.clip_fake), otherwise its gradient, ~100x the
    clipped real one, swamps the real term and D just learns to call everything fake.
    """
    _, d = build_models(config)
    obj = Objective.from_config(config)
    obj.check_dp(True)  # D2DCE has no per-example form to clip (init_state refuses it first)
    p = private_config(config)
    k_drop_real, k_drop_fake = jax.random.split(rng)
    real, real_labels, mask = batch["image"], batch["label"], batch["mask"]
    n = real.shape[0]
    examples = {"image": real, "label": real_labels, "key": jax.random.split(k_drop_real, n)}

    def apply_one(d_params, ex):
        labels = ex["label"][None]
        (logit, heads), _ = layers.apply(d, {"params": d_params}, ex["image"][None], obj.d_labels(labels),
                                         train=True, rngs={"dropout": ex["key"]})
        return logit, heads, labels

    def real_loss(d_params, ex):
        logit, heads, labels = apply_one(d_params, ex)
        loss = obj.d_real(logit)[0] + obj.aux_weight * obj.d_class_loss(logit, heads, labels, real=True)[0]
        aux, _ = obj.split_heads(heads)
        correct = (jnp.argmax(aux[0]) == ex["label"]).astype(jnp.float32) if aux is not None else jnp.zeros(())
        if obj.r1_gamma:  # R1 on this real example alone: inside the clipped per-example loss
            loss = loss + _r1(d, {"params": d_params}, ex["image"][None], obj.d_labels(labels), ex["key"],
                              obj.r1_gamma)[0]
        return loss, {"logit": logit[0], "aux_correct": correct}

    def fake_loss(d_params, ex):
        logit, heads, labels = apply_one(d_params, ex)
        cls = obj.d_class_loss(logit, heads, labels, real=False)[0]
        return obj.d_fake(logit)[0] + obj.aux_weight * cls, {"logit": logit[0], "class_loss": cls}

    m = fake.shape[0]  # train.batch_size: independent of the padded row count n
    fakes = {"image": fake, "label": fake_labels if fake_labels is not None else jnp.zeros((m,), jnp.int32),
             "key": jax.random.split(k_drop_fake, m)}
    grads, out = dp_sgd.d_gradient(real_loss, state.d_params, examples, mask, p, fake_loss=fake_loss, fake=fakes,
                                   expected_batch_size=config.train.batch_size,
                                   canaries=dp_sgd.batch_canaries(batch), mesh=mesh)
    per_ex, fake_aux, fake_total = out.pop("real_aux"), out.pop("fake_aux"), out.pop("fake_loss")
    real_logit, fake_logit = per_ex["logit"], fake_aux["logit"]
    mean = functools.partial(dp_sgd.masked_mean, mask=mask)  # monitoring only: private metrics
    metrics = {
        "d_loss": mean(obj.d_real(real_logit)) + jnp.mean(obj.d_fake(fake_logit)),
        "d_real_acc": mean(real_logit > 0),
        "d_fake_acc": jnp.mean(fake_logit < 0),
        "d_real_logit": mean(real_logit),
        "d_fake_logit": jnp.mean(fake_logit),
        "d_total_loss": out["dp_loss_mean"] + fake_total,
        **out,
    }
    if obj.aux_head:
        metrics["aux_real_acc"] = mean(per_ex["aux_correct"])
    if obj.tac:
        metrics["d_twin_loss"] = jnp.mean(fake_aux["class_loss"])  # generated images only: public
    return grads, metrics, state.d_stats, real_logit


def _d_update(config, state: GANState, batch: dict, fake, fake_labels, rng):
    """Non-private D update: gradient of the mean loss over the real and the fake batch (both
    already augmented, as D sees them); also returns D's real logits f32 [B] (the ADA heuristic)."""
    _, d = build_models(config)
    obj = Objective.from_config(config)
    real, real_labels = batch["image"], batch["label"]

    def d_loss_fn(d_params):
        d_vars = _d_variables(d_params, state.d_stats)
        (real_logit, real_heads), stats = layers.apply(d, d_vars, real, obj.d_labels(real_labels), train=True,
                                                       rngs={"dropout": rng})
        if stats:
            d_vars = _d_variables(d_params, stats)
        (fake_logit, fake_heads), stats = layers.apply(d, d_vars, fake, obj.d_labels(fake_labels), train=True,
                                                       rngs={"dropout": rng})
        per_example = obj.d_real(real_logit) + obj.d_fake(fake_logit)
        cls_real = obj.d_class_loss(real_logit, real_heads, real_labels, real=True)
        cls_fake = obj.d_class_loss(fake_logit, fake_heads, fake_labels, real=False)
        loss = jnp.mean(per_example + obj.aux_weight * (cls_real + cls_fake))
        if obj.r1_gamma:
            r1 = jnp.mean(_r1(d, d_vars, real, obj.d_labels(real_labels), rng, obj.r1_gamma))
            loss = loss + r1
        metrics = {
            "d_loss": jnp.mean(per_example),
            "d_real_acc": jnp.mean(real_logit > 0),
            "d_fake_acc": jnp.mean(fake_logit < 0),
            "d_real_logit": jnp.mean(real_logit),
            "d_fake_logit": jnp.mean(fake_logit),
        }
        if obj.r1_gamma:
            metrics["d_r1"] = r1
        if obj.tac:  # aux head on real images, twin head on generated ones
            metrics["d_aux_loss"] = jnp.mean(cls_real)
            metrics["d_twin_loss"] = jnp.mean(cls_fake)
        elif obj.aux_real_only:  # proj_aux: the head sees real images only
            metrics["d_aux_loss"] = jnp.mean(cls_real)
        elif obj.aux_head:
            metrics["d_aux_loss"] = jnp.mean(cls_real + cls_fake) / 2
        elif obj.d2dce:  # real images only
            metrics["d_d2dce_loss"] = jnp.mean(cls_real)
        if obj.aux_head or obj.d2dce:
            metrics["aux_real_acc"] = jnp.mean(jnp.argmax(obj.class_logits(real_heads), -1) == real_labels)
        return loss, (metrics, stats, real_logit)

    (total, (metrics, d_stats, real_logit)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    metrics["d_total_loss"] = total
    return grads, metrics, d_stats, real_logit


def train_step(config: ml_collections.ConfigDict, state: GANState, batch: dict, *,
               mesh=None) -> tuple[GANState, dict]:
    """One D update then one G update. batch: image f32 [B,H,W,C] in [-1,1], label i32 [B]
    (+ mask f32 [B] under DP). `mesh` is the device mesh (DP clips per example per shard)."""
    g, d = build_models(config)
    g_tx, d_tx = build_optimizers(config)
    private = dp_enabled(config)
    obj = Objective.from_config(config)
    aug = aug_policy.DAugment.from_config(config)
    # Under DP the batch is a padded Poisson batch whose row count may follow the draw (padding
    # buckets): fakes come in the expected batch size, so nothing but padding depends on it.
    n = config.train.batch_size if private else batch["image"].shape[0]
    rng = jax.random.fold_in(state.rng, state.step)
    k_dz, k_gz, k_d, k_gdrop, k_aug_real, k_aug_fake, k_aug_g = jax.random.split(rng, 7)

    # --- D update: real batch vs a batch generated with the current G, both as D sees them.
    z, fake_labels = _draw_latents(config, k_dz, n)
    fake, g_stats = layers.apply(g, state.g_variables(), z, fake_labels, train=True)
    fake = aug(jax.lax.stop_gradient(fake), k_aug_fake, state.extra, real=False)
    see_real = aug.per_example if private else aug  # DP: each real example's draw independent of the rows
    d_batch = {**batch, "image": see_real(batch["image"], k_aug_real, state.extra, real=True)}
    if private:
        d_grads, d_metrics, d_stats, real_logit = _d_update_private(config, state, d_batch, fake, fake_labels,
                                                                    k_d, mesh)
    else:
        d_grads, d_metrics, d_stats, real_logit = _d_update(config, state, d_batch, fake, fake_labels, k_d)
    noise = dp_sgd.noise_args(batch, d_metrics) if private else {}  # the step's secret key (+ canaries)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params, **noise)
    d_params = optax.apply_updates(state.d_params, d_updates)
    if private:  # report the pre-noise mean gradient (private), as without DP
        d_grads = jax.tree_util.tree_map(lambda g: g / config.train.batch_size, d_grads)

    # --- G update against the updated D (D's running statistics are not changed here). G sees
    # real data only through D, so under DP it is private by post-processing.
    z, gen_labels = _draw_latents(config, k_gz, n)
    z_g, labels_g = z, gen_labels
    if obj.mode_seeking:  # a second batch, same labels: [G(z1, y); G(z2, y)] in one G call, both through D
        z2 = jax.random.normal(jax.random.fold_in(k_gz, 1), z.shape)
        z_g = jnp.concatenate([z, z2])
        labels_g = None if gen_labels is None else jnp.concatenate([gen_labels, gen_labels])

    def g_loss_fn(g_params):
        g_vars = {"params": g_params, **({"batch_stats": g_stats} if g_stats else {})}
        fake, new_g_stats = layers.apply(g, g_vars, z_g, labels_g, train=True)
        seen = aug(fake, k_aug_g, state.extra, real=False)
        (logit, heads), _ = layers.apply(d, _d_variables(d_params, d_stats), seen,
                                         obj.d_labels(labels_g), train=True, rngs={"dropout": k_gdrop})
        per_example = obj.g_adv(logit)
        cls = obj.g_class_loss(logit, heads, labels_g)
        total = jnp.mean(per_example + obj.aux_weight * cls)
        metrics = {"g_loss": jnp.mean(per_example)}
        aux, twin = obj.split_heads(heads)
        if aux is not None:
            metrics["g_aux_loss"] = jnp.mean(gan_losses.class_cross_entropy(aux, labels_g))
        if twin is not None:
            metrics["g_twin_loss"] = jnp.mean(gan_losses.class_cross_entropy(twin, labels_g))
        if obj.d2dce:
            metrics["g_d2dce_loss"] = jnp.mean(cls)
        if obj.mode_seeking:
            total = total + obj.mode_seeking * gan_losses.mode_seeking(fake[:n], fake[n:], z, z2)
            metrics["g_ms_ratio"] = gan_losses.mode_seeking_ratio(fake[:n], fake[n:], z, z2)
        return total, (metrics, new_g_stats)

    (g_total, (g_metrics, new_g_stats)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    extra = aug.update_p(state.extra, real_logit, state.step + 1, config.train.batch_size)
    aug_metrics = aug.metrics(extra)
    if common.ema_enabled(config):
        beta = common.ema_beta(config, state.step)
        extra = {**extra, "g_ema_params": common.ema_update(state.extra["g_ema_params"], g_params, beta)}
        aug_metrics["ema_beta"] = beta
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_stats=new_g_stats, d_stats=d_stats,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state, extra=extra)
    metrics = {**d_metrics, **g_metrics, **aug_metrics, "g_total_loss": g_total,
               "d_grad_norm": optax.tree.norm(d_grads), "g_grad_norm": optax.tree.norm(g_grads)}
    return new_state, metrics


def generate(config: ml_collections.ConfigDict, state: GANState, z: jax.Array,
             labels: jax.Array | None) -> jax.Array:
    """Images f32 [N,H,W,C] in [-1,1] from latents z [N, latent_dim] (labels [N] for ACGAN); from G's
    EMA weights when `ema.enabled` (with G's running BatchNorm statistics)."""
    g, _ = build_models(config)
    variables = state.g_variables()
    if "g_ema_params" in state.extra:
        variables = {**variables, "params": state.extra["g_ema_params"]}
    return g.apply(variables, z, labels if config.model.num_classes else None, train=False)


def _d_eval(config: ml_collections.ConfigDict, state: GANState, images: jax.Array,
            labels: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """D(images[, labels]) in inference mode: (logit [N], heads). A minibatch-stddev D needs N to be
    a multiple of its group size: rows are padded by repeating the first ones, and dropped again."""
    _, d = build_models(config)
    n, group = images.shape[0], config.model.get("mbstd_group_size", 0)
    pad = (-n) % min(group, n) if group else 0
    if pad:
        images = jnp.concatenate([images, images[:pad]])
        labels = None if labels is None else jnp.concatenate([labels, labels[:pad]])
    logit, heads = d.apply(state.d_variables(), images, labels, train=False)
    return logit[:n], None if heads is None else heads[:n]


def discriminate(config: ml_collections.ConfigDict, state: GANState, images: jax.Array,
                 labels: jax.Array | None = None) -> jax.Array:
    """D's real/fake logit [N] for images [N,H,W,C] in [-1,1] (membership-inference audits).

    A projection D scores D(x, y) when labels int [N] are given, else the class-marginal
    log mean_y exp D(x, y) (the audits pass no labels).
    """
    obj = Objective.from_config(config)
    if obj.projection:
        if labels is not None:
            return _d_eval(config, state, images, jnp.asarray(labels, jnp.int32))[0]
        return jax.nn.logsumexp(_projection_logits(config, state, images), axis=-1) - jnp.log(obj.num_classes)
    return _d_eval(config, state, images, None)[0]


def _projection_logits(config: ml_collections.ConfigDict, state: GANState, images: jax.Array) -> jax.Array:
    """A projection D's logit D(x, k) for every class k: f32 [N, K]."""
    n = images.shape[0]
    return jnp.stack([_d_eval(config, state, images, jnp.full((n,), k, jnp.int32))[0]
                      for k in range(config.model.num_classes)], axis=-1)


def classify(config: ml_collections.ConfigDict, state: GANState, images: jax.Array) -> jax.Array | None:
    """D's class logits f32 [N, K] for images [N,H,W,C] in [-1,1] (None if unconditional): the aux
    head ('aux', 'tac', 'proj_aux'); for 'projection', D's logit D(x, k) for each class k, whose argmax
    over k is the class D finds most real (psi(phi(x)) is common to all k, so it is argmax_k <e_k, phi(x)>);
    for 'd2dce', cos(f(x), v_k) / T, whose argmax is the nearest class proxy."""
    obj = Objective.from_config(config)
    if obj.projection and not obj.aux_head:
        return _projection_logits(config, state, images)
    labels = jnp.zeros((images.shape[0],), jnp.int32) if obj.projection else None  # the head ignores them
    return obj.class_logits(_d_eval(config, state, images, labels)[1])


# Jitted once per (config, shapes): the config is a static (hashable, frozen) argument, so repeated
# evaluations reuse the compiled function instead of tracing a fresh partial each time.
_classify_jit = jax.jit(classify, static_argnums=0)
_generate_jit = jax.jit(generate, static_argnums=0)


def evaluate(config: ml_collections.ConfigDict, state: GANState, eval_data) -> dict[str, float]:
    """Conditional models, on held-out real images (images f32 [N,H,W,C] in [-1, 1], labels int [N]).

    `eval/aux_accuracy` (and `eval/aux_recall_class{k}`): D's class prediction -- the aux head for
    'aux' / 'tac', argmax_k D(x, k) for 'projection', the nearest proxy for 'd2dce' (`classify`); and
    the intra-class diversity ratio of generated vs held-out images (`common.class_diversity_metrics`).
    """
    if not config.model.num_classes or eval_data is None:
        return {}
    images, labels = eval_data
    frozen = ml_collections.FrozenConfigDict(config)
    preds = []
    bs = 64
    for i in range(0, len(images), bs):
        chunk = images[i:i + bs]
        pad = bs - len(chunk)  # pad to a fixed shape so this compiles once (repeating rows, as `_d_eval`)
        chunk = np.concatenate([chunk, np.resize(chunk, (pad, *chunk.shape[1:]))]) if pad else chunk
        preds.append(np.asarray(jnp.argmax(_classify_jit(frozen, state, chunk), -1))[: bs - pad])
    preds = np.concatenate(preds)
    out = {"eval/aux_accuracy": float(np.mean(preds == labels))}
    for k in range(config.model.num_classes):
        mask = labels == k
        if mask.any():
            out[f"eval/aux_recall_class{k}"] = float(np.mean(preds[mask] == k))
    out.update(common.class_diversity_metrics(config, _generate_jit, state, eval_data, config.samples.seed + 1))
    return out


def image_sizes(config: ml_collections.ConfigDict) -> tuple[int, None]:
    """The DCGAN builds any power-of-two image size from 8 px up."""
    return 8, None


FAMILY = common.Family(
    name="gan",
    init_state=init_state,
    train_step=train_step,
    generate=generate,
    evaluate=evaluate,
    discriminate=discriminate,
    latent_spaces=("z",),
    image_sizes=image_sizes,
    # Under DP: G's terms and D's terms on generated images.
    dp_public_metrics=("g_loss", "g_aux_loss", "g_twin_loss", "g_ms_ratio", "g_total_loss", "g_grad_norm",
                       "d_fake_acc", "d_fake_logit", "d_twin_loss", "aug_p", "ema_beta"),
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
    """Trains DCGAN/ACGAN as configured, writing checkpoints, metrics and samples to `workdir`."""
    return common.fit(config, workdir, FAMILY)
