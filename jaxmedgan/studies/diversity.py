"""Intra-class diversity study: which conditioning keeps a class's samples as varied as its data?

    python -m jaxmedgan.studies.diversity --classifier runs/classifier_liver --workdir runs/diversity \
        --out docs/results/diversity_liver.json --num 100

Trains the liver GAN once per arm (configs/acgan_liver.py at its default steps unless --steps;
arms below), then `jaxmedgan evaluate --per-class --metrics fid,pr,diversity` against the held-out
phantoms with the liver classifier's features, and writes one JSON row per arm (per-class
diversity ratio in pixels and features, recall, coverage, precision, intra-class FID, with the
bootstrap intervals `evaluate` reports, overall FID-domain, wall time) and a markdown table next
to --out. Finished arms are reused (rerun the same command to resume). Choices were made on the
phantoms' training/held-out split only; no downstream test fold is involved.

Arms:
  aux_old       the ACGAN as it was (auxiliary classifier, no minibatch-stddev)
  aux           auxiliary classifier + minibatch-stddev (group 4)
  projection    projection discriminator + minibatch-stddev
  tac           twin auxiliary classifiers + minibatch-stddev
  aux_ms        aux + mode-seeking regularisation (lambda 1)
  d2dce         ReACGAN's data-to-data cross-entropy + minibatch-stddev
  per_class     one unconditional DCGAN per class (the liver paper's design) + minibatch-stddev
"""
from __future__ import annotations

import argparse
import json
import os
import time

from jaxmedgan import training
from jaxmedgan.studies import quality_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACGAN = os.path.join(REPO, "configs", "acgan_liver.py")
DCGAN = os.path.join(REPO, "configs", "dcgan_liver.py")
ARMS = {
    "aux_old": (ACGAN, ["--config.model.cond=aux", "--config.model.mbstd_group_size=0"]),
    "aux": (ACGAN, ["--config.model.cond=aux", "--config.model.mbstd_group_size=4"]),
    "projection": (ACGAN, ["--config.model.cond=projection", "--config.model.mbstd_group_size=4"]),
    "tac": (ACGAN, ["--config.model.cond=tac", "--config.model.mbstd_group_size=4"]),
    "aux_ms": (ACGAN, ["--config.model.cond=aux", "--config.model.mbstd_group_size=4",
                       "--config.loss.mode_seeking=1.0"]),
    "d2dce": (ACGAN, ["--config.model.cond=d2dce", "--config.model.mbstd_group_size=4"]),
    "per_class": (DCGAN, ["--config.train.per_class=True", "--config.model.mbstd_group_size=4"]),
}


def _train(config: str, workdir: str, extra: list[str], args) -> float:
    """Trains (or resumes) one arm: `config` with the `extra` overrides, as `jaxmedgan train` would;
    returns its training seconds (reused from workdir/.study_done when finished)."""
    done = os.path.join(workdir, ".study_done")
    if os.path.exists(done):
        return json.load(open(done))["train_s"]
    over = ["--config.train.quiet=True", *extra]
    if args.steps:
        over += [f"--config.train.steps={args.steps}"]
    if args.data_dir:
        over.append(f"--config.data.data_dir={args.data_dir}")
    t = time.perf_counter()
    training.train(training.load_config(config, over), workdir, explicit=training.explicit_keys(over))
    train_s = time.perf_counter() - t
    with open(done, "w") as f:
        json.dump({"train_s": train_s}, f)
    return train_s


def _evaluate(workdir: str, args, metrics: str = "fid,pr,diversity") -> dict:
    """`jaxmedgan evaluate --per-class` of one arm's workdir; returns its eval/metrics.json."""
    quality_cli.quality_command(["--workdir", workdir, "--metrics", metrics, "--per-class", "--num", str(args.num),
                                 "--classifier", args.classifier, "--seed", "0"])
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        return json.load(f)


def run(args) -> list[dict]:
    rows = []
    for arm in args.arms:
        config, extra = ARMS[arm]
        wd = os.path.join(args.workdir, arm)
        train_s = _train(config, wd, extra, args)
        report = _evaluate(wd, args)
        row = {"arm": arm, "config": os.path.relpath(config, REPO), "overrides": extra, "train_s": train_s,
               "checkpoint_step": report.get("checkpoint_step"), "metrics": report.get("metrics", {}),
               "per_class": report.get("per_class", {})}
        rows.append(row)
        m = row["metrics"]
        print(f"{arm:>11}: diversity ratio {_num(m.get('diversity_ratio')):.3f}, recall "
              f"{_num(m.get('recall_domain')):.3f}, FID-domain {_num(m.get('fid_domain')):.2f} "
              f"({train_s / 60:.1f} min)", flush=True)
    return rows


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def markdown(rows: list[dict], command: str) -> str:
    """The table of the study: one row per arm, per-class ratios and recalls with CIs."""
    lines = [f"Produced by `{command}`.", "",
             "| arm | diversity ratio (mean) | per class [95% CI] | recall per class [95% CI] | FID-domain | train min |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        m, pc = r["metrics"], r["per_class"]

        def fmt(key):
            out = []
            for name, v in pc.items():
                ci = [_num(c) for c in (v.get(f"{key}_ci") or [None, None])]
                out.append(f"{name} {_num(v.get(key)):.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")
            return "; ".join(out)

        lines.append(f"| {r['arm']} | {_num(m.get('diversity_ratio')):.3f} | {fmt('diversity_ratio')} | "
                     f"{fmt('recall')} | {_num(m.get('fid_domain')):.2f} | {r['train_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def study_main(argv, *, module: str, description: str, arms: dict, run, markdown) -> None:
    """The command line every arm study shares: train and score `arms` (`run(args) -> rows`), write
    --out (JSON) and the `markdown(rows, command)` table beside it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--classifier", required=True, help="liver classifier workdir (domain features)")
    p.add_argument("--workdir", required=True, help="where the arms' runs live (reused when finished)")
    p.add_argument("--out", required=True, help="JSON path; a .md table is written beside it")
    p.add_argument("--arms", default=",".join(arms), help=f"comma-separated subset of {', '.join(arms)}")
    p.add_argument("--num", type=int, default=100, help="generated images per class")
    p.add_argument("--steps", type=int, default=0, help="training steps (0 = the config's)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in arms]
    if unknown:
        p.error(f"unknown arms {unknown}; known: {', '.join(arms)}")
    rows = run(args)
    command = f"python -m {module} " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": command, "rows": rows}, f, indent=1, default=float)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown(rows, command))


def main(argv=None) -> None:
    study_main(argv, module="jaxmedgan.studies.diversity", description=__doc__.split("\n")[0], arms=ARMS,
               run=run, markdown=markdown)


if __name__ == "__main__":
    main()
