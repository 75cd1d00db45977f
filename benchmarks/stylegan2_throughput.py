"""StyleGAN2-ADA training throughput: img/s and sec/kimg of G+D steps, with/without ADA and lazy reg.

    python -m benchmarks.stylegan2_throughput --resolution 64 --batch 16 --devices 1,8 \
        --ada both --reg both --out benchmarks/results/stylegan2_throughput.json

Each setting compiles the four phases (Gmain, Greg, Dmain, Dreg) and the EMA update once, timed
separately ("compile_s"), then runs whole lazy-regularisation cycles (16 steps: Greg every 4th,
Dreg every 16th, as the trainer's host schedule does) and reports the mean step time over them.
"ADA on" uses a fixed p (--ada-p) so the cost does not drift with the heuristic. On CPU the
devices are simulated (`--xla_force_host_platform_device_count`), so 8 "devices" share the same
cores. Prints a table; writes JSON. Never asserted in tests (a smoke test runs it tiny).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/stylegan2_ada_spine.py")
    p.add_argument("--resolution", type=int, default=32, help="image size, px")
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--devices", default="1", help="comma-separated device counts for the data axis")
    p.add_argument("--ada", choices=["on", "off", "both"], default="both")
    p.add_argument("--ada-p", type=float, default=0.3, help="fixed augmentation probability for 'on'")
    p.add_argument("--reg", choices=["on", "off", "both"], default="both", help="lazy R1 + path length")
    p.add_argument("--channel-base", type=int, default=None)
    p.add_argument("--channel-max", type=int, default=None)
    p.add_argument("--latent", type=int, default=None, help="z and w dims")
    p.add_argument("--cycles", type=int, default=1, help="timed 16-step lazy-regularisation cycles")
    p.add_argument("--steps", type=int, default=None, help="timed steps (overrides --cycles)")
    p.add_argument("--fast-compile", action="store_true", help="XLA opt level 0 (as train.fast_compile)")
    p.add_argument("--out", default="benchmarks/results/stylegan2_throughput.json")
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
    from jaxmedgan.data import spine_phantoms
    from jaxmedgan.trainers import stylegan2 as tr

    spec = importlib.util.spec_from_file_location("bench_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ada_modes = {"on": [True], "off": [False], "both": [False, True]}[args.ada]
    reg_modes = {"on": [True], "off": [False], "both": [False, True]}[args.reg]
    options = {"xla_backend_optimization_level": 0} if args.fast_compile else None
    rows = []
    for n_dev in devices:
        for ada_on in ada_modes:
            for reg_on in reg_modes:
                c = module.get_config()
                c.data.image_size = args.resolution
                c.train.batch_size = args.batch
                if args.channel_base:
                    c.model.channel_base = args.channel_base
                if args.channel_max:
                    c.model.channel_max = args.channel_max
                if args.latent:
                    c.model.latent_dim = c.model.w_dim = args.latent
                c.ada.mode, c.ada.p = ("fixed", args.ada_p) if ada_on else ("none", 0.0)
                if not reg_on:
                    c.loss.pl_weight, c.loss.r1_gamma = 0.0, 0.0
                mesh = sharding.make_mesh(None, jax.devices()[:n_dev])
                init = functools.partial(tr.init_state, c)
                shard = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
                state = jax.jit(init, out_shardings=shard)(jax.random.PRNGKey(0))
                x, y = spine_phantoms.generate([-(-args.batch // 4)] * 4, spine_phantoms.TRAIN_SEED,
                                               args.resolution)
                batch = sharding.shard_batch({"image": x[:args.batch], "label": y[:args.batch]}, mesh)
                bs, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
                fns = {"Gmain": tr.g_main_step, "Greg": tr.g_reg_step, "Dmain": tr.d_main_step,
                       "Dreg": tr.d_reg_step}
                compiled, compile_s = {}, {}
                for name, fn in fns.items():
                    if not reg_on and name in ("Greg", "Dreg"):
                        continue
                    t0 = time.perf_counter()
                    compiled[name] = jax.jit(functools.partial(fn, c), in_shardings=(shard, bs),
                                             out_shardings=(shard, rep), donate_argnums=(0,),
                                             compiler_options=options).lower(state, batch).compile()
                    compile_s[name] = time.perf_counter() - t0
                t0 = time.perf_counter()
                finish = jax.jit(functools.partial(tr.finish_step, c), in_shardings=(shard,),
                                 out_shardings=(shard, rep), donate_argnums=(0,),
                                 compiler_options=options).lower(state).compile()
                compile_s["finish"] = time.perf_counter() - t0

                def run(state, step):
                    for name in tr.phases_at(c, step):
                        state, m = compiled[name](state, batch)
                    return finish(state)

                state, m = run(state, 0)  # warm-up: one step with every phase
                jax.block_until_ready(m)
                steps = args.steps or 16 * args.cycles
                t0 = time.perf_counter()
                for step in range(1, steps + 1):
                    state, m = run(state, step)
                jax.block_until_ready((state, m))
                step_s = (time.perf_counter() - t0) / steps
                img_s = args.batch / step_s
                row = {"devices": n_dev, "ada": ada_on, "reg": reg_on, "resolution": args.resolution,
                       "batch": args.batch, "steps": steps, "step_s_mean": step_s, "images_per_s": img_s,
                       "sec_per_kimg": 1000.0 / img_s, "compile_s": sum(compile_s.values()),
                       "compile_s_by_phase": compile_s, "ada_p": args.ada_p if ada_on else 0.0,
                       "platform": jax.devices()[0].platform, "fast_compile": bool(args.fast_compile)}
                rows.append(row)
                print(f"devices {n_dev} ada {'on ' if ada_on else 'off'} reg {'on ' if reg_on else 'off'}: "
                      f"{step_s * 1e3:8.1f} ms/step {img_s:8.1f} img/s {1000 / img_s:8.1f} s/kimg "
                      f"compile {row['compile_s']:6.1f} s", flush=True)
    print(f"\n{'dev':>3} {'ada':>4} {'reg':>4} {'img/s':>9} {'s/kimg':>9} {'compile s':>10}")
    for r in rows:
        print(f"{r['devices']:>3} {('on' if r['ada'] else 'off'):>4} {('on' if r['reg'] else 'off'):>4} "
              f"{r['images_per_s']:9.1f} {r['sec_per_kimg']:9.1f} {r['compile_s']:10.1f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
