"""Mixed precision (`config.train.dtype='bfloat16'`): each family computes in bf16 while its
parameters and optimiser state stay float32, and one training step gives finite losses.

Families and the trainers' step functions: pix2pix, classifier, StyleGAN2's
Gmain phase (G and D forward in bf16, G updated; the other phases reuse the same networks), and
PGGAN's full-resolution level step; gan (DCGAN/ACGAN) is checked against its float32 losses in
tests/trainers/gan_step_test.py::test_bfloat16_compute_keeps_float32_params_and_tracks_float32_losses. bf16 needs no
loss scaling: it has float32's exponent range, so gradients do not underflow as in fp16.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.trainers import classifier_test, pix2pix_test, stylegan2_test


def _float_dtypes(tree) -> set:
    return {str(x.dtype) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _check_state(state, before, fields):
    for name in fields:
        dtypes = _float_dtypes(getattr(state, name))
        assert dtypes == {"float32"}, f"{name} holds {dtypes} after a bf16 step"
        same = jax.tree_util.tree_map(lambda a, b: a.dtype == b.dtype and a.shape == b.shape,
                                      getattr(state, name), getattr(before, name))
        assert all(jax.tree_util.tree_leaves(same)), f"{name} changed structure, shape or dtype"


FAST = {"xla_backend_optimization_level": 0}  # these tests are compile-bound


def _step_in_bf16(fn, state, *args):
    """Runs jit(fn)(state, *args); returns (new state, metrics, whether the HLO computes in bf16)."""
    lowered = jax.jit(fn, compiler_options=FAST).lower(state, *args)  # traced and lowered once
    new_state, metrics = lowered.compile()(state, *args)
    return new_state, metrics, "bf16" in lowered.as_text()


def _finite(metrics, keys):
    for k in keys:
        assert np.isfinite(float(metrics[k])), f"{k} = {metrics[k]}"


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_pix2pix_bf16_keeps_fp32_params_and_finite_losses():
    from jaxmedgan.trainers import pix2pix

    c = pix2pix_test.tiny_config()
    c.train.dtype = "bfloat16"
    state = pix2pix.init_state(c, jax.random.PRNGKey(0))
    new, metrics, uses_bf16 = _step_in_bf16(functools.partial(pix2pix.train_step, c), state,
                                            pix2pix_test._batch(c))
    assert uses_bf16
    _check_state(new, state, ("g_params", "d_params", "g_opt_state", "d_opt_state"))
    _finite(metrics, ("d_loss", "g_loss", "g_l1"))


def test_classifier_bf16_keeps_fp32_params_and_finite_loss():
    from jaxmedgan.trainers import classifier

    c = classifier_test.tiny_config()
    c.train.dtype = "bfloat16"
    state = classifier.init_state(c, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    s, k = c.data.image_size, c.model.num_classes
    labels = rng.integers(0, k, 8).astype(np.int32)
    batch = {"image": rng.uniform(-1, 1, (8, s, s, c.data.channels)).astype(np.float32), "label": labels,
             "targets": np.eye(k, dtype=np.float32)[labels]}
    new, metrics, uses_bf16 = _step_in_bf16(functools.partial(classifier.train_step, c), state, batch)
    assert uses_bf16
    _check_state(new, state, ("params", "opt_state"))
    _finite(metrics, ("loss",))


@pytest.mark.slow  # ~27 s on 2 idle cores: compile-bound
def test_stylegan2_bf16_generator_phase_keeps_fp32_params_and_finite_loss():
    """Gmain runs G and D forward and G backward in bf16, and updates G's params and Adam state."""
    from jaxmedgan.trainers import stylegan2 as tr

    c = stylegan2_test.tiny_config()
    c.train.dtype = "bfloat16"
    state = tr.init_state(c, jax.random.PRNGKey(0))
    new, metrics, uses_bf16 = _step_in_bf16(functools.partial(tr.g_main_step, c), state, stylegan2_test._batch())
    assert uses_bf16
    _check_state(new, state, ("g_params", "d_params", "g_opt_state", "d_opt_state"))
    assert not all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: bool(jnp.all(a == b)), new.g_params, state.g_params))), "Gmain did not update G"
    losses = {k: v for k, v in metrics.items() if "loss" in k}
    assert losses, f"no loss metrics in {sorted(metrics)}"
    _finite(losses, losses)


def test_pggan_bf16_final_level_keeps_fp32_params_and_finite_losses():
    from configs import pggan_chest
    from jaxmedgan.trainers import pggan

    c = pggan_chest.tiny()
    c.train.dtype = "bfloat16"
    state = pggan.init_state(c, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32), "label": np.zeros(8, np.int32)}
    # The last (16 px) level, stabilised.
    new, metrics, uses_bf16 = _step_in_bf16(functools.partial(pggan.train_step, c), state, batch)
    assert uses_bf16
    _check_state(new, state, ("g_params", "d_params", "g_opt_state", "d_opt_state"))
    losses = {k: v for k, v in metrics.items() if "loss" in k}
    assert losses, f"no loss metrics in {sorted(metrics)}"
    _finite(losses, losses)
