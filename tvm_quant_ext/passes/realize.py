"""realize (simulate): replace each point by its quantization, computed as integers would.

With ``QConfig(mode="integer")`` ``realize`` hands the same plan (weight codes and scales,
bias codes) to ``realize_integer``, which computes in integers; simulate computes in float64
so that both round the same way (they agree within one LSB at every point).

Activations: ``(clip(floor(x / s + 0.5) + z, qmin, qmax) - z) * s`` in the graph (round half
up, the rounding of a fixed-point requantize; z = 0 and qmin = -qmax when symmetric). Weights and biases are constants: quantized here in
numpy (``qmath``) and emitted as their dequantized values. A bias is its own kind: codes at
``s_in * s_w`` (per channel) in ``nbit_bias`` bits, or relay.quantize's 8-bit rule, with the
overflow policy applied and every change it makes recorded in the report.

One rule per point kind, in ``REALIZE_RULES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from ..config import QConfig, QKind
from ..graph import BindingRewriter, GraphError, const_value, make_const, registrar
from ..points import QPoint, QuantState, get_state, make_marker, parse_marker, set_state
from .. import qmath
from .calibrate import assign_calibrators, weight_scale_for


@dataclass
class LayerPlan:
    """Final quantization of one layer's constants."""

    weight_scale: np.ndarray
    weight_codes: np.ndarray
    zeroed: np.ndarray
    calibrator: str                 # what chose the weight scale (auto's pick when auto)
    bias: Optional[qmath.BiasQuant] = None


@dataclass
class RealizeContext:
    config: QConfig
    state: QuantState
    weights: Dict[str, np.ndarray] = field(default_factory=dict)   # weight point -> value
    biases: Dict[str, np.ndarray] = field(default_factory=dict)    # bias point -> value
    plans: Dict[str, LayerPlan] = field(default_factory=dict)      # weight point -> plan
    tap: bool = False


RealizeRule = Callable[[RealizeContext, relax.BlockBuilder, relax.Expr, QPoint], relax.Expr]
REALIZE_RULES: Dict[str, RealizeRule] = {}


register_realize = registrar(REALIZE_RULES, key=lambda kind: kind.value)  # one rule per QKind


def _channel_absmax(weight: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(np.abs(weight), axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def plan_layers(ctx: RealizeContext) -> List[qmath.BiasAdjustment]:
    """Weight scales, bias codes and overflow fixes for every layer, before any rewrite
    (the bias rule may change a weight scale)."""
    config, points = ctx.config, ctx.state.points
    adjustments: List[qmath.BiasAdjustment] = []
    bias_of = {p.weight_point: p for p in points.values() if p.kind == QKind.BIAS.value}
    calibrators = assign_calibrators(ctx.state, (QKind.WEIGHT.value,), config.weight_scale,
                                     config.layer_weight_scale, "layer_weight_scale")
    for pid, point in points.items():
        if point.kind != QKind.WEIGHT.value:
            continue
        weight = ctx.weights[pid].astype(np.float64)
        scale, calibrator = weight_scale_for(config, point, weight, calibrators[pid])
        absmax = _channel_absmax(weight, point.axis)
        bias_quant = None
        bias_point = bias_of.get(pid)
        if bias_point is not None:
            input_scale = ctx.state.activation_scales[bias_point.input_point]
            bias_quant = qmath.quantize_bias(
                ctx.biases[bias_point.id], input_scale, scale, absmax,
                nbit_bias=config.nbit_bias, nbit_accumulator=config.nbit_activation,
                policy=config.bias_overflow, per_channel=config.per_channel,
                tiny_weight_threshold=config.tiny_weight_threshold,
                relay8_scale_mode=config.weight_scale, layer=point.layer)
            scale = bias_quant.weight_scale
            adjustments.extend(bias_quant.adjustments)
        zeroed = bias_quant.zeroed if bias_quant is not None else np.zeros(len(scale), bool)
        codes = qmath.quantize(weight, scale, config.nbit_weight, axis=point.axis)
        if zeroed.any():
            index = [slice(None)] * weight.ndim
            index[point.axis] = zeroed
            codes[tuple(index)] = 0
        ctx.plans[pid] = LayerPlan(scale, codes, zeroed, calibrator, bias_quant)
    return adjustments


# Simulate computes in float64: float32 (24-bit significand) cannot resolve the rounding of
# an 8-bit requantize near ties, and one flipped code is amplified by the next layers
# (EfficientNet-Lite0: up to 24 LSB apart from integer mode after 50 layers). In float64 the
# float arithmetic is exact enough that simulate and integer realize compute the same codes.
SIMULATE_DTYPE = "float64"


def _scalar(value: float, dtype="float32"):
    return relax.const(np.array(value, dtype), dtype)


def emit_codes(bb, tensor, scale: float, zero_point: int, qmin: int, qmax: int, name: str):
    """Float-valued codes ``clip(floor(x / s + 0.5 + z), qmin, qmax)`` (round half up), in the
    tensor's float type. Both realize modes quantize float tensors with these ops."""
    dtype = str(tensor.ty.dtype)
    codes = bb.emit(relax.op.floor(relax.op.add(relax.op.divide(tensor, _scalar(scale, dtype)),
                                                _scalar(0.5 + zero_point, dtype))),
                    name_hint=f"{name}.codes")
    return bb.emit(relax.op.clip(codes, qmin, qmax), name_hint=f"{name}.clipped")


@register_realize(QKind.ACTIVATION)
@register_realize(QKind.INPUT)
def _realize_activation(ctx: RealizeContext, bb, tensor, point: QPoint):
    scale = ctx.state.activation_scales.get(point.id)
    if scale is None:
        raise GraphError(f"point {point.id!r} has no calibrated scale: run calibrate first")
    zero_point = ctx.state.activation_zero_points.get(point.id, 0)
    qmin, qmax = qmath.activation_range(ctx.config.nbit_input, ctx.config.activation_symmetric)
    if str(tensor.ty.dtype) != SIMULATE_DTYPE:
        tensor = bb.emit(relax.op.astype(tensor, SIMULATE_DTYPE), name_hint=f"{point.id}.f64")
    codes = emit_codes(bb, tensor, scale, zero_point, qmin, qmax, point.id)
    if zero_point:
        codes = bb.emit(relax.op.subtract(codes, _scalar(zero_point, SIMULATE_DTYPE)),
                        name_hint=f"{point.id}.centred")
    out = relax.op.multiply(codes, _scalar(scale, SIMULATE_DTYPE))
    if ctx.tap:  # let evaluation read the quantized tensor under the same id as the float one
        out = make_marker(bb.emit(out, name_hint=f"{point.id}.dq"), point.id, point.kind)
    return out


@register_realize(QKind.WEIGHT)
def _realize_weight(ctx: RealizeContext, bb, tensor, point: QPoint):
    plan = ctx.plans[point.id]
    value = qmath.dequantize(plan.weight_codes, plan.weight_scale, axis=point.axis)
    return make_const(value, SIMULATE_DTYPE)


@register_realize(QKind.BIAS)
def _realize_bias(ctx: RealizeContext, bb, tensor, point: QPoint):
    plan = ctx.plans[point.weight_point]
    value = plan.bias.accumulator_value.reshape(const_value(tensor).shape)
    return make_const(value, SIMULATE_DTYPE)


class _Realizer(BindingRewriter):
    def __init__(self, ctx: RealizeContext):
        super().__init__()
        self.ctx = ctx

    def visit(self, var, value):
        parsed = parse_marker(value)
        if parsed is None:
            return _promote_floats(self.bb, value)
        tensor, point_id, kind = parsed
        point = self.ctx.state.points[point_id]
        return REALIZE_RULES[kind](self.ctx, self.bb, tensor, point)

    def output(self, result):
        # the model's outputs keep their float32 type
        return _cast_floats(self.bb, result, "float32")


def _is_float(expr, dtype=None) -> bool:
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType):
        return False
    found = str(ty.dtype)
    return found.startswith("float") and (dtype is None or found == dtype)


def _cast_floats(bb, expr, dtype):
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_cast_floats(bb, f, dtype) for f in expr.fields])
    if _is_float(expr) and not _is_float(expr, dtype):
        return bb.emit(relax.op.astype(expr, dtype))
    return expr


