"""benchmarks.run --quick end to end (subprocesses per device count, JSON fields, PNG) and the
measurement helpers of benchmarks/common.py against hand-computed values. Figures are never asserted."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from benchmarks import common, run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # end-to-end; CI runs it after the default suite (.ci/run)
def _quick_gan_run(tmp_path, dp: str, devices: str) -> tuple[dict, subprocess.CompletedProcess]:
    """`benchmarks.run --quick --families gan` in a subprocess: (its JSON, the process)."""
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--families", "gan", "--dp", dp,
                           "--devices", devices, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


@pytest.mark.slow  # 25-60 s on 2 cores: in CI's slow set, keeping the default suite near 15 min
def test_quick_sweep_writes_every_field_for_each_device_count_and_a_png(tmp_path):
    result, proc = _quick_gan_run(tmp_path, "off", "1,2")
    rows = result["rows"]
    assert [(r["family"], r["devices"], r["dp"]) for r in rows] == [("gan", 1, False), ("gan", 2, False)]
    for r in rows:
        assert set(run.FIELDS) <= set(r), set(run.FIELDS) - set(r)
        assert r["batch"] == r["padded_batch"] == 8 and r["resolution"] == 16 and r["platform"] == "cpu"
        assert 0 < r["step_s_p10"] <= r["step_s_median"] <= r["step_s_p90"]
        assert r["images_per_s"] == pytest.approx(8 / r["step_s_median"])
        assert r["sec_per_kimg"] == pytest.approx(1000 / r["images_per_s"])
        assert r["compile_s"] > 0 and r["compile_s_method"] == "lower+compile"
        assert r["peak_memory_bytes"] > 10 * 2**20 and r["peak_memory_source"].startswith("process_peak_rss")
        assert r["xla_memory_bytes"] > 0 and r["flops_per_step"] > 0
        assert r["flops_per_s"] == pytest.approx(r["flops_per_step"] / r["step_s_median"])
        assert r["mfu"] is None and r["peak_flops_per_s"] is None  # no known peak for a CPU
    # The model's FLOPs per global step do not depend on how many devices share it.
    assert rows[1]["flops_per_step"] == pytest.approx(rows[0]["flops_per_step"], rel=1e-6)
    assert result["meta"]["fields"] == list(run.FIELDS)
    png = result["meta"]["plot"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "gan" in proc.stdout and "img/s" in proc.stdout  # the printed table


def test_flops_of_a_sharded_matmul_and_of_replicated_work():
    m, k, n = 64, 32, 16  # XLA counts a [m,k] x [k,n] matmul as 2 m k n FLOPs
    x, w = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
    f = jax.jit(lambda x, w: x @ w)
    assert common.compiled_flops(f.lower(x, w).compile(), 1) == 2 * m * k * n
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    ws = jax.device_put(w, NamedSharding(mesh, P()))
    compiled = f.lower(xs, ws).compile()
    assert common.compiled_flops(compiled, 4) == 2 * m * k * n  # batch-sharded: per device x 4
    assert common.lowered_flops(f.lower(xs, ws)) == 2 * m * k * n
    # Replicated operands: every device computes the whole product; the executed count says so,
    # the model count (lowered, what rows report) does not.
    wr = jax.device_put(x, NamedSharding(mesh, P()))
    assert common.compiled_flops(f.lower(wr, ws).compile(), 4) == 4 * 2 * m * k * n
    assert common.lowered_flops(f.lower(wr, ws)) == 2 * m * k * n
    # XLA memory: the sharded x and replicated w per device, plus the output shard.
    assert common.xla_memory_bytes(compiled) == 4 * (m // 4 * k + k * n + m // 4 * n)


def test_spread_and_mfu_arithmetic():
    s = common.spread([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s["step_s_median"] == 3.0
    assert s["step_s_p10"] == pytest.approx(1.4) and s["step_s_p90"] == pytest.approx(4.6)  # linear interpolation
    assert s["step_s_iqr"] == pytest.approx(2.0)
    t = common.throughput(1e12, 0.5, "NVIDIA H100 80GB HBM3", 8, "bfloat16")
    assert t["flops_per_s"] == 2e12 and t["peak_flops_per_s"] == 8 * 989e12
    assert t["mfu"] == pytest.approx(2e12 / (8 * 989e12))
    assert common.peak_flops("NVIDIA H100 PCIe", "float32") == 378e12
    assert common.peak_flops("TPU v5 lite") == 197e12 and common.peak_flops("TPU v5p") == 459e12
    assert common.throughput(1e9, 0.1, "cpu", 1)["mfu"] is None


def test_peak_memory_sees_a_large_host_allocation():
    peak = common.PeakMemory(jax.devices("cpu")[:1])
    peak.reset()
    before, _ = peak.read()
    a = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    a += 1
    after, source = peak.read()
    del a
    assert after - before >= 60 * 2**20, (before, after, source)


@pytest.mark.slow  # one compile of the DP step (~40 s on 2 cores); CI runs it after the default suite
def test_quick_dp_row_pads_the_poisson_batch_as_training_does(tmp_path):
    (row,) = _quick_gan_run(tmp_path, "on", "1")[0]["rows"]
    assert row["dp"] is True and row["batch"] == 8 and row["padded_batch"] > 8  # Poisson padding
    assert 0 < row["step_s_median"] and row["images_per_s"] == pytest.approx(8 / row["step_s_median"])


@pytest.mark.slow  # compiles the tiny GAN step with DP off and on (~40 s on 2 cores)
def test_dp_overhead_family_rows_time_each_familys_step_with_dp_off_and_on(tmp_path):
    from benchmarks import dp_overhead

    (row,) = dp_overhead.main(["--family", "gan", "--batch", "8", "--resolution", "16", "--quick", "--repeats", "2",
                               "--warmup", "1", "--buckets", "2", "--out", str(tmp_path / "f.json")])
    assert row["family"] == "gan" and row["clip_method"] == "ghost" and row["padded_batch"] > 8  # auto: ghost for the ACGAN
    assert row["dp_over_nondp"] == pytest.approx(row["dp_step_s"] / row["nondp_step_s"])
    # Two padding buckets: a smaller padded size timed on its own, the largest reusing the DP row.
    small, top = row["buckets"]
    assert small["padded_rows"] < top["padded_rows"] == row["padded_batch"] and top["step_s"] == row["dp_step_s"]
    assert small["probability"] + top["probability"] == pytest.approx(1.0) and small["probability"] > 0.5
    assert row["dp_expected_step_s"] == pytest.approx(small["step_s"] * small["probability"]
                                                      + top["step_s"] * top["probability"])
    assert row["dp_expected_over_nondp"] == pytest.approx(row["dp_expected_step_s"] / row["nondp_step_s"])
    assert json.loads((tmp_path / "f.json").read_text()) == [row]


@pytest.mark.slow  # compiles PGGAN's two step variants with DP off and on (~2 min on 2 cores)
def test_dp_overhead_family_rows_time_pggans_whole_lazy_penalty_schedule(tmp_path):
    from benchmarks import dp_overhead

    (row,) = dp_overhead.main(["--family", "pggan", "--batch", "8", "--resolution", "16", "--quick", "--repeats", "1",
                               "--warmup", "1", "--set", "loss.gp_interval=2", "--set", "loss.gp_on=interpolates",
                               "--out", str(tmp_path / "f.json")])
    assert row["steps_per_repeat"] == 2 and row["overrides"] == ["loss.gp_interval=2", "loss.gp_on=interpolates"]
    assert row["clip_methods"] == {"penalty steps": "vmap", "other steps": "ghost"}
    assert row["dp_step_s"] > 0 and row["nondp_step_s"] > 0
