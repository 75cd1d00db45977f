"""What DP-SGD costs per discriminator step: jaxmedgan vs non-private, beside PyTorch + Opacus.

    python -m benchmarks.dp_overhead --batch 16,64,256 --method vmap,ghost --repeats 5

The discriminator is the BASELINES.md one: 64x64x1 input; four strided 4x4 convs 64-128-256-512
with LeakyReLU(0.2) and GroupNorm(8) after every conv but the first (DCGAN); a 4x4x512 -> 1 head
(a dense layer on the flattened map == a final 4x4 valid conv). One step = the logistic loss on a
batch of reals, gradient, Adam update; DP adds per-example clipping (C = 1) and Gaussian noise
(sigma = 1). The PyTorch model is built to the same shapes; Opacus (`bench` extra: torch, opacus)
runs in the same process so the ratios are side by side. `--method` times each DP clipping method
of `dp_sgd.CLIPPED_SUM_METHODS` (rows per method). All steps of one batch size are timed
round-robin (one call of each per round), so load from other processes hits them alike and the
ratios stay comparable on a shared machine. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import time

import numpy as np


def _time(fns: dict, warmup: int, repeats: int) -> dict:
    """{name: (median s, IQR s)}: each fn warmed up, then called once per round, round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t0)
    return {name: (float(np.median(t)), float(np.subtract(*np.percentile(t, [75, 25])))) for name, t in ts.items()}


