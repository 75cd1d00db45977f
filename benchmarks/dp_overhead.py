"""What DP-SGD costs per discriminator step: jaxmedgan vs non-private, beside PyTorch + Opacus.

    python -m benchmarks.dp_overhead --batch 16,64,256 --method vmap,ghost --microbatch-size 16 \
        --devices 1,8 --repeats 5
    python -m benchmarks.dp_overhead --family gan,stylegan2,pggan,pix2pix --batch 64 --resolution 32

The discriminator is the BASELINES.md one: 64x64x1 input; four strided 4x4 convs 64-128-256-512
with LeakyReLU(0.2) and GroupNorm(8) after every conv but the first (DCGAN); a 4x4x512 -> 1 head
(a dense layer on the flattened map == a final 4x4 valid conv). One step = the logistic loss on a
batch of reals, gradient, Adam update; DP adds per-example clipping (C = 1) and Gaussian noise
(sigma = 1). The PyTorch model is built to the same shapes; Opacus (`bench` extra: torch, opacus)
runs in the same process so the ratios are side by side. `--method` times each DP clipping method
of `dp_sgd.CLIPPED_SUM_METHODS` (rows per method); `--microbatch-size M` adds rows with the
per-example computation chunked M examples at a time (`privacy.microbatch_size`: caps memory).
All steps of one batch size are timed round-robin (one call of each per round), so load from
other processes hits them alike and the ratios stay comparable on a shared machine.

Memory per row: `dp_xla_bytes` / `nondp_xla_bytes` (XLA's memory analysis of each compiled step,
per device) and `dp_peak_rss_bytes` / `nondp_peak_rss_bytes` (the process's peak resident set
during one call of that step, the process's baseline included; on GPU/TPU the device's
peak_bytes_in_use instead, a running maximum). See benchmarks/common.py.

The first device count of `--devices` runs in this process, with the PyTorch rows; every other
count runs in a child process with that many forced CPU devices (no PyTorch rows there). Prints a
table, writes JSON (a list of rows).
"""
from __future__ import annotations

import argparse
import functools
import math

import numpy as np

from benchmarks import common


