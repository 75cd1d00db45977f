"""Does banded matrix-factorization noise lower the price of privacy? Privacy curves compared across seeds.

    python -m jaxmedgan.studies.mechanism_comparison --curves runs/curve_seed0,runs/curve_seed1,runs/curve_seed2 \\
        --out docs/results/privacy_curve_mechanisms_liver.json

Reads the curve.json of each `jaxmedgan privacy curve --mechanisms dpsgd,band_mf` run (one per GAN
training seed, `--config.seed=S`), pairs the DP-SGD and banded-MF rows of each target epsilon within
a seed, and reports per epsilon and metric (FID-domain, KID-domain, downstream accuracy and macro
AUC): each mechanism's mean over seeds, and the paired difference band_mf - dpsgd with its mean,
standard deviation and a 95 % t-interval over seeds (scipy's Student t; wide with few seeds). The
no-DP row's mean is the reference. Writes the JSON and a markdown table beside it.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Sequence

import numpy as np
from scipy import stats

from jaxmedgan import atomic_io

METRICS = (("fid_domain", "FID-domain", "lower"), ("kid_domain", "KID-domain", "lower"),
           ("accuracy", "downstream accuracy", "higher"), ("macro_auc", "downstream macro AUC", "higher"))


def _value(row: dict, metric: str) -> float | None:
    if metric in ("accuracy", "macro_auc"):
        return None if row.get("downstream") is None else row["downstream"].get(metric)
    return row.get(metric)


def _t_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """[lo, hi] of the mean by Student's t over len(values) seeds (None for fewer than 2)."""
    if len(values) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def compare(curves: Sequence[dict], first: str = "dpsgd", second: str = "band_mf") -> dict:
    """{"epsilons": [...], "rows": [per epsilon and metric: means, paired difference second - first]}
    from curve.json reports (one per seed) that each hold both mechanisms at every finite epsilon."""
    if not curves:
        raise ValueError("No curves to compare.")
    by_seed = []
    for i, curve in enumerate(curves):
        table = {(r["target_epsilon"], r.get("mechanism", "dpsgd")): r for r in curve["rows"]}
        by_seed.append(table)
    epsilons = sorted({e for t in by_seed for e, m in t if e is not None})
    rows = []
    for eps in epsilons:
        for metric, label, better in METRICS:
            pairs = []
            for i, table in enumerate(by_seed):
                if (eps, first) not in table or (eps, second) not in table:
                    raise ValueError(f"Curve {i} has no {first} and {second} rows at epsilon {eps:g}; run the curve "
                                     f"with --mechanisms {first},{second}.")
                a, b = _value(table[(eps, first)], metric), _value(table[(eps, second)], metric)
                if a is not None and b is not None:
                    pairs.append((a, b))
            if not pairs:
                continue
            a, b = np.array(pairs, np.float64).T
            diff = b - a
            rows.append({"epsilon": eps, "metric": metric, "label": label, "better": better, "seeds": len(diff),
                         first: a.tolist(), second: b.tolist(), f"{first}_mean": float(a.mean()),
                         f"{second}_mean": float(b.mean()), "difference_mean": float(diff.mean()),
                         "difference_std": float(diff.std(ddof=1)) if len(diff) > 1 else None,
                         "difference_ci95": _t_interval(diff),
                         "second_better_in": int(np.sum(diff < 0 if better == "lower" else diff > 0))})
    reference = {}
    for metric, _, _ in METRICS:
        values = [_value(t[(None, "none")], metric) for t in by_seed if (None, "none") in t]
        values = [v for v in values if v is not None]
        if values:
            reference[metric] = float(np.mean(values))
    return {"first": first, "second": second, "seeds": len(curves), "epsilons": epsilons, "rows": rows,
            "no_dp_mean": reference}


def markdown(report: dict, command: str) -> str:
    first, second = report["first"], report["second"]
    lines = [f"Command: `{command}`", "",
             f"{report['seeds']} GAN training seeds; difference = {second} - {first}, paired within a seed; "
             "[95 % t-interval over seeds].", "",
             f"| ε | metric | {first} (mean) | {second} (mean) | difference [95 % CI] | {second} better in | no DP |",
             "|---:|:---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        ci = r["difference_ci95"]
        ci_text = "" if ci is None else f" [{ci[0]:.3g}, {ci[1]:.3g}]"
        ref = report["no_dp_mean"].get(r["metric"])
        lines.append(f"| {r['epsilon']:g} | {r['label']} ({r['better']} is better) | {r[f'{first}_mean']:.3g} | "
                     f"{r[f'{second}_mean']:.3g} | {r['difference_mean']:+.3g}{ci_text} | "
                     f"{r['second_better_in']} of {r['seeds']} | {'–' if ref is None else format(ref, '.3g')} |")
    return "\n".join(lines + [""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--curves", required=True, help="comma-separated privacy-curve workdirs (one per seed)")
    p.add_argument("--out", required=True, help="JSON path (a .md table is written beside it)")
    args = p.parse_args(argv)
    dirs = [d.strip() for d in args.curves.split(",") if d.strip()]
    curves = []
    for d in dirs:
        path = os.path.join(d, "curve.json")
        if not os.path.isfile(path):
            p.error(f"{path} does not exist: run `jaxmedgan privacy curve ... --workdir {d}` first.")
        curves.append(atomic_io.read_json(path))
    command = "python -m jaxmedgan.studies.mechanism_comparison " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, "curves": dirs, **compare(curves),
              "curve_configs": [c["config"] for c in curves], "downstream": curves[0].get("downstream")}
    atomic_io.write_json(args.out, report, indent=2)
    atomic_io.write_text(os.path.splitext(args.out)[0] + ".md", markdown(report, command))
    print(markdown(report, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
