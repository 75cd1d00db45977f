"""ReACGAN's data-to-data cross-entropy (losses/gan.py `d2dce`) against the paper's formula in numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.losses import gan as L


def d2dce_reference(embed, proxies, labels, temperature, m_p):
    """D2D-CE as Kang et al. 2021 write it, one sample at a time in float64: with f, v unit vectors and m_n = 1 - m_p,
    loss_i = -log( exp([f_i.v_{y_i} - m_p]_- / T)
                   / (exp([f_i.v_{y_i} - m_p]_- / T) + sum_{j: y_j != y_i} exp([f_i.f_j - m_n]_+ / T)) )."""
    f = np.asarray(embed, np.float64)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    v = np.asarray(proxies, np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    m_n = 1.0 - m_p
    out = []
    for i, y in enumerate(labels):
        positive = np.exp(min(f[i] @ v[y] - m_p, 0.0) / temperature)
        negatives = sum(np.exp(max(f[i] @ f[j] - m_n, 0.0) / temperature)
                        for j in range(len(labels)) if labels[j] != y)
        out.append(-np.log(positive / (positive + negatives)))
    return np.array(out)


_d2dce = jax.jit(L.d2dce, static_argnames=("temperature", "m_p"))


@pytest.mark.parametrize("temperature,m_p", [(0.5, 0.98), (0.25, 0.9), (1.0, 1.0), (0.1, 0.5)])
def test_d2dce_equals_the_papers_formula(temperature, m_p):
    rng = np.random.default_rng(0)
    embed = rng.normal(size=(9, 6)).astype(np.float32) * rng.uniform(0.1, 5, (9, 1)).astype(np.float32)
    proxies = rng.normal(size=(4, 6)).astype(np.float32)
    labels = np.array([0, 1, 1, 2, 0, 0, 3, 2, 1], np.int32)
    got = np.asarray(_d2dce(embed, proxies, labels, temperature=temperature, m_p=m_p))
    assert got.shape == (9,) and got.dtype == np.float32
    np.testing.assert_allclose(got, d2dce_reference(embed, proxies, labels, temperature, m_p), rtol=1e-5, atol=1e-6)


def test_d2dce_margins_are_active_on_both_sides():
    # Sample 0 lies within m_p of its proxy (no pull), sample 3 (same class) does not; some
    # other-class pairs are closer than m_n (pushed), some farther (each a constant e^0 = 1).
    rng = np.random.default_rng(1)
    embed = rng.normal(size=(6, 8)).astype(np.float32)
    proxies = rng.normal(size=(3, 8)).astype(np.float32)
    proxies[0] = embed[0] + 0.05 * rng.normal(size=8)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    to_proxy = np.sum(unit(embed) * unit(proxies)[labels], -1)
    pair = (unit(embed) @ unit(embed).T)[labels[:, None] != labels[None, :]]
    m_p = 0.9
    assert to_proxy[0] > m_p > to_proxy[3] and pair.min() < 1 - m_p < pair.max()
    got = _d2dce(embed, proxies, labels, temperature=0.5, m_p=m_p)
    np.testing.assert_allclose(got, d2dce_reference(embed, proxies, labels, 0.5, m_p), rtol=1e-5, atol=1e-6)
    # No pull on sample 0 from its proxy: the proxy's gradient comes from sample 3 alone.
    g = jax.grad(lambda v: L.d2dce(embed, v, labels, temperature=0.5, m_p=m_p)[0])(proxies)
    assert np.abs(np.asarray(g)).max() == 0.0


def test_same_class_samples_are_not_negatives():
    rng = np.random.default_rng(2)
    embed = rng.normal(size=(6, 5)).astype(np.float32)
    proxies = rng.normal(size=(2, 5)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 0, 1], np.int32)
    loss = lambda e: np.asarray(_d2dce(e, proxies, labels, temperature=0.5, m_p=0.98))
    base = loss(embed)
    moved = embed.copy()
    moved[1] = rng.normal(size=5)  # sample 1 (class 0): a negative of 2, 3, 5 only
    changed = ~np.isclose(loss(moved), base, rtol=1e-6)
    assert changed.tolist() == [False, True, True, True, False, True]
    # One class in the batch: no negatives, so every sample's loss is p_i - p_i = 0 and there is no gradient.
    one = np.zeros(6, np.int32)
    np.testing.assert_allclose(_d2dce(embed, proxies, one, temperature=0.5, m_p=0.98), 0.0, atol=1e-6)
    grad = jax.grad(lambda e: jnp.sum(L.d2dce(e, proxies, one)))(embed)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() < 1e-6


def test_d2dce_gradient_is_finite_and_pulls_towards_the_proxy():
    rng = np.random.default_rng(3)
    embed = rng.normal(size=(4, 5)).astype(np.float32)
    proxies = rng.normal(size=(2, 5)).astype(np.float32)
    labels = np.array([0, 1, 0, 1], np.int32)
    total = lambda e: jnp.sum(L.d2dce(e, proxies, labels, temperature=0.5, m_p=0.98))
    grad = np.asarray(jax.grad(total)(embed))
    assert np.all(np.isfinite(grad))
    step = embed - 0.05 * grad  # gradient descent raises each sample's similarity to its proxy
    cos = lambda a, b: np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert np.mean(cos(step, proxies[labels])) > np.mean(cos(embed, proxies[labels]))
