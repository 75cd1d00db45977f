"""Training throughput sweep: model family x DP on/off x device count x batch x resolution.

    python -m benchmarks.run --families gan,stylegan2,pix2pix --dp off,on --devices 1,8 \
        --batch 16,64 --resolution 32,64 --out benchmarks/results/run.json
    python -m benchmarks.run --quick            # tiny shapes, 1-2 repeats: a smoke run in seconds

Each row times the trainer's own step (what `common.fit` runs): `FAMILY.train_step` jitted with
the same shardings and donation, or `FAMILY.make_step`'s host-side step (StyleGAN2's lazily
regularised phases) where the family defines one; PGGAN times its final, full-resolution level
(`train_step`'s default; its make_step would start at 4 px). Models come from the family's config file
(`--config-<family>`), resized to the row's resolution; `--set key=value` overrides any config
field (e.g. `--set train.dtype=bfloat16`). Under DP the batch is the expected Poisson batch
(q x --dp-dataset-size), padded with a mask as the trainer pads it; img/s counts expected images.

Every device count runs in its own process (a child of this one) because XLA fixes the device
count when its backend starts; on CPU the devices are simulated
(`--xla_force_host_platform_device_count`), so N "devices" share the same cores and a 1-vs-N
ratio shows sharding overhead, not a speed-up. On GPU/TPU the counts are real devices.

Output: a table on stdout, JSON (`{"meta", "rows", "skipped"}`, every row with every field of
`FIELDS`, null where not measurable) and a PNG of img/s vs devices and vs batch. See
`benchmarks/common.py` for how each quantity is measured.
"""
from __future__ import annotations

import argparse
import ast
import functools
import glob
import os
import sys
import time
from typing import Any

from benchmarks import common

FAMILIES = ("gan", "stylegan2", "pix2pix", "pggan")
DEFAULT_CONFIGS = {"gan": "configs/acgan_liver.py", "stylegan2": "configs/stylegan2_ada_spine.py",
                   "pix2pix": "configs/pix2pix_brain.py", "pggan": ""}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every row carries these keys (null where a quantity cannot be measured on the platform).
FIELDS = ("family", "model", "dp", "devices", "batch", "padded_batch", "resolution", "dtype", "platform",
          "device_kind", "steps_per_repeat", "repeats", "step_s_median", "step_s_p10", "step_s_p90",
          "step_s_iqr", "images_per_s", "sec_per_kimg", "compile_s", "compile_s_method", "peak_memory_bytes",
          "peak_memory_source", "xla_memory_bytes", "flops_per_step", "flops_per_s", "peak_flops_per_s", "mfu")


def available_families() -> list[str]:
    """The families whose trainer exists in this checkout (pggan once jaxmedgan/trainers/pggan.py does)."""
    return [f for f in FAMILIES if os.path.exists(os.path.join(ROOT, "jaxmedgan", "trainers", f"{f}.py"))]


def _config_path(family: str, given: str) -> str:
    if given:
        return given
    if DEFAULT_CONFIGS[family]:
        return os.path.join(ROOT, DEFAULT_CONFIGS[family])
    found = sorted(glob.glob(os.path.join(ROOT, "configs", f"{family}*.py")))
    if not found:
        raise SystemExit(f"No config for family {family!r}: pass --config-{family}.")
    return found[0]


