"""realize (integer): int8 codes between layers, int32 accumulators, fixed-point requantize.

Starts from the same calibrated module as simulate (same points, same ``plan_layers``: weight
codes and scales, bias codes, overflow fixes) and computes the same function, but in integers:

* INPUT points quantize the float input once (the same float ops as simulate, then a cast);
* conv2d / matmul multiply int8 (uint8 with a zero point; int16 when ``nbit_input=16``) codes by
  int8 weight codes into an int32 accumulator (int64 for 16-bit activations, a 64-bit
  accumulator, or a layer whose bias could overflow int32) at scale ``s_x * s_w`` (per channel);
  an input zero point pads with the zero point and folds ``-z_x * sum(w)`` into the bias;
* the BIAS is added in the accumulator type;
* an ACTIVATION point requantizes with a fixed-point multiplier (``fixed_point``: Q31,
  round half up, per channel when the scale is) in int64 and clips to the code range;
* ReLU / ReLU6 (clip) on an accumulator are applied to the codes after the requantize
  (``f(clip(y, a, b)) = clip(f(y), f(a), f(b))`` for the monotone requantize ``f``, so this is
  exact); ReLU on codes is ``max(codes, zero_point)``;
* max pool runs on codes; average pools and means sum codes in int32 and fold ``1/n`` into the
  next requantize's multiplier (one rounding, no truncation); concat keeps each input's scale
  along the concat axis (per-channel multiplier at the next point); a residual add rescales both
  operands to a common scale ``max(s1, s2) / 2^20`` by fixed-point multiplies;
* the outputs are dequantized once; ops with no integer rule get dequantized inputs, run in
  float, and are listed in the report's ``float_ops``.

A quantized value flows as a ``QValue``: (integer tensor, scale, zero point, pending integer
offset, pending real clip). One rule per op in ``INTEGER_RULES``; one rule per point kind in
``MARKER_RULES``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tvm
from tvm import relax

from .. import qmath
from ..config import QConfig, QKind
from ..fixed_point import codes_dtype, fixed_point
from ..graph import (GraphError, bindings, const_value, is_const, make_const, op_name, registrar,
                     shape_of, substitute)
from ..points import QPoint, QuantState, make_marker, parse_marker

INF = float("inf")
RESIDUAL_SHIFT_BITS = 28  # common residual scale: max(s1, s2) / 2^(28 - code bits), 2^20 for 8 bits


class NoIntegerRule(Exception):
    """This op (with these operands/attributes) is computed in float; the message says why."""


@dataclass
class QValue:
    """A quantized tensor: ``real = clip((int(expr) + offset - zero_point) * scale, *clip)``.

    ``scale`` and ``offset`` broadcast against the tensor (scalars, per channel, or any
    per-element pattern after a reshape). ``point`` is set when the tensor is a point's codes
    (nbit codes on that point's grid, no pending offset or clip). ``const`` holds the integer
    codes of a WEIGHT/BIAS in numpy (``expr`` is their constant; None for a bias, which is
    added by the add rule). ``bound`` is a bound on ``|int(expr) + offset - zero_point|``.
    """

    expr: Optional[relax.Expr]
    scale: np.ndarray
    zero_point: int = 0
    offset: Optional[np.ndarray] = None
    clip: Tuple[float, float] = (-INF, INF)
    bound: float = 0.0
    point: Optional[str] = None
    const: Optional[np.ndarray] = None
    kind: Optional[str] = None  # WEIGHT / BIAS for constants

    @property
    def is_codes(self) -> bool:
        return self.point is not None and self.offset is None and self.clip == (-INF, INF)


IntegerRule = Callable[["IntegerRealizer", relax.Var, relax.Call], QValue]
INTEGER_RULES: Dict[str, IntegerRule] = {}
MarkerRule = Callable[["IntegerRealizer", relax.Var, relax.Expr, QPoint], object]
MARKER_RULES: Dict[str, MarkerRule] = {}


# register_integer("relax.nn.conv2d", ...)(rule): rule(realizer, var, call) -> QValue; a rule
# raises NoIntegerRule(reason) to leave that binding in float
register_integer = registrar(INTEGER_RULES)


register_marker = registrar(MARKER_RULES, key=lambda kind: kind.value)  # one rule per QKind


# -- small numpy helpers ----------------------------------------------------------------------
def _compact(array) -> np.ndarray:
    """A scalar when every element is equal (so constants stay scalars), else the array."""
    array = np.asarray(array)
    if array.size and np.all(array == array.reshape(-1)[0]):
        return np.asarray(array.reshape(-1)[0])
    return array


def _on_axis(values, axis: int, ndim: int) -> np.ndarray:
    """(C,) values shaped to broadcast along ``axis`` of an ndim tensor."""
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return np.asarray(values).reshape(shape)


def _pool_counts(in_hw, pool, strides, dilation, padding, out_hw) -> np.ndarray:
    """Number of real (non-padding) inputs under each pooling window, shape out_hw."""
    counts = []
    for axis in range(2):
        size, k, s, d, before = in_hw[axis], pool[axis], strides[axis], dilation[axis], padding[axis]
        starts = np.arange(out_hw[axis]) * s - before
        taps = starts[:, None] + np.arange(k)[None, :] * d
        counts.append(((taps >= 0) & (taps < size)).sum(axis=1))
    return np.outer(counts[0], counts[1]).astype(np.float64)


class IntegerRealizer:
    """Rebuilds ``main`` binding by binding; ``env`` maps each original variable to a QValue
    or to a float expression of the new function."""

    def __init__(self, config: QConfig, state: QuantState, plans, tap: bool = False):
        self.config = config
        self.state = state
        self.plans = plans
        self.tap = tap
        self.bb: Optional[relax.BlockBuilder] = None
        self.env: Dict[relax.Var, object] = {}
        self._float_cache: Dict[relax.Var, relax.Expr] = {}
        self.float_ops: List[Dict[str, str]] = []
        self.codes_dtype = codes_dtype(config.nbit_input, config.activation_symmetric)
        self.qmin, self.qmax = qmath.activation_range(config.nbit_input, config.activation_symmetric)
        self.wide = config.nbit_input > 8 or config.nbit_weight > 8 or config.nbit_activation == 64
        self._already_float = {f["tensor"] for f in state.float_ops}

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
            return substitute(expr, {v: self.float_of(v) for v in _vars_in(expr)})
        found = self.env.get(expr, expr)
        if not isinstance(found, QValue):
            return found
        if expr not in self._float_cache:
            self._float_cache[expr] = self.dequantize(found, f"{expr.name}.dq")
        return self._float_cache[expr]

    def dequantize(self, v: QValue, name: str) -> relax.Expr:
        if v.const is not None:
            real = (v.const.astype(np.float64) + _zero_if_none(v.offset) - v.zero_point) * v.scale
            return make_const(np.clip(real, *v.clip), "float32")
        x = relax.op.astype(v.expr, "float32")
        shift = _compact(_zero_if_none(v.offset) - v.zero_point)
        if np.any(shift != 0):
            x = relax.op.add(x, self.const(shift, "float32"))
        x = relax.op.multiply(x, self.const(_compact(v.scale), "float32"))
        if v.clip != (-INF, INF):
            x = relax.op.clip(x, *_clip_bounds(v.clip, "float32"))
        return self.emit(x, name)

    def requantize(self, v: QValue, scale: float, zero_point: int, name: str) -> relax.Var:
        """Codes of ``v`` at (scale, zero_point): int64 fixed-point multiply, round half up,
        pending clip applied on the codes, cast to the code type."""
        multiplier = _compact(np.asarray(v.scale, np.float64) / scale)
        x = self.fixed_point_multiply(v, multiplier)
        if zero_point:
            x = relax.op.add(x, self.const(zero_point, "int64"))
        lo, hi = self.qmin, self.qmax
        if v.clip[0] > -INF:  # f(clip(y, a, b)) = clip(f(y), f(a), f(b)): f is monotone
            lo = max(lo, int(qmath.round_half_up(v.clip[0] / scale)) + zero_point)
        if v.clip[1] < INF:
            hi = min(hi, int(qmath.round_half_up(v.clip[1] / scale)) + zero_point)
        hi = max(hi, lo)
        x = relax.op.clip(x, lo, hi)
        return self.emit(relax.op.astype(x, self.codes_dtype), name)

    def fixed_point_multiply(self, v: QValue, multiplier) -> relax.Expr:
        """int64 ``round_half_up((int(v) + offset - zero_point) * multiplier)``:
        ``(x * M0 + 2^(r-1)) >> r``, TVM's q_multiply_shift rule (see ``fixed_point``)."""
        form = fixed_point(multiplier, max(v.bound, 1.0))
        x = relax.op.astype(v.expr, "int64")
        shift = _compact(_zero_if_none(v.offset) - v.zero_point)
        if np.any(shift != 0):
            x = relax.op.add(x, self.const(shift, "int64"))
        x = relax.op.multiply(x, self.const(_compact(form.m0), "int64"))
        rshift = _compact(form.rshift)
        x = relax.op.add(x, self.const(_compact(np.left_shift(np.int64(1), rshift - 1)), "int64"))
        return relax.op.right_shift(x, self.const(rshift, "int64"))

    def quantize_float(self, tensor, scale: float, zero_point: int, name: str) -> relax.Var:
        from .realize import emit_codes  # the exact float ops simulate emits

        codes = emit_codes(self.bb, tensor, scale, zero_point, self.qmin, self.qmax, name)
        return self.emit(relax.op.astype(codes, self.codes_dtype), name)

    def codes_value(self, expr, point_id: str) -> QValue:
        zero_point = self.state.activation_zero_points.get(point_id, 0)
        return QValue(expr, np.asarray(self.state.activation_scales[point_id], np.float64),
                      zero_point=zero_point, point=point_id,
                      bound=max(self.qmax - zero_point, zero_point - self.qmin))

    # -- the walk -------------------------------------------------------------------------
    def visit(self, var: relax.Var, value) -> None:
        if isinstance(value, relax.Var):  # an alias
            self.env[var] = self.env.get(value, value)
            return
        parsed = parse_marker(value)
        if parsed is not None:
            tensor, point_id, kind = parsed
            self.env[var] = MARKER_RULES[kind](self, var, tensor, self.state.points[point_id])
            return
        op = op_name(value)
        rule = INTEGER_RULES.get(op) if op is not None else None
        has_q = any(self.value(v) is not None for v in _vars_in(value))
        if rule is not None and has_q:
            try:
                result = rule(self, var, value)
                if result.expr is not None and not isinstance(result.expr, relax.Var):
                    result = dataclasses.replace(result, expr=self.emit(result.expr, var.name))
                self.env[var] = result
                return
            except NoIntegerRule as why:
                reason = f"no integer rule for this case ({why}): dequantized around it"
        else:
            reason = "no integer rule for this op: dequantized around it"
        if has_q and var.name not in self._already_float:
            self.float_ops.append({"tensor": var.name, "op": op or type(value).__name__,
                                   "reason": reason})
        new_value = self.float_of(value)
        self.env[var] = new_value if isinstance(new_value, relax.Var) else self.emit(new_value, var.name)

    def rewrite(self, func: relax.Function) -> relax.Function:
        self.bb = relax.BlockBuilder()
        self.env = {p: p for p in func.params}
        attrs = {k: v for k, v in func.attrs.items()} if func.attrs is not None else None
        with self.bb.function("main", list(func.params), attrs=attrs):
            with self.bb.dataflow():
                for binding in bindings(func):
                    self.visit(binding.var, binding.value)
                result = self.float_of(func.body.body)  # dequantize once at the outputs
                out = self.bb.emit_output(result)
            self.bb.emit_func_output(out)
        return self.bb.get()["main"]


def _zero_if_none(offset):
    return 0 if offset is None else offset


def _clip_bounds(clip, dtype):
    info = np.finfo(dtype)
    return max(clip[0], float(info.min)), min(clip[1], float(info.max))


def _vars_in(expr) -> List[relax.Var]:
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for a in expr.args for v in _vars_in(a)]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in _vars_in(f)]
    if isinstance(expr, relax.TupleGetItem):
        return _vars_in(expr.tuple_value)
    return []


