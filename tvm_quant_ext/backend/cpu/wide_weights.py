"""A layer with 16-bit weight codes as two int8 layers, so both run on the int8 kernels.

``precision_budget`` may raise a layer's weights to int16 codes (passes/precision.py). TVM's
generic conv of uint8/int8 data with int16 weights into an int64 accumulator is one to two
orders of magnitude slower than the VNNI kernel. But a conv is linear in its weight: with
``W = 256 * hi + lo``, ``hi = floor((W + 128) / 256)`` and ``lo`` in [-128, 127],

    conv(x, W) = 256 * conv(x, hi) + conv(x, lo)

exactly, and both convs are int8 x int8 -> int32 layers that ``layers.LAYER_KERNELS`` takes. The
two accumulators are combined in int64 unless int32 provably holds ``256 * conv(x, hi)``
(a bound from the data type and the codes), so the sum is the same integer the int16 layer
computes: bit-identical (tests). ``hi`` fits int8 when every code is within
[-32768, 32639]; the raised weights' 15-bit codes (within +-16383) always are.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tvm
from tvm import relax

from ...graph import const_value, is_const, op_name

SPLIT_BASE = 256
_SPLIT_OPS = ("relax.nn.conv2d", "relax.matmul")
_DATA_MAX = {"uint8": 255, "int8": 128}  # largest |code| of the data


def split_codes(weight: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(hi, lo) int8 arrays with weight == 256 * hi + lo, or None when hi does not fit int8."""
    weight = weight.astype(np.int64)
    hi = np.floor_divide(weight + SPLIT_BASE // 2, SPLIT_BASE)
    lo = weight - SPLIT_BASE * hi
    if hi.size and (hi.min() < -128 or hi.max() > 127):
        return None
    return hi.astype(np.int8), lo.astype(np.int8)


def _wide_weight_layer(call) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    if op_name(call) not in _SPLIT_OPS or len(call.args) < 2 or not is_const(call.args[1]):
        return None
    if str(call.args[0].ty.dtype) not in _DATA_MAX or str(call.args[1].ty.dtype) != "int16":
        return None
    if str(call.ty.dtype) not in ("int32", "int64"):
        return None
    return split_codes(const_value(call.args[1]))


def _with_weight(call, weight: np.ndarray):
    """``call`` with another constant weight and an int32 accumulator."""
    attrs = call.attrs
    data, const = call.args[0], relax.const(weight, "int8")
    if op_name(call) == "relax.matmul":
        return relax.op.matmul(data, const, out_dtype="int32")
    return relax.op.nn.conv2d(
        data, const, strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
        groups=int(attrs.groups), data_layout=str(attrs.data_layout),
        kernel_layout=str(attrs.kernel_layout),
        out_layout=str(attrs.out_layout or attrs.data_layout), out_dtype="int32")


def _sum_dtype(call, hi: np.ndarray, lo: np.ndarray) -> str:
    """int32 when |256 * acc_hi| + |acc_lo| < 2^31 for every input, else int64."""
    data_max = _DATA_MAX[str(call.args[0].ty.dtype)]
    channel_axis = 1 if op_name(call) == "relax.matmul" else 0
    per_channel = [np.abs(np.moveaxis(w.astype(np.int64), channel_axis, 0))
                   .reshape(w.shape[channel_axis], -1).sum(1) for w in (hi, lo)]
    bound = (SPLIT_BASE * per_channel[0] + per_channel[1]).max(initial=0) * data_max
    return "int32" if bound < 2 ** 31 and str(call.ty.dtype) == "int32" else "int64"


@relax.expr_functor.mutator
class _SplitWideWeights(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        split = _wide_weight_layer(call)
        if split is None:
            return call
        hi, lo = split
        dtype = _sum_dtype(call, hi, lo)
        acc_hi = relax.op.astype(self.builder_.emit(_with_weight(call, hi)), dtype)
        acc_lo = relax.op.astype(self.builder_.emit(_with_weight(call, lo)), dtype)
        total = relax.op.add(relax.op.multiply(acc_hi, relax.const(SPLIT_BASE, dtype)), acc_lo)
        out = str(call.ty.dtype)
        return total if out == dtype else relax.op.astype(total, out)


def split_wide_weights(mod: tvm.IRModule) -> tvm.IRModule:
    """Every conv2d/matmul of int8/uint8 data with constant int16 weights whose codes split
    (``split_codes``) as the sum of two int8 layers."""
    rewriter = _SplitWideWeights(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.finalize()
