"""ADA pipeline: p=0 identity, geometric round trips, colour formulas, finiteness and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.augment import ada

N, S = 4, 16


def _smooth_images(channels=1, seed=0):
    """Band-limited test images (a few low-frequency cosines), [N, S, S, channels] in about [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S] / S
    x = np.zeros((N, S, S, channels), np.float32)
    for b in range(N):
        for c in range(channels):
            for _ in range(4):
                fx, fy = rng.integers(0, 3, 2)
                x[b, :, :, c] += 0.25 * np.cos(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    return jnp.asarray(x)


def test_p_zero_is_the_exact_identity():
    x = jax.random.uniform(jax.random.PRNGKey(0), (N, S, S, 3), minval=-1, maxval=1)
    out = jax.jit(ada.augment)(x, jax.random.PRNGKey(1), 0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_identity_transform_round_trips_through_the_wavelet_resampler():
    # sym6 is orthogonal: upsample -> sample at the same points -> downsample reconstructs the input.
    x = jax.random.uniform(jax.random.PRNGKey(0), (N, S, S, 1), minval=-1, maxval=1)
    y = ada.apply_geometric(x, jnp.broadcast_to(jnp.eye(3), (N, 3, 3)))
    np.testing.assert_allclose(y, x, atol=2e-5)


def test_integer_translation_is_exact_in_the_interior_and_round_trips():
    x = jax.random.uniform(jax.random.PRNGKey(0), (N, S, S, 1), minval=-1, maxval=1)
    shifted = ada.apply_geometric(x, ada.translate2d(-2.0, -3.0, N))  # content moves +2 px in x, +3 in y
    np.testing.assert_allclose(shifted[:, 5:-5, 5:-5], x[:, 2:-8, 3:-7], atol=2e-5)
    back = ada.apply_geometric(shifted, ada.translate2d(2.0, 3.0, N))
    np.testing.assert_allclose(back[:, 5:-5, 5:-5], x[:, 5:-5, 5:-5], atol=2e-5)


def test_xflip_twice_and_rotate90_four_times_are_identity_to_tolerance():
    # Flips and rotations go through the same resampler as StyleGAN2-ADA's; the sym6 filter is only
    # nearly symmetric, so they equal exact pixel flips to ~2 % on band-limited images.
    x = _smooth_images()
    cfg = ada.pipeline("blit", rotate90=0.0, xint=0.0)  # x-flip only
    key = jax.random.PRNGKey(1)  # flips examples 1 and 3
    once = ada.augment(x, key, 1.0, cfg)
    is_flipped = [not np.array_equal(once[b], x[b]) for b in range(N)]  # unflipped: returned exactly
    twice = ada.augment(once, key, 1.0, cfg)  # same key: the same examples flip again
    np.testing.assert_allclose(twice, x, atol=0.03)
    assert 0 < sum(is_flipped) < N  # p=1 fires always, then flips with probability 1/2

    flip = ada.apply_geometric(x, ada.scale2d(-1.0, 1.0, N))
    np.testing.assert_allclose(flip, x[:, :, ::-1], atol=0.05)
    rot = ada.apply_geometric(x, ada.rotate2d(np.pi / 2, N))
    np.testing.assert_allclose(rot, jnp.rot90(x, 1, axes=(1, 2)), atol=0.05)
    y = x
    for _ in range(4):
        y = ada.apply_geometric(y, ada.rotate2d(np.pi / 2, N))
    np.testing.assert_allclose(y, x, atol=0.05)


def test_grayscale_colour_ops_follow_the_row_mean_rule():
    x = _smooth_images()
    key = jax.random.PRNGKey(5)
    b_only = ada.augment(x, key, 1.0, ada.pipeline("color", contrast=0.0, lumaflip=0.0))
    delta = np.asarray(b_only - x)
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1, :1], delta.shape), atol=1e-6)  # x + b
    flip = np.asarray(ada.augment(x, key, 1.0, ada.pipeline("color", brightness=0.0, contrast=0.0)))
    for b in range(N):  # luma flip on one channel is x or -x
        assert np.allclose(flip[b], x[b], atol=1e-6) or np.allclose(flip[b], -x[b], atol=1e-6)


def test_hue_and_saturation_leave_gray_rgb_unchanged_and_change_colours():
    cfg = ada.pipeline("color", brightness=0.0, contrast=0.0, lumaflip=0.0)
    gray = jnp.repeat(_smooth_images(1), 3, axis=-1)
    np.testing.assert_allclose(ada.augment(gray, jax.random.PRNGKey(0), 1.0, cfg), gray, atol=1e-5)
    rgb = _smooth_images(3, seed=1)
    assert float(jnp.abs(ada.augment(rgb, jax.random.PRNGKey(0), 1.0, cfg) - rgb).mean()) > 1e-2


def test_full_pipeline_output_is_finite_and_differentiable():
    x = _smooth_images(1)
    f = lambda x: ada.augment(x, jax.random.PRNGKey(7), 0.8)
    # Output and gradient from one compiled function (the pipeline is the expensive compile).
    (_, out), grad = jax.jit(jax.value_and_grad(lambda x: (jnp.sum(jnp.sin(f(x))), f(x)), has_aux=True))(x)
    assert out.shape == x.shape and out.dtype == x.dtype and np.isfinite(np.asarray(out)).all()
    assert float(jnp.abs(out - x).mean()) > 1e-3
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0


def test_bad_pipeline_names_are_errors():
    with pytest.raises(ValueError, match="Unknown ADA pipeline 'bgcfnc'"):
        ada.pipeline("bgcfnc")
    with pytest.raises(ValueError, match="Unknown AugmentConfig field"):
        ada.pipeline("bgc", xflp=1.0)
    with pytest.raises(ValueError, match="NHWC"):
        ada.augment(jnp.zeros((4, 4)), jax.random.PRNGKey(0), 0.5)
