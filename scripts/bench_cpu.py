"""CPU speed of tvm_quant_ext's int8 against ONNX Runtime and OpenVINO, one process per runtime.

    python scripts/bench_cpu.py                                  # every model, batch 1 and 8
    python scripts/bench_cpu.py --models efficientnet_lite0 resnet50_v2 --batches 1
    python scripts/bench_cpu.py --quick                          # smoke test: MNIST CNN, tiny

Every row of the table (a runtime and precision) is its own worker process holding one session
(``bench_workers/``): TVM's worker threads keep spinning after a call and slowed ONNX Runtime
down 2.5x when both ran in one process. Only one worker computes at a time: the driver sends a
block of runs to one worker and waits for its answer while the others sleep blocked on their
pipes, then pauses ``--settle-ms`` so that worker's spinning threads go idle. Each round visits
every row once, in an order rotated by one per round (no row always runs right after the same
neighbour); ``--rounds`` rounds of ``--runs`` timed runs each (after one untimed warm-up per
block), ``--threads`` threads for every runtime.

Rows: tvm_quant_ext int8 (``QConfig(mode="integer")``, ``build`` on the VNNI kernels, untuned),
tvm_quant_ext int8 with 16-bit points (``tvm_int8_mixed``: asymmetric activations,
``precision_budget=0.1``; the latency cost of its int16 codes and 16-bit weights), TVM fp32 (untuned, a reference), ONNX Runtime fp32 and int8 in all four ``quantize_static`` forms
(QDQ / QOperator x S8S8 / U8S8 activations, per-channel int8 weights; the fastest is marked),
OpenVINO fp32 (``INFERENCE_PRECISION_HINT=f32``), OpenVINO's default hint (bf16 on a CPU with
AVX512_BF16) and OpenVINO int8 (``nncf.quantize``). Every quantizer gets the same calibration
batches and every runtime the same ONNX file. OpenVINO and NNCF run from the bench's own venv
(``bench_workers/venv.py``, created on first use); a row that cannot run says why.

Writes the table to --out (default docs/bench_cpu.md; --quick writes under the work folder) and
the raw times to --out's .json twin, after every case, and prints the table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from typing import List, Optional

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(SCRIPTS)
sys.path.insert(0, SCRIPTS)

from bench_workers import peak as vnni_peak  # noqa: E402
from bench_workers import report, venv  # noqa: E402
from bench_workers.prepare import ALL_MODELS  # noqa: E402  (stdlib + numpy at import)
from bench_workers.protocol import Worker, WorkerError  # noqa: E402

DEFAULT_MODELS = ("efficientnet_lite0", "resnet50_v2", "mobilenet_v2", "mnist_cnn")
# (key, label, short name, worker module, spec, int8, peer)
ROWS = [
    ("tvm_int8", "tvm_quant_ext int8 (VNNI / AMX / AVX2 kernels, untuned)", "tvm int8", "tvm", {"precision": "int8"}, True, False),
    ("tvm_int8_vnni", "tvm_quant_ext int8, AMX off (VNNI kernels only)", "tvm int8 no AMX", "tvm",
     {"precision": "int8", "amx": False}, True, False),
    ("tvm_int8_mixed", "tvm_quant_ext int8 + 16-bit points (asym, precision_budget 0.1; untuned)",
     "tvm int8 mixed", "tvm", {"precision": "int8_mixed"}, True, False),
    ("tvm_fp32", "TVM fp32 (untuned, reference)", "tvm fp32", "tvm", {"precision": "fp32"}, False, False),
    ("ort_fp32", "ONNX Runtime fp32", "ort fp32", "ort", {}, False, True),
    ("ort_qdq_s8s8", "ONNX Runtime int8 QDQ S8S8 (quantize_static default)", "QDQ S8S8", "ort", {}, True, True),
    ("ort_qdq_u8s8", "ONNX Runtime int8 QDQ U8S8", "QDQ U8S8", "ort", {}, True, True),
    ("ort_qop_s8s8", "ONNX Runtime int8 QOperator S8S8", "QOperator S8S8", "ort", {}, True, True),
    ("ort_qop_u8s8", "ONNX Runtime int8 QOperator U8S8", "QOperator U8S8", "ort", {}, True, True),
    ("ov_fp32", "OpenVINO fp32 (precision hint f32)", "ov fp32", "ov", {"variant": "fp32"}, False, True),
    ("ov_default", "OpenVINO fp32 model, default hint", "ov default", "ov", {"variant": "default"}, False, True),
    ("ov_int8", "OpenVINO int8 (NNCF nncf.quantize)", "ov int8", "ov", {"variant": "int8"}, True, True),
]
ROW_KEYS = [r[0] for r in ROWS]


class OtherLoad:
    """CPU time other processes took while the bench ran: /proc/stat's busy time minus this
    process's and its (finished) children's, as a share of the CPUs. The load average cannot
    tell: the bench itself keeps its threads busy."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system | irq softirq steal
        t = os.times()
        return (time.monotonic(), busy / os.sysconf("SC_CLK_TCK"),
                t.user + t.system + t.children_user + t.children_system)

    def share(self) -> Optional[float]:
        try:
            (w0, b0, o0), (w1, b1, o1) = self.start, self._snapshot()
        except (OSError, ValueError, IndexError):
            return None
        return max(0.0, (b1 - b0) - (o1 - o0)) / max(1e-9, (w1 - w0) * (os.cpu_count() or 1))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare_case(args, model: str, batch: int) -> dict:
    import subprocess

    cmd = [sys.executable, "-m", "bench_workers.prepare", "--model", model, "--batch", str(batch),
           "--calib-images", str(args.calib_images), "--work", args.work]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=SCRIPTS, env=worker_env(args))
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise WorkerError(f"preparing {model} b{batch} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_env(args) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SCRIPTS, ROOT])
    env["TVM_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def row_specs(args, manifest: dict, ov_python: Optional[str], ov_why: str):
    for key, label, short, kind, spec, int8, peer in ROWS:
        if key not in args.rows:
            continue
        spec = dict(spec, manifest=os.path.join(manifest["case_dir"], "manifest.json"),
                    threads=args.threads)
        python, error = sys.executable, None
        if kind == "tvm":
            spec["target"] = args.target
        elif kind == "ort":
            spec["onnx"] = manifest["onnx"] if key == "ort_fp32" else manifest["ort_int8"][key[4:]]
        else:
            python, error = ov_python, (None if ov_python else f"OpenVINO venv unavailable: {ov_why}")
        row = {"key": key, "label": label, "short": short, "int8": int8, "peer": peer,
               "model": manifest["model"], "batch": manifest["batch"],
               "macs": manifest["macs"]["total"], "blocks": [], "error": error}
        yield row, python, f"bench_workers.{kind}_worker", spec
    for mcpu in args.tvm_extra_mcpu:  # the int8 build for CPUs without VNNI (no vpdpbusd)
        spec = {"precision": "int8", "target": {"kind": "llvm", "mcpu": mcpu},
                "manifest": os.path.join(manifest["case_dir"], "manifest.json"),
                "threads": args.threads}
        row = {"key": f"tvm_int8_{mcpu}", "label": f"tvm_quant_ext int8 (mcpu {mcpu}, untuned)",
               "short": f"tvm int8 {mcpu}", "int8": True, "peer": False,
               "model": manifest["model"], "batch": manifest["batch"],
               "macs": manifest["macs"]["total"], "blocks": [], "error": None}
        yield row, sys.executable, "bench_workers.tvm_worker", spec


def run_case(args, manifest: dict, ov_python, ov_why, versions: dict) -> List[dict]:
    rows, workers = [], {}
    tag = f"{manifest['model']} b{manifest['batch']}"
    try:
        for row, python, module, spec in row_specs(args, manifest, ov_python, ov_why):
            rows.append(row)
            if row["error"]:
                continue
            log(f"{tag}: loading {row['key']}")
            w = Worker(python, module, worker_env(args), SCRIPTS,
                       os.path.join(manifest["case_dir"], f"{row['key']}.log"))
            try:  # loads run one at a time too: a build competing with a timed block skews it
                row["info"] = w.call(args.load_timeout, cmd="load", spec=spec)["info"]
                versions.update({k: v for k, v in row["info"].items()
                                 if k in ("tvm", "onnxruntime", "openvino", "nncf")})
                workers[row["key"]] = w
                if row["key"] == "ov_default":  # what "default" meant on this CPU
                    row["label"] += f" ({row['info'].get('precision', '?')})"
            except WorkerError as exc:
                row["error"] = str(exc)
                w.close(kill=True)
                log(f"{tag}: {row['key']} failed: {exc}")
        live = [r for r in rows if r["key"] in workers]
        for rnd in range(args.rounds):
            shift = rnd % max(1, len(live))
            for row in live[shift:] + live[:shift]:
                if row["error"]:
                    continue
                warm = row["info"]["warm_ms"]
                runs = max(1, min(args.runs, int(args.max_block_s * 1e3 / max(warm, 1e-3))))
                try:
                    answer = workers[row["key"]].call(60 + 20 * runs * warm / 1e3, cmd="run",
                                                      runs=runs, warmup=1 if runs > 1 else 0)
                    row["blocks"].append(answer["ms"])
                except WorkerError as exc:
                    row["error"] = f"round {rnd + 1}: {exc}"
                time.sleep(args.settle_ms / 1e3)  # the block's spinning threads go idle
            log(f"{tag}: round {rnd + 1}/{args.rounds} done")
    finally:
        for w in workers.values():
            w.close()
    return rows


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=ALL_MODELS, help=f"default {' '.join(DEFAULT_MODELS)}")
    ap.add_argument("--batches", nargs="+", type=int, help="default 1 8")
    ap.add_argument("--rounds", type=int, help="blocks per row, alternating (default 5)")
    ap.add_argument("--runs", type=int, help="timed runs per block (default 100)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: MNIST CNN, batch 1, 2 rounds x 5 runs, 4 calibration "
                         "images, output under the work folder (not the docs)")
    ap.add_argument("--rows", nargs="+", choices=ROW_KEYS, default=ROW_KEYS)
    ap.add_argument("--tvm-extra-mcpu", nargs="*", default=[], metavar="MCPU",
                    help="extra tvm_quant_ext int8 rows built for these CPUs (e.g. haswell)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mcpu", default=None,
                    help="TVM's target CPU (default: this machine's, with AMX's features where it "
                    "runs AMX: backend.target.host_target)")
    ap.add_argument("--calib-images", type=int, help="calibration images (default 16)")
    ap.add_argument("--max-block-s", type=float, default=20.0,
                    help="cap a block's runs to about this many seconds (untuned TVM fp32 takes "
                         "seconds per run); the table shows the runs each row got")
    ap.add_argument("--settle-ms", type=float, default=300.0)
    ap.add_argument("--load-timeout", type=float, default=3600.0)
    ap.add_argument("--work", default=os.path.join(os.path.dirname(venv.default_dir()), "bench"))
    ap.add_argument("--venv", default=venv.default_dir(), help="the OpenVINO / NNCF venv")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.mcpu is None:
        sys.path.insert(0, ROOT)
        from tvm_quant_ext.backend.target import host_target  # tvm only names the CPU here
        args.target = host_target()
        args.mcpu = args.target["mcpu"]
    else:
        args.target = {"kind": "llvm", "mcpu": args.mcpu}
    quick = args.quick
    defaults = {"models": ["mnist_cnn"] if quick else list(DEFAULT_MODELS),
                "batches": [1] if quick else [1, 8], "rounds": 2 if quick else 5,
                "runs": 5 if quick else 100, "calib_images": 4 if quick else 16}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = (os.path.join(args.work, "bench_quick.md") if quick
                    else os.path.join(ROOT, "docs", "bench_cpu.md"))
    if min(args.rounds, args.runs, args.threads, args.calib_images) < 1:
        ap.error("--rounds, --runs, --threads and --calib-images must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    command = "python scripts/bench_cpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    load_start, other = os.getloadavg(), OtherLoad()
    ov_python, ov_why = None, "no OpenVINO row selected"
    versions = {}
    if any(k.startswith("ov_") for k in args.rows):
        ov_python, ov_versions, ov_why = venv.ensure(args.venv, log=log)
        versions.update(ov_versions)
        log(f"OpenVINO venv: {ov_python or ov_why}")
    peak, peak_how = vnni_peak.measure(args.work, args.threads)
    log(f"int8 peak: {peak_how}")
    cases, start = [], time.perf_counter()
    for model in args.models:
        for batch in args.batches:
            try:
                manifest = prepare_case(args, model, batch)
            except WorkerError as exc:
                log(str(exc))
                cases.append([{"key": k, "label": label, "short": s, "int8": i8, "peer": p,
                               "model": model, "batch": batch, "macs": 0, "blocks": [],
                               "error": str(exc)} for k, label, s, _, _, i8, p in ROWS
                              if k in args.rows])
                continue
            cases.append(run_case(args, manifest, ov_python, ov_why, versions))
            text = write(args, cases, command, peak, peak_how, (load_start, other), versions, start)
    text = write(args, cases, command, peak, peak_how, (load_start, other), versions, start)
    print(text)


def write(args, cases, command, peak, peak_how, load, versions, start) -> str:
    load_start, other = load[0], load[1].share()
    facts = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load average (1 min) before the bench": f"{load_start[0]:.2f}",
        "CPU time taken by other processes during the bench":
            "n/a" if other is None else f"{100 * other:.1f}% of the CPUs",
        "threads per runtime": args.threads,
        "timing": f"{args.rounds} rounds x up to {args.runs} runs per row, one worker process "
                  f"per row, one computing at a time, blocks capped at {args.max_block_s:.0f} s",
        "TVM target": f"llvm -mcpu={args.mcpu}" + (
            f" -mattr={','.join(args.target['mattr'])}" if args.target.get("mattr") else ""),
        "calibration images (every quantizer)": args.calib_images,
        "int8 peak": f"{peak:.0f} G int8 MAC/s ({peak_how})" if peak else f"n/a ({peak_how})",
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "n/a",
        "wall time": f"{(time.perf_counter() - start) / 60:.1f} min",
    }
    note = None
    if load_start[0] > 0.5 or other is None or other > 0.05:
        share = "unknown" if other is None else f"{100 * other:.0f}%"
        note = (f"**Not a result**: the load average was {load_start[0]:.2f} before the bench and "
                f"other processes took {share} of the CPUs during it; these times are inflated "
                "and noisy. Rerun on a quiet machine.")
    text = report.markdown(cases, {"peak": peak, "command": command, "facts": facts, "note": note})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"facts": facts, "peak": peak, "cases": cases}, f)
    return text


if __name__ == "__main__":
    main()
