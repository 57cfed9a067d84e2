"""realize (simulate): replace each point by its quantization, computed as integers would.

Activations: ``(clip(floor(x / s + 0.5) + z, qmin, qmax) - z) * s`` in the graph (round half
up, the rounding of a fixed-point requantize; z = 0 and qmin = -qmax when symmetric). Weights
and biases are constants: the layer plan's codes, emitted as their dequantized values.
Simulate computes in float64 so that it rounds as the integer realize does (they agree within
one LSB at every point). One rule per point kind, in ``REALIZE_RULES``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import tvm
from tvm import relax

from ... import qmath
from ...config import QKind
from ...graph import BindingRewriter, GraphError, const_value, make_const, registrar
from ...points import QPoint, make_marker, parse_marker
from .plan import SIMULATE_DTYPE, RealizeContext, emit_codes, scalar




RealizeRule = Callable[[RealizeContext, relax.BlockBuilder, relax.Expr, QPoint], relax.Expr]
REALIZE_RULES: Dict[str, RealizeRule] = {}


register_realize = registrar(REALIZE_RULES, key=lambda kind: kind.value, what="simulate rule")  # one rule per QKind


@register_realize(QKind.ACTIVATION)
@register_realize(QKind.INPUT)
def _realize_activation(ctx: RealizeContext, bb, tensor, point: QPoint):
    scale = ctx.state.activation_scales.get(point.id)
    if scale is None:
        raise GraphError(f"point {point.id!r} has no calibrated scale: run calibrate first")
    zero_point = ctx.state.activation_zero_points.get(point.id, 0)
    qmin, qmax = qmath.activation_range(ctx.state.activation_bits_of(point.id, ctx.config),
                                        ctx.config.activation_symmetric)
    if str(tensor.ty.dtype) != SIMULATE_DTYPE:
        tensor = bb.emit(relax.op.astype(tensor, SIMULATE_DTYPE), name_hint=f"{point.id}.f64")
    codes = emit_codes(bb, tensor, scale, zero_point, qmin, qmax, point.id)
    if zero_point:
        codes = bb.emit(relax.op.subtract(codes, scalar(zero_point, SIMULATE_DTYPE)),
                        name_hint=f"{point.id}.centred")
    out = relax.op.multiply(codes, scalar(scale, SIMULATE_DTYPE))
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
            return _promote_floats(self.bb, value, _source_float_dtype(var))
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


# Ops that cannot compute in float64, so simulate leaves them in the source model's dtype:
# those whose argument dtypes are fixed by what they call (a PrimFunc's buffers -- the stock
# ONNX importer's Clip is a call_tir -- or a packed function), and those whose legalization
# accepts only float32/float16 (TVM 0.27; their type inference accepts float64, so the
# failure would only surface inside relax.get_pipeline).
FIXED_DTYPE_OPS = frozenset({
    "relax.call_tir", "relax.call_tir_inplace", "relax.call_tir_with_grad",
    "relax.call_dps_packed", "relax.call_pure_packed",
    "relax.nn.layer_norm", "relax.nn.group_norm", "relax.nn.instance_norm",
})


def _source_float_dtype(var) -> str:
    dtype = str(getattr(var.ty, "dtype", "float32"))
    return dtype if dtype.startswith("float") and dtype != SIMULATE_DTYPE else "float32"


def _promote_floats(bb, value, source_dtype: str):
    """An op mixing float32 (an unquantized constant, a float op's output) with the float64
    of quantized tensors computes in float64, except the ops of FIXED_DTYPE_OPS: their float64
    inputs are cast back to the dtype the source model gave the op."""
    if not isinstance(value, relax.Call):
        return value
    args = list(value.args)
    flat = [f for a in args for f in (a.fields if isinstance(a, relax.Tuple) else [a])]
    if not any(_is_float(a, SIMULATE_DTYPE) for a in flat):
        return value
    name = value.op.name if isinstance(value.op, tvm.ir.Op) else None
    if name not in FIXED_DTYPE_OPS:
        return relax.Call(value.op, [_cast_floats(bb, a, SIMULATE_DTYPE) for a in args],
                          value.attrs, list(value.ty_args))
    kept = [_demote(bb, a, source_dtype) for a in args]
    return relax.Call(value.op, kept, value.attrs, list(value.ty_args))


def _demote(bb, expr, dtype):
    """Cast the float64 tensors of ``expr`` (fields of a tuple included) to ``dtype``."""
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_demote(bb, f, dtype) for f in expr.fields])
    if _is_float(expr, SIMULATE_DTYPE):
        return bb.emit(relax.op.astype(expr, dtype))
    return expr


def realize_simulate(mod: tvm.IRModule, ctx: RealizeContext) -> Tuple[tvm.IRModule, List[Dict[str, str]]]:
    """The calibrated module with every marker replaced by its fake quantization; no op
    changes arithmetic domain, so there are no new float ops to report."""
    return _Realizer(ctx)(mod), []
