"""DCGAN / ACGAN objective (losses/dcgan.py): D's and G's losses per cond against numpy formulas."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from jaxmedgan.losses import dcgan as L

B, K, W = 5, 3, 0.5  # batch, classes, aux_weight
ADVERSARIAL_NP = {  # loss.kind -> (D's real term, D's fake term, G's term), numpy
    "nonsaturating": (lambda r: np.logaddexp(0, -r), lambda f: np.logaddexp(0, f), lambda f: np.logaddexp(0, -f)),
    "hinge": (lambda r: np.maximum(0, 1 - r), lambda f: np.maximum(0, 1 + f), lambda f: -f),
}


def _ce(logits, labels):
    return -log_softmax(np.asarray(logits, np.float64), -1)[np.arange(len(labels)), labels]


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    logit = lambda: rng.normal(size=B).astype(np.float32)
    heads = lambda: rng.normal(size=(B, 2, K)).astype(np.float32)  # [:, 0] aux, [:, 1] twin (tac)
    return logit(), heads(), rng.integers(0, K, B), logit(), heads(), rng.integers(0, K, B)


def _heads(cond, heads):
    """What a D of `cond` outputs as heads: tac [B, 2, K], aux / proj_aux [B, K], projection none."""
    return {"tac": heads, "aux": heads[:, 0], "proj_aux": heads[:, 0], "projection": None}[cond]


def _d_class_np(cond, heads, labels, real):
    """D's unweighted class term per example, as the module docstring states it."""
    if cond == "projection" or (not real and cond == "proj_aux"):
        return np.zeros(B)
    return _ce(heads[:, 0] if real or cond != "tac" else heads[:, 1], labels)


@pytest.mark.parametrize("kind", ["nonsaturating", "hinge"])
@pytest.mark.parametrize("cond", ["aux", "tac", "proj_aux", "projection"])
def test_d_loss_and_its_real_and_fake_halves_equal_the_formula(cond, kind):
    obj = L.Objective(num_classes=K, cond=cond, aux_weight=W, adversarial=kind)
    rl, rh, ry, fl, fh, fy = _inputs()
    d_real, d_fake, _ = ADVERSARIAL_NP[kind]
    cls_real, cls_fake = _d_class_np(cond, rh, ry, True), _d_class_np(cond, fh, fy, False)
    expected = d_real(rl) + d_fake(fl) + W * (cls_real + cls_fake)

    loss, parts = obj.d_loss(jnp.asarray(rl), _heads(cond, rh), jnp.asarray(ry), jnp.asarray(fl),
                             _heads(cond, fh), jnp.asarray(fy))
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["adversarial"], d_real(rl) + d_fake(fl), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["class_real"], cls_real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["class_fake"], cls_fake, rtol=1e-5, atol=1e-6)
    # The DP split: the real half (clipped per example) and the generated half sum to the same loss.
    real_half = obj.d_real_loss(jnp.asarray(rl), _heads(cond, rh), jnp.asarray(ry))
    fake_half, fake_cls = obj.d_fake_loss(jnp.asarray(fl), _heads(cond, fh), jnp.asarray(fy))
    np.testing.assert_allclose(real_half, d_real(rl) + W * cls_real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fake_half, d_fake(fl) + W * cls_fake, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fake_cls, cls_fake, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["nonsaturating", "hinge"])
@pytest.mark.parametrize("cond", ["aux", "tac", "projection"])
def test_g_loss_is_the_batch_mean_of_the_formula(cond, kind):
    obj = L.Objective(num_classes=K, cond=cond, aux_weight=W, adversarial=kind)
    _, _, _, fl, fh, fy = _inputs(1)
    g_adv = ADVERSARIAL_NP[kind][2]
    cls = {"aux": _ce(fh[:, 0], fy), "tac": _ce(fh[:, 0], fy) - _ce(fh[:, 1], fy), "projection": np.zeros(B)}[cond]
    total, parts = obj.g_loss(jnp.asarray(fl), _heads(cond, fh), jnp.asarray(fy))
    np.testing.assert_allclose(total, np.mean(g_adv(fl) + W * cls), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["adversarial"], g_adv(fl), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["class"], cls, rtol=1e-5, atol=1e-6)
    assert ("aux_ce" in parts) == (cond != "projection") and ("twin_ce" in parts) == (cond == "tac")
    if cond == "tac":
        np.testing.assert_allclose(parts["twin_ce"], _ce(fh[:, 1], fy), rtol=1e-5)
    assert "ms_ratio" not in parts


def test_g_loss_adds_mode_seeking_on_the_two_halves_of_the_batch():
    lam = 2.0
    obj = L.Objective(num_classes=K, cond="aux", aux_weight=W, mode_seeking=lam)
    rng = np.random.default_rng(2)
    logit, heads = rng.normal(size=2 * B).astype(np.float32), rng.normal(size=(2 * B, K)).astype(np.float32)
    labels = np.tile(rng.integers(0, K, B), 2)  # both halves drawn for the same labels
    images = rng.uniform(-1, 1, (2 * B, 4, 4, 1)).astype(np.float32)
    latents = rng.normal(size=(2 * B, 3)).astype(np.float32)
    total, parts = obj.g_loss(jnp.asarray(logit), jnp.asarray(heads), jnp.asarray(labels), images=jnp.asarray(images),
                              latents=jnp.asarray(latents))
    ratio = np.mean(np.abs(images[:B] - images[B:])) / np.mean(np.abs(latents[:B] - latents[B:]))
    expected = np.mean(np.logaddexp(0, -logit) + W * _ce(heads, labels)) + lam / (ratio + 1e-5)
    np.testing.assert_allclose(parts["ms_ratio"], ratio, rtol=1e-5)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="mode_seeking"):
        obj.g_loss(jnp.asarray(logit), jnp.asarray(heads), jnp.asarray(labels))
