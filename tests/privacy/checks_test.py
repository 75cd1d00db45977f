"""DP compatibility checks: BatchNorm and minibatch-stddev in D are refused by name under DP."""
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from jaxmedgan.models import dcgan
from jaxmedgan.privacy import checks


def _config(d_norm="layer", dp=True, **model):
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"d_norm": d_norm, **model})
    c.privacy = ml_collections.ConfigDict({"enabled": dp})
    return c


def _d_variables(norm):
    d = dcgan.Discriminator(image_size=16, base_features=2, max_features=4, norm=norm)
    return d.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 1)), train=False)


def test_batchnorm_discriminator_is_refused_naming_the_layer():
    with pytest.raises(ValueError) as e:
        checks.check_dp_compatible(_config("batch"), _d_variables("batch"))
    msg = str(e.value)
    assert "down1/BatchNorm_0" in msg and "config.model.d_norm='batch'" in msg and "'layer'" in msg


def test_batch_stats_are_refused_even_if_d_norm_says_otherwise():
    with pytest.raises(ValueError, match="down1/BatchNorm_0"):
        checks.check_dp_compatible(_config("layer"), _d_variables("batch"))


def test_d_norm_batch_is_refused_without_variables():
    with pytest.raises(ValueError, match="d_norm='batch'; its normalisation layers"):
        checks.check_dp_compatible(_config("batch"), {"params": {}})


def test_minibatch_stddev_group_is_refused():
    with pytest.raises(ValueError, match=r"mbstd_group_size=4\).*set it to 0 \(off\) or 1"):
        checks.check_dp_compatible(_config(mbstd_group_size=4), _d_variables("layer"))


def test_whole_batch_minibatch_stddev_is_refused_unless_it_adds_no_channel():
    with pytest.raises(ValueError, match=r"mbstd_group_size=None = the whole batch"):
        checks.check_dp_compatible(_config(mbstd_group_size=None), _d_variables("layer"))
    checks.check_dp_compatible(_config(mbstd_group_size=None, mbstd_num_channels=0), _d_variables("layer"))


def test_both_problems_are_reported_together():
    with pytest.raises(ValueError, match="BatchNorm_0.*; and minibatch-stddev"):
        checks.check_dp_compatible(_config("batch", mbstd_group_size=2), _d_variables("batch"))


@pytest.mark.parametrize("config", [_config("layer", mbstd_group_size=1), _config("group"),
                                    _config("batch", dp=False, mbstd_group_size=4)])
def test_per_example_discriminators_and_non_dp_runs_pass(config):
    checks.check_dp_compatible(config, _d_variables(config.model.d_norm))


def test_missing_privacy_section_means_dp_off():
    c = ml_collections.ConfigDict({"model": {"d_norm": "batch"}})
    assert not checks.dp_enabled(c)
    checks.check_dp_compatible(c, _d_variables("batch"))
