"""Integer rules of elementwise ops: the add (a layer's bias, or a residual of two code
tensors), ReLU and clip.

A residual add rescales both operands to a common scale ``max(s1, s2) / 2^20`` by
fixed-point multiplies. ReLU / ReLU6 on an accumulator stay pending and are applied to the
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

RESIDUAL_SHIFT_BITS = 28  # common residual scale: max(s1, s2) / 2^(28 - code bits), 2^20 for 8 bits


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
    bits = max(np.iinfo(str(v.expr.ty.dtype)).bits for v in (lhs, rhs))  # 16 if either is
    common = max(float(lhs.scale), float(rhs.scale)) / 2.0 ** (RESIDUAL_SHIFT_BITS - bits)
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
