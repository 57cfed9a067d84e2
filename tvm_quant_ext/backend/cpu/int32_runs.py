"""Runs of epilogue steps on a code, collapsed to one int32 step, checked on every code.

In a ResNet v2 block's last conv the epilogue requantizes the residual sum to an int8 code,
then applies the next block's BatchNorm to that code: ``code * w + b`` in int32, widened to
int64 for a Q31 requantize, clipped by the ReLU to the next code. Once the value is a code it
takes at most a few hundred values per channel, and on them such a run is a clipped affine
function: ``fixed_point.fit_int32_affine`` finds ``clip((x * a + b) >> s, lo, hi)`` in int32
arithmetic where one exists, and it is checked against the run itself (each step's numpy rule,
``epilogue.EPILOGUE_OPS``) on every value the code can take. The kernel then does three int32
ops on 16 lanes where it did nine on 8-lane int64 vectors and three per-channel int64 constants
(the stage-1 block ends of ResNet-50 v2: 0.33 -> 0.26 ms a call), and its output is unchanged
for every input.

A run starts where the value's range is known and small (after a ``clip``, a cast to a type
of at most 16 bits, or at a max pool's codes) and ends at a later ``clip`` (with the casts
after it that keep its range), its steps reading scalars or per-channel constants only; a run
that does not fit is left as it was.

A residual add is such a run on two codes: the layer's code and the shortcut's (a side of at
most 16 bits), each rescaled to the sum's scale by a Q31 multiply, the sum requantized to a
code, all with scalar constants. ``fixed_point.fit_int32_pair_affine`` finds ``clip((x * a + y
* c + b) >> s, lo, hi)`` for it, checked on every pair (65,536 for two int8 codes): on a
ResNet-50 v2 block end that is two int32 multiplies where the run took a split Q31 multiply,
a shift of the side and a Q31 multiply on the high half of a product (18 micro-ops a vector of
16 -> 11; the 56x56 block end, with ``epilogue.multiplier_operand``'s 16-bit multiply of the
BatchNorm after it, 0.46 -> 0.36 ms on one thread).
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tvm
from tvm import te

from ...fixed_point import Int32Affine, fit_int32_affine, fit_int32_pair_affine
from .epilogue import EPILOGUE_OPS, Epilogue, Step, multiplier_operand, register_epilogue

INT32_AFFINE = "tvm_quant_ext.int32_affine"  # not Relax ops: only this rewrite makes the steps
INT32_PAIR_AFFINE = "tvm_quant_ext.int32_pair_affine"
MAX_CODES = 1 << 16   # runs on wider ranges are left alone (the check enumerates the range)
MAX_PAIRS = 1 << 17   # and runs on two codes with more pairs than this
CHANNEL_AXIS = 1      # NCHW conv and (N, C) dense outputs alike


def _affine_numpy(x, operands, step):
    a, b, s = operands
    lo, hi = step.attrs
    return np.clip((x.astype(np.int64) * a + b) >> s, lo, hi)


@register_epilogue(INT32_AFFINE, numpy=_affine_numpy)
def _affine(x, operands, step):
    a, b, s = operands  # int32: the fit keeps x * a + b within int32 for every code
    lo, hi = step.attrs
    value = (x.astype("int32") * multiplier_operand(a, step.operands[0]) + b) >> s
    return te.max(te.min(value, tvm.tirx.const(hi, "int32")),
                  tvm.tirx.const(lo, "int32")).astype(step.dtype)


def _pair_numpy(x, operands, step):
    y, a, c, b, s = operands  # y: the side's code
    lo, hi = step.attrs
    return np.clip((x.astype(np.int64) * a + y.astype(np.int64) * c + b) >> s, lo, hi)


@register_epilogue(INT32_PAIR_AFFINE, numpy=_pair_numpy)
def _pair_affine(x, operands, step):
    y, a, c, b, s = operands  # int32: the fit keeps every partial sum within int32
    lo, hi = step.attrs
    value = (x.astype("int32") * a + y.astype("int32") * c + b) >> s
    return te.max(te.min(value, tvm.tirx.const(hi, "int32")),
                  tvm.tirx.const(lo, "int32")).astype(step.dtype)


# the run without its rounding and clipping, in float64: its slope per channel, where the
# int32 multiplier is searched for (ops not listed, the clips and casts, pass the value on)
_LINEAR = {
    "relax.add": lambda x, a: x + a,
    "relax.subtract": lambda x, a: x - a,
    "relax.multiply": lambda x, a: x * a,
    "relax.right_shift": lambda x, a: x / np.exp2(a),
}


def _dtype_range(dtype: str) -> Optional[Tuple[int, int]]:
    if not np.issubdtype(np.dtype(dtype), np.integer):
        return None
    info = np.iinfo(dtype)
    return (int(info.min), int(info.max)) if info.bits <= 16 else None


def range_after(step: Step, before: Optional[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    """The value's (lo, hi) after ``step`` when it is known from a clip or a narrow cast."""
    if step.op == "relax.clip":
        lo, hi = step.attrs
        return (max(lo, before[0]), min(hi, before[1])) if before else (lo, hi)
    if step.op == "relax.astype":
        info = np.iinfo(step.dtype)
        if before and info.min <= before[0] and before[1] <= info.max:
            return before
        return _dtype_range(step.dtype)
    return None