# -- points -----------------------------------------------------------------------------------
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
        codes = r.requantize(source, scale, zero_point, name)
    elif not is_const(tensor):
        codes = r.quantize_float(r.float_of(tensor), scale, zero_point, name)
    else:  # a constant operand: quantize it here
        qmin, qmax = r.qmin, r.qmax
        codes_np = np.clip(qmath.round_half_up(const_value(tensor) / scale) + zero_point, qmin, qmax)
        codes = r.emit(make_const(codes_np, r.codes_dtype), name)
    if r.tap:  # evaluation reads the codes under the point's id (and dequantizes them)
        codes = r.emit(make_marker(codes, point.id, point.kind), f"{point.id}.tap")
    return r.codes_value(codes, point.id)


@register_marker(QKind.WEIGHT)
def _weight_point(r: IntegerRealizer, var, tensor, point: QPoint) -> QValue:
    plan = r.plans[point.id]
    dtype = codes_dtype(r.config.nbit_weight, True)
    ndim = plan.weight_codes.ndim
    return QValue(make_const(plan.weight_codes, dtype),
                  _on_axis(plan.weight_scale, point.axis, ndim), const=plan.weight_codes,
                  kind=QKind.WEIGHT.value, bound=float(np.abs(plan.weight_codes).max(initial=0)))


