"""Benchmark scripts run end to end at tiny settings (their figures are never asserted)."""
import json

from benchmarks import dp_overhead, gan_step


def test_gan_step_benchmark_smoke(tmp_path):
    out = tmp_path / "r.json"
    rows = gan_step.main(["--devices", "1", "--batch", "8", "--dp", "both", "--image-size", "16", "--features", "2",
                          "--warmup", "1", "--repeats", "1", "--out", str(out)])
    assert len(rows) == 2
    saved = json.loads(out.read_text())
    assert {(r["dp"], r["devices"]) for r in saved} == {(False, 1), (True, 1)}
    assert all(r["step_s_median"] > 0 and "dp_over_nondp_time" in r for r in saved if r["dp"])


def test_dp_overhead_benchmark_smoke(tmp_path):
    rows = dp_overhead.main(["--batch", "2", "--warmup", "0", "--repeats", "1", "--no-torch", "--base-features", "8",
                             "--out", str(tmp_path / "dp.json")])
    assert len(rows) == 1 and rows[0]["framework"] == "jax" and rows[0]["dp_over_nondp"] > 0
    assert json.loads((tmp_path / "dp.json").read_text())[0]["batch"] == 2
