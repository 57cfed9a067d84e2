"""The layer plan: the final codes and scales of every layer's constants, before any rewrite.

Both realize modes start from it: weight scales from each weight point's calibrator, weight
codes, and the bias as its own kind (codes at ``s_in * s_w`` in ``nbit_bias`` bits, or
relay.quantize's own-scale rule below 16 bits) with the overflow policy applied, which may
raise a weight scale or zero a channel (every change recorded for the report). Also the one
float-to-codes formula both modes emit for float tensors (``emit_codes``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from ... import qmath, rounding
from ...config import QConfig, QKind
from ...graph import bindings, const_value
from ...points import QuantState, parse_marker
from ..calibrators import assign_calibrators, weight_scale_for


# Simulate computes in float64: float32 (24-bit significand) cannot resolve the rounding of
# an 8-bit requantize near ties, and one flipped code is amplified by the next layers
# (EfficientNet-Lite0: up to 24 LSB apart from integer mode after 50 layers). In float64 the
# float arithmetic is exact enough that simulate and integer realize compute the same codes;
# integer mode quantizes float tensors in float64 too.
SIMULATE_DTYPE = "float64"


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


def _channel_absmax(weight: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(np.abs(weight), axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def plan_layers(ctx: RealizeContext) -> List[qmath.BiasAdjustment]:
    """Weight scales, bias codes and overflow fixes for every layer, before any rewrite
    (the bias rule may change a weight scale)."""
    adjustments: List[qmath.BiasAdjustment] = []
    calibrators = weight_calibrators(ctx)
    for pid, point in ctx.state.points.items():
        if point.kind == QKind.WEIGHT.value:
            ctx.plans[pid] = plan_layer(ctx, pid, calibrators[pid])
            adjustments.extend(ctx.plans[pid].bias.adjustments if ctx.plans[pid].bias else [])
    return adjustments


def weight_calibrators(ctx: RealizeContext) -> Dict[str, str]:
    """The calibrator of every WEIGHT point (QConfig.weight_scale or its layer's override)."""
    return assign_calibrators(ctx.state, (QKind.WEIGHT.value,), ctx.config.weight_scale,
                              ctx.config.layer_weight_scale, "layer_weight_scale")


def bias_points(state: QuantState) -> Dict[str, object]:
    """weight point id -> the BIAS point of the same layer."""
    return {p.weight_point: p for p in state.points.values() if p.kind == QKind.BIAS.value}


def plan_layer(ctx: RealizeContext, pid: str, calibrator: str) -> LayerPlan:
    """One layer's plan. A bias correction on the state (``bias_corrections``, from
    passes/bias_correction.py) is subtracted from the float bias before it is quantized: at
    scale s_in*s_w the correction survives (an 8-bit bias would round it away)."""
    config, point = ctx.config, ctx.state.points[pid]
    weight = ctx.weights[pid].astype(np.float64)
    nbit = ctx.state.weight_bits_of(pid, config)
    scale, calibrator = weight_scale_for(config, point, weight, calibrator, nbit)
    absmax = _channel_absmax(weight, point.axis)
    bias_quant = None
    bias_point = bias_points(ctx.state).get(pid)
    if bias_point is not None:
        bias = ctx.biases[bias_point.id].astype(np.float64).reshape(-1)
        correction = ctx.state.bias_corrections.get(bias_point.id)
        if correction is not None:
            bias = bias - np.asarray(correction, np.float64)
        input_scale = ctx.state.activation_scales[bias_point.input_point]
        bias_quant = qmath.quantize_bias(
            bias, input_scale, scale, absmax,
            nbit_bias=config.nbit_bias, nbit_accumulator=config.nbit_activation,
            policy=config.bias_overflow, per_channel=config.per_channel,
            tiny_weight_threshold=config.tiny_weight_threshold,
            relay8_scale_mode=config.weight_scale, layer=point.layer)
        scale = bias_quant.weight_scale
    zeroed = bias_quant.zeroed if bias_quant is not None else np.zeros(len(scale), bool)
    codes = qmath.quantize(weight, scale, nbit, axis=point.axis)
    learned = ctx.state.weight_rounding.get(pid)
    if learned is not None and config.weight_rounding == "adaround":
        codes = _learned_codes(weight, scale, codes, learned, nbit, point.axis)
    if zeroed.any():
        index = [slice(None)] * weight.ndim
        index[point.axis] = zeroed
        codes[tuple(index)] = 0
    return LayerPlan(scale, codes, zeroed, calibrator, bias_quant)


def _learned_codes(weight, scale, nearest, learned, nbit: int, axis: int) -> np.ndarray:
    """The adaptive rounding's codes (passes/adaround.py) where the channel's weight scale is
    still the one they were learned at; a channel whose scale moved since (a bias correction
    that then overflowed and was adjusted) keeps round-to-nearest."""
    channels = np.moveaxis(weight, axis, 0).shape[0]
    same = np.broadcast_to(np.asarray(learned["scale"], np.float64), (channels,)) == \
        np.broadcast_to(np.asarray(scale, np.float64), (channels,))
    up = rounding.unpack_mask(learned["up"], weight.shape)
    shape = [1] * weight.ndim
    shape[axis] = channels
    codes = rounding.rounded_codes(weight, np.broadcast_to(scale, (channels,)).reshape(shape), up,
                                   qmath.qmax_for(nbit, True))
    return np.where(same.reshape(shape), codes, nearest)


def plan_constant(plans: Dict[str, LayerPlan], point) -> np.ndarray:
    """A WEIGHT or BIAS point's value as realize emits it (dequantized codes)."""
    if point.kind == QKind.WEIGHT.value:
        plan = plans[point.id]
        return qmath.dequantize(plan.weight_codes, plan.weight_scale, axis=point.axis)
    return plans[point.weight_point].bias.accumulator_value


def scalar(value: float, dtype="float32"):
    """A scalar constant of ``dtype``."""
    return relax.const(np.array(value, dtype), dtype)


def emit_codes(bb, tensor, scale: float, zero_point: int, qmin: int, qmax: int, name: str):
    """Float-valued codes ``clip(floor(x / s + 0.5 + z), qmin, qmax)`` (round half up), in the
    tensor's float type. Both realize modes quantize float tensors with these ops."""
    dtype = str(tensor.ty.dtype)
    codes = bb.emit(relax.op.floor(relax.op.add(relax.op.divide(tensor, scalar(scale, dtype)),
                                                scalar(0.5 + zero_point, dtype))),
                    name_hint=f"{name}.codes")
    return bb.emit(relax.op.clip(codes, qmin, qmax), name_hint=f"{name}.clipped")


def collect_constants(mod: tvm.IRModule, ctx: RealizeContext) -> None:
    """The WEIGHT and BIAS constants of ``main``'s markers, by point id, into ``ctx``."""
    for binding in bindings(mod["main"]):
        parsed = parse_marker(binding.value)
        if parsed is None:
            continue
        tensor, point_id, kind = parsed
        constants = {QKind.WEIGHT.value: ctx.weights, QKind.BIAS.value: ctx.biases}.get(kind)
        if constants is not None:
            constants[point_id] = const_value(tensor)
