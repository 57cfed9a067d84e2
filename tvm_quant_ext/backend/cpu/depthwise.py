"""Depthwise conv2d int8 (groups == channels), int32 accumulation, fused epilogue.

The realize's average pools are such convs too (a ones kernel). Any kernel size, strides,
dilation and asymmetric padding; int8 or uint8 activations, int8 weights. Two kernels:

* ``depthwise_kernel``: NCHW in and out, each channel's plane on its own, vectorized along the
  output row;
* ``depthwise_blocked_kernel``: 16 channels are the 16 lanes of a vector, so every tap is one
  vector load and multiply-add whatever the stride or the plane's width; it reads and/or
  writes the blocked layout of ``packed.py`` (the layout a VNNI conv hands over), which is
  what makes it pay: from NCHW the channels would have to be gathered first.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import Schedule

from . import packed as layout
from .epilogue import Epilogue

VECTOR_LANES = 16  # int32 lanes of an AVX-512 register


def _geometry(data_shape, weight_shape, strides, padding, dilation):
    """(n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, padded h, padded w, out h, out w)."""
    n, c, h, w = (int(v) for v in data_shape)
    kh, kw = (int(v) for v in weight_shape[2:])
    sh, sw = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in padding)
    dh, dw = (int(v) for v in dilation)
    hp, wp = h + pt + pb, w + pl + pr
    oh, ow = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
    return n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, hp, wp, oh, ow


def depthwise_kernel(data_shape, weight_shape, data_dtype: str, strides=(1, 1),
                     padding=(0, 0, 0, 0), dilation=(1, 1),
                     epilogue: Optional[Epilogue] = None) -> tvm.tirx.PrimFunc:
    """Depthwise conv2d (C, 1, KH, KW) int8 on NCHW int8/uint8, int32 accumulation, then the
    epilogue: (data, weight, *epilogue tensors) -> NCHW (epilogue dtype, else int32).

    Schedule: one parallel task per (image, channel): the channel's zero-padded plane is copied
    to a small int32 buffer, then each output row (taps and epilogue) is computed vectorized."""
    epilogue = epilogue or Epilogue()
    n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, hp, wp, oh, ow = _geometry(
        data_shape, weight_shape, strides, padding, dilation)

    data = te.placeholder((n, c, h, w), data_dtype, "data")
    weight = te.placeholder((c, 1, kh, kw), "int8", "weight")
    extra, sides = epilogue.placeholders()
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
        return sum(terms[1:], terms[0])

    # the taps summed in an int32 stage of their own: written as one expression with the
    # epilogue, the epilogue's first cast to int64 is pushed into every term by the simplifier
    # and the whole sum runs on int64 vectors (half the lanes, twice the instructions)
    acc = te.compute((n, c, oh, ow), accumulate, name="acc")
    out = te.compute((n, c, oh, ow),
                     lambda *index: epilogue.apply(acc[index], index, extra, sides), name="out")
    func = te.create_prim_func([data, weight, *extra, *sides, out])

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




# output columns whose accumulators stay in registers while the taps' weights are reused
REGISTER_BLOCK = 8


def pack_depthwise_weight(weight: np.ndarray) -> np.ndarray:
    """(C, 1, KH, KW) int8 -> (C/16, KH, KW, 16) int16, zero for the padding channels: one
    vector of 16 channels' weights per tap."""
    c, _, kh, kw = weight.shape
    blocks = -(-c // layout.BLOCK)
    padded = np.zeros((blocks * layout.BLOCK, kh, kw), "int16")
    padded[:c] = weight[:, 0]
    return np.ascontiguousarray(padded.reshape(blocks, layout.BLOCK, kh, kw)
                                .transpose(0, 2, 3, 1))


def depthwise_shift_correction(weight: np.ndarray, data_dtype: str) -> np.ndarray:
    """What the stored codes' +128 shift (int8 codes) adds to each channel's sum: the blocked
    kernel multiplies the stored values and subtracts this, (C/16 * 16,) int32."""
    c = weight.shape[0]
    return np.pad(layout.shift_correction(weight, data_dtype), (0, -c % layout.BLOCK))


def depthwise_blocked_kernel(data_shape, weight_shape, data_dtype: str, strides=(1, 1),
                             padding=(0, 0, 0, 0), dilation=(1, 1),
                             epilogue: Optional[Epilogue] = None, input_packed: bool = False,
                             input_border=None, output_packed: bool = False,
                             output_padding=(0, 0, 0, 0)) -> tvm.tirx.PrimFunc:
    """Depthwise conv2d over 16-channel blocks: (data, ``pack_depthwise_weight(w)``,
    ``depthwise_shift_correction(w, data_dtype)``, *epilogue tensors) -> out. ``data`` is NCHW
    ``data_dtype``, or with ``input_packed`` the blocked uint8 tensor of those codes, bordered
    with this conv's ``padding`` (or the wider ``input_border``); ``out`` is NCHW (the
    epilogue's dtype, else int32), or with ``output_packed`` the blocked uint8 tensor of the
    epilogue's int8/uint8 result, bordered with ``output_padding`` (the reader's padding).

    The taps multiply the stored (shifted) values, and the shift's share, a constant per
    channel, is subtracted once. From a blocked input they read it as it is; from NCHW the
    channels are first gathered into a padded int16 copy, in parallel over rows. One parallel
    task per (image, channel block, output row) accumulates ``REGISTER_BLOCK`` output columns
    of 16 lanes at a time, the taps unrolled, and applies the epilogue to the 16 lanes."""
    epilogue = epilogue or Epilogue()
    n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, hp, wp, oh, ow = _geometry(
        data_shape, weight_shape, strides, padding, dilation)
    lanes = layout.BLOCK
    blocks = -(-c // lanes)
    shift = layout.code_shift(data_dtype)

    offset_y = offset_x = 0
    if input_packed:
        border = tuple(input_border or padding)
        offset_y, offset_x = layout.read_offset(border, padding)
        data = te.placeholder(layout.packed_shape(data_shape, border), "uint8", "data")
    else:
        data = te.placeholder((n, c, h, w), data_dtype, "data")
    weight = te.placeholder((blocks, kh, kw, lanes), "int16", "weight")
    correction = te.placeholder((blocks * lanes,), "int32", "correction")
    extra, sides = epilogue.placeholders()

    if input_packed:
        stored = data
    else:
        def gather(i, b, y, x, lane):  # the stored value of channel b * 16 + lane, padded
            ch, row, col = b * lanes + lane, y - pt, x - pl
            inside = tvm.tirx.all(ch < c, row >= 0, row < h, col >= 0, col < w)
            value = data[i, te.min(ch, c - 1), te.min(te.max(row, 0), h - 1),
                         te.min(te.max(col, 0), w - 1)].astype("int16")
            return tvm.tirx.if_then_else(inside, value + tvm.tirx.const(shift, "int16"),
                                         tvm.tirx.const(shift, "int16"))

        stored = te.compute((n, blocks, hp, wp, lanes), gather, name="padded")

    def accumulate(i, b, y, x, lane):
        terms = [stored[i, b, offset_y + y * sh + ry * dh, offset_x + x * sw + rx * dw, lane]
                 .astype("int32")
                 * weight[b, ry, rx, lane].astype("int32")
                 for ry in range(kh) for rx in range(kw)]
        return sum(terms[1:], terms[0]) - correction[b * lanes + lane]

    acc = te.compute((n, blocks, oh, ow, lanes), accumulate, name="acc")
    if output_packed:
        out = layout.blocked_output(
            lambda i, ch, y, x: epilogue.apply(acc[i, ch // lanes, y, x, ch % lanes],
                                               (i, ch, y, x), extra, sides),
            (n, c, oh, ow), epilogue.dtype, output_padding)
    else:
        out = te.compute((n, c, oh, ow), lambda i, ch, y, x: epilogue.apply(
            acc[i, ch // lanes, y, x, ch % lanes], (i, ch, y, x), extra, sides), name="out")
    func = te.create_prim_func([data, weight, correction, *extra, *sides, out])

    sch = Schedule(func)
    acc_block, out_block = sch.get_sblock("acc"), sch.get_sblock("out")
    if not input_packed:
        loops = sch.get_loops(sch.get_sblock("padded"))
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
    return _schedule_blocked(sch, acc_block, out_block, c, ow, output_packed, output_padding)


def _schedule_blocked(sch: Schedule, acc_block, out_block, channels: int, out_width: int,
                      output_packed: bool, output_padding) -> tvm.tirx.PrimFunc:
    lanes = layout.BLOCK
    if output_packed and not any(output_padding):
        i, b, y, x, lane = sch.get_loops(out_block)
    elif not output_packed and channels % lanes == 0:
        i, ch, y, x = sch.get_loops(out_block)
        b, lane = sch.split(ch, [None, lanes])
        sch.reorder(i, b, y, x, lane)
    else:
        # a border to write (a reader with padding: rare, VNNI convs write most borders) or a
        # partial last block of NCHW channels: the accumulators are written out whole, then
        # read per output element
        loops = sch.get_loops(acc_block)
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
        loops = sch.get_loops(out_block)
        sch.parallel(sch.fuse(*loops[:3]))
        if output_packed:
            sch.vectorize(loops[-1])
        return _finish(sch)
    piece = max(d for d in range(1, min(out_width, REGISTER_BLOCK) + 1) if out_width % d == 0)
    x_outer, x_inner = sch.split(x, [None, piece])
    sch.parallel(sch.fuse(i, b, y))
    sch.compute_at(acc_block, x_outer)
    acc_loops = sch.get_loops(acc_block)
    sch.unroll(acc_loops[-2])
    sch.vectorize(acc_loops[-1])
    sch.unroll(x_inner)
    sch.vectorize(lane)
    return _finish(sch)


def _finish(sch: Schedule) -> tvm.tirx.PrimFunc:
    func = sch.mod["main"].without_attr("global_symbol")
    return func.with_attr("tirx.is_scheduled", True)
