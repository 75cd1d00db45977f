"""Privacy curves compared across seeds: paired differences and t-intervals against numpy/scipy."""
import json

import numpy as np
import pytest
from scipy import stats

from jaxmedgan.studies import mechanism_comparison


def _curve(fid_dp, fid_mf, acc_dp, acc_mf, fid_nodp):
    row = lambda eps, mech, fid, acc: {"target_epsilon": eps, "mechanism": mech, "fid_domain": fid,
                                       "kid_domain": fid / 10, "downstream": {"accuracy": acc, "macro_auc": acc}}
    return {"config": {"trainer": "gan"}, "rows": [row(1.0, "dpsgd", fid_dp, acc_dp), row(1.0, "band_mf", fid_mf, acc_mf),
                                                   row(None, "none", fid_nodp, 0.9)]}


def test_paired_differences_and_intervals(tmp_path):
    fid_dp, fid_mf = np.array([18.0, 17.0, 19.0]), np.array([17.0, 17.5, 16.0])
    acc_dp, acc_mf = np.array([0.4, 0.5, 0.45]), np.array([0.5, 0.45, 0.6])
    dirs = []
    for s in range(3):
        d = tmp_path / f"seed{s}"
        d.mkdir()
        (d / "curve.json").write_text(json.dumps(_curve(fid_dp[s], fid_mf[s], acc_dp[s], acc_mf[s], 9.0 + s)))
        dirs.append(str(d))
    out = tmp_path / "cmp.json"
    assert mechanism_comparison.main(["--curves", ",".join(dirs), "--out", str(out)]) == 0
    report = json.load(open(out))
    fid = next(r for r in report["rows"] if r["metric"] == "fid_domain")
    diff = fid_mf - fid_dp
    half = stats.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert fid["difference_mean"] == pytest.approx(diff.mean())
    assert fid["difference_ci95"] == pytest.approx([diff.mean() - half, diff.mean() + half])
    assert fid["second_better_in"] == 2  # lower FID is better: seeds 0 and 2
    acc = next(r for r in report["rows"] if r["metric"] == "accuracy")
    assert acc["second_better_in"] == 2 and acc["difference_mean"] == pytest.approx((acc_mf - acc_dp).mean())
    assert report["no_dp_mean"]["fid_domain"] == pytest.approx(10.0)
    assert "| 1 | FID-domain (lower is better) |" in (tmp_path / "cmp.md").read_text()


def test_a_curve_without_both_mechanisms_is_refused():
    curve = _curve(18, 17, 0.4, 0.5, 9)
    curve["rows"] = [r for r in curve["rows"] if r["mechanism"] != "band_mf"]
    with pytest.raises(ValueError, match="no dpsgd and band_mf rows at epsilon 1"):
        mechanism_comparison.compare([curve])