def _set(config, assignment: str) -> None:
    """Applies 'a.b=value' (value parsed as a Python literal, else kept as a string)."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise SystemExit(f"--set expects key=value, got {assignment!r}.")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *path, name = key.split(".")
    node = config
    for part in path:
        if part not in node:
            raise SystemExit(f"--set {assignment}: the config has no section {part!r}.")
        node = node[part]
    if name not in node:
        raise SystemExit(f"--set {assignment}: the config has no key {key!r}.")
    node[name] = value


def _shrink(family: str, c) -> None:
    """Tiny widths for --quick (as the trainers' tests use)."""
    m = c.model
    if family == "gan":
        m.g_features = m.d_features = 4
        m.latent_dim = 16
    elif family == "pggan":  # as configs/pggan_chest.py's tiny preset
        m.latent_dim, m.channel_base, m.channel_max = 16, 64, 16
        c.train.fast_compile = True
    elif family == "stylegan2":
        m.latent_dim = m.w_dim = 16
        m.channel_base, m.channel_max, m.d_mapping_layers = 128, 16, 2
        c.train.fast_compile = True
        c.loss.pl_weight = c.loss.r1_gamma = 0.0  # Gmain + Dmain only: two phase compiles, not four
    elif family == "pix2pix":
        m.g_features, m.g_max_features, m.d_features, m.d_max_features, m.d_num_strided = 4, 8, 4, 8, 2


def make_config(family: str, path: str, resolution: int, batch: int, dp: bool, quick: bool,
                overrides: list[str]):
    """The family's config at `resolution` px and global `batch`, DP on/off, overrides applied."""
    c = common.load_config(path)
    c.data.image_size = resolution
    c.train.batch_size = batch
    c.train.quiet = True
    if "mesh" in c:
        c.mesh.data = -1
    if quick:
        _shrink(family, c)
    if family == "pggan" and c.train.get("batch_sizes"):
        c.train.batch_sizes = type(c.train.batch_sizes)()  # every level at the row's batch
    if "privacy" in c:
        c.privacy.enabled = dp
        if dp and c.get("model", {}).get("mbstd_group_size", 0) > 1:
            c.model.mbstd_group_size = 0  # minibatch-stddev mixes examples: refused under DP (as the _dp configs set)
    for assignment in overrides:
        _set(c, assignment)
    return c


def _host_batch(family: str, c, rows: int, batch: int, dp: bool, rng) -> dict:
    """Synthetic inputs of the family's batch format: rows examples, the first `batch` real (DP mask)."""
    import numpy as np

    from jaxmedgan.privacy import secret

    s, ch = c.data.image_size, c.data.channels
    out = {"image": rng.uniform(-1, 1, (rows, s, s, ch)).astype(np.float32),
           "label": rng.integers(0, max(c.model.get("num_classes", 0), 1), rows).astype(np.int32)}
    if family == "pix2pix":
        k = c.data.num_labels
        out["cond"] = np.eye(k, dtype=np.float32)[rng.integers(0, k, (rows, s, s))]
    if dp:
        out["mask"] = (np.arange(rows) < batch).astype(np.float32)
        out[secret.NOISE_KEY_FIELD] = np.broadcast_to(secret.from_seed(0).noise_key(0), (rows, 2)).copy()
    return out


def _stylegan2_flops(module, c, state, batch, steps: list[int]) -> float | None:
    """Mean global FLOPs per step over `steps` of StyleGAN2's schedule (phases lowered, not compiled)."""
    import jax

    private = {"Dmain": functools.partial(module.d_private_step, with_r1=False),
               "Dboth": functools.partial(module.d_private_step, with_r1=True)}
    fns = {"Gmain": module.g_main_step, "Greg": module.g_reg_step, "Dmain": module.d_main_step,
           "Dreg": module.d_reg_step, **(private if module.checks.dp_enabled(c) else {})}
    per_phase = {}
    for name in sorted({n for step in steps for n in module.phases_at(c, step)}):  # the phases that run
        per_phase[name] = common.lowered_flops(jax.jit(functools.partial(fns[name], c)).lower(state, batch))
    finish = common.lowered_flops(jax.jit(functools.partial(module.finish_step, c)).lower(state))
    total = 0.0
    for step in steps:
        for name in module.phases_at(c, step):
            if per_phase[name] is None:
                return None
            total += per_phase[name]
        total += finish or 0.0
    return total / len(steps)


def measure(family: str, c, n_dev: int, dp: bool, *, warmup: int, repeats: int, steps_per_repeat: int,
            dataset_size: int, peak: common.PeakMemory | None = None) -> dict:
    """One row: times `steps_per_repeat` steps of the family's training step per repeat on `n_dev` devices.

    Raises ValueError / NotImplementedError where the trainer refuses the configuration (e.g. DP).
    """
    import jax
    import numpy as np

    from jaxmedgan import sharding, trainers
    from jaxmedgan.privacy import checks, plan

    module = trainers.get(family)  # its own helpers: PGGAN's penalty_step, StyleGAN2's phases
    fam = trainers.family(family)
    devices = jax.devices()[:n_dev]
    if len(devices) < n_dev:
        raise ValueError(f"{n_dev} devices requested, {len(jax.devices())} available.")
    peak = peak or common.PeakMemory(devices)
    peak.reset()
    mesh = sharding.make_mesh(None, devices)
    batch = c.train.batch_size
    init = functools.partial(fam.init_state, c)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))  # trainers refuse what they cannot run here
    rows = batch
    if dp:
        if fam.check_private_generator is not None:
            fam.check_private_generator(c)
        # The padded Poisson batch (and calibrated sigma) exactly as common.fit plans them, before init.
        rows = plan.prepare(c, abstract.d_variables(), max(dataset_size, batch), n_dev).max_batch_size
        init = functools.partial(fam.init_state, c)  # a fresh trace: the optimiser holds the planned sigma
    elif batch % n_dev:
        raise ValueError(f"batch {batch} is not divisible by {n_dev} devices.")
    shard = sharding.tree_shardings(abstract, mesh)
    state = jax.jit(init, out_shardings=shard)(jax.random.PRNGKey(0))
    if dp:
        checks.check_dp_compatible(c, state.d_variables())
    data = sharding.shard_batch(_host_batch(family, c, rows, batch, dp, np.random.default_rng(0)), mesh)
    bs, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)

    step_index = [0]
    # PGGAN: its make_step follows the growing schedule (4 px first); a throughput row times the
    # final, full-resolution level (FAMILY.train_step's default), where a long run spends its time.
    if fam.make_step is None or family == "pggan":
        # PGGAN's lazy gradient penalty (loss.gp_interval > 1): both step variants, on its schedule.
        variants = ({True: {"with_gp": True}, False: {"with_gp": False}}
                    if family == "pggan" and int(c.loss.gp_interval) > 1 else {True: {}})
        compiled, compile_s, flops, xla_mem = {}, 0.0, None, None
        for key, kwargs in variants.items():
            jitted = jax.jit(functools.partial(fam.train_step, c, mesh=mesh, **kwargs), in_shardings=(shard, bs),
                             out_shardings=(shard, rep), donate_argnums=(0,))
            lowered, compiled[key], seconds = common.lower_and_compile(jitted, state, data)
            compile_s += seconds
            if key:  # the penalty step's figures (the plain step's when there is one variant)
                flops, xla_mem = common.lowered_flops(lowered), common.xla_memory_bytes(compiled[key])
        method = "lower+compile"
        pick = (lambda i: module.penalty_step(c, i)) if len(variants) > 1 else (lambda i: True)
        step_fn = lambda s, b, i: compiled[pick(i)](s, b)
    else:
        step_fn = fam.make_step(c, shard, bs, rep)
        compile_s, xla_mem, method = None, None, "first call minus median step"
        schedule = list(range(1, 1 + steps_per_repeat))
        flops = _stylegan2_flops(module, c, state, data, schedule) if family == "stylegan2" else None

    holder = {"state": state}

    def run():
        s = holder["state"]
        for _ in range(steps_per_repeat):
            s, m = step_fn(s, data, step_index[0])
            step_index[0] += 1
        jax.block_until_ready((s, m))
        holder["state"] = s

    t0 = time.perf_counter()
    run()  # first call: compiles whatever make_step jits (every phase at step 0)
    first_s = time.perf_counter() - t0
    times = common.time_calls(run, max(warmup - 1, 0), repeats)
    per_step = [t / steps_per_repeat for t in times]
    stats = common.spread(per_step)
    if compile_s is None:
        compile_s = max(first_s - stats["step_s_median"] * steps_per_repeat, 0.0)
    mem, source = peak.read()
    info = common.platform_info()
    dtype = c.train.get("dtype", "float32")
    img_s = batch / stats["step_s_median"]
    row = {"family": family, "model": _model_name(family, c), "dp": dp, "devices": n_dev, "batch": batch,
           "padded_batch": rows, "resolution": c.data.image_size, "dtype": dtype, "platform": info["platform"],
           "device_kind": info["device_kind"], "steps_per_repeat": steps_per_repeat, "repeats": repeats, **stats,
           "images_per_s": img_s, "sec_per_kimg": 1000.0 / img_s, "compile_s": compile_s,
           "compile_s_method": method, "peak_memory_bytes": mem, "peak_memory_source": source,
           "xla_memory_bytes": xla_mem, "flops_per_step": flops,
           **common.throughput(flops, stats["step_s_median"], info["device_kind"], n_dev, dtype)}
    del holder, state
    return row