def channel_values(operand: np.ndarray, ndim: int) -> Optional[np.ndarray]:
    """``operand`` as one value a channel (flattened: one entry, or one a channel), or None when
    it varies along another axis of the layer's ``ndim``-d output."""
    shape = (1,) * (ndim - operand.ndim) + operand.shape
    if operand.ndim > ndim or any(d != 1 for k, d in enumerate(shape) if k != CHANNEL_AXIS):
        return None
    return operand.reshape(-1)


def _per_channel(operand: np.ndarray, ndim: int, channels: int) -> Optional[np.ndarray]:
    values = channel_values(operand, ndim)
    return values if values is not None and values.size in (1, channels) else None


def _operands(run: Sequence[Step], ndim: int, channels: int):
    out = []
    for step in run:
        values = [_per_channel(a, ndim, channels) for a in step.operands]
        if step.side is not None or any(v is None for v in values):
            return None
        out.append(values)
    return out


def _shifts_past_width(step: Step, values) -> bool:
    """Whether ``step`` shifts by less than 0 or by its type's width or more: the kernel's
    result would be undefined."""
    bits = np.iinfo(step.dtype).bits
    return step.op == "relax.right_shift" and any(np.any((v < 0) | (v >= bits)) for v in values)


def _evaluate(run, operands, xs, dtype, channels) -> Optional[np.ndarray]:
    value = np.broadcast_to(xs.astype(dtype)[:, None], (xs.size, channels))
    for step, values in zip(run, operands):
        if _shifts_past_width(step, values):
            return None
        ops = [v.astype(step.dtype)[None, :] for v in values]
        value = np.asarray(EPILOGUE_OPS[step.op].numpy(value, ops, step)).astype(step.dtype)
    return value.astype(np.int64)


def _slope(run, operands, channels) -> np.ndarray:
    ends = []
    for x in (0.0, 1.0):
        value = np.full(channels, x)
        for step, values in zip(run, operands):
            rule = _LINEAR.get(step.op)
            if rule is not None:
                value = rule(value, values[0].astype(np.float64))
        ends.append(value)
    return ends[1] - ends[0]


def _fit(run, operands, before, in_dtype, channels) -> Optional[Int32Affine]:
    lo, hi = next(s for s in reversed(run) if s.op == "relax.clip").attrs
    xs = np.arange(before[0], before[1] + 1, dtype=np.int64)
    target = _evaluate(run, operands, xs, in_dtype, channels)
    if target is None:
        return None
    return fit_int32_affine(xs, target, lo, hi, _slope(run, operands, channels))


def _affine_step(fit: Int32Affine, dtype: str, ndim: int, known: Tuple[int, int]) -> Step:
    def shaped(v):
        v = np.asarray(v, np.int32).reshape(-1)
        return v.reshape((1, v.size) + (1,) * (ndim - 2)) if v.size > 1 else v
    return Step(INT32_AFFINE, (shaped(fit.a), shaped(fit.b), shaped(fit.s)), dtype,
                (fit.lo, fit.hi), domain=((int(known[0]), int(known[1])),))


def _end_after_clip(steps: List[Step], k: int) -> int:
    """The index after the clip at ``k`` and the casts after it that keep its range."""
    end, span = k + 1, range_after(steps[k], None)
    while end < len(steps) and steps[end].op == "relax.astype" and \
            range_after(steps[end], span) == span:
        end += 1
    return end


def _run_ends(steps: List[Step], start: int) -> List[int]:
    """Where a run from ``start`` may end (after the index), longest first: after each clip
    reached with no side step, together with the casts after it that keep its range."""
    ends = []
    for k in range(start, len(steps)):
        if steps[k].side is not None:
            break
        if steps[k].op == "relax.clip":
            ends.append(_end_after_clip(steps, k))
    return ends[::-1]


