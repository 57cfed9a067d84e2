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
tensors, clip bounds, nothing) and how to apply it to a TE value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tvm
from tvm import relax, te

from ...graph import const_value, is_const, op_name, registrar

INTEGER_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "int64")


@dataclass
class Step:
    """One elementwise op of the chain: ``op`` applied to (running value, *operands)."""

    op: str
    operands: Tuple[np.ndarray, ...]  # constant operands (numpy, the op's dtype)
    dtype: str                        # result dtype
    attrs: Tuple = ()                 # clip bounds


# read(call) -> (operands, attrs), or None when the call's operands are not ones a kernel can
# hold (a non-constant tensor); apply(value, operands, step) -> value, with operands already
# TE expressions indexed at the element (scalars or placeholders read at the broadcast index)
@dataclass(frozen=True)
class EpilogueOp:
    apply: Callable[[object, List[object], Step], object]
    read: Callable[[relax.Call], Optional[Tuple[Tuple[np.ndarray, ...], Tuple]]]


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


def register_epilogue(op: str, read=_constant_operands):
    """``@register_epilogue(op)`` files ``apply`` for ``op``; ``read`` gets its operands."""

    def wrap(apply):
        _register(op)(EpilogueOp(apply, read))
        return apply

    return wrap


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
    return x >> operands[0]  # arithmetic for signed types, as topi.right_shift


@register_epilogue("relax.maximum")
def _maximum(x, operands, step):
    return te.max(x, operands[0])


@register_epilogue("relax.minimum")
def _minimum(x, operands, step):
    return te.min(x, operands[0])


@register_epilogue("relax.clip", read=_clip_bounds)
def _clip(x, operands, step):
    lo, hi = step.attrs  # topi.clip: max(min(x, hi), lo) in the value's dtype
    return te.max(te.min(x, tvm.tirx.const(hi, step.dtype)), tvm.tirx.const(lo, step.dtype))


@register_epilogue("relax.astype", read=_no_operands)
def _astype(x, operands, step):
    return x.astype(step.dtype)


@dataclass
class Epilogue:
    """The chain after the layer, applied per output element inside the kernel."""

    steps: List[Step] = field(default_factory=list)

    @property
    def dtype(self) -> Optional[str]:
        return self.steps[-1].dtype if self.steps else None

    def tensor_operands(self) -> List[np.ndarray]:
        """Operands that are not scalars: they become kernel arguments, in this order."""
        return [a for s in self.steps for a in s.operands if a.size > 1]

    def apply(self, value, index: Sequence, placeholders: Sequence[te.Tensor]):
        """``value`` (the accumulator at output ``index``) through every step."""
        tensors = iter(placeholders)
        for step in self.steps:
            operands = []
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