def _model_name(family: str, c) -> str:
    if family == "gan":
        return "acgan" if c.model.num_classes else "dcgan"
    return family


def _child(args) -> dict:
    """Runs every row for one device count in this process."""
    import jax

    n_dev = common.parse_ints(args.devices, "--devices")[0]
    rows, skipped = [], []
    peak = common.PeakMemory(jax.devices()[:n_dev])
    for family in args.families:
        path = _config_path(family, getattr(args, f"config_{family}"))
        spr = args.steps_per_repeat or ((2 if args.quick else 16) if family == "stylegan2" else 1)
        for res in args.resolution:
            for batch in args.batch:
                for dp in args.dp:
                    where = dict(family=family, dp=dp, devices=n_dev, batch=batch, resolution=res)
                    try:
                        c = make_config(family, path, res, batch, dp, args.quick, args.set)
                        row = measure(family, c, n_dev, dp, warmup=args.warmup, repeats=args.repeats,
                                      steps_per_repeat=spr, dataset_size=args.dp_dataset_size, peak=peak)
                    except (ValueError, NotImplementedError) as e:  # the trainer refuses this setting
                        skipped.append({**where, "reason": f"{type(e).__name__}: {e}"})
                        print(f"skip {where}: {type(e).__name__}: {e}", flush=True)
                        continue
                    rows.append(row)
                    print(f"{family:9s} dp {'on ' if dp else 'off'} dev {n_dev} batch {batch:4d} res {res:4d}: "
                          f"{row['step_s_median'] * 1e3:8.1f} ms/step {row['images_per_s']:8.1f} img/s "
                          f"compile {row['compile_s']:6.1f} s", flush=True)
    return {"rows": rows, "skipped": skipped}


