"""Integer rules of elementwise ops: the add (a layer's bias, or a residual of two code
tensors), ReLU and clip.

A residual add rescales both operands to a common scale by fixed-point multiplies:
``max_v(s_v * 2^bits_v) / 2^28`` (``max(s1, s2) / 2^20`` for two 8-bit operands): each operand's
real range is about ``s_v * 2^bits_v``, so every term stays below 2^28 (the int32 sum below
2^29) and the common step is 2^-20 of the widest range whichever operand is 16-bit. (Taking
``max(s) / 2^(28 - 16)`` when either operand is 16-bit left the step 2^-12 of the 8-bit
operand's: near-ties of the final requantize then rounded the other way than simulate's.) ReLU / ReLU6 on an accumulator stay pending and are applied to the
codes after the requantize (``f(clip(y, a, b)) = clip(f(y), f(a), f(b))`` for the monotone
requantize ``f``, so this is exact); ReLU on codes is ``max(codes, zero_point)``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from ....config import QKind
from ....graph import const_value, is_const, op_name, shape_of
from .layers import bias_add
from .qvalue import INF, NoIntegerRule, QValue, compose_clip
from .realizer import IntegerRealizer, register_integer

RESIDUAL_SHIFT_BITS = 28  # common residual scale: max_v(s_v * 2^code bits_v) / 2^28


def residual_common_scale(scales, bits) -> float:
    """The common scale a residual add sums its operands at: the widest operand range
    ``s * 2^bits`` over 2^RESIDUAL_SHIFT_BITS (each term then below 2^RESIDUAL_SHIFT_BITS)."""
    return max(float(s) * 2.0 ** int(b) for s, b in zip(scales, bits)) / 2.0 ** RESIDUAL_SHIFT_BITS


@register_integer("relax.add")
def _add(r: IntegerRealizer, var, call) -> QValue:
    lhs, rhs = (r.value(a) for a in call.args)
    if lhs is not None and lhs.kind == QKind.BIAS.value:
        lhs, rhs = rhs, lhs
    if rhs is not None and rhs.kind == QKind.BIAS.value:
        return bias_add(r, var, lhs, rhs)
    if lhs is None or rhs is None or not (lhs.is_codes and rhs.is_codes):
        raise NoIntegerRule("add of tensors that are not both integer codes")
    return _residual_add(r, var, lhs, rhs)


def _residual_add(r: IntegerRealizer, var, lhs: QValue, rhs: QValue) -> QValue:
    common = residual_common_scale([lhs.scale, rhs.scale],
                                   [np.iinfo(str(v.expr.ty.dtype)).bits for v in (lhs, rhs)])
    terms, bound = [], 0.0
    for v in (lhs, rhs):
        multiplier = float(v.scale) / common
        terms.append(r.fixed_point_multiply(v, multiplier))
        bound += v.bound * multiplier + 1
    return QValue(relax.op.astype(relax.op.add(*terms), "int32"), np.asarray(common), bound=bound)


@register_integer("relax.nn.relu")
def _relu(r: IntegerRealizer, var, call) -> QValue:
    v = r.value(call.args[0])
    if v.is_codes:  # stays on the point's grid (annotate's int point)
        return dataclasses.replace(
            v, expr=relax.op.maximum(v.expr, r.const(v.zero_point, str(v.expr.ty.dtype))))
    return dataclasses.replace(v, clip=compose_clip(v.clip, 0.0, INF))


@register_integer("relax.clip")
def _clip(r: IntegerRealizer, var, call) -> QValue:
    v = r.value(call.args[0])
    lo, hi = (float(a.value) for a in call.args[1:3])
    if v.const is not None:
        raise NoIntegerRule("clip of a constant")
    return dataclasses.replace(v, clip=compose_clip(v.clip, lo, hi), point=None)


@register_integer("relax.minimum", "relax.maximum")
def _bound(r: IntegerRealizer, var, call) -> QValue:
    """A per-channel clip bound by a constant (equalization's ReLU6): pending, like clip."""
    consts = [a for a in call.args if is_const(a)]
    v = r.value(next((a for a in call.args if not is_const(a)), None))
    if len(consts) != 1 or v is None or v.const is not None:
        raise NoIntegerRule("minimum/maximum is not of one tensor and one constant")
    bound = np.asarray(const_value(consts[0]), np.float64)
    if bound.ndim > len(shape_of(var)):
        raise NoIntegerRule("bound has more dimensions than the tensor")
    if op_name(call) == "relax.minimum":
        return dataclasses.replace(v, clip=compose_clip(v.clip, -INF, bound), point=None)
    return dataclasses.replace(v, clip=compose_clip(v.clip, bound, INF), point=None)
