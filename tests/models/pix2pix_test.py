"""pix2pix U-Net and PatchGAN: shapes, parameter trees, dropout, receptive field (formula + probe)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.models import pix2pix


def _init(model, *args):
    """Variables of `model` for inputs `args` (train=False)."""
    return model.init(jax.random.PRNGKey(0), *args, train=False)


def _apply(model, variables, *args, train=False, rng=None):
    """model.apply; `rng` feeds dropout when training."""
    return model.apply(variables, *args, train=train, rngs={"dropout": rng} if train else {})


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_unet_shapes_tree_and_param_count():
    g = pix2pix.UNetGenerator(image_size=16, out_channels=3, base_features=4, max_features=8)
    cond = jax.nn.one_hot(jnp.arange(2 * 16 * 16).reshape(2, 16, 16) % 4, 4)
    v = _init(g, cond)
    out = _apply(g, v, cond)
    assert out.shape == (2, 16, 16, 3) and out.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out))) <= 1.0
    # depth log2(16) = 4: down0..3 (widths 4, 8, 8, 8), up3..1, to_image.
    assert set(v["params"]) == {"down0", "down1", "down2", "down3", "up3", "up2", "up1", "to_image"}
    # Hand count: down0 4x4 4->4 + bias; down1 4->8 + IN(8); down2 8->8 + IN; down3 8->8 + bias
    # (no norm at 1x1); up3 8->8 + IN; up2 (8+8)->8 + IN; up1 (8+8)->4 + IN(4); to_image (4+4)->3 + bias.
    expected = (16 * 4 * 4 + 4) + (16 * 4 * 8 + 16) + (16 * 64 + 16) + (16 * 64 + 8) \
        + (16 * 64 + 16) + (16 * 16 * 8 + 16) + (16 * 16 * 4 + 8) + (16 * 8 * 3 + 3)
    assert _count(v["params"]) == expected
    assert "batch_stats" not in v  # instance norm: no cross-example state


@pytest.mark.parametrize("upsample", ["nearest", "fir"])
def test_unet_resize_conv_decoder_keeps_shapes_and_tree_with_3x3_kernels(upsample):
    g = pix2pix.UNetGenerator(image_size=16, out_channels=3, base_features=4, max_features=8, upsample=upsample)
    cond = jax.nn.one_hot(jnp.arange(2 * 16 * 16).reshape(2, 16, 16) % 4, 4)
    v = _init(g, cond)
    out = _apply(g, v, cond)
    assert out.shape == (2, 16, 16, 3) and float(jnp.max(jnp.abs(out))) <= 1.0
    assert set(v["params"]) == {"down0", "down1", "down2", "down3", "up3", "up2", "up1", "to_image"}
    # The encoder as in the transposed-conv count; every decoder kernel 3x3 instead of 4x4.
    expected = (16 * 4 * 4 + 4) + (16 * 4 * 8 + 16) + (16 * 64 + 16) + (16 * 64 + 8) \
        + (9 * 64 + 16) + (9 * 16 * 8 + 16) + (9 * 16 * 4 + 8) + (9 * 8 * 3 + 3)
    assert _count(v["params"]) == expected
    assert v["params"]["up1"]["Conv_0"]["kernel"].shape == (3, 3, 16, 4)
    with pytest.raises(ValueError, match="Unknown upsample 'bilinear'"):
        _init(pix2pix.UNetGenerator(image_size=16, base_features=4, max_features=8, upsample="bilinear"), cond)


def test_unet_depth_follows_image_size_and_rejects_bad_sizes():
    assert pix2pix.unet_depth(256) == 8 and pix2pix.unet_depth(64) == 6 and pix2pix.unet_depth(64, 4) == 4
    with pytest.raises(ValueError, match="image_size=48"):
        pix2pix.unet_depth(48)
    g = pix2pix.UNetGenerator(image_size=16, base_features=2, max_features=4)
    with pytest.raises(ValueError, match=r"\[B, 16, 16, K\].*\(1, 8, 8, 2\)"):
        g.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 2)), train=False)


def test_dropout_is_the_only_randomness_and_only_in_training():
    g = pix2pix.UNetGenerator(image_size=16, base_features=4, max_features=8)
    cond = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(1), (2, 16, 16), 0, 3), 3)
    v = _init(g, cond)
    a = _apply(g, v, cond, train=True, rng=jax.random.PRNGKey(1))
    b = _apply(g, v, cond, train=True, rng=jax.random.PRNGKey(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(_apply(g, v, cond), _apply(g, v, cond))
    g0 = pix2pix.UNetGenerator(image_size=16, base_features=4, max_features=8, dropout=0.0)
    np.testing.assert_array_equal(_apply(g0, v, cond, train=True, rng=jax.random.PRNGKey(1)),
                                  _apply(g0, v, cond, train=True, rng=jax.random.PRNGKey(2)))


def test_patchgan_shapes_and_batch_norm_option():
    d = pix2pix.PatchDiscriminator(base_features=4, max_features=16, norm="batch")
    cond, img = jnp.zeros((2, 32, 32, 4)), jnp.zeros((2, 32, 32, 1))
    v = _init(d, cond, img)
    assert _apply(d, v, cond, img).shape == (2, 4, 4)
    assert set(v["params"]) == {"conv0", "conv1", "conv2", "conv3", "logits"}
    assert "batch_stats" in v  # the DP check refuses this (tests/trainers/pix2pix_test.py)
    d1 = pix2pix.PatchDiscriminator(base_features=4, num_strided=1)
    assert _apply(d1, _init(d1, cond, img), cond, img).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="share"):
        d.apply(v, cond, jnp.zeros((2, 16, 16, 1)), train=False)


def test_patchgan_receptive_field_formula():
    # r_{l-1} = (r_l - 1) s_l + k_l: 1 -> 4 -> 7 -> 16 -> 34 -> 70 for the pix2pix default.
    assert pix2pix.patchgan_receptive_field(3) == 70
    assert [pix2pix.patchgan_receptive_field(n) for n in (1, 2, 4)] == [16, 34, 142]


@pytest.mark.parametrize("num_strided", [3, 1])
def test_patchgan_receptive_field_measured_by_gradient_probe(num_strided):
    """Nonzero input-gradient support of one central output logit is r x r px (norm 'none': an
    instance norm would couple every pixel through its mean/variance)."""
    size = 128
    d = pix2pix.PatchDiscriminator(base_features=2, max_features=8, num_strided=num_strided, norm="none")
    cond = jnp.zeros((1, size, size, 1))
    x = jax.random.normal(jax.random.PRNGKey(0), (1, size, size, 1))
    v = _init(d, cond, x)
    out_size = size // 2 ** num_strided
    c = out_size // 2

    def one_logit(x):
        return d.apply(v, cond, x, train=False)[0, c, c]

    grad = np.asarray(jax.grad(one_logit)(x))[0, ..., 0]
    rows, cols = np.nonzero(grad)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    r = pix2pix.patchgan_receptive_field(num_strided)
    assert (height, width) == (r, r)
    assert np.count_nonzero(grad) == r * r  # the support is the full square, no holes
