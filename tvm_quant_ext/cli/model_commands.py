"""``tvm-quant quantize`` and ``tvm-quant eval MODEL``: a user's model file, their data.

    tvm-quant quantize net.onnx --calib photos/ --preprocess imagenet -o out/net
    tvm-quant quantize resnet-symbol.json --params resnet-0000.params \\
        --input-shape data=1,3,224,224 --calib val.rec --calib-limit 200 --mode integer -o out/r
    tvm-quant eval net.onnx --calib photos/ --data val/ --json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Tuple

import numpy as np

from ..config_flags import add_qconfig_arguments, qconfig_from_args
from ..datasets import PRESETS, LAYOUTS, load_data, preprocess_for_input


def parse_input_shape(text: str) -> Tuple[str, Tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=D1,D2,... with positive sizes, got {text!r}")
    return name, shape


def parse_floats(text: str) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def add_model_arguments(parser: argparse.ArgumentParser, model_required: bool = True,
                        extra_choices=None) -> None:
    parser.add_argument("model", nargs=None if model_required else "?", metavar="MODEL",
                        help="an .onnx file, an MXNet -symbol.json (with --params), or a "
                             "torch.export .pt2")
    parser.add_argument("--params", help="the MXNet .params file of a -symbol.json")
    parser.add_argument("--input-shape", type=parse_input_shape, action="append", default=[],
                        metavar="NAME=D1,D2,...", help="fix an input's shape (needed for "
                        "symbolic dimensions and MXNet symbols); repeat per input")
    parser.add_argument("--calib", metavar="PATH", help="calibration data: an image folder, a .rec, "
                        "or preprocessed arrays (.npy / .npz)")
    parser.add_argument("--calib-limit", type=int, default=None, metavar="N",
                        help="use the first N calibration inputs (default: all)")
    pre = parser.add_argument_group("image preprocessing (folders and .rec; arrays are used as given)")
    pre.add_argument("--preprocess", default="imagenet", choices=sorted(PRESETS),
                     help="imagenet: resize 256, crop 224, ImageNet mean/std; inception: 299, "
                          "[-1, 1]; lite: (x-127)/128; none: raw pixels (default %(default)s)")
    pre.add_argument("--size", type=int, help="crop size (default: the model input's)")
    pre.add_argument("--resize", type=int, help="short side before the crop")
    pre.add_argument("--mean", type=parse_floats, help="per-channel mean, pixel units (0..255)")
    pre.add_argument("--std", type=parse_floats, help="per-channel std, pixel units")
    pre.add_argument("--layout", choices=LAYOUTS, help="default: from the model input's shape")
    pre.add_argument("--bgr", action="store_true", help="channels in BGR order")
    add_qconfig_arguments(parser, extra_choices)


def load_user_model(args):
    """(mod, params, input name, input shape) of the model the flags name."""
    from ..frontend.model_file import load_model_file

    shapes = dict(args.input_shape) if args.input_shape else None
    mod, params = load_model_file(args.model, args.params, shapes)
    inputs = list(mod["main"].params)[: len(mod["main"].params) - len(params)]
    if len(inputs) != 1:
        raise ValueError(f"{args.model}: the model has {len(inputs)} inputs "
                         f"{[v.name for v in inputs]}; the command line handles one-input models "
                         "(several inputs: tvm_quant_ext.quantize with a dataset of dicts)")
    from ..passes.prepare import CheckInputs

    CheckInputs()(mod)  # symbolic dimensions are an error here, before any data is read
    shape = tuple(int(d) for d in inputs[0].ty.shape)
    return mod, params, inputs[0].name, shape


def read_inputs(args, path: str, shape, limit: Optional[int], flag: str):
    preprocess = None
    if not path.endswith((".npy", ".npz")):
        overrides = {k: getattr(args, k) for k in ("size", "resize", "mean", "std", "layout")
                     if getattr(args, k) is not None}
        if args.bgr:
            overrides["bgr"] = True
        preprocess = preprocess_for_input(args.preprocess, shape, **overrides)
    data = load_data(path, preprocess, limit, flag=flag)
    if tuple(data.images.shape[1:]) != tuple(shape[1:]):
        raise ValueError(f"{flag} {path}: inputs of shape {tuple(data.images.shape[1:])}, the model "
                         f"input is {tuple(shape)} (check --layout / --size or the arrays)")
    if data.images.dtype != np.float32:
        # documented cast: integer pixels (uint8 arrays) and float64 arrays keep their values
        data.images = data.images.astype(np.float32)
    if len(data.images) < shape[0]:
        raise ValueError(f"{flag} {path}: {len(data.images)} input(s), fewer than the model's "
                         f"batch of {shape[0]}")
    return data


def _user_record(name, mod, params, input_name, shape, calib, eval_sets):
    from ..zoo import ZooModel

    return ZooModel(name=name, mod=mod, params=params, input_name=input_name, batch_size=shape[0],
                    preprocess=None, calib=calib, eval_sets=eval_sets)


def _runner(args, mod, params, shape, log):
    from ..runner import QuantRunner, split_batches

    if not args.calib:
        raise ValueError("--calib is required: the images (or arrays) to calibrate on")
    calib = read_inputs(args, args.calib, shape, args.calib_limit, "--calib")
    name = os.path.basename(args.model)
    return QuantRunner(mod, params, split_batches(calib.images, shape[0]), "llvm", name=name,
                       log=log, progress=not getattr(args, "json", False)), calib


def target_of(args) -> dict:
    """The target the command line names; ``--mcpu host``: this machine's CPU, with AMX's
    features where it runs AMX (``backend.target.host_target``)."""
    target = {"kind": args.target}
    if args.target == "cuda":
        target["arch"] = args.arch
    elif args.mcpu == "host":
        from ..backend.target import host_target

        target = host_target()
    elif args.mcpu:
        target["mcpu"] = args.mcpu
    return target


def cmd_quantize(args) -> int:
    from ..artifacts import check_output, save_artifacts
    from ..backend.build import compile_module
    from ..evaluate import evaluate
    from ..report import get_report
    from ..zoo import EvalSet
    from .summary import quantize_summary

    if args.target == "cuda" and args.tuning_db:
        raise ValueError("--tuning-db is for CPU targets; CUDA builds use dlight's default schedules")
    config = qconfig_from_args(args)
    check_output(args.output)  # a bad -o fails now, not after calibrating
    start = time.perf_counter()
    mod, params, input_name, shape = load_user_model(args)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    runner, calib = _runner(args, mod, params, shape, log)
    record = _user_record(runner.name, mod, params, input_name, shape, calib.images,
                          [EvalSet("calibration", calib.images, calib.labels)])
    row, = evaluate(record, [config], progress=False, log=log, runner=runner)
    qmod = runner.quantized(config)
    quantize_s = time.perf_counter() - start
    start = time.perf_counter()
    executable = compile_module(qmod, target_of(args), tuning_db=args.tuning_db)
    compile_s = time.perf_counter() - start
    report = get_report(qmod).to_dict()
    report["calibration"] = {"source": calib.source, "images": int(len(calib.images)),
                             "output_snr_db": row.snr_db, "layer_snr_db": row.layer_snr,
                             "agreement_with_fp32": row.agreement}
    report["target"] = target_of(args)
    paths = save_artifacts(args.output, qmod, executable, report)
    print(quantize_summary(report, paths, quantize_s, compile_s))
    return 0


def cmd_eval_model(args, modes: List[str]) -> int:
    from ..evaluate import evaluate
    from ..zoo import EvalSet
    from .zoo_commands import print_eval

    config = qconfig_from_args(args)
    if not args.data:
        raise ValueError("--data is required with a model file: the images to evaluate on")
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    mod, params, input_name, shape = load_user_model(args)
    data = read_inputs(args, args.data, shape, args.limit, "--data")
    runner, calib = _runner(args, mod, params, shape, log)
    record = _user_record(runner.name, mod, params, input_name, shape, calib.images,
                          [EvalSet(os.path.basename(os.path.normpath(args.data)), data.images,
                                   data.labels)])
    rows = evaluate(record, [config.replace(mode=m) for m in modes], progress=not args.json,
                    log=log, runner=runner)
    print_eval(rows, args.json)
    return 0


__all__ = ["add_model_arguments", "cmd_eval_model", "cmd_quantize", "load_user_model",
           "parse_input_shape", "read_inputs", "target_of"]
