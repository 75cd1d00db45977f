"""`jaxmedgan privacy epsilon|calibrate|audit|curve`: privacy budgeting, audits and the privacy-utility curve.

  jaxmedgan privacy epsilon --sampling-rate 0.004267 --noise-multiplier 1.1 --steps 14063 --delta 1e-5
  jaxmedgan privacy calibrate --target-epsilon 3 --delta 1e-5 --sampling-rate 0.004267 --steps 14063

`main(argv)` takes the arguments after `privacy` (argv[0] is the subcommand) and returns the exit
code: 0 ok, 2 usage error (argparse's convention), 1 accounting failure. It lives with the studies
because `audit` and `curve` are studies (`studies/audit.py`, `studies/privacy_curve.py`); `epsilon`
and `calibrate` are thin fronts for `privacy.accounting`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from jaxmedgan import subcommands
from jaxmedgan.privacy import accounting
from jaxmedgan.privacy.config import MECHANISMS
from jaxmedgan.studies import audit
from jaxmedgan.studies import privacy_curve as curve

USAGE = """usage: jaxmedgan privacy <command> [options]

commands:
  epsilon    epsilon spent by DP-SGD:  --sampling-rate Q --noise-multiplier S --steps N --delta D
  calibrate  noise multiplier for a budget:  --target-epsilon E --delta D --sampling-rate Q --steps N
  audit      memorisation + membership-inference audit of a trained workdir:  --workdir W [--num N]
  curve      privacy-utility curve: train CONFIG at each epsilon, FID-domain + downstream per run:
             --config CONFIG.py --workdir DIR --epsilons 1,3,10,inf --classifier CLASSIFIER_WORKDIR
             [--downstream-config configs/downstream_liver.py] [--num N] [--config.x.y=...]

epsilon and calibrate take [--accountant rdp|pld] [--sampling poisson|shuffle] [--mechanism dpsgd|band_mf
[--bands B]]; `<command> --help` for details.
"""


def _in_range(lo: float, hi: float | None, *, lo_open: bool = True, hi_open: bool = False):
    """argparse type: a float in the interval, else an error naming it (argparse adds the flag)."""
    right = "inf)" if hi is None else f"{hi:g}{')' if hi_open else ']'}"
    interval = f"{'(' if lo_open else '['}{lo:g}, {right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}") from None
        ok = (value > lo if lo_open else value >= lo) and (
            hi is None or (value < hi if hi_open else value <= hi))
        if not ok or value != value:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    return parse


def _steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampling-rate", type=_in_range(0, 1), required=True,
                   help="q = expected batch size / dataset size, in (0, 1]")
    p.add_argument("--steps", type=_steps, required=True, help="number of DP-SGD steps (>= 1)")
    p.add_argument("--delta", type=_in_range(0, 1, hi_open=True), required=True,
                   help="delta in (0, 1); typically < 1 / dataset size")
    p.add_argument("--accountant", choices=accounting.ACCOUNTANTS, default="rdp",
                   help="rdp (fast, looser) or pld (tighter); default rdp")
    p.add_argument("--sampling", choices=accounting.SAMPLINGS, default="poisson",
                   help="how batches are drawn; shuffle is accounted as Poisson (an approximation)")
    p.add_argument("--mechanism", choices=MECHANISMS, default="dpsgd",
                   help="dpsgd (i.i.d. noise) or band_mf (banded matrix-factorization noise with cyclic "
                        "Poisson sampling over --bands groups); default dpsgd")
    p.add_argument("--bands", type=_steps, default=1, help="band_mf's number of bands b (>= 1; default 1)")


def _cycle_length(args: argparse.Namespace) -> int:
    """b for band_mf; ValueError for --bands > 1 without it (DP-SGD has no bands)."""
    if args.mechanism != "band_mf" and args.bands != 1:
        raise ValueError(f"--bands {args.bands} needs --mechanism band_mf.")
    return args.bands if args.mechanism == "band_mf" else 1


def _parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return p.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage / the error
        return int(e.code or 0)


def _describe(args: argparse.Namespace) -> str:
    lines = [f"sampling: {args.sampling} (q = {args.sampling_rate:g}), steps = {args.steps}, "
             f"delta = {args.delta:g}", f"accountant: {args.accountant}"]
    if args.mechanism == "band_mf":
        lines.append(f"mechanism: band_mf, {args.bands} bands (cyclic Poisson over {args.bands} groups, "
                     f"each at rate {args.bands} q)")
    if args.sampling == "shuffle":
        lines.append(f"note: {accounting.SHUFFLE_NOTE}")
    return "\n".join(lines)


def _command(argv: list[str], name: str, description: str, flag: str, help_text: str,
             compute: Callable[[argparse.Namespace], list[str]]) -> int:
    """Parses `argv` with `flag` (a positive float, required) and the common options, then prints
    `compute(args)`'s lines; a ValueError from it is one error line and exit 1."""
    p = argparse.ArgumentParser(prog=f"jaxmedgan privacy {name}", description=description)
    p.add_argument(flag, type=_in_range(0, None), required=True, help=help_text)
    _common(p)
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    try:
        lines = compute(args)
    except ValueError as e:
        print(f"jaxmedgan privacy {name}: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _epsilon(args: argparse.Namespace, sigma: float) -> float:
    return accounting.epsilon(args.sampling_rate, sigma, args.steps, args.delta, accountant=args.accountant,
                              sampling=args.sampling, cycle_length=_cycle_length(args))


def epsilon_command(argv: list[str]) -> int:
    """`jaxmedgan privacy epsilon ...` (argv: the options); prints `epsilon = E` and the setting."""
    def compute(args: argparse.Namespace) -> list[str]:
        eps = _epsilon(args, args.noise_multiplier)
        return [f"epsilon = {eps!r}", f"noise multiplier = {args.noise_multiplier:g}, " + _describe(args)]

    return _command(argv, "epsilon", "Epsilon spent by DP-SGD (Poisson-sampled Gaussian).", "--noise-multiplier",
                    "sigma = noise std / clipping norm, > 0", compute)


def calibrate_command(argv: list[str]) -> int:
    """`jaxmedgan privacy calibrate ...` (argv: the options); prints `noise_multiplier = S`."""
    def compute(args: argparse.Namespace) -> list[str]:
        sigma = accounting.calibrate_noise(args.target_epsilon, args.delta, args.sampling_rate, args.steps,
                                           accountant=args.accountant, sampling=args.sampling,
                                           cycle_length=_cycle_length(args))
        eps = _epsilon(args, sigma)
        return [f"noise_multiplier = {sigma!r}",
                f"gives epsilon = {eps:.6g} <= target {args.target_epsilon:g}; " + _describe(args)]

    return _command(argv, "calibrate", "Smallest noise multiplier whose epsilon is <= the target.",
                    "--target-epsilon", "privacy budget epsilon, > 0", compute)


COMMANDS = {"epsilon": epsilon_command, "calibrate": calibrate_command, "audit": audit.audit_command,
            "curve": curve.curve_command}


def main(argv: list[str]) -> int:
    """Dispatches `argv[0]` (epsilon | calibrate | audit | curve) with `argv[1:]`; returns the exit code."""
    return subcommands.dispatch("jaxmedgan privacy", COMMANDS, USAGE, argv)
