"""Privacy-utility curve: one GAN config trained at several epsilons, each scored for quality and use.

  jaxmedgan privacy curve --config configs/acgan_liver_dp.py --workdir runs/curve_liver \\
      --epsilons 1,3,10,inf --classifier runs/classifier_liver \\
      [--downstream-config configs/downstream_liver.py] [--num 256] [--config.train.steps=300 ...]
      [--mechanisms dpsgd,band_mf --bands 4]

For each epsilon a run DIR/eps_<epsilon> is trained with `privacy.enabled=True,
privacy.target_epsilon=epsilon` (sigma is calibrated by `privacy.plan.prepare` so that
`train.steps` D steps spend exactly epsilon at the config's delta); `inf` is the same config with
privacy off. Every other field, and every `--config.x.y=...` override, is shared by all runs.
`--mechanisms dpsgd,band_mf` trains each finite epsilon once per noise mechanism (DP-SGD's i.i.d.
noise in DIR/eps_<epsilon>, banded matrix-factorization noise with `--bands` b in
DIR/band_mf<b>_eps_<epsilon>; same steps, expected batch and target epsilon, sigma calibrated by
each mechanism's accountant); the no-DP run is shared. Each run is then scored by
  * FID-domain and KID-domain (`studies.quality_cli.evaluate`, metrics `fid,kid`): N samples
    against the config's held-out real images, embedded by the domain classifier of
    `--classifier` (KID with its standard deviation over 100 subsets of half the samples);
  * the downstream study (`studies.downstream.run`, default experiment `synthetic`: a classifier
    trained on the run's synthetic images only, tested on real images with k-fold CV; the study
    needs its `real` baseline, which is reported once as the reference line). Leak-free: its real
    images are the config's held-out 'test' split (`downstream.real_split`), which no run's GAN
    saw (they train on 'train'); the report says so.
Outputs: DIR/curve.json, DIR/curve.md (table) and DIR/curve.png (epsilon vs FID-domain; epsilon vs
downstream accuracy / macro AUC; log-x with inf drawn at the right).

Resumable: a run that finished is reused (DIR/eps_*/curve_run.json records the fingerprint of the
config it was trained with, written before training starts, and its final checkpoint step), an
interrupted one resumes from its last checkpoint (`trainers.common.fit`), a changed config under
the same DIR is refused, and a run's scores are reused while the checkpoint and the evaluation
settings are unchanged (DIR/eps_*/curve_point.json).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import sys
import time
from typing import Any, Sequence

import ml_collections
import numpy as np

from jaxmedgan import atomic_io, checkpointing, trainers
from jaxmedgan.evaluators import features, plots
from jaxmedgan.privacy import plan
from jaxmedgan.studies import downstream, quality_cli

log = logging.getLogger(__name__)

RUN_FILE = "curve_run.json"
POINT_FILE = "curve_point.json"
DOWNSTREAM_EXPERIMENTS = ("synthetic", "real+synthetic")
MECHANISMS = ("dpsgd", "band_mf")


def parse_epsilons(text: str) -> list[float]:
    """'1,3,10,inf' -> [1.0, 3.0, 10.0, inf], sorted; ValueError naming the bad entry otherwise."""
    if not text or not text.strip():
        raise ValueError("--epsilons is empty; expected a comma-separated list such as 1,3,10,inf.")
    values = []
    for part in text.split(","):
        item = part.strip()
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--epsilons entry {item!r} is not a number (use 'inf' for no privacy); "
                             f"got --epsilons {text!r}.") from None
        if math.isnan(value) or value <= 0:
            raise ValueError(f"--epsilons entry {item!r} must be > 0 (or inf); got --epsilons {text!r}.")
        if value in values:
            raise ValueError(f"--epsilons lists {item!r} twice; got --epsilons {text!r}.")
        values.append(value)
    return sorted(values)


def parse_mechanisms(text: str) -> list[str]:
    """'dpsgd,band_mf' -> ['dpsgd', 'band_mf']; ValueError naming the bad entry otherwise."""
    names = [part.strip() for part in (text or "").split(",") if part.strip()]
    bad = [n for n in names if n not in MECHANISMS]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f"--mechanisms must list distinct names from {MECHANISMS}; got {text!r}.")
    return names


def run_name(epsilon: float, mechanism: str = "dpsgd", bands: int = 1) -> str:
    """Directory name of one run: 'eps_1', 'eps_0.5', 'eps_inf' (DP-SGD or no DP), 'band_mf4_eps_1'."""
    if math.isinf(epsilon):
        return "eps_inf"
    return f"eps_{epsilon:g}" if mechanism == "dpsgd" else f"{mechanism}{bands}_eps_{epsilon:g}"


def check_config(config: ml_collections.ConfigDict, source: str = "--config") -> None:
    """Refuses configs the curve cannot vary (no privacy section) or read (no trainer)."""
    if config.get("privacy") is None or "target_epsilon" not in config.privacy:
        raise ValueError(f"{source} has no privacy section with target_epsilon (config.privacy); the curve "
                         "needs a GAN config with DP support, e.g. configs/acgan_liver_dp.py.")
    name = config.get("trainer")
    if name is None or name not in trainers.TRAINERS or trainers.family(name).kind != "gan":
        raise ValueError(f"{source} has trainer={name!r}; the curve trains a GAN config.")


def run_config(config: ml_collections.ConfigDict, epsilon: float, mechanism: str = "dpsgd",
               bands: int = 1) -> ml_collections.ConfigDict:
    """A copy of `config` with DP at `epsilon` (target_epsilon; sigma calibrated at start) under
    `mechanism` (band_mf: `bands` bands), or off (inf)."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.privacy.enabled = not math.isinf(epsilon)
        c.privacy.target_epsilon = 0.0 if math.isinf(epsilon) else float(epsilon)
        if mechanism == "band_mf":  # DP-SGD and no-DP runs keep the config as given (and their fingerprints)
            c.privacy.mechanism, c.privacy.bands = mechanism, int(bands)
        c.train.quiet = True  # the curve draws its own progress bar over runs
    return c