def jax_steps(batch: int, variants: list[tuple[str, int | None]], devices: int, base: int = 64,
              size: int = 64):
    """(non-DP step, {(method, microbatch): DP step}, {name: XLA bytes}) on `devices` devices.

    Steps are compiled here (lower + compile) and close over a fixed batch; each call blocks.
    Names in the bytes dict: "plain" and the variants.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from jaxmedgan import sharding
    from jaxmedgan.models import dcgan
    from jaxmedgan.privacy import dp_sgd

    mesh = sharding.make_mesh(None, jax.devices()[:devices])
    d = dcgan.Discriminator(image_size=size, base_features=base, max_features=8 * base, norm="group")
    x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 1)).astype(np.float32)
    params = d.init(jax.random.PRNGKey(0), x[:1], train=False)["params"]
    tx = optax.adam(2e-4, b1=0.5)
    rep, bat = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    params = jax.device_put(params, rep)
    opt = jax.device_put(tx.init(params), rep)
    xs = jax.device_put(x, bat)
    mask = jax.device_put(np.ones(batch, np.float32), bat)
    key = jax.random.PRNGKey(1)

    def loss_one(p, image):
        logit, _ = d.apply({"params": p}, image[None], train=True)
        return jax.nn.softplus(-logit[0])

    def plain(p, o, images):
        g = jax.grad(lambda p: jnp.mean(jax.vmap(loss_one, in_axes=(None, 0))(p, images)))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    def private(p, o, images, mask, key, *, method, microbatch):
        g, _ = dp_sgd.dp_gradient(loss_one, p, images, mask, key, l2_clip=1.0, noise_multiplier=1.0,
                                  expected_batch_size=batch, microbatch_size=microbatch, method=method,
                                  mesh=mesh if devices > 1 else None)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    copy = lambda: jax.tree_util.tree_map(jnp.copy, (params, opt))
    compiled = {"plain": common.compile_timed(jax.jit(plain, donate_argnums=(0, 1)), params, opt, xs)[0]}
    args = {"plain": (xs,)}
    for v in variants:
        fn = functools.partial(private, method=v[0], microbatch=v[1])
        compiled[v] = common.compile_timed(jax.jit(fn, donate_argnums=(0, 1)), params, opt, xs, mask, key)[0]
        args[v] = (xs, mask, key)
    state = {name: copy() for name in compiled}
    memory = {name: common.xla_memory_bytes(c) for name, c in compiled.items()}

    def run(name):
        state[name] = compiled[name](*state[name], *args[name])
        jax.block_until_ready(state[name])

    return (functools.partial(run, "plain"), {v: functools.partial(run, v) for v in variants}, memory)


def torch_model(base: int = 64, size: int = 64):
    """The same-shape discriminator in PyTorch (NCHW): convs base..8 base, GroupNorm(8), linear head."""
    from torch import nn

    layers, cin = [], 1
    for i in range(4):
        c = base * 2 ** i
        layers += [nn.Conv2d(cin, c, 4, 2, 1, bias=i == 0)]
        if i:
            layers += [nn.GroupNorm(8, c)]
        layers += [nn.LeakyReLU(0.2)]
        cin = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear((size // 16) ** 2 * cin, 1))


def torch_steps(batch: int, base: int = 64, size: int = 64):
    """(non-DP step, Opacus DP step) closures on the same-shape PyTorch discriminator."""
    import torch
    from opacus import PrivacyEngine
    from torch import nn

    torch.manual_seed(0)
    x = torch.rand(batch, 1, size, size) * 2 - 1
    plain_m = torch_model(base, size)
    plain_opt = torch.optim.Adam(plain_m.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def run_plain():
        plain_opt.zero_grad(set_to_none=True)
        nn.functional.softplus(-plain_m(x)).mean().backward()
        plain_opt.step()

    dp_m = torch_model(base, size)
    dp_opt = torch.optim.Adam(dp_m.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)
    dp_m, dp_opt, _ = PrivacyEngine().make_private(module=dp_m, optimizer=dp_opt, data_loader=loader,
                                                   noise_multiplier=1.0, max_grad_norm=1.0)

    def run_dp():
        dp_opt.zero_grad(set_to_none=True)
        nn.functional.softplus(-dp_m(x)).mean().backward()
        dp_opt.step()

    return run_plain, run_dp


def have_torch() -> bool:
    """Whether torch and opacus import (the optional `bench` extra)."""
    try:
        import opacus  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def peak_per_call(fns: dict, devices) -> dict:
    """{name: (peak bytes during one call, source)}, each fn called once after `reset()`."""
    peak = common.PeakMemory(devices)
    out = {}
    for name, fn in fns.items():
        peak.reset()
        fn()
        out[name] = peak.read()
    return out


def _rows_one_process(args, n_dev: int, variants, with_torch: bool) -> list[dict]:
    import jax

    rows = []
    for batch in args.batch:
        fns, labels, xla = {}, {}, {}
        plain, dps, memory = jax_steps(batch, variants, n_dev, args.base_features)
        fns[("jax", n_dev, "plain")] = plain
        xla[("jax", n_dev, "plain")] = memory["plain"]
        for v, fn in dps.items():
            fns[("jax", n_dev, v)] = fn
            labels[("jax", n_dev, v)] = v
            xla[("jax", n_dev, v)] = memory[v]
        if with_torch:
            plain, dp = torch_steps(batch, args.base_features)
            fns[("torch", 1, "plain")], fns[("torch", 1, "opacus")] = plain, dp
            labels[("torch", 1, "opacus")] = ("opacus", None)
        times = {k: common.spread(t, "s") for k, t in common.time_round_robin(fns, args.warmup, args.repeats).items()}
        mem = peak_per_call(fns, jax.devices()[:n_dev])
        for key, (method, micro) in labels.items():
            framework, dev, _ = key
            plain_key = (framework, dev, "plain")
            t_plain, t_dp = times[plain_key], times[key]
            rows.append({"framework": "jax" if framework == "jax" else "torch+opacus", "method": method,
                         "batch": batch, "devices": dev, "microbatch": micro,
                         "nondp_s": t_plain["s_median"], "nondp_iqr_s": t_plain["s_iqr"],
                         "dp_s": t_dp["s_median"], "dp_iqr_s": t_dp["s_iqr"],
                         "dp_p10_s": t_dp["s_p10"], "dp_p90_s": t_dp["s_p90"],
                         "dp_over_nondp": t_dp["s_median"] / t_plain["s_median"],
                         "nondp_peak_rss_bytes": mem[plain_key][0], "dp_peak_rss_bytes": mem[key][0],
                         "peak_memory_source": mem[key][1],
                         "nondp_xla_bytes": xla.get(plain_key), "dp_xla_bytes": xla.get(key)})
            r = rows[-1]
            print(f"{r['framework']:13s} {method:6s} batch {batch:4d} dev {dev} micro {str(micro):4s}: "
                  f"non-DP {r['nondp_s'] * 1e3:8.1f} ms  DP {r['dp_s'] * 1e3:8.1f} ms  "
                  f"DP/non-DP {r['dp_over_nondp']:.2f}  DP peak {common.fmt_bytes(r['dp_peak_rss_bytes'])}  "
                  f"DP XLA {common.fmt_bytes(r['dp_xla_bytes'])}", flush=True)
        t = [r for r in rows if r["batch"] == batch and r["framework"] != "jax"]
        for j in [r for r in rows if r["batch"] == batch and r["framework"] == "jax"]:
            if t:
                print(f"batch {batch} {j['method']} micro {j['microbatch']}: jax non-DP / torch non-DP = "
                      f"{j['nondp_s'] / t[0]['nondp_s']:.2f}; jax DP / Opacus DP = {j['dp_s'] / t[0]['dp_s']:.2f}; "
                      f"ratio vs Opacus ratio = {j['dp_over_nondp'] / t[0]['dp_over_nondp']:.2f}")
    return rows


# --family rows: each family's DP config, timed with privacy on and off (same architecture).
FAMILY_CONFIGS = {"gan": "configs/acgan_liver_dp.py", "stylegan2": "configs/stylegan2_ada_spine_dp.py",
                  "pggan": "configs/pggan_chest_dp.py", "pix2pix": "configs/pix2pix_brain.py"}


def schedule_period(family: str, c) -> int:
    """Steps after which a family's step schedule repeats, so a repeat times its mean step:
    StyleGAN2's lazy regularisation (R1 every r1_interval D steps, path length every pl_interval),
    PGGAN's lazy gradient penalty (loss.gp_interval), else 1."""
    if family == "stylegan2":
        return math.lcm(int(c.loss.r1_interval), int(c.loss.pl_interval))
    if family == "pggan":
        return int(c.loss.gp_interval)
    return 1


