"""The quantization report: every point (id, kind, bits, scales) and every bias fix."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import tvm

from .config import QConfig, QKind
from .points import QuantState, get_state


def _scale_repr(scale) -> object:
    scale = np.asarray(scale, np.float64).reshape(-1)
    if scale.size == 1 or np.all(scale == scale[0]):
        return float(scale[0])
    return [float(s) for s in scale]


def _activation_row(config: QConfig, state: QuantState, plans, pid: str, point) -> dict:
    return {"scale": state.activation_scales[pid],
            "zero_point": state.activation_zero_points.get(pid, 0),
            "calibrator": state.calibration.get("calibrators", {}).get(pid, config.calibrate_mode)}


def _weight_row(config: QConfig, state: QuantState, plans, pid: str, point) -> dict:
    return {"scale": _scale_repr(plans[pid].weight_scale), "calibrator": plans[pid].calibrator,
            "per_channel": config.per_channel}


def _bias_row(config: QConfig, state: QuantState, plans, pid: str, point) -> dict:
    row = {"scale": _scale_repr(plans[point.weight_point].bias.scale),
           "accumulator_bits": config.nbit_activation}
    if config.nbit_bias < 16:
        row["note"] = (f"{config.nbit_bias}-bit code at its own scale, shifted into the "
                       "accumulator (relay.quantize)")
    return row


# point kind -> (its bit width: config, state, point id -> bits; the kind's own report fields)
_KIND_ROWS = {
    QKind.INPUT.value: (lambda c, s, pid: s.activation_bits_of(pid, c), _activation_row),
    QKind.ACTIVATION.value: (lambda c, s, pid: s.activation_bits_of(pid, c), _activation_row),
    QKind.WEIGHT.value: (lambda c, s, pid: s.weight_bits_of(pid, c), _weight_row),
    QKind.BIAS.value: (lambda c, s, pid: c.nbit_bias, _bias_row),
}


def build_report(config: QConfig, state: QuantState, plans, adjustments) -> dict:
    rows = []
    for pid, point in state.points.items():
        bits, fields = _KIND_ROWS[point.kind]
        row = {"id": pid, "kind": point.kind, "bits": bits(config, state, pid), "layer": point.layer,
               "tensor": point.tensor}
        row.update(fields(config, state, plans, pid, point))
        rows.append(row)
    return {
        "config": config.to_dict(),
        "points": rows,
        "bias_adjustments": [a.to_dict() for a in adjustments],
        "float_ops": list(state.float_ops),
        "bias_correction": list(state.bias_correction_rows),
        "weight_rounding": list(state.weight_rounding_rows),
        "equalization": state.equalization,
        "precision": state.precision,
    }


@dataclass
class QuantReport:
    config: dict
    points: List[dict] = field(default_factory=list)
    bias_adjustments: List[dict] = field(default_factory=list)
    float_ops: List[dict] = field(default_factory=list)
    # one row per corrected layer: channels, channels whose bias code changed, mean |correction|
    # (float and in LSBs of the point that next quantizes the layer's output)
    bias_correction: List[dict] = field(default_factory=list)
    # one row per layer rounded adaptively: codes changed against round-to-nearest, the layer
    # output's MSE and SNR (before the bias, on the calibration data) with each rounding
    weight_rounding: List[dict] = field(default_factory=list)
    equalization: Optional[dict] = None  # pairs equalized, pairs skipped (why), rounds
    precision: Optional[dict] = None  # points raised to 16 bits, each point's measured gain

    def to_dict(self) -> dict:
        return {"config": self.config, "points": self.points,
                "bias_adjustments": self.bias_adjustments, "float_ops": self.float_ops,
                "bias_correction": self.bias_correction, "weight_rounding": self.weight_rounding,
                "equalization": self.equalization,
                "precision": self.precision}

    def point(self, point_id: str) -> dict:
        for row in self.points:
            if row["id"] == point_id:
                return row
        raise KeyError(f"no quantization point {point_id!r}")

    def summary(self) -> str:
        counts: Dict[str, int] = {}
        for row in self.points:
            counts[row["kind"]] = counts.get(row["kind"], 0) + 1
        lines = ["quantization points: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
        for kinds, label in (((QKind.INPUT.value, QKind.ACTIVATION.value), "activation"),
                             ((QKind.WEIGHT.value,), "weight")):
            chosen: Dict[str, int] = {}
            for row in self.points:
                if row["kind"] in kinds:
                    chosen[row["calibrator"]] = chosen.get(row["calibrator"], 0) + 1
            lines.append(f"{label} calibrators: " + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items())))
        actions: Dict[str, int] = {}
        for adj in self.bias_adjustments:
            actions[adj["action"]] = actions.get(adj["action"], 0) + 1
        lines.append("bias overflow fixes: " + (", ".join(f"{k} {v}" for k, v in actions.items())
                                                 or "none needed"))
        for adj in self.bias_adjustments[:10]:
            lines.append(f"  {adj['layer']} channel {adj['channel']}: {adj['action']}, bias "
                         f"{adj['bias']:.4g}, weight scale {adj['old_weight_scale']:.3g} -> "
                         f"{adj['new_weight_scale']:.3g}")
        if len(self.bias_adjustments) > 10:
            lines.append(f"  ... {len(self.bias_adjustments) - 10} more")
        if self.equalization is not None:
            eq = self.equalization
            lines.append(f"equalized: {len(eq['pairs'])} layer pairs in {eq['rounds']} rounds"
                         + (f"; skipped {len(eq['skipped'])}: " + ", ".join(
                             f"{s['pair']} ({s['reason']})" for s in eq["skipped"][:5])
                            if eq["skipped"] else ""))
        if self.precision is not None:
            raised = self.precision["raised"]
            together = self.precision.get("snr_raised_db")
            lines.append(f"16-bit points (activations or a layer's weights): {len(raised)}, "
                         f"budget {self.precision['budget']} of {self.precision['layers']} layers"
                         + (" (" + ", ".join(f"{p} +{g:.2f} dB" for p, _, g in raised[:5])
                            + (", ..." if len(raised) > 5 else "") + ")" if raised else "")
                         + (f"; together {self.precision['snr_all_quantized_db']:.2f} -> "
                            f"{together:.2f} dB on {self.precision['measured_batches']} "
                            "calibration batch(es)" if together is not None else ""))
        if self.bias_correction:
            lsbs = [r["mean_abs_correction_lsb"] for r in self.bias_correction
                    if r["mean_abs_correction_lsb"] is not None]
            lines.append(f"bias correction: {len(self.bias_correction)} layers, "
                         f"{sum(r['channels_corrected'] for r in self.bias_correction)} of "
                         f"{sum(r['channels'] for r in self.bias_correction)} bias codes changed"
                         + (f", mean |correction| {np.mean(lsbs):.3f} output LSB" if lsbs else ""))
            for r in sorted(self.bias_correction, key=lambda r: -(r["mean_abs_correction_lsb"] or 0))[:3]:
                if r["mean_abs_correction_lsb"] is not None:
                    lines.append(f"  {r['layer']}: mean |correction| {r['mean_abs_correction_lsb']:.3f} "
                                 f"LSB (max {r['max_abs_correction_lsb']:.3f}) over {r['channels']} channels")
        if self.weight_rounding:
            rows = self.weight_rounding
            gains = [r["snr_adaround_db"] - r["snr_nearest_db"] for r in rows
                     if np.isfinite(r["snr_adaround_db"]) and np.isfinite(r["snr_nearest_db"])]
            lines.append(f"adaptive rounding: {len(rows)} layers, "
                         f"{sum(r['codes_changed'] for r in rows)} of {sum(r['weights'] for r in rows)} "
                         f"weight codes changed from nearest"
                         + (f", layer output SNR {np.mean(gains):+.2f} dB on average "
                            f"(min {min(gains):+.2f}, max {max(gains):+.2f})" if gains else ""))
        lines.append("kept in float: " + (", ".join(f"{f['tensor']} ({f['op']}: {f['reason']})"
                                                     for f in self.float_ops) or "nothing"))
        return "\n".join(lines)


def get_report(mod: tvm.IRModule) -> QuantReport:
    """The report of a module returned by ``tvm_quant_ext.quantize``."""
    state = get_state(mod)
    if state.report is None:
        raise ValueError("module has not been realized: no report yet")
    return QuantReport(**state.report)
