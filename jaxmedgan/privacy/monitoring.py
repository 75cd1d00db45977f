"""Which training metrics a DP run may publish, and the private log for the rest.

Under DP only what the accountant covers is public: D's noised gradient and anything computed from
the released models and public inputs (generated images, the noise scale, epsilon). A metric
computed on the private batch without noise (D's logits and accuracy on reals, per-example
gradient norms, the realised batch size, gradient penalties on reals, dropped-example counts) is an
unaccounted release, so it is never written to `metrics.jsonl`, TensorBoard or the log. A family
declares its public metric names (`Family.dp_public_metrics`); every other name is private. With
`privacy.log_private_metrics=True` the private ones go to WORKDIR/private/metrics_private.jsonl
(folder 0700, file 0600), which is as sensitive as the training data itself.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping

from jaxmedgan.privacy import secret

PRIVATE_LOG = "metrics_private.jsonl"
# Written by the training loop itself: throughput, the guarantee and the noise scale.
LOOP_PUBLIC = ("steps_per_sec", "images_per_sec", "dp/epsilon", "dp/delta_prime", "dp_noise_std")
# Scores of the released G / D on held-out images (not training data; not covered by the guarantee).
HELD_OUT_PREFIXES = ("eval/", "quality/")


def split(scalars: Mapping[str, float], public_names: Iterable[str]) -> tuple[dict, dict]:
    """(public, private) parts of `scalars`: public = LOOP_PUBLIC + `public_names` (+ `eval/` and
    `quality/` metrics: the released models scored on held-out images), private = everything else."""
    allowed = set(LOOP_PUBLIC) | set(public_names)
    public = {k: v for k, v in scalars.items() if k in allowed or k.startswith(HELD_OUT_PREFIXES)}
    return public, {k: v for k, v in scalars.items() if k not in public}


class PrivateLog:
    """Appends private metrics to WORKDIR/private/metrics_private.jsonl (only when enabled)."""

    def __init__(self, workdir: str, *, enabled: bool):
        self._file = None
        if enabled:
            path = os.path.join(secret.private_dir(workdir), PRIVATE_LOG)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a")

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if self._file is None or not scalars:
            return
        record = {"step": int(step)}
        for k, v in scalars.items():
            v = float(v)
            record[k] = v if math.isfinite(v) else str(v)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
