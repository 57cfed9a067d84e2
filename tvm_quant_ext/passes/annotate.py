"""annotate: put quantization points (with stable ids and kinds) where each op needs them.

One rule per op, registered by op name (like relay's ``register_annotate_function``).
A rule gets the context, the binding's name and the call (arguments already rewritten) and
returns the call to bind. It asks the context for quantized operands:

* ``ctx.activation(x)``: x as an 8-bit tensor (one point per tensor, shared by consumers),
* ``ctx.weight(w, layer, axis)``: a constant weight (per output channel on ``axis``),
* ``ctx.bias(b, layer)``: the constant added to a layer's output (kind BIAS),

and says what its output is: ``ctx.set_int(var, point)`` when the output still lies on the
grid of ``point`` (relu, max pool, reshape of an 8-bit tensor), ``ctx.set_layer_output`` for
the accumulator of a conv/matmul (a following constant add is its bias), otherwise the output
is a float tensor that the next quantized consumer quantizes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import tvm
from tvm import relax

from ..config import QConfig, QKind
from ..graph import (BindingRewriter, GraphError, binding_name, const_value, is_const,
                     module_attr, op_name, registrar, shape_of, short_op)
from ..layer_ops import LAYER_OPS
from ..points import QPoint, QuantState, make_marker, set_state
from .prepare.equalize import EQUALIZE_ATTR


class UnsupportedOpError(ValueError):
    """An op has no quantization rule and QConfig.on_unsupported_op == 'error'."""


AnnotateRule = Callable[["AnnotateContext", str, relax.Call], relax.Expr]
ANNOTATE_RULES: Dict[str, AnnotateRule] = {}


# register_annotate("relax.nn.conv2d", ...)(rule): rule(ctx, name, call) -> expr
register_annotate = registrar(ANNOTATE_RULES, what="annotate rule")


@dataclass
class _LayerOutput:
    layer: str
    input_point: str
    weight_point: str
    channel_axis: int


class AnnotateContext(BindingRewriter):
    def __init__(self, config: QConfig):
        super().__init__()
        self.config = config
        self.points: Dict[str, QPoint] = {}
        self.int_point: Dict[relax.Var, str] = {}      # tensor -> point whose grid it lies on
        self.marked: Dict[relax.Var, relax.Var] = {}   # tensor -> its marker binding
        self.layer_output: Dict[relax.Var, _LayerOutput] = {}
        self.float_ops: List[Dict[str, str]] = []
        self.layers: List[str] = []
        self.skip = {binding_name(name) for name in config.skip_layers}
        self._deferred = None  # (what, payload) a rule said about the output being bound

    # -- what rules call ----------------------------------------------------------------
    def _add_point(self, point: QPoint, expr) -> relax.Var:
        if point.id in self.points:
            raise GraphError(f"quantization point id {point.id!r} is not unique")
        self.points[point.id] = point
        return self.emit(make_marker(expr, point.id, point.kind), f"{point.id}.q")

    def activation(self, expr, consumer: str, index: int = 0):
        """``expr`` as a quantized tensor; returns the expression to use in its place."""
        if isinstance(expr, relax.Var):
            if expr in self.int_point:
                return expr
            if expr in self.marked:
                return self.marked[expr]
            is_input = expr in self.func.params
            point_id = expr.name
            kind = QKind.INPUT.value if is_input else QKind.ACTIVATION.value
            marker = self._add_point(
                QPoint(point_id, kind, expr.name, expr.name, list(shape_of(expr))), expr)
            self.marked[expr] = marker
            self.int_point[marker] = point_id
            return marker
        if is_const(expr):
            point_id = f"{consumer}.arg{index}"
            marker = self._add_point(
                QPoint(point_id, QKind.ACTIVATION.value, point_id, consumer, list(shape_of(expr))),
                expr)
            self.int_point[marker] = point_id
            return marker
        raise GraphError(f"{consumer}: operand {index} is a {type(expr).__name__}, expected a tensor")

    def weight(self, expr, layer: str, axis: int):
        point_id = f"{layer}.weight"
        return self._add_point(
            QPoint(point_id, QKind.WEIGHT.value, point_id, layer, list(shape_of(expr)), axis=axis),
            expr)

    def bias(self, expr, out: _LayerOutput):
        point_id = f"{out.layer}.bias"
        return self._add_point(
            QPoint(point_id, QKind.BIAS.value, point_id, out.layer, list(shape_of(expr)),
                   input_point=out.input_point, weight_point=out.weight_point,
                   channel_axis=out.channel_axis),
            expr)

    def point_of(self, expr) -> Optional[str]:
        return self.int_point.get(expr) if isinstance(expr, relax.Var) else None

    def keep_float(self, name: str, call, reason: str) -> relax.Expr:
        self.float_ops.append({"tensor": name, "op": op_name(call) or type(call).__name__,
                               "reason": reason})
        return call

    def skipped(self, layer: str) -> bool:
        return layer in self.skip

    # -- the walk ---------------------------------------------------------------------------
    def visit(self, var, value):
        op = op_name(value)
        if op is None or op == "relax.call_pure_packed":
            return value  # tuples, tuple items, aliases: no arithmetic
        rule = ANNOTATE_RULES.get(op)
        if rule is None:
            if self.config.on_unsupported_op == "error":
                raise UnsupportedOpError(
                    f"op {op} (tensor {var.name!r}) has no quantization rule; add one with "
                    "tvm_quant_ext.passes.register_annotate, or set on_unsupported_op='float' "
                    "to keep it in float")
            return self.keep_float(var.name, value, "no quantization rule for this op")
        self._deferred = None
        return rule(self, var.name, value)

    def bound(self, old_var, new_var):
        # What the rule said about its output attaches to the variable it was bound to.
        if self._deferred is not None:
            kind, payload = self._deferred
            if kind == "int":
                self.int_point[new_var] = payload
            else:
                self.layer_output[new_var] = payload
            self._deferred = None

    def set_int(self, point: str):
        """The output of the op being annotated lies on ``point``'s grid."""
        self._deferred = ("int", point)

    def set_layer_output(self, out: _LayerOutput):
        """The output of the op being annotated is a conv/matmul accumulator."""
        self._deferred = ("layer", out)


