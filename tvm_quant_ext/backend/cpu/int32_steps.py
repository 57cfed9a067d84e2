"""Int64 epilogue steps computed in int32 where the value's range proves it exact.

The integer realize widens a layer's value to int64 around every Q31 multiply (the bias add,
the requantize, a residual add's rescales; ``epilogue.py``). On AVX-512 an int64 vector holds
8 lanes where an int32 one holds 16, and the product with a per-channel int64 constant is
``vpmullq`` (three micro-ops on Intel's cores): on a ResNet block's last conv the epilogue took
several times the conv's own time.

This rewrite follows the value's range through the steps, from the layer's output range (its
weights bound it, ``layers.layer_output_range``) or else its dtype's, and computes a step in
int32 where that gives the int64 step's value exactly:

- a Q31 multiply ``(x * M0 + 2^(r-1)) >> r`` (``astype(int64)``, ``multiply``, ``add``,
  ``right_shift``) of an int32 value becomes one int32 step: ``Q31_SPLIT`` where ``x`` is
  narrow enough (a code) for ``M0 = Mh * 2^r + Ml`` to keep ``x * Mh`` and ``x * Ml`` within
  int32 (``fixed_point.multiply_split``), else ``Q31_HIGH`` on the high half of the int32 x
  int32 product (``fixed_point.multiply_high_half``: exact for every int32 ``x``, r >= 33);
- an add, subtract, multiply, min, max, clip or shift by constants runs in int32 when its
  input and its result fit int32; an add, subtract or multiply (also of a ``Side``) whose
  result is cast to 32 bits or fewer before any other op runs in int32 even where it
  overflows, since the low 32 bits of a sum or product depend only on those of its operands;
- a cast to int64 waits until a step needs the 64 bits, and the cast back is dropped; so does
  a cast to a narrower type that the value's range fits (until the chain's last step).

A step it does not know, or one that does not fit, runs as it was, after the deferred cast.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import numpy as np
import tvm

from ...fixed_point import (high_half_operands, multiply_high_half, multiply_split,
                            split_operands)
from .epilogue import (EPILOGUE_OPS, INTEGER_DTYPES, NARROW_DTYPES, RING_OPS, Epilogue, Step,
                       multiplier_operand, register_epilogue, wraps_before_use)
from .int32_runs import CHANNEL_AXIS, INT32_AFFINE, INT32_PAIR_AFFINE, channel_values

Q31_HIGH = "tvm_quant_ext.q31_high"        # not Relax ops: only this rewrite makes these steps
Q31_SPLIT = "tvm_quant_ext.q31_split"
INT32_FENCE = "tvm_quant_ext.int32_fence"
AFFINE_STEPS = (INT32_AFFINE, INT32_PAIR_AFFINE)  # int32_runs' steps: their rules cast to int32

Range = Tuple[object, object]  # (lo, hi): Python integers, or object arrays a channel
INT32_RANGE = (-2**31, 2**31 - 1)


def _opaque(x):
    # TVM's simplifier takes int32 arithmetic as never overflowing and moves a cast to int64
    # into a sum (cast(a - b) -> cast(a) - cast(b)): a wrapped int32 value would be lost, and
    # LLVM, given 33-bit operands, multiplies with vpmullq. ``x & -1`` keeps the int32 value
    # one operand (LLVM drops the and).
    return tvm.tirx.bitwise_and(x, tvm.tirx.const(-1, "int32"))


def _q31_high_numpy(x, operands, step):
    return multiply_high_half(x, *operands)


@register_epilogue(Q31_HIGH, numpy=_q31_high_numpy)
def _q31_high(x, operands, step):
    m0, rounding, k = operands  # int32 (fixed_point.high_half_operands)
    product = _opaque(x.astype("int32")).astype("int64") * m0.astype("int64")
    return ((product >> tvm.tirx.const(32, "int64")).astype("int32") + rounding) >> k


def _q31_split_numpy(x, operands, step):
    return multiply_split(x, *operands)


@register_epilogue(Q31_SPLIT, numpy=_q31_split_numpy)
def _q31_split(x, operands, step):
    high, low, rounding, rshift = operands  # int32 (fixed_point.split_operands)
    # x is read twice: bound once (TE expressions are trees, so it would be computed twice)
    value = tvm.tirx.Var("x", "int32")
    return tvm.tirx.Let(value, x.astype("int32"),
                        value * multiplier_operand(high, step.operands[0])
                        + ((value * multiplier_operand(low, step.operands[1]) + rounding)
                           >> rshift))


@register_epilogue(INT32_FENCE, numpy=lambda x, operands, step: x)
def _fence(x, operands, step):
    return _opaque(x)


def dtype_range(dtype: str) -> Range:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _exact(a) -> np.ndarray:
    return np.asarray(a).astype(object)  # Python integers: no bound of a product overflows


def bounds(a, ndim: int = 4) -> Range:
    """An operand's range, per channel (axis 1 of the layer's ``ndim``-d output) where it is
    one value a channel, else overall."""
    a = np.asarray(a)
    values = channel_values(a, ndim)
    if values is not None:
        return _exact(values), _exact(values)
    return _exact(a.min()), _exact(a.max())


def _fits(r: Optional[Range], within: Range) -> bool:
    return r is not None and bool(np.all(r[0] >= within[0]) and np.all(r[1] <= within[1]))


def _overall(r: Range) -> Tuple[int, int]:
    return int(np.min(r[0])), int(np.max(r[1]))


def _corners(f, r: Range, c: Range) -> Range:
    values = [f(x, y) for x in r for y in c]
    return functools.reduce(np.minimum, values), functools.reduce(np.maximum, values)


# the range of a step's result from its input's and its operand's, per channel (exact
# integers); a shift is monotone in both operands, so its extremes are at the corners too
TRANSFER = {
    "relax.add": lambda r, c: (r[0] + c[0], r[1] + c[1]),
    "relax.subtract": lambda r, c: (r[0] - c[1], r[1] - c[0]),
    "relax.multiply": lambda r, c: _corners(lambda x, y: x * y, r, c),
    "relax.right_shift": lambda r, c: _corners(lambda x, y: x >> y, r, c),
    "relax.maximum": lambda r, c: (np.maximum(r[0], c[0]), np.maximum(r[1], c[1])),
    "relax.minimum": lambda r, c: (np.minimum(r[0], c[0]), np.minimum(r[1], c[1])),
}


def _clip_range(r: Range, lo: int, hi: int) -> Range:
    return np.minimum(np.maximum(r[0], lo), hi), np.maximum(np.minimum(r[1], hi), lo)


def _magnitude(r: Range):
    return np.maximum(np.abs(r[0]), np.abs(r[1]))


def _q31_range(r: Range, m0, rounding, k, ndim: int) -> Range:
    high = (_magnitude(r) * _magnitude(bounds(m0, ndim)) >> 32) + 1
    bound = ((high + bounds(rounding, ndim)[1]) >> bounds(k, ndim)[0]) + 1
    return -bound, bound


def _split_range(r: Tuple[int, int], high, low, rounding, rshift) -> Range:
    ends = [multiply_split(x, high, low, rounding, rshift) for x in r]  # monotone in x
    return _exact(min(e.min() for e in ends)), _exact(max(e.max() for e in ends))


@dataclass
class _Walk:
    """The rewritten steps so far, and what they hold: the value in ``computed`` where the
    original chain holds it in ``logical``, equal to it (or, while ``wrapped``, equal modulo
    2^32), within ``known`` (None: the logical dtype's range), per channel of the layer's
    ``ndim``-d output."""

    logical: str
    computed: str
    known: Optional[Range]
    ndim: int = 4
    steps: List[Step] = field(default_factory=list)
    wrapped: bool = False

    def range(self) -> Range:
        return self.known if self.known is not None else dtype_range(self.logical)

    def narrow(self) -> bool:
        return self.computed in NARROW_DTYPES

    def exact_int32(self) -> bool:
        return self.narrow() and not self.wrapped and _fits(self.range(), INT32_RANGE)

    def to_int32(self):
        if self.computed != "int32":
            self.steps.append(Step("relax.astype", (), "int32"))
            self.computed = "int32"

    def widen(self):
        """The deferred cast: the value in its logical dtype again."""
        if self.computed == self.logical:
            return
        if self.computed == "int32":
            self.steps.append(Step(INT32_FENCE, (), "int32"))
        self.steps.append(Step("relax.astype", (), self.logical))
        self.computed = self.logical

    def emit_int32(self, step: Step, known: Optional[Range], logical: str):
        self.steps.append(step)
        self.computed, self.logical = "int32", logical
        self.wrapped = known is None
        self.known = known

    def as_is(self, step: Step, known: Optional[Range]):
        self.widen()
        self.steps.append(step)
        self.computed = self.logical = step.dtype
        self.known = known if _fits(known, dtype_range(step.dtype)) else None
        self.wrapped = False

    def q31(self, rest: List[Step]) -> int:
        """Steps taken by a Q31 multiply at the start of ``rest`` (0: none there)."""
        start = 1 if rest and rest[0].op == "relax.astype" and rest[0].dtype == "int64" else 0
        group = rest[start:start + 3]
        if [s.op for s in group] != ["relax.multiply", "relax.add", "relax.right_shift"]:
            return 0
        if (start == 0 and self.logical != "int64") or not self.exact_int32():
            return 0
        if any(s.dtype != "int64" or s.side is not None or len(s.operands) != 1 for s in group):
            return 0
        (m0,), (rounding,), (rshift,) = (s.operands for s in group)
        rshift = np.asarray(rshift, np.int64)
        if np.any(rshift < 1) or not np.all(np.asarray(rounding, np.int64)
                                            == np.left_shift(np.int64(1), rshift - 1)):
            return 0
        r = self.range()
        operands = split_operands(m0, rshift, *_overall(r))
        if operands is not None:  # a narrow value (a code): two int32 products, no high half
            self.emit_int32(Step(Q31_SPLIT, operands, "int32"),
                            _split_range(_overall(r), *operands), "int64")
            return start + 3
        operands = high_half_operands(m0, rshift)
        if operands is None:
            return 0
        self.emit_int32(Step(Q31_HIGH, operands, "int32"),
                        _q31_range(r, *operands, self.ndim), "int64")
        return start + 3

    def step(self, rest: List[Step]) -> int:
        s = rest[0]
        if s.op == "relax.astype":
            self.cast(s)
        elif s.op in AFFINE_STEPS and self.narrow():
            # its rule casts to int32 itself: the same number, or (wrapped) the same low bits
            lo, hi = s.attrs
            if s.dtype == "int64":
                self.emit_int32(replace(s, dtype="int32"), (lo, hi), "int64")
            else:
                self.steps.append(s)
                self.computed = self.logical = s.dtype
                self.known, self.wrapped = (lo, hi), False
        elif s.side is not None and s.op != INT32_PAIR_AFFINE:
            self.side_step(s, rest)
        elif s.op in TRANSFER or s.op == "relax.clip":
            self.constant_step(s, rest)
        else:
            self.as_is(s, s.attrs if s.op in AFFINE_STEPS else None)
        return 1

    def cast(self, s: Step):
        if not self.narrow():
            self.as_is(s, self.known)
        elif s.dtype == "int64":
            self.logical = "int64"  # deferred: the same number in int32
        elif s.dtype in NARROW_DTYPES:
            same = not self.wrapped and _fits(self.known, dtype_range(s.dtype))
            if s.dtype == self.computed == "int32":
                if self.wrapped:  # the int32 sum wraps from here on: keep it one value
                    self.steps.append(Step(INT32_FENCE, (), "int32"))
            elif same and self.computed == "int32":
                pass  # the same number (a clipped code): no narrowing and widening again
            else:  # the low bits of the computed value are the logical value's
                self.steps.append(s)
                self.computed = s.dtype
            self.logical = s.dtype
            self.known = self.known if _fits(self.known, dtype_range(s.dtype)) else None
            self.wrapped = False
        else:
            self.as_is(s, self.known)

    def constant_step(self, s: Step, rest: List[Step]):
        operands = [np.asarray(a) for a in s.operands]
        r = self.range()
        if s.op == "relax.clip":
            new = _clip_range(r, *s.attrs)
        else:
            new = TRANSFER[s.op](r, bounds(operands[0], self.ndim))
        if not _fits(new, dtype_range(s.dtype)):
            new = None  # the step itself wraps
        if s.dtype == "int64" and self.narrow():
            exact = (self.exact_int32() and _fits(new, INT32_RANGE)
                     and all(_fits(bounds(a, self.ndim), INT32_RANGE) for a in operands))
            if s.op == "relax.right_shift":
                exact = exact and _fits(bounds(operands[0], self.ndim), (0, 31))
            if exact or (s.op in RING_OPS and wraps_before_use(rest)):
                self.to_int32()
                attrs = s.attrs
                if s.op == "relax.clip":
                    attrs = tuple(int(np.clip(v, *INT32_RANGE)) for v in s.attrs)
                ops = tuple(a.astype(np.int32) for a in operands)  # wrapping: the low 32 bits
                self.emit_int32(Step(s.op, ops, "int32", attrs), new if exact else None, "int64")
                return
        self.as_is(s, new)

    def side_step(self, s: Step, rest: List[Step]):
        side = s.side
        inner = walk_steps(side.chain.steps, side.dtype, ndim=self.ndim)
        new = TRANSFER[s.op](self.range(), inner.range()) if s.op in TRANSFER else None
        if new is not None and not _fits(new, dtype_range(s.dtype)):
            new = None
        if s.dtype == "int64" and s.op in RING_OPS and self.narrow() and inner.narrow():
            exact = self.exact_int32() and inner.exact_int32() and _fits(new, INT32_RANGE)
            if exact or wraps_before_use(rest):
                self.to_int32()
                inner.to_int32()
                step = replace(s, dtype="int32", side=replace(side, chain=Epilogue(inner.steps)))
                self.emit_int32(step, new if exact else None, "int64")
                return
        inner.widen()
        self.as_is(replace(s, side=replace(side, chain=Epilogue(inner.steps))), new)


_MONOTONE = ("relax.astype", "relax.add", "relax.right_shift", "relax.multiply")


def clamp_constant_channels(steps: List[Step], in_range: Range) -> List[Step]:
    """``steps`` with the bias of each channel whose output is one constant moved so that its
    sum with the layer's value fits int32, where that leaves every output unchanged.

    A channel whose weights are all but zero can carry a bias near -2^31 (a BatchNorm that
    folded to a tiny scale), so the bias add leaves int32 and holds the whole layer in int64.
    When the steps from the add to the first clip are monotone (adds, right shifts, multiplies
    by constants >= 0) and both ends of the channel's range give the same clipped output, with
    the bias as it is and moved, every value between them does too, both ways."""
    if len(steps) < 2 or steps[0].op != "relax.astype" or steps[1].op != "relax.add" \
            or steps[1].side is not None or steps[1].operands[0].ndim < 2:
        return steps
    end = next((k for k, s in enumerate(steps) if s.op == "relax.clip"), None)
    run = steps[:end + 1] if end is not None else []
    if not run or any(s.side is not None or (s.op not in _MONOTONE and s is not run[-1])
                      or (s.op == "relax.multiply" and np.any(s.operands[0] < 0)) for s in run):
        return steps
    bias = steps[1].operands[0]
    channels = bias.reshape(-1)
    lo, hi = (np.broadcast_to(np.asarray(v, np.int64), channels.shape) for v in in_range)
    if bias.shape[CHANNEL_AXIS] != bias.size:
        return steps
    moved = np.clip(channels, INT32_RANGE[0] - lo, INT32_RANGE[1] - hi)
    change = moved != channels
    if not change.any():
        return steps

    def ends(b):  # the run on each channel's two ends, bias b
        x = np.stack([lo, hi]).astype(np.int64)
        x = x + b
        for s in run[2:]:
            ops = [np.asarray(a).reshape(-1) if np.asarray(a).size > 1 else np.asarray(a)
                   for a in s.operands]
            x = np.asarray(EPILOGUE_OPS[s.op].numpy(x, ops, s)).astype(s.dtype)
        return x
    before, after = ends(channels), ends(moved)
    constant = (before[0] == before[1]) & (after[0] == after[1]) & (before[0] == after[0])
    if not np.all(constant[change]):
        return steps
    new_bias = np.where(change, moved, channels).reshape(bias.shape).astype(bias.dtype)
    return [steps[0], replace(steps[1], operands=(new_bias,))] + steps[2:]


def walk_steps(steps: List[Step], in_dtype: str, in_range: Optional[Range] = None,
               ndim: int = 4) -> _Walk:
    """The rewrite of ``steps`` on a value of ``in_dtype`` within ``in_range`` (per channel:
    arrays of one entry a channel, or overall), its last cast still deferred."""
    if in_range is not None:
        in_range = (_exact(in_range[0]), _exact(in_range[1]))
    known = in_range if _fits(in_range, dtype_range(in_dtype)) else None
    walk = _Walk(in_dtype, in_dtype, known, ndim=ndim)
    k = 0
    while k < len(steps):
        k += walk.q31(steps[k:]) or walk.step(steps[k:])
    return walk


def narrow_steps(epilogue: Epilogue, in_dtype: str, in_range: Optional[Range] = None,
                 ndim: int = 4) -> Epilogue:
    """``epilogue`` with its int64 steps in int32 where that is exact (see the module's
    docstring), on an ``ndim``-d layer output of ``in_dtype`` within ``in_range`` (None: the
    dtype's; else per channel, ``layers.layer_output_range``)."""
    if in_dtype not in INTEGER_DTYPES:
        return epilogue
    steps = epilogue.steps
    if in_range is not None:
        steps = clamp_constant_channels(steps, in_range)
    walk = walk_steps(steps, in_dtype, in_range, ndim)
    walk.widen()
    # an empty chain is no epilogue to a kernel (its output would change): keep the casts
    return Epilogue(walk.steps) if walk.steps else epilogue