def _child_argv(args, n_dev: int) -> list[str]:
    argv = ["--child", "--devices", str(n_dev), "--families", ",".join(args.families),
            "--dp", ",".join("on" if d else "off" for d in args.dp),
            "--batch", ",".join(map(str, args.batch)), "--resolution", ",".join(map(str, args.resolution)),
            "--warmup", str(args.warmup), "--repeats", str(args.repeats),
            "--dp-dataset-size", str(args.dp_dataset_size)]
    if args.steps_per_repeat:
        argv += ["--steps-per-repeat", str(args.steps_per_repeat)]
    if args.quick:
        argv.append("--quick")
    for f in FAMILIES:
        if getattr(args, f"config_{f}"):
            argv += [f"--config-{f}", getattr(args, f"config_{f}")]
    for s in args.set:
        argv += ["--set", s]
    return argv


COLUMNS = (("family", "family", str), ("dp", "dp", lambda v: "on" if v else "off"), ("dev", "devices", str),
           ("batch", "batch", str), ("res", "resolution", str),
           ("ms/step", "step_s_median", lambda v: f"{v * 1e3:.1f}"),
           ("p10-p90 ms", "step_s_p10", None), ("img/s", "images_per_s", lambda v: f"{v:.1f}"),
           ("s/kimg", "sec_per_kimg", lambda v: f"{v:.1f}"), ("compile s", "compile_s", lambda v: f"{v:.1f}"),
           ("peak mem", "peak_memory_bytes", common.fmt_bytes),
           ("GFLOP/step", "flops_per_step", lambda v: "-" if v is None else f"{v / 1e9:.2f}"),
           ("MFU", "mfu", lambda v: "-" if v is None else f"{100 * v:.1f}%"))


