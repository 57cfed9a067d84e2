"""Quantize a model and export a library for one target: a zoo model by name, or any model file
(forwarded to ``tvm-quant quantize``, which takes the same flags).

    python scripts/compile_target.py --model mnist_cnn --target llvm --mcpu znver4 -o mnist.so
    python scripts/compile_target.py --model efficientnet_lite0 --target cuda --arch sm_90 -o lite0.so
    python scripts/compile_target.py --model net.onnx --calib photos/ --target cuda -o out/net
    python scripts/compile_target.py --model mnist_cnn --target llvm --mcpu znver4 \\
        --tuning-db tuning/mnist_znver4 --tune-trials 8 -o mnist.so   # tune once, reuse after

Every QConfig field is a flag (``--nbit-bias 16 --calibrate-mode l2 ...``, or ``--config
FILE.toml``); a zoo model calibrates on its own calibration images unless ``--calib`` (an
``.npy``/``.npz`` of preprocessed arrays) is given. Load and run the library with plain TVM:

    import tvm
    from tvm import relax
    vm = relax.VirtualMachine(tvm.runtime.load_module("mnist.so"), tvm.cpu())   # tvm.cuda()
    logits = vm["main"](tvm.runtime.tensor(images_nchw_float32, tvm.cpu())).numpy()

The exported ``main`` takes the float32 NCHW batch (batch size --batch) and returns float32
logits; in integer mode (the default here) it quantizes once at the input and dequantizes once
at the output.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tvm_quant_ext import cli, quantize, zoo  # noqa: E402
from tvm_quant_ext.backend.build import compile_module  # noqa: E402
from tvm_quant_ext.cli.model_commands import target_of  # noqa: E402
from tvm_quant_ext.config_flags import add_qconfig_arguments, qconfig_from_args  # noqa: E402
from tvm_quant_ext.datasets import load_data  # noqa: E402
from tvm_quant_ext.runner import split_batches  # noqa: E402


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help=f"a zoo model ({', '.join(zoo.MODELS)}) or a "
                    "model file (.onnx, -symbol.json, .pt2: forwarded to tvm-quant quantize)")
    known, _ = ap.parse_known_args(argv)
    if known.model not in zoo.MODELS:
        rest = [a for a in argv if a != "--model" and a != known.model]
        if "--mode" not in rest:
            rest += ["--mode", "integer"]
        return cli.main(["quantize", known.model] + rest)
    ap.add_argument("--target", required=True, choices=("llvm", "cuda"))
    ap.add_argument("--arch", default="sm_80", help="CUDA arch (cuda target), e.g. sm_80, sm_90")
    ap.add_argument("--mcpu", default=None, help="LLVM CPU (llvm target), e.g. znver4, cascadelake; "
                    "a CPU with avx512vnni gets the VNNI int8 kernel, one with AMX (sapphirerapids) "
                    "the AMX one; host: this machine's, AMX included")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calib", help="calibration arrays (.npy/.npz, preprocessed) instead of the "
                    "zoo model's own images")
    ap.add_argument("--tuning-db", default=None, help="MetaSchedule database directory (CPU): "
                    "applied when it exists; filled first when --tune-trials > 0")
    ap.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per task")
    ap.add_argument("-o", "--output", required=True, help="library to write (.so)")
    add_qconfig_arguments(ap)
    args = ap.parse_args(argv)
    if args.target == "cuda" and (args.tuning_db or args.tune_trials):
        ap.error("--tuning-db/--tune-trials are for CPU targets; CUDA uses dlight's default schedules")
    if args.qconfig_mode is None:
        args.qconfig_mode = "integer"
    config = qconfig_from_args(args)

    model = zoo.load(args.model, args.batch)
    images = load_data(args.calib).images if args.calib else model.calib
    t = time.perf_counter()
    mod = quantize(model.mod, model.params, dataset=split_batches(images, args.batch), config=config)
    print(f"quantized {args.model} ({config.mode}) in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    executable = compile_module(mod, target_of(args), tune_trials=args.tune_trials,
                                tuning_db=args.tuning_db)
    executable.export_library(args.output)
    print(f"compiled for {target_of(args)} in {time.perf_counter() - t:.1f} s -> {args.output} "
          f"({os.path.getsize(args.output) / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
