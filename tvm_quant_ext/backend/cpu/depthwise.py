"""Depthwise conv2d int8 on NCHW (groups == channels), int32 accumulation, fused epilogue.

The realize's average pools are such convs too (a ones kernel). Any kernel size, strides,
dilation and asymmetric padding; int8 or uint8 activations, int8 weights.
"""
from __future__ import annotations

from typing import Optional

import tvm
from tvm import te
from tvm.s_tir import Schedule

from .epilogue import Epilogue

VECTOR_LANES = 16  # int32 lanes of an AVX-512 register


def depthwise_kernel(data_shape, weight_shape, data_dtype: str, strides=(1, 1),
                     padding=(0, 0, 0, 0), dilation=(1, 1),
                     epilogue: Optional[Epilogue] = None) -> tvm.tirx.PrimFunc:
    """Depthwise conv2d (C, 1, KH, KW) int8 on NCHW int8/uint8, int32 accumulation, then the
    epilogue: (data, weight, *epilogue tensors) -> NCHW (epilogue dtype, else int32).

    Schedule: one parallel task per (image, channel): the channel's zero-padded plane is copied
    to a small int32 buffer, then each output row (taps and epilogue) is computed vectorized."""
    epilogue = epilogue or Epilogue()
    n, c, h, w = (int(v) for v in data_shape)
    _, _, kh, kw = (int(v) for v in weight_shape)
    sh, sw = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in padding)
    dh, dw = (int(v) for v in dilation)
    hp, wp = h + pt + pb, w + pl + pr
    oh, ow = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1

    data = te.placeholder((n, c, h, w), data_dtype, "data")
    weight = te.placeholder((c, 1, kh, kw), "int8", "weight")
    extra = [te.placeholder(a.shape, str(a.dtype), f"epilogue{i}")
             for i, a in enumerate(epilogue.tensor_operands())]
    # the padded plane split into ``sw`` column phases, ``padded[.., y, p, q]`` = column
    # ``q * sw + p``: with stride 2 the taps of a row of outputs then read contiguous memory
    wq = -(-wp // sw)

    def pad(i, ch, y, p, q):
        x = q * sw + p
        inside = tvm.tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl)
        return tvm.tirx.if_then_else(inside, data[i, ch, y - pt, te.min(x, w + pl - 1) - pl]
                                     .astype("int32"), tvm.tirx.const(0, "int32"))

    padded = te.compute((n, c, hp, sw, wq), pad, name="padded")

    def accumulate(i, ch, y, x):
        # the taps spelled out (kh * kw terms) rather than a reduce axis: the output block
        # stays a plain spatial block, so its row can be vectorized with the epilogue
        terms = [padded[i, ch, y * sh + ry * dh, (rx * dw) % sw, x + (rx * dw) // sw]
                 * weight[ch, 0, ry, rx].astype("int32") for ry in range(kh) for rx in range(kw)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    # the taps summed in an int32 stage of their own: written as one expression with the
    # epilogue, the epilogue's first cast to int64 is pushed into every term by the simplifier
    # and the whole sum runs on int64 vectors (half the lanes, twice the instructions)
    acc = te.compute((n, c, oh, ow), accumulate, name="acc")
    out = te.compute((n, c, oh, ow),
                     lambda *index: epilogue.apply(acc[index], index, extra), name="out")
    func = te.create_prim_func([data, weight, *extra, out])

    sch = Schedule(func)
    out_block, pad_block = sch.get_sblock("out"), sch.get_sblock("padded")
    acc_block = sch.get_sblock("acc")
    i, ch, y, x = sch.get_loops(out_block)
    channel = sch.fuse(i, ch)
    sch.parallel(channel)
    # a vector of accumulators at a time (kept in registers): the widest piece of the output
    # row up to 16 lanes that divides it
    piece = max(d for d in range(1, min(ow, VECTOR_LANES) + 1) if ow % d == 0)
    x_outer, x_inner = sch.split(x, [None, piece])
    sch.compute_at(acc_block, x_outer)
    if any((pt, pl, pb, pr)):
        sch.compute_at(pad_block, channel)
        sch.vectorize(sch.get_loops(pad_block)[-1])
    else:  # nothing to pad: the taps read the input directly instead of a copy of every plane
        sch.compute_inline(pad_block)
    sch.vectorize(x_inner)
    sch.vectorize(sch.get_loops(acc_block)[-1])
    func = sch.mod["main"].without_attr("global_symbol")
    return func.with_attr("tirx.is_scheduled", True)


