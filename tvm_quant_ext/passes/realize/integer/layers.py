"""Integer rules of the layer ops: conv2d and matmul into an int32/int64 accumulator, and the
bias added to it.

The accumulator is at scale ``s_x * s_w`` (per channel); an input zero point pads with the
zero point and folds ``-z_x * sum(w)`` into the bias; a layer whose bias could overflow int32
accumulates in int64. Weight and channel axes come from ``layer_ops.LAYER_OPS``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from tvm import relax

from ....graph import GraphError, shape_of
from ....layer_ops import LAYER_OPS
from .qvalue import NoIntegerRule, QValue, compact, has_clip, on_axis, zero_if_none
from .realizer import IntegerRealizer, register_integer


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
        offset = on_axis(-data.zero_point * weight_codes.sum(axis=reduce_axes), channel_axis, ndim)
    return QValue(acc_expr, on_axis(scale, channel_axis, ndim), offset=offset, bound=bound)


@register_integer("relax.nn.conv2d")
def _conv2d(r: IntegerRealizer, var, call) -> QValue:
    data = r.codes_operand(call.args[0], "conv input")
    weight = r.weight_operand(call.args[1])
    layer = LAYER_OPS["relax.nn.conv2d"]
    attrs = call.attrs
    data_layout, kernel_layout = str(attrs.data_layout), str(attrs.kernel_layout)
    out_layout = str(attrs.out_layout or data_layout)
    reduce_axes = layer.reduce_axes(call)
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
                        layer.channel_axis(call), len(out_layout))


@register_integer("relax.matmul")
def _matmul(r: IntegerRealizer, var, call) -> QValue:
    data = r.codes_operand(call.args[0], "matmul input")
    weight = r.weight_operand(call.args[1])
    layer = LAYER_OPS["relax.matmul"]
    if weight.const.ndim != layer.weight_ndim:
        raise NoIntegerRule(f"matmul weight is not {layer.weight_ndim}-D")
    reduce_axes = layer.reduce_axes(call)
    bound = _layer_bound(data, weight.const, reduce_axes)
    acc = relax.op.matmul(data.expr, weight.expr, out_dtype=r.accumulator_dtype(bound))
    return _layer_value(acc, data, weight.const, reduce_axes, bound,
                        data.scale * weight.scale.reshape(-1), layer.channel_axis(call),
                        len(shape_of(var)))


def bias_add(r: IntegerRealizer, var, acc: Optional[QValue], bias: QValue) -> QValue:
    """A BIAS constant added to a layer accumulator, in the accumulator's (widened) type."""
    if acc is None or acc.point is not None or has_clip(acc.clip):
        raise NoIntegerRule("bias added to something other than a layer accumulator")
    out_shape = shape_of(var)
    acc_scale = np.broadcast_to(acc.scale, out_shape)
    if not np.allclose(np.broadcast_to(bias.scale, out_shape), acc_scale, rtol=1e-9, atol=0):
        raise GraphError(f"{var.name}: bias scale differs from the accumulator scale s_in*s_w")
    total = compact(bias.const.astype(np.int64) + zero_if_none(acc.offset))
    bound = acc.bound + float(np.abs(total).max(initial=0))
    dtype = r.accumulator_dtype(bound)
    x = acc.expr
    if str(x.ty.dtype) != dtype:
        x = relax.op.astype(x, dtype)
    out = relax.op.add(x, r.const(total, dtype)) if np.any(total != 0) else x
    return QValue(out, acc.scale, bound=bound)
