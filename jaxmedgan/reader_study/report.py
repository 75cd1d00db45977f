"""`jaxmedgan reader-study report`: can readers tell synthetic images from real ones?

Positive = synthetic. Per reader and pooled over all answers:

* accuracy = correct / answered, with a 95% Wilson score interval;
* sensitivity = synthetic images called synthetic / synthetic images answered;
* specificity = real images called real / real images answered;
* p = two-sided exact binomial test of accuracy against 50% (chance on a balanced study):
  ``p = min(1, 2 * P(X <= min(k, n - k)))``, X ~ Binomial(n, 1/2), summed exactly in integers.
  The pooled test treats all answers as independent, which they are not (same images, same
  readers): read it as descriptive.

Agreement on real/synthetic calls: Cohen's kappa for every pair of readers over the items both
answered, and Fleiss' kappa over the readers who answered every item (null with fewer than two).
A kappa whose expected agreement is 1 (e.g. both readers always said "real") is undefined: null.
"""
from __future__ import annotations

import csv
import html
import io
import itertools
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from jaxmedgan import atomic_io
from jaxmedgan.reader_study import db

Z95 = 1.959963984540054  # standard normal 97.5% quantile
CSV_COLUMNS = ("reader_id", "reader", "reader_position", "item_id", "truth", "answer", "correct",
               "confidence", "finding", "label", "source", "answered_at")


def binom_test_half(k: int, n: int) -> float:
    """Two-sided exact binomial test p-value of k successes in n trials against p = 1/2."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion k/n (None when n = 0)."""
    if n == 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items (None if undefined)."""
    if len(a) != len(b):
        raise ValueError(f"raters must label the same items: {len(a)} vs {len(b)} labels")
    n = len(a)
    if n == 0:
        return None
    cats = sorted(set(a) | set(b))
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in cats)
    return None if math.isclose(pe, 1.0) else (po - pe) / (1 - pe)


def fleiss_kappa(table: np.ndarray) -> float | None:
    """Fleiss' kappa from counts [items, categories] (each row: how many raters chose each category)."""
    t = np.asarray(table, np.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        return None
    m = t.sum(axis=1)
    if not np.all(m == m[0]) or m[0] < 2:
        raise ValueError(f"every item needs the same number (>= 2) of ratings, got {sorted(set(m.tolist()))}")
    n_items, raters = t.shape[0], m[0]
    p_j = t.sum(axis=0) / (n_items * raters)
    p_i = (np.square(t).sum(axis=1) - raters) / (raters * (raters - 1))
    p_bar, pe = p_i.mean(), np.square(p_j).sum()
    return None if math.isclose(pe, 1.0) else float((p_bar - pe) / (1 - pe))


def summarize(rows: Iterable[dict[str, Any] | sqlite3.Row]) -> dict[str, Any]:
    """Counts, accuracy (+ Wilson CI), sensitivity, specificity and binomial p of answers."""
    tp = fn = tn = fp = 0
    for r in rows:
        if r["truth"] == "synthetic":
            tp += r["answer"] == "synthetic"
            fn += r["answer"] != "synthetic"
        else:
            tn += r["answer"] == "real"
            fp += r["answer"] != "real"
    n, correct = tp + fn + tn + fp, tp + tn
    ci = wilson_interval(correct, n)
    return {
        "answered": n, "correct": correct,
        "accuracy": correct / n if n else None,
        "accuracy_ci95": list(ci) if ci else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "p_value": binom_test_half(correct, n),
        "confusion": {"synthetic_called_synthetic": tp, "synthetic_called_real": fn,
                      "real_called_real": tn, "real_called_synthetic": fp},
    }


def compute(conn: sqlite3.Connection) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    items = db.items(conn)
    answers = [dict(r) for r in db.answers(conn)]
    readers = db.readers(conn)
    n_items = len(items)
    by_reader: dict[int, list[dict]] = {r["id"]: [] for r in readers}
    for a in answers:
        by_reader[a["reader_id"]].append(a)
    per_reader = [{"reader_id": r["id"], "reader": r["name"], "total": n_items, **summarize(by_reader[r["id"]])}
                  for r in readers]
    calls = {rid: {a["item_id"]: a["answer"] for a in rows} for rid, rows in by_reader.items()}
    names = {r["id"]: r["name"] for r in readers}

    pairwise = []
    for ra, rb in itertools.combinations([r["id"] for r in readers], 2):
        common = sorted(set(calls[ra]) & set(calls[rb]))
        pairwise.append({"reader_a": names[ra], "reader_b": names[rb], "reader_a_id": ra, "reader_b_id": rb,
                         "items": len(common),
                         "kappa": cohen_kappa([calls[ra][i] for i in common], [calls[rb][i] for i in common])})
    complete = [rid for rid in calls if len(calls[rid]) == n_items and n_items]
    fleiss = None
    if len(complete) >= 2:
        table = np.array([[sum(calls[rid][it["id"]] == c for rid in complete) for c in db.TRUTHS] for it in items])
        fleiss = fleiss_kappa(table)

    def grouped(key) -> dict[str, Any]:
        groups: dict[str, list[dict]] = {}
        for a in answers:
            if a[key] is not None:
                groups.setdefault(str(a[key]), []).append(a)
        return {k: summarize(v) for k, v in sorted(groups.items())}

    by_item: dict[str, list[dict]] = {it["id"]: [] for it in items}
    for a in answers:
        by_item[a["item_id"]].append(a)
    per_item = []
    for it in items:
        s = summarize(by_item[it["id"]])
        per_item.append({"item_id": it["id"], "truth": it["truth"], "label": it["label"], "source": it["source"],
                         "answered": s["answered"], "correct": s["correct"], "accuracy": s["accuracy"]})
    return {
        "study": {"items": n_items, "real": sum(i["truth"] == "real" for i in items),
                  "synthetic": sum(i["truth"] == "synthetic" for i in items), "readers": len(readers),
                  "answers": len(answers), "seed": db.meta(conn).get("seed")},
        "positive_class": "synthetic",
        "readers": per_reader,
        "pooled": summarize(answers),
        "agreement": {"cohen_kappa_pairwise": pairwise,
                      "fleiss_kappa": {"kappa": fleiss, "readers": [names[r] for r in complete],
                                       "items": n_items if len(complete) >= 2 else 0}},
        "by_label": grouped("label"),
        "by_confidence": grouped("confidence"),
        "items": per_item,
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    """A number for the markdown tables ('–' when undefined)."""
    return "–" if x is None else f"{x:.{digits}f}"


def _p(x: float) -> str:
    """A p-value, compactly."""
    return f"{x:.3g}" if x >= 1e-4 else f"{x:.2e}"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~:])")  # < > & become HTML entities instead