def clip_methods(family: str, c) -> dict[str, str]:
    """The clipping method each kind of D step of a family's schedule resolves to (privacy 'auto')."""
    from jaxmedgan import trainers

    private = trainers.get(family).private_config
    if family == "stylegan2":
        return {"Dmain": private(c).clip_method, "R1 steps": private(c, with_r1=True).clip_method}
    if family == "pggan" and int(c.loss.gp_interval) > 1:
        return {"penalty steps": private(c).clip_method, "other steps": private(c, with_gp=False).clip_method}
    return {"every step": private(c).clip_method}


def family_rows(families: list[str], batches: list[int], resolution: int, quick: bool, n_dev: int,
                warmup: int, repeats: int, dataset_size: int = 10000, overrides: tuple[str, ...] = (),
                buckets: int = 1) -> list[dict]:
    """DP/non-DP of each family's own training step (benchmarks.run's measurement, DP off then on).

    The step is what `common.fit` runs (D and G updates); under DP the batch is the padded Poisson
    batch of expected size `batch` (q = batch / dataset_size). A family that refuses DP at this
    setting gets a row with `refused` and no figures. buckets > 1 (1 device): also each padding
    bucket's step (`padding_buckets.bucket_rows`) and the expected DP step over the Poisson draw
    with privacy.padding_buckets = buckets (`dp_expected_step_s`, `dp_expected_over_nondp`).
    """
    import os

    from benchmarks import run
    from jaxmedgan import trainers

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for family in families:
        if family not in FAMILY_CONFIGS:
            raise SystemExit(f"--family {family!r}: expected some of {sorted(FAMILY_CONFIGS)}")
        for batch in batches:
            row = {"family": family, "config": FAMILY_CONFIGS[family], "batch": batch, "resolution": resolution,
                   "quick": quick, "devices": n_dev,
                   "overrides": list(overrides)}
            try:
                for dp in (False, True):
                    c = run.make_config(family, os.path.join(root, FAMILY_CONFIGS[family]), resolution, batch, dp,
                                        quick, list(overrides))
                    m = run.measure(family, c, n_dev, dp, warmup=warmup, repeats=repeats,
                                    steps_per_repeat=schedule_period(family, c), dataset_size=dataset_size)
                    row["dp_step_s" if dp else "nondp_step_s"] = m["step_s_median"]
                    if dp:
                        row.update(padded_batch=m["padded_batch"], steps_per_repeat=m["steps_per_repeat"],
                                   clip_method=trainers.get(family).private_config(c).clip_method,
                                   clip_methods=clip_methods(family, c))
                row["dp_over_nondp"] = row["dp_step_s"] / row["nondp_step_s"]
                print(f"{family:>10} batch {batch:4d} @ {resolution} px: non-DP {row['nondp_step_s']:.3f} s, DP "
                      f"{row['dp_step_s']:.3f} s ({row['clip_method']}) -> DP/non-DP {row['dp_over_nondp']:.2f}",
                      flush=True)
                if buckets > 1:
                    from benchmarks import padding_buckets

                    row["buckets"] = padding_buckets.bucket_rows(
                        family, os.path.join(root, FAMILY_CONFIGS[family]), resolution, batch,
                        {"padded_batch": row["padded_batch"], "step_s_median": row["dp_step_s"]}, buckets=buckets,
                        dataset_size=dataset_size, warmup=warmup, repeats=repeats,
                        steps_per_repeat=row["steps_per_repeat"], overrides=tuple(overrides))
                    row["dp_expected_step_s"] = sum(b["step_s"] * b["probability"] for b in row["buckets"])
                    row["dp_expected_over_nondp"] = row["dp_expected_step_s"] / row["nondp_step_s"]
                    print(f"{family:>10} with {buckets} padding buckets: expected DP/non-DP "
                          f"{row['dp_expected_over_nondp']:.2f}", flush=True)
            except (ValueError, NotImplementedError) as e:
                row["refused"] = str(e).splitlines()[0][:300]
                print(f"{family:>10} batch {batch:4d}: refused: {row['refused']}", flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_args(p, devices="1", warmup=2, repeats=5, out="benchmarks/results/dp_overhead.json")
    p.add_argument("--batch", default="16,64,256")
    p.add_argument("--method", default="vmap", help="comma-separated dp_sgd clipping methods: vmap,ghost")
    p.add_argument("--microbatch-size", "--microbatch", dest="microbatch", type=int, default=0,
                   help="also time DP with the per-example computation chunked to this many examples")
    p.add_argument("--base-features", type=int, default=64, help="first conv width (64 = BASELINES.md)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch/Opacus rows")
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--family", default="", help="comma-separated GAN families (gan,stylegan2,pggan,pix2pix): "
                   "instead of the BASELINES.md discriminator, time each family's training step, DP off vs on")
    p.add_argument("--resolution", type=int, default=32, help="--family rows: image size, px")
    p.add_argument("--quick", action="store_true", help="--family rows: the tests' tiny widths")
    p.add_argument("--buckets", type=int, default=1,
                   help="--family rows, 1 device: also time each of this many padding buckets and report the "
                        "expected DP step with privacy.padding_buckets=N (1: the full padded size only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="--family rows: a config override for every family, e.g. privacy.microbatch_size=1000 "
                        "or loss.gp_interval=4 (repeatable; applied to the DP and the non-DP config)")
    args = p.parse_args(argv)
    devices = common.parse_ints(args.devices, "--devices")
    args.batch = common.parse_ints(args.batch, "--batch")
    if args.family:
        if args.buckets > 1 and devices[0] != 1:
            p.error("--buckets times the padding buckets on 1 device: use --devices 1")
        common.force_host_devices(devices[0])
        rows = family_rows(args.family.split(","), args.batch, args.resolution, args.quick, devices[0],
                           args.warmup, args.repeats, overrides=tuple(args.set), buckets=args.buckets)
        common.write_json(args.out, rows)
        return rows
    methods = args.method.split(",")
    common.force_host_devices(devices[0])
    from jaxmedgan.privacy import dp_sgd

    unknown = set(methods) - set(dp_sgd.CLIPPED_SUM_METHODS)
    if unknown:
        p.error(f"--method {sorted(unknown)}: expected some of {sorted(dp_sgd.CLIPPED_SUM_METHODS)}")
    variants = [(m, micro) for m in methods for micro in [None] + ([args.microbatch] if args.microbatch else [])]
    with_torch = not args.no_torch and have_torch()
    if with_torch and args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if not args.no_torch and not with_torch:
        print("torch/opacus not installed (pip install -e '.[bench]'): PyTorch rows skipped")
    rows = _rows_one_process(args, devices[0], variants, with_torch)
    for n_dev in devices[1:]:  # a device count is fixed per process: one child each
        child = ["--devices", str(n_dev), "--batch", ",".join(map(str, args.batch)), "--method", args.method,
                 "--microbatch-size", str(args.microbatch), "--base-features", str(args.base_features),
                 "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--no-torch"]
        rows += common.run_child("benchmarks.dp_overhead", child, n_dev)
    common.write_json(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