def _fingerprint(obj: Any) -> str:
    text = obj.to_json_best_effort(sort_keys=True) if hasattr(obj, "to_json_best_effort") else \
        json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes, or reuses) one run; returns {'step', 'noise_multiplier', 'epsilon', 'delta',
    'reused', 'seconds'} read back from the run's config.json and last checkpoint."""
    fingerprint = _fingerprint(config)
    marker_path = os.path.join(workdir, RUN_FILE)
    marker = atomic_io.read_json(marker_path)
    step = checkpointing.latest_step(workdir) if os.path.isdir(workdir) else None
    if marker is not None and marker.get("fingerprint") == fingerprint and step == marker.get("step"):
        return {**marker, "reused": True}
    if marker is not None and marker.get("fingerprint") != fingerprint:  # also an unfinished run's claim
        raise ValueError(f"{workdir} was trained by the curve with another config (fingerprint "
                         f"{marker.get('fingerprint')} != {fingerprint}): the --config or its overrides changed. "
                         "Use a new --workdir, or delete that run to retrain it.")
    os.makedirs(workdir, exist_ok=True)  # claim the run for this config before training (see above)
    atomic_io.write_text(marker_path, json.dumps({"fingerprint": fingerprint, "step": None}, indent=2))
    t = time.perf_counter()
    trainers.get(config.trainer).train_and_evaluate(copy.deepcopy(config), workdir)
    seconds = time.perf_counter() - t
    step = checkpointing.latest_step(workdir)
    if step is None:
        raise RuntimeError(f"Training {workdir} wrote no checkpoint.")
    trained = checkpointing.read_config(workdir)  # privacy.{noise_multiplier, delta} as filled by plan.prepare
    guarantee = plan.run_guarantee(trained, int(step))  # None without DP
    private = guarantee is not None
    marker = {"fingerprint": fingerprint, "step": int(step), "seconds": seconds,
              "noise_multiplier": float(trained.privacy.noise_multiplier) if private else None,
              "delta": float(trained.privacy.delta) if private else None,
              "epsilon": guarantee[0] if private else None, "delta_prime": guarantee[1] if private else None}
    atomic_io.write_text(marker_path, json.dumps(marker, indent=2))
    return {**marker, "reused": False}


