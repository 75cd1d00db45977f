"""What every benchmark script shares: flags, forced CPU devices, timing, compile time, memory, FLOPs/MFU, JSON.

Nothing here imports jax at module level: `force_host_devices` must run before the first import
of jax in a process (XLA reads `--xla_force_host_platform_device_count` once, at backend start).

Measurements, and what each means:
  step time      wall seconds per step after warm-up, blocked on the outputs; median and the
                 10th/90th percentiles (and IQR) over `repeats` timed calls
  compile time   `jax.jit(f).lower(*args).compile()` wall seconds, timed apart from the steps
  peak memory    the device's `memory_stats()['peak_bytes_in_use']` where the backend reports it
                 (GPU/TPU; a running maximum over the process), else the process's peak resident
                 set size: Linux VmHWM, reset before each measured row (/proc/self/clear_refs), or
                 `resource.getrusage` ru_maxrss (a running maximum) where that reset is refused
  XLA memory     `compiled.memory_analysis()`: arguments + outputs + temporaries - aliased
                 (donated) bytes of one device's executable; a static, per-row figure
  FLOPs          `jax.jit(f).lower(...).cost_analysis()['flops']`: XLA's count for the whole,
                 unpartitioned step (the model's FLOPs per global step; work that sharding
                 replicates on every device, e.g. the optimiser update, is counted once).
                 `compiled_flops` is the per-device count of the partitioned executable x devices:
                 what the hardware executes, replicated work included
  MFU            achieved FLOP/s / (device count x the device's peak FLOP/s for the compute
                 dtype), only where `PEAK_FLOPS` knows the `device_kind`; null on CPU
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

# Dense peak FLOP/s per JAX device by `device_kind` substring (first match wins), from the
# vendors' data sheets: bfloat16 on tensor cores / MXUs; "float32" is what XLA uses for f32
# matmuls by default (TF32 tensor cores on Ampere and later GPUs; bf16 passes on TPUs).
# TPU v2/v3 JAX devices are TensorCores (half a chip); v4 and later are whole chips (megacore).
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bfloat16": 989e12, "float32": 494e12}),
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989e12, "float32": 494e12}),  # SXM
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("L40S", {"bfloat16": 362e12, "float32": 183e12}),
    ("A10", {"bfloat16": 125e12, "float32": 62.5e12}),  # A10 and A10G
    ("L4", {"bfloat16": 121e12, "float32": 60e12}),
    ("V100", {"bfloat16": 125e12, "float32": 15.7e12}),  # no bf16 units: the fp16 tensor-core peak
    ("T4", {"bfloat16": 65e12, "float32": 8.1e12}),
    ("TPU v2", {"bfloat16": 22.5e12, "float32": 22.5e12}),
    ("TPU v3", {"bfloat16": 61.5e12, "float32": 61.5e12}),
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),  # v5e
    ("TPU v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),  # v5p
    ("TPU v6", {"bfloat16": 918e12, "float32": 918e12}),  # Trillium (v6e)
)


# ----------------------------------------------------------------------------------------------
# Flags and processes.


def add_args(p: argparse.ArgumentParser, *, devices: str = "1", warmup: int = 2, repeats: int = 10,
             out: str = "", timing: bool = True) -> argparse.ArgumentParser:
    """Adds the flags every benchmark takes: --devices, --out and (timing=True) --warmup, --repeats."""
    p.add_argument("--devices", default=devices, help="comma-separated device counts (CPU: simulated)")
    if timing:
        p.add_argument("--warmup", type=int, default=warmup, help="untimed calls before timing")
        p.add_argument("--repeats", type=int, default=repeats, help="timed calls (median and spread over these)")
    p.add_argument("--out", default=out, help="JSON output path ('' = none)")
    return p


def parse_ints(text: str, flag: str) -> list[int]:
    """'1,8' -> [1, 8]; an error naming `flag` otherwise."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{flag} expects comma-separated integers, got {text!r}.") from None
    if not values or min(values) < 1:
        raise SystemExit(f"{flag} expects positive integers, got {text!r}.")
    return values


