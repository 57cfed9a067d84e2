"""Where the time goes: every TIR kernel of a compiled zoo model, timed on its own (zero inputs),
times the number of calls in ``main``, grouped by kind.

    python scripts/profile_kernels.py --model efficientnet_lite0 --mode integer [--tuning-db DIR]

The Relax VM of apache-tvm 0.27 has no profiler; this lowers the model the way ``build`` does,
compiles each PrimFunc alone and times it with ``time_evaluator``.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from tvm_quant_ext import QConfig, passes, quantize, zoo  # noqa: E402
from tvm_quant_ext.backend.build import lower, make_target  # noqa: E402
from tvm_quant_ext.backend.tune import tune  # noqa: E402
from tvm_quant_ext.backend.cpu.schedule import default_cpu_schedule  # noqa: E402

from bench_workers.torch_models import TORCH_MODELS  # noqa: E402  (random-weight models)


def lowered_module(mod, target, tuning_db, fuse=True):
    lowered = lower(mod, target, fuse=fuse)
    if tuning_db:
        lowered = tune(lowered, target, 0, tuning_db)
    return default_cpu_schedule(lowered)  # as build does


def call_counts(main: relax.Function):
    counts = collections.Counter()

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            counts[expr.args[0].name_hint] += 1
    relax.analysis.post_order_visit(main, visit)
    return counts


def time_kernel(func, target, runs=5) -> float:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    args = []
    for param in func.params:  # TVM 0.27: PrimFunc params are buffer-typed vars
        args.append(tvm.runtime.tensor(np.zeros([int(d) for d in param.shape], str(param.dtype))))
    return lib.mod.time_evaluator("main", tvm.cpu(), number=runs, repeat=3)(*args).median * 1e3


def kind_of(name: str) -> str:
    for key in ("vnni", "depthwise", "conv2d", "matmul", "pool", "mean", "pad", "quantize"):
        if key in name:
            return key
    return "elementwise/other"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="efficientnet_lite0",
                    choices=sorted(set(zoo.MODELS) | set(TORCH_MODELS)))
    ap.add_argument("--mode", default="integer", choices=("fp32", "integer"))
    ap.add_argument("--mcpu", default="znver4")
    ap.add_argument("--tuning-db", default=None)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--unfused", action="store_true",
                    help="int8 layers without their fused epilogue (build(..., fuse=False))")
    args = ap.parse_args(argv)
    target = make_target({"kind": "llvm", "mcpu": args.mcpu})
    if args.model in TORCH_MODELS:  # the bench's random-weight models (ResNet-50 v2, ...)
        from tvm_quant_ext.frontend.torch import from_torch

        factory, shape = TORCH_MODELS[args.model]
        graph, params = from_torch(factory(), np.zeros((1,) + shape, np.float32))
        rng = np.random.default_rng(0)
        calib = [rng.standard_normal((1,) + shape).astype("float32") for _ in range(4)]
    else:
        zm = zoo.load(args.model, 1)
        graph, params, calib = zm.mod, zm.params, [zm.calib[i:i + 1] for i in range(8)]
    if args.mode == "fp32":
        mod = passes.prepare(graph, params)
    else:
        mod = quantize(graph, params, dataset=calib, config=QConfig(mode="integer"))
    lowered = lowered_module(mod, target, args.tuning_db, fuse=not args.unfused)
    counts = call_counts(lowered["main"])
    per_kernel, per_kind = {}, collections.Counter()
    for gv, func in lowered.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and counts[gv.name_hint]:
            ms = time_kernel(func, target) * counts[gv.name_hint]
            per_kernel[gv.name_hint] = ms
            per_kind[kind_of(gv.name_hint)] += ms
    total = sum(per_kernel.values())
    print(f"{args.model} {args.mode}: kernels sum to {total:.2f} ms")
    for kind, ms in per_kind.most_common():
        print(f"  {kind:20s} {ms:8.2f} ms  {100 * ms / total:5.1f}%")
    for name, ms in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"    {name:60s} {ms:8.3f} ms")


if __name__ == "__main__":
    main()
