"""Untuned CPU time per image: fp32 vs simulate vs integer realize of one zoo model.

    python scripts/time_modes.py --model efficientnet_lite0 [--repeat 10] [--json out.json]

Builds each module with the default pipeline (no tuning), runs ``--repeat`` batches after one
warm-up and prints the median time per image. Timings on a shared machine are noisy; the
tuned int8 speed is scripts/bench_cpu.py's job.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tvm_quant_ext as tq
from tvm_quant_ext import QConfig, passes, zoo
from tvm_quant_ext.runner import split_batches


def median_ms_per_image(model, x, repeat: int) -> float:
    model(x)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times)) / x.shape[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(zoo.MODELS))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)

    m = zoo.load(args.model)  # at the entry's default batch
    b = m.batch_size
    calib = split_batches(m.calib, b)
    config = QConfig()
    prepared = passes.prepare(m.mod, m.params)
    calibrated = passes.calibrate(passes.annotate(prepared, config), calib, config)
    modules = {
        "fp32": prepared,
        "simulate": passes.realize(calibrated, config),
        "integer": passes.realize(calibrated, config.replace(mode="integer")),
    }
    x = m.eval_sets[0].images[:b]
    rows = []
    for name, mod in modules.items():
        ms = median_ms_per_image(tq.build(mod), x, args.repeat)
        rows.append({"model": args.model, "module": name, "batch": b, "ms_per_image": round(ms, 3)})
        print(f"{args.model} {name:9s} batch {b}: {ms:9.3f} ms/image (median of {args.repeat})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
