"""`config.privacy`, read in one place: `DPConfig.from_config(config)` owns defaults and validation.

Every trainer, the privacy plan, the pipeline and `export` read the privacy section through this
class, so "is DP on" and every default are spelled once. Fields (all optional in a config file; a
missing `privacy` section means DP off):

  enabled              DP-SGD on the discriminator's real-data term
  noise_multiplier     sigma: noise std = sigma * l2_clip on the clipped per-example sum
  target_epsilon       > 0: calibrate sigma so that train.steps spend exactly this epsilon
  epsilon_budget       > 0: stop before epsilon would exceed it (0: target_epsilon, if set)
  l2_clip              C: per-example gradient L2 bound
  delta                0 = 1 / (10 N), filled in at start (`plan.prepare`)
  sampling_rate        derived at start: q = batch_size / N (recorded in config.json)
  sampling             'poisson' (what the accountant analyses) | 'shuffle'
  accountant           'rdp' | 'pld'
  mechanism            'dpsgd' (i.i.d. Gaussian noise each step) | 'band_mf' (banded matrix-
                       factorization noise, correlated over `bands` steps, with cyclic Poisson
                       sampling over `bands` groups: `noise.py`, `accounting.py`)
  bands                b >= 1: the band width of 'band_mf' (1 = DP-SGD's noise); 'dpsgd' needs 1
  microbatch_size      > 0: clip the padded Poisson batch in contiguous chunks of this many rows
                       per device to cap memory; chunks holding only padding are skipped
                       (`dp_sgd._microbatched`); 0 = the whole batch in one pass
  clip_method          'auto' (ghost clipping where the family's per-example loss allows it, else
                       vmap: `with_clip_method`) | 'vmap' | 'ghost' (`dp_sgd.CLIPPED_SUM_METHODS`)
  overflow_prob        P[Poisson batch > padded size] per step; 0 = chosen so that
                       delta' = delta + T * p * (1 + e^eps) <= 1.01 * delta (`plan.prepare`)
  padding_buckets      k > 1: also compile the step for k - 1 smaller padded sizes (the Poisson
                       batch size's 0.9, 0.99, ... quantiles) and run each step at the smallest
                       one that holds its draw (`plan.Plan.bucket_for`): on average far fewer
                       padded rows (1 = always the full padded size; k compiles per step shape)
  clip_fake            clip D's per-example gradient on generated images too (no noise)
  secure_rng           True: batch membership and noise from an OS-CSPRNG secret kept in the
                       workdir's private/ folder (`secret.py`); False: derived from config.seed,
                       i.e. public (debugging only; recorded as such in the export manifest)
  log_private_metrics  True: metrics computed on private data without noise go to the private
                       log private/metrics_private.jsonl (never metrics.jsonl / TensorBoard)
  canaries             M > 0: white-box gradient canaries audit the run (`canaries.py`; the
                       `jaxmedgan privacy audit` report gives the empirical epsilon lower bounds)
  input_canaries       M > 0: input-space (black-box) canaries: M out-of-distribution images, each
                       in the training set by a secret coin, scored from the final D and the
                       released G by the audit (`canaries.py`)
  canary_norm          a canary's gradient norm before clipping, in units of C (> 1, so that a
                       mechanism that skips clipping shows in the audit)
  break_mechanism      TEST ONLY: '' | 'no_noise' | 'no_clipping' breaks the mechanism while the
                       accountant still reports the intended epsilon (the audit must catch it)
"""
from __future__ import annotations

import dataclasses
from typing import Any

