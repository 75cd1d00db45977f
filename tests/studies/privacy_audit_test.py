"""`python -m jaxmedgan.studies.privacy_audit`: the canary-audit study on tiny runs."""
import json

import pytest

from jaxmedgan.studies import privacy_audit


@pytest.mark.slow  # two tiny DP runs (DP-SGD and band MF) audited with both canary kinds
def test_study_audits_each_mechanism_with_every_canary_kind(tmp_path):
    out = tmp_path / "audit.json"
    argv = ["--out", str(out), "--workdir", str(tmp_path / "runs"), "--epsilons", "4", "--steps", "4",
            "--image-size", "16", "--canaries", "64", "--input-canaries", "16", "--mechanisms", "dpsgd,band_mf",
            "--bands", "2", "--breaks", "", "--data-dir", str(tmp_path / "data")]
    assert privacy_audit.main(argv) == 0
    report = json.load(open(out))
    assert report["input_canaries"] == 16 and report["mechanisms"] == ["dpsgd", "band_mf"]
    kinds = {"white-box gradient canaries", "input-space canaries: D logit", "input-space canaries: G nearest sample"}
    for noise in ("dpsgd", "band_mf"):
        rows = [r for r in report["rows"] if r["noise"] == noise]
        assert {r["canary_kind"] for r in rows} == kinds
        for r in rows:  # the fields the issue asks every entry to carry
            assert r["mechanism"] == "correct" and r["epsilon"] <= 4 + 1e-6
            assert r["epsilon_lower_bound"] <= r["max_provable_epsilon"]
    table = (tmp_path / "audit.md").read_text()
    assert "band MF (b=2)" in table and "input-space canaries: D logit (" in table
    with pytest.raises(SystemExit):
        privacy_audit.main(argv[:-2] + ["--breaks", "no_such_break"])
