"""The one-screen summary ``tvm-quant quantize`` prints when it is done."""
from __future__ import annotations

import os
from typing import Dict


def _counts(items) -> str:
    counts: Dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def quantize_summary(report: dict, paths: Dict[str, str], quantize_s: float, compile_s: float,
                     worst: int = 5) -> str:
    calib = report["calibration"]
    config = report["config"]
    lines = [
        f"quantized in {quantize_s:.1f} s ({config['mode']} mode, {calib['images']} calibration "
        f"inputs from {calib['source']}), compiled for {report['target']} in {compile_s:.1f} s",
        "points: " + _counts(p["kind"] for p in report["points"]),
        f"output SNR against fp32 on the calibration data: {calib['output_snr_db']:.1f} dB "
        f"(top-1 agreement {100 * calib['agreement_with_fp32']:.1f}%)",
    ]
    layers = sorted(calib["layer_snr_db"].items(), key=lambda item: item[1])[:worst]
    lines.append("worst layers (SNR dB): " + (", ".join(f"{pid} {snr:.1f}" for pid, snr in layers)
                                              or "none"))
    fixes = report["bias_adjustments"]
    lines.append("bias overflow fixes: " + (_counts(a["action"] for a in fixes) if fixes else "none needed")
                 + (f" (layers {', '.join(sorted({a['layer'] for a in fixes})[:4])}"
                    f"{', ...' if len({a['layer'] for a in fixes}) > 4 else ''})" if fixes else ""))
    floats = report["float_ops"]
    lines.append(f"ops left in float: {len(floats)}" + (": " + _counts(f["op"] for f in floats)
                                                         if floats else ""))
    for kind, path in paths.items():
        lines.append(f"  {kind:8s} {path} ({os.path.getsize(path) / 1e3:.0f} kB)")
    return "\n".join(lines)
