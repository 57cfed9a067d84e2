"""tvm-quant: the command line way in.

    tvm-quant quantize net.onnx --calib photos/ -o out/net       # .so + report + saved module
    tvm-quant eval net.onnx --calib photos/ --data val/ [--json]  # fp32 vs int8 on your data
    tvm-quant demo                      # both zoo models, 8- vs 32-bit bias, one table
    tvm-quant eval --model mnist_cnn --nbit-bias 32 --calibrate-mode max --per-channel [--json]
    tvm-quant eval --model efficientnet_lite0 --mode both   # simulate and integer, LSB difference
    tvm-quant sweep --model fashion_resnet_v2 --num-images 10000 --nbit-bias 8 9 16 32 \\
        --calibrators power2 max --out docs/bias_sweep_fashion   # CSV + table + plot

Every QConfig field is a flag (``--nbit-bias``, ``--calibrate-mode``, ``--skip-layers``, ...;
``tvm-quant quantize --help`` lists them) or a key of ``--config FILE.toml|json``.
"""
from __future__ import annotations

import argparse
import sys

from .. import zoo
from .model_commands import add_model_arguments, cmd_eval_model, cmd_quantize
from .zoo_commands import cmd_demo, cmd_eval_zoo

# what a user's mistake raises; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, TypeError, ImportError, OSError)


def cmd_eval(args) -> int:
    from ..config_flags import qconfig_from_args

    modes = ["simulate", "integer"] if args.qconfig_mode == "both" else [args.qconfig_mode or "simulate"]
    args.qconfig_mode = None  # the mode(s) are applied per row
    if (args.model is None) == (args.zoo_model is None):
        raise ValueError("give a model file (tvm-quant eval net.onnx --calib ... --data ...) or a "
                         f"zoo model (--model NAME, one of {sorted(zoo.MODELS)}), not both")
    if args.zoo_model is not None:
        if args.calib or args.data:
            raise ValueError("--calib / --data are for model files; a zoo model brings its own data")
        return cmd_eval_zoo(args, qconfig_from_args(args), modes)
    return cmd_eval_model(args, modes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvm-quant", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    qz = sub.add_parser("quantize", help="a model file + calibration data -> OUT.so, OUT.json "
                                         "(report), OUT.relax.json (quantized module)")
    add_model_arguments(qz)
    qz.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="output stem: writes OUT.so, OUT.json and OUT.relax.json")
    qz.add_argument("--target", default="llvm", choices=("llvm", "cuda"))
    qz.add_argument("--mcpu", help="LLVM CPU, e.g. znver4, cascadelake (avx512vnni: VNNI kernels), "
                    "sapphirerapids (AMX kernels), or host: this machine's, AMX included")
    qz.add_argument("--arch", default="sm_80", help="CUDA arch for --target cuda (default %(default)s)")
    qz.add_argument("--tuning-db", help="a MetaSchedule database directory to build from (CPU)")
    qz.set_defaults(func=cmd_quantize)

    ev = sub.add_parser("eval", help="quantize and compare with fp32: a model file on your data, "
                                     "or a zoo model (--model) on its own")
    add_model_arguments(ev, model_required=False, extra_choices={"mode": ["both"]})
    ev.add_argument("--model", dest="zoo_model", choices=sorted(zoo.MODELS), help="a zoo model")
    ev.add_argument("--data", metavar="PATH", help="evaluation images (labeled folders, a labels.txt, "
                    "or unlabeled images), a .rec, or arrays (.npz with labels)")
    ev.add_argument("--limit", type=int, default=None, help="at most N images per eval set")
    ev.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    ev.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="quantize both zoo models with 8- and 32-bit bias")
    demo.add_argument("--limit", type=int, default=None, help="at most N images per eval set")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    from ..sweep import add_arguments, run_from_args

    sw = sub.add_parser("sweep", help="top-1 over bias bits x calibrator x granularity x model "
                                      "(CSV, markdown table, PNG plot)")
    add_arguments(sw)
    sw.set_defaults(func=run_from_args)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"tvm-quant: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
