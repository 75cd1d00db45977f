"""jaxmedgan beside PyTorch, same architecture and batch, one process: step-time and DP-overhead ratios.

    python -m benchmarks.vs_pytorch --resolution 64 --batch 32 --repeats 10
    python -m benchmarks.vs_pytorch --quick      # 16 px, tiny widths: a smoke run

Two comparisons, each timed round-robin (one call of each step per round) so that load from
other processes hits both frameworks alike:

1. DCGAN/ACGAN training step (D update on reals + fakes, then G update; Adam; ACGAN auxiliary
   class loss): jaxmedgan's own `trainers.gan.train_step` (jitted as `common.fit` jits it) vs a
   PyTorch port of `models/dcgan.py` built here to the same layer shapes (parameter counts are
   checked equal before timing). Ratio jaxmedgan / PyTorch step time.
2. DP overhead on the BASELINES.md discriminator: `benchmarks/dp_overhead.py`'s steps (jaxmedgan
   DP-SGD vs non-DP; Opacus vs plain PyTorch). Ratios DP / non-DP per framework and their quotient.

StyleGAN2 is not compared: no package on the Python package index carries NVlabs' StyleGAN2-ADA
networks in a form that imports with a CPU-only torch and without torchvision (see
docs/benchmarks.md for the candidates tried). Needs the `bench` extra (torch, opacus). Writes JSON.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks import common, dp_overhead


def torch_gan(config):
    """(G, D) in PyTorch with the layer shapes of jaxmedgan.models.dcgan for `config` (NCHW)."""
    import math

    import torch
    from torch import nn

    m, size, ch = config.model, config.data.image_size, config.data.channels
    n = int(math.log2(size / 4))

    def norm(kind: str, c: int) -> nn.Module:
        # Flax twins: BatchNorm(momentum 0.9) | GroupNorm(group_size 1) | GroupNorm(<= 8 groups) |
        # LayerNorm over (H, W, C) with per-channel scale/bias == GroupNorm with one group.
        if kind == "batch":
            return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
        if kind == "instance":
            return nn.GroupNorm(c, c, eps=1e-5)
        if kind == "group":
            g = 8
            while c % g:
                g -= 1
            return nn.GroupNorm(g, c, eps=1e-5)
        if kind == "layer":
            return nn.GroupNorm(1, c, eps=1e-5)
        if kind == "none":
            return nn.Identity()
        raise ValueError(f"config.model norm {kind!r} has no PyTorch twin here.")

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            width = lambda i: min(m.g_features * 2 ** (n - 1 - i), m.max_features)
            self.embed = nn.Embedding(m.num_classes, m.latent_dim) if m.num_classes else None
            z_in = m.latent_dim * (2 if m.num_classes else 1)
            self.project = nn.Linear(z_in, 16 * width(0), bias=False)
            self.w0 = width(0)
            self.project_norm = norm(m.g_norm, width(0))
            blocks, cin = [], width(0)
            for i in range(1, n):
                blocks += [nn.ConvTranspose2d(cin, width(i), 4, 2, 1, bias=m.g_norm == "none"),
                           norm(m.g_norm, width(i)), nn.ReLU()]
                cin = width(i)
            blocks += [nn.ConvTranspose2d(cin, ch, 4, 2, 1, bias=True), nn.Tanh()]
            self.blocks = nn.Sequential(*blocks)

        def forward(self, z, labels):
            h = torch.cat([z, self.embed(labels)], 1) if self.embed is not None else z
            h = self.project(h).view(-1, 4, 4, self.w0).permute(0, 3, 1, 2)  # NHWC order, as Flax
            return self.blocks(torch.relu(self.project_norm(h)))

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [], ch
            for i in range(n):
                c = min(m.d_features * 2 ** i, m.max_features)
                kind = "none" if i == 0 else m.d_norm
                layers += [nn.Conv2d(cin, c, 4, 2, 1, bias=kind == "none"), norm(kind, c), nn.LeakyReLU(0.2)]
                cin = c
            self.body = nn.Sequential(*layers, nn.Flatten())
            self.adv = nn.Linear(16 * cin, 1)
            self.aux = nn.Linear(16 * cin, m.num_classes) if m.num_classes else None

        def forward(self, x):
            h = self.body(x)
            return self.adv(h)[:, 0], (self.aux(h) if self.aux is not None else None)

    return G(), D()


def torch_gan_step(config, batch: int):
    """A closure running one PyTorch D-then-G step (the losses of trainers/gan.py) on a fixed batch."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    g, d = torch_gan(config)
    o = config.optim
    g_opt = torch.optim.Adam(g.parameters(), lr=o.g_lr, betas=(o.b1, o.b2))
    d_opt = torch.optim.Adam(d.parameters(), lr=o.d_lr, betas=(o.b1, o.b2))
    s, ch, k = config.data.image_size, config.data.channels, config.model.num_classes
    real = torch.rand(batch, ch, s, s) * 2 - 1
    labels = torch.randint(0, max(k, 1), (batch,))
    aux_w = config.loss.aux_weight if k else 0.0

    def aux(cls, y):
        return F.cross_entropy(cls, y) if cls is not None else 0.0

    def step():
        z = torch.randn(batch, config.model.latent_dim)
        fake_y = torch.randint(0, max(k, 1), (batch,))
        with torch.no_grad():
            fake = g(z, fake_y)
        d_opt.zero_grad(set_to_none=True)
        r_logit, r_cls = d(real)
        f_logit, f_cls = d(fake)
        d_loss = (F.softplus(-r_logit) + F.softplus(f_logit)).mean() + aux_w * (aux(r_cls, labels) + aux(f_cls, fake_y))
        d_loss.backward()
        d_opt.step()
        g_opt.zero_grad(set_to_none=True)
        z = torch.randn(batch, config.model.latent_dim)
        gen_y = torch.randint(0, max(k, 1), (batch,))
        logit, cls = d(g(z, gen_y))
        (F.softplus(-logit).mean() + aux_w * aux(cls, gen_y)).backward()
        g_opt.step()

    counts = (sum(p.numel() for p in g.parameters()), sum(p.numel() for p in d.parameters()))
    return step, counts


