"""StyleGAN2-ADA training throughput: img/s and sec/kimg of G+D steps, with/without ADA and lazy reg.

    python -m benchmarks.stylegan2_throughput --resolution 64 --batch 16 --devices 1,8 \
        --ada both --reg both --out benchmarks/results/stylegan2_throughput.json

Each setting compiles the four phases (Gmain, Greg, Dmain, Dreg) and the EMA update once, timed
separately ("compile_s"), then runs whole lazy-regularisation cycles (16 steps: Greg every 4th,
Dreg every 16th, as the trainer's host schedule does) and reports the mean step time over them.
"ADA on" uses a fixed p (--ada-p) so the cost does not drift with the heuristic. On CPU the
devices are simulated (`--xla_force_host_platform_device_count`), so 8 "devices" share the same
cores. Also per row: peak memory, FLOPs per step (XLA cost analysis of each compiled phase,
averaged over the steps run) and MFU where the accelerator's peak is known (benchmarks/common.py).
Prints a table; writes JSON. Never asserted in tests (a smoke test runs it tiny).
"""
from __future__ import annotations

import argparse
import time

from benchmarks import common


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_args(p, devices="1", out="benchmarks/results/stylegan2_throughput.json", timing=False)
    p.add_argument("--config", default="configs/stylegan2_ada_spine.py")
    p.add_argument("--resolution", type=int, default=32, help="image size, px")
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--ada", choices=["on", "off", "both"], default="both")
    p.add_argument("--ada-p", type=float, default=0.3, help="fixed augmentation probability for 'on'")
    p.add_argument("--reg", choices=["on", "off", "both"], default="both", help="lazy R1 + path length")
    p.add_argument("--channel-base", type=int, default=None)
    p.add_argument("--channel-max", type=int, default=None)
    p.add_argument("--latent", type=int, default=None, help="z and w dims")
    p.add_argument("--num-classes", type=int, default=None, help="conditions (c_dim); 0 = unconditional")
    p.add_argument("--cycles", type=int, default=1, help="timed 16-step lazy-regularisation cycles")
    p.add_argument("--steps", type=int, default=None, help="timed steps (overrides --cycles)")
    p.add_argument("--fast-compile", action="store_true", help="XLA opt level 0 (as train.fast_compile)")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = _parse(argv)
    devices = common.parse_ints(args.devices, "--devices")
    common.force_host_devices(max(devices))
    import functools

    import jax

    from jaxmedgan import sharding
    from jaxmedgan.data import spine_phantoms
    from jaxmedgan.trainers import stylegan2 as tr

    ada_modes = {"on": [True], "off": [False], "both": [False, True]}[args.ada]
    reg_modes = {"on": [True], "off": [False], "both": [False, True]}[args.reg]
    options = {"xla_backend_optimization_level": 0} if args.fast_compile else None
    rows = []
    for n_dev in devices:
        for ada_on in ada_modes:
            for reg_on in reg_modes:
                c = common.load_config(args.config)
                c.data.image_size = args.resolution
                c.train.batch_size = args.batch
                if args.channel_base:
                    c.model.channel_base = args.channel_base
                if args.channel_max:
                    c.model.channel_max = args.channel_max
                if args.latent:
                    c.model.latent_dim = c.model.w_dim = args.latent
                if args.num_classes is not None:
                    c.model.num_classes = args.num_classes
                c.ada.mode, c.ada.p = ("fixed", args.ada_p) if ada_on else ("none", 0.0)
                if not reg_on:
                    c.loss.pl_weight, c.loss.r1_gamma = 0.0, 0.0
                peak = common.PeakMemory(jax.devices()[:n_dev])
                peak.reset()
                mesh = sharding.make_mesh(None, jax.devices()[:n_dev])
                init = functools.partial(tr.init_state, c)
                shard = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
                state = jax.jit(init, out_shardings=shard)(jax.random.PRNGKey(0))
                x, y = spine_phantoms.generate([-(-args.batch // 4)] * 4, spine_phantoms.TRAIN_SEED,
                                               args.resolution)
                y = y % max(c.model.num_classes, 1)  # labels within the configured conditions
                batch = sharding.shard_batch({"image": x[:args.batch], "label": y[:args.batch]}, mesh)
                bs, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
                fns = {"Gmain": tr.g_main_step, "Greg": tr.g_reg_step, "Dmain": tr.d_main_step,
                       "Dreg": tr.d_reg_step}
                compiled, compile_s, phase_flops = {}, {}, {}
                for name, fn in fns.items():
                    if not reg_on and name in ("Greg", "Dreg"):
                        continue
                    lowered, compiled[name], compile_s[name] = common.lower_and_compile(
                        jax.jit(functools.partial(fn, c), in_shardings=(shard, bs), out_shardings=(shard, rep),
                                donate_argnums=(0,), compiler_options=options), state, batch)
                    phase_flops[name] = common.lowered_flops(lowered)
                lowered, finish, compile_s["finish"] = common.lower_and_compile(
                    jax.jit(functools.partial(tr.finish_step, c), in_shardings=(shard,),
                            out_shardings=(shard, rep), donate_argnums=(0,), compiler_options=options), state)
                phase_flops["finish"] = common.lowered_flops(lowered)

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
                ran = [name for step in range(1, steps + 1) for name in tr.phases_at(c, step)] + ["finish"] * steps
                flops = (None if any(phase_flops[n] is None for n in ran)
                         else sum(phase_flops[n] for n in ran) / steps)
                mem, mem_source = peak.read()
                info = common.platform_info()
                row = {"devices": n_dev, "ada": ada_on, "reg": reg_on, "resolution": args.resolution,
                       "batch": args.batch, "steps": steps, "step_s_mean": step_s, "images_per_s": img_s,
                       "sec_per_kimg": 1000.0 / img_s, "compile_s": sum(compile_s.values()),
                       "compile_s_by_phase": compile_s, "ada_p": args.ada_p if ada_on else 0.0,
                       "platform": info["platform"], "device_kind": info["device_kind"],
                       "fast_compile": bool(args.fast_compile), "peak_memory_bytes": mem,
                       "peak_memory_source": mem_source, "flops_per_step": flops,
                       **common.throughput(flops, step_s, info["device_kind"], n_dev, c.train.get("dtype", "float32"))}
                rows.append(row)
                print(f"devices {n_dev} ada {'on ' if ada_on else 'off'} reg {'on ' if reg_on else 'off'}: "
                      f"{step_s * 1e3:8.1f} ms/step {img_s:8.1f} img/s {1000 / img_s:8.1f} s/kimg "
                      f"compile {row['compile_s']:6.1f} s", flush=True)
    print()
    on_off = lambda v: "on" if v else "off"
    common.print_table(rows, (("dev", "devices", str), ("ada", "ada", on_off), ("reg", "reg", on_off),
                              ("img/s", "images_per_s", lambda v: f"{v:.1f}"),
                              ("s/kimg", "sec_per_kimg", lambda v: f"{v:.1f}"),
                              ("compile s", "compile_s", lambda v: f"{v:.1f}"),
                              ("peak mem", "peak_memory_bytes", common.fmt_bytes),
                              ("GFLOP/step", "flops_per_step", lambda v: "-" if v is None else f"{v / 1e9:.2f}")))
    common.write_json(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
