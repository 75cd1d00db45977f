"""The training state: one explicit pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class GANState:
    """G and D variables, their optimiser states, the step and the run's base PRNG key.

    `*_stats` hold BatchNorm running statistics (an empty dict for models without them). The
    per-step key is `fold_in(rng, step)`, so a resumed run draws the same randomness.
    """

    step: jax.Array  # int32 scalar: number of completed training steps
    rng: jax.Array  # base PRNG key of the run
    g_params: Any
    d_params: Any
    g_stats: Any
    d_stats: Any
    g_opt_state: Any
    d_opt_state: Any
    extra: Any = flax.struct.field(default_factory=dict)  # family-specific state (EMA, ADA p, DP)

    def g_variables(self) -> dict:
        """Flax variables dict of the generator."""
        return {"params": self.g_params, **({"batch_stats": self.g_stats} if self.g_stats else {})}

    def d_variables(self) -> dict:
        """Flax variables dict of the discriminator."""
        return {"params": self.d_params, **({"batch_stats": self.d_stats} if self.d_stats else {})}