def _promote_floats(bb, value):
    """An op mixing float32 (an unquantized constant, a float op's output) with the float64
    of quantized tensors computes in float64."""
    if not isinstance(value, relax.Call):
        return value
    args = list(value.args)
    flat = [f for a in args for f in (a.fields if isinstance(a, relax.Tuple) else [a])]
    if not any(_is_float(a, SIMULATE_DTYPE) for a in flat):
        return value
    new_args = [_cast_floats(bb, a, SIMULATE_DTYPE) for a in args]
    return relax.Call(value.op, new_args, value.attrs, list(value.ty_args))


def _collect_constants(mod, state: QuantState, ctx: RealizeContext):
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            parsed = parse_marker(binding.value)
            if parsed is None:
                continue
            tensor, point_id, kind = parsed
            if kind == QKind.WEIGHT.value:
                ctx.weights[point_id] = const_value(tensor)
            elif kind == QKind.BIAS.value:
                ctx.biases[point_id] = const_value(tensor)


def realize(mod: tvm.IRModule, config: Optional[QConfig] = None, tap: bool = False) -> tvm.IRModule:
    """Calibrated module -> simulated quantized module (markers replaced), with a report.

    ``tap=True`` keeps a marker after every activation quantization so an evaluation can
    read the quantized tensors by point id (see ``tvm_quant_ext.evaluate``).
    """
    from ..report import build_report  # report imports realize's plan types

    config = config or QConfig()
    state = get_state(mod)
    ctx = RealizeContext(config, state, tap=tap)
    _collect_constants(mod, state, ctx)
    adjustments = plan_layers(ctx)
    if config.mode == "integer":
        from .realize_integer import realize_integer

        out, float_ops = realize_integer(mod, config, state, ctx.plans, tap=tap)
        state.float_ops = list(state.float_ops) + float_ops
    else:
        out = _Realizer(ctx)(mod)
    out = relax.transform.FoldConstant()(out)
    state.report = build_report(config, state, ctx.plans, adjustments)
    return set_state(out, state)


def Realize(config: Optional[QConfig] = None, tap: bool = False):  # pylint: disable=invalid-name
    @tvm.transform.module_pass(opt_level=0, name="Realize")
    def _pass(mod, _ctx):
        return realize(mod, config, tap)

    return _pass
