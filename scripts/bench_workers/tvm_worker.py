"""TVM worker (this project's venv): spec {"manifest", "precision": "fp32" | "int8" |
"int8_mixed", "target", "threads", optional "amx" (False: the VNNI kernels only)}. int8 = ``quantize(QConfig(mode="integer"))`` on the case's
calibration batches, then ``build`` (VNNI kernels on a VNNI target, untuned); int8_mixed = the
same with ``INT8_MIXED`` (the accurate preset with a precision budget: its 16-bit points are what
the row's latency shows; bias correction and the budget's measurement run on the same
calibration batches); fp32 = ``passes.prepare`` then ``build`` (untuned: TVM's default
schedules, a reference, not a tuned fp32)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from bench_workers.protocol import serve

# the mixed-precision row's config (docs/accuracy.md, "Mixed precision": the budget measured
# there). Its kernels are those of the adaround + budget row: the raised points are chosen
# before the rounding is learned, and the rounding changes codes, not kernels.
INT8_MIXED = {"activation_symmetric": False, "precision_budget": 0.1}


def load(spec: dict):
    # the thread pool reads TVM_NUM_THREADS when tvm is imported: set it first
    os.environ["TVM_NUM_THREADS"] = str(spec["threads"])
    import tvm
    import tvm_quant_ext
    from tvm_quant_ext import QConfig, passes

    from bench_workers.prepare import calibration_list, relax_model

    with open(spec["manifest"]) as f:
        manifest = json.load(f)
    mod, params = relax_model(manifest)
    calib = calibration_list(manifest)
    if spec["precision"] == "int8":
        mod = tvm_quant_ext.quantize(mod, params, dataset=calib, config=QConfig(mode="integer"))
    elif spec["precision"] == "int8_mixed":
        config = QConfig.from_dict({**INT8_MIXED, "mode": "integer"})
        mod = tvm_quant_ext.quantize(mod, params, dataset=calib, config=config)
    elif spec["precision"] == "fp32":
        mod = passes.prepare(mod, params)
    else:
        raise ValueError(f"precision {spec['precision']!r}: fp32, int8 or int8_mixed")
    model = tvm_quant_ext.build(mod, spec["target"], amx=spec.get("amx"))
    x = np.ascontiguousarray(calib[0])
    return (lambda: model(x)), {"tvm": tvm.__version__}


if __name__ == "__main__":
    sys.exit(serve(load))
