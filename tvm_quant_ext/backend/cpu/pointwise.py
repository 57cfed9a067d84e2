"""int8 1x1 depthwise convs as per-channel multiplies, so they fuse with their neighbours.

ResNet v2's pre-activation BatchNorms become 1x1 depthwise conv layers (their shift is a BIAS
point like any other bias). As a conv each is a kernel of its own between the residual add
that feeds it and the ReLU after it, one more pass over the activation; but a 1x1 depthwise
conv with unit strides and no padding is ``x[n, c, y, x] * w[c]``: written as an int32
multiply, FuseOps merges it with the add before and the requantize after into one elementwise
kernel. The products are the same int32 values, so the result is bit-identical.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ...graph import const_value, op_name
from .layers import int8_operands, nchw_layouts


def _pointwise(call) -> bool:
    if op_name(call) != "relax.nn.conv2d" or int8_operands(call) is None:
        return False
    a = call.attrs
    channels = int(call.args[0].ty.shape[1])
    w_shape = [int(d) for d in call.args[1].ty.shape]
    return (nchw_layouts(a) and int(a.groups) == channels == w_shape[0]
            and w_shape[1:] == [1, 1, 1] and all(int(s) == 1 for s in a.strides)
            and all(int(p) == 0 for p in a.padding))


@relax.expr_functor.mutator
class _PointwiseDepthwise(relax.PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not _pointwise(call):
            return call
        weight = const_value(call.args[1]).astype(np.int32).reshape(1, -1, 1, 1)
        return relax.op.multiply(relax.op.astype(call.args[0], "int32"),
                                 relax.const(weight, "int32"))


def depthwise_1x1_as_multiply(mod: tvm.IRModule) -> tvm.IRModule:
    """Every int8 1x1 depthwise conv (stride 1, no padding) of ``mod`` as an int32 multiply."""
    rewriter = _PointwiseDepthwise(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.finalize()
