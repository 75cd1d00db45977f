"""DCGAN/ACGAN training-step throughput: devices x DP on/off x batch, side by side in one process.

    python -m benchmarks.gan_step --devices 1,8 --batch 32 --dp both --out benchmarks/results/gan_step.json

Every row is `benchmarks.run.measure` on the gan family (the trainer's own jitted train_step;
fields as in benchmarks/run.py), here with all device counts in ONE process (XLA is given the
largest count, and each row uses the first N devices), so that the 1-vs-8 and DP/non-DP ratios
come from one run. On CPU the devices are simulated (`--xla_force_host_platform_device_count`),
so 8 "devices" share the same cores: the 1-vs-8 ratio measures sharding overhead, not a speed-up.
Under DP the batch is the padded Poisson batch of a `--dataset-size`-image training set (182: the
liver ROIs), as the trainer pads it. Prints a table; writes JSON. Never asserted in tests.
"""
from __future__ import annotations

import argparse

from benchmarks import common


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_args(p, devices="1,8", warmup=2, repeats=10, out="benchmarks/results/gan_step.json")
    p.add_argument("--config", default="configs/acgan_liver.py")
    p.add_argument("--batch", default="32", help="comma-separated global (expected, under DP) batch sizes")
    p.add_argument("--dp", choices=["off", "on", "both"], default="both")
    p.add_argument("--image-size", type=int, default=None, help="override config.data.image_size")
    p.add_argument("--features", type=int, default=None, help="override G/D base features (tiny runs)")
    p.add_argument("--dataset-size", type=int, default=182, help="N of the Poisson rate q = batch / N under DP")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = _parse(argv)
    devices = common.parse_ints(args.devices, "--devices")
    common.force_host_devices(max(devices))
    from benchmarks import run

    rows = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.dp]
    for batch in common.parse_ints(args.batch, "--batch"):
        for private in modes:
            for n_dev in devices:
                config = common.load_config(args.config)
                if args.image_size:
                    config.data.image_size = args.image_size
                config.train.batch_size = batch
                if args.features:
                    config.model.g_features = config.model.d_features = args.features
                config.privacy.enabled = private
                if private:
                    config.model.mbstd_group_size = 0  # mixes examples: refused under DP
                r = run.measure("gan", config, n_dev, private, warmup=args.warmup, repeats=args.repeats,
                                steps_per_repeat=1, dataset_size=args.dataset_size)
                r["image_size"] = r["resolution"]
                rows.append(r)
                print(f"batch {batch:4d} dp {'on ' if private else 'off'} devices {n_dev}: "
                      f"{r['step_s_median'] * 1e3:8.1f} ms/step  {r['images_per_s']:7.1f} img/s  "
                      f"compile {r['compile_s']:5.1f} s  peak {common.fmt_bytes(r['peak_memory_bytes'])}", flush=True)
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
    common.write_json(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
