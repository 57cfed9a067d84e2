"""QValue: a quantized tensor as the integer realize carries it, and numpy helpers on scales.

A value flows as (integer tensor, scale, zero point, pending integer offset, pending real
clip): a conv's accumulator carries its zero-point correction as a pending offset and a
following ReLU6 as a pending clip, both applied exactly at the next requantize.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from tvm import relax

from ....graph import make_const

INF = float("inf")


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
    # (lo, hi): floats, or arrays broadcasting against the tensor (a per-channel bound)
    clip: Tuple[object, object] = (-INF, INF)
    bound: float = 0.0
    point: Optional[str] = None
    const: Optional[np.ndarray] = None
    kind: Optional[str] = None  # WEIGHT / BIAS for constants

    @property
    def is_codes(self) -> bool:
        return self.point is not None and self.offset is None and not has_clip(self.clip)


def compact(array) -> np.ndarray:
    """A scalar when every element is equal (so constants stay scalars), else the array."""
    array = np.asarray(array)
    if array.size and np.all(array == array.reshape(-1)[0]):
        return np.asarray(array.reshape(-1)[0])
    return array


def on_axis(values, axis: int, ndim: int) -> np.ndarray:
    """(C,) values shaped to broadcast along ``axis`` of an ndim tensor."""
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return np.asarray(values).reshape(shape)


def zero_if_none(offset):
    """A pending offset of None is 0."""
    return 0 if offset is None else offset


def clip_bounds(clip, dtype):
    """A pending scalar clip within the finite range of a float dtype."""
    info = np.finfo(dtype)
    return max(clip[0], float(info.min)), min(clip[1], float(info.max))


def apply_clip(expr, lo, hi, dtype: str):
    """clip(expr, lo, hi) for scalar bounds; maximum/minimum by constants for per-channel
    ones (relax's clip takes scalars only)."""
    lo, hi = compact(lo), compact(hi)
    if lo.ndim == 0 and hi.ndim == 0:
        return relax.op.clip(expr, lo.item(), hi.item())
    if np.any(lo > -INF):
        expr = relax.op.maximum(expr, make_const(lo, dtype))
    if np.any(hi < INF):
        expr = relax.op.minimum(expr, make_const(hi, dtype))
    return expr


def has_clip(clip) -> bool:
    """Whether a pending clip bounds anything."""
    return bool(np.any(np.asarray(clip[0]) > -INF) or np.any(np.asarray(clip[1]) < INF))


def compose_clip(clip, lo, hi):
    """clip(clip(y, a, b), lo, hi) == clip(y, clip(a, lo, hi), clip(b, lo, hi)); bounds may
    be per-channel arrays (kept scalar when they are all equal)."""
    new_lo = compact(np.minimum(np.maximum(clip[0], lo), hi))
    new_hi = compact(np.minimum(np.maximum(clip[1], lo), hi))
    return tuple(float(b) if b.ndim == 0 else b for b in (new_lo, new_hi))




def vars_in(expr) -> List[relax.Var]:
    """The variables an expression reads (calls, tuples, tuple items)."""
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for a in expr.args for v in vars_in(a)]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in vars_in(f)]
    if isinstance(expr, relax.TupleGetItem):
        return vars_in(expr.tuple_value)
    return []
