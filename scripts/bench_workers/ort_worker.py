"""ONNX Runtime worker: spec {"onnx", "manifest", "threads"}; one CPU session with
``intra_op_num_threads`` = threads and ``inter_op_num_threads`` = 1, default graph
optimizations (ORT_ENABLE_ALL)."""
from __future__ import annotations

import json
import sys

import numpy as np

from bench_workers.protocol import serve


def load(spec: dict):
    import onnxruntime as ort

    with open(spec["manifest"]) as f:
        manifest = json.load(f)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(spec["threads"])
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(spec["onnx"], so, providers=["CPUExecutionProvider"])
    feed = {manifest["input_name"]: np.ascontiguousarray(np.load(manifest["calib"])[0])}
    return (lambda: sess.run(None, feed)), {"onnxruntime": ort.__version__}


if __name__ == "__main__":
    sys.exit(serve(load))
