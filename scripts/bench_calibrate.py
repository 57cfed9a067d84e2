"""Wall time and peak memory of each calibrator on the zoo models.

    python scripts/bench_calibrate.py [--models efficientnet_lite0 mnist_cnn] [--calibrators ...]

Each (model, calibrator) runs in a fresh process: load the model, prepare, annotate, build and
run the float model once (that peak RSS is "the model's own footprint"), then
``passes.run_calibration`` + ``attach_scales`` on the model's calibration set (EfficientNet-Lite0:
the 50 calibration photos; MNIST CNN: 200 digits). Reported: the calibration wall time and
peak-RSS growth above that footprint, and what keeping every activation (ONNX Runtime's
percentile/entropy calibrators) would have held. Writes docs/bench_calibrate.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure(model_name: str, calibrator: str) -> dict:
    """One cell, in this process (run it in a fresh one: peak RSS never goes down)."""
    from tvm_quant_ext import QConfig, build, passes, zoo
    from tvm_quant_ext.runner import split_batches

    config = QConfig(calibrate_mode=calibrator)
    model = zoo.load(model_name)  # at the entry's default batch
    calib = split_batches(model.calib, model.batch_size)
    annotated = passes.annotate(passes.prepare(model.mod, model.params), config)
    build(annotated)(calib[0])  # the float model compiled and run once: its own footprint
    footprint = _peak_rss_mb()

    start = time.perf_counter()
    result = passes.run_calibration(annotated, calib, config)
    passes.attach_scales(annotated, result, config)
    seconds = time.perf_counter() - start
    growth = _peak_rss_mb() - footprint

    held_bytes = [0]  # what an all-activations calibrator keeps: every tensor of every image
    from tvm_quant_ext.points import collect_points
    observed = set(result.observers)
    float_model = build(annotated)
    with collect_points(lambda pid, a: held_bytes.__setitem__(0, held_bytes[0] + a.nbytes)
                        if pid in observed else None):
        for item in calib:
            float_model(item)
    return {"model": model_name, "calibrator": calibrator, "images": len(model.calib),
            "points": len(result.observers), "seconds": round(seconds, 1),
            "footprint_mb": round(footprint), "peak_growth_mb": round(growth, 1),
            "all_activations_mb": round(held_bytes[0] / 2**20)}


def main(argv=None) -> int:
    from calibrate import OBSERVERS
    from tvm_quant_ext import zoo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "mnist_cnn"],
                        choices=sorted(zoo.MODELS))
    parser.add_argument("--calibrators", nargs="+", default=sorted(OBSERVERS) + ["auto"])
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_calibrate.md"))
    parser.add_argument("--cell", nargs=2, metavar=("MODEL", "CALIBRATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:  # child process: one measurement, as JSON on the last line
        print(json.dumps(measure(*args.cell)))
        return 0
    rows = []
    for model_name in args.models:
        for calibrator in args.calibrators:
            proc = subprocess.run([sys.executable, __file__, "--cell", model_name, calibrator],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{model_name}/{calibrator} failed")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = ["| model | calibrator | images | points | calibration time (s) | peak RSS growth (MB) "
             "| model footprint (MB) | all activations, if kept (MB) |", "|" + "---|" * 8]
    lines += [f"| {r['model']} | {r['calibrator']} | {r['images']} | {r['points']} | {r['seconds']} "
              f"| {r['peak_growth_mb']} | {r['footprint_mb']} | {r['all_activations_mb']} |" for r in rows]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
