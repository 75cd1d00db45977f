"""pix2pix losses (Isola et al. 2017) on PatchGAN logits: `Objective`, what a step minimises.

With m the one-hot label map [B,H,W,K], x the real image [B,H,W,C] and D's patch logits [B,h,w]:
  D:  softplus(-D(m, x)) + softplus(D(m, G(m)))                 per patch, averaged per example
  G:  softplus(-D(m, G(m))) + lambda * mean |G(m) - x|          (lambda = config.loss.l1_weight, 100)
`loss.kind` = 'hinge' swaps the adversarial terms for relu(1 - D) + relu(1 + D) and -D per patch
(`losses.gan.ADVERSARIAL`; absent: 'nonsaturating', the above). The L1 term reads the un-augmented
G(m) and x; the trainer (trainers/pix2pix.py) runs the models and D's augmentation.

Under DP G reads private maps and images too, so each example's losses of both nets form one clipped
function (`Objective.example_loss`): l_i = L_D(m_i, x_i) + L_G(m_i, x_i), the trainer stopping the
gradient of each net in the other's term.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from jaxmedgan.losses import gan as gan_losses


def patch_mean(x: jax.Array) -> jax.Array:
    """Mean over every axis but the first: [B, ...] -> [B]."""
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def l1(fake: jax.Array, real: jax.Array) -> jax.Array:
    """The L1 term, a scalar: mean |G(m) - x| over every pixel and channel of the batch [B,H,W,C]."""
    return jnp.mean(jnp.abs(fake - real))


@dataclasses.dataclass(frozen=True)
class Objective:
    """pix2pix's losses: `config.loss.{kind, l1_weight}`, read only here."""

    adversarial: str = "nonsaturating"  # loss.kind: a key of losses.gan.ADVERSARIAL
    l1_weight: float = 100.0  # lambda of the L1 term

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Objective":
        """`loss.kind` may be absent ('nonsaturating', what runs before the key trained with).
        ValueError names a bad kind."""
        kind = str(config.loss.get("kind", "nonsaturating"))
        if kind not in gan_losses.ADVERSARIAL:
            raise ValueError(f"config.loss.kind={kind!r} must be one of {sorted(gan_losses.ADVERSARIAL)}.")
        return cls(adversarial=kind, l1_weight=float(config.loss.l1_weight))

    def d_loss(self, real_logit: jax.Array, fake_logit: jax.Array) -> jax.Array:
        """D's loss per example f32 [B] from its patch logits [B,h,w] on the real pairs (m, x) and the
        generated pairs (m, G(m)): patch mean of D's real term + patch mean of its fake term."""
        d_real, d_fake, _ = gan_losses.ADVERSARIAL[self.adversarial]
        return patch_mean(d_real(real_logit)) + patch_mean(d_fake(fake_logit))

    def g_adversarial(self, logit: jax.Array) -> jax.Array:
        """G's adversarial term per example f32 [B]: patch mean of G's term on D(m, G(m)) [B,h,w]."""
        return patch_mean(gan_losses.ADVERSARIAL[self.adversarial][2](logit))

    def g_total(self, adversarial: jax.Array, l1_term: jax.Array) -> jax.Array:
        """G's loss from its two scalar terms: adversarial + l1_weight * L1."""
        return adversarial + self.l1_weight * l1_term

    def g_loss(self, logit: jax.Array, fake: jax.Array, real: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """G's loss, a scalar, from D's patch logits [B,h,w] on (m, G(m)), G(m) and x f32 [B,H,W,C]:
        mean over the batch of the adversarial term + l1_weight * `l1`. Parts {"adversarial", "l1"} []."""
        adversarial = jnp.mean(self.g_adversarial(logit))
        l1_term = l1(fake, real)
        return self.g_total(adversarial, l1_term), {"adversarial": adversarial, "l1": l1_term}

    def example_loss(self, real_logit: jax.Array, fake_logit: jax.Array, g_logit: jax.Array, fake: jax.Array,
                     real: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """ONE example's joint loss of both nets, a scalar (what DP-SGD clips): L_D + L_G, from D's patch
        logits [1,h,w] on the real pair, on the generated pair for D's term and for G's term, G(m) and x
        f32 [1,H,W,C]. Parts {"d_loss", "g_loss", "g_l1"} []."""
        loss_d = self.d_loss(real_logit, fake_logit)[0]
        adversarial = self.g_adversarial(g_logit)[0]
        l1_term = l1(fake, real)
        return loss_d + adversarial + self.l1_weight * l1_term, {"d_loss": loss_d, "g_loss": adversarial,
                                                                  "g_l1": l1_term}
