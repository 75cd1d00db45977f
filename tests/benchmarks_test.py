"""Benchmark scripts run end to end at tiny settings (their figures are never asserted)."""
import pytest
import json

from benchmarks import dp_overhead, gan_step


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_gan_step_benchmark_smoke(tmp_path):
    out = tmp_path / "r.json"
    rows = gan_step.main(["--devices", "1", "--batch", "8", "--dp", "both", "--image-size", "16", "--features", "2",
                          "--warmup", "1", "--repeats", "1", "--out", str(out)])
    assert len(rows) == 2
    saved = json.loads(out.read_text())
    assert {(r["dp"], r["devices"]) for r in saved} == {(False, 1), (True, 1)}
    assert all(r["step_s_median"] > 0 and "dp_over_nondp_time" in r for r in saved if r["dp"])


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_dp_overhead_benchmark_smoke(tmp_path):
    rows = dp_overhead.main(["--batch", "4", "--warmup", "0", "--repeats", "1", "--no-torch", "--base-features", "8",
                             "--microbatch-size", "2", "--out", str(tmp_path / "dp.json")])
    assert [(r["framework"], r["microbatch"]) for r in rows] == [("jax", None), ("jax", 2)]
    assert all(r["dp_over_nondp"] > 0 for r in rows)
    for r in rows:  # memory per row: XLA's static figure and the process peak during one call
        assert r["dp_xla_bytes"] > 0 and r["nondp_xla_bytes"] > 0
        assert r["dp_peak_rss_bytes"] > 0 and r["peak_memory_source"]
    # Chunking the per-example gradients 2 at a time holds fewer of them live than all 4 at once.
    assert rows[1]["dp_xla_bytes"] < rows[0]["dp_xla_bytes"]
    assert json.loads((tmp_path / "dp.json").read_text())[0]["batch"] == 4


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def test_data_throughput_benchmark_smoke(tmp_path):
    from benchmarks import data_throughput

    r = data_throughput.main(["--num", "8", "--size", "16", "--batch", "4", "--batches", "2", "--features", "2",
                              "--warmup", "0", "--repeats", "1", "--out", str(tmp_path / "d.json")])
    assert r["build_images_per_s"] > 0 and r["pipeline_images_per_s"] > 0 and r["train_step_images_per_s"] > 0
    assert json.loads((tmp_path / "d.json").read_text())["pipeline_over_train_step"] == r["pipeline_over_train_step"]
