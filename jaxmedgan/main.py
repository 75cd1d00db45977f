"""jaxmedgan command line: parse, log devices, hand off. Run `jaxmedgan --help`."""
from __future__ import annotations

import argparse
import ast
import difflib
import os
import sys

# Light at import (`jaxmedgan --help` stays instant): each command imports its own heavy stack (JAX,
# TFDS) when it runs.
from jaxmedgan import config_validation, workdir_lock

USAGE = """usage: jaxmedgan <command> [options]

commands:
  train     train a model:  jaxmedgan train --config configs/acgan_liver.py --workdir runs/acgan
            [--config.section.key=value ...]  [--config.train.per_class=True: one GAN per class]
  sample    draw images from a trained workdir:  jaxmedgan sample --workdir W --num N --out DIR [--class NAME|INDEX]
            labelled by latent class optimisation:  jaxmedgan sample --workdir W --labels "cardiomegaly,effusion"
            --num N --out DIR [--classifier CLASSIFIER_WORKDIR] [--lco-steps S]
  dataset   build a TFDS dataset:  jaxmedgan dataset --source phantom-liver|phantom-spine|phantom-chest|
            image-folder|npz|stylegan-folder|chexpert|chestxray14 --out DIR [--image-dir ROOT]
            [--image-size N --resize area|pad|crop] [--window C W] [--class-window NAME=C/W] [--classes a,b]
            then train on it:  jaxmedgan train --config C --workdir W --config.data.dataset_dir=PRINTED_DIR
  privacy   DP accounting:  jaxmedgan privacy epsilon --sampling-rate Q --noise-multiplier S --steps N --delta D
            jaxmedgan privacy calibrate --target-epsilon E --delta D --sampling-rate Q --steps N
            jaxmedgan privacy audit --workdir W;  jaxmedgan privacy curve --config C --workdir DIR --epsilons 1,3,10,inf
  export    shareable synthetic dataset:  jaxmedgan export --workdir W --num N --out DIR [--class NAME|INDEX]
            [--format png8|png16|dicom]  (png16 / dicom map back to the dataset's native units)
  evaluate  image quality:  jaxmedgan evaluate --workdir W --metrics fid,kid,pr,diversity,agreement --num N
            [--classifier C] [--per-class]  (per-class diversity ratio, intra-class FID, precision/recall/
            coverage, classifier agreement, with 95% CIs)  [--features domain|inception --inception-weights F]
            downstream classifier / segmentation studies:
            jaxmedgan evaluate downstream --config configs/downstream_liver.py --out DIR  (leak-free: a GAN per
            fold)  [--real-fractions 0.1,0.25,0.5,1.0] [--gan-config C] [--gan-steps N] | [--synthetic W_OR_DIR]
            jaxmedgan evaluate segmentation --config configs/segmentation_brain.py ...
            augmentation leaks (do generated images carry the training's flips / rotations / inversion?):
            jaxmedgan evaluate leak --workdir W --num N --out DIR [--transforms hflip,invert,...]
  reader-study  real-vs-synthetic reader study:  jaxmedgan reader-study create|serve|report ...
  project   GAN inversion (resumable):  jaxmedgan project --workdir W --images DIR_or_NPZ|--split train|heldout
            --out DIR [--num N] [--space z|w|w+] [--class NAME|label|search] [--steps S] [--classifier C]

`jaxmedgan <command> --help` shows a command's options.
"""


class UsageError(Exception):
    """A command-line mistake; printed without a traceback."""


