"""compare_downstream: the side-by-side table of downstream reports, on the committed liver report."""
import copy
import json
import os

import pytest

from jaxmedgan.studies import compare_downstream

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = os.path.join(REPO, "docs", "results", "downstream_liver_learning_curve.json")


def test_rows_read_the_reports_and_the_real_baseline_must_agree(tmp_path, capsys):
    report = json.load(open(REPORT))
    other = copy.deepcopy(report)
    other["config"]["downstream"]["gan_overrides"] = ["model.cond=tac"]
    other["experiments"]["real+synthetic"]["metrics"]["balanced_accuracy"] = 0.5
    paths = {}
    for name, r in (("proj_aux", report), ("tac", other)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(r))
    out = tmp_path / "cmp.json"
    assert compare_downstream.main([f"--report={n}={p}" for n, p in paths.items()] + ["--out", str(out)]) == 0
    result = json.load(open(out))
    first, second = result["rows"]
    exp = report["experiments"]
    assert first["name"] == "proj_aux" and second["gan_overrides"] == ["model.cond=tac"]
    assert first["a"]["balanced_accuracy"]["value"] == exp["real"]["metrics"]["balanced_accuracy"]
    assert second["b"]["balanced_accuracy"]["value"] == 0.5
    d = first["b_minus_a"]["balanced_accuracy"]["difference"]
    assert d == pytest.approx(exp["real+synthetic"]["metrics"]["balanced_accuracy"]
                              - exp["real"]["metrics"]["balanced_accuracy"], abs=1e-12)
    assert first["diversity_ratio"] == report["synthetic"]["diversity"]["diversity_ratio"]
    table = open(tmp_path / "cmp.md").read()
    assert table.startswith("Produced by `python -m jaxmedgan.studies.compare_downstream --report")
    assert f"| proj_aux | – | {100 * exp['real']['metrics']['balanced_accuracy']:.1f}" in table
    assert f"{100 * d:+.1f}" in table and "| tac | model.cond=tac |" in table

    moved = copy.deepcopy(report)  # another real baseline on the same folds and seeds: not comparable
    moved["experiments"]["real"]["metrics"]["balanced_accuracy"] = 0.1
    with pytest.raises(ValueError, match=r"\(a\) real-only differs between 'x'.*'y'"):
        compare_downstream.compare({"x": report, "y": moved})
    del moved["experiments"]["real+synthetic"]
    with pytest.raises(ValueError, match="lacks experiment 'real' or 'real\\+synthetic'"):
        compare_downstream.row("y", moved)
    with pytest.raises(SystemExit):
        compare_downstream.main(["--report", "nonamepath", "--out", str(out)])
