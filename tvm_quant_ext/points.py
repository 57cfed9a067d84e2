"""Quantization points: the marker call in the IR and the table that describes each point.

A point is ``call_pure_packed("tvm_quant_ext.qpoint", x, "<id>", "<KIND>")`` in Relax: an
identity that names the tensor. Calibration runs the module with that function bound to a
collector; realize replaces the call by the quantization of ``x``. The id is stable (derived
from layer names), so nothing is ever matched by position.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from .graph import module_attr

QPOINT_FUNC = "tvm_quant_ext.qpoint"
STATE_ATTR = "tvm_quant_ext.state"


@dataclass
class QPoint:
    id: str
    kind: str                       # a QKind value
    tensor: str                     # the tensor quantized (binding or parameter name)
    layer: str                      # the layer it belongs to
    shape: List[int]
    axis: Optional[int] = None      # output-channel axis of a weight (per-channel scales)
    input_point: Optional[str] = None   # BIAS: the layer's input point
    weight_point: Optional[str] = None  # BIAS: the layer's weight point
    channel_axis: Optional[int] = None  # BIAS: channel axis of the layer output


@dataclass
class QuantState:
    """Everything the passes carry on the module (as JSON in a module attribute)."""

    points: Dict[str, QPoint] = field(default_factory=dict)
    float_ops: List[Dict[str, str]] = field(default_factory=list)
    activation_scales: Dict[str, float] = field(default_factory=dict)
    # integer code of real 0 per activation point; a missing id means 0 (symmetric)
    activation_zero_points: Dict[str, int] = field(default_factory=dict)
    calibration: Dict[str, object] = field(default_factory=dict)
    # BIAS point -> per-channel correction subtracted from the float bias before quantizing,
    # and one report row per corrected layer (passes/bias_correction.py)
    bias_corrections: Dict[str, List[float]] = field(default_factory=dict)
    bias_correction_rows: List[Dict[str, object]] = field(default_factory=list)
    # WEIGHT point -> adaptive rounding (passes/adaround.py): the weight scale it was learned
    # at ("scale", per channel) and the packed 0/1 round-up bits ("up", rounding.pack_mask);
    # and one report row per rounded layer
    weight_rounding: Dict[str, Dict[str, object]] = field(default_factory=dict)
    weight_rounding_rows: List[Dict[str, object]] = field(default_factory=list)
    # points raised by QConfig.precision_budget: activation points above QConfig.nbit_input
    # and WEIGHT points above QConfig.nbit_weight (id -> bits), and the sensitivity
    # measurement that chose them
    activation_bits: Dict[str, int] = field(default_factory=dict)
    weight_bits: Dict[str, int] = field(default_factory=dict)
    precision: Optional[Dict[str, object]] = None
    # what cross-layer equalization did in prepare (pairs, skipped pairs, rounds), if it ran
    equalization: Optional[Dict[str, object]] = None
    report: Optional[dict] = None

    def activation_bits_of(self, point_id: str, config) -> int:
        """Bits of an activation point: QConfig.nbit_input unless raised (precision_budget)."""
        return self.activation_bits.get(point_id, config.nbit_input)

    def weight_bits_of(self, point_id: str, config) -> int:
        """Bits of a WEIGHT point's codes: QConfig.nbit_weight unless raised (precision_budget)."""
        return self.weight_bits.get(point_id, config.nbit_weight)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "QuantState":
        data = json.loads(text)
        data["points"] = {k: QPoint(**v) for k, v in data["points"].items()}
        return cls(**data)


def get_state(mod: tvm.IRModule) -> QuantState:
    text = module_attr(mod, STATE_ATTR)
    if text is None:
        raise ValueError("module carries no quantization state: run annotate first")
    return QuantState.from_json(str(text))


def set_state(mod: tvm.IRModule, state: QuantState) -> tvm.IRModule:
    return mod.with_attr(STATE_ATTR, state.to_json())


def make_marker(expr, point_id: str, kind: str):
    return relax.op.call_pure_packed(QPOINT_FUNC, expr, tvm.ir.StringImm(point_id),
                                     tvm.ir.StringImm(kind), ty_args=expr.ty)


def parse_marker(expr):
    """(tensor expr, id, kind) if ``expr`` is a point marker, else None."""
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
        return None
    if expr.op.name != "relax.call_pure_packed":
        return None
    callee = expr.args[0]
    if not isinstance(callee, relax.ExternFunc) or callee.global_symbol != QPOINT_FUNC:
        return None
    return expr.args[1], str(expr.args[2].value), str(expr.args[3].value)


# -- runtime side: what a marker does when a module that still has markers is run ----------
_SINK: List[Optional[Callable[[str, np.ndarray], None]]] = [None]


@tvm.register_global_func(QPOINT_FUNC, override=True)
def _qpoint_runtime(tensor, point_id, kind):  # pylint: disable=unused-argument
    # Return a fresh tensor, never the argument: the VM may recycle the argument's storage
    # after its last use while the result is still alive.
    array = tensor.numpy()
    sink = _SINK[0]
    if sink is not None:
        sink(str(point_id), array)
    return tvm.runtime.tensor(array, tensor.device)


class collect_points:  # pylint: disable=invalid-name
    """Context manager routing every marker's tensor to ``sink(point_id, array)``."""

    def __init__(self, sink: Callable[[str, np.ndarray], None]):
        self.sink = sink
        self.previous = None

    def __enter__(self):
        self.previous, _SINK[0] = _SINK[0], self.sink
        return self

    def __exit__(self, *exc):
        _SINK[0] = self.previous
        return False