# -- rules ------------------------------------------------------------------------------------
@register_annotate(*LAYER_OPS)
def _annotate_layer(ctx: AnnotateContext, name: str, call):
    """A layer op (conv2d, matmul) with a constant weight: INPUT/ACTIVATION data, WEIGHT
    weight per output channel, its output an accumulator whose constant add is its BIAS."""
    layer = LAYER_OPS[op_name(call)]
    data, weight = call.args[0], call.args[1]
    ctx.layers.append(name)
    if ctx.skipped(name):
        return ctx.keep_float(name, call, "in QConfig.skip_layers")
    if not is_const(weight):
        return ctx.keep_float(name, call, "weight is not a constant")
    if layer.weight_ndim is not None and len(shape_of(weight)) != layer.weight_ndim:
        return ctx.keep_float(name, call, f"{short_op(layer.name)} weight is not "
                                          f"{layer.weight_ndim}-D")
    w_axis = layer.weight_axis(call)
    if w_axis is None:
        return ctx.keep_float(name, call, "kernel layout has no output-channel axis")
    q_data = ctx.activation(data, name, 0)
    q_weight = ctx.weight(weight, name, w_axis)
    ctx.set_layer_output(_LayerOutput(name, ctx.point_of(q_data), f"{name}.weight",
                                      layer.channel_axis(call)))
    return relax.Call(call.op, [q_data, q_weight] + list(call.args[2:]), call.attrs,
                      list(call.ty_args))


def _is_channel_constant(const, out_shape, channel_axis) -> bool:
    value = const_value(const)
    if value.ndim > len(out_shape):
        return False
    padded = (1,) * (len(out_shape) - value.ndim) + value.shape
    axis = channel_axis % len(out_shape)
    return all(d == 1 for i, d in enumerate(padded) if i != axis) and padded[axis] in (1, out_shape[axis])


@register_annotate("relax.add")
def _annotate_add(ctx: AnnotateContext, name: str, call):
    """layer output + per-channel constant is that layer's BIAS; tensor + tensor (a residual)
    quantizes both operands."""
    lhs, rhs = call.args
    if is_const(lhs) and not is_const(rhs):
        lhs, rhs = rhs, lhs
    if is_const(rhs):
        out = ctx.layer_output.get(lhs)
        if out is not None and _is_channel_constant(rhs, shape_of(lhs), out.channel_axis):
            return relax.op.add(lhs, ctx.bias(rhs, out))
        return ctx.keep_float(name, call, "add of a constant that is not a layer bias")
    return relax.op.add(ctx.activation(lhs, name, 0), ctx.activation(rhs, name, 1))


@register_annotate("relax.nn.relu", "relax.reshape", "relax.flatten", "relax.permute_dims",
                   "relax.squeeze", "relax.expand_dims")