def force_host_devices(count: int) -> None:
    """Asks XLA's CPU backend for `count` devices; must run before jax is imported (else a no-op)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules or "--xla_force_host_platform_device_count" in flags:
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def child_env(devices: int) -> dict[str, str]:
    """The environment of a child process that sees `devices` CPU devices (GPU/TPU ignore the flag)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def run_child(module: str, argv: Sequence[str], devices: int, timeout: float | None = None) -> Any:
    """Runs `python -m module *argv --out TMP` with `devices` forced CPU devices; returns TMP's JSON.

    A device count is fixed when a process starts its backend, so each count needs its own process.
    The child's stdout and stderr pass through.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "child.json")
        cmd = [sys.executable, "-m", module, *argv, "--out", out]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run(cmd, env=child_env(devices), cwd=root, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} (with {devices} devices) exited with status {proc.returncode}.")
        with open(out) as f:
            return json.load(f)


def load_config(path: str):
    """`get_config()` of the config file at `path` (e.g. configs/acgan_liver.py)."""
    import importlib.util

    if not os.path.exists(path):
        raise SystemExit(f"Config file {path} does not exist.")
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if os.path.basename(path) == "acgan_liver.py":
        # The classic ACGAN step: the model the recorded figures (docs/benchmarks.md) and the PyTorch
        # twin (vs_pytorch.py) time; the data-efficient options add DiffAugment and an EMA update.
        from configs import acgan_liver

        acgan_liver.classic(config)
    return config


def write_json(path: str, data: Any) -> None:
    """Writes `data` as indented JSON to `path` (directories created; atomic rename)."""
    if not path:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Timing.


def spread(times: Sequence[float], prefix: str = "step_s") -> dict[str, float]:
    """{prefix_median, prefix_p10, prefix_p90, prefix_iqr} of `times` (seconds)."""
    t = np.asarray(times, np.float64)
    if t.size == 0:
        raise ValueError("spread() needs at least one timed call (--repeats >= 1).")
    p10, p25, p50, p75, p90 = np.percentile(t, [10, 25, 50, 75, 90])
    return {f"{prefix}_median": float(p50), f"{prefix}_p10": float(p10), f"{prefix}_p90": float(p90),
            f"{prefix}_iqr": float(p75 - p25)}


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `fn` after `warmup` untimed ones; `fn` must block on its result."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def time_round_robin(fns: dict, warmup: int, repeats: int) -> dict[Any, list[float]]:
    """{name: wall seconds per call}: each fn warmed up, then called once per round, in turn.

    Load from other processes then hits every fn alike, so ratios between them stay comparable
    on a shared machine.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def lower_and_compile(jitted, *args, **kwargs) -> tuple[Any, Any, float]:
    """(lowered, compiled executable, seconds spent in lower + compile) for a `jax.jit` object."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    compiled = lowered.compile()
    return lowered, compiled, time.perf_counter() - t0


def compile_timed(jitted, *args, **kwargs) -> tuple[Any, float]:
    """(compiled executable, seconds spent in lower + compile) for a `jax.jit` object."""
    _, compiled, seconds = lower_and_compile(jitted, *args, **kwargs)
    return compiled, seconds


# ----------------------------------------------------------------------------------------------
# Cost analysis and memory.


def _cost_dict(cost) -> dict:
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    return cost or {}


def compiled_flops(compiled, num_devices: int) -> float | None:
    """Executed FLOPs of one call: XLA's per-device count x `num_devices` (replicated work counted on
    every device); None if XLA gives none."""
    try:
        flops = _cost_dict(compiled.cost_analysis()).get("flops")
    except Exception:  # some backends do not implement cost analysis
        return None
    return None if flops is None or flops < 0 else float(flops) * num_devices


def lowered_flops(lowered) -> float | None:
    """Global FLOPs of one call from the unpartitioned HLO (`jax.jit(f).lower(...)`, no compile)."""
    try:
        flops = _cost_dict(lowered.cost_analysis()).get("flops")
    except Exception:
        return None
    return None if flops is None or flops < 0 else float(flops)


def xla_memory_bytes(compiled) -> int | None:
    """Bytes one device's executable holds live: arguments + outputs + temporaries - aliased (donated)."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of what runs between `reset()` and `read()`, from the best source available.

    Accelerators: max over `devices` of memory_stats()['peak_bytes_in_use'] (never reset by XLA:
    a running maximum over the process). CPU: the process's peak RSS (VmHWM), reset by `reset()`
    where Linux allows it, else ru_maxrss (a running maximum).
    """

    def __init__(self, devices: Sequence[Any]):
        self.devices = list(devices)
        stats = [d.memory_stats() for d in self.devices] if self.devices else [None]
        self.device_stats = all(s is not None and "peak_bytes_in_use" in s for s in stats)
        self.can_reset = False

    def reset(self) -> None:
        if self.device_stats:
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.can_reset = _vm_hwm_bytes() is not None
        except OSError:
            self.can_reset = False

    def read(self) -> tuple[int, str]:
        """(bytes, source)."""
        if self.device_stats:
            return (max(int(d.memory_stats()["peak_bytes_in_use"]) for d in self.devices),
                    "device_peak_bytes_in_use (max over devices; running max over the process)")
        if self.can_reset:
            return _vm_hwm_bytes(), "process_peak_rss (VmHWM, reset per row)"
        # ru_maxrss is KiB on Linux, bytes on macOS.
        scale = 1 if sys.platform == "darwin" else 1024
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
                "process_peak_rss (ru_maxrss; running max over the process)")


def peak_flops(device_kind: str, dtype: str = "float32") -> float | None:
    """Dense peak FLOP/s of one device of `device_kind` for `dtype`, or None if unknown (e.g. CPU)."""
    for key, table in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return table.get(dtype, table["float32"])
    return None


def throughput(flops_per_step: float | None, step_s: float, device_kind: str, num_devices: int,
               dtype: str = "float32") -> dict[str, float | None]:
    """{flops_per_s, peak_flops_per_s (all devices), mfu}; None where unknown."""
    rate = None if flops_per_step is None or step_s <= 0 else flops_per_step / step_s
    peak = peak_flops(device_kind, dtype)
    peak = None if peak is None else peak * num_devices
    return {"flops_per_s": rate, "peak_flops_per_s": peak,
            "mfu": None if rate is None or peak is None else rate / peak}


def platform_info() -> dict[str, str]:
    """{platform, device_kind, jax_version} of the default backend."""
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "jax_version": jax.__version__}


# ----------------------------------------------------------------------------------------------
# Output.


def fmt_bytes(n: float | None) -> str:
    """'123.4 MiB' (or '-' for None)."""
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, Callable[[Any], str]]]) -> None:
    """Prints `rows` as an aligned table; columns are (header, key, formatter)."""
    cells = [[fmt(r.get(key)) for _, key, fmt in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))
    sys.stdout.flush()
