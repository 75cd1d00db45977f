"""benchmarks.vs_pytorch --quick: the PyTorch DCGAN/ACGAN port matches jaxmedgan's parameter counts
and the run writes its ratios (skipped without the `bench` extra; figures never asserted)."""
import json

import pytest

from benchmarks import vs_pytorch

pytest.importorskip("torch")
pytest.importorskip("opacus")


@pytest.mark.slow  # ~33 s on 2 idle cores: three compiles and Opacus
def test_quick_comparison_writes_ratios(tmp_path):
    out = tmp_path / "vs.json"
    result = vs_pytorch.main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    row = saved["gan_step"]
    assert row["model"] == "acgan" and row["batch"] == 8 and row["resolution"] == 16
    assert row["jax_over_torch"] == pytest.approx(row["jax_step_s"] / row["torch_step_s"])
    (dp,) = saved["dp_overhead"]
    assert dp["batch"] == 2
    assert dp["jax_ratio_over_opacus_ratio"] == pytest.approx(dp["jax_dp_over_nondp"] / dp["opacus_dp_over_nondp"])
    assert {r["framework"] for r in saved["dp_rows"]} == {"jax", "torch+opacus"}
    assert result["gan_step"] == row


def test_torch_port_has_the_flax_layer_shapes_for_each_norm():
    """Parameter tensors of the port equal jaxmedgan's DCGAN (G and D) shape for shape, up to layout."""
    import jax
    import numpy as np

    from jaxmedgan.trainers import gan
    from tests.trainers.gan_step_test import tiny_config

    for g_norm, d_norm in (("batch", "layer"), ("instance", "group"), ("none", "instance")):
        c = tiny_config(g_norm=g_norm, d_norm=d_norm, mbstd_group_size=0)  # the port has no minibatch-stddev
        state = jax.eval_shape(lambda k: gan.init_state(c, k), jax.random.PRNGKey(0))
        g, d = vs_pytorch.torch_gan(c)
        for flax_tree, module in ((state.g_params, g), (state.d_params, d)):
            flax_sizes = sorted(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(flax_tree))
            torch_sizes = sorted(p.numel() for p in module.parameters())
            assert flax_sizes == torch_sizes, (g_norm, d_norm)
