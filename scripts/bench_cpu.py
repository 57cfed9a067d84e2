"""CPU speed: TVM fp32 vs TVM int8 (integer realize) at the same MetaSchedule budget, and ONNX
Runtime fp32 / int8 (quantize_static, QDQ, per channel), batch 1 and 8, in one run.

    python scripts/bench_cpu.py                       # all models, batch 1 and 8
    python scripts/bench_cpu.py --models mnist_cnn --batches 1 --trials 8 --runs 20

Models: the zoo's MNIST CNN and EfficientNet-Lite0 (their cached ONNX exports feed ONNX Runtime),
ResNet-50 v2 (pre-activation, random weights: speed only) and one 3x3 conv layer (64 -> 64
channels on 56x56), both exported from torch here. The int8 calibration uses the zoo's
calibration images (random normal inputs for the random-weight models).

Tuning databases are kept per (model, batch, precision, target) under --db-root, so a second run
reuses them ("tune once offline"); the table reports the tuning seconds spent in this run.
Writes docs/bench_cpu.md and prints it. Medians over --runs timed runs after one warm-up.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tvm_quant_ext  # noqa: E402
from tvm_quant_ext import QConfig, zoo  # noqa: E402
from tvm_quant_ext import passes  # noqa: E402

HOST_TARGET = {"kind": "llvm", "mcpu": "znver4"}
INT8_SUFFIX = "_ort_int8_qdq_per_channel.onnx"  # ONNX Runtime's quantized copy, next to the fp32 file
ALL_MODELS = ("conv3x3_64", "mnist_cnn", "efficientnet_lite0", "resnet50_v2")


@dataclass
class BenchModel:
    name: str
    onnx_path: str
    mod: object                 # Relax module, weights as parameters
    params: Dict[str, np.ndarray]
    input_name: str
    calib: List[np.ndarray]     # calibration batches (batch-shaped)


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #
def _resnet50_v2_torch():
    """ResNet-50 v2 (He et al. 2016, pre-activation bottlenecks, as in MXNet gluon's
    resnet50_v2): random weights, BN statistics randomised so the graph is not degenerate."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            mid = cout // 4
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1, bias=False)
            self.down = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

        def forward(self, x):
            x = torch.relu(self.bn1(x))
            residual = self.down(x) if self.down is not None else x
            x = self.conv1(x)
            x = self.conv2(torch.relu(self.bn2(x)))
            x = self.conv3(torch.relu(self.bn3(x)))
            return x + residual

    class ResNet50V2(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn_data = nn.BatchNorm2d(3, affine=False)
            self.stem = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn0 = nn.BatchNorm2d(64)
            self.pool = nn.MaxPool2d(3, 2, 1)
            blocks, cin = [], 64
            for cout, n, stride in ((256, 3, 1), (512, 4, 2), (1024, 6, 2), (2048, 3, 2)):
                for i in range(n):
                    blocks.append(Bottleneck(cin, cout, stride if i == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.bn_out = nn.BatchNorm2d(2048)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn0(self.stem(self.bn_data(x)))))
            x = torch.relu(self.bn_out(self.blocks(x)))
            return self.fc(torch.flatten(torch.mean(x, dim=(2, 3), keepdim=True), 1))

    torch.manual_seed(0)
    model = ResNet50V2()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.0)
    return model.eval()


def _conv_layer_torch():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()).eval()


TORCH_MODELS = {  # name -> (torch model factory, input shape without batch)
    "resnet50_v2": (_resnet50_v2_torch, (3, 224, 224)),
    "conv3x3_64": (_conv_layer_torch, (64, 56, 56)),
}


