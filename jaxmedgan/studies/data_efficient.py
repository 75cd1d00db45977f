"""Data-efficient liver GAN study (issue #18): which settings give class-faithful images on CPU?

    python -m jaxmedgan.studies.data_efficient --classifier runs/classifier_liver \
        --workdir runs/data_efficient --out docs/results/data_efficient_liver.json

Trains configs/acgan_liver.py once per arm (the overrides below), then scores it with
`jaxmedgan evaluate --metrics fid,pr,diversity,agreement --per-class` against the held-out
phantoms, the liver classifier's features and labels: per class, the share of generated images
the frozen classifier labels as the requested class (`agreement`, bootstrap 95 % interval) beside
its recall on real images of that class (the ceiling), intra-class FID, recall, diversity ratio;
FID-domain overall; training minutes. Finished arms are reused (rerun to resume).

Selection data: the GANs train on the 182 phantom training lesions and are scored on the separate
held-out phantom split (90 lesions, its own seed). The downstream study's test folds are folds of
the 182 training lesions and their labels are never read here; no downstream result is looked at.
"""
from __future__ import annotations

import os

from jaxmedgan.studies import diversity

ACGAN = diversity.ACGAN
# Every arm states all four options, from the classic ACGAN (aux head, raw images to D, no EMA,
# transposed convs), so an arm stays what was measured when the config file's defaults move.
CLASSIC = {"model.cond": "aux", "d_augment.kind": "none", "ema.enabled": "False", "model.g_upsample": "transpose"}


def _arm(config: str = ACGAN, **changes: str) -> tuple[str, list[str]]:
    """(config path, --config overrides): CLASSIC with `changes` (keys with '__' for '.')."""
    values = {**CLASSIC, **{k.replace("__", "."): v for k, v in changes.items()}}
    return config, [f"--config.{k}={v}" for k, v in values.items()]


DATA_EFFICIENT = {"d_augment__kind": "diffaug", "ema__enabled": "True", "model__g_upsample": "nearest"}
ARMS = {
    "base": _arm(),
    "diffaug": _arm(d_augment__kind="diffaug"),
    "diffaug_ema": _arm(d_augment__kind="diffaug", ema__enabled="True"),
    "diffaug_ema_resize": _arm(**DATA_EFFICIENT),
    "diffaug_ema_fir": _arm(**{**DATA_EFFICIENT, "model__g_upsample": "fir"}),
    "diffaug_ema_resize_hinge": _arm(**DATA_EFFICIENT, loss__kind="hinge"),
    "diffaug_ema_resize_r1": _arm(**DATA_EFFICIENT, loss__r1_gamma="0.1"),
    "ada_ema_resize": _arm(**{**DATA_EFFICIENT, "d_augment__kind": "ada"}, ada__kimg="20"),
    "diffaug_ema_resize_2k": _arm(**DATA_EFFICIENT, train__steps="2000"),
    "diffaug_ema_resize_wide": _arm(**DATA_EFFICIENT, model__g_features="32", model__d_features="32"),
    "proj_diffaug_ema_resize": _arm(**DATA_EFFICIENT, model__cond="projection"),
    "projaux_diffaug_ema_resize": _arm(**DATA_EFFICIENT, model__cond="proj_aux"),
    "projaux_ada_ema_resize": _arm(**{**DATA_EFFICIENT, "d_augment__kind": "ada"}, ada__kimg="20",
                                   model__cond="proj_aux"),
    "diffaug_ema_resize_ms": _arm(**DATA_EFFICIENT, loss__mode_seeking="0.1"),
    "per_class_diffaug_ema_resize": (diversity.DCGAN, [
        "--config.d_augment.kind=diffaug", "--config.ema.enabled=True", "--config.model.g_upsample=nearest",
        "--config.train.per_class=True", "--config.model.mbstd_group_size=4"]),
    "new_default": (ACGAN, []),  # the config file as it stands (projaux_diffaug_ema_resize since #18)
}
METRICS = "fid,pr,diversity,agreement"


def run(args) -> list[dict]:
    rows = []
    for arm in args.arms:
        config, extra = ARMS[arm]
        wd = os.path.join(args.workdir, arm)
        train_s = diversity._train(config, wd, extra, args)
        report = diversity._evaluate(wd, args, METRICS)
        m = report.get("metrics", {})
        rows.append({"arm": arm, "config": os.path.relpath(config, diversity.REPO), "overrides": extra,
                     "train_s": train_s, "checkpoint_step": report.get("checkpoint_step"), "metrics": m,
                     "per_class": report.get("per_class", {})})
        print(f"{arm:>26}: agreement {_num(m.get('class_agreement')):.3f} (min {_num(m.get('class_agreement_min')):.3f}), "
              f"FID-domain {_num(m.get('fid_domain')):.2f}, diversity {_num(m.get('diversity_ratio')):.2f} "
              f"({train_s / 60:.1f} min)", flush=True)
    return rows


_num = diversity._num


def markdown(rows: list[dict], command: str) -> str:
    """One row per arm: per-class agreement [CI] (real-image recall), FID-domain, recall, diversity, minutes."""
    lines = [f"Produced by `{command}`.", "",
             "| arm | classifier agrees, per class [95% CI] (on reals) | min | FID-domain | intra-FID | recall | "
             "diversity ratio | train min |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, pc = r["metrics"], r["per_class"]
        agree = "; ".join(f"{name} {_num(v.get('agreement')):.2f} [{_num((v.get('agreement_ci') or [None])[0]):.2f}, "
                          f"{_num((v.get('agreement_ci') or [None, None])[1]):.2f}] ({_num(v.get('agreement_real')):.2f})"
                          for name, v in pc.items())
        lines.append(f"| {r['arm']} | {agree} | {_num(m.get('class_agreement_min')):.2f} | "
                     f"{_num(m.get('fid_domain')):.2f} | {_num(m.get('intra_fid_domain')):.2f} | "
                     f"{_num(m.get('recall_domain')):.2f} | {_num(m.get('diversity_ratio')):.2f} | "
                     f"{r['train_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    diversity.study_main(argv, module="jaxmedgan.studies.data_efficient", description=__doc__.split("\n")[0],
                         arms=ARMS, run=run, markdown=markdown)


if __name__ == "__main__":
    main()
