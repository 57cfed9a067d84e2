"""The integer epilogue of a fused layer: the elementwise chain after a conv/dense, per element.

The integer realize emits each layer as a chain of Relax bindings::

    acc = conv2d(codes, w, out_dtype="int32")           # or matmul
    acc = add(astype(acc, "int64"), bias)               # the bias, int32 or int64
    y   = astype(clip(right_shift(add(multiply(astype(acc, "int64"), M0), 2^(r-1)), r)
                      [+ zero_point], lo, hi), "int8")  # requantize (fixed_point.py)

An ``Epilogue`` is that chain read back as ``Step`` s: the same ops, in the same dtypes and
the same order, applied to each accumulator element inside the layer's kernel. Because it is
the graph's own arithmetic (no re-derived formula), a fused kernel is bit-identical to the
unfused graph by construction.

One entry per op in ``EPILOGUE_OPS``: how to read its operands from the call (constant
tensors, clip bounds, nothing), how to apply it to a TE value and to numpy arrays (what
``int32_runs.py`` checks a rewritten run of steps against).

A step may also combine the running value with a second tensor of the layer's shape (a
``Side``): a residual add's other branch, read at the same output element and taken through its
own chain of constant steps (the realize's rescale of the shortcut). The kernel then takes that
tensor as one more argument, in NCHW or, when its writer hands it over blocked, in the blocked
layout of ``packed.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tvm
from tvm import relax, te

from ...graph import const_value, is_const, op_name, registrar
from . import packed

INTEGER_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "int64")


@dataclass(frozen=True)
class Side:
    """A second tensor a step combines with: ``source`` (a graph variable of the layer's shape,
    ``dtype``) read at the output element, then ``chain``'s steps (constant operands only).
    ``blocked``: None when the kernel reads it in NCHW, else the border (top, left, bottom,
    right) of the blocked tensor its writer hands over."""

    source: object  # relax.Var
    dtype: str
    chain: "Epilogue"
    blocked: Optional[Tuple[int, int, int, int]] = None


@dataclass
class Step:
    """One elementwise op of the chain: ``op`` applied to (running value, *operands), or, with
    ``side``, to (running value, the side's value)."""

    op: str
    operands: Tuple[np.ndarray, ...]  # constant operands (numpy, the op's dtype)
    dtype: str                        # result dtype
    attrs: Tuple = ()                 # clip bounds
    side: Optional[Side] = None
    # the (lo, hi) of each code an int32 form of a run was checked on (int32_runs.py): the
    # value's, then the side's
    domain: Tuple = ()


# read(call) -> (operands, attrs), or None when the call's operands are not ones a kernel can
# hold (a non-constant tensor); apply(value, operands, step) -> value, with operands already
# TE expressions indexed at the element (scalars or placeholders read at the broadcast index);
# numpy(value, operands, step): the same on numpy arrays, in the step's dtype
@dataclass(frozen=True)
class EpilogueOp:
    apply: Callable[[object, List[object], Step], object]
    read: Callable[[relax.Call], Optional[Tuple[Tuple[np.ndarray, ...], Tuple]]]
    numpy: Callable[[np.ndarray, List[np.ndarray], Step], np.ndarray]


EPILOGUE_OPS: Dict[str, EpilogueOp] = {}
_register = registrar(EPILOGUE_OPS, what="epilogue op")


def _constant_operands(call):
    operands = call.args[1:]
    if not all(is_const(a) for a in operands):
        return None
    return tuple(const_value(a) for a in operands), ()


def _clip_bounds(call):
    return (), (int(call.args[1].value), int(call.args[2].value))


def _no_operands(call):
    return (), ()


def register_epilogue(op: str, read=_constant_operands, numpy=None):
    """``@register_epilogue(op)`` files ``apply`` for ``op``; ``read`` gets its operands;
    ``numpy`` applies it to numpy arrays (default: ``apply`` itself, for rules that are plain
    Python arithmetic and so mean the same on both)."""

    def wrap(apply):
        _register(op)(EpilogueOp(apply, read, numpy or apply))
        return apply

    return wrap


INT16_MAX = 2**15 - 1


def multiplier_operand(expr, values: np.ndarray):
    """``expr``, a constant multiplier read per channel, as LLVM's ``vpmaddwd`` wants it when
    every value is in [0, 2^15): masked to its low 15 bits (which leaves the values as they
    are). A loaded int32 has no known range, so LLVM multiplies by it with ``vpmulld`` (two
    micro-ops on 16 lanes); with 17 known-zero high bits, and a code of at most 16 significant
    bits on the other side, it takes ``vpmaddwd``, or ``vpdpwssd`` with the add that follows."""
    values = np.asarray(values)
    if isinstance(expr, tvm.tirx.IntImm) or values.dtype != np.int32 or not values.size:
        return expr  # a constant's range LLVM knows
    if values.min() >= 0 and values.max() <= INT16_MAX:
        return tvm.tirx.bitwise_and(expr, tvm.tirx.const(INT16_MAX, "int32"))
    return expr


@register_epilogue("relax.add")
def _add(x, operands, step):
    return x + operands[0]


@register_epilogue("relax.subtract")
def _subtract(x, operands, step):
    return x - operands[0]


@register_epilogue("relax.multiply")
def _multiply(x, operands, step):
    return x * operands[0]


@register_epilogue("relax.right_shift")
def _right_shift(x, operands, step):
    return x >> operands[0]  # arithmetic for signed types, as topi.right_shift (and numpy)


@register_epilogue("relax.maximum", numpy=lambda x, operands, step: np.maximum(x, operands[0]))
def _maximum(x, operands, step):
    return te.max(x, operands[0])


@register_epilogue("relax.minimum", numpy=lambda x, operands, step: np.minimum(x, operands[0]))
def _minimum(x, operands, step):
    return te.min(x, operands[0])


def _clip_numpy(x, operands, step):
    lo, hi = step.attrs
    return np.maximum(np.minimum(x, hi), lo)


@register_epilogue("relax.clip", read=_clip_bounds, numpy=_clip_numpy)
def _clip(x, operands, step):
    lo, hi = step.attrs  # topi.clip: max(min(x, hi), lo) in the value's dtype
    return te.max(te.min(x, tvm.tirx.const(hi, step.dtype)), tvm.tirx.const(lo, step.dtype))


@register_epilogue("relax.astype", read=_no_operands)
def _astype(x, operands, step):
    return x.astype(step.dtype)  # integer to integer: wraps, in TIR and numpy alike


@dataclass
class Epilogue:
    """The chain after the layer, applied per output element inside the kernel."""

    steps: List[Step] = field(default_factory=list)

    @property
    def dtype(self) -> Optional[str]:
        return self.steps[-1].dtype if self.steps else None

    def tensor_operands(self) -> List[np.ndarray]:
        """Operands that are not scalars: they become kernel arguments, in this order (a side
        chain's where its step is)."""
        out = []
        for s in self.steps:
            if s.side is not None:
                out += s.side.chain.tensor_operands()
            out += [a for a in s.operands if a.size > 1]
        return out

    def sides(self) -> List[Side]:
        """The second tensors the steps read: kernel arguments after the tensor operands."""
        return [s.side for s in self.steps if s.side is not None]

    def placeholders(self) -> Tuple[List[te.Tensor], List[te.Tensor]]:
        """A kernel's arguments for this chain: (tensor operands, side tensors), as
        ``apply`` reads them."""
        extra = [te.placeholder(a.shape, str(a.dtype), f"epilogue{i}")
                 for i, a in enumerate(self.tensor_operands())]
        sides = []
        for k, side in enumerate(self.sides()):
            shape = [int(d) for d in side.source.ty.shape]
            if side.blocked is not None:
                sides.append(te.placeholder(packed.packed_shape(shape, side.blocked),
                                            packed.stored_dtype(side.dtype), f"side{k}"))
            else:
                sides.append(te.placeholder(shape, side.dtype, f"side{k}"))
        return extra, sides

    def with_blocked_sides(self, borders) -> "Epilogue":
        """This chain with each side's source read blocked (``borders[source]``: its border)
        where ``borders`` has it."""
        steps = []
        for s in self.steps:
            if s.side is not None and s.side.source in borders:
                s = replace(s, side=replace(s.side, blocked=borders[s.side.source]))
            steps.append(s)
        return Epilogue(steps)

    def apply(self, value, index: Sequence, placeholders: Sequence[te.Tensor],
              sides: Sequence[te.Tensor] = ()):
        """``value`` (the accumulator at output ``index``) through every step; ``placeholders``
        and ``sides`` as ``placeholders()`` makes them."""
        return self._apply(value, index, iter(placeholders), iter(sides))

    def _apply(self, value, index, tensors, side_tensors):
        for step in self.steps:
            operands = []
            if step.side is not None:
                side = step.side
                source = next(side_tensors)
                if side.blocked is None:
                    read = source[tuple(index)]
                else:
                    read = packed.read_code(source, index, side.dtype, side.blocked)
                operands.append(side.chain._apply(read, index, tensors, iter(())))
            for a in step.operands:
                if a.size == 1:
                    operands.append(tvm.tirx.const(a.reshape(-1)[0].item(), str(a.dtype)))
                else:
                    t = next(tensors)
                    # numpy broadcasting: right-aligned, size-1 dims read index 0
                    tail = index[len(index) - a.ndim:]
                    operands.append(t[tuple(0 if d == 1 else i for d, i in zip(a.shape, tail))])
            value = EPILOGUE_OPS[step.op].apply(value, operands, step)
        return value


def fold_into_first_add(epilogue: Epilogue, values: np.ndarray,
                        ndim: int) -> Optional[Epilogue]:
    """``epilogue`` with ``values`` (int32, one a channel of an ``ndim``-d output, channels on
    axis 1) added to its first step's constant, where that step is an int32 add of a constant
    (the layer's bias), else None. A kernel then adds one constant where it added two: the
    shift correction of its +128-shifted codes (``packed.shift_correction``) rides on the bias.
    Exact: int32 adds wrap, so their order does not change the low 32 bits."""
    first = epilogue.steps[0] if epilogue.steps else None
    if first is None or first.op != "relax.add" or first.side is not None or \
            first.dtype != "int32" or first.operands[0].dtype != np.int32:
        return None
    constant = first.operands[0]
    aligned = (1,) * (ndim - constant.ndim) + constant.shape
    if constant.ndim > ndim or any(d != 1 for k, d in enumerate(aligned) if k != 1) or \
            aligned[1] not in (1, values.size):
        return None
    total = constant.reshape(-1).astype(np.int64) + values.astype(np.int64)
    folded = ((total + 2**31) % 2**32 - 2**31).astype(np.int32)
    folded = folded.reshape((1, values.size) + (1,) * (ndim - 2))
    return replace(epilogue, steps=[replace(first, operands=(folded,))] + epilogue.steps[1:])


# steps that commute with reducing modulo 2^32: a wider integer through them, then cast to 32
# bits or fewer, gives what its low 32 bits alone would
RING_OPS = ("relax.add", "relax.subtract", "relax.multiply")
NARROW_DTYPES = ("int8", "uint8", "int16", "uint16", "int32")


def wraps_before_use(steps: List[Step]) -> bool:
    """Whether ``steps`` only add, subtract and multiply until a cast to 32 bits or fewer."""
    for step in steps:
        if step.op == "relax.astype" and step.dtype in NARROW_DTYPES:
            return True
        if step.op not in RING_OPS:
            return False
    return False


def step_of(call: relax.Call, layer_shape) -> Optional[Step]:
    """The call as an epilogue step on its first argument, or None when it is not one."""
    name = op_name(call)
    entry = EPILOGUE_OPS.get(name)
    if entry is None:
        return None
    dtype = str(call.ty.dtype)
    if dtype not in INTEGER_DTYPES or tuple(int(d) for d in call.ty.shape) != tuple(layer_shape):
        return None  # float math (dequantize) stays outside; so does a broadcast to a new shape
    read = entry.read(call)
    if read is None:
        return None
    operands, attrs = read
    if any(v.ndim > len(layer_shape) for v in operands):
        return None
    return Step(name, operands, dtype, attrs)