def jax_gan_step(config):
    """(closure running jaxmedgan's jitted gan.train_step on one device, (G, D) parameter counts)."""
    import functools

    import jax
    import numpy as np

    from jaxmedgan.trainers import gan

    state = jax.jit(functools.partial(gan.init_state, config))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    s, b = config.data.image_size, config.train.batch_size
    batch = {"image": jax.device_put(rng.uniform(-1, 1, (b, s, s, config.data.channels)).astype(np.float32)),
             "label": jax.device_put(rng.integers(0, max(config.model.num_classes, 1), b).astype(np.int32))}
    compiled, compile_s = common.compile_timed(
        jax.jit(functools.partial(gan.train_step, config), donate_argnums=(0,)), state, batch)
    holder = {"state": state}

    def step():
        holder["state"], m = compiled(holder["state"], batch)
        jax.block_until_ready(m)

    size = lambda t: sum(x.size for x in jax.tree_util.tree_leaves(t))
    return step, (size(state.g_params), size(state.d_params)), compile_s


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_args(p, devices="1", warmup=2, repeats=10, out="benchmarks/results/vs_pytorch.json")
    p.add_argument("--config", default="configs/acgan_liver.py", help="DCGAN/ACGAN config (model widths)")
    p.add_argument("--resolution", type=int, default=None, help="image size, px (default: the config's)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--features", type=int, default=None, help="override G/D base widths")
    p.add_argument("--dp-batch", default="64", help="comma-separated batches of the DP-overhead comparison")
    p.add_argument("--dp-base-features", type=int, default=64, help="DP discriminator's first width")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads (0: torch's default, one per core; on a machine shared with "
                        "other jobs its OpenMP barriers can cost 10-20x, so compare with 1 too)")
    p.add_argument("--quick", action="store_true",
                   help="16 px, widths 4/8, batch 8, 1 warm-up, 2 repeats, 1 torch thread")
    args = p.parse_args(argv)
    if args.quick:
        args.resolution, args.features, args.batch = 16, 4, 8
        args.dp_batch, args.dp_base_features, args.warmup, args.repeats = "2", 8, 1, 2
        args.torch_threads = args.torch_threads or 1
    if not dp_overhead.have_torch():
        print("torch/opacus not installed (pip install -e '.[bench]'): nothing to compare.")
        return {}
    common.force_host_devices(1)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    c = common.load_config(args.config)
    if args.resolution:
        c.data.image_size = args.resolution
    if args.features:
        c.model.g_features = c.model.d_features = args.features
    c.train.batch_size = args.batch
    c.privacy.enabled = False
    c.model.mbstd_group_size = 0  # the PyTorch port has no minibatch-stddev layer: compare the same model
    jax_step, jax_counts, compile_s = jax_gan_step(c)
    torch_step, torch_counts = torch_gan_step(c, args.batch)
    if jax_counts != torch_counts:
        raise RuntimeError(f"The PyTorch port does not match jaxmedgan's DCGAN: (G, D) parameters {torch_counts} "
                           f"vs {jax_counts}.")
    t = common.time_round_robin({"jax": jax_step, "torch": torch_step}, args.warmup, args.repeats)
    sj, st = common.spread(t["jax"]), common.spread(t["torch"])
    info = common.platform_info()
    gan_row = {"comparison": "gan_step", "model": "acgan" if c.model.num_classes else "dcgan",
               "resolution": c.data.image_size, "batch": args.batch, "g_params": jax_counts[0],
               "d_params": jax_counts[1], "jax_step_s": sj["step_s_median"], "jax_p10_s": sj["step_s_p10"],
               "jax_p90_s": sj["step_s_p90"], "jax_compile_s": compile_s, "torch_step_s": st["step_s_median"],
               "torch_p10_s": st["step_s_p10"], "torch_p90_s": st["step_s_p90"],
               "jax_over_torch": sj["step_s_median"] / st["step_s_median"]}
    print(f"{gan_row['model']} {c.data.image_size} px batch {args.batch} (G {jax_counts[0]}, D {jax_counts[1]} "
          f"params): jaxmedgan {sj['step_s_median'] * 1e3:.1f} ms, PyTorch {st['step_s_median'] * 1e3:.1f} ms, "
          f"jaxmedgan / PyTorch = {gan_row['jax_over_torch']:.2f}", flush=True)
    dp_args = argparse.Namespace(batch=common.parse_ints(args.dp_batch, "--dp-batch"), warmup=args.warmup,
                                 repeats=args.repeats, base_features=args.dp_base_features)
    dp_rows = dp_overhead._rows_one_process(dp_args, 1, [("vmap", None)], with_torch=True)
    ratios = []
    for batch in dp_args.batch:
        j = next(r for r in dp_rows if r["batch"] == batch and r["framework"] == "jax")
        o = next(r for r in dp_rows if r["batch"] == batch and r["framework"] != "jax")
        ratios.append({"comparison": "dp_overhead", "batch": batch, "base_features": args.dp_base_features,
                       "jax_nondp_over_torch_nondp": j["nondp_s"] / o["nondp_s"],
                       "jax_dp_over_opacus_dp": j["dp_s"] / o["dp_s"], "jax_dp_over_nondp": j["dp_over_nondp"],
                       "opacus_dp_over_nondp": o["dp_over_nondp"],
                       "jax_ratio_over_opacus_ratio": j["dp_over_nondp"] / o["dp_over_nondp"]})
    print("\nratios (jaxmedgan / PyTorch; same process, round-robin):")
    print(f"  {gan_row['model']} D+G step: {gan_row['jax_over_torch']:.2f}")
    for r in ratios:
        print(f"  DP discriminator batch {r['batch']}: non-DP {r['jax_nondp_over_torch_nondp']:.2f}; "
              f"DP {r['jax_dp_over_opacus_dp']:.2f}; DP/non-DP jaxmedgan {r['jax_dp_over_nondp']:.2f} vs "
              f"Opacus {r['opacus_dp_over_nondp']:.2f}")
    result = {"meta": {**info, "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
                       "argv": list(argv if argv is not None else sys.argv[1:]),
                       "stylegan2": "not compared: no PyPI package with NVlabs' StyleGAN2-ADA networks "
                                    "imports on CPU-only torch without torchvision (docs/benchmarks.md)"},
              "gan_step": gan_row, "dp_overhead": ratios, "dp_rows": dp_rows}
    common.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
