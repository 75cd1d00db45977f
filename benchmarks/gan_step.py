"""DCGAN/ACGAN training-step throughput: devices x DP on/off x batch, side by side in one process.

    python -m benchmarks.gan_step --devices 1,8 --batch 32 --dp both --out benchmarks/results/gan_step.json

On CPU the devices are simulated (`--xla_force_host_platform_device_count`, set below before jax
is imported), so 8 "devices" share the same cores: the 1-vs-8 ratio measures sharding overhead,
not a speed-up. Prints a table; writes JSON. Never asserted in tests (a smoke test runs it tiny).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/acgan_liver.py")
    p.add_argument("--devices", default="1,8", help="comma-separated device counts for the data axis")
    p.add_argument("--batch", default="32", help="comma-separated global (expected, under DP) batch sizes")
    p.add_argument("--dp", choices=["off", "on", "both"], default="both")
    p.add_argument("--image-size", type=int, default=None, help="override config.data.image_size")
    p.add_argument("--features", type=int, default=None, help="override G/D base features (tiny runs)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/gan_step.json")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = _parse(argv)
    devices = [int(d) for d in args.devices.split(",")]
    if "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={max(devices)}")
    import functools
    import importlib.util

    import jax
    import numpy as np

    from jaxmedgan import sharding
    from jaxmedgan.privacy import sampling
    from jaxmedgan.trainers import gan

    spec = importlib.util.spec_from_file_location("bench_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.dp]
    for batch in [int(b) for b in args.batch.split(",")]:
        for private in modes:
            for n_dev in devices:
                config = module.get_config()
                if args.image_size:
                    config.data.image_size = args.image_size
                config.train.batch_size = batch
                if args.features:
                    config.model.g_features = config.model.d_features = args.features
                config.privacy.enabled = private
                mesh = sharding.make_mesh(None, jax.devices()[:n_dev])
                real_batch = batch
                if private:  # padded Poisson batch for a 182-image set, as the trainer does
                    q = min(batch / 182, 1.0)
                    real_batch = sampling.max_batch_size_for(182, q, config.privacy.overflow_prob, multiple_of=n_dev)
                init = functools.partial(gan.init_state, config)
                shard = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
                state = jax.jit(init, out_shardings=shard)(jax.random.PRNGKey(0))
                s = config.data.image_size
                rng = np.random.default_rng(0)
                host = {"image": rng.uniform(-1, 1, (real_batch, s, s, config.data.channels)).astype(np.float32),
                        "label": rng.integers(0, max(config.model.num_classes, 1), real_batch).astype(np.int32)}
                if private:
                    host["mask"] = (np.arange(real_batch) < batch).astype(np.float32)
                data = sharding.shard_batch(host, mesh)
                step = jax.jit(functools.partial(gan.train_step, config, mesh=mesh),
                               in_shardings=(shard, sharding.batch_sharding(mesh)),
                               out_shardings=(shard, sharding.replicated(mesh)), donate_argnums=(0,))
                t0 = time.perf_counter()
                compiled = step.lower(state, data).compile()
                compile_s = time.perf_counter() - t0
                for _ in range(args.warmup):
                    state, m = compiled(state, data)
                jax.block_until_ready(m)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    state, m = compiled(state, data)
                    jax.block_until_ready(m)
                    times.append(time.perf_counter() - t0)
                med = float(np.median(times))
                rows.append({"batch": batch, "dp": private, "devices": n_dev, "padded_batch": real_batch,
                             "image_size": s, "step_s_median": med,
                             "step_s_iqr": float(np.subtract(*np.percentile(times, [75, 25]))),
                             "images_per_s": batch / med, "compile_s": compile_s,
                             "platform": jax.devices()[0].platform})
                print(f"batch {batch:4d} dp {'on ' if private else 'off'} devices {n_dev}: "
                      f"{med * 1e3:8.1f} ms/step  {batch / med:7.1f} img/s  compile {compile_s:5.1f} s", flush=True)
    base = {(r["batch"], r["dp"]): r for r in rows if r["devices"] == devices[0]}
    nodp = {(r["batch"], r["devices"]): r for r in rows if not r["dp"]}
    for r in rows:
        r["time_vs_first_device_count"] = r["step_s_median"] / base[(r["batch"], r["dp"])]["step_s_median"]
        if r["dp"] and (r["batch"], r["devices"]) in nodp:
            r["dp_over_nondp_time"] = r["step_s_median"] / nodp[(r["batch"], r["devices"])]["step_s_median"]
    print("\nratios (same run):")
    for r in rows:
        extra = f"  DP/non-DP {r['dp_over_nondp_time']:.2f}" if "dp_over_nondp_time" in r else ""
        print(f"  batch {r['batch']} dp {r['dp']!s:5} devices {r['devices']}: time / {devices[0]}-device "
              f"{r['time_vs_first_device_count']:.2f}{extra}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
