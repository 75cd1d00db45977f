"""Side-by-side table of several downstream studies that differ only in their synthetic source.

    python -m jaxmedgan.studies.compare_downstream --report aux=runs/ds_aux/report.json \
        --report projection=runs/ds_projection/report.json ... --out docs/results/X.json

For each named `jaxmedgan evaluate downstream` report: the GAN config and overrides it trained its
fold GANs with, whether it was leak-free, (a) real-only and (b) real + synthetic balanced accuracy
and macro AUC with their 95 % intervals, the paired (b) - (a) difference with its paired-bootstrap
interval and McNemar's p, (c) synthetic-only where run, and the synthetic source's intra-class
diversity ratio. The numbers are read from the reports, not recomputed; (a) must agree across
reports that share folds and seeds (same real set, same classifier runs), which is checked.
Writes OUT (JSON: the rows and the commands' configs) and OUT with .md (a table).
"""
from __future__ import annotations

import argparse
import os
import sys

from jaxmedgan import atomic_io

METRICS = ("balanced_accuracy", "macro_auc")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(ci: list[float] | None) -> str:
    return "" if ci is None else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def row(name: str, report: dict) -> dict:
    """One source's figures from a downstream `report` (its report.json)."""
    exp, comp = report["experiments"], report.get("comparisons", {})
    if "real" not in exp or "real+synthetic" not in exp:
        raise ValueError(f"report {name!r} lacks experiment 'real' or 'real+synthetic' (it ran {sorted(exp)}).")
    down = report["config"]["downstream"]
    out = {"name": name, "gan_config": down.get("gan_config"), "gan_overrides": list(down.get("gan_overrides", [])),
           "leak_free": report["design"]["leak_free"], "seeds": list(down["seeds"]),
           "num_folds": int(down["num_folds"]),
           "diversity_ratio": (report.get("synthetic") or {}).get("diversity", {}).get("diversity_ratio"),
           "seconds": report.get("seconds")}
    for arm, key in (("real", "a"), ("real+synthetic", "b"), ("synthetic", "c")):
        if arm in exp:
            out[key] = {m: {"value": exp[arm]["metrics"][m], "ci95": exp[arm]["ci95"].get(m)} for m in METRICS}
    vs = comp.get("real+synthetic vs real")
    if vs is None:
        raise ValueError(f"report {name!r} has no 'real+synthetic vs real' comparison.")
    out["b_minus_a"] = {m: {"difference": vs["paired_bootstrap"][m]["difference"],
                            "ci95": vs["paired_bootstrap"][m]["ci95"],
                            "excludes_zero": vs["paired_bootstrap"][m]["excludes_zero"]} for m in METRICS}
    out["mcnemar_p"] = vs["mcnemar"]["p_value"]
    return out


def compare(reports: dict[str, dict]) -> dict:
    """{"rows": [row per name, in order]}; ValueError when (a) differs between reports run on the same
    folds and seeds (they would not be side by side)."""
    rows = [row(name, r) for name, r in reports.items()]
    by_design: dict[tuple, tuple[str, float]] = {}
    for r in rows:
        key = (tuple(r["seeds"]), r["num_folds"])
        a = r["a"]["balanced_accuracy"]["value"]
        if key in by_design and abs(by_design[key][1] - a) > 1e-9:
            raise ValueError(f"(a) real-only differs between {by_design[key][0]!r} ({by_design[key][1]:.4f}) and "
                             f"{r['name']!r} ({a:.4f}) on the same folds and seeds: not one real baseline.")
        by_design.setdefault(key, (r["name"], a))
    return {"rows": rows}


def markdown(result: dict, command: str) -> str:
    """The table of `compare`'s result, under the command that produced it."""
    lines = [f"Produced by `{command}`.", "",
             "| source | GAN overrides | (a) real bal. acc. | (b) real + synthetic | (b) − (a) [95 % CI] | "
             "McNemar p | (b) − (a) macro AUC [95 % CI] | (c) synthetic only | diversity ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        d, auc = r["b_minus_a"]["balanced_accuracy"], r["b_minus_a"]["macro_auc"]
        c = r.get("c", {}).get("balanced_accuracy")
        lines.append(
            f"| {r['name']} | {', '.join(r['gan_overrides']) or '–'} | {_pct(r['a']['balanced_accuracy']['value'])}"
            f"{_ci(r['a']['balanced_accuracy']['ci95'])} | {_pct(r['b']['balanced_accuracy']['value'])}"
            f"{_ci(r['b']['balanced_accuracy']['ci95'])} | {100 * d['difference']:+.1f}{_ci(d['ci95'])} | "
            f"{r['mcnemar_p']:.3g} | {100 * auc['difference']:+.1f}{_ci(auc['ci95'])} | "
            f"{_pct(None if c is None else c['value'])} | "
            f"{'–' if r['diversity_ratio'] is None else format(r['diversity_ratio'], '.2f')} |")
    lines += ["", "Leak-free: " + "; ".join(f"{r['name']}: {r['leak_free']}" for r in result["rows"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmedgan.studies.compare_downstream", description=__doc__.split("\n")[0])
    p.add_argument("--report", action="append", required=True, metavar="NAME=REPORT_JSON",
                   help="a named downstream report.json (repeat; the table keeps this order)")
    p.add_argument("--out", required=True, help="JSON to write (the table goes beside it, .md)")
    p.add_argument("--reports-command", default="",
                   help="the command (template) that produced the reports, recorded beside the table")
    args = p.parse_args(argv)
    reports = {}
    for entry in args.report:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            p.error(f"--report {entry!r}: expected NAME=PATH")
        if not os.path.isfile(path):
            p.error(f"--report {entry!r}: no file {path!r}")
        reports[name] = atomic_io.read_json(path)
    try:
        result = compare(reports)
    except ValueError as e:
        print(f"compare_downstream: error: {e}", file=sys.stderr)
        return 1
    command = "python -m jaxmedgan.studies.compare_downstream " + " ".join(
        f"--report {e}" for e in args.report) + f" --out {args.out}"
    result["command"] = command
    result["reports_command"] = args.reports_command
    atomic_io.write_json(args.out, result, indent=1)
    md = markdown(result, command)
    if args.reports_command:
        md = f"Reports produced by `{args.reports_command}`.\n\n" + md
    atomic_io.write_text(os.path.splitext(args.out)[0] + ".md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
