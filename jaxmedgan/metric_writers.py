"""Metric output: TensorBoard events, a JSON-lines file and the log, written by process 0 only.

clu's own metric writers need TensorFlow for TensorBoard output; jaxmedgan avoids a TensorFlow
dependency, so TensorBoard event files are written with tensorboardX (same on-disk format).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
import logging

log = logging.getLogger(__name__)


class MetricWriter:
    """Writes scalars to `workdir/metrics.jsonl` and TensorBoard (`workdir/tensorboard`)."""

    def __init__(self, workdir: str, *, enabled: bool | None = None, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=10)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Records `scalars` (name -> number) at `step`."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        record = {"step": int(step), **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, global_step=int(step))
        log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """Records one uint8 image [H, W, C] at `step` in TensorBoard."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(name, np.asarray(image), global_step=int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(path: str) -> list[dict]:
    """Reads back a metrics.jsonl file (one dict per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