def _md_cell(text: Any) -> str:
    """A markdown table cell from reader-supplied text: one line, HTML and markdown syntax (links,
    images, emphasis, autolinks via ':') backslash-escaped so the text renders as typed."""
    one_line = " ".join(str(text).replace("\r", " ").split("\n"))
    return html.escape(_MD_SPECIAL.sub(r"\\\1", one_line), quote=False)


def _row(name: str, s: dict[str, Any]) -> str:
    """One markdown table row of a `summarize` result (`name` is markdown: escape user text first)."""
    ci = s["accuracy_ci95"]
    ci_txt = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return (f"| {name} | {s['answered']} | {s['correct']} | {_fmt(s['accuracy'])}{ci_txt} | "
            f"{_fmt(s['sensitivity'])} | {_fmt(s['specificity'])} | {_p(s['p_value'])} |")


def to_markdown(rep: dict[str, Any]) -> str:
    """report.md text."""
    st = rep["study"]
    head = ("| | answered | correct | accuracy [95% CI] | sensitivity | specificity | p (vs 50%) |\n"
            "|---|---|---|---|---|---|---|")
    lines = [
        "# Reader study: real vs synthetic", "",
        f"{st['items']} images ({st['real']} real, {st['synthetic']} synthetic), {st['readers']} readers, "
        f"{st['answers']} answers. Positive = synthetic: sensitivity = synthetic images spotted, "
        "specificity = real images recognised. p: two-sided exact binomial test of accuracy against 50%; "
        "the pooled test treats every answer as independent (descriptive only).", "",
        "## Accuracy per reader", "", head,
        *[_row(f"{_md_cell(r['reader'])} (#{r['reader_id']})", r) for r in rep["readers"]],
        _row("**pooled**", rep["pooled"]), "",
        "## Agreement between readers", "",
    ]
    pairs = rep["agreement"]["cohen_kappa_pairwise"]
    if pairs:
        lines += ["| reader A | reader B | common items | Cohen's κ |", "|---|---|---|---|"]
        lines += [f"| {_md_cell(p['reader_a'])} | {_md_cell(p['reader_b'])} | {p['items']} | {_fmt(p['kappa'])} |"
                  for p in pairs]
    else:
        lines.append("Fewer than two readers: no pairwise agreement.")
    fk = rep["agreement"]["fleiss_kappa"]
    lines += ["", f"Fleiss' κ over the {len(fk['readers'])} readers who answered every image: {_fmt(fk['kappa'])}"
              if len(fk["readers"]) >= 2 else "Fleiss' κ: fewer than two readers have answered every image."]
    for title, key in (("Accuracy by class / finding label", "by_label"), ("Accuracy by confidence", "by_confidence")):
        if rep[key]:
            lines += ["", f"## {title}", "", head.replace("| |", "| group |", 1),
                      *[_row(_md_cell(k), v) for k, v in rep[key].items()]]
    return "\n".join(lines) + "\n"


def _csv_cell(value: Any) -> Any:
    """Free text that a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def answers_csv(conn: sqlite3.Connection) -> str:
    """answers.csv text: one row per answer, with truth and correctness."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for a in db.answers(conn):
        d = dict(a)
        d["correct"] = int(d["answer"] == d["truth"])
        w.writerow([_csv_cell(d[c]) if c in ("reader", "finding") else d[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def write_report(study_dir: str, out_dir: str | None = None) -> str:
    """Writes report.md, report.json and answers.csv to out_dir (default STUDY/report); returns out_dir."""
    out_dir = out_dir or os.path.join(study_dir, "report")
    conn = db.open_study(os.path.join(study_dir, db.DB_NAME))
    try:
        conn.execute("BEGIN")  # one consistent snapshot while a server may be writing
        rep = compute(conn)
        csv_text = answers_csv(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"--out {out_dir!r} exists and is not a directory.")
    os.makedirs(out_dir, exist_ok=True)
    atomic_io.write_text(os.path.join(out_dir, "report.json"), json.dumps(rep, indent=2, ensure_ascii=False) + "\n")
    atomic_io.write_text(os.path.join(out_dir, "report.md"), to_markdown(rep))
    atomic_io.write_text(os.path.join(out_dir, "answers.csv"), csv_text)
    return out_dir
