"""WGAN-GP + drift against explicit formulas on a toy quadratic discriminator."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.losses import pggan as L

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 4, 1)).astype(np.float32)
C = RNG.normal(size=(4, 4, 1)).astype(np.float32)


def toy_d(x):
    """D(x)_i = sum(W * x_i^2 + C * x_i): gradient 2 W x_i + C, by hand."""
    return jnp.sum(W * x**2 + C * x, axis=(1, 2, 3))


def test_gradient_penalty_and_d_loss_equal_the_explicit_formula():
    real = RNG.normal(size=(5, 4, 4, 1)).astype(np.float32)
    fake = RNG.normal(size=(5, 4, 4, 1)).astype(np.float32)
    eps = RNG.uniform(size=(5,)).astype(np.float32)
    x_hat = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
    norms = np.sqrt(np.sum((2 * W * x_hat + C) ** 2, axis=(1, 2, 3)))
    gp_expected = 10.0 * (norms - 1.0) ** 2
    d = lambda x: np.sum(W * x**2 + C * x, axis=(1, 2, 3))
    loss_expected = d(fake) - d(real) + gp_expected + 0.001 * d(real) ** 2

    @jax.jit  # one compile instead of one per eager op
    def compute(real, fake, eps):
        gp, got_norms = L.gradient_penalty(toy_d, real, fake, eps)
        loss, parts = L.d_wgan_gp(toy_d, real, fake, eps)
        single = jax.vmap(lambda r, f, e: L.d_wgan_gp_single(toy_d, r, f, e)[0])(real, fake, eps)
        loss2, _ = L.d_wgan_gp(toy_d, real, fake, eps, gp_weight=1.0, drift_weight=0.0)
        return dict(x_hat=L.interpolate(real, fake, eps), gp=gp, norms=got_norms, loss=loss,
                    drift=parts["drift"], single=single, loss2=loss2)

    o = jax.device_get(compute(real, fake, eps))
    np.testing.assert_allclose(o["x_hat"], x_hat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["norms"], norms, rtol=1e-5)
    np.testing.assert_allclose(o["gp"], gp_expected, rtol=1e-4)
    assert o["loss"].shape == (5,)
    np.testing.assert_allclose(o["loss"], loss_expected, rtol=1e-4)
    np.testing.assert_allclose(o["drift"], 0.001 * d(real) ** 2, rtol=1e-5)
    # The single-example form, vmapped (what DP-SGD clips), equals the batched one.
    np.testing.assert_allclose(o["single"], o["loss"], rtol=1e-5)
    # Other weights scale the terms; G's loss is -D.
    np.testing.assert_allclose(o["loss2"], d(fake) - d(real) + gp_expected / 10, rtol=1e-4)
    np.testing.assert_allclose(L.g_wgan(jnp.asarray([1.5, -2.0])), [-1.5, 2.0])


def test_penalty_is_zero_for_a_unit_gradient_critic():
    """D(x) = <u, x> with ||u|| = 1 is 1-Lipschitz with gradient norm exactly 1 everywhere."""
    u = RNG.normal(size=(3, 3, 2)).astype(np.float32)
    u /= np.linalg.norm(u)
    lin = lambda x: jnp.sum(u * x, axis=(1, 2, 3))
    x = jnp.asarray(RNG.normal(size=(4, 3, 3, 2)), jnp.float32)
    gp, norms = jax.jit(lambda x: L.gradient_penalty(lin, x, -x, jnp.full((4,), 0.3)))(x)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    np.testing.assert_allclose(gp, 0.0, atol=1e-8)


def test_real_part_is_the_loss_minus_the_fake_score_and_vmaps_per_example():
    """DP's split: the real-touching terms -D(x) + gp + drift D(x)^2 (explicit formula) alone."""
    real = RNG.normal(size=(3, 4, 4, 1)).astype(np.float32)
    fake = RNG.normal(size=(3, 4, 4, 1)).astype(np.float32)
    eps = RNG.uniform(size=(3,)).astype(np.float32)
    x_hat = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
    gp = 10.0 * (np.sqrt(np.sum((2 * W * x_hat + C) ** 2, axis=(1, 2, 3))) - 1.0) ** 2
    d = lambda x: np.sum(W * x**2 + C * x, axis=(1, 2, 3))
    expected = -d(real) + gp + 0.001 * d(real) ** 2

    @jax.jit
    def compute(real, fake, eps):
        loss, parts = L.d_wgan_gp_real(toy_d, real, fake, eps)
        single, _ = jax.vmap(lambda r, f, e: L.d_wgan_gp_real_single(toy_d, r, f, e))(real, fake, eps)
        return loss, parts, single

    loss, parts, single = jax.device_get(compute(real, fake, eps))
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    np.testing.assert_allclose(single, expected, rtol=1e-4)
    assert "fake_score" not in parts
    np.testing.assert_allclose(parts["real_score"], d(real), rtol=1e-5)


def test_penalty_at_the_fakes_is_the_explicit_formula_and_leaves_the_real_term_first_order():
    """gp_on='fake': lambda (||2 W x~ + C|| - 1)^2 on the generated images; the real term keeps only
    -D(x) + drift D(x)^2 (no input gradient: ghost clipping can clip it)."""
    real = RNG.normal(size=(3, 4, 4, 1)).astype(np.float32)
    fake = RNG.normal(size=(3, 4, 4, 1)).astype(np.float32)
    eps = RNG.uniform(size=(3,)).astype(np.float32)
    d = lambda x: np.sum(W * x**2 + C * x, axis=(1, 2, 3))
    gp_fake = 10.0 * (np.sqrt(np.sum((2 * W * fake + C) ** 2, axis=(1, 2, 3))) - 1.0) ** 2

    @jax.jit
    def compute(real, fake, eps):
        real_loss, real_parts = L.d_wgan_gp_real(toy_d, real, fake, eps, gp_on="fake")
        fake_loss, fake_parts = L.d_wgan_gp_fake(toy_d, fake, gp_on="fake")
        total, parts = L.d_wgan_gp(toy_d, real, fake, eps, gp_on="fake")
        plain_fake, _ = L.d_wgan_gp_fake(toy_d, fake)  # 'interpolates': the fake term is D(x~) alone
        return real_loss, real_parts, fake_loss, fake_parts, total, parts, plain_fake

    real_loss, real_parts, fake_loss, fake_parts, total, parts, plain_fake = jax.device_get(compute(real, fake, eps))
    np.testing.assert_allclose(real_loss, -d(real) + 0.001 * d(real) ** 2, rtol=1e-4)
    np.testing.assert_allclose(real_parts["gp"], 0.0)
    np.testing.assert_allclose(fake_parts["gp"], gp_fake, rtol=1e-4)
    np.testing.assert_allclose(fake_loss, d(fake) + gp_fake, rtol=1e-4)
    np.testing.assert_allclose(total, d(fake) - d(real) + gp_fake + 0.001 * d(real) ** 2, rtol=1e-4)
    np.testing.assert_allclose(parts["gp"], gp_fake, rtol=1e-4)
    np.testing.assert_allclose(plain_fake, d(fake), rtol=1e-5)

    with pytest.raises(ValueError, match="config.loss.gp_on='real'"):
        L.d_wgan_gp(toy_d, real, fake, eps, gp_on="real")
