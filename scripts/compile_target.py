"""Quantize a zoo model and export a library for one target.

    python scripts/compile_target.py --model mnist_cnn --target llvm --mcpu znver4 -o mnist.so
    python scripts/compile_target.py --model efficientnet_lite0 --target cuda --arch sm_90 -o lite0.so
    python scripts/compile_target.py --model mnist_cnn --target llvm --mcpu znver4 \
        --tuning-db tuning/mnist_znver4 --tune-trials 8 -o mnist.so   # tune once, reuse after

Load and run the library (no tvm_quant_ext needed):

    import tvm
    from tvm import relax
    vm = relax.VirtualMachine(tvm.runtime.load_module("mnist.so"), tvm.cpu())   # tvm.cuda()
    logits = vm["main"](tvm.runtime.tensor(images_nchw_float32, tvm.cpu())).numpy()

The exported ``main`` takes the float32 NCHW batch (batch size --batch) and returns float32
logits; in integer mode it quantizes once at the input and dequantizes once at the output.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tvm_quant_ext import QConfig, quantize, zoo  # noqa: E402
from tvm_quant_ext.backend.build import compile_module  # noqa: E402
from tvm_quant_ext.config import MODES  # noqa: E402
from tvm_quant_ext.runner import split_batches  # noqa: E402


def target_of(args) -> dict:
    target = {"kind": args.target}
    if args.target == "cuda":
        target["arch"] = args.arch
    elif args.mcpu:
        target["mcpu"] = args.mcpu
    return target


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=zoo.MODELS)
    ap.add_argument("--target", required=True, choices=("llvm", "cuda"))
    ap.add_argument("--arch", default="sm_80", help="CUDA arch (cuda target), e.g. sm_80, sm_90")
    ap.add_argument("--mcpu", default=None, help="LLVM CPU (llvm target), e.g. znver4, cascadelake; "
                    "a CPU with avx512vnni gets the VNNI int8 kernel")
    ap.add_argument("--mode", default=MODES[-1], choices=MODES,
                    help="realize mode (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tuning-db", default=None, help="MetaSchedule database directory (CPU): "
                    "applied when it exists; filled first when --tune-trials > 0")
    ap.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per task")
    ap.add_argument("-o", "--output", required=True, help="library to write (.so)")
    args = ap.parse_args(argv)
    if args.target == "cuda" and (args.tuning_db or args.tune_trials):
        ap.error("--tuning-db/--tune-trials are for CPU targets; CUDA uses dlight's default schedules")

    model = zoo.load(args.model, args.batch)
    t = time.perf_counter()
    calib = split_batches(model.calib, args.batch)
    mod = quantize(model.mod, model.params, dataset=calib, config=QConfig(mode=args.mode))
    print(f"quantized {args.model} ({args.mode}) in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    executable = compile_module(mod, target_of(args), tune_trials=args.tune_trials,
                                tuning_db=args.tuning_db)
    executable.export_library(args.output)
    print(f"compiled for {target_of(args)} in {time.perf_counter() - t:.1f} s -> {args.output} "
          f"({os.path.getsize(args.output) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
