"""The one training loop: every GAN family (`common.fit`) and the classifier (`classifier.fit`) run it.

`guarded(workdir, config, body)` holds the workdir lock, refuses config drift on resume and turns
SIGTERM/SIGINT into a clean stop; `start_state` restores the newest good checkpoint or creates the
state sharded; `run` steps:

    for each step: batch -> step_fn -> metrics kept on device
      every log_every (and when saving): mean metrics, NaN/Inf check, throughput, publish
      on a signal: save, stop (then `Preempted` with the command to resume)
      every `Periodic.every` (and at the end): host work (sample grids, evaluation, FID-domain)
      every save_every (and at the end): checkpoint

What differs between callers comes in as functions: how a host batch is prepared (DP buckets),
what extra scalars a log row carries (the privacy guarantee), where scalars go (`publish`: under
DP only the public ones), how a checkpoint is written (band-MF keeps its noise state apart).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Sequence, TypeVar

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxmedgan import checkpointing, config_drift, preemption, workdir_lock

T = TypeVar("T")
StepFn = Callable[[Any, dict, int], tuple[Any, dict]]  # (state, sharded batch, step index) -> (state, metrics)


class NonFiniteLossError(FloatingPointError):
    """Raised when a training metric becomes NaN or Inf."""


@dataclasses.dataclass(frozen=True)
class Periodic:
    """Host work every `every` steps and after the last one: `fn(done, state)` returns scalars to
    publish at step `done` (or None / {} for work that only writes files, e.g. a sample grid)."""

    every: int
    fn: Callable[[int, Any], dict | None]


def guarded(workdir: str, config: ml_collections.ConfigDict, body: Callable[[preemption.StopOnSignal], T]) -> T:
    """`body(stop)` inside the workdir lock (process 0 holds it) and a SIGTERM/SIGINT catcher, after
    `config_drift.check_resume` has refused a resume whose config changed a field that matters
    (fields the saved config lacks are accepted and recorded)."""
    is_main = jax.process_index() == 0
    with workdir_lock.hold(workdir, enabled=is_main), preemption.StopOnSignal() as stop:
        changes = config_drift.check_resume(workdir, config)
        if is_main:
            config_drift.record_accepted(workdir, changes)
        return body(stop)


def start_state(mngr, abstract: Any, state_shardings: Any, init: Callable[[], Any]) -> tuple[Any, int]:
    """(state, completed steps): the newest good checkpoint of `mngr` restored onto
    `state_shardings`, or `init()` (which must create the state with those shardings) at step 0.

    abstract: the state's shapes and dtypes (`jax.eval_shape` of the init). mngr None: always init.
    """
    if mngr is not None:
        abstract_sharded = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shardings)
        restored = checkpointing.restore_latest(mngr, abstract_sharded)
        if restored is not None:
            return restored
    return init(), 0


def check_finite(step: int, metrics: dict[str, float], workdir: str | None,
                 newest_verified: Callable[[], int | None] | None) -> None:
    """Raises `NonFiniteLossError` naming the bad metrics and the last good checkpoint, if any."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if not bad:
        return
    last_good = newest_verified() if newest_verified is not None else None  # waits for saves, hashes files
    where = (f"the last good checkpoint is step {last_good} in {workdir}/checkpoints" if last_good is not None
             else "no checkpoint had been saved yet" if workdir else "nothing was saved (in-memory run)")
    raise NonFiniteLossError(f"Non-finite training metric(s) {bad} at or before step {step}; training stopped "
                             f"and {where}. Lower the learning rate or check the data.")


def mean_metrics(history: list[dict]) -> dict[str, float]:
    """Each key's mean over the steps that reported it (keys in first-seen order), as float64."""
    keys = dict.fromkeys(k for h in history for k in h)
    return {k: float(np.mean([np.asarray(h[k], np.float64) for h in history if k in h])) for k in keys}


def run(state: Any, step_fn: StepFn, batches: Iterator[Any], *, start: int, total: int, log_every: int,
        save_every: int, publish: Callable[[int, dict], dict], save: Callable[[int, Any], None] | None,
        workdir: str | None, images_per_step: int, desc: str, postfix: Sequence[str] = (),
        periodic: Sequence[Periodic] = (), stop: preemption.StopOnSignal | None = None,
        prepare: Callable[[Any], Any] = lambda batch: batch, log_scalars: Callable[[int], dict] | None = None,
        newest_verified: Callable[[], int | None] | None = None, quiet: bool = False) -> Any:
    """Runs steps `start`..`total-1`; returns the final state.

    step_fn(state, prepare(next(batches)), step) -> (state, metrics: {name: scalar array}).
    Every `log_every` steps, at a save and at the end: the mean metrics, checked finite
    (`check_finite`), plus `steps_per_sec`, `images_per_sec` (`images_per_step` per step) and
    `log_scalars(done)`, go through `publish(done, scalars)` (which returns what it made public;
    the keys of `postfix` found there show on the progress bar). `save(done, state)` (None: an
    in-memory run) checkpoints every `save_every` steps, at the end and on a signal caught by
    `stop`, after which `preemption.Preempted` is raised. Host time spent in periodic work or
    saving is not counted in the throughput.
    """
    is_main = jax.process_index() == 0
    pending: list[dict] = []
    stopped_by, done = None, start
    t_last, steps_since = time.perf_counter(), 0
    bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not is_main or quiet,
               dynamic_ncols=True)
    try:
        for step in range(start, total):
            state, metrics = step_fn(state, prepare(next(batches)), step)
            pending.append(metrics)
            steps_since += 1
            done = step + 1
            bar.update(1)
            last = done == total
            stopped_by = None if last or stop is None else stop.stop_now()  # save and leave after this step
            save_now = save is not None and (last or stopped_by is not None or done % save_every == 0)
            log_now = last or save_now or done % log_every == 0
            if log_now:
                scalars = mean_metrics(jax.device_get(pending))
                pending.clear()
                check_finite(done, scalars, workdir, newest_verified)
                elapsed = time.perf_counter() - t_last
                scalars["steps_per_sec"] = steps_since / elapsed
                scalars["images_per_sec"] = steps_since * images_per_step / elapsed
                if log_scalars is not None:
                    scalars.update(log_scalars(done))
                shown = publish(done, scalars)
                bar.set_postfix({k: f"{shown[k]:.3f}" for k in postfix if k in shown})
            if stopped_by is not None:
                save(done, state)
                break
            for work in periodic:
                if last or done % work.every == 0:
                    scalars = work.fn(done, state)
                    if scalars:
                        publish(done, scalars)
            if save_now:
                save(done, state)
            if log_now:  # restart the throughput clock after the host work above
                t_last, steps_since = time.perf_counter(), 0
    finally:
        bar.close()
    if stopped_by is not None:
        raise preemption.Preempted(
            f"Stopped by {preemption.signal_name(stopped_by)} after step {done}: checkpoint saved in "
            f"{workdir}/checkpoints/{done}; rerun the same command to resume.", stopped_by)
    return state