def print_rows(rows: list[dict]) -> None:
    """The sweep as a table (p10-p90 spread in ms)."""
    shown = [{**r, "step_s_p10": f"{r['step_s_p10'] * 1e3:.1f}-{r['step_s_p90'] * 1e3:.1f}"} for r in rows]
    cols = [(h, k, f if f is not None else str) for h, k, f in COLUMNS]
    common.print_table(shown, cols)


def plot(rows: list[dict], path: str) -> str:
    """PNG: img/s vs device count (largest batch) and vs batch (fewest devices), one line per family x DP.

    Drawn with matplotlib (Agg) when installed, else with Pillow; returns which one drew it.
    """
    if not rows:
        raise ValueError("No benchmark rows to plot.")
    res = min(r["resolution"] for r in rows)
    at_res = [r for r in rows if r["resolution"] == res]
    series_keys = sorted({(r["family"], r["dp"]) for r in at_res})
    big, few = max(r["batch"] for r in at_res), min(r["devices"] for r in at_res)
    panels = []
    for title, xkey, pick in ((f"img/s vs devices (batch {big}, {res} px)", "devices", lambda r: r["batch"] == big),
                              (f"img/s vs batch ({few} device(s), {res} px)", "batch", lambda r: r["devices"] == few)):
        series = []
        for fam, dp in series_keys:
            pts = sorted((r[xkey], r["images_per_s"]) for r in at_res if (r["family"], r["dp"]) == (fam, dp) and pick(r))
            if pts:
                series.append((f"{fam} DP {'on' if dp else 'off'}", pts))
        panels.append((title, xkey, series))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_pillow(panels, path)
        return "pillow"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (title, xkey, series) in zip(axes, panels):
        for label, pts in series:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xkey)
        ax.set_ylabel("images / s")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return "matplotlib"


