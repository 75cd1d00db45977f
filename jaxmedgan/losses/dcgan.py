"""DCGAN / ACGAN losses (the `gan` trainer, models/dcgan.py): `Objective`, what a step minimises.

Built from the shared terms of `losses/gan.py`. D's loss is per example on a real batch x (labels y)
and a generated batch G(z, y'); G's on a generated batch. With `num_classes > 0` D sees the class
as `cond` says (CE = softmax cross-entropy, w = `aux_weight`):
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
to G's loss (G's batch then holds G(z1, y) and G(z2, y), both through D). All of D's terms are per
example, so each option runs under DP-SGD (mode seeking is G-only), except d2dce: a real image's
term reads the batch's other images, refused under DP (`Objective.check_dp`). R1 (`loss.r1_gamma`)
is `losses/stylegan2.py`'s `r1_penalty`, added by the trainer, which owns D's forward pass.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from jaxmedgan.losses import gan as gan_losses
from jaxmedgan.models import dcgan


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

    def d_loss(self, real_logit: jax.Array, real_heads: jax.Array | None, real_labels: jax.Array | None,
               fake_logit: jax.Array, fake_heads: jax.Array | None,
               fake_labels: jax.Array | None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """D's loss per example f32 [B] on a real batch (logit [B], heads, labels int [B]) and a generated
        one of the same size: d_real(D(x)) + d_fake(D(G(z))) + w (class term on x + class term on G(z)).
        Parts {"adversarial", "class_real", "class_fake"} f32 [B] (class terms unweighted)."""
        adversarial = self.d_real(real_logit) + self.d_fake(fake_logit)
        cls_real = self.d_class_loss(real_logit, real_heads, real_labels, real=True)
        cls_fake = self.d_class_loss(fake_logit, fake_heads, fake_labels, real=False)
        loss = adversarial + self.aux_weight * (cls_real + cls_fake)
        return loss, {"adversarial": adversarial, "class_real": cls_real, "class_fake": cls_fake}

    def d_real_loss(self, logit: jax.Array, heads: jax.Array | None, labels: jax.Array | None) -> jax.Array:
        """D's terms on real images per example f32 [B]: d_real(D(x)) + w class term -- the half of
        `d_loss` that reads private data, which DP-SGD clips per example (`d_fake_loss` is the other)."""
        return self.d_real(logit) + self.aux_weight * self.d_class_loss(logit, heads, labels, real=True)

    def d_fake_loss(self, logit: jax.Array, heads: jax.Array | None,
                    labels: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """D's terms on generated images per example f32 [B]: d_fake(D(G(z))) + w class term, and that
        unweighted class term [B] (the other half of `d_loss`)."""
        cls = self.d_class_loss(logit, heads, labels, real=False)
        return self.d_fake(logit) + self.aux_weight * cls, cls

    def g_loss(self, logit: jax.Array, heads: jax.Array | None, labels: jax.Array | None, *,
               images: jax.Array | None = None,
               latents: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """G's loss, a scalar: mean over the generated batch (D's logit [B], heads, labels int [B]) of
        g_adv(D(G(z, y))) + w class term, plus, with mode seeking, lambda * MS(G(z1, y), G(z2, y)).

        images f32 [B,H,W,C] = [G(z1, y); G(z2, y)] and latents [B, latent_dim] = [z1; z2] (halves with
        the same labels; needed only with mode seeking). Parts: "adversarial", "class" (unweighted)
        f32 [B]; "aux_ce" / "twin_ce" f32 [B] for a D with those heads; "ms_ratio" f32 [] with mode
        seeking (`losses.gan.mode_seeking_ratio`).
        """
        adversarial = self.g_adv(logit)
        cls = self.g_class_loss(logit, heads, labels)
        total = jnp.mean(adversarial + self.aux_weight * cls)
        parts = {"adversarial": adversarial, "class": cls}
        aux, twin = self.split_heads(heads)
        if aux is not None:
            parts["aux_ce"] = gan_losses.class_cross_entropy(aux, labels)
        if twin is not None:
            parts["twin_ce"] = gan_losses.class_cross_entropy(twin, labels)
        if self.mode_seeking:
            if images is None or latents is None:
                raise ValueError("loss.mode_seeking > 0: G's loss needs the images [G(z1, y); G(z2, y)] and "
                                 "latents [z1; z2].")
            n = images.shape[0] // 2
            halves = (images[:n], images[n:], latents[:n], latents[n:])
            total = total + self.mode_seeking * gan_losses.mode_seeking(*halves)
            parts["ms_ratio"] = gan_losses.mode_seeking_ratio(*halves)
        return total, parts
