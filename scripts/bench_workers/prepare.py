"""Everything the workers share for one (model, batch) case, written once under the case folder:
the ONNX file every runtime reads, the calibration batches every quantizer uses (``calib.npy``,
shape (batches, batch, C, H, W); the timed input is batch 0), ONNX Runtime's four int8 forms,
and the model's multiply-accumulate count.

    python -m bench_workers.prepare --model resnet50_v2 --batch 8 --calib-images 16 --work DIR

prints the case's manifest (JSON) as its last line. Runs in this project's venv (torch, onnx,
onnxruntime); the driver runs it as a subprocess so none of their thread pools live in the
driver while it times the workers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bench_workers.torch_models import TORCH_MODELS  # noqa: E402

ZOO_MODELS = ("mnist_cnn", "efficientnet_lite0")
ALL_MODELS = ("efficientnet_lite0", "resnet50_v2", "mobilenet_v2", "mnist_cnn", "conv3x3_64")
# (activation type, format): quantize_static's default is QDQ S8S8, its slowest form here;
# U8S8 is its fast one (uint8 activations feed the u8 x s8 dot products directly)
ORT_FORMS = {"qdq_s8s8": ("QInt8", "QDQ"), "qdq_u8s8": ("QUInt8", "QDQ"),
             "qop_s8s8": ("QInt8", "QOperator"), "qop_u8s8": ("QUInt8", "QOperator")}


def zoo_onnx_path(name: str, batch: int) -> str:
    """The ONNX file the zoo exported (and cached) for ``name`` at ``batch``: the zoo's own
    naming, so the bench feeds ONNX Runtime and OpenVINO exactly what TVM imported."""
    from tvm_quant_ext.zoo import cache_root, efficientnet, mnist
    from tvm_quant_ext.zoo.cache import fingerprint

    _, weights = {"mnist_cnn": mnist, "efficientnet_lite0": efficientnet}[name].torch_model()
    path = os.path.join(cache_root(), f"{name}_b{batch}_{fingerprint(weights)}.onnx")
    if not os.path.exists(path):
        raise FileNotFoundError(f"zoo.load({name!r}, {batch}) left no ONNX export at {path}")
    return path


def calibration_images(name: str) -> np.ndarray:
    """Real images where the model has them: the zoo's MNIST digits for the MNIST CNN, the zoo's
    ImageNet-style photos (Lite0 preprocessing) for every 224x224 RGB model; random normal
    inputs for the single conv layer (64 channels: no images fit)."""
    from tvm_quant_ext import zoo
    from tvm_quant_ext.zoo import efficientnet

    if name == "mnist_cnn":
        return zoo.load("mnist_cnn", 1).calib
    if name == "conv3x3_64":
        return np.random.default_rng(0).standard_normal((16,) + TORCH_MODELS[name][1]).astype("float32")
    return efficientnet.images(zoo.cache_root())["calib"]


def batches(images: np.ndarray, batch: int, count: int) -> np.ndarray:
    reps = -(-batch * count // len(images))
    pool = np.concatenate([images] * reps)
    return np.stack([pool[i * batch:(i + 1) * batch] for i in range(count)]).astype("float32")


def count_macs(onnx_path: str) -> Dict[str, int]:
    """Multiply-accumulates of Conv (depthwise counted apart) and Gemm / MatMul, read from the
    shape-inferred ONNX graph."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(onnx_path))
    graph = model.graph
    shapes = {i.name: list(numpy_helper.to_array(i).shape) for i in graph.initializer}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes.setdefault(vi.name, dims)
    macs = {"conv": 0, "depthwise": 0, "matmul": 0}
    for node in graph.node:
        if node.op_type == "Conv":
            out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out is None or weight is None:
                raise ValueError(f"{onnx_path}: no shape for Conv {node.name!r}")
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kind = "depthwise" if group > 1 and weight[1] == 1 else "conv"
            macs[kind] += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a is None or out is None:
                raise ValueError(f"{onnx_path}: no shape for {node.op_type} {node.name!r}")
            macs["matmul"] += int(np.prod(out)) * int(a[-1])
    macs["total"] = sum(macs.values())
    return macs


def ort_quantize(src: str, dst: str, calib: np.ndarray, input_name: str, form: str) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    activation, fmt = ORT_FORMS[form]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: b} for b in calib])

        def get_next(self):
            return next(self.items, None)

    tmp = dst + ".tmp.onnx"
    quantize_static(src, tmp, Reader(), quant_format=getattr(QuantFormat, fmt),
                    activation_type=getattr(QuantType, activation),
                    weight_type=QuantType.QInt8, per_channel=True)
    os.replace(tmp, dst)


def onnx_input_name(path: str) -> str:
    import onnx

    model = onnx.load(path, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one data input, found {inputs}")
    return inputs[0]


def prepare(name: str, batch: int, calib_images: int, work: str) -> dict:
    if name not in ALL_MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {ALL_MODELS}")
    case_dir = os.path.join(work, f"{name}_b{batch}_c{calib_images}")
    os.makedirs(case_dir, exist_ok=True)
    if name in ZOO_MODELS:
        from tvm_quant_ext import zoo

        zoo.load(name, batch)  # exports (or finds) the cached ONNX file
        onnx_path = zoo_onnx_path(name, batch)
    else:
        from tvm_quant_ext.frontend.torch import export_onnx

        factory, shape = TORCH_MODELS[name]
        onnx_path = os.path.join(case_dir, "model.onnx")
        if not os.path.exists(onnx_path):
            export_onnx(factory(), np.zeros((batch,) + shape, np.float32), onnx_path)
    manifest_path = os.path.join(case_dir, "manifest.json")
    stamp = [onnx_path, int(os.path.getmtime(onnx_path))]
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("stamp") == stamp and all(
                os.path.exists(p) for p in manifest["ort_int8"].values()):
            return manifest
    calib = batches(calibration_images(name), batch, -(-calib_images // batch))
    calib_path = os.path.join(case_dir, "calib.npy")
    np.save(calib_path, calib)
    input_name = onnx_input_name(onnx_path)
    ort_int8 = {}
    for form in ORT_FORMS:
        ort_int8[form] = os.path.join(case_dir, f"ort_{form}.onnx")
        ort_quantize(onnx_path, ort_int8[form], calib, input_name, form)
    manifest = {"model": name, "batch": batch, "onnx": onnx_path, "input_name": input_name,
                "calib": calib_path, "calib_images": int(calib.shape[0] * calib.shape[1]),
                "macs": count_macs(onnx_path), "ort_int8": ort_int8, "case_dir": case_dir,
                "zoo": name in ZOO_MODELS, "stamp": stamp}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def relax_model(manifest: dict):
    """(mod, params) of the case's model for TVM: the zoo's import for zoo models (same ONNX
    file), ``frontend.from_onnx`` of the case's file otherwise."""
    if manifest["zoo"]:
        from tvm_quant_ext import zoo

        zm = zoo.load(manifest["model"], manifest["batch"])
        if zoo_onnx_path(manifest["model"], manifest["batch"]) != manifest["onnx"]:
            raise RuntimeError(f"the zoo's ONNX export for {manifest['model']} changed since the "
                               "case was prepared; rerun the bench")
        return zm.mod, zm.params
    from tvm_quant_ext.frontend import from_onnx

    return from_onnx(manifest["onnx"])


def calibration_list(manifest: dict) -> List[np.ndarray]:
    return list(np.load(manifest["calib"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, choices=ALL_MODELS)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--calib-images", type=int, required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args(argv)
    print(json.dumps(prepare(args.model, args.batch, args.calib_images, args.work)))


if __name__ == "__main__":
    main()