@register_marker(QKind.BIAS)
def _bias_point(r: IntegerRealizer, var, tensor, point: QPoint) -> QValue:
    quant = r.plans[point.weight_point].bias
    shape = const_value(tensor).shape
    return QValue(None, quant.scale.reshape(shape), const=quant.codes.reshape(shape),
                  kind=QKind.BIAS.value, bound=float(np.abs(quant.codes).max(initial=0)))


# -- op rules ---------------------------------------------------------------------------------
def _codes_operand(r: IntegerRealizer, expr, what: str) -> QValue:
    v = r.value(expr)
    if v is None or not v.is_codes:
        raise NoIntegerRule(f"{what} is not an integer-coded tensor")
    return v


def _weight_operand(r: IntegerRealizer, expr) -> QValue:
    v = r.value(expr)
    if v is None or v.kind != QKind.WEIGHT.value:
        raise NoIntegerRule("weight is not a quantized constant")
    return v


def _layer_bound(data: QValue, weight_codes: np.ndarray, reduce_axes) -> float:
    """Largest |accumulator|: max over channels of sum|w| * max|x - z|."""
    per_channel = np.abs(weight_codes.astype(np.int64)).sum(axis=reduce_axes)
    return float(per_channel.max(initial=0)) * data.bound


def _layer_value(acc_expr, data: QValue, weight_codes: np.ndarray, reduce_axes, bound: float,
                 scale, channel_axis: int, ndim: int) -> QValue:
    """Accumulator of a conv/matmul: scale s_x * s_w, zero-point correction pending."""
    weight_codes = weight_codes.astype(np.int64)
    offset = None
    if data.zero_point:
        offset = _on_axis(-data.zero_point * weight_codes.sum(axis=reduce_axes), channel_axis, ndim)
    return QValue(acc_expr, _on_axis(scale, channel_axis, ndim), offset=offset, bound=bound)


