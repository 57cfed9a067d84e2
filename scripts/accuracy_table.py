"""Accuracy of bias correction and cross-layer equalization (alone and combined) against ONNX
Runtime's quantize_static, on the zoo models, in one run.

    python scripts/accuracy_table.py [--models efficientnet_lite0 mnist_cnn fashion_resnet_v2]
                                     [--limit N] [--fashion-limit 3000]
                                     [--grid techniques|adaround|budget] [--only TEXT ...]
                                     [--no-onnxruntime] [--no-high-bias-absorption]

``--only`` keeps the rows whose label contains one of the TEXTs (e.g. "per-tensor, sym,
equalize"); ``--no-high-bias-absorption`` runs equalization without it (to measure what it adds).

The grid: per-channel weights with symmetric and asymmetric activations and the techniques
alone and combined on every model; per-tensor weights (with and without equalization) on
EfficientNet-Lite0, where the per-tensor case is the problem equalization addresses.

Protocol (the one of docs/calibrators.md): each model's zoo calibration images, its zoo eval
sets; agreement = top-1 equal to fp32's; aggregate SNR = 10 log10(sum ref^2 / sum (ref - q)^2)
over all output vectors, ref = fp32. One evaluation pass per model runs fp32 and every one of
our configurations on the same images (tvm_quant_ext.evaluate). ONNX Runtime: quantize_static,
QDQ, per-channel int8 weights, each of its calibrators (MinMax, Entropy, Percentile) with int8
and uint8 activations, on the same calibration images; its best by SNR is the row shown
(its others are in the JSON). The Gluon Fashion-MNIST models have no ONNX export here, so they
have no ONNX Runtime row. "quantize s" is the time of prepare + calibrate + bias correction
+ realize for the row (calibrations are shared between rows with the same calibration, so the
first row of each calibration carries it). Writes docs/accuracy.md and docs/accuracy.json.
``--grid adaround``: the adaptive-rounding rows instead (same protocol, no ONNX Runtime rows),
written to accuracy_adaround.json and printed for accuracy.md's "Adaptive rounding" section;
``--grid budget``: the mixed-precision rows (per-channel, asymmetric activations,
``precision_budget=0.1`` with and without adaptive rounding and bias correction, ONNX Runtime's
rows beside them), written to accuracy_budget.json and printed for accuracy.md's section.
``--only``: just the rows whose label contains one of the texts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tvm_quant_ext import QConfig, zoo
from tvm_quant_ext.evaluate import evaluate
from tvm_quant_ext.runner import QuantRunner, split_batches

ROOT = Path(__file__).resolve().parent.parent
TECHNIQUES = {"none": {}, "bias correction": {"bias_correction": True},
              "equalize": {"equalize": True},
              "equalize + bias correction": {"equalize": True, "bias_correction": True},
              "adaround": {"weight_rounding": "adaround"},
              "adaround + bias correction": {"weight_rounding": "adaround", "bias_correction": True},
              "equalize + adaround": {"equalize": True, "weight_rounding": "adaround"},
              "equalize + adaround + bias correction": {"equalize": True, "weight_rounding": "adaround",
                                                        "bias_correction": True},
              "budget 0.1": {"precision_budget": 0.1},
              "bias correction + budget 0.1": {"bias_correction": True, "precision_budget": 0.1},
              "adaround + budget 0.1": {"weight_rounding": "adaround", "precision_budget": 0.1},
              "adaround + bias correction + budget 0.1": {"weight_rounding": "adaround",
                                                          "bias_correction": True,
                                                          "precision_budget": 0.1}}
# --grid: which rows to run (the adaptive-rounding and the mixed-precision rows are their own
# sections of accuracy.md)
GRIDS = ("techniques", "adaround", "budget")


def our_configs(short: bool, grid_name: str = "techniques"):
    """(label, QConfig): the techniques alone and combined, per-channel and per-tensor weights,
    symmetric and asymmetric activations. ``short`` (the small models, where there is little
    to win): per-channel only. ``grid_name="adaround"``: the adaptive-rounding rows instead."""
    if grid_name == "budget":
        return _labelled([(True, False, "adaround"), (True, False, "budget 0.1"),
                          (True, False, "bias correction + budget 0.1"),
                          (True, False, "adaround + budget 0.1"),
                          (True, False, "adaround + bias correction + budget 0.1")])
    if grid_name == "adaround":
        grid = [(True, True, "adaround"), (True, True, "adaround + bias correction"),
                (True, False, "adaround"), (True, False, "adaround + bias correction")]
        if not short:
            grid += [(False, True, "adaround"), (False, False, "equalize + adaround"),
                     (False, False, "equalize + adaround + bias correction")]
        return _labelled(grid)
    grid = [(True, True, "none"), (True, True, "bias correction"),
            (True, True, "equalize + bias correction"),
            (True, False, "none"), (True, False, "bias correction"), (True, False, "equalize"),
            (True, False, "equalize + bias correction")]
    if not short:
        grid += [(False, True, "none"), (False, True, "equalize"), (False, False, "equalize"),
                 (False, False, "equalize + bias correction")]
    return _labelled(grid)


def _labelled(grid):
    out = []
    for per_channel, symmetric, name in grid:
        label = (f"ours, {'per-channel' if per_channel else 'per-tensor'}, "
                 f"{'sym' if symmetric else 'asym'}, {name}")
        out.append((label, QConfig(per_channel=per_channel, activation_symmetric=symmetric,
                                   **TECHNIQUES[name])))
    return out


def ort_rows(model, images_by_set, limit):
    """ONNX Runtime quantize_static (QDQ, per-channel) with each calibrator and activation type:
    [(label, top1, labeled, agree, n, snr)]."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    from tvm_quant_ext.frontend.torch import export_onnx

    batch = model.batch_size
    calib = split_batches(model.calib, batch)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        fp32_path = os.path.join(td, "fp32.onnx")
        export_onnx(model.torch_model, np.zeros((batch,) + model.calib.shape[1:], np.float32), fp32_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        fp32 = ort.InferenceSession(fp32_path, options, providers=["CPUExecutionProvider"])
        name = fp32.get_inputs()[0].name

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter(calib)

            def get_next(self):
                item = next(self.items, None)
                return None if item is None else {name: item}

        for method in (CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile):
            for act in (QuantType.QInt8, QuantType.QUInt8):
                start = time.time()
                path = os.path.join(td, f"q_{method.name}_{act.name}.onnx")
                quantize_static(fp32_path, path, Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                                calibrate_method=method)
                seconds = time.time() - start
                sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                top1 = labeled = agree = n = 0
                signal = noise = 0.0
                for images, labels in images_by_set:
                    for i in range(0, len(images[:limit]) - batch + 1, batch):
                        x = images[i:i + batch]
                        ref = fp32.run(None, {name: x})[0].reshape(batch, -1).astype(np.float64)
                        out = sess.run(None, {name: x})[0].reshape(batch, -1).astype(np.float64)
                        agree += int(np.sum(ref.argmax(1) == out.argmax(1)))
                        n += batch
                        if labels is not None:
                            top1 += int(np.sum(out.argmax(1) == labels[i:i + batch]))
                            labeled += batch
                        signal += float(np.sum(ref ** 2))
                        noise += float(np.sum((ref - out) ** 2))
                snr = 10 * np.log10(signal / noise) if noise else float("inf")
                rows.append({"label": f"ONNX Runtime {ort.__version__} QDQ per-channel, "
                                      f"{method.name}, {'int8' if act == QuantType.QInt8 else 'uint8'}",
                             "quant_top1": top1, "n_labeled": labeled, "agree": agree, "n": n,
                             "snr_db": float(snr), "worst_layers": [], "quantize_s": seconds})
    return rows


def measure(name: str, limit, log, grid_name: str = "techniques", with_ort: bool = True,
            only=None):
    model = zoo.load(name)
    entry = zoo.MODELS[name]
    sets = [s for s in model.eval_sets if entry.eval_sets is None or s.name in entry.eval_sets]
    runner = QuantRunner(model.mod, model.params, split_batches(model.calib, model.batch_size),
                         name=name, log=log)
    configs = our_configs(short=name != "efficientnet_lite0", grid_name=grid_name)
    if only:
        configs = [(label, c) for label, c in configs if any(o in label for o in only)]
        if not configs:
            raise SystemExit(f"--only {only}: no row of the {grid_name} grid matches on {name}")
    seconds = {}
    for label, config in configs:
        start = time.time()
        runner.quantized(config)
        seconds[label] = time.time() - start
        log(f"[{name}] {label}: quantized in {seconds[label]:.1f} s")
    rows = evaluate(model, [c for _, c in configs], eval_sets=[s.name for s in sets], limit=limit,
                    runner=runner, progress=False, log=log)
    records = [{"label": label, "quant_top1": r.quant_top1, "n_labeled": r.n_labeled,
                "fp32_top1": r.fp32_top1, "agree": round(r.agreement * r.n_images),
                "n": r.n_images, "snr_db": r.snr_db,
                "worst_layers": [[p, round(s, 1)] for p, s in r.worst_layers],
                "quantize_s": seconds[label],
                "raised": ((r.report.precision if r.report else None) or {}).get("raised")}
               for (label, _), r in zip(configs, rows)]
    ort = []
    if with_ort and model.torch_model is not None:
        ort = ort_rows(model, [(s.images, s.labels) for s in sets], limit)
    return records, ort


def section(name, records, ort) -> str:
    best_ort = max(ort, key=lambda r: r["snr_db"]) if ort else None
    first = records[0]
    lines = [f"**{name}**: fp32 top-1 {first['fp32_top1']}/{first['n_labeled']}; {first['n']} "
             "images compared with fp32", "",
             "| tool / config | top-1 | agreement | SNR dB | worst layers (SNR dB) | quantize s |",
             "|---|---|---|---|---|---|"]
    shown = ([best_ort] if best_ort else []) + records
    for r in shown:
        worst = ", ".join(f"{p} {s}" for p, s in r["worst_layers"])
        label = r["label"] + (" (its best)" if r is best_ort else "")
        lines.append(f"| {label} | {r['quant_top1']}/{r['n_labeled']} | {r['agree']}/{r['n']} "
                     f"| {r['snr_db']:.2f} | {worst} | {r['quantize_s']:.1f} |")
    if ort:
        lines += ["", "ONNX Runtime, every calibrator: " + "; ".join(
            f"{r['label'].split(', ', 1)[1]} {r['snr_db']:.2f} dB ({r['agree']}/{r['n']})" for r in ort)]
    return "\n".join(lines)


HEADER = """# Accuracy: bias correction, equalization, adaptive rounding, mixed precision

Written by `scripts/accuracy_table.py` (its docstring gives the protocol); int8 everywhere,
32-bit bias, max calibrators, simulate mode (integer mode agrees within one LSB per point).

- **bias correction** (`QConfig(bias_correction=True)`, `passes/bias_correction.py`): per
  layer, in graph order, the per-channel mean of (quantized - float) layer output on the
  calibration images, with every earlier layer already quantized and corrected, is subtracted
  from the float bias before it is quantized at `s_in*s_w`. A torch interpreter runs the float
  and the quantized model side by side, one binding at a time over all calibration batches,
  so the sequential correction is one pass of compute (its cost is in "quantize s").
- **equalize** (`QConfig(equalize=True)`, `passes/prepare/equalize.py`): cross-layer
  equalization of conv -> [ReLU | ReLU6] -> conv pairs (depthwise included), iterated over
  the chains; through ReLU6 the bound moves with the scale (`minimum(relu(x), 6/s)` per
  channel) and only downward; dead channels are left alone; then exact high-bias absorption
  (see "High-bias absorption" below).
- Mixed precision (`precision_budget`, `--grid budget`) and adaptive rounding
  (`weight_rounding="adaround"`, `--grid adaround`) have their own sections, below the tables.

"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "mnist_cnn",
                                                        "fashion_resnet_v2"], choices=sorted(zoo.MODELS))
    parser.add_argument("--limit", type=int, default=None, help="at most N images per eval set")
    parser.add_argument("--fashion-limit", type=int, default=3000,
                        help="at most N Fashion-MNIST test images (the protocol asks >= 3000)")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--no-onnxruntime", action="store_true", help="no ONNX Runtime rows")
    parser.add_argument("--no-high-bias-absorption", action="store_true",
                        help="equalize without high-bias absorption")
    parser.add_argument("--from-json", action="store_true",
                        help="rewrite accuracy.md from the accuracy.json of an earlier run")
    parser.add_argument("--grid", choices=GRIDS, default="techniques",
                        help="techniques: the table of accuracy.md; adaround: the adaptive-rounding "
                             "rows only (no ONNX Runtime rows; written to accuracy_adaround.json, "
                             "the markdown printed for accuracy.md's own section)")
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="run only the rows whose label contains one of these texts, e.g. "
                             "'per-channel, asym, adaround'")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        data = json.loads((out / "accuracy.json").read_text())
        sections = [section(name, d["ours"], d["onnxruntime"])
                    + (f"\n\n({d['seconds']:.0f} s on 2 shared cores)" if "seconds" in d else "")
                    for name, d in data.items()]
        (out / "accuracy.md").write_text(HEADER + "\n\n".join(sections) + "\n")
        return 0

    def log(*a):
        print(*a, file=sys.stderr, flush=True)

    if args.no_high_bias_absorption:
        from tvm_quant_ext.passes.prepare import equalize
        equalize.ABSORB_HIGH_BIAS = False
    sections, data = [], {}
    for name in args.models:
        start = time.time()
        limit = args.fashion_limit if name.startswith("fashion") else args.limit
        records, ort = measure(name, limit, log, args.grid,
                               with_ort=args.grid != "adaround" and not args.no_onnxruntime,
                               only=args.only)
        seconds = time.time() - start
        sections.append(section(name, records, ort) + f"\n\n({seconds:.0f} s on 2 shared cores)")
        data[name] = {"ours": records, "onnxruntime": ort, "seconds": seconds}
        print(sections[-1], flush=True)
        json_name = "accuracy.json" if args.grid == "techniques" else f"accuracy_{args.grid}.json"
        (out / json_name).write_text(json.dumps(data, indent=1) + "\n")
    if args.grid == "techniques":
        (out / "accuracy.md").write_text(HEADER + "\n\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
