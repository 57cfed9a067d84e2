"""OpenVINO worker, run with the bench venv's python (no TVM there): spec {"manifest",
"threads", "variant"}:

- ``fp32``: the ONNX model compiled with ``INFERENCE_PRECISION_HINT=f32``;
- ``default``: no precision hint (on a CPU with AVX512_BF16 OpenVINO then runs bf16);
- ``int8``: ``nncf.quantize`` of the ONNX model on the case's calibration batches (the same
  ones every quantizer gets), default precision hint; the quantized model is cached next to the
  case's files (``ov_int8.xml``) and reused while the calibration file is unchanged.

Every variant: ``INFERENCE_NUM_THREADS`` = threads, one stream, latency hint.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from bench_workers.protocol import serve


def _int8_model(core, manifest: dict, calib: np.ndarray):
    import nncf
    import openvino as ov

    xml = os.path.join(manifest["case_dir"], "ov_int8.xml")
    if os.path.exists(xml) and os.path.getmtime(xml) > os.path.getmtime(manifest["calib"]):
        return core.read_model(xml)
    quantized = nncf.quantize(core.read_model(manifest["onnx"]), nncf.Dataset(list(calib)),
                              subset_size=len(calib))
    ov.save_model(quantized, xml)
    return quantized


def load(spec: dict):
    import openvino as ov

    with open(spec["manifest"]) as f:
        manifest = json.load(f)
    calib = np.load(manifest["calib"])
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": int(spec["threads"]), "NUM_STREAMS": 1,
              "PERFORMANCE_HINT": "LATENCY"}
    variant = spec["variant"]
    if variant == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
        model = core.read_model(manifest["onnx"])
    elif variant == "default":
        model = core.read_model(manifest["onnx"])
    elif variant == "int8":
        model = _int8_model(core, manifest, calib)
    else:
        raise ValueError(f"variant {variant!r}: fp32, default or int8")
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    x = np.ascontiguousarray(calib[0])
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    info = {"openvino": ov.__version__.split("-")[0],  # "2026.4.1-22982-<hash>-releases/..."
            "precision": precision.get_type_name() if hasattr(precision, "get_type_name")
            else str(precision)}
    if variant == "int8":
        import nncf

        info["nncf"] = nncf.__version__
    # infer() copies the input in and the outputs out, as the other runtimes' numpy APIs do
    return (lambda: request.infer({0: x})), info


if __name__ == "__main__":
    sys.exit(serve(load))