@register_integer("relax.nn.conv2d")
def _conv2d(r: IntegerRealizer, var, call) -> QValue:
    data = _codes_operand(r, call.args[0], "conv input")
    weight = _weight_operand(r, call.args[1])
    attrs = call.attrs
    data_layout, kernel_layout = str(attrs.data_layout), str(attrs.kernel_layout)
    out_layout = str(attrs.out_layout or data_layout)
    o_axis = kernel_layout.index("O")
    reduce_axes = tuple(i for i in range(weight.const.ndim) if i != o_axis)
    bound = _layer_bound(data, weight.const, reduce_axes)
    padding = [int(p) for p in attrs.padding]
    x = data.expr
    if data.zero_point and any(padding):
        # zero padding means real 0, i.e. the zero point: pad explicitly with it
        widths = [0] * (2 * len(data_layout))
        h, w = data_layout.index("H"), data_layout.index("W")
        widths[2 * h], widths[2 * h + 1] = padding[0], padding[2]
        widths[2 * w], widths[2 * w + 1] = padding[1], padding[3]
        x = r.emit(relax.op.nn.pad(x, widths, pad_value=float(data.zero_point)), f"{var.name}.pad")
        padding = [0, 0, 0, 0]
    acc = relax.op.nn.conv2d(
        x, weight.expr, strides=attrs.strides, padding=padding, dilation=attrs.dilation,
        groups=int(attrs.groups), data_layout=data_layout, kernel_layout=kernel_layout,
        out_layout=out_layout, out_dtype=r.accumulator_dtype(bound))
    weight_scale = weight.scale.reshape(-1)
    scale = data.scale * weight_scale
    return _layer_value(acc, data, weight.const, reduce_axes, bound, scale,
                        out_layout.index("C"), len(out_layout))


