"""Dataset build and input-pipeline throughput on generated 16-bit CT DICOMs, beside the train step.

    python -m benchmarks.data_throughput --num 2000 --size 256 --batch 32 --out docs/results/data_throughput.json

1. Writes `--num` single-slice CT DICOMs (int16 stored values, RescaleIntercept -1024, window
   tags 40/400, `--size` px square, two class folders; file writing is not timed).
2. build: `tfds_builders.build_dataset("image-folder", ...)` from those files (read with pydicom,
   stored as native float32 HU with a per-image window) -- images/s, wall time.
3. pipeline: the grain training pipeline over the built dataset (`pipeline.train_dataset`,
   windowing on read, classic augmentation on) -- images/s over `--batches` consecutive batches.
4. train step: `benchmarks.run.measure` of the DCGAN/ACGAN step (`--config`) at the same
   resolution and batch on this machine -- images/s.
The figure that matters is pipeline images/s / train-step images/s (> 1: the pipeline feeds the
step faster than it consumes; measured side by side in one process). Prints a table; writes JSON.
Never asserted in tests (tests/benchmarks_test.py runs it tiny).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks import common


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_args(p, devices="1", warmup=1, repeats=5, out="docs/results/data_throughput.json")
    p.add_argument("--num", type=int, default=2000, help="DICOM files to generate")
    p.add_argument("--size", type=int, default=256, help="px (square)")
    p.add_argument("--batch", type=int, default=32, help="global batch of the pipeline and the train step")
    p.add_argument("--batches", type=int, default=30, help="pipeline batches timed")
    p.add_argument("--config", default="configs/acgan_liver.py", help="train-step config (its model at --size)")
    p.add_argument("--features", type=int, default=None, help="override G/D base features (tiny runs)")
    p.add_argument("--workdir", default=None, help="where to write the DICOMs and the dataset (default: a temp dir)")
    return p.parse_args(argv)


def write_dicoms(root: str, num: int, size: int, seed: int = 0) -> None:
    """`num` CT DICOMs, HU = stored - 1024: a soft-tissue disc (~40 HU) with noise, in two classes."""
    from pydicom.uid import CTImageStorage

    from jaxmedgan.data import readers

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    for i in range(num):
        hu = np.where(disc, 40.0, -1000.0) + rng.normal(0, 12, (size, size))
        if i % 2:  # class "lesion": a brighter blob
            cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
            hu += 60.0 * (((yy - cy) ** 2 + (xx - cx) ** 2) < (size / 12) ** 2)
        ds = readers.new_dicom(CTImageStorage, size, size, signed=True)
        ds.Modality = "CT"
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = np.round(hu + 1024).astype("<i2").tobytes()
        folder = os.path.join(root, "lesion" if i % 2 else "normal")
        os.makedirs(folder, exist_ok=True)
        ds.save_as(os.path.join(folder, f"IM_{i:05d}"), enforce_file_format=True)


def main(argv=None) -> dict:
    args = _parse(argv)
    common.force_host_devices(1)
    from benchmarks import run
    from jaxmedgan.data import pipeline, tfds_builders

    work = args.workdir or tempfile.mkdtemp(prefix="jaxmedgan_data_bench_")
    try:
        images_dir, out_dir = os.path.join(work, "dicoms"), os.path.join(work, "datasets")
        t0 = time.perf_counter()
        write_dicoms(images_dir, args.num, args.size)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        data_dir = tfds_builders.build_dataset("image-folder", out_dir, image_dir=images_dir, image_size=args.size,
                                               holdout_fraction=0.0)
        build_s = time.perf_counter() - t0
        source = tfds_builders.load_split(data_dir, "image-folder", "train")
        ds = pipeline.train_dataset(source, global_batch_size=args.batch, seed=0, augment=True, process_index=0,
                                    process_count=1)
        _ = ds[0]  # warm-up (opens the array_record readers)
        t0 = time.perf_counter()
        for k in range(1, args.batches + 1):
            batch = ds[k]
        pipe_s = time.perf_counter() - t0
        assert batch["image"].shape == (args.batch, args.size, args.size, 1)
        config = common.load_config(args.config)
        config.data.image_size = args.size
        config.train.batch_size = args.batch
        if args.features:
            config.model.g_features = config.model.d_features = args.features
        step = run.measure("gan", config, 1, False, warmup=args.warmup, repeats=args.repeats, steps_per_repeat=1,
                           dataset_size=args.num)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    pipe_ips = args.batches * args.batch / pipe_s
    result = {
        "benchmark": "data_throughput", "num_files": args.num, "size_px": args.size, "batch": args.batch,
        "dicom_write_s": write_s, "build_s": build_s, "build_images_per_s": args.num / build_s,
        "pipeline_batches": args.batches, "pipeline_images_per_s": pipe_ips,
        "train_step_images_per_s": step["images_per_s"], "train_step_s_median": step["step_s_median"],
        "train_step_config": args.config, "train_step_features": args.features,
        "pipeline_over_train_step": pipe_ips / step["images_per_s"],
        **common.platform_info(),
    }
    print(f"build   {args.num} x {args.size}^2 16-bit DICOM: {result['build_images_per_s']:8.1f} images/s "
          f"({build_s:.1f} s)")
    print(f"pipeline (window + augment + batch {args.batch}): {pipe_ips:8.1f} images/s")
    print(f"train step ({os.path.basename(args.config)} at {args.size} px): {step['images_per_s']:8.1f} images/s")
    print(f"pipeline / train step: {result['pipeline_over_train_step']:.2f}x")
    common.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
