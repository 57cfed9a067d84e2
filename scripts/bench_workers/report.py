"""The bench's statistics and its Markdown: per row, the median of every timed run over all
rounds and the spread of the per-block medians (min-max), ms per image, G MAC/s from the ONNX
graph's conv / matmul count and that rate as a share of the measured int8 peak."""
from __future__ import annotations

import statistics
from typing import Dict, List, Optional


def row_stats(row: dict) -> Optional[dict]:
    blocks = [b for b in row.get("blocks", []) if b]
    if row.get("error") or not blocks:
        return None
    runs = [t for b in blocks for t in b]
    medians = [statistics.median(b) for b in blocks]
    median = statistics.median(runs)
    gmacs = row["macs"] / median / 1e6  # MACs / (ms * 1e-3) / 1e9
    return {"median": median, "lo": min(medians), "hi": max(medians), "runs": len(runs),
            "blocks": len(blocks), "per_image": median / row["batch"], "gmacs": gmacs}


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _fastest(rows: List[dict], stats: Dict[str, dict], pick) -> Optional[str]:
    timed = [r["key"] for r in rows if pick(r) and stats.get(r["key"])]
    return min(timed, key=lambda k: stats[k]["median"]) if timed else None


def case_table(rows: List[dict], peak: Optional[float]) -> List[str]:
    stats = {r["key"]: row_stats(r) for r in rows}
    fastest_ort = _fastest(rows, stats, lambda r: r["key"].startswith("ort_") and r["int8"])
    fastest_peer = _fastest(rows, stats, lambda r: r["peer"] and r["int8"])
    lines = []
    for r in rows:
        s = stats[r["key"]]
        label = r["label"] + (" (fastest ORT int8)" if r["key"] == fastest_ort else "")
        if r["key"] == fastest_peer:
            label = f"**{label}** (fastest int8 peer)"
        if s is None:
            why = r.get("error") or "no timed run"
            lines.append(f"| {label} | {r['model']} | {r['batch']} | - | not measured: "
                         f"{why.replace('|', '/')} | | | | |")
            continue
        share = f"{100 * s['gmacs'] / peak:.0f}%" if peak else "n/a"
        lines.append(f"| {label} | {r['model']} | {r['batch']} | {s['blocks']}x"
                     f"{s['runs'] // s['blocks']} | {_ms(s['median'])} | {_ms(s['lo'])}-"
                     f"{_ms(s['hi'])} | {_ms(s['per_image'])} | {s['gmacs']:.0f} | {share} |")
    return lines


def summary_line(rows: List[dict]) -> Optional[str]:
    stats = {r["key"]: row_stats(r) for r in rows}
    tvm = stats.get("tvm_int8")
    ort = _fastest(rows, stats, lambda r: r["key"].startswith("ort_") and r["int8"])
    ov = stats.get("ov_int8")
    if not rows:
        return None
    r0 = rows[0]
    cells = [r0["model"], str(r0["batch"])]
    cells.append(_ms(tvm["median"]) if tvm else "n/a")
    by_key = {r["key"]: r for r in rows}
    cells.append(f"{_ms(stats[ort]['median'])} ({by_key[ort]['short']})" if ort else "n/a")
    cells.append(_ms(ov["median"]) if ov else "n/a")
    for peer in ([stats[ort]] if ort else [None]) + [ov]:
        cells.append(f"{peer['median'] / tvm['median']:.2f}x" if tvm and peer else "n/a")
    return "| " + " | ".join(cells) + " |"


HEADER = ("| runtime | model | batch | rounds x runs | median ms | block medians ms (min-max) "
          "| ms / image | G MAC/s | % of int8 peak |\n|---|---|---|---|---|---|---|---|---|")
SUMMARY = ("| model | batch | tvm_quant_ext int8 ms | fastest ORT int8 ms | OpenVINO int8 ms "
           "| TVM speed vs ORT int8 | TVM speed vs OpenVINO int8 |\n|---|---|---|---|---|---|---|")


METHOD = """\
How (scripts/bench_cpu.py, helpers in scripts/bench_workers/):

- Every row is its own worker process with one session; only one computes at a time (the
  driver sends one worker a block of runs while the others sleep blocked on their pipes, then
  pauses so that worker's spinning threads go idle). Rounds visit every row once, in an order
  rotated by one per round. Each block: one untimed warm-up, then the timed runs.
- Median = median of every timed run of the row; the spread is the lowest and highest block
  median. A call is each runtime's numpy API (input copied in, outputs copied out).
- G MAC/s = the batch's multiply-accumulates of Conv (depthwise included) and Gemm / MatMul,
  counted on the ONNX graph, over the median; % of int8 peak = that over the measured
  `vpdpbusd` microkernel's rate (`vpmaddwd` + `vpaddd` on a CPU without VNNI) with the same
  threads (the int8 ceiling; fp32 rows have a lower one).
- Same ONNX file for every runtime, same calibration batches for every quantizer.
  tvm_quant_ext int8: `QConfig(mode="integer")` (per-channel int8 weights, max calibration,
  symmetric int8 activations, 32-bit bias) built
  with `tvm_quant_ext.build` on the VNNI kernels, no tuning; TVM fp32 is untuned (TVM's default
  schedules), a reference only. ONNX Runtime: `quantize_static`, per-channel int8 weights,
  MinMax calibration, all four activation-type x format forms; sessions with intra-op threads
  = the thread count, inter-op 1. OpenVINO: `INFERENCE_NUM_THREADS`, one stream, latency
  hint; "default hint" is whatever precision OpenVINO picks (bf16 on a CPU with AVX512_BF16);
  int8 = `nncf.quantize` (defaults, every calibration batch), default precision hint.
- ResNet-50 v2, MobileNetV2 and the conv layer have random weights (speed only); Lite0 and the
  MNIST CNN are the zoo's real models, calibrated on the zoo's images (the 224x224 models all
  use Lite0's photos).
"""


def markdown(cases: List[List[dict]], meta: dict) -> str:
    peak = meta.get("peak")
    out = ["# CPU benchmark (scripts/bench_cpu.py)", ""]
    if meta.get("note"):
        out += [meta["note"], ""]
    out += [f"`{meta['command']}`", ""]
    out += [f"- {k}: {v}" for k, v in meta["facts"].items()]
    out += ["", METHOD, "Speed vs a peer = peer's median / TVM's median (above 1: TVM is faster).", "",
            SUMMARY]
    out += [line for case in cases if (line := summary_line(case))]
    out += ["", HEADER]
    for case in cases:
        out += case_table(case, peak)
    return "\n".join(out) + "\n"
