"""Max pool on int8 / uint8 codes with a fused epilogue, in or out of the blocked layout.

The integer realize pools codes (max commutes with the monotone dequantize), so ResNet's stem
is conv -> requantize -> max pool -> the first block's BatchNorm on the pooled codes. Left to
TVM the pool is an NCHW kernel of its own between a stem that could write the blocked layout
and two convs that then pack its output again. This kernel reads the stem's blocked tensor
(16 channels, one 16-byte vector per pixel), takes the maximum of the taps, applies the chain
after it (the BatchNorm and requantize, ``epilogue.Epilogue``) and writes the blocked layout
the convs read.

Padding: a max pool pads with the type's smallest code (it never wins), not with the zero a
conv pads with, so this kernel asks its writer for no border and checks each tap against the
plane instead (a border other readers asked for is skipped over). Stored codes are the codes
+ 128 for int8 (``packed.py``), and the smallest code is then stored as 0: the maximum of the
stored values, minus the shift, is the maximum of the codes.
"""
from __future__ import annotations

from typing import Optional

import tvm
from tvm import te
from tvm.s_tir import Schedule

from . import packed as layout
from .epilogue import Epilogue


def max_pool_kernel(data_shape, out_shape, data_dtype: str, pool_size, strides=(1, 1),
                    padding=(0, 0, 0, 0), dilation=(1, 1),
                    epilogue: Optional[Epilogue] = None, input_packed: bool = False,
                    input_border=(0, 0, 0, 0), output_packed: bool = False,
                    output_padding=(0, 0, 0, 0)) -> tvm.tirx.PrimFunc:
    """NCHW max pool of ``data_dtype`` codes, then ``epilogue``: (data, *epilogue tensors) ->
    out. ``data`` is NCHW or, with ``input_packed``, the blocked uint8 tensor with
    ``input_border``; ``out`` (NCHW ``out_shape``) is the epilogue's dtype (else the codes'),
    or with ``output_packed`` its blocked uint8 tensor bordered with ``output_padding``."""
    epilogue = epilogue or Epilogue()
    n, c, h, w = (int(v) for v in data_shape)
    oh, ow = (int(v) for v in out_shape[2:])
    kh, kw = (int(v) for v in pool_size)
    sh, sw = (int(v) for v in strides)
    pt, pl = int(padding[0]), int(padding[1])
    dh, dw = (int(v) for v in dilation)
    shift = layout.code_shift(data_dtype)
    lanes = layout.BLOCK
    if input_packed:
        top, left = layout.read_offset(input_border, (0, 0, 0, 0))
        data = te.placeholder(layout.packed_shape(data_shape, input_border), "uint8", "data")
    else:
        data = te.placeholder((n, c, h, w), data_dtype, "data")
    extra, sides = epilogue.placeholders()

    def stored(i, ch, row, col):  # the stored (shifted) code at an in-plane position
        if input_packed:
            return data[i, ch // lanes, row + top, col + left, ch % lanes].astype("int32")
        return data[i, ch, row, col].astype("int32") + shift

    def pooled(i, ch, y, x):
        best = None
        for ry in range(kh):
            for rx in range(kw):
                row, col = y * sh - pt + ry * dh, x * sw - pl + rx * dw
                inside = tvm.tirx.all(row >= 0, row < h, col >= 0, col < w)
                tap = tvm.tirx.if_then_else(
                    inside, stored(i, ch, te.min(te.max(row, 0), h - 1),
                                   te.min(te.max(col, 0), w - 1)), tvm.tirx.const(0, "int32"))
                best = tap if best is None else te.max(best, tap)
        return (best - shift).astype(data_dtype)

    def result(i, ch, y, x):
        return epilogue.apply(pooled(i, ch, y, x), (i, ch, y, x), extra, sides)

    dtype = epilogue.dtype or data_dtype
    if output_packed:
        out = layout.blocked_output(result, (n, c, oh, ow), dtype, output_padding)
    else:
        out = te.compute((n, c, oh, ow), result, name="out")
    func = te.create_prim_func([data, *extra, *sides, out])
    sch = Schedule(func)
    loops = sch.get_loops(sch.get_sblock("out"))
    # one task per (image, channel block or channel, row); the 16 lanes of a block (or the
    # row of an NCHW plane) as one vector
    sch.parallel(sch.fuse(*loops[:3]))
    sch.vectorize(loops[-1])
    func = sch.mod["main"].without_attr("global_symbol")
    return func.with_attr("tirx.is_scheduled", True)
