"""SIGTERM / SIGINT during training: finish the step, save, flush metrics, exit with one line.

TPU pods, SLURM (`--signal`, preemption, `scancel`) and cloud schedulers send SIGTERM to the
training process some seconds before killing it; Ctrl-C sends SIGINT. Inside `StopOnSignal`
the first such signal only sets `requested`; the training loop checks it after every step,
saves a checkpoint and raises `Preempted` (the CLI prints its message and exits 128 + signal
number). A second SIGINT aborts at once (exit 130) without waiting for the save.
Handlers can only be installed from the main thread; elsewhere the block runs without them.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(Exception):
    """Training stopped early on a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopOnSignal:
    """Context manager: `requested` becomes the signal number (SIGTERM/SIGINT) once one arrives."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            sys.stderr.write("\nSecond Ctrl-C: aborting now without saving.\n")
            sys.stderr.flush()
            os._exit(128 + signal.SIGINT)
        if self.requested is None:
            self.requested = signum
            sys.stderr.write(f"\n{signal_name(signum)} received: finishing this step and saving a "
                             "checkpoint (Ctrl-C again to abort now).\n")
            sys.stderr.flush()

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def stop_now(self) -> int | None:
        """The signal to stop on, agreed by all processes (any one that saw a signal stops them all)."""
        if jax.process_count() == 1:
            return self.requested
        seen = multihost_utils.process_allgather(np.int32(self.requested or 0))
        return int(np.max(seen)) or None


def signal_name(signum: int) -> str:
    """'SIGTERM', 'SIGINT', ..."""
    return signal.Signals(signum).name