def _collapse_at(steps, start, known, dtype, ndim, channels):
    """(the int32 step, the index after the run) for the longest run from ``start`` that has
    an int32 form, or None."""
    for end in _run_ends(steps, start):
        run = steps[start:end]
        if not any(s.op in ("relax.multiply", "relax.right_shift") for s in run):
            continue  # nothing to gain
        operands = _operands(run, ndim, channels)
        fit = _fit(run, operands, known, dtype, channels) if operands is not None else None
        if fit is not None:
            return _affine_step(fit, run[-1].dtype, ndim, known), end
    return None


def _pair_run(steps: List[Step], start: int) -> Optional[int]:
    """The index after a run on two codes from ``start``: scalar constant steps, one add or
    subtract of a side (a code through scalar constant steps), up to the first clip after it
    and the casts after that keep its range; or None."""
    side = None
    for k in range(start, len(steps)):
        step = steps[k]
        if any(a.size != 1 for a in step.operands):
            return None
        if step.side is not None:
            chain = step.side.chain.steps
            if side is not None or step.op not in ("relax.add", "relax.subtract") or \
                    _dtype_range(step.side.dtype) is None or \
                    any(t.side is not None or any(a.size != 1 for a in t.operands)
                        for t in chain):
                return None
            side = step.side
        elif step.op == "relax.clip":
            return _end_after_clip(steps, k) if side is not None else None
    return None


def _through(steps, value, side_value=None):
    """``value`` through ``steps`` by their numpy rules (scalar operands; a side step takes
    ``side_value`` through its chain), or None where a shift passes its type's width."""
    for step in steps:
        operands = [np.asarray(a).reshape(()).astype(step.dtype) for a in step.operands]
        if _shifts_past_width(step, operands):
            return None
        if step.side is not None:
            side = _through(step.side.chain.steps, side_value)
            if side is None:
                return None
            operands = [side] + operands
        value = np.asarray(EPILOGUE_OPS[step.op].numpy(value, operands, step)).astype(step.dtype)
    return value


def _pair_slopes(run) -> Tuple[float, float]:
    def linear(steps, x, y):
        for step in steps:
            if step.side is not None:
                x = _LINEAR[step.op](x, linear(step.side.chain.steps, y, 0.0))
            elif step.op in _LINEAR:
                x = _LINEAR[step.op](x, float(np.asarray(step.operands[0]).reshape(())))
        return x
    origin = linear(run, 0.0, 0.0)
    return linear(run, 1.0, 0.0) - origin, linear(run, 0.0, 1.0) - origin


def _collapse_pair_at(steps, start, known, dtype):
    """(the int32 step on the value and the side's code, the index after the run) for a run
    on two codes from ``start`` that has that form, or None."""
    end = _pair_run(steps, start)
    if end is None:
        return None
    run = steps[start:end]
    side = next(s.side for s in run if s.side is not None)
    side_lo, side_hi = _dtype_range(side.dtype)
    xs = np.arange(known[0], known[1] + 1, dtype=np.int64)
    ys = np.arange(side_lo, side_hi + 1, dtype=np.int64)
    if xs.size * ys.size > MAX_PAIRS:
        return None
    target = _through(run, xs.astype(dtype)[:, None], ys.astype(side.dtype)[None, :])
    if target is None:
        return None
    lo, hi = next(s for s in reversed(run) if s.op == "relax.clip").attrs
    fit = fit_int32_pair_affine(xs, ys, target.astype(np.int64), lo, hi, *_pair_slopes(run))
    if fit is None:
        return None
    operands = tuple(np.asarray(v, np.int32) for v in (fit.a, fit.c, fit.b, fit.s))
    return Step(INT32_PAIR_AFFINE, operands, run[-1].dtype, (fit.lo, fit.hi),
                side=replace(side, chain=Epilogue([])),
                domain=((int(known[0]), int(known[1])), (side_lo, side_hi))), end


def collapse_int32_runs(epilogue: Epilogue, layer_shape: Sequence[int],
                        in_dtype: str = "int32") -> Epilogue:
    """``epilogue`` with each run of steps on a code that has an int32 form replaced by it.
    ``in_dtype``: the layer's output type, where the first step starts (a pool's codes are a
    known range already)."""
    steps = epilogue.steps
    ndim, channels = len(layer_shape), int(layer_shape[CHANNEL_AXIS])
    out: List[Step] = []
    known, dtype, i = _dtype_range(in_dtype), in_dtype, 0
    while i < len(steps):
        found = None
        if known is not None and known[1] - known[0] < MAX_CODES:
            found = _collapse_at(steps, i, known, dtype, ndim, channels) or \
                _collapse_pair_at(steps, i, known, dtype)
        if found is not None:
            step, i = found
            known = step.attrs
        else:
            step = steps[i]
            known = range_after(step, known)
            i += 1
        out.append(step)
        dtype = step.dtype
    return replace(epilogue, steps=out) if len(out) != len(steps) else epilogue
