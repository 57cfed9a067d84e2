"""Integer rules of pooling: max pool on codes; average pools and means as int32 sums with
``1/n`` folded into the next requantize's multiplier (one rounding, no truncation).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from ....graph import shape_of
from .qvalue import NoIntegerRule, QValue, compact
from .realizer import IntegerRealizer, register_integer


def _pool_counts(in_hw, pool, strides, dilation, padding, out_hw) -> np.ndarray:
    """Number of real (non-padding) inputs under each pooling window, shape out_hw."""
    counts = []
    for axis in range(2):
        size, k, s, d, before = in_hw[axis], pool[axis], strides[axis], dilation[axis], padding[axis]
        starts = np.arange(out_hw[axis]) * s - before
        taps = starts[:, None] + np.arange(k)[None, :] * d
        counts.append(((taps >= 0) & (taps < size)).sum(axis=1))
    return np.outer(counts[0], counts[1]).astype(np.float64)


@register_integer("relax.nn.max_pool2d")
def _max_pool(r: IntegerRealizer, var, call) -> QValue:
    """max commutes with the monotone dequantize: pool the codes (padding never wins)."""
    v = r.codes_operand(call.args[0], "max pool input")
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
    v = r.codes_operand(call.args[0], "average pool input")
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
        counts = compact(_pool_counts(in_shape[2:], pool, strides, dilation, padding[:2],
                                       out_shape[2:]).reshape(1, 1, *out_shape[2:]))
    return _sum_value(v, summed, window, counts)


@register_integer("relax.nn.adaptive_avg_pool2d")
def _adaptive_avg_pool(r: IntegerRealizer, var, call) -> QValue:
    v = r.codes_operand(call.args[0], "average pool input")
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
    v = r.codes_operand(call.args[0], "mean input")
    in_shape = shape_of(call.args[0])
    axes = range(len(in_shape)) if call.attrs.axis is None else [int(a) for a in call.attrs.axis]
    count = int(np.prod([in_shape[a] for a in axes]))
    summed = relax.op.sum(relax.op.astype(v.expr, "int32"), axis=call.attrs.axis,
                          keepdims=bool(call.attrs.keepdims))
    return _sum_value(v, summed, count)