@register_integer("relax.matmul")
def _matmul(r: IntegerRealizer, var, call) -> QValue:
    data = _codes_operand(r, call.args[0], "matmul input")
    weight = _weight_operand(r, call.args[1])
    if weight.const.ndim != 2:
        raise NoIntegerRule("matmul weight is not 2-D")
    bound = _layer_bound(data, weight.const, (0,))
    acc = relax.op.matmul(data.expr, weight.expr, out_dtype=r.accumulator_dtype(bound))
    return _layer_value(acc, data, weight.const, (0,), bound,
                        data.scale * weight.scale.reshape(-1), -1, len(shape_of(var)))


@register_integer("relax.add")
def _add(r: IntegerRealizer, var, call) -> QValue:
    lhs, rhs = (r.value(a) for a in call.args)
    if lhs is not None and lhs.kind == QKind.BIAS.value:
        lhs, rhs = rhs, lhs
    if rhs is not None and rhs.kind == QKind.BIAS.value:
        return _bias_add(r, var, lhs, rhs)
    if lhs is None or rhs is None or not (lhs.is_codes and rhs.is_codes):
        raise NoIntegerRule("add of tensors that are not both integer codes")
    return _residual_add(r, var, lhs, rhs)


def _bias_add(r: IntegerRealizer, var, acc: Optional[QValue], bias: QValue) -> QValue:
    if acc is None or acc.point is not None or acc.clip != (-INF, INF):
        raise NoIntegerRule("bias added to something other than a layer accumulator")
    out_shape = shape_of(var)
    acc_scale = np.broadcast_to(acc.scale, out_shape)
    if not np.allclose(np.broadcast_to(bias.scale, out_shape), acc_scale, rtol=1e-9, atol=0):
        raise GraphError(f"{var.name}: bias scale differs from the accumulator scale s_in*s_w")
    total = _compact(bias.const.astype(np.int64) + _zero_if_none(acc.offset))
    bound = acc.bound + float(np.abs(total).max(initial=0))
    dtype = r.accumulator_dtype(bound)
    x = acc.expr
    if str(x.ty.dtype) != dtype:
        x = relax.op.astype(x, dtype)
    out = relax.op.add(x, r.const(total, dtype)) if np.any(total != 0) else x
    return QValue(out, acc.scale, bound=bound)


def _residual_add(r: IntegerRealizer, var, lhs: QValue, rhs: QValue) -> QValue:
    bits = np.iinfo(r.codes_dtype).bits
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
            v, expr=relax.op.maximum(v.expr, r.const(v.zero_point, r.codes_dtype)))
    return dataclasses.replace(v, clip=_compose_clip(v.clip, 0.0, INF))


