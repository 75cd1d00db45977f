"""Checks a training config and workdir before anything is written or compiled.

`problems(config, workdir, image_sizes=...)` lists every problem, one line each (key, value, what is
expected, the nearest valid value where there is one); `validate` raises `ConfigError` with all of
them. The CLI prints them without a traceback and exits 2. Sections a config lacks are not checked
(dual_gan nests whole configs under `stage1` / `stage2`: each is checked with its prefix). What
image sizes a model builds is its family's to say (`Family.image_sizes`): this module sits below
the trainers, so its callers pass `trainers.image_sizes`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import ml_collections

from jaxmedgan.data import registry


class ConfigError(ValueError):
    """The config or workdir cannot be used; the message lists each problem on its own line."""


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _unit_interval(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


# (dotted key, test, what is expected); checked when the key is present.
RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("train.steps", _positive, "a positive number of steps"),
    ("train.batch_size", _positive, "a positive global batch size"),
    ("train.log_every", _positive, "a positive number of steps"),
    ("train.eval_every", _positive, "a positive number of steps"),
    ("checkpoint.every", _positive, "a positive number of steps"),
    ("checkpoint.keep", _positive, "at least 1 checkpoint to keep"),
    ("samples.every", _positive, "a positive number of steps"),
    ("samples.per_row", _positive, "at least 1 image per row"),
    ("eval.quality_every", _non_negative, ">= 0 (0 = off)"),
    ("eval.quality_num", _positive, "a positive number of images"),
    ("data.image_size", _positive, "a positive size in px"),
    ("data.channels", lambda v: v in (1, 3), "1 (grey) or 3 (RGB)"),
    ("model.latent_dim", _positive, "a positive latent size"),
    ("model.g_features", _positive, "a positive channel count"),
    ("model.d_features", _positive, "a positive channel count"),
    ("model.num_classes", _non_negative, ">= 0 (0 = unconditional)"),
    ("model.d_dropout", _unit_interval, "a dropout rate in [0, 1)"),
    ("optim.lr", _positive, "a positive learning rate"),
    ("optim.g_lr", _positive, "a positive learning rate"),
    ("optim.d_lr", _positive, "a positive learning rate"),
    ("optim.b1", _unit_interval, "an Adam beta in [0, 1)"),
    ("optim.b2", _unit_interval, "an Adam beta in [0, 1)"),
    ("loss.r1_gamma", _non_negative, ">= 0"),
    ("privacy.l2_clip", _positive, "a positive clipping norm"),
    ("privacy.noise_multiplier", _non_negative, ">= 0"),
    ("privacy.delta", _unit_interval, "a delta in [0, 1) (0 = 1/(10 N))"),
)
MAX_IMAGE_SIZE = 1 << 14  # px; the bound of a family whose model sets none
# (config) -> (smallest, largest or None) image size in px its family builds, or None: unchecked.
ImageSizes = Callable[[ml_collections.ConfigDict], tuple[int, int | None] | None]


def _get(config: ml_collections.ConfigDict, key: str) -> tuple[bool, Any]:
    node = config
    for part in key.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _nearest_power_of_two(n: float, lo: int, hi: int) -> int:
    p = 2 ** round(math.log2(max(n, 1)))
    return int(min(max(p, lo), hi))


def _image_size_problem(config: ml_collections.ConfigDict, prefix: str,
                        image_sizes: ImageSizes | None) -> str | None:
    found, size = _get(config, "data.image_size")
    if image_sizes is None or not found or not _positive(size):
        return None
    limits = image_sizes(config)
    if limits is None:
        return None
    lo, hi = limits[0], limits[1] or MAX_IMAGE_SIZE
    if size >= lo and size <= hi and float(size).is_integer() and int(size) & (int(size) - 1) == 0:
        return None
    return (f"config.{prefix}data.image_size={size!r}: the {config.get('trainer')!r} model needs a power of two in "
            f"[{lo}, {hi}] px; nearest valid: {_nearest_power_of_two(size, lo, hi)}.")


def _config_problems(config: ml_collections.ConfigDict, prefix: str = "",
                     image_sizes: ImageSizes | None = None) -> list[str]:
    out = []
    for key, ok, expected in RULES:
        found, value = _get(config, key)
        if found and not ok(value):
            out.append(f"config.{prefix}{key}={value!r}: expected {expected}.")
    problem = _image_size_problem(config, prefix, image_sizes)
    if problem:
        out.append(problem)
    found, source = _get(config, "data.source")
    if found and source:
        try:
            registry.get(source)
        except ValueError as e:
            out.append(f"config.{prefix}data.source: {e}")
    for stage in ("stage1", "stage2"):  # dual_gan: full sub-configs
        sub = config.get(stage)
        if isinstance(sub, ml_collections.ConfigDict):
            out += _config_problems(sub, f"{prefix}{stage}.", image_sizes)
    return out


def _workdir_problems(workdir: str) -> list[str]:
    if "://" in workdir:
        return []  # remote (gs://...): orbax reports access problems itself
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        return [f"--workdir {workdir!r} is a file, not a directory."]
    existing = workdir
    while existing and not os.path.exists(existing):  # the nearest ancestor that exists gets created into
        parent = os.path.dirname(existing.rstrip(os.sep))
        existing = parent if parent != existing else ""
    existing = existing or "."
    if not os.path.isdir(existing):
        return [f"--workdir {workdir!r} cannot be created: {existing!r} is a file."]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"--workdir {workdir!r} is not writable ({existing!r}: permission denied)."]
    return []


def problems(config: ml_collections.ConfigDict, workdir: str | None = None, *,
             image_sizes: ImageSizes | None) -> list[str]:
    """Every problem with `config` (and `workdir`, if given), one line each; [] if none.

    image_sizes: the image sizes `config`'s family builds (`trainers.image_sizes`; None: unchecked).
    """
    return _config_problems(config, "", image_sizes) + (_workdir_problems(workdir) if workdir is not None else [])


def validate(config: ml_collections.ConfigDict, workdir: str | None = None, *,
             image_sizes: ImageSizes | None) -> None:
    """Raises ConfigError listing every problem, one per line (`image_sizes`: as `problems`)."""
    found = problems(config, workdir, image_sizes=image_sizes)
    if found:
        raise ConfigError("\n".join(found))


def check_batch_fits(config: ml_collections.ConfigDict, num_examples: int) -> None:
    """A fixed global batch must not exceed the training set (it would repeat examples within a batch)."""
    batch = config.train.batch_size
    if batch > num_examples:
        raise ConfigError(f"config.train.batch_size={batch} is larger than the training set "
                          f"({num_examples} examples); use at most {num_examples}.")