def jax_steps(batch: int, variants: list[tuple[str, int | None]], devices: int, base: int = 64):
    """(non-DP step, {(method, microbatch): DP step}) closures over a fixed batch, jitted, on `devices`."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxmedgan import sharding
    from jaxmedgan.models import dcgan
    from jaxmedgan.privacy import dp_sgd

    mesh = sharding.make_mesh(None, jax.devices()[:devices])
    d = dcgan.Discriminator(image_size=64, base_features=base, max_features=8 * base, norm="group")
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 64, 64, 1)).astype(np.float32)
    params = d.init(jax.random.PRNGKey(0), x[:1], train=False)["params"]
    tx = optax.adam(2e-4, b1=0.5)
    rep, bat = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    params = jax.device_put(params, rep)
    opt = jax.device_put(tx.init(params), rep)
    xs = jax.device_put(x, bat)
    mask = jax.device_put(np.ones(batch, np.float32), bat)

    def loss_one(p, image):
        logit, _ = d.apply({"params": p}, image[None], train=True)
        return jax.nn.softplus(-logit[0])

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def plain(p, o, images):
        g = jax.grad(lambda p: jnp.mean(jax.vmap(loss_one, in_axes=(None, 0))(p, images)))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    @functools.partial(jax.jit, donate_argnums=(0, 1), static_argnames=("method", "microbatch"))
    def private(p, o, images, mask, key, *, method, microbatch):
        g, _ = dp_sgd.dp_gradient(loss_one, p, images, mask, key, l2_clip=1.0, noise_multiplier=1.0,
                                  expected_batch_size=batch, microbatch_size=microbatch, method=method,
                                  mesh=mesh if devices > 1 else None)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    state = {"plain": (params, opt)}
    state.update({v: jax.tree_util.tree_map(jnp.copy, (params, opt)) for v in variants})
    key = jax.random.PRNGKey(1)

    def run_plain():
        state["plain"] = plain(*state["plain"], xs)
        jax.block_until_ready(state["plain"])

    def run_dp(variant):
        method, micro = variant
        state[variant] = private(*state[variant], xs, mask, key, method=method, microbatch=micro)
        jax.block_until_ready(state[variant])

    return run_plain, {v: functools.partial(run_dp, v) for v in variants}


def torch_steps(batch: int):
    """(non-DP step, Opacus DP step) closures on the same-shape PyTorch discriminator."""
    import torch
    from torch import nn

    def model():
        layers, cin = [], 1
        for i, c in enumerate((64, 128, 256, 512)):
            layers += [nn.Conv2d(cin, c, 4, 2, 1, bias=i == 0)]
            if i:
                layers += [nn.GroupNorm(8, c)]
            layers += [nn.LeakyReLU(0.2)]
            cin = c
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 4 * 512, 1))

    torch.manual_seed(0)
    x = torch.rand(batch, 1, 64, 64) * 2 - 1
    plain_m = model()
    plain_opt = torch.optim.Adam(plain_m.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def run_plain():
        plain_opt.zero_grad(set_to_none=True)
        nn.functional.softplus(-plain_m(x)).mean().backward()
        plain_opt.step()

    from opacus import PrivacyEngine

    dp_m = model()
    dp_opt = torch.optim.Adam(dp_m.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)
    dp_m, dp_opt, _ = PrivacyEngine().make_private(module=dp_m, optimizer=dp_opt, data_loader=loader,
                                                   noise_multiplier=1.0, max_grad_norm=1.0)

    def run_dp():
        dp_opt.zero_grad(set_to_none=True)
        nn.functional.softplus(-dp_m(x)).mean().backward()
        dp_opt.step()

    return run_plain, run_dp


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", default="16,64,256")
    p.add_argument("--method", default="vmap", help="comma-separated dp_sgd clipping methods: vmap,ghost")
    p.add_argument("--microbatch", type=int, default=0, help="also time DP with this microbatch size")
    p.add_argument("--devices", default="1", help="comma-separated device counts (CPU: simulated)")
    p.add_argument("--base-features", type=int, default=64, help="first conv width (64 = BASELINES.md)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch/Opacus rows")
    p.add_argument("--out", default="benchmarks/results/dp_overhead.json")
    args = p.parse_args(argv)
    devices = [int(d) for d in args.devices.split(",")]
    methods = args.method.split(",")
    if max(devices) > 1 and "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(devices)}"
    from jaxmedgan.privacy import dp_sgd

    unknown = set(methods) - set(dp_sgd.CLIPPED_SUM_METHODS)
    if unknown:
        p.error(f"--method {sorted(unknown)}: expected some of {sorted(dp_sgd.CLIPPED_SUM_METHODS)}")
    variants = [(m, micro) for m in methods for micro in [None] + ([args.microbatch] if args.microbatch else [])]
    have_torch = False
    if not args.no_torch:
        try:
            import opacus  # noqa: F401
            import torch  # noqa: F401
            have_torch = True
        except ImportError:
            print("torch/opacus not installed (pip install -e '.[bench]'): PyTorch rows skipped")
    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        fns, labels = {}, {}
        for n_dev in devices:
            plain, dps = jax_steps(batch, variants, n_dev, args.base_features)
            fns[("jax", n_dev, "plain")] = plain
            for v, fn in dps.items():
                fns[("jax", n_dev, v)] = fn
                labels[("jax", n_dev, v)] = v
        if have_torch and args.base_features == 64:
            plain, dp = torch_steps(batch)
            fns[("torch", 1, "plain")], fns[("torch", 1, "opacus")] = plain, dp
            labels[("torch", 1, "opacus")] = ("opacus", None)
        times = _time(fns, args.warmup, args.repeats)
        for key, (method, micro) in labels.items():
            framework, n_dev, _ = key
            (t_plain, s_plain), (t_dp, s_dp) = times[(framework, n_dev, "plain")], times[key]
            rows.append({"framework": "jax" if framework == "jax" else "torch+opacus", "method": method,
                         "batch": batch, "devices": n_dev, "microbatch": micro, "nondp_s": t_plain,
                         "nondp_iqr_s": s_plain, "dp_s": t_dp, "dp_iqr_s": s_dp, "dp_over_nondp": t_dp / t_plain})
            r = rows[-1]
            print(f"{r['framework']:13s} {method:6s} batch {batch:4d} dev {n_dev} micro {str(micro):4s}: "
                  f"non-DP {t_plain * 1e3:8.1f} ms  DP {t_dp * 1e3:8.1f} ms  DP/non-DP {t_dp / t_plain:.2f}",
                  flush=True)
        t = [r for r in rows if r["batch"] == batch and r["framework"] != "jax"]
        for j in [r for r in rows if r["batch"] == batch and r["framework"] == "jax" and r["devices"] == 1]:
            if t:
                print(f"batch {batch} {j['method']} micro {j['microbatch']}: jax non-DP / torch non-DP = "
                      f"{j['nondp_s'] / t[0]['nondp_s']:.2f}; jax DP / Opacus DP = {j['dp_s'] / t[0]['dp_s']:.2f}; "
                      f"ratio vs Opacus ratio = {j['dp_over_nondp'] / t[0]['dp_over_nondp']:.2f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
