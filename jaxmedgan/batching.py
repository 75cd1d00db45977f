"""The one host-side batch loop: apply a jitted function to an array in fixed-size, padded chunks."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def map_padded(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int, *,
               empty: np.ndarray | None = None) -> np.ndarray:
    """fn over chunks of x [N, ...] of exactly `batch_size` rows, outputs concatenated on axis 0: [N, ...].

    The last chunk is padded by repeating its last row (a valid input, so padding cannot produce
    NaNs), so a jitted `fn` compiles once; padded rows are cut from the output. N = 0 returns
    `empty` (ValueError when none is given).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if len(x) == 0:
        if empty is None:
            raise ValueError("No rows to process (an empty array).")
        return empty
    out = []
    for start in range(0, len(x), batch_size):
        chunk = np.asarray(x[start:start + batch_size])
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out.append(np.asarray(fn(chunk))[:batch_size - pad])
    return np.concatenate(out)
