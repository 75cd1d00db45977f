"""Benchmark scripts run end to end at tiny settings (their figures are never asserted)."""
import json

from benchmarks import gan_step


def test_gan_step_benchmark_smoke(tmp_path):
    out = tmp_path / "r.json"
    rows = gan_step.main(["--devices", "1,2", "--batch", "8", "--dp", "both", "--image-size", "16", "--features", "2",
                          "--warmup", "1", "--repeats", "1", "--out", str(out)])
    assert len(rows) == 4
    saved = json.loads(out.read_text())
    assert {(r["dp"], r["devices"]) for r in saved} == {(False, 1), (False, 2), (True, 1), (True, 2)}
    assert all(r["step_s_median"] > 0 and "dp_over_nondp_time" in r for r in saved if r["dp"])
