"""ResNet-style classifier: shapes, parameter tree and count (by hand), features, identity init."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.models import resnet_classifier


def _init(module, x):
    """Jitted init with an RngBitGenerator key: eager or threefry init compiles for 6-10 s on CPU."""
    return jax.jit(module.init)(jax.random.key(0, impl="rbg"), x)


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_shapes_param_tree_and_count():
    m = resnet_classifier.ResNetClassifier(num_classes=3, features=(4, 8), blocks_per_stage=1, norm="group")
    x = jnp.zeros((5, 16, 16, 1))
    v = _init(m, x)
    assert set(v) == {"params"}  # GroupNorm: no batch statistics
    p = v["params"]
    assert set(p) == {"backbone", "head"}
    assert set(p["backbone"]) == {"stem", "stem_norm", "stage0_block0", "stage1_block0"}
    assert set(p["backbone"]["stage1_block0"]) == {"conv1", "norm1", "conv2", "norm2", "proj", "proj_norm"}
    assert "proj" not in p["backbone"]["stage0_block0"]  # same width and stride: identity shortcut
    # stem 3x3 1->4 + GN(4); block0: 2 x 3x3 4->4 + 2 GN(4); block1: 3x3 4->8, 3x3 8->8, 2 GN(8),
    # 1x1 proj 4->8 + GN(8); dense 8->3 + bias.
    expected = (9 * 4 + 8) + (2 * 9 * 16 + 2 * 8) + (9 * 32 + 9 * 64 + 2 * 16 + 32 + 16) + (8 * 3 + 3)
    assert _count(p) == expected == 1319
    logits = jax.eval_shape(m.apply, v, x)  # shapes only: eager applies compile op by op (slow)
    assert logits.shape == (5, 3) and logits.dtype == jnp.float32
    assert jax.eval_shape(functools.partial(resnet_classifier.features, m), v, x).shape == (5, 8)


def test_logits_are_the_head_of_the_features_and_batch_independent():
    m = resnet_classifier.ResNetClassifier(num_classes=4, features=(4, 8), blocks_per_stage=2, stem_stride=2)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 16, 16, 1))
    v = _init(m, x)
    logits_fn = jax.jit(functools.partial(resnet_classifier.logits, m))
    feats = jax.jit(functools.partial(resnet_classifier.features, m))(v, x)
    head = v["params"]["head"]
    logits = logits_fn(v, x)
    np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)
    # Per-example normalisation: an image's logits do not depend on its batch-mates.
    np.testing.assert_allclose(logits_fn(v, x[::-1])[::-1], logits, rtol=1e-5, atol=1e-6)


def test_blocks_start_as_identity_plus_relu():
    # norm2's scale starts at 0, so an identity-shortcut block computes relu(x) at init.
    block = resnet_classifier.ResidualBlock(features=4, norm="group")
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    v = jax.jit(lambda k, x: block.init(k, x, train=False))(jax.random.key(1, impl="rbg"), x)
    out = jax.jit(lambda v, x: block.apply(v, x, train=False))(v, x)
    np.testing.assert_allclose(out, jax.nn.relu(x), atol=1e-6)


def test_batchnorm_variant_and_bad_input():
    m = resnet_classifier.ResNetClassifier(num_classes=2, features=(4,), norm="batch")
    v = _init(m, jnp.zeros((2, 8, 8, 1)))
    assert "batch_stats" in v
    with pytest.raises(ValueError, match=r"NHWC.*\(8, 8, 1\)"):
        jax.eval_shape(m.apply, v, jnp.zeros((8, 8, 1)))
