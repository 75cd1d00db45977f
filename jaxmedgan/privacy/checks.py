"""Refuse discriminator layers that mix examples when DP-SGD is on.

DP-SGD bounds each example's influence by clipping its own gradient. A layer whose output for
example i depends on example j (BatchNorm's batch statistics, minibatch-stddev over a group > 1)
lets example j's data reach example i's clipped gradient -- and its running statistics reach the
model unclipped -- so the clipping bound, and with it the (epsilon, delta) guarantee, is void.
Only D sees real data, so only D is checked; G may use BatchNorm (it sees only noise).
"""
from __future__ import annotations

from typing import Any, Mapping

from jaxmedgan.models.layers import BATCH_MIXING_NORMS, modules_using
from jaxmedgan.privacy.config import dp_enabled  # noqa: F401  (re-exported: "is DP on" has one spelling)


def _field(section: Any, key: str, default: Any) -> Any:
    """`section.key` for ConfigDicts, dicts and plain objects; `default` when absent."""
    if section is None:
        return default
    return section.get(key, default) if hasattr(section, "get") else getattr(section, key, default)


def check_dp_compatible(config: Any, d_variables: Mapping[str, Any]) -> None:
    """Raises ValueError naming every D layer/setting that mixes examples, if DP is enabled.

    d_variables: D's Flax variables ({"params": ..., "batch_stats": ...}); `config.model` is
    read for `d_norm` and `mbstd_group_size` (absent = 0).
    """
    if not dp_enabled(config):
        return
    model = config.model
    problems = []
    bn_layers = modules_using(d_variables, "batch_stats")
    d_norm = _field(model, "d_norm", "none")
    if bn_layers or d_norm in BATCH_MIXING_NORMS:
        where = f"layers {', '.join(bn_layers)}" if bn_layers else "its normalisation layers"
        problems.append(
            f"the discriminator uses batch normalisation (config.model.d_norm={d_norm!r}; {where}), "
            "which mixes examples through batch statistics; set config.model.d_norm to a "
            "per-example norm such as 'layer', 'group', 'instance' or 'none'")
    group = _field(model, "mbstd_group_size", 0)
    whole_batch = group is None and _field(model, "mbstd_num_channels", 1) > 0  # None = the whole batch
    if whole_batch or (group and group > 1):
        problems.append(
            f"minibatch-stddev mixes examples across a group (config.model.mbstd_group_size={group}"
            f"{' = the whole batch' if whole_batch else ''}); set it to 0 (off) or 1 (per-example) under DP")
    if problems:
        raise ValueError("DP-SGD is enabled (config.privacy.enabled=True) but per-example gradient "
                         "clipping needs a discriminator whose output for one example does not "
                         "depend on the others: " + "; and ".join(problems) + ".")
