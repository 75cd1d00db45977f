"""DP step time with padding buckets (privacy.padding_buckets): each bucket's step timed, then the
expected step time over the Poisson draw, beside the single padded size and the non-DP step.

    python -m benchmarks.padding_buckets --family gan --batch 64 --resolution 32 --buckets 3 \
        --out docs/results/padding_buckets_gan.json

A bucket is the padded size the step runs at when the draw fits it; P[bucket] comes from the
Binomial(N, q) batch size (scipy). Each variant is timed in turn in one process (median of --repeats).
"""
from __future__ import annotations

import argparse
import os

from benchmarks import common
from benchmarks.dp_overhead import FAMILY_CONFIGS


def bucket_rows(family: str, path: str, resolution: int, batch: int, top: dict, *, buckets: int, dataset_size: int,
                warmup: int, repeats: int, steps_per_repeat: int = 1, overrides: tuple[str, ...] = ()) -> list[dict]:
    """Each padding bucket's DP step time and probability: [{padded_rows, step_s, probability}].

    top: `run.measure`'s DP row at the full padded size (its step time is reused for the largest
    bucket). A smaller bucket is timed at its own padded size, which overflow probability
    10^-(j+1) picks (`sampling.padding_buckets`); P[bucket] from the Binomial(N, q) batch size.
    """
    from scipy import stats

    from benchmarks import run
    from jaxmedgan.privacy import sampling

    n, q = dataset_size, batch / dataset_size
    rows, below = [], 0.0
    for j, size in enumerate(sampling.padding_buckets(n, q, top["padded_batch"], buckets)):
        if size == top["padded_batch"]:
            t = top["step_s_median"]
        else:
            c = run.make_config(family, path, resolution, batch, True, False,
                                [*overrides, f"privacy.overflow_prob={10.0 ** -(j + 1)}"])
            m = run.measure(family, c, 1, True, warmup=warmup, repeats=repeats, steps_per_repeat=steps_per_repeat,
                            dataset_size=n)
            assert m["padded_batch"] == size, (m["padded_batch"], size)
            t = m["step_s_median"]
        cdf = float(stats.binom.cdf(size, n, q)) if size < top["padded_batch"] else 1.0
        rows.append({"padded_rows": size, "step_s": t, "probability": cdf - below})
        below = cdf
        print(f"{family:>10} bucket {size:4d} rows: DP step {t * 1e3:.1f} ms, P {rows[-1]['probability']:.4f}",
              flush=True)
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_args(p, devices="1", warmup=2, repeats=5, out="benchmarks/results/padding_buckets.json")
    p.add_argument("--family", default="gan", choices=sorted(FAMILY_CONFIGS))
    p.add_argument("--batch", type=int, default=64, help="expected Poisson batch (train.batch_size)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--buckets", type=int, default=3)
    p.add_argument("--dataset-size", type=int, default=10000)
    args = p.parse_args(argv)
    common.force_host_devices(1)
    from benchmarks import run

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, FAMILY_CONFIGS[args.family])
    n = args.dataset_size
    full = run.make_config(args.family, path, args.resolution, args.batch, True, False, [])
    plain = run.measure(args.family, run.make_config(args.family, path, args.resolution, args.batch, False, False, []),
                        1, False, warmup=args.warmup, repeats=args.repeats, steps_per_repeat=1, dataset_size=n)
    top = run.measure(args.family, full, 1, True, warmup=args.warmup, repeats=args.repeats, steps_per_repeat=1,
                      dataset_size=n)
    rows = bucket_rows(args.family, path, args.resolution, args.batch, top, buckets=args.buckets, dataset_size=n,
                       warmup=args.warmup, repeats=args.repeats)
    expected = sum(r["step_s"] * r["probability"] for r in rows)
    out = {"family": args.family, "batch": args.batch, "resolution": args.resolution, "dataset_size": n,
           "nondp_step_s": plain["step_s_median"], "dp_full_padding_step_s": top["step_s_median"],
           "padded_batch": top["padded_batch"], "buckets": rows, "dp_expected_step_s": expected,
           "dp_over_nondp_full_padding": top["step_s_median"] / plain["step_s_median"],
           "dp_over_nondp_buckets": expected / plain["step_s_median"], **common.platform_info()}
    print(f"{args.family}: non-DP {plain['step_s_median'] * 1e3:.1f} ms; DP padded to {top['padded_batch']}: "
          f"{out['dp_over_nondp_full_padding']:.2f}x; with {len(rows)} buckets: {out['dp_over_nondp_buckets']:.2f}x")
    common.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
