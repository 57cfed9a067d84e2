"""OpenVINO's own per-layer counters (``PERF_COUNT``) for a bench case, run with the bench venv's
python: the int8 model the bench times (``nncf.quantize``, cached as the case's
``ov_int8.xml``), the bench's settings (threads, one stream, latency hint) plus
``PERF_COUNT=YES``; the median over ``runs`` inferences of each layer's real time.

    <venv>/bin/python -m bench_workers.ov_profile MANIFEST THREADS [RUNS]

Prints JSON: {"total_ms", "by_type": {layer type: ms}, "by_exec": {exec type: ms},
"layers": [[name, type, exec type, ms], ...]} (layers sorted by time).
"""
from __future__ import annotations

import collections
import json
import sys

import numpy as np

from bench_workers.ov_worker import _int8_model


def profile(manifest_path: str, threads: int, runs: int = 50) -> dict:
    import openvino as ov

    with open(manifest_path) as f:
        manifest = json.load(f)
    calib = np.load(manifest["calib"])
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "PERF_COUNT": True}
    compiled = core.compile_model(_int8_model(core, manifest, calib), "CPU", config)
    request = compiled.create_infer_request()
    x = np.ascontiguousarray(calib[0])
    for _ in range(5):
        request.infer({0: x})
    times = collections.defaultdict(list)
    kinds = {}
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            times[info.node_name].append(info.real_time.total_seconds() * 1e3)
            kinds[info.node_name] = (info.node_type, info.exec_type)
    layers = sorted(([name, *kinds[name], float(np.median(t))] for name, t in times.items()),
                    key=lambda row: -row[3])
    by_type, by_exec = collections.Counter(), collections.Counter()
    for _, node_type, exec_type, ms in layers:
        by_type[node_type] += ms
        by_exec[exec_type] += ms
    return {"total_ms": sum(row[3] for row in layers), "by_type": dict(by_type.most_common()),
            "by_exec": dict(by_exec.most_common()), "layers": layers}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(profile(args[0], int(args[1]), int(args[2]) if len(args) > 2 else 50)))