def _batches(images: np.ndarray, batch: int, count: int) -> List[np.ndarray]:
    reps = -(-batch * count // len(images))
    pool = np.concatenate([images] * reps)
    return [pool[i * batch:(i + 1) * batch] for i in range(count)]


def load_model(name: str, batch: int, calib_batches: int) -> BenchModel:
    from tvm_quant_ext.frontend import from_onnx
    from tvm_quant_ext.frontend.torch import export_onnx

    root = zoo.cache_root()
    if name in TORCH_MODELS:
        factory, shape = TORCH_MODELS[name]
        onnx_path = os.path.join(root, f"bench_{name}_b{batch}_seed0.onnx")
        if not os.path.exists(onnx_path):
            export_onnx(factory(), np.zeros((batch,) + shape, np.float32), onnx_path)
        mod, params = from_onnx(onnx_path)
        input_name = str(mod["main"].params[0].name)
        rng = np.random.default_rng(0)
        calib = [rng.standard_normal((batch,) + shape).astype("float32")
                 for _ in range(calib_batches)]
        return BenchModel(name, onnx_path, mod, params, input_name, calib)
    zm = zoo.load(name, batch)
    exports = sorted((p for p in glob.glob(os.path.join(root, f"{name}_b{batch}_*.onnx"))
                      if INT8_SUFFIX not in p), key=os.path.getmtime)
    if not exports:
        raise FileNotFoundError(f"zoo.load({name!r}) left no ONNX export under {root}")
    return BenchModel(name, exports[-1], zm.mod, zm.params, zm.input_name,
                      _batches(zm.calib, batch, calib_batches))


# --------------------------------------------------------------------------- #
# timing
# --------------------------------------------------------------------------- #
def median_ms(run: Callable[[], object], runs: int) -> float:
    # each case in a block of runs: timed round-robin, every runtime ran right after the other's
    # worker threads were still spinning (ORT int8 on one conv layer read 9.7 ms, not 0.5 ms)
    run()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def tvm_case(mod, x, trials: int, db: Optional[str], runs: int):
    t = time.perf_counter()
    model = tvm_quant_ext.build(mod, HOST_TARGET, tune_trials=trials, tuning_db=db)
    build_s = time.perf_counter() - t
    return median_ms(lambda: model(x), runs), build_s


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_int8_model(bm: BenchModel, batch: int) -> str:
    """quantize_static: QDQ, per-channel weights, calibrated on the calibration batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    out = bm.onnx_path[:-len(".onnx")] + INT8_SUFFIX
    if os.path.exists(out):
        return out

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{bm.input_name: c} for c in bm.calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(bm.onnx_path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return out


# --------------------------------------------------------------------------- #
def bench(name: str, batch: int, args) -> Dict[str, float]:
    bm = load_model(name, batch, args.calib_batches)
    x = bm.calib[0]
    row = {"model": name, "batch": batch}
    db_base = os.path.join(args.db_root, f"{name}_b{batch}_{HOST_TARGET['mcpu']}_t{args.trials}")

    fp32 = passes.prepare(bm.mod, bm.params)
    row["tvm_fp32"], row["tune_fp32_s"] = tvm_case(fp32, x, args.trials, db_base + "_fp32", args.runs)
    print(f"  {name} b{batch} TVM fp32 {row['tvm_fp32']:.2f} ms (build+tune {row['tune_fp32_s']:.0f} s)",
          flush=True)
    int8 = tvm_quant_ext.quantize(bm.mod, bm.params, dataset=bm.calib,
                                  config=QConfig(mode="integer"))
    row["tvm_int8"], row["tune_int8_s"] = tvm_case(int8, x, args.trials, db_base + "_int8", args.runs)
    print(f"  {name} b{batch} TVM int8 {row['tvm_int8']:.2f} ms (build+tune {row['tune_int8_s']:.0f} s)",
          flush=True)

    feed = {bm.input_name: x}
    sess = ort_session(bm.onnx_path, args.ort_threads)
    row["ort_fp32"] = median_ms(lambda: sess.run(None, feed), args.runs)
    sess = ort_session(ort_int8_model(bm, batch), args.ort_threads)
    row["ort_int8"] = median_ms(lambda: sess.run(None, feed), args.runs)
    print(f"  {name} b{batch} ORT fp32 {row['ort_fp32']:.2f} ms, int8 {row['ort_int8']:.2f} ms",
          flush=True)
    return row


def table(rows: List[Dict[str, float]], args, wall_s: float) -> str:
    lines = [
        f"TVM target `{HOST_TARGET}`, MetaSchedule {args.trials} trials per task for both TVM "
        f"fp32 and TVM int8; int8 layers fused with their epilogue (VNNI conv2d/dense, int8 depthwise), default CPU schedule elsewhere. ONNX Runtime "
        f"{args.ort_threads} threads. Median of {args.runs} runs (ms). Whole run {wall_s / 60:.1f} min.",
        "",
        "| model | batch | TVM fp32 | TVM int8 | TVM int8 speed-up over fp32 | ORT fp32 | ORT int8 "
        "| TVM int8 speed vs ORT int8 | build+tune s (fp32 / int8) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['tvm_fp32']:.2f} | {r['tvm_int8']:.2f} "
            f"| {r['tvm_fp32'] / r['tvm_int8']:.2f}x | {r['ort_fp32']:.2f} | {r['ort_int8']:.2f} "
            f"| {r['ort_int8'] / r['tvm_int8']:.2f}x | {r['tune_fp32_s']:.0f} / {r['tune_int8_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--trials", type=int, default=4,
                    help="MetaSchedule trials per tuning task, same for fp32 and int8 (default 4: "
                         "ResNet-50 then tunes in minutes on 2 cores, not hours)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--ort-threads", type=int, default=2)
    ap.add_argument("--db-root", default=os.path.join(zoo.cache_root(), "tuning"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "docs", "bench_cpu.md"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    rows = []
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for batch in args.batches:
        for name in args.models:
            rows.append(bench(name, batch, args))
            md = table(rows, args, time.perf_counter() - start)
            with open(args.out, "w") as f:  # after every row: a cut-short run still leaves a table
                f.write("# CPU benchmark (scripts/bench_cpu.py)\n\n" + md)
    print(md)


if __name__ == "__main__":
    main()
