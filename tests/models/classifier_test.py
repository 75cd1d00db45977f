"""Small classifier CNN: shapes, parameter tree, per-example (no batch statistics) by default."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedgan.models import classifier as classifier_lib


def test_shapes_tree_and_per_example_outputs():
    module = classifier_lib.Classifier(num_classes=4, features=(4, 8))
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 1))
    variables = jax.jit(module.init)(jax.random.PRNGKey(1), x)
    assert set(variables) == {"params"}  # GroupNorm: no batch_stats
    assert sorted(variables["params"]) == ["conv0_0", "conv0_1", "conv1_0", "conv1_1", "head"]
    apply = jax.jit(lambda v, x: classifier_lib.classifier_logits(module, v, x))
    logits = apply(variables, x)
    assert logits.shape == (3, 4) and logits.dtype == jnp.float32
    alone = apply(variables, x[:1])
    np.testing.assert_allclose(alone, logits[:1], rtol=1e-5, atol=1e-6)  # no cross-example mixing
    with pytest.raises(ValueError, match="NHWC"):
        module.apply(variables, jnp.zeros((16, 16, 1)))