def score_run(workdir: str, *, extractor: Any, num: int, seed: int,
              downstream_config: ml_collections.ConfigDict | None, step: int) -> dict:
    """FID-domain (held-out reals) and downstream metrics of one run, reused from curve_point.json when
    the checkpoint step and the evaluation settings are unchanged."""
    kid_subset = max(2, num // 2)  # subsets smaller than the sets, so KID's std over subsets is informative
    settings = {"step": int(step), "num": int(num), "seed": int(seed), "features": extractor.description,
                "kid_subset_size": kid_subset,
                "downstream": None if downstream_config is None else _fingerprint(downstream_config)}
    path = os.path.join(workdir, POINT_FILE)
    cached = atomic_io.read_json(path)
    if cached is not None and cached.get("settings") == settings:
        return cached
    report = quality_cli.evaluate(workdir, metrics="fid,kid", num=num, extractor=extractor, reals="test", seed=seed,
                                  kid_subset_size=kid_subset)
    run, m = report["runs"][extractor.kind], report["metrics"]
    point = {"settings": settings, "fid_domain": float(m["fid_domain"]), "kid_domain": float(m["kid_domain"]),
             "kid_domain_std": float(m["kid_std_domain"]), "num_fake": run["num_fake"], "num_real": run["num_real"],
             "downstream": None}
    if downstream_config is not None:
        out_dir = os.path.join(workdir, "downstream")
        rep = downstream.run(downstream_config, workdir, out_dir)
        name = [e for e in downstream_config.downstream.experiments if e != "real"][0]
        m, base = rep["experiments"][name]["metrics"], rep["experiments"]["real"]["metrics"]
        point["downstream"] = {"experiment": name, "accuracy": float(m["accuracy"]),
                               "macro_auc": float(m["macro_auc"]), "ci95": rep["experiments"][name]["ci95"],
                               "real_accuracy": float(base["accuracy"]), "real_macro_auc": float(base["macro_auc"]),
                               "report": os.path.join(out_dir, "report.md")}
    atomic_io.write_text(path, json.dumps(point, indent=2, allow_nan=True))
    return point


def downstream_for(config: ml_collections.ConfigDict, experiment: str) -> ml_collections.ConfigDict:
    """The downstream config restricted to 'real' (the baseline the study needs) and `experiment`."""
    if config.get("downstream") is None:
        raise ValueError("--downstream-config has no 'downstream' section; use configs/downstream_*.py.")
    if experiment not in DOWNSTREAM_EXPERIMENTS:
        raise ValueError(f"--downstream-experiment must be one of {DOWNSTREAM_EXPERIMENTS}; got {experiment!r}.")
    c = copy.deepcopy(config)
    with c.unlocked():
        c.downstream.experiments = ("real", experiment)
        # Leak-free: every run's GAN trains on the 'train' split, so the study's real images (CV folds,
        # test folds included) come from the held-out 'test' split, which no GAN saw.
        c.downstream.real_split = "test"
        c.train.quiet = True
    return c


def plan_runs(epsilons: Sequence[float], mechanisms: Sequence[str]) -> list[tuple[float, str]]:
    """(epsilon, mechanism) per run, by epsilon then mechanism; inf (no DP) once, as 'none'."""
    return [(eps, "none") if math.isinf(eps) else (eps, m) for eps in sorted(epsilons)
            for m in (mechanisms[:1] if math.isinf(eps) else mechanisms)]


def curve(config: ml_collections.ConfigDict, workdir: str, epsilons: Sequence[float], *, classifier: str,
          downstream_config: ml_collections.ConfigDict | None = None, num: int = 256, seed: int = 0,
          quiet: bool = False, mechanisms: Sequence[str] = ("dpsgd",), bands: int = 4) -> dict:
    """Trains and scores one run per (epsilon, mechanism) under `workdir`; writes curve.json/.md/.png;
    returns the report."""
    from tqdm import tqdm

    check_config(config)
    if not os.path.isfile(os.path.join(classifier, "config.json")):
        raise FileNotFoundError(f"--classifier {classifier!r} is not a classifier workdir (no config.json); train "
                                "one with `jaxmedgan train --config configs/classifier_liver.py --workdir DIR`.")
    if num < 2:
        raise ValueError(f"--num must be >= 2 (FID needs covariances), got {num}.")
    if downstream_config is not None and not config.model.get("num_classes", 0):
        raise ValueError("--downstream-config needs a class-conditional GAN (config.model.num_classes > 0) to draw "
                         "labelled synthetic images; use an ACGAN config or leave out --downstream-config.")
    extractor = features.domain(classifier)
    os.makedirs(workdir, exist_ok=True)
    rows = []
    bar = tqdm(plan_runs(epsilons, mechanisms), desc="privacy curve", unit="run", dynamic_ncols=True, disable=quiet)
    try:
        for eps, mechanism in bar:
            name = run_name(eps, mechanism, bands)
            bar.set_postfix_str(name)
            run_dir = os.path.join(workdir, name)
            trained = train_run(run_config(config, eps, mechanism, bands), run_dir)
            point = score_run(run_dir, extractor=extractor, num=num, seed=seed,
                              downstream_config=downstream_config, step=trained["step"])
            rows.append({"target_epsilon": None if math.isinf(eps) else eps, "run": name, "mechanism": mechanism,
                         "bands": bands if mechanism == "band_mf" else None,
                         "noise_multiplier": trained["noise_multiplier"], "epsilon_spent": trained["epsilon"],
                         "delta": trained["delta"], "delta_prime": trained.get("delta_prime"),
                         "steps": trained["step"], "reused": trained["reused"],
                         "train_seconds": trained["seconds"], "fid_domain": point["fid_domain"],
                         "kid_domain": point.get("kid_domain"), "kid_domain_std": point.get("kid_domain_std"),
                         "num_fake": point["num_fake"], "num_real": point["num_real"],
                         "downstream": point["downstream"]})
    finally:
        bar.close()
    report = {"config": {"trainer": config.trainer, "train_steps": int(config.train.steps),
                         "batch_size": int(config.train.batch_size), "data": config.data.get("source"),
                         "image_size": config.data.get("image_size"), "accountant": config.privacy.get("accountant"),
                         "mechanisms": list(mechanisms), "bands": int(bands) if "band_mf" in mechanisms else None},
              "classifier": extractor.description, "num": num, "seed": seed,
              "downstream": None if downstream_config is None else {
                  "experiment": downstream_config.downstream.experiments[1],
                  "num_folds": int(downstream_config.downstream.num_folds),
                  "seeds": list(downstream_config.downstream.seeds),
                  "steps": int(downstream_config.train.steps),
                  "leak_free": ("yes: the study's real images are the held-out test split; every run's GAN trained "
                                "on the train split only")},
              "rows": rows}
    atomic_io.write_text(os.path.join(workdir, "curve.json"), json.dumps(report, indent=2, allow_nan=True))
    atomic_io.write_text(os.path.join(workdir, "curve.md"), render_markdown(report))
    plots.save(os.path.join(workdir, "curve.png"), curve_figure(rows))
    return report


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def mechanism_label(row: dict) -> str:
    """'DP-SGD', 'band MF (b=4)' or 'none' for a curve row (rows without the field are DP-SGD)."""
    mechanism = row.get("mechanism") or ("none" if row.get("target_epsilon") is None else "dpsgd")
    return {"dpsgd": "DP-SGD", "none": "none"}.get(mechanism, f"band MF (b={row.get('bands')})")


def render_markdown(report: dict) -> str:
    """The table: epsilon, sigma, steps, spent epsilon, FID-domain, downstream accuracy and macro AUC."""
    rows, ds = report["rows"], report["downstream"]
    c = report["config"]
    lines = [f"# Privacy-utility curve ({c['trainer']}, {c['train_steps']} steps of batch {c['batch_size']}, "
             f"data {c['data']} at {c.get('image_size')} px)", "",
             f"FID-domain: {rows[0]['num_fake'] if rows else report['num']} samples vs "
             f"{rows[0]['num_real'] if rows else '?'} held-out real images, features of the "
             f"{report['classifier']}."]
    if ds is not None:
        lines.append(f"Downstream: experiment '{ds['experiment']}' (classifier trained on this run's synthetic "
                     f"images{' only' if ds['experiment'] == 'synthetic' else ' plus real'}, tested on real), "
                     f"{ds['num_folds']}-fold CV x seeds {ds['seeds']}, {ds['steps']} classifier steps; "
                     "[95 % bootstrap interval]. Leak-free: " + ds.get("leak_free", "not recorded") + ".")
    lines += ["", "| ε (target) | noise | σ | steps | ε spent (δ′) | FID-domain | KID-domain (± std) | accuracy | "
              "macro AUC |", "|---:|:---|---:|---:|---:|---:|---:|---:|---:|"]
    def with_ci(d: dict, key: str) -> str:
        lo, hi = (d.get("ci95") or {}).get(key) or (None, None)
        return _fmt(d.get(key)) + ("" if lo is None or hi is None else f" [{lo:.3g}, {hi:.3g}]")

    for r in rows:
        d = r["downstream"] or {}
        d_prime = r.get("delta_prime") or r["delta"]  # delta' (padding truncation included)
        spent = "–" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3g} ({d_prime:.2g})"
        kid = "–" if r.get("kid_domain") is None else f"{r['kid_domain']:.3g} ± {r['kid_domain_std']:.2g}"
        lines.append(f"| {'∞' if r['target_epsilon'] is None else format(r['target_epsilon'], 'g')} | "
                     f"{mechanism_label(r)} | "
                     f"{_fmt(r['noise_multiplier'], '.4g') if r['noise_multiplier'] is not None else '0 (no DP)'} | "
                     f"{r['steps']} | {spent} | {_fmt(r['fid_domain'], '.4g')} | {kid} | {with_ci(d, 'accuracy')} | "
                     f"{with_ci(d, 'macro_auc')} |")
    base = [r["downstream"] for r in rows if r["downstream"]]
    if base:
        lines += ["", f"Real-data baseline of the same study (experiment 'real'): accuracy "
                      f"{_fmt(base[0]['real_accuracy'])}, macro AUC {_fmt(base[0]['real_macro_auc'])}."]
    lines += ["", f"σ is calibrated per run so that its steps spend the target ε ({c.get('accountant')} accountant, "
                  "Poisson sampling; band_mf: cyclic Poisson over b groups, charged as DP-SGD with T/b steps at "
                  "rate b q); only D's updates on real images are privatised (G is private by "
                  "post-processing). One GAN per row (one training seed).", ""]
    return "\n".join(lines)