def _annotate_passthrough(ctx: AnnotateContext, name: str, call):
    """Ops that keep an 8-bit input on its grid; on a float input they stay fused with the
    producer (relu of a conv accumulator) and the next quantized consumer quantizes."""
    point = ctx.point_of(call.args[0])
    if point is not None:
        ctx.set_int(point)
    return call


def is_zero_pad(call) -> bool:
    """Constant padding with 0: real 0 is exactly a code (the zero point), so the padded
    tensor stays on its input's grid."""
    return str(call.attrs.pad_mode) == "constant" and float(call.attrs.pad_value) == 0.0


@register_annotate("relax.nn.pad")
def _annotate_pad(ctx: AnnotateContext, name: str, call):
    """Zero padding (torch.export spells a conv's padding this way) of 8-bit codes stays on
    their grid: the input is quantized before the pad (a model input stays the INPUT point, a
    ReLU6 output its own point, as when the padding is inside the conv), and the pad moves
    codes. Other padding (reflect, a nonzero value) is not on the grid and stays float."""
    if not is_zero_pad(call):
        return ctx.keep_float(name, call, f"pad_mode={call.attrs.pad_mode}, "
                                          f"pad_value={call.attrs.pad_value}")
    q = ctx.activation(call.args[0], name, 0)
    ctx.set_int(ctx.point_of(q))
    return relax.Call(call.op, [q] + list(call.args[1:]), call.attrs, list(call.ty_args))


@register_annotate("relax.clip")
def _annotate_clip(ctx: AnnotateContext, name: str, call):
    """ReLU6: applied to the float/accumulator value; its output gets the next point.
    (Clip bounds such as 6 are not on an arbitrary 8-bit grid, so the output is not kept there.)"""
    return call


@register_annotate("relax.minimum", "relax.maximum")
def _annotate_bound(ctx: AnnotateContext, name: str, call):
    """A per-channel clip bound (equalization's ReLU6, minimum(relu(x), 6 / s)): like clip,
    applied to the float/accumulator value; its output gets the next point."""
    if sum(is_const(a) for a in call.args) != 1:
        return ctx.keep_float(name, call, f"{short_op(op_name(call))} of two tensors")
    return call


@register_annotate("relax.nn.max_pool2d")
def _annotate_max_pool(ctx: AnnotateContext, name: str, call):
    q = ctx.activation(call.args[0], name, 0)
    ctx.set_int(ctx.point_of(q))
    return relax.Call(call.op, [q] + list(call.args[1:]), call.attrs, list(call.ty_args))


@register_annotate("relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d", "relax.mean")
def _annotate_average(ctx: AnnotateContext, name: str, call):
    """Averages read 8-bit input; the mean is not on the input grid, so it is requantized."""
    q = ctx.activation(call.args[0], name, 0)
    return relax.Call(call.op, [q] + list(call.args[1:]), call.attrs, list(call.ty_args))


@register_annotate("relax.concat")
def _annotate_concat(ctx: AnnotateContext, name: str, call):
    fields = call.args[0]
    if not isinstance(fields, relax.Tuple):
        return ctx.keep_float(name, call, "concat of a tuple variable")
    quantized = relax.Tuple([ctx.activation(f, name, i) for i, f in enumerate(fields.fields)])
    return relax.Call(call.op, [quantized] + list(call.args[1:]), call.attrs, list(call.ty_args))


def annotation_key(config: QConfig) -> tuple:
    """The QConfig fields that decide where annotate puts points and on what (equalize
    rewrites the prepared weights): configs with equal keys annotate a module identically."""
    return (config.skip_layers, config.on_unsupported_op, config.equalize)


def annotate(mod: tvm.IRModule, config: Optional[QConfig] = None) -> tvm.IRModule:
    config = config or QConfig()
    ctx = AnnotateContext(config)
    out = ctx(mod)
    unknown = sorted(name for name in config.skip_layers if binding_name(name) not in ctx.layers)
    if unknown:
        raise ValueError(f"QConfig.skip_layers names {unknown}, which are not layers of this "
                         f"model; its layers are {ctx.layers[:10]}{'...' if len(ctx.layers) > 10 else ''}")
    equalization = module_attr(mod, EQUALIZE_ATTR)
    return set_state(out, QuantState(points=ctx.points, float_ops=ctx.float_ops,
                                     equalization=None if equalization is None
                                     else json.loads(str(equalization))))


def Annotate(config: Optional[QConfig] = None):  # pylint: disable=invalid-name
    """annotate as a tvm.transform pass."""

    @tvm.transform.module_pass(opt_level=0, name="Annotate")
    def _pass(mod, _ctx):
        return annotate(mod, config)

    return _pass
