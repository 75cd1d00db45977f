"""Training a workdir from a config: what `jaxmedgan train` runs once its flags are parsed, and what
the arm studies (`studies/{diversity, data_efficient, privacy_audit}`) call to train the same way.

`load_config` reads a configs/*.py file with `--config.key=value` overrides as `jaxmedgan train`
does. `train` makes the data paths absolute, adopts a built dataset (`data.dataset_dir`), validates
the config before anything is written or compiled, joins the processes of a multi-process run,
holds the workdir, accepts (or refuses) config drift on resume, then trains the family.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence

import jax
import ml_collections
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxmedgan import config_drift, config_validation, distributed, trainers, workdir_lock
from jaxmedgan.data import datasets

# Config keys holding paths; made absolute so a resumed or multi-process run reads the same files.
_PATH_KEYS = ("data_dir", "image_dir", "dataset_dir", "labels_csv", "test_labels_csv")


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config file at `path` (its get_config()) with `overrides` ('--config.train.steps=500', ...)
    applied and the config locked, parsed as `jaxmedgan train --config PATH ...` parses them."""
    argv = ["jaxmedgan train", f"--config={path}", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    # ml_collections loads every config file as module `config_config` and re-executes into a cached one,
    # so a file without get_config() would inherit the previous file's.
    sys.modules.pop("config_config", None)
    fv(argv)
    config = fv.config
    config.keys()  # a config that failed to load raises only when first used
    return config


def explicit_keys(argv: Iterable[str]) -> set[str]:
    """Config keys set on a command line: {"data.image_size", ...} from --config.data.image_size=..."""
    return {a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")}


def train(config: ml_collections.ConfigDict, workdir: str, *, explicit: Iterable[str] = (),
          allow_config_change: Sequence[str] = (), coordinator: str | None = None,
          num_processes: int | None = None, process_id: int | None = None) -> None:
    """Trains `config` into `workdir` (or resumes it), as `jaxmedgan train` does.

    `explicit`: the config keys the user set (`explicit_keys`); one that disagrees with a built
    dataset's options is an error. `allow_config_change`: fields allowed to differ from the
    workdir's config.json on resume (`config_drift`). `coordinator`, `num_processes`, `process_id`:
    a multi-process run (`distributed.initialize`). Raises `config_validation.ConfigError` listing
    every problem of the config before anything is written or compiled.
    """
    _use_built_dataset(config, explicit)
    config_validation.validate(config, workdir, image_sizes=trainers.image_sizes)
    distributed.initialize(coordinator, num_processes, process_id)
    log = setup_logging()
    log.info("JAX %s, process %d/%d, %d local / %d global devices (%s).", jax.__version__,
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count(), jax.devices()[0].platform)
    is_main = jax.process_index() == 0
    with workdir_lock.hold(workdir, enabled=is_main):
        if is_main:
            config_drift.accept_on_resume(workdir, config, allow_config_change)
        if config.get("train", {}).get("per_class", False):
            trainers.get("per_class").train_and_evaluate(config, workdir)
        else:
            trainers.get(config.trainer).train_and_evaluate(config, workdir)


def _use_built_dataset(config: ml_collections.ConfigDict, explicit: Iterable[str]) -> None:
    """Absolute data paths in config; with data.dataset_dir, adopt the built dataset's options (an
    explicit key that disagrees is a ConfigError naming the fields)."""
    for section in [config, *(config[s] for s in ("stage1", "stage2", "generator") if s in config)]:
        d = section.get("data") if hasattr(section, "get") else None
        if d is None:
            continue
        for key in _PATH_KEYS:
            if d.get(key):
                d[key] = os.path.abspath(os.path.expanduser(d[key]))
    if not (config.get("data") and config.data.get("dataset_dir")):
        return
    try:
        changed = datasets.adopt_built(config, explicit)
    except ValueError as e:
        raise config_validation.ConfigError(str(e)) from None
    if changed:
        setup_logging().info("Adopted from %s: %s", config.data.dataset_dir, ", ".join(changed))


def setup_logging() -> logging.Logger:
    """jaxmedgan's own INFO logs to stderr; libraries (orbax, absl) only at WARNING and above."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    log = logging.getLogger("jaxmedgan")
    if not any(getattr(h, "_jaxmedgan", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._jaxmedgan = True
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)
    return log
