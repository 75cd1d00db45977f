"""R1 and path-length penalties vs explicit formulas and finite differences on toy networks; the
phases' losses (Gmain, Greg, Dmain, Dreg, Dboth) vs numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.losses import stylegan2 as losses


def test_r1_on_linear_d_is_gamma_half_weight_norm():
    w = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 1))
    d_fn = lambda x: jnp.sum(x * w, axis=(1, 2, 3)) + 0.3
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 8, 8, 1))
    expected = 10.0 / 2 * float(jnp.sum(w**2))
    np.testing.assert_allclose(losses.r1_penalty(d_fn, x, 10.0), np.full(5, expected), rtol=1e-5)
    np.testing.assert_allclose(losses.r1_penalty_per_example(d_fn, x, 10.0), np.full(5, expected), rtol=1e-5)


def test_r1_on_nonlinear_d_matches_central_finite_differences():
    with jax.enable_x64(True):
        k = jax.random.PRNGKey(2)
        a = jax.random.normal(k, (4 * 4 * 2, 6), jnp.float64)
        d_fn = lambda x: jnp.sum(jnp.tanh(x.reshape(x.shape[0], -1) @ a) ** 2, axis=1)
        x = jax.random.normal(jax.random.PRNGKey(3), (3, 4, 4, 2), jnp.float64)
        gamma, eps = 0.5, 1e-6
        an = np.asarray(a)
        d_np = lambda x: (np.tanh(x.reshape(x.shape[0], -1) @ an) ** 2).sum(axis=1)  # numpy twin of d_fn
        xn = np.asarray(x)
        fd = np.zeros(x.shape)
        for idx in np.ndindex(*x.shape[1:]):
            e = np.zeros(x.shape)
            e[(slice(None), *idx)] = eps  # D is per example: perturb element idx of every example at once
            fd[(slice(None), *idx)] = (d_np(xn + e) - d_np(xn - e)) / (2 * eps)
        expected = gamma / 2 * (fd**2).sum(axis=(1, 2, 3))
        np.testing.assert_allclose(losses.r1_penalty(d_fn, x, gamma), expected, rtol=1e-7)
        np.testing.assert_allclose(losses.r1_penalty_per_example(d_fn, x, gamma), expected, rtol=1e-7)


def test_r1_batch_form_includes_cross_example_terms_of_a_mixing_d():
    # D_i(x) = <w, x_i> + mean over the batch of x: example j's logit depends on x_i too.
    w = jnp.arange(4.0).reshape(2, 2, 1)
    d_fn = lambda x: jnp.sum(x * w, axis=(1, 2, 3)) + jnp.mean(x)
    x = jnp.ones((2, 2, 2, 1))
    # d(sum_j D_j)/dx_i = w + B * (1 / (B*H*W*C)) = w + 1/4 per element.
    expected = 0.5 * float(jnp.sum((w + 0.25) ** 2))
    np.testing.assert_allclose(losses.r1_penalty(d_fn, x, 1.0), [expected, expected], rtol=1e-6)


def test_path_length_on_linear_generator_matches_explicit_jacobian_formula():
    b, num_ws, w_dim, h, w, c = 3, 4, 5, 6, 6, 2
    m = jax.random.normal(jax.random.PRNGKey(0), (num_ws * w_dim, h * w * c))
    synth = lambda ws: jnp.tanh(0.0) + (ws.reshape(ws.shape[0], -1) @ m).reshape(ws.shape[0], h, w, c)
    ws = jax.random.normal(jax.random.PRNGKey(1), (b, num_ws, w_dim))
    key = jax.random.PRNGKey(2)
    pl_mean = jnp.float32(0.7)
    penalty, lengths, new_mean = losses.path_length_penalty(synth, ws, key, pl_mean)

    y = np.asarray(jax.random.normal(key, (b, h, w, c))) / np.sqrt(h * w)
    jt_y = (y.reshape(b, -1) @ np.asarray(m).T).reshape(b, num_ws, w_dim)  # J^T y per example
    ref_len = np.sqrt((jt_y**2).sum(axis=2).mean(axis=1))
    ref_mean = 0.7 + 0.01 * (ref_len.mean() - 0.7)
    np.testing.assert_allclose(lengths, ref_len, rtol=1e-5)
    np.testing.assert_allclose(new_mean, ref_mean, rtol=1e-6)
    np.testing.assert_allclose(penalty, (ref_len - ref_mean) ** 2, rtol=1e-4, atol=1e-7)
    assert losses.PL_WEIGHT == 2.0 and losses.PL_BATCH_SHRINK == 2 and losses.PL_DECAY == 0.01


def test_path_length_penalty_is_differentiable_in_generator_params():
    def total(scale):
        synth = lambda ws: jnp.sin(scale * ws).sum(axis=2)[:, :, None, None] * jnp.ones((1, 1, 4, 1))
        pen, _, _ = losses.path_length_penalty(synth, jnp.ones((2, 3, 4)), jax.random.PRNGKey(0), 0.0)
        return pen.mean()

    g = jax.grad(total)(1.3)
    eps = 1e-3
    fd = (total(1.3 + eps) - total(1.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=2e-2)


# The phases' losses (NVlabs' accumulate_gradients) against numpy.

SOFTPLUS = lambda x: np.logaddexp(0, x)


def _logits(n=6, seed=0):
    return np.random.default_rng(seed).normal(size=n).astype(np.float32) * 3


def test_dmain_is_softplus_fake_plus_softplus_minus_real():
    real, fake = _logits(seed=0), _logits(seed=1)
    loss, parts = losses.d_main_loss(jnp.asarray(real), jnp.asarray(fake))
    np.testing.assert_allclose(parts["fake"], SOFTPLUS(fake), rtol=1e-6)
    np.testing.assert_allclose(parts["real"], SOFTPLUS(-real), rtol=1e-6)
    np.testing.assert_allclose(loss, SOFTPLUS(fake) + SOFTPLUS(-real), rtol=1e-6)
    np.testing.assert_allclose(losses.d_fake_loss(jnp.asarray(fake)), SOFTPLUS(fake), rtol=1e-6)
    np.testing.assert_allclose(losses.d_real_loss(jnp.asarray(real)), SOFTPLUS(-real), rtol=1e-6)


def test_dboth_real_term_adds_the_lazy_r1():
    real, r1 = _logits(seed=2), np.abs(_logits(seed=3))
    np.testing.assert_allclose(losses.d_both_real_loss(jnp.asarray(real), jnp.asarray(r1), 16),
                               SOFTPLUS(-real) + 16 * r1, rtol=1e-6)


def test_gmain_adds_the_weighted_clinical_cross_entropy():
    fake = _logits(4, seed=4)
    clf = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2])
    ce = -(clf - np.log(np.exp(clf).sum(axis=1, keepdims=True)))[np.arange(4), labels]
    loss, parts = losses.g_main_loss(jnp.asarray(fake))
    np.testing.assert_allclose(loss, SOFTPLUS(-fake), rtol=1e-6)
    assert set(parts) == {"adversarial"}
    loss, parts = losses.g_main_loss(jnp.asarray(fake), jnp.asarray(clf), jnp.asarray(labels), clinical_weight=0.3)
    np.testing.assert_allclose(loss, SOFTPLUS(-fake) + 0.3 * ce, rtol=1e-5)
    np.testing.assert_allclose(parts["clinical_ce"], ce, rtol=1e-5)
    # lambda = 0: the cross-entropy is reported, the loss is exactly the plain one.
    loss, parts = losses.g_main_loss(jnp.asarray(fake), jnp.asarray(clf), jnp.asarray(labels))
    np.testing.assert_array_equal(loss, losses.g_main_loss(jnp.asarray(fake))[0])
    np.testing.assert_allclose(parts["clinical_ce"], ce, rtol=1e-5)
    with pytest.raises(ValueError, match="clinical_weight=0.5 > 0 needs the clinical classifier's logits"):
        losses.g_main_loss(jnp.asarray(fake), clinical_weight=0.5)


def test_dreg_is_the_mean_r1_times_the_interval():
    w = jax.random.normal(jax.random.PRNGKey(6), (4, 4, 1))
    d_fn = lambda x: jnp.sum(x * w, axis=(1, 2, 3)) - 0.2
    x = jax.random.normal(jax.random.PRNGKey(7), (3, 4, 4, 1))
    loss, parts = losses.d_reg_loss(d_fn, x, 10.0, 16)
    r1 = 10.0 / 2 * float(jnp.sum(w**2))  # linear D: grad_x D = w for every example
    np.testing.assert_allclose(parts["penalty"], np.full(3, r1), rtol=1e-5)
    np.testing.assert_allclose(parts["logits"], np.sum(np.asarray(x) * np.asarray(w), axis=(1, 2, 3)) - 0.2, rtol=1e-5)
    np.testing.assert_allclose(loss, 16 * r1, rtol=1e-5)


def test_greg_is_the_mean_path_length_penalty_times_weight_and_interval():
    b, num_ws, w_dim, h, w, c = 2, 3, 4, 4, 4, 1
    m = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (num_ws * w_dim, h * w * c)))
    synth = lambda ws: (ws.reshape(ws.shape[0], -1) @ m).reshape(ws.shape[0], h, w, c)
    ws = jax.random.normal(jax.random.PRNGKey(9), (b, num_ws, w_dim))
    key = jax.random.PRNGKey(10)
    loss, parts = losses.g_reg_loss(synth, ws, key, jnp.float32(0.5), weight=2.0, interval=4, decay=0.01)
    y = np.asarray(jax.random.normal(key, (b, h, w, c))) / np.sqrt(h * w)
    lengths = np.sqrt((((y.reshape(b, -1) @ m.T).reshape(b, num_ws, w_dim)) ** 2).sum(axis=2).mean(axis=1))
    pl_mean = 0.5 + 0.01 * (lengths.mean() - 0.5)
    np.testing.assert_allclose(parts["lengths"], lengths, rtol=1e-5)
    np.testing.assert_allclose(parts["pl_mean"], pl_mean, rtol=1e-6)
    np.testing.assert_allclose(loss, np.mean((lengths - pl_mean) ** 2) * 2.0 * 4, rtol=1e-4)