def _train(argv: list[str]) -> None:
    from absl import flags
    from ml_collections import config_flags

    # absl spells flags with underscores; accept the dashed spellings the docs use.
    argv = [a.replace("--num-processes", "--num_processes").replace("--process-id", "--process_id")
            .replace("--allow-config-change", "--allow_config_change") for a in argv]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                    flag_values=fv, lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.", flag_values=fv)
    flags.DEFINE_string("coordinator", None, "Multi-process: coordinator host:port (process 0's).", flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.", flag_values=fv)
    flags.DEFINE_list("allow_config_change", [], "Resume: config fields allowed to differ from the workdir's "
                      "config.json (recorded in config_history.jsonl).", flag_values=fv)
    if any(a in ("-h", "--help") for a in argv[1:]):
        print("usage: jaxmedgan train --config CONFIG.py --workdir DIR [--config.section.key=value ...]\n"
              "       [--allow-config-change=optim.d_lr,...]  (resume with those fields changed)\n"
              "       [--coordinator HOST:PORT --num-processes N --process-id I]  (multi-process; or set\n"
              "       JAXMEDGAN_COORDINATOR_ADDRESS/NUM_PROCESSES/PROCESS_ID, or JAXMEDGAN_DISTRIBUTED=auto\n"
              "       on TPU pods and SLURM)")
        return
    # ml_collections loads every config file as module `config_config` and re-executes into a cached one,
    # so a file without get_config() would inherit the previous file's (callers running several commands).
    sys.modules.pop("config_config", None)
    try:
        fv(argv)
        config = fv.config
        if config is not None:
            config.keys()  # a config that failed to load raises only when first used
    except flags.UnrecognizedFlagError as e:
        raise UsageError(f"{e}. Config overrides look like --config.train.steps=500; "
                         "use `jaxmedgan train --help`.") from None
    except flags.IllegalFlagValueError as e:
        raise UsageError(str(e)) from None
    except (AttributeError, KeyError) as e:  # ml_collections: unknown key in an override, or no get_config()
        text = str(e.args[0]) if e.args else str(e)
        if "get_config" in text:
            raise UsageError(f"--config {_config_path(argv)} defines no get_config() function; a config file "
                             "must define `def get_config() -> ml_collections.ConfigDict`.") from None
        try:  # ml_collections wraps a KeyError's repr: "'\\'stepz\\'\\nDid you mean...'"
            text = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
        key, _, hint = str(text).partition("\n")
        raise UsageError(f"Unknown config key {key.strip(chr(39))!r} in an override" + (f". {hint}" if hint else ".")
                         + " Run `jaxmedgan train --help`.") from None
    except Exception as e:  # config file missing or failing to load
        raise UsageError(f"Could not load --config: {e}") from None
    if config is None or fv.workdir is None:
        raise UsageError("train needs --config and --workdir.")
    from jaxmedgan import training

    try:  # ConfigError: every problem of the config, one per line (found before anything is written)
        training.train(config, fv.workdir, explicit=training.explicit_keys(argv),
                       allow_config_change=fv.allow_config_change, coordinator=fv.coordinator,
                       num_processes=fv.num_processes, process_id=fv.process_id)
    except config_validation.ConfigError as e:
        raise UsageError(str(e).replace("\n", "\njaxmedgan train: error: ")) from None


def _config_path(argv: list[str]) -> str:
    """The --config file named in `argv` (for messages)."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return "?"


def _sample(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="jaxmedgan sample", description="Draw images from the latest checkpoint.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--num", type=int, required=True, help="number of images (per label vector with --labels)")
    p.add_argument("--out", required=True, help="output directory (PNGs + samples.npz [+ labels.csv])")
    p.add_argument("--class", dest="class_id", default=None, metavar="NAME|INDEX",
                   help="class name or index (conditional models)")
    p.add_argument("--labels", default=None,
                   help="unconditional models: requested findings, e.g. 'cardiomegaly,effusion' ('' or 'none': "
                        "no finding; several vectors separated by ';'), reached by latent class optimisation")
    p.add_argument("--classifier", default=None,
                   help="--labels: multi-label classifier workdir (default: the GAN config's lco.classifier_workdir)")
    p.add_argument("--lco-steps", type=int, default=None, help="--labels: Adam steps on the latents")
    p.add_argument("--baseline-num", type=int, default=None,
                   help="--labels: random draws for the random + filter comparison (default max(256, 4 num))")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv[1:])
    from jaxmedgan import lco, sampling

    if args.labels is None:
        if args.classifier is not None or args.lco_steps is not None or args.baseline_num is not None:
            raise UsageError("--classifier, --lco-steps and --baseline-num apply to --labels only.")
        path = sampling.sample_to_dir(args.workdir, args.num, args.out, class_id=args.class_id, seed=args.seed)
        print(f"Wrote {args.num} samples to {path}")
        return
    if args.class_id is not None:
        raise UsageError("--labels (latent class optimisation) and --class exclude each other.")
    path, rows = sampling.sample_labelled_to_dir(
        args.workdir, args.num, args.out, args.labels, classifier_workdir=args.classifier,
        lco_steps=args.lco_steps, seed=args.seed, baseline_num=args.baseline_num)
    print(lco.format_table(rows))
    kept = sum(r["lco_kept"] for r in rows)
    print(f"Wrote {args.num * len(rows)} labelled samples ({kept} the classifier agrees with) to {path}; "
          f"success rate LCO {kept / (args.num * len(rows)):.3f} vs random + filter "
          f"{sum(r['random_success_rate'] for r in rows) / len(rows):.3f} (mean over targets).")


def _valid_image_size(n: int) -> None:
    """Refuses sizes no model can use (the GANs need a power of two, >= 4 px, <= 1024 px)."""
    if n >= 4 and n <= 1024 and n & (n - 1) == 0:
        return
    near = config_validation._nearest_power_of_two(n, 4, 1024)
    raise UsageError(f"--image-size {n}: the models need a power of two in [4, 1024] px; nearest valid: "
                     f"{near} (add --resize area|pad|crop to resample the files to it).")


def _dataset(argv: list[str]) -> None:
    from jaxmedgan.data import datasets, readers, registry, tfds_builders

    p = argparse.ArgumentParser(prog="jaxmedgan dataset", description="Build a TFDS (array_record) dataset.")
    p.add_argument("--source", required=True, choices=registry.names(buildable=True))
    p.add_argument("--out", required=True, help="TFDS data directory to write")
    p.add_argument("--image-dir", default=None, help="image-folder: DIR/<class_name>/* (PNG, JPEG, TIFF, DICOM); "
                   "npz: a MedMNIST-style .npz; stylegan-folder: folder or .zip with dataset.json; "
                   "chexpert / chestxray14: the dataset root (train.csv / Data_Entry_2017.csv)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--resize", default="none", choices=readers.RESIZE_MODES,
                   help="user sources: resample files of another size (area), after padding (pad) or centre-"
                   "cropping (crop) to a square; none = refuse them")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--window", type=float, nargs=2, metavar=("CENTER", "WIDTH"), default=None,
                   help="window in native units (HU for CT) for every image (default: each DICOM's tags, "
                   "else its min..max; PNG/JPEG/TIFF: the bit depth's full range)")
    p.add_argument("--class-window", action="append", default=[], metavar="NAME=CENTER/WIDTH",
                   help="a window for one class (repeatable), e.g. --class-window mr=300/600")
    p.add_argument("--classes", default=None, help="user sources: comma-separated class names to keep, in label "
                   "order (image-folder: folder names; npz / stylegan-folder: names for labels 0..K-1)")
    p.add_argument("--slice-axis", type=int, default=2, choices=(0, 1, 2),
                   help="image-folder: the axis NIfTI volumes (.nii, .nii.gz) are sliced along")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-fraction", type=float, default=0.0,
                   help="image-folder / stylegan-folder / chestxray14 without test_list.txt: fraction held "
                   "out as 'test' (stratified, seeded)")
    p.add_argument("--findings", default=None, help="chest sources: comma-separated finding columns to keep")
    p.add_argument("--uncertainty", default="u_ones", choices=["u_ones", "u_zeros", "u_ignore"],
                   help="chexpert: how uncertain (-1) labels are read")
    p.add_argument("--frontal-only", action="store_true", help="chexpert: keep frontal views only")
    p.add_argument("--num-train", type=int, default=None, help="phantom-chest: training images")
    p.add_argument("--num-test", type=int, default=None, help="phantom-chest: held-out images")
    args = p.parse_args(argv[1:])
    if registry.get(args.source).needs_image_dir and not args.image_dir:
        raise UsageError(f"--source {args.source} needs --image-dir: {registry.get(args.source).layout}.")
    if (args.num_train is None) != (args.num_test is None):
        raise UsageError("--num-train and --num-test go together.")
    _valid_image_size(args.image_size)
    extra = {}
    if args.findings:
        extra["findings"] = tuple(f.strip() for f in args.findings.split(",") if f.strip())
    if args.num_train is not None:
        extra["num_examples"] = (args.num_train, args.num_test)
    extra.update(uncertainty=args.uncertainty, frontal_only=args.frontal_only)  # the source refuses what it lacks
    extra.update(resize=args.resize, class_windows=";".join(args.class_window) or None, slice_axis=args.slice_axis,
                 classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None)
    path = tfds_builders.build_dataset(args.source, args.out, image_dir=args.image_dir,
                                       image_size=args.image_size, channels=args.channels,
                                       window=tuple(args.window) if args.window else None, seed=args.seed,
                                       holdout_fraction=args.holdout_fraction, **extra)
    print(f"{datasets.describe(path)}\nTrain on it with --config.data.dataset_dir={os.path.abspath(path)}\n"
          f"Dataset ready in {path}")


def _privacy(argv: list[str]) -> int:
    from jaxmedgan.studies import privacy_cli

    return privacy_cli.main(argv[1:])


def _reader_study(argv: list[str]) -> int:
    from jaxmedgan.reader_study import cli as reader_study_cli

    return reader_study_cli.main(argv[1:])


def _export(argv: list[str]) -> int:
    from jaxmedgan import export

    return export.export_command(argv[1:])


def _project(argv: list[str]) -> int:
    from jaxmedgan.studies import inversion

    return inversion.project_command(argv[1:])


EVALUATORS = {"downstream": "jaxmedgan.studies.downstream:downstream_command",
              "segmentation": "jaxmedgan.studies.segmentation:segmentation_command",
              "quality": "jaxmedgan.studies.quality_cli:quality_command",
              "leak": "jaxmedgan.studies.leak:leak_command"}


def _evaluate(argv: list[str]) -> int:
    import importlib

    if len(argv) > 1 and argv[1].startswith("--"):  # `jaxmedgan evaluate --workdir W --metrics ...`
        argv = [argv[0], "quality", *argv[1:]]
    if len(argv) < 2 or argv[1] not in EVALUATORS:
        raise UsageError(f"usage: jaxmedgan evaluate {{{'|'.join(EVALUATORS)}}} ... (got "
                         f"{argv[1] if len(argv) > 1 else 'nothing'!r})")
    module, fn = EVALUATORS[argv[1]].split(":")
    return getattr(importlib.import_module(module), fn)(argv[2:])


COMMANDS = {"train": _train, "sample": _sample, "dataset": _dataset, "privacy": _privacy,
            "reader-study": _reader_study, "export": _export, "project": _project, "evaluate": _evaluate}


def main(argv: list[str]) -> int:
    """Dispatches `argv[1]` to its command; returns the exit code."""
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if len(argv) >= 2 else 2
    cmd = argv[1]
    if cmd not in COMMANDS:
        hint = difflib.get_close_matches(cmd, COMMANDS, n=1)
        print(f"jaxmedgan: unknown command {cmd!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
              + "\n\n" + USAGE, file=sys.stderr)
        return 2
    from jaxmedgan.preemption import Preempted  # both import JAX
    from jaxmedgan.trainers.loop import NonFiniteLossError

    try:
        code = COMMANDS[cmd]([f"jaxmedgan {cmd}"] + argv[2:])
    except (UsageError, config_validation.ConfigError) as e:
        print(f"jaxmedgan {cmd}: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # SIGTERM / SIGINT: checkpoint saved
        print(f"jaxmedgan {cmd}: {e}", file=sys.stderr)
        return e.exit_code
    except workdir_lock.WorkdirLockedError as e:
        print(f"jaxmedgan {cmd}: error: {e}", file=sys.stderr)
        return 1
    except (NonFiniteLossError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"jaxmedgan {cmd}: error: {e}", file=sys.stderr)
        return 1
    return code or 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
