"""ADA strength controller: the host-side heuristic that adapts the augmentation probability p.

StyleGAN2-ADA's overfitting heuristic r_t = E[sign(D(x_real))] over the last `interval` steps;
every `interval` (4) steps p moves by sign(r_t - target) * batch * interval / (ada_kimg * 1000),
i.e. p can go from 0 to 1 in `ada_kimg` (500) kimg of real images. Target 0.6. StyleGAN2-ADA
clamps only at 0; p is a probability, so here it is clipped into [0, 1].

Modes: 'adaptive' (the heuristic, starting from `p`), 'fixed' (p stays at `p`), 'none' (no
augmentation at all; the trainer then skips the pipeline). The heuristic runs on the host in
numpy; the step functions only accumulate sum(sign(D(real))) and the count in the state pytree.
"""
from __future__ import annotations

import dataclasses

import numpy as np

MODES = ("adaptive", "fixed", "none")


@dataclasses.dataclass(frozen=True)
class AdaSettings:
    """How p is chosen (`config.ada` fields)."""

    mode: str = "adaptive"
    p: float = 0.0  # initial p ('adaptive') or the constant p ('fixed')
    target: float = 0.6  # target r_t
    interval: int = 4  # steps between p updates
    kimg: float = 500.0  # kimg of reals for p to move by 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"ada.mode must be one of {MODES}, got {self.mode!r}.")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"ada.p must be in [0, 1], got {self.p}.")
        if self.interval < 1 or self.kimg <= 0:
            raise ValueError(f"ada.interval must be >= 1 and ada.kimg > 0, got {self.interval}, {self.kimg}.")

    @classmethod
    def from_config(cls, ada_config) -> "AdaSettings":
        """From a `config.ada` ConfigDict (or dict) with the field names above."""
        keys = {f.name for f in dataclasses.fields(cls)}
        given = dict(ada_config.items()) if hasattr(ada_config, "items") else dict(ada_config)
        unknown = set(given) - keys - {"pipeline"}
        if unknown:
            raise ValueError(f"Unknown config.ada key(s) {sorted(unknown)}; expected {sorted(keys | {'pipeline'})}.")
        return cls(**{k: v for k, v in given.items() if k in keys})

    @property
    def augments(self) -> bool:
        """False for mode 'none' (and for 'fixed' with p = 0): D sees raw images."""
        return self.mode == "adaptive" or (self.mode == "fixed" and self.p > 0)


def adjust(p: float, r_t: float, *, target: float, batch_size: int, interval: int, ada_kimg: float) -> float:
    """New p after one interval: p + sign(r_t - target) * batch * interval / (ada_kimg * 1000), in [0, 1]."""
    step = np.sign(r_t - target) * batch_size * interval / (ada_kimg * 1000.0)
    return float(np.clip(p + step, 0.0, 1.0))


class AdaController:
    """Host-side p updates from accumulated sign sums; stateless apart from its settings."""

    def __init__(self, settings: AdaSettings, batch_size: int):
        self.settings = settings
        self.batch_size = int(batch_size)

    def due(self, steps_done: int) -> bool:
        """True when p should be updated after `steps_done` completed steps."""
        return self.settings.mode == "adaptive" and steps_done % self.settings.interval == 0

    def update(self, p: float, sign_sum: float, count: float) -> tuple[float, float]:
        """(new p, r_t) from sum(sign(D(real))) and the number of logits summed since the last update."""
        if count <= 0:
            return float(p), float("nan")
        r_t = float(sign_sum) / float(count)
        s = self.settings
        return adjust(p, r_t, target=s.target, batch_size=self.batch_size, interval=s.interval,
                      ada_kimg=s.kimg), r_t
