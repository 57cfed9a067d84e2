"""The integer realizer: rebuilds ``main`` binding by binding with each value a ``QValue``.

One rule per op in ``INTEGER_RULES`` (files ``layers.py``, ``elementwise.py``,
``pooling.py``, ``layout.py``), one rule per point kind in ``MARKER_RULES`` (``markers.py``).
A rule raises ``NoIntegerRule(reason)`` to leave its binding in float: its inputs are then
dequantized, it runs in float, and it is listed in the report's ``float_ops``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional

import numpy as np
from tvm import relax

from .... import qmath
from ....config import QConfig, QKind
from ....fixed_point import codes_dtype, fixed_point
from ....graph import BindingRewriter, make_const, op_name, registrar, substitute
from ....points import QPoint, QuantState, parse_marker
from ..plan import SIMULATE_DTYPE, RealizeContext, emit_codes
from .qvalue import (INF, NoIntegerRule, QValue, apply_clip, clip_bounds, compact, has_clip,
                     vars_in, zero_if_none)


IntegerRule = Callable[["IntegerRealizer", relax.Var, relax.Call], QValue]
INTEGER_RULES: Dict[str, IntegerRule] = {}
MarkerRule = Callable[["IntegerRealizer", relax.Var, relax.Expr, QPoint], object]
MARKER_RULES: Dict[str, MarkerRule] = {}


# register_integer("relax.nn.conv2d", ...)(rule): rule(realizer, var, call) -> QValue; a rule
# raises NoIntegerRule(reason) to leave that binding in float
register_integer = registrar(INTEGER_RULES, what="integer rule")


register_marker = registrar(MARKER_RULES, key=lambda kind: kind.value, what="integer marker rule")  # one rule per QKind


class IntegerRealizer(BindingRewriter):
    """Rebuilds ``main`` binding by binding; ``env`` maps each original variable to a QValue
    or to a float expression of the new function (so ``visit`` binds nothing itself: every
    rule emits what it needs, and consumers read their operands from ``env``)."""

    def __init__(self, ctx: RealizeContext):
        super().__init__()
        config = ctx.config
        self.config: QConfig = config
        self.state: QuantState = ctx.state
        self.plans = ctx.plans
        self.tap = ctx.tap
        self.env: Dict[relax.Var, object] = {}
        self._float_cache: Dict[relax.Var, relax.Expr] = {}
        self.float_ops: List[Dict[str, str]] = []
        self.codes_dtype = codes_dtype(config.nbit_input, config.activation_symmetric)
        self.qmin, self.qmax = qmath.activation_range(config.nbit_input, config.activation_symmetric)
        self.wide = config.nbit_input > 8 or config.nbit_weight > 8 or config.nbit_activation == 64
        self.point_bits = dict(ctx.state.activation_bits)  # points raised above nbit_input
        self._already_float = {f["tensor"] for f in ctx.state.float_ops}

    # -- emitting -------------------------------------------------------------------------
    def emit(self, expr, name: str) -> relax.Var:
        # '/' in a binding name reaches the generated CUDA C as a parameter name and breaks
        # it; point ids stay in the markers and the state, so the names need not keep it
        return self.bb.emit(expr, name_hint=name.replace("/", "_"))

    @staticmethod
    def const(value, dtype: str):
        return make_const(np.asarray(value), dtype)

    def accumulator_dtype(self, bound: float) -> str:
        return "int64" if self.wide or bound >= 2**31 else "int32"

    # -- operands -------------------------------------------------------------------------
    def value(self, expr) -> Optional[QValue]:
        if isinstance(expr, relax.Var):
            found = self.env.get(expr)
            return found if isinstance(found, QValue) else None
        return None

    def float_of(self, expr) -> relax.Expr:
        """The float value of an original operand (dequantized once if it is a QValue)."""
        if not isinstance(expr, relax.Var):
            return substitute(expr, {v: self.float_of(v) for v in vars_in(expr)})
        found = self.env.get(expr, expr)
        if not isinstance(found, QValue):
            return found
        if expr not in self._float_cache:
            self._float_cache[expr] = self.dequantize(found, f"{expr.name}.dq")
        return self._float_cache[expr]

    def dequantize(self, v: QValue, name: str) -> relax.Expr:
        if v.const is not None:
            real = (v.const.astype(np.float64) + zero_if_none(v.offset) - v.zero_point) * v.scale
            return make_const(np.clip(real, *v.clip), "float32")
        x = relax.op.astype(v.expr, "float32")
        shift = compact(zero_if_none(v.offset) - v.zero_point)
        if np.any(shift != 0):
            x = relax.op.add(x, self.const(shift, "float32"))
        x = relax.op.multiply(x, self.const(compact(v.scale), "float32"))
        if has_clip(v.clip):
            lo, hi = (np.clip(b, *clip_bounds((-INF, INF), "float32")) for b in v.clip)
            x = apply_clip(x, lo, hi, "float32")
        return self.emit(x, name)

    def point_range(self, point_id: Optional[str]):
        """(qmin, qmax, codes dtype) of a point: nbit_input, or its raised width
        (QConfig.precision_budget, passes/precision.py)."""
        bits = self.point_bits.get(point_id)
        if bits is None:
            return self.qmin, self.qmax, self.codes_dtype
        qmin, qmax = qmath.activation_range(bits, self.config.activation_symmetric)
        return qmin, qmax, codes_dtype(bits, self.config.activation_symmetric)

    def requantize(self, v: QValue, scale: float, zero_point: int, name: str,
                   point_id: Optional[str] = None) -> relax.Var:
        """Codes of ``v`` at (scale, zero_point): int64 fixed-point multiply, round half up,
        pending clip applied on the codes, cast to the code type."""
        multiplier = compact(np.asarray(v.scale, np.float64) / scale)
        x = self.fixed_point_multiply(v, multiplier)
        if zero_point:
            x = relax.op.add(x, self.const(zero_point, "int64"))
        # f(clip(y, a, b)) = clip(f(y), f(a), f(b)): f is monotone (bounds per channel or not)
        qmin, qmax, dtype = self.point_range(point_id)
        with np.errstate(invalid="ignore"):
            lo = np.maximum(qmin, qmath.round_half_up(np.asarray(v.clip[0], np.float64) / scale) + zero_point)
            hi = np.minimum(qmax, qmath.round_half_up(np.asarray(v.clip[1], np.float64) / scale) + zero_point)
        hi = np.maximum(hi, lo)
        x = apply_clip(x, lo.astype(np.int64), hi.astype(np.int64), "int64")
        return self.emit(relax.op.astype(x, dtype), name)

    def fixed_point_multiply(self, v: QValue, multiplier) -> relax.Expr:
        """int64 ``round_half_up((int(v) + offset - zero_point) * multiplier)``:
        ``(x * M0 + 2^(r-1)) >> r``, TVM's q_multiply_shift rule (see ``fixed_point``)."""
        form = fixed_point(multiplier, max(v.bound, 1.0))
        x = relax.op.astype(v.expr, "int64")
        shift = compact(zero_if_none(v.offset) - v.zero_point)
        if np.any(shift != 0):
            x = relax.op.add(x, self.const(shift, "int64"))
        x = relax.op.multiply(x, self.const(compact(form.m0), "int64"))
        rshift = compact(form.rshift)
        x = relax.op.add(x, self.const(compact(np.left_shift(np.int64(1), rshift - 1)), "int64"))
        return relax.op.right_shift(x, self.const(rshift, "int64"))

    def quantize_float(self, tensor, scale: float, zero_point: int, name: str,
                       point_id: Optional[str] = None) -> relax.Var:
        # the exact float ops simulate emits, in simulate's float64: x / s computed in float32
        # rounds differently near ties, and one flipped input code is amplified downstream
        qmin, qmax, dtype = self.point_range(point_id)
        if str(tensor.ty.dtype) != SIMULATE_DTYPE:
            tensor = self.emit(relax.op.astype(tensor, SIMULATE_DTYPE), f"{name}.f64")
        codes = emit_codes(self.bb, tensor, scale, zero_point, qmin, qmax, name)
        return self.emit(relax.op.astype(codes, dtype), name)

    def codes_operand(self, expr, what: str) -> QValue:
        v = self.value(expr)
        if v is None or not v.is_codes:
            raise NoIntegerRule(f"{what} is not an integer-coded tensor")
        return v

    def weight_operand(self, expr) -> QValue:
        v = self.value(expr)
        if v is None or v.kind != QKind.WEIGHT.value:
            raise NoIntegerRule("weight is not a quantized constant")
        return v

    def codes_value(self, expr, point_id: str) -> QValue:
        zero_point = self.state.activation_zero_points.get(point_id, 0)
        qmin, qmax, _ = self.point_range(point_id)
        return QValue(expr, np.asarray(self.state.activation_scales[point_id], np.float64),
                      zero_point=zero_point, point=point_id,
                      bound=max(qmax - zero_point, zero_point - qmin))

    # -- the walk -------------------------------------------------------------------------
    def visit(self, var: relax.Var, value) -> None:
        if isinstance(value, relax.Var):  # an alias
            self.env[var] = self.env.get(value, value)
            return None
        parsed = parse_marker(value)
        if parsed is not None:
            tensor, point_id, kind = parsed
            self.env[var] = MARKER_RULES[kind](self, var, tensor, self.state.points[point_id])
            return None
        op = op_name(value)
        rule = INTEGER_RULES.get(op) if op is not None else None
        has_q = any(self.value(v) is not None for v in vars_in(value))
        if rule is not None and has_q:
            try:
                result = rule(self, var, value)
                if result.expr is not None and not isinstance(result.expr, relax.Var):
                    result = dataclasses.replace(result, expr=self.emit(result.expr, var.name))
                self.env[var] = result
                return None
            except NoIntegerRule as why:
                reason = f"no integer rule for this case ({why}): dequantized around it"
        else:
            reason = "no integer rule for this op: dequantized around it"
        if has_q and var.name not in self._already_float:
            self.float_ops.append({"tensor": var.name, "op": op or type(value).__name__,
                                   "reason": reason})
        new_value = self.float_of(value)
        self.env[var] = new_value if isinstance(new_value, relax.Var) else self.emit(new_value, var.name)
        return None

    def rewrite_function(self, func: relax.Function) -> relax.Function:
        self.env = {p: p for p in func.params}
        return super().rewrite_function(func)

    def output(self, result):
        return self.float_of(result)  # dequantize once at the outputs
