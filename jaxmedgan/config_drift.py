"""Resuming a workdir with a different config: refused with a readable diff unless declared mutable.

Only fields that do not change what is being trained (how long, how often to log, evaluate,
sample or checkpoint) may change on resume (`MUTABLE_ON_RESUME`). Any other change (learning
rate, seed, architecture, data) must be named on the command line,
`--allow-config-change=optim.d_lr,optim.g_lr`. Every accepted change, mutable or named, is
appended to `W/config_history.jsonl` (time, checkpoint step, key: [old, new]) before
`config.json` is rewritten, so config.json is never overwritten without a record.
Privacy settings of a DP run are checked by `privacy/plan.py:check_resume` (they may never change).

A field absent from the run's config.json did not exist when the run started: a newer jaxmedgan
added it, and a new field's default keeps the behaviour the run was trained with (the house rule
for adding config keys). It is accepted and recorded like a mutable one (`ADDED`), so upgrading
the library does not strand a workdir. Removed fields are still refused.
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence

import ml_collections

from jaxmedgan import atomic_io
from jaxmedgan.privacy import plan

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
MUTABLE_ON_RESUME = frozenset({  # how long and how often: none changes the trained weights
    "train.steps", "train.log_every", "train.eval_every", "train.quiet", "checkpoint.every",
    "checkpoint.keep", "checkpoint.async_save", "samples.every", "samples.per_row", "samples.seed",
    "eval.quality_every", "eval.quality_classifier", "eval.quality_num", "eval.quality_metrics"})


ABSENT = "<absent>"  # diff's value for a field one side lacks


class ConfigDriftError(ValueError):
    """Resume with changed config fields that were not declared mutable or named on the command line."""


def _as_json(config: ml_collections.ConfigDict | dict) -> dict:
    """Plain JSON values (tuples as lists), as config.json holds them."""
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def latest_checkpoint_step(workdir: str) -> int | None:
    """The newest finalised checkpoint step in `W/checkpoints` (a directory listing; no orbax)."""
    d = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
    return max(steps) if steps else None


def diff(old: dict | ml_collections.ConfigDict, new: dict | ml_collections.ConfigDict) -> dict[str, tuple]:
    """{dotted key: (old value, new value)} for every field that differs, was added or removed."""
    a, b = plan.flatten(_as_json(old)), plan.flatten(_as_json(new))
    missing = ABSENT
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)}


def _dp(cfg: dict) -> bool:
    return bool(cfg.get("privacy", {}).get("enabled", False))


def check_resume(workdir: str, config: ml_collections.ConfigDict, allow: Sequence[str] = ()) -> dict[str, tuple]:
    """The changes from `W/config.json` if `workdir` holds a checkpoint to resume ({} otherwise).

    Raises ConfigDriftError listing each refused field as `key: old -> new`.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if "://" in workdir or latest_checkpoint_step(workdir) is None or not os.path.isfile(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    new = _as_json(config)
    changes = diff(old, new)
    # privacy.* other than `enabled`: plan.check_resume owns them for DP runs (DP fills them in at start);
    # without DP they change nothing that is trained (and a section grown since keeps old runs resumable).
    changes = {k: v for k, v in changes.items() if not k.startswith("privacy.") or k == "privacy.enabled"}
    if _dp(old) or _dp(new):
        pinned = {k: v for k, v in changes.items() if k in set(allow) and plan.is_locked(k)}
        if pinned:  # --allow-config-change cannot unlock what the guarantee rests on
            lines = "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in pinned.items())
            raise ConfigDriftError(f"Resuming differentially private run {workdir}: {lines} cannot change, even "
                                   "with --allow-config-change (the guarantee holds for one mechanism on one "
                                   "dataset). Start a new workdir.")
    refused = {k: v for k, v in changes.items()
               if k not in MUTABLE_ON_RESUME and k not in set(allow) and not added(v)}
    if refused:
        lines = "; ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in refused.items())
        raise ConfigDriftError(
            f"Resuming {workdir} with a config that differs from its {CONFIG_FILE} in {len(refused)} field(s): "
            f"{lines}. Use a new --workdir, or accept the change with --allow-config-change="
            f"{','.join(refused)} (it is recorded in {HISTORY_FILE}).")
    return changes


def added(change: tuple) -> bool:
    """True for a (old, new) change of a field the run's config.json did not have."""
    return change[0] == ABSENT and change[1] != ABSENT


def record(workdir: str, changes: dict[str, tuple], accepted_by: str) -> None:
    """Appends one line {time, step, accepted_by, changes: {key: [old, new]}} to W/config_history.jsonl."""
    if not changes:
        return
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": latest_checkpoint_step(workdir),
             "accepted_by": accepted_by, "changes": {k: list(v) for k, v in changes.items()}}
    with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
        f.write(json.dumps(entry) + "\n")


def record_accepted(workdir: str, changes: dict[str, tuple]) -> None:
    """Records what `check_resume` accepted by itself: the mutable changes and the added fields."""
    record(workdir, {k: v for k, v in changes.items() if added(v)}, "added since the run started (its default)")
    record(workdir, {k: v for k, v in changes.items() if not added(v)}, "mutable on resume")


def apply(workdir: str, changes: dict[str, tuple]) -> None:
    """Writes the new values of `changes` into W/config.json (atomically), leaving other fields as they are."""
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path) as f:
        cfg = json.load(f)
    for key, (_, new) in changes.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        if new == ABSENT:
            node.pop(leaf, None)
        else:
            node[leaf] = new
    atomic_io.write_json(path, cfg, indent=2, sort_keys=True)


def accept_on_resume(workdir: str, config: ml_collections.ConfigDict, allow: Sequence[str]) -> None:
    """CLI: checks drift allowing `allow`; records and applies the named (non-mutable) changes to config.json
    so the trainer's own strict check sees them as the run's config. Mutable ones the trainer records."""
    changes = check_resume(workdir, config, allow)
    named = {k: v for k, v in changes.items() if k not in MUTABLE_ON_RESUME and not added(v)}
    if named:
        record(workdir, named, "--allow-config-change")
        apply(workdir, named)
