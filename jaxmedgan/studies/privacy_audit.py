"""Canary-audit study: does the DP mechanism deliver the epsilon it reports, and would the audit
notice if it did not?

    python -m jaxmedgan.studies.privacy_audit --out docs/results/privacy_audit.json \
        --epsilons 1,4,8 --break-epsilon 4 --steps 300 --image-size 32 --canaries 20000

Trains `configs/acgan_liver_dp.py` (sigma calibrated to each target epsilon) once per correct
mechanism and once per deliberately broken one (`privacy.break_mechanism` no_noise / no_clipping,
and noise from the public seed: `privacy.secure_rng=False`) at --break-epsilon, each with
--canaries white-box gradient canaries, then audits each run (`privacy.audit.canary_audit`).
Writes the JSON (one entry per run: mechanism, epsilon, epsilon_lower_bound, ...) and a markdown
table next to it. Runs live in --workdir (default: a folder beside --out); finished runs are
reused (rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "acgan_liver_dp.py")
BREAKS = {"no_noise": ["--config.privacy.break_mechanism=no_noise"],
          "no_clipping": ["--config.privacy.break_mechanism=no_clipping"],
          "public_noise": ["--config.privacy.secure_rng=False"]}


def _train(workdir: str, epsilon: float, extra: list[str], args) -> None:
    from jaxmedgan import main as cli

    overrides = [f"--config.train.steps={args.steps}", f"--config.data.image_size={args.image_size}",
                 f"--config.privacy.target_epsilon={epsilon}", f"--config.privacy.canaries={args.canaries}",
                 f"--config.checkpoint.every={args.steps}", f"--config.samples.every={args.steps}",
                 f"--config.train.eval_every={args.steps}", "--config.train.quiet=True", *extra]
    if args.data_dir:
        overrides.append(f"--config.data.data_dir={args.data_dir}")
    if cli.main(["jaxmedgan", "train", "--config", CONFIG, "--workdir", workdir, *overrides]) != 0:
        raise SystemExit(f"training {workdir} failed")


def run(args) -> list[dict]:
    from jaxmedgan import sampling
    from jaxmedgan.privacy import audit

    plan = [("correct", eps, []) for eps in args.epsilons] + [
        (name, args.break_epsilon, extra) for name, extra in BREAKS.items()]
    rows = []
    for mechanism, eps, extra in plan:
        wd = os.path.join(args.workdir, f"{mechanism}_eps{eps:g}")
        t = time.perf_counter()
        _train(wd, eps, extra, args)
        config, state, step = sampling.restore_state(wd)
        report = audit.canary_audit(config, state, step, wd)
        row = {"mechanism": mechanism, "target_epsilon": eps, **report, "train_and_audit_s": time.perf_counter() - t}
        rows.append(row)
        print(f"{mechanism:>13} eps {row['epsilon']:.3g}: one-run {row['epsilon_lower_bound']:.3g}, "
              f"f-DP {row['epsilon_lower_bound_fdp']:.3g} (caps {row['max_provable_epsilon']:.3g} / "
              f"{row['max_provable_epsilon_fdp']:.3g}), AUROC {row['auroc']:.3f}", flush=True)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = ["| mechanism | ε reported (δ′) | one-run bound | cap for M | f-DP bound | f-DP cap | ratio to ε "
             "(one-run / f-DP) | AUROC | TPR at FPR 0.01 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mechanism']} | {r['epsilon']:.3g} ({r['delta']:.2g}) | {r['epsilon_lower_bound']:.3g} | "
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
    p.add_argument("--data-dir", default="")
    args = p.parse_args(argv)
    args.epsilons = [float(e) for e in args.epsilons.split(",")]
    args.workdir = args.workdir or os.path.splitext(args.out)[0] + "_runs"
    command = "python -m jaxmedgan.studies.privacy_audit " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": command, "config": "configs/acgan_liver_dp.py", "steps": args.steps,
                   "image_size": args.image_size, "canaries": args.canaries, "rows": rows}, f, indent=2)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