def curve_figure(rows: Sequence[dict], width: int = 900, height: int = 420) -> np.ndarray:
    """uint8 [height, width, 3]: epsilon (log x, inf at the right) vs FID-domain; vs accuracy / macro AUC.

    Text is ASCII ('epsilon', 'inf'): Pillow's default font has no Greek or infinity glyph.
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = plots._font(14), plots._font(12)
    finite = [r["target_epsilon"] for r in rows if r["target_epsilon"] is not None]
    lo, hi = (math.log10(min(finite)), math.log10(max(finite))) if finite else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    has_inf = any(r["target_epsilon"] is None for r in rows)
    panel_w = width // 2

    def panel(x0: int, title: str, ylabel: str, series: list[tuple[str, list, tuple]], ylim=None,
              hline: tuple[str, float] | None = None) -> None:
        left, top, right, bottom = x0 + 90, 60, x0 + panel_w - 20, height - 60
        span_right = right - (50 if has_inf else 10)  # finite epsilons; inf sits in the gap at the right

        def fx(eps):
            if eps is None:
                return right - 20
            return left + 10 + (math.log10(eps) - lo) / (hi - lo) * (span_right - left - 20)

        values = [v for _, ys, _ in series for v in ys if v is not None and math.isfinite(v)]
        if hline is not None:
            values.append(hline[1])
        y0, y1 = ylim if ylim is not None else ((min(values), max(values)) if values else (0.0, 1.0))
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5
        pad = 0.05 * (y1 - y0)
        y0, y1 = (y0, y1) if ylim is not None else (y0 - pad, y1 + pad)

        def fy(v):
            return bottom - (v - y0) / (y1 - y0) * (bottom - top)

        draw.rectangle([left, top, right, bottom], outline="black")
        for t in np.linspace(y0, y1, 5):
            draw.line([(left, fy(t)), (right, fy(t))], fill=(235, 235, 235))
            draw.text((left - 62, fy(t) - 7), f"{t:.3g}", fill="black", font=small)
        for r in rows:
            e = r["target_epsilon"]
            draw.text((fx(e) - 8, bottom + 6), "inf" if e is None else f"{e:g}", fill="black", font=small)
        if has_inf and finite:  # axis break between the finite epsilons and inf
            xb = span_right + 10
            draw.line([(xb - 4, bottom + 4), (xb + 4, bottom - 4)], fill="black")
        if hline is not None:
            for xs in range(left, right, 10):
                draw.line([(xs, fy(hline[1])), (xs + 5, fy(hline[1]))], fill=(120, 120, 120))
        for i, (name, ys, colour) in enumerate(series):
            ok = [(r["target_epsilon"], v) for r, v in zip(rows, ys) if v is not None and math.isfinite(v)]
            pts = [(fx(e), fy(v)) for e, v in ok]
            joined = [(fx(e), fy(v)) for e, v in ok if e is not None]  # inf stands apart, past the axis break
            if len(joined) > 1:
                draw.line(joined, fill=colour, width=2)
            for x, y in pts:
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
            lx = left + 110 * i  # legend: one row between the title and the frame, clear of the data
            draw.rectangle([lx, 38, lx + 12, 50], fill=colour)
            draw.text((lx + 18, 36), name, fill="black", font=small)
        if hline is not None:
            draw.text((left + 110 * len(series), 36), f"- - {hline[0]}", fill=(90, 90, 90), font=small)
        draw.text((left, 12), title, fill="black", font=font)
        draw.text((left + (right - left) / 2 - 80, height - 30), "epsilon (log scale; inf = no DP)", fill="black",
                  font=small)
        label = Image.new("RGB", (bottom - top, 16), "white")
        ImageDraw.Draw(label).text(((bottom - top) / 2 - 40, 0), ylabel, fill="black", font=small)
        img.paste(label.rotate(90, expand=True), (x0 + 2, top))

    labels = list(dict.fromkeys(mechanism_label(r) for r in rows if r["target_epsilon"] is not None)) or ["none"]

    def per_mechanism(values: list) -> list[tuple[str, list]]:
        """One series per mechanism; the no-DP point (inf) belongs to every series."""
        return [(label, [v if mechanism_label(r) in (label, "none") else None for r, v in zip(rows, values)])
                for label in labels]

    several = len(labels) > 1
    panel(0, "epsilon vs FID-domain (lower is better)", "FID-domain",
          [(label if several else "FID-domain", ys, plots.COLOURS[i % len(plots.COLOURS)])
           for i, (label, ys) in enumerate(per_mechanism([r["fid_domain"] for r in rows]))])
    ds = [r["downstream"] or {} for r in rows]
    base = next((d["real_accuracy"] for d in ds if d.get("real_accuracy") is not None), None)
    series = [(f"accuracy, {label}" if several else "accuracy", ys) for label, ys in
              per_mechanism([d.get("accuracy") for d in ds])]
    if not several:
        series.append(("macro AUC", [d.get("macro_auc") for d in ds]))
    panel(panel_w, "epsilon vs downstream (tested on real images)", "accuracy" if several else "accuracy / macro AUC",
          [(name, ys, plots.COLOURS[(i + 1) % len(plots.COLOURS)]) for i, (name, ys) in enumerate(series)],
          ylim=(0.0, 1.0), hline=None if base is None else ("real-data accuracy", base))
    return np.asarray(img)


USAGE = ("usage: jaxmedgan privacy curve --config CONFIG.py --workdir DIR --epsilons 1,3,10,inf "
         "--classifier CLASSIFIER_WORKDIR [--downstream-config configs/downstream_liver.py] "
         "[--downstream-experiment synthetic|real+synthetic] [--num N] [--seed S] "
         "[--mechanisms dpsgd,band_mf] [--bands B] "
         "[--config.x.y=... (every run)] [--downstream_config.x.y=...]")


def curve_command(argv: Sequence[str]) -> int:
    """`jaxmedgan privacy curve ...` (argv: the options). 0 ok, 2 usage error, 1 bad input."""
    from absl import flags
    from ml_collections import config_flags

    args = [a.replace("--downstream-config", "--downstream_config")
            .replace("--downstream-experiment", "--downstream_experiment") for a in argv]
    if any(a in ("-h", "--help") for a in args):
        print(USAGE + "\n\n" + (__doc__ or ""))
        return 0
    prog = "jaxmedgan privacy curve"
    sys_argv = [prog] + args
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "GAN config with a privacy section.", flag_values=fv,
                                    lock_config=True, sys_argv=sys_argv)
    config_flags.DEFINE_config_file("downstream_config", None, "Downstream study config (configs/downstream_*.py).",
                                    flag_values=fv, lock_config=True, sys_argv=sys_argv)
    flags.DEFINE_string("workdir", None, "Directory of the curve: eps_*/ runs and curve.json/md/png.", flag_values=fv)
    flags.DEFINE_string("epsilons", "1,3,10,inf", "Comma-separated target epsilons; inf = no DP.", flag_values=fv)
    flags.DEFINE_string("classifier", None, "Domain classifier workdir (features of FID-domain).", flag_values=fv)
    flags.DEFINE_string("downstream_experiment", "synthetic", "synthetic | real+synthetic.", flag_values=fv)
    flags.DEFINE_integer("num", 256, "Samples per run for FID-domain (vs as many held-out reals).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
    flags.DEFINE_boolean("quiet", False, "Hide the progress bar.", flag_values=fv)
    flags.DEFINE_string("mechanisms", "dpsgd", "Comma-separated noise mechanisms per epsilon: dpsgd, band_mf.",
                        flag_values=fv)
    flags.DEFINE_integer("bands", 4, "band_mf's number of bands (needs bands x batch <= dataset size).",
                         flag_values=fv)

    def usage_error(message: str) -> int:
        print(f"{prog}: error: {message}\n{USAGE}", file=sys.stderr)
        return 2

    try:
        fv(sys_argv)
        config, d_config = fv.config, fv.downstream_config
        for c in (config, d_config):
            if c is not None:
                c.keys()  # a config that failed to load raises only when first used
    except (flags.UnrecognizedFlagError, flags.IllegalFlagValueError) as e:
        return usage_error(str(e))
    except Exception as e:  # config file missing or failing to load, unknown key in an override
        return usage_error(f"could not load a config: {e}")
    if config is None or fv.workdir is None or fv.classifier is None:
        return usage_error("--config, --workdir and --classifier are required.")
    try:
        epsilons = parse_epsilons(fv.epsilons)
        mechanisms = parse_mechanisms(fv.mechanisms)
        if fv.bands < 1:
            raise ValueError(f"--bands must be >= 1, got {fv.bands}.")
        check_config(config, "--config")
        if d_config is not None:
            d_config = downstream_for(d_config, fv.downstream_experiment)
    except ValueError as e:
        return usage_error(str(e))
    if not os.path.isfile(os.path.join(fv.classifier, "config.json")):
        return usage_error(f"--classifier {fv.classifier!r} is not a classifier workdir (no config.json); train "
                           "one with `jaxmedgan train --config configs/classifier_liver.py --workdir DIR`.")
    try:
        report = curve(config, fv.workdir, epsilons, classifier=fv.classifier, downstream_config=d_config,
                       num=fv.num, seed=fv.seed, quiet=fv.quiet, mechanisms=mechanisms, bands=fv.bands)
    except (FileNotFoundError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    print(render_markdown(report))
    for r in report["rows"]:
        if r["reused"]:
            print(f"(reused finished run {r['run']})")
    print(f"wrote {os.path.join(fv.workdir, 'curve.json')}, curve.md, curve.png")
    return 0