def _plot_pillow(panels, path: str) -> None:
    import math

    import numpy as np
    from PIL import Image, ImageDraw

    from jaxmedgan import images
    from jaxmedgan.evaluators import plots

    w, h = 460, 360
    img = Image.new("RGB", (2 * w, h), "white")
    draw = ImageDraw.Draw(img)
    small = plots._font(11)
    for k, (title, xkey, series) in enumerate(panels):
        x0, left, top, right, bottom = k * w, k * w + 60, 30, k * w + w - 20, h - 40
        xs = [p[0] for _, pts in series for p in pts] or [1]
        ys = [p[1] for _, pts in series for p in pts] or [1]
        lx = (math.log2(min(xs)), math.log2(max(xs)) + 1e-9)
        ly = (math.log10(min(ys)) - 0.05, math.log10(max(ys)) + 0.05)
        xy = lambda x, y: (left + (math.log2(x) - lx[0]) / max(lx[1] - lx[0], 1e-9) * (right - left),
                           bottom - (math.log10(y) - ly[0]) / (ly[1] - ly[0]) * (bottom - top))
        draw.rectangle([left, top, right, bottom], outline="black")
        for x in sorted(set(xs)):
            draw.text((xy(x, 10 ** ly[0])[0] - 4, bottom + 4), str(x), fill="black", font=small)
        for t in np.linspace(ly[0], ly[1], 4):
            draw.text((x0 + 4, xy(min(xs), 10 ** t)[1] - 6), f"{10 ** t:.3g}", fill="black", font=small)
        for i, (label, pts) in enumerate(series):
            colour = plots.COLOURS[i % len(plots.COLOURS)]
            coords = [xy(*p) for p in pts]
            if len(coords) > 1:
                draw.line(coords, fill=colour, width=2)
            for cx, cy in coords:
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
            draw.text((left + 6, top + 4 + 13 * i), label, fill=colour, font=small)
        draw.text((left, 8), title, fill="black", font=small)
        draw.text(((left + right) / 2 - 20, h - 18), xkey + " (log2)", fill="black", font=small)
    images.save_png(path, np.asarray(img))


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_args(p, devices="1,8", warmup=2, repeats=10, out="benchmarks/results/run.json")
    p.add_argument("--families", default=",".join(available_families()),
                   help=f"comma-separated, of {', '.join(available_families())}")
    p.add_argument("--dp", default="off,on", help="off, on or off,on")
    p.add_argument("--batch", default="16,64", help="comma-separated global (expected, under DP) batch sizes")
    p.add_argument("--resolution", default="32,64", help="comma-separated image sizes, px")
    p.add_argument("--steps-per-repeat", type=int, default=0,
                   help="steps per timed call (default 1; StyleGAN2 16 = one lazy-regularisation cycle)")
    p.add_argument("--dp-dataset-size", type=int, default=10000,
                   help="N for the Poisson sampling rate q = batch / N (sets the padded DP batch)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every family, e.g. train.dtype=bfloat16 (repeatable)")
    for f in FAMILIES:
        p.add_argument(f"--config-{f}", default="", help=f"config file for {f} (default {DEFAULT_CONFIGS[f] or 'configs/pggan*.py'})")
    p.add_argument("--plot", default=None, help="PNG path (default: --out with .png)")
    p.add_argument("--quick", action="store_true",
                   help="tiny models and shapes, 1 warm-up, 2 repeats, devices 1,2, batch 8, 16 px; StyleGAN2 without "
                        "its regularisation phases")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
    if args.quick and not args.child:
        for flag, value in (("--devices", "1,2"), ("--batch", "8"), ("--resolution", "16"), ("--warmup", 1),
                            ("--repeats", 2)):
            if flag not in given:
                setattr(args, flag[2:].replace("-", "_"), value)
    args.families = [f for f in args.families.split(",") if f]
    unknown = set(args.families) - set(available_families())
    if unknown:
        p.error(f"--families {sorted(unknown)}: this checkout has {available_families()}")
    modes = {"off": False, "on": True}
    if not args.dp or set(args.dp.split(",")) - set(modes):
        p.error(f"--dp expects off, on or off,on; got {args.dp!r}")
    args.dp = [modes[m] for m in args.dp.split(",")]
    # Ascending, so a running-maximum peak (device memory stats) grows with the rows of a family.
    args.batch = sorted(common.parse_ints(args.batch, "--batch"))
    args.resolution = sorted(common.parse_ints(args.resolution, "--resolution"))
    return args


def main(argv=None) -> dict:
    """Runs the sweep; returns {"meta", "rows", "skipped"} as written to --out."""
    args = _parse(argv)
    if args.child:
        common.force_host_devices(common.parse_ints(args.devices, "--devices")[0])
        result = _child(args)
        common.write_json(args.out, result)
        return result
    t0 = time.perf_counter()
    rows, skipped = [], []
    for n_dev in common.parse_ints(args.devices, "--devices"):
        part = common.run_child("benchmarks.run", _child_argv(args, n_dev), n_dev)
        rows += part["rows"]
        skipped += part["skipped"]
    print()
    print_rows(rows)
    for s in skipped:
        print(f"skipped: {s}")
    meta = {"argv": list(argv if argv is not None else sys.argv[1:]), "quick": args.quick,
            "wall_s": time.perf_counter() - t0, "fields": list(FIELDS),
            "note": "CPU devices are simulated and share the host's cores; compare ratios from one run."}
    if rows:
        meta.update({k: rows[0][k] for k in ("platform", "device_kind")})
    result = {"meta": meta, "rows": rows, "skipped": skipped}
    if args.out:
        common.write_json(args.out, result)
        png = args.plot or os.path.splitext(args.out)[0] + ".png"
        if rows:
            meta["plot"] = png
            meta["plot_backend"] = plot(rows, png)
            common.write_json(args.out, result)
            print(f"wrote {args.out} and {png}")
    return result


if __name__ == "__main__":
    main()
