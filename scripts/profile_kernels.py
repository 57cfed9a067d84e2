"""Where the time goes: every TIR kernel of a compiled zoo model, timed on its own (zero inputs),
times the number of calls in ``main``, grouped by kind; for the int8 conv / dense / depthwise
kernels also their multiply-accumulates and G MAC/s, and for the 3x3 convs together their
share of the measured int8 peak (``--peak``: the bench's ``vpdpbusd`` microkernel, or
``vpmaddwd`` without VNNI).

    python scripts/profile_kernels.py --model efficientnet_lite0 --mode integer [--tuning-db DIR]
    python scripts/profile_kernels.py --model resnet50_v2 --batch 8 --peak

Set beside OpenVINO's own per-layer counters: ``bench_workers/ov_profile.py``.

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
from tvm_quant_ext.backend.target import host_target  # noqa: E402
from tvm_quant_ext.backend.tune import tune  # noqa: E402
from tvm_quant_ext.backend.cpu.fuse import MACS_ATTR, WINDOW_ATTR  # noqa: E402
from tvm_quant_ext.backend.cpu.tir_pipeline import PIPELINE as CPU_TIR_PIPELINE  # noqa: E402
from tvm_quant_ext.backend.cpu.schedule import default_cpu_schedule  # noqa: E402
from tvm_quant_ext.backend import threads  # noqa: E402

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
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target,
                      tir_pipeline=CPU_TIR_PIPELINE)  # as build compiles it
    args = []
    for param in func.params:  # TVM 0.27: PrimFunc params are buffer-typed vars
        args.append(tvm.runtime.tensor(np.zeros([int(d) for d in param.shape], str(param.dtype))))
    return lib.mod.time_evaluator("main", tvm.cpu(), number=runs, repeat=3)(*args).median * 1e3


def kernel_macs(func) -> int:
    """Multiply-accumulates of one call of a fused int8 layer kernel (0 for anything else),
    as the fuse pass recorded them from the layer's own shapes."""
    return int(func.attrs[MACS_ATTR]) if func.attrs and MACS_ATTR in func.attrs else 0


def kernel_window(name: str, func) -> str:
    """The conv window the fuse pass recorded ("3x3", "dw5x5" for a depthwise conv)."""
    window = str(func.attrs[WINDOW_ATTR]) if func.attrs and WINDOW_ATTR in func.attrs else ""
    return "dw" + window if window and "depthwise" in name else window


def kind_of(name: str) -> str:
    for key in ("depthwise", "amx", "vnni", "conv2d", "matmul", "pool", "mean", "pad", "quantize"):
        if key in name:
            return key
    return "elementwise/other"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="efficientnet_lite0",
                    choices=sorted(set(zoo.MODELS) | set(TORCH_MODELS)))
    ap.add_argument("--mode", default="integer", choices=("fp32", "integer"))
    ap.add_argument("--mcpu", default=None,
                    help="default: this machine's CPU, with AMX where it runs AMX (host_target)")
    ap.add_argument("--tuning-db", default=None)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--peak", action="store_true",
                    help="measure the vpdpbusd peak (bench_workers/peak.py) for the %% column")
    ap.add_argument("--unfused", action="store_true",
                    help="int8 layers without their fused epilogue (build(..., fuse=False))")
    args = ap.parse_args(argv)
    target = make_target(host_target() if args.mcpu is None
                         else {"kind": "llvm", "mcpu": args.mcpu})
    if args.model in TORCH_MODELS:  # the bench's random-weight models (ResNet-50 v2, ...)
        from tvm_quant_ext.frontend.torch import from_torch

        factory, shape = TORCH_MODELS[args.model]
        graph, params = from_torch(factory(), np.zeros((args.batch,) + shape, np.float32))
        rng = np.random.default_rng(0)
        calib = [rng.standard_normal((args.batch,) + shape).astype("float32") for _ in range(4)]
    else:
        zm = zoo.load(args.model, args.batch)
        graph, params = zm.mod, zm.params
        calib = [np.repeat(zm.calib[i:i + 1], args.batch, axis=0) for i in range(8)]
    if args.mode == "fp32":
        mod = passes.prepare(graph, params)
    else:
        mod = quantize(graph, params, dataset=calib, config=QConfig(mode="integer"))
    lowered = lowered_module(mod, target, args.tuning_db, fuse=not args.unfused)
    counts = call_counts(lowered["main"])
    per_kernel, per_kind = {}, collections.Counter()
    macs, windows = {}, {}
    for gv, func in lowered.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and counts[gv.name_hint]:
            name = gv.name_hint
            ms = time_kernel(func, target) * counts[name]
            per_kernel[name] = ms
            per_kind[kind_of(name)] += ms
            macs[name] = kernel_macs(func) * counts[name]
            windows[name] = kernel_window(name, func)
    peak = None
    if args.peak:
        from bench_workers import peak as vnni_peak
        import tempfile

        peak, how = vnni_peak.measure(tempfile.mkdtemp(), threads.default_thread_count())
        print(f"int8 peak: {peak} G MAC/s ({how})")
    total = sum(per_kernel.values())
    print(f"{args.model} b{args.batch} {args.mode}, {threads.default_thread_count()} threads: "
          f"kernels sum to {total:.2f} ms")
    for kind, ms in per_kind.most_common():
        print(f"  {kind:20s} {ms:8.2f} ms  {100 * ms / total:5.1f}%")
    by_window = collections.defaultdict(lambda: [0.0, 0])
    for name, ms in per_kernel.items():
        if macs[name]:
            by_window[windows[name]][0] += ms
            by_window[windows[name]][1] += macs[name]
    for window, (ms, count) in sorted(by_window.items(), key=lambda kv: -kv[1][0]):
        rate = count / ms / 1e6
        share = f", {100 * rate / peak:.0f}% of peak" if peak else ""
        print(f"  {window:8s} layers: {ms:8.2f} ms, {count / 1e9:.2f} G MAC, {rate:.0f} G MAC/s{share}")
    for name, ms in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:args.top]:
        rate = f"{macs[name] / ms / 1e6:6.0f} G MAC/s" if macs[name] else ""
        print(f"    {name:50.50s} x{counts[name]:<3d} {windows[name]:7s} {ms:8.3f} ms {rate}")


if __name__ == "__main__":
    main()
