"""DCGAN/ACGAN: output shapes, parameter trees and counts (counted by hand below)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.models import dcgan


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_acgan_generator_shapes_and_param_count():
    g = dcgan.Generator(image_size=16, channels=1, latent_dim=8, num_classes=3, base_features=4, norm="batch")
    z = jnp.ones((5, 8))
    labels = jnp.array([0, 1, 2, 0, 1])
    variables = g.init(jax.random.PRNGKey(0), z, labels, train=False)
    out = g.apply(variables, z, labels, train=False)
    assert out.shape == (5, 16, 16, 1) and out.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out))) <= 1.0  # tanh output range
    # Hand count: embed 3*8; project (8+8)->4*4*8 no bias; BN(8); convT 4x4 8->4 no bias; BN(4);
    # convT 4x4 4->1 with bias.
    expected = 3 * 8 + 16 * 128 + 2 * 8 + 4 * 4 * 8 * 4 + 2 * 4 + 4 * 4 * 4 * 1 + 1
    assert _count(variables["params"]) == expected == 2673
    assert set(variables["params"]) == {"class_embed", "project", "project_norm", "up1", "to_image"}
    assert _count(variables["batch_stats"]) == 2 * (8 + 4)


def test_generator_class_conditioning_changes_output():
    g = dcgan.Generator(image_size=8, latent_dim=4, num_classes=3, base_features=4, norm="none")
    z = jax.random.normal(jax.random.PRNGKey(1), (1, 4))
    v = g.init(jax.random.PRNGKey(0), z, jnp.array([0]), train=False)
    a = g.apply(v, z, jnp.array([0]), train=False)
    b = g.apply(v, z, jnp.array([2]), train=False)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="pass labels"):
        g.apply(v, z, None, train=False)


def test_acgan_discriminator_shapes_and_param_count():
    d = dcgan.Discriminator(image_size=16, base_features=4, num_classes=3, norm="layer")
    x = jnp.zeros((6, 16, 16, 1))
    variables = d.init(jax.random.PRNGKey(0), x, train=False)
    adv, cls = d.apply(variables, x, train=False)
    assert adv.shape == (6,) and cls.shape == (6, 3)
    # conv 4x4 1->4 + bias; conv 4x4 4->8 no bias; LayerNorm scale+bias over 8 channels;
    # dense 4*4*8->1 and ->3 with biases.
    expected = (16 * 4 + 4) + 16 * 4 * 8 + 2 * 8 + (128 + 1) + (128 * 3 + 3)
    assert _count(variables["params"]) == expected == 1112


def test_dcgan_discriminator_has_no_aux_head_and_rejects_wrong_size():
    d = dcgan.Discriminator(image_size=8, base_features=4)
    v = d.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)), train=False)
    adv, cls = d.apply(v, jnp.zeros((2, 8, 8, 1)), train=False)
    assert adv.shape == (2,) and cls is None
    with pytest.raises(ValueError, match=r"8x8.*\(2, 16, 16, 1\)"):
        d.apply(v, jnp.zeros((2, 16, 16, 1)), train=False)


@pytest.mark.parametrize("size", [6, 12, 4])
def test_bad_image_size_is_rejected(size):
    with pytest.raises(ValueError, match="power of two"):
        dcgan.Generator(image_size=size).init(jax.random.PRNGKey(0), jnp.zeros((1, 100)), train=False)


def test_discriminator_per_example_independence_without_batchnorm():
    # With a per-example norm, example i's logit must not depend on example j (DP relies on this).
    d = dcgan.Discriminator(image_size=8, base_features=4, norm="layer")
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
    v = d.init(jax.random.PRNGKey(1), x, train=False)
    jac = jax.jacobian(lambda x: d.apply(v, x, train=True)[0])(x)  # [3, 3, 8, 8, 1]
    off_diag = jac[0, 1:]
    assert float(jnp.max(jnp.abs(off_diag))) == 0.0
    assert float(jnp.max(jnp.abs(jac[0, 0]))) > 0.0


def test_minibatch_stddev_couples_examples_adds_one_head_input_and_is_refused_under_dp():
    from configs import dcgan_liver
    from jaxmedgan.privacy import checks

    d = dcgan.Discriminator(image_size=8, base_features=4, norm="layer", mbstd_group_size=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
    v = d.init(jax.random.PRNGKey(1), x, train=False)
    plain = dcgan.Discriminator(image_size=8, base_features=4, norm="layer").init(jax.random.PRNGKey(1), x, train=False)
    assert _count(v["params"]) - _count(plain["params"]) == 4 * 4  # one extra 4x4 channel into the dense head
    jac = jax.jacobian(lambda x: d.apply(v, x, train=False)[0])(x)
    assert float(jnp.max(jnp.abs(jac[0, 1:]))) > 0.0  # example 0's logit now sees examples 1 and 2
    c = dcgan_liver.get_config()
    c.privacy.enabled, c.model.mbstd_group_size = True, 3
    with pytest.raises(ValueError, match="mbstd_group_size=3"):
        checks.check_dp_compatible(c, plain)
