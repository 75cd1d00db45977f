"""reader_study.report: statistics against scipy / sklearn / statsmodels and textbook values; report files."""
import csv
import json
import os

import numpy as np
import pytest
import scipy.stats

from jaxmedgan.reader_study import cli, db, report
from tests.reader_study import write_pngs


def test_exact_binomial_test_matches_scipy():
    for n in range(1, 61):
        ours = [report.binom_test_half(k, n) for k in range(n + 1)]
        ref = [scipy.stats.binomtest(k, n, 0.5).pvalue for k in range(n + 1)]
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0, err_msg=f"n={n}")
    assert report.binom_test_half(0, 0) == 1.0
    assert report.binom_test_half(300, 400) == pytest.approx(scipy.stats.binomtest(300, 400).pvalue, rel=1e-12)
    with pytest.raises(ValueError, match="k=5, n=4"):
        report.binom_test_half(5, 4)


def test_wilson_interval_matches_statsmodels():
    z2 = report.Z95 ** 2  # k = 0 closed form: [0, z^2 / (n + z^2)]
    assert report.wilson_interval(0, 5) == pytest.approx((0.0, z2 / (5 + z2)), abs=1e-12)
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for k, n in [(0, 5), (3, 10), (10, 10), (47, 100), (1, 1)]:
        lo, hi = proportion.proportion_confint(k, n, alpha=0.05, method="wilson")
        np.testing.assert_allclose(report.wilson_interval(k, n), (lo, hi), rtol=1e-9, atol=1e-12)
    assert report.wilson_interval(0, 0) is None


def test_cohen_kappa_textbook_and_sklearn():
    # Textbook case (Wikipedia "Cohen's kappa"): 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert report.cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for n in (5, 17, 60):
        x = rng.choice(["real", "synthetic"], n).tolist()
        y = [v if rng.random() < 0.7 else rng.choice(["real", "synthetic"]) for v in x]
        assert report.cohen_kappa(x, y) == pytest.approx(metrics.cohen_kappa_score(x, y), abs=1e-12)
    assert report.cohen_kappa(["real"] * 4, ["real"] * 4) is None  # expected agreement 1: undefined
    assert report.cohen_kappa([], []) is None


# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories; P = 0.378, Pe = 0.213,
# kappa = 0.210 (three decimals, as published).
FLEISS_EXAMPLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                  [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_textbook_and_statsmodels():
    assert round(report.fleiss_kappa(np.array(FLEISS_EXAMPLE)), 3) == 0.210
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(1)
    for items, raters in ((8, 2), (20, 3), (13, 7)):
        calls = rng.integers(0, 2, (items, raters))
        table = np.stack([(calls == 0).sum(1), (calls == 1).sum(1)], axis=1)
        assert report.fleiss_kappa(table) == pytest.approx(inter_rater.fleiss_kappa(table, method="fleiss"), abs=1e-12)
    assert report.fleiss_kappa(np.array(FLEISS_EXAMPLE)) == pytest.approx(
        inter_rater.fleiss_kappa(np.array(FLEISS_EXAMPLE), method="fleiss"), abs=1e-12)
    with pytest.raises(ValueError, match="same number"):
        report.fleiss_kappa(np.array([[1, 1], [2, 1]]))


def _labelled_study(tmp_path):
    from jaxmedgan.reader_study import study

    for kind, seed in (("real", 1), ("synthetic", 2)):
        for j, label in enumerate(("lesion", "normal")):
            write_pngs(tmp_path / kind / label, 2, seed=seed * 10 + j)
    return study.create_study(str(tmp_path / "real"), str(tmp_path / "synthetic"), 8, str(tmp_path / "s")).path


def _answer_all(conn, name, rule, limit=None, finding=""):
    rid, _ = db.add_reader(conn, name)
    truth = {i["id"]: i["truth"] for i in db.items(conn)}
    order = [r["item_id"] for r in conn.execute(
        "SELECT item_id FROM reader_items WHERE reader_id = ? ORDER BY position", (rid,))]
    for k, item in enumerate(order[:limit]):
        db.save_answer(conn, rid, item, rule(truth[item], k), 1 + k % 5, finding)
    return rid


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns when a pair's kappa is undefined (nan)
def test_report_on_scripted_answers(tmp_path):
    out = _labelled_study(tmp_path)
    flip = {"real": "synthetic", "synthetic": "real"}
    conn = db.connect(os.path.join(out, db.DB_NAME))
    _answer_all(conn, "Always right", lambda t, k: t)
    _answer_all(conn, "Says real", lambda t, k: "real")
    _answer_all(conn, "Always wrong", lambda t, k: flip[t])
    _answer_all(conn, "Quitter", lambda t, k: t if k else flip[t], limit=3, finding="=HYPERLINK(\"x\")")
    rep = report.compute(conn)
    rows = [dict(r) for r in db.answers(conn)]
    conn.close()

    got = {r["reader"]: r for r in rep["readers"]}
    exact = 2 / 2 ** 8  # 8 of 8 or 0 of 8
    assert (got["Always right"]["accuracy"], got["Always right"]["sensitivity"],
            got["Always right"]["specificity"]) == (1.0, 1.0, 1.0)
    assert got["Always right"]["p_value"] == got["Always wrong"]["p_value"] == exact
    assert (got["Says real"]["accuracy"], got["Says real"]["sensitivity"], got["Says real"]["specificity"],
            got["Says real"]["p_value"]) == (0.5, 0.0, 1.0, 1.0)
    assert got["Always wrong"]["accuracy"] == 0.0 and got["Quitter"]["answered"] == 3
    assert got["Quitter"]["correct"] == 2

    correct = sum(r["answer"] == r["truth"] for r in rows)
    assert (rep["pooled"]["answered"], rep["pooled"]["correct"]) == (27, correct)
    assert rep["pooled"]["p_value"] == pytest.approx(scipy.stats.binomtest(correct, 27).pvalue, rel=1e-12)
    synth = [r for r in rows if r["truth"] == "synthetic"]
    assert rep["pooled"]["sensitivity"] == sum(r["answer"] == "synthetic" for r in synth) / len(synth)

    metrics = pytest.importorskip("sklearn.metrics")
    calls = {}
    for r in rows:
        calls.setdefault(r["reader"], {})[r["item_id"]] = r["answer"]
    for pair in rep["agreement"]["cohen_kappa_pairwise"]:
        a, b = calls[pair["reader_a"]], calls[pair["reader_b"]]
        common = sorted(set(a) & set(b))
        assert pair["items"] == len(common)
        ref = metrics.cohen_kappa_score([a[i] for i in common], [b[i] for i in common])
        assert pair["kappa"] == pytest.approx(ref, abs=1e-12) if np.isfinite(ref) else pair["kappa"] is None
    assert len(rep["agreement"]["cohen_kappa_pairwise"]) == 6
    fk = rep["agreement"]["fleiss_kappa"]
    assert fk["readers"] == ["Always right", "Says real", "Always wrong"] and fk["items"] == 8
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    full = ["Always right", "Says real", "Always wrong"]
    table, _ = inter_rater.aggregate_raters(np.array([[calls[n][i] == "synthetic" for n in full]
                                                      for i in sorted(calls["Always right"])], dtype=int))
    assert fk["kappa"] == pytest.approx(inter_rater.fleiss_kappa(table, method="fleiss"), abs=1e-12)

    assert sorted(rep["by_label"]) == ["lesion", "normal"]
    for label, s in rep["by_label"].items():
        sub = [r for r in rows if r["label"] == label]
        assert (s["answered"], s["correct"]) == (len(sub), sum(r["answer"] == r["truth"] for r in sub))
    assert sum(s["answered"] for s in rep["by_confidence"].values()) == 27


def test_report_files_and_cli(tmp_path, capsys):
    out = _labelled_study(tmp_path)
    conn = db.connect(os.path.join(out, db.DB_NAME))
    _answer_all(conn, "A | pipe", lambda t, k: t, finding="=cmd|' /C calc'!A0")
    _answer_all(conn, "B", lambda t, k: "synthetic", limit=4)
    conn.close()
    assert cli.main(["report", out, "--out", str(tmp_path / "rep")]) == 0
    assert "Wrote report.md" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "rep")) == ["answers.csv", "report.json", "report.md"]
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["readers"][0]["accuracy"] == 1.0 and rep["study"] == {
        "items": 8, "real": 4, "synthetic": 4, "readers": 2, "answers": 12, "seed": "0"}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| A \\| pipe (#1) | 8 | 8 | 1.000 [0.676, 1.000] | 1.000 | 1.000 | 0.00781 |" in md
    assert "## Accuracy by class / finding label" in md and "Cohen's κ" in md
    with open(tmp_path / "rep" / "answers.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 12 and tuple(table[0]) == report.CSV_COLUMNS
    assert table[0]["finding"] == "'=cmd|' /C calc'!A0" and table[0]["correct"] == "1"

    assert cli.main(["report", out]) == 0  # default: STUDY/report
    assert os.path.isfile(os.path.join(out, "report", "report.md"))
    assert cli.main(["report", str(tmp_path / "missing")]) == 1
    assert "missing/study.sqlite' not found" in capsys.readouterr().err


def test_reader_names_cannot_inject_html_or_links_into_report_md(tmp_path):
    out = _labelled_study(tmp_path)
    conn = db.connect(os.path.join(out, db.DB_NAME))
    evil = '<img src=x onerror=alert(1)> [prize](http://evil.example) ![t](http://evil.example/t.png) *b* | x'
    _answer_all(conn, evil, lambda t, k: t)
    md = report.to_markdown(report.compute(conn))
    conn.close()
    row = next(l for l in md.splitlines() if "img src" in l)
    assert "<img" not in md and "](http" not in md and "http://" not in md and " *b* " not in md
    assert row.count(" | ") == 6  # the name's pipe is escaped: the table keeps its 7 columns
    assert "&lt;img src=x onerror=alert\\(1\\)&gt; \\[prize\\]\\(http\\://evil.example\\)" in row
