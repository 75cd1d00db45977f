"""Canary-audit study: does the DP mechanism deliver the epsilon it reports, and would the audit
notice if it did not?

    python -m jaxmedgan.studies.privacy_audit --out docs/results/privacy_audit.json \
        --epsilons 1,4,8 --break-epsilon 4 --steps 300 --image-size 32 --canaries 20000 \
        [--input-canaries 100] [--mechanisms dpsgd,band_mf --bands 4]

Trains `configs/acgan_liver_dp.py` (sigma calibrated to each target epsilon) once per correct
mechanism and once per deliberately broken one (`privacy.break_mechanism` no_noise / no_clipping,
and noise from the public seed: `privacy.secure_rng=False`) at --break-epsilon, each with
--canaries white-box gradient canaries (and --input-canaries input-space canaries), then audits
each run (`studies.audit.canary_audit`, `input_canary_audit`). With `--mechanisms dpsgd,band_mf`
the correct runs are repeated with banded matrix-factorization noise (--bands b). Writes the JSON
(one entry per run and canary kind: mechanism, noise, canary_kind, epsilon, epsilon_lower_bound,
...) and a markdown table next to it. Runs live in --workdir (default: a folder beside --out); finished runs are
reused (rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from jaxmedgan import sampling, trainers, training
from jaxmedgan.studies import audit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "acgan_liver_dp.py")
BREAKS = {"no_noise": ["--config.privacy.break_mechanism=no_noise"],
          "no_clipping": ["--config.privacy.break_mechanism=no_clipping"],
          "public_noise": ["--config.privacy.secure_rng=False"]}


def _train(workdir: str, epsilon: float, extra: list[str], args) -> None:
    """Trains (or resumes) one run of the DP config at `epsilon` with the `extra` overrides."""
    overrides = [f"--config.train.steps={args.steps}", f"--config.data.image_size={args.image_size}",
                 f"--config.privacy.target_epsilon={epsilon}", f"--config.privacy.canaries={args.canaries}",
                 f"--config.checkpoint.every={args.steps}", f"--config.samples.every={args.steps}",
                 f"--config.train.eval_every={args.steps}", "--config.train.quiet=True", *extra]
    if args.data_dir:
        overrides.append(f"--config.data.data_dir={args.data_dir}")
    training.train(training.load_config(CONFIG, overrides), workdir, explicit=training.explicit_keys(overrides))


def run(args) -> list[dict]:
    band = ["--config.privacy.mechanism=band_mf", f"--config.privacy.bands={args.bands}"]
    plan = [("correct", "dpsgd", eps, []) for eps in args.epsilons]
    if "band_mf" in args.mechanisms:
        plan += [("correct", "band_mf", eps, band) for eps in args.epsilons]
    plan += [(name, "dpsgd", args.break_epsilon, BREAKS[name]) for name in args.breaks]
    rows = []
    for mechanism, noise, eps, extra in plan:
        name = f"{mechanism}_eps{eps:g}" if noise == "dpsgd" else f"{mechanism}_{noise}{args.bands}_eps{eps:g}"
        wd = os.path.join(args.workdir, name)
        t = time.perf_counter()
        _train(wd, eps, extra + [f"--config.privacy.input_canaries={args.input_canaries}"], args)
        config, state, step = sampling.restore_state(wd)
        reports = [audit.canary_audit(config, state, step, wd)]
        if args.input_canaries:
            family = trainers.family(config.trainer)
            shape = (config.data.image_size, config.data.image_size, config.data.channels)
            reports += audit.input_canary_audit(config, state, step, wd, family, shape,
                                                audit.d_scorer(config, state, family))
        seconds = time.perf_counter() - t
        for report in reports:
            row = {**report, "mechanism": mechanism, "noise": noise, "bands": args.bands if noise == "band_mf" else 1,
                   "canary_kind": report["kind"], "target_epsilon": eps, "train_and_audit_s": seconds}
            rows.append(row)
            print(f"{mechanism:>13} {noise:>8} eps {row['epsilon']:.3g} {row['canary_kind']}: one-run "
                  f"{row['epsilon_lower_bound']:.3g}, f-DP {row['epsilon_lower_bound_fdp']:.3g} (caps "
                  f"{row['max_provable_epsilon']:.3g} / {row['max_provable_epsilon_fdp']:.3g}), AUROC "
                  f"{row['auroc']:.3f}", flush=True)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = ["| canaries | mechanism | noise | ε reported (δ′) | one-run bound | cap for M | f-DP bound | f-DP cap | "
             "ratio to ε (one-run / f-DP) | AUROC | TPR at FPR 0.01 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r.get("canary_kind", "")):
        noise = "DP-SGD" if r.get("noise", "dpsgd") == "dpsgd" else f"band MF (b={r['bands']})"
        lines.append(f"| {r.get('canary_kind', r.get('kind'))} ({r['num_in']} in / {r['num_out']} out) | "
                     f"{r['mechanism']} | {noise} | {r['epsilon']:.3g} ({r['delta']:.2g}) | {r['epsilon_lower_bound']:.3g} | "
                     f"{r['max_provable_epsilon']:.3g} | {r['epsilon_lower_bound_fdp']:.3g} | "
                     f"{r['max_provable_epsilon_fdp']:.3g} | {r['epsilon_lower_bound'] / r['epsilon']:.2f} / "
                     f"{r['epsilon_lower_bound_fdp'] / r['epsilon']:.2f} | {r['auroc']:.3f} | "
                     f"{r['tpr_at_fpr_0_01']:.3f} |")
    return "\n".join([f"Command: `{command}`", "", *lines, ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON path (a .md table is written beside it)")
    p.add_argument("--workdir", default="", help="runs (default: <out without .json>_runs)")
    p.add_argument("--epsilons", default="1,4,8")
    p.add_argument("--break-epsilon", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--canaries", type=int, default=20000)
    p.add_argument("--input-canaries", type=int, default=0, help="input-space canaries per run (0 = none)")
    p.add_argument("--mechanisms", default="dpsgd", help="noise of the correct runs: dpsgd and/or band_mf")
    p.add_argument("--bands", type=int, default=4, help="band_mf's number of bands")
    p.add_argument("--breaks", default=",".join(BREAKS), help=f"broken mechanisms to run ('' = none): {list(BREAKS)}")
    p.add_argument("--data-dir", default="")
    args = p.parse_args(argv)
    args.epsilons = [float(e) for e in args.epsilons.split(",")]
    args.mechanisms = [m.strip() for m in args.mechanisms.split(",") if m.strip()]
    if set(args.mechanisms) - {"dpsgd", "band_mf"}:
        p.error(f"--mechanisms: expected dpsgd and/or band_mf, got {args.mechanisms}")
    args.breaks = [b.strip() for b in args.breaks.split(",") if b.strip()]
    if set(args.breaks) - set(BREAKS):
        p.error(f"--breaks: expected names from {list(BREAKS)}, got {args.breaks}")
    args.workdir = args.workdir or os.path.splitext(args.out)[0] + "_runs"
    command = "python -m jaxmedgan.studies.privacy_audit " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": command, "config": "configs/acgan_liver_dp.py", "steps": args.steps,
                   "image_size": args.image_size, "canaries": args.canaries,
                   "input_canaries": args.input_canaries, "mechanisms": args.mechanisms,
                   "bands": args.bands if "band_mf" in args.mechanisms else None, "rows": rows}, f, indent=2)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