@register_integer("relax.clip")
def _clip(r: IntegerRealizer, var, call) -> QValue:
    v = r.value(call.args[0])
    lo, hi = (float(a.value) for a in call.args[1:3])
    if v.const is not None:
        raise NoIntegerRule("clip of a constant")
    return dataclasses.replace(v, clip=_compose_clip(v.clip, lo, hi), point=None)


def _compose_clip(clip, lo, hi):
    """clip(clip(y, a, b), lo, hi) == clip(y, clip(a, lo, hi), clip(b, lo, hi))."""
    return (min(max(clip[0], lo), hi), min(max(clip[1], lo), hi))


def _reshape_like(r: IntegerRealizer, var, call, transform) -> QValue:
    """Data movement: the same op on the integers; per-element scale/offset follow."""
    v = r.value(call.args[0])
    if v.const is not None:
        raise NoIntegerRule("data movement of a constant")
    in_shape = shape_of(call.args[0])

    def move(array):
        if array is None:
            return None
        array = np.asarray(array)
        if array.ndim == 0:
            return array
        return _compact(transform(np.broadcast_to(array, in_shape)))

    expr = relax.Call(call.op, [v.expr] + list(call.args[1:]), call.attrs, list(call.ty_args))
    return dataclasses.replace(v, expr=expr, scale=move(v.scale), offset=move(v.offset))


@register_integer("relax.reshape", "relax.flatten", "relax.squeeze", "relax.expand_dims")
def _reshape(r: IntegerRealizer, var, call) -> QValue:
    out_shape = shape_of(var)
    return _reshape_like(r, var, call, lambda a: a.reshape(out_shape))


@register_integer("relax.permute_dims")
def _permute(r: IntegerRealizer, var, call) -> QValue:
    axes = None if call.attrs.axes is None else [int(a) for a in call.attrs.axes]
    return _reshape_like(r, var, call, lambda a: np.transpose(a, axes))


@register_integer("relax.nn.max_pool2d")
def _max_pool(r: IntegerRealizer, var, call) -> QValue:
    """max commutes with the monotone dequantize: pool the codes (padding never wins)."""
    v = _codes_operand(r, call.args[0], "max pool input")
    expr = relax.Call(call.op, [v.expr] + list(call.args[1:]), call.attrs, list(call.ty_args))
    return dataclasses.replace(v, expr=expr)


def _sum_value(v: QValue, summed, window: int, count=None) -> QValue:
    """A sum of ``window`` codes divided by ``count`` (default: window; an array when it varies
    by position): int32 at scale s / count, ``-z * window`` folded into the offset. The
    division happens in the next requantize's multiplier, with its rounding."""
    count = np.asarray(window if count is None else count, np.float64)
    offset = np.asarray(-v.zero_point * window, np.int64) if v.zero_point else None
    return QValue(summed, v.scale / count, offset=offset, bound=float(v.bound * window))


def _require_nchw(attrs) -> None:
    if str(attrs.layout) != "NCHW" or str(attrs.out_layout or attrs.layout) != "NCHW":
        raise NoIntegerRule(f"layout {attrs.layout}")


