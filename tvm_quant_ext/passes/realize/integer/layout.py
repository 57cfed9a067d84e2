"""Integer rules of data movement: reshape-like ops and transposes move the integers (and any
per-element scale or offset with them); concat keeps each input's scale along the concat axis
(a per-channel multiplier at the next point, so no intermediate rounding).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from ....graph import shape_of
from ...annotate import is_zero_pad
from .qvalue import NoIntegerRule, QValue, compact, on_axis
from .realizer import IntegerRealizer, register_integer


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
        return compact(transform(np.broadcast_to(array, in_shape)))

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


@register_integer("relax.nn.pad")
def _pad(r: IntegerRealizer, var, call) -> QValue:
    """Zero padding of codes: the pad value is the code of real 0, the zero point. The scale
    must not vary along a padded axis (per-channel scales on an unpadded channel axis do not)."""
    if not is_zero_pad(call):
        raise NoIntegerRule(f"pad_mode={call.attrs.pad_mode}, pad_value={call.attrs.pad_value}")
    v = r.value(call.args[0])
    if v.const is not None:
        raise NoIntegerRule("padding a constant")
    # the pad code p must mean real 0: clip((p + offset - zero_point) * scale) == 0
    if v.offset is not None and np.asarray(v.offset).ndim:
        raise NoIntegerRule("padding a value with a per-element offset")
    if not (np.all(np.asarray(v.clip[0]) <= 0) and np.all(np.asarray(v.clip[1]) >= 0)):
        raise NoIntegerRule("padding a value clipped to a range that excludes 0")
    pad_code = v.zero_point - (0 if v.offset is None else int(v.offset))
    widths = [int(w) for w in call.attrs.pad_width]
    padded = {axis for axis in range(len(widths) // 2) if widths[2 * axis] or widths[2 * axis + 1]}
    scale = np.asarray(v.scale)
    rank = len(shape_of(call.args[0]))
    if scale.ndim and any(scale.shape[axis - rank + scale.ndim] != 1 for axis in padded
                          if axis - rank + scale.ndim >= 0):
        raise NoIntegerRule("a scale that varies along a padded axis")
    expr = relax.op.nn.pad(v.expr, widths, pad_value=float(pad_code))
    return dataclasses.replace(v, expr=expr)


@register_integer("relax.concat")
def _concat(r: IntegerRealizer, var, call) -> QValue:
    """Each input keeps its own scale and zero point along the concat axis: the next point's
    requantize is per channel, so no intermediate rounding happens."""
    fields = call.args[0]
    if not isinstance(fields, relax.Tuple):
        raise NoIntegerRule("concat of a tuple variable")
    values = [r.codes_operand(f, f"concat input {i}") for i, f in enumerate(fields.fields)]
    out_shape = shape_of(var)
    axis = int(call.attrs.axis) % len(out_shape)
    scales, offsets = [], []
    for f, v in zip(fields.fields, values):
        width = shape_of(f)[axis]
        scales.append(np.full(width, float(v.scale)))
        offsets.append(np.full(width, -v.zero_point, np.int64))
    scale = compact(on_axis(np.concatenate(scales), axis, len(out_shape)))
    offset = compact(on_axis(np.concatenate(offsets), axis, len(out_shape)))
    expr = relax.op.concat([v.expr for v in values], axis=axis)
    return QValue(expr, scale, offset=offset if np.any(offset != 0) else None,
                  bound=max(v.bound for v in values))