SAMPLINGS = ("poisson", "shuffle")
ACCOUNTANTS = ("rdp", "pld")
MECHANISMS = ("dpsgd", "band_mf")
CLIP_METHODS = ("auto", "vmap", "ghost")  # auto + the keys of dp_sgd.CLIPPED_SUM_METHODS (tested equal)
BREAKS = ("", "no_noise", "no_clipping")  # canaries.BREAKS: test-only broken mechanisms


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """The validated privacy section of a config (see module docstring for each field)."""

    enabled: bool = False
    noise_multiplier: float = 1.0
    target_epsilon: float = 0.0
    epsilon_budget: float = 0.0
    l2_clip: float = 1.0
    delta: float = 0.0
    sampling_rate: float = 0.0
    sampling: str = "poisson"
    accountant: str = "rdp"
    mechanism: str = "dpsgd"
    bands: int = 1
    microbatch_size: int = 0
    clip_method: str = "auto"
    overflow_prob: float = 0.0
    padding_buckets: int = 1
    clip_fake: bool = True
    secure_rng: bool = True
    log_private_metrics: bool = False
    canaries: int = 0
    input_canaries: int = 0
    canary_norm: float = 100.0
    break_mechanism: str = ""

    @classmethod
    def from_config(cls, config: Any) -> "DPConfig":
        """The privacy section of `config` (ConfigDict or dict) with defaults filled in; ValueError
        naming the key for an unknown key or a value out of range."""
        section = _get(config, "privacy")
        if section is None:
            return cls()
        values = dict(section.items()) if hasattr(section, "items") else dict(vars(section))
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown key(s) config.privacy.{', config.privacy.'.join(unknown)}; known keys: "
                             f"{', '.join(known)}.")
        kwargs = {}
        for name, value in values.items():
            default = known[name].default
            try:
                kwargs[name] = bool(value) if isinstance(default, bool) else type(default)(value)
            except (TypeError, ValueError):
                raise ValueError(f"config.privacy.{name}={value!r} is not a {type(default).__name__}.") from None
        dp = cls(**kwargs)
        dp.validate()
        return dp

    def validate(self) -> None:
        """One-line ValueError naming the first out-of-range field."""
        checks = (
            ("noise_multiplier", self.noise_multiplier >= 0, ">= 0"),
            ("target_epsilon", self.target_epsilon >= 0, ">= 0 (0 = use noise_multiplier)"),
            ("epsilon_budget", self.epsilon_budget >= 0, ">= 0 (0 = no budget stop)"),
            ("l2_clip", self.l2_clip > 0, "> 0"),
            ("delta", 0 <= self.delta < 1, "in [0, 1) (0 = 1 / (10 N))"),
            ("sampling_rate", 0 <= self.sampling_rate <= 1, "in [0, 1] (filled in at start)"),
            ("sampling", self.sampling in SAMPLINGS, f"one of {SAMPLINGS}"),
            ("accountant", self.accountant in ACCOUNTANTS, f"one of {ACCOUNTANTS}"),
            ("mechanism", self.mechanism in MECHANISMS, f"one of {MECHANISMS}"),
            ("bands", self.bands >= 1 and (self.bands == 1 or self.mechanism == "band_mf"),
             ">= 1, and 1 unless mechanism='band_mf' (bands are the width of its correlated noise)"),
            ("microbatch_size", self.microbatch_size >= 0, ">= 0 (0 = whole batch)"),
            ("clip_method", self.clip_method in CLIP_METHODS, f"one of {CLIP_METHODS}"),
            ("overflow_prob", 0 <= self.overflow_prob < 0.5, "in [0, 0.5) (0 = chosen for delta' <= 1.01 delta)"),
            ("padding_buckets", 1 <= self.padding_buckets <= 6, "in 1..6 (1 = one padded size)"),
            ("canaries", self.canaries >= 0, ">= 0 (0 = no canary audit)"),
            ("input_canaries", self.input_canaries >= 0, ">= 0 (0 = none)"),
            ("canary_norm", self.canary_norm > 0, "> 0 (units of l2_clip)"),
            ("break_mechanism", self.break_mechanism in BREAKS, f"one of {BREAKS} (test only)"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"config.privacy.{name}={getattr(self, name)!r} must be {expected}.")

    def with_clip_method(self, ghost_supported: bool, why_not: str = "") -> "DPConfig":
        """This config with 'auto' resolved: 'ghost' where the family says ghost clipping covers its
        per-example loss (no gradient of an input gradient inside it, supported layers only), else
        'vmap'. An explicit 'vmap' is kept; an explicit 'ghost' where it is not supported is refused
        with the family's reason `why_not` (ghost clipping would compute wrong norms there)."""
        if self.clip_method == "ghost" and not ghost_supported:
            raise ValueError(f"config.privacy.clip_method='ghost': {why_not or 'not supported here'}; set it "
                             "to 'auto' (ghost where it applies, else vmap) or 'vmap'.")
        if self.clip_method != "auto":
            return self
        return dataclasses.replace(self, clip_method="ghost" if ghost_supported else "vmap")

    @property
    def clip_bound(self) -> float:
        """The L2 bound clipping enforces: l2_clip, or inf under break_mechanism='no_clipping'."""
        return float("inf") if self.break_mechanism == "no_clipping" else self.l2_clip

    @property
    def cycle_length(self) -> int:
        """Groups of cyclic Poisson sampling: `bands` under band_mf (each example is eligible every
        b-th step, the participation the banded noise is analysed for), else 1 (plain Poisson)."""
        return self.bands if self.mechanism == "band_mf" else 1

    @property
    def microbatch(self) -> int | None:
        """`microbatch_size` as dp_sgd takes it (None = whole batch)."""
        return self.microbatch_size or None


def _get(section: Any, key: str) -> Any:
    if section is None:
        return None
    return section.get(key) if hasattr(section, "get") else getattr(section, key, None)


def dp_enabled(config: Any) -> bool:
    """True when DP-SGD is on for `config` (a missing `privacy` section means off)."""
    return DPConfig.from_config(config).enabled
