"""The training state: one explicit pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


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

    @classmethod
    def create(cls, rng: jax.Array, g_vars: dict, d_vars: dict, g_tx, d_tx, extra: dict | None = None, *,
               g_stats: str = "batch_stats") -> "GANState":
        """The state at step 0 from freshly initialised variables: params, G's `g_stats` collection
        (BatchNorm's 'batch_stats', StyleGAN2's 'stats') and D's 'batch_stats' ({} when absent), and
        the optimisers' (optax `g_tx`, `d_tx`) initial states."""
        return cls(step=jnp.zeros((), jnp.int32), rng=rng, g_params=g_vars["params"], d_params=d_vars["params"],
                   g_stats=g_vars.get(g_stats, {}), d_stats=d_vars.get("batch_stats", {}),
                   g_opt_state=g_tx.init(g_vars["params"]), d_opt_state=d_tx.init(d_vars["params"]),
                   extra={} if extra is None else extra)

    def g_variables(self) -> dict:
        """Flax variables dict of the generator."""
        return {"params": self.g_params, **({"batch_stats": self.g_stats} if self.g_stats else {})}

    def d_variables(self) -> dict:
        """Flax variables dict of the discriminator."""
        return {"params": self.d_params, **({"batch_stats": self.d_stats} if self.d_stats else {})}
