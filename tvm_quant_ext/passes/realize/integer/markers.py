"""Integer rules of the quantization points: INPUT/ACTIVATION codes, WEIGHT and BIAS constants.

An activation point requantizes a QValue with a fixed-point multiplier (or quantizes a float
tensor once, as simulate does, then casts); weights and biases are the layer plan's codes.
"""
from __future__ import annotations

import numpy as np

from .... import qmath
from ....config import QKind
from ....fixed_point import codes_dtype
from ....graph import GraphError, const_value, is_const, make_const
from ....points import QPoint, make_marker
from .qvalue import QValue, on_axis
from .realizer import IntegerRealizer, register_marker


@register_marker(QKind.INPUT)
@register_marker(QKind.ACTIVATION)
def _activation_point(r: IntegerRealizer, var, tensor, point: QPoint) -> QValue:
    scale = r.state.activation_scales.get(point.id)
    if scale is None:
        raise GraphError(f"point {point.id!r} has no calibrated scale: run calibrate first")
    zero_point = r.state.activation_zero_points.get(point.id, 0)
    source = r.value(tensor)
    name = f"{point.id}.codes"
    if source is not None:
        codes = r.requantize(source, scale, zero_point, name, point.id)
    elif not is_const(tensor):
        codes = r.quantize_float(r.float_of(tensor), scale, zero_point, name, point.id)
    else:  # a constant operand: quantize it here
        qmin, qmax, dtype = r.point_range(point.id)
        codes_np = np.clip(qmath.round_half_up(const_value(tensor) / scale) + zero_point, qmin, qmax)
        codes = r.emit(make_const(codes_np, dtype), name)
    if r.tap:  # evaluation reads the codes under the point's id (and dequantizes them)
        codes = r.emit(make_marker(codes, point.id, point.kind), f"{point.id}.tap")
    return r.codes_value(codes, point.id)


@register_marker(QKind.WEIGHT)
def _weight_point(r: IntegerRealizer, var, tensor, point: QPoint) -> QValue:
    plan = r.plans[point.id]
    dtype = codes_dtype(r.state.weight_bits_of(point.id, r.config), True)
    ndim = plan.weight_codes.ndim
    return QValue(make_const(plan.weight_codes, dtype),
                  on_axis(plan.weight_scale, point.axis, ndim), const=plan.weight_codes,
                  kind=QKind.WEIGHT.value, bound=float(np.abs(plan.weight_codes).max(initial=0)))


@register_marker(QKind.BIAS)
def _bias_point(r: IntegerRealizer, var, tensor, point: QPoint) -> QValue:
    quant = r.plans[point.weight_point].bias
    shape = const_value(tensor).shape
    return QValue(None, quant.scale.reshape(shape), const=quant.codes.reshape(shape),
                  kind=QKind.BIAS.value, bound=float(np.abs(quant.codes).max(initial=0)))