@register_integer("relax.nn.avg_pool2d")
def _avg_pool(r: IntegerRealizer, var, call) -> QValue:
    v = _codes_operand(r, call.args[0], "average pool input")
    attrs = call.attrs
    _require_nchw(attrs)
    if bool(attrs.ceil_mode):
        raise NoIntegerRule("ceil_mode")
    pool = [int(p) for p in attrs.pool_size]
    padding = [int(p) for p in attrs.padding]
    strides = [int(s) for s in attrs.strides]
    dilation = [int(d) for d in attrs.dilation]
    in_shape, out_shape = shape_of(call.args[0]), shape_of(var)
    channels = in_shape[1]
    # window sums as a depthwise conv with a ones kernel; padding holds the zero point
    x = v.expr
    if v.zero_point and any(padding):
        x = r.emit(relax.op.nn.pad(x, [0, 0, 0, 0, padding[0], padding[2], padding[1], padding[3]],
                                   pad_value=float(v.zero_point)), "pad")
        conv_padding = [0, 0, 0, 0]
    else:
        conv_padding = padding
    ones = r.const(np.ones((channels, 1, pool[0], pool[1])), "int8")
    summed = relax.op.nn.conv2d(x, ones, strides=strides, padding=conv_padding, dilation=dilation,
                                groups=channels, out_dtype="int32")
    window = pool[0] * pool[1]  # codes summed per output, padding (= zero point) included
    counts = None
    if not bool(attrs.count_include_pad):
        counts = _compact(_pool_counts(in_shape[2:], pool, strides, dilation, padding[:2],
                                       out_shape[2:]).reshape(1, 1, *out_shape[2:]))
    return _sum_value(v, summed, window, counts)


@register_integer("relax.nn.adaptive_avg_pool2d")
def _adaptive_avg_pool(r: IntegerRealizer, var, call) -> QValue:
    v = _codes_operand(r, call.args[0], "average pool input")
    attrs = call.attrs
    _require_nchw(attrs)
    n, c, h, w = shape_of(call.args[0])
    oh, ow = shape_of(var)[2:]
    if h % oh or w % ow:
        raise NoIntegerRule("output size does not divide the input")
    kh, kw = h // oh, w // ow
    x = relax.op.astype(v.expr, "int32")
    if (kh, kw) != (h, w):
        x = relax.op.reshape(x, [n, c, oh, kh, ow, kw])
        summed = relax.op.sum(x, axis=[3, 5])
    else:
        summed = relax.op.sum(x, axis=[2, 3], keepdims=True)
    return _sum_value(v, summed, kh * kw)


@register_integer("relax.mean")
def _mean(r: IntegerRealizer, var, call) -> QValue:
    v = _codes_operand(r, call.args[0], "mean input")
    in_shape = shape_of(call.args[0])
    axes = range(len(in_shape)) if call.attrs.axis is None else [int(a) for a in call.attrs.axis]
    count = int(np.prod([in_shape[a] for a in axes]))
    summed = relax.op.sum(relax.op.astype(v.expr, "int32"), axis=call.attrs.axis,
                          keepdims=bool(call.attrs.keepdims))
    return _sum_value(v, summed, count)


@register_integer("relax.concat")
def _concat(r: IntegerRealizer, var, call) -> QValue:
    """Each input keeps its own scale and zero point along the concat axis: the next point's
    requantize is per channel, so no intermediate rounding happens."""
    fields = call.args[0]
    if not isinstance(fields, relax.Tuple):
        raise NoIntegerRule("concat of a tuple variable")
    values = [_codes_operand(r, f, f"concat input {i}") for i, f in enumerate(fields.fields)]
    out_shape = shape_of(var)
    axis = int(call.attrs.axis) % len(out_shape)
    scales, offsets = [], []
    for f, v in zip(fields.fields, values):
        width = shape_of(f)[axis]
        scales.append(np.full(width, float(v.scale)))
        offsets.append(np.full(width, -v.zero_point, np.int64))
    scale = _compact(_on_axis(np.concatenate(scales), axis, len(out_shape)))
    offset = _compact(_on_axis(np.concatenate(offsets), axis, len(out_shape)))
    expr = relax.op.concat([v.expr for v in values], axis=axis)
    return QValue(expr, scale, offset=offset if np.any(offset != 0) else None,
                  bound=max(v.bound for v in values))


def realize_integer(mod: tvm.IRModule, config: QConfig, state: QuantState, plans,
                    tap: bool = False) -> Tuple[tvm.IRModule, List[Dict[str, str]]]:
    """The calibrated module's ``main`` in integer arithmetic; returns (module, float ops)."""
    realizer = IntegerRealizer(config, state, plans, tap)
    func = realizer.rewrite(mod["main"])
    out = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"},
                       attrs=mod.attrs)
    out["main"] = func
    return out, realizer.float_ops
