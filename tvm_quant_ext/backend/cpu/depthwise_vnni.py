"""Depthwise conv2d int8 on ``vpdpbusd``: four taps of a kernel row per int32 lane.

In the blocked layout of ``packed.py`` four neighbouring pixels of one 16-channel block are 64
contiguous bytes, pixel-major. One byte shuffle turns them channel-major (the four pixels of
each channel side by side), and one ``vpdpbusd`` against the four taps' weights of the 16
channels adds 64 products: a row of a 3x3 kernel is one such step (the fourth weight zero), of
a 5x5 kernel two. The multiply-add kernel of ``depthwise.py`` spends three instructions on
each tap's 16 products instead.

A kernel row's taps go in groups of four starting at its columns 0, 4, 8, ...; when the row is
wider than four and not a multiple, the last group starts at ``kw - 4`` instead (overlapping
the one before it, its already-counted taps weighted zero), so no group reads past the row's
last tap. A row narrower than four (3x3) reads ``4 - kw`` columns past it: the input's right
border is that much wider (``border_needed``), and those columns meet zero weights.

Dilation 1 only (dilated taps are not contiguous); ``depthwise.py`` keeps the rest.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from . import packed as layout
from .epilogue import Epilogue
from .intrinsics import ensure_registered

LANES, GROUP = 16, 4  # int32 lanes per vpdpbusd, taps reduced per lane
INTRIN = "tvm_quant_ext.depthwise_4x16_u8i8i32_vnni"
REGISTER_BLOCK = 8    # output columns accumulated in registers per weight load

# the 64 bytes of four pixels x 16 channels, pixel-major, read channel-major: byte 4 * c + k
# of the shuffled vector is pixel k's channel c
_CHANNEL_MAJOR = [LANES * (p % GROUP) + p // GROUP for p in range(LANES * GROUP)]


def _dot_functions():
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4, 16), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4, 0:16], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk, vi], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4, 16), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4, 0:16], B[0:16, 0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.Shuffle([A.vload([0, 0], dtype="uint8x64")], _CHANNEL_MAJOR),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    return desc, impl


def tap_groups(kw: int) -> Tuple[int, ...]:
    """The first column of each group of four taps of a kernel row ``kw`` wide."""
    count = -(-kw // GROUP)
    return tuple(min(GROUP * g, max(kw - GROUP, 0)) for g in range(count))


def takes(kernel_shape: Sequence[int], dilation: Sequence[int]) -> bool:
    """Whether this kernel computes a depthwise conv with this window and dilation."""
    return tuple(int(d) for d in dilation) == (1, 1)


def border_needed(padding: Sequence[int], kernel_shape: Sequence[int],
                  dilation: Sequence[int]) -> Tuple[int, int, int, int]:
    """The border a blocked input must have for this kernel: the conv's padding, and on the
    right the columns a row's last group reads past its last tap."""
    top, left, bottom, right = (int(p) for p in padding)
    if not takes(kernel_shape, dilation):
        return top, left, bottom, right
    return top, left, bottom, right + max(GROUP - int(kernel_shape[1]), 0)


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """(C, 1, KH, KW) int8 -> (C/16, KH, groups, 16, 4) int8: per kernel row and group, the
    16 channels' four taps; zero for the padding channels, for taps past the row and for the
    taps an overlapping last group shares with the group before it."""
    c, _, kh, kw = weight.shape
    groups = tap_groups(kw)
    blocks = -(-c // LANES)
    out = np.zeros((blocks * LANES, kh, len(groups), GROUP), "int8")
    for g, start in enumerate(groups):
        for k in range(GROUP):
            column = start + k
            if GROUP * g <= column < kw:
                out[:c, :, g, k] = weight[:, 0, :, column]
    return np.ascontiguousarray(out.reshape(blocks, LANES, kh, len(groups), GROUP)
                                .transpose(0, 2, 3, 1, 4))


def depthwise_kernel(data_shape, weight_shape, data_dtype: str, strides=(1, 1),
                     padding=(0, 0, 0, 0), epilogue: Optional[Epilogue] = None,
                     input_packed: bool = False, input_border=None,
                     output_packed: bool = False,
                     shift_correction: bool = True) -> tvm.tirx.PrimFunc:
    """Depthwise conv2d over 16-channel blocks: (data, ``pack_weight(w)``,
    ``depthwise.depthwise_shift_correction(w, data_dtype)`` (unless not ``shift_correction``),
    *epilogue tensors) -> out.

    ``data`` is NCHW ``data_dtype`` (gathered first into a bordered blocked uint8 copy, in
    parallel over rows) or, with ``input_packed``, the blocked uint8 tensor of those codes with
    at least ``border_needed``'s border (``input_border``). ``out`` is NCHW (the epilogue's
    dtype, else int32; channels a multiple of 16), or with ``output_packed`` the blocked uint8
    tensor of the epilogue's int8/uint8 result, no border. One parallel task per (image,
    channel block, output row) accumulates ``REGISTER_BLOCK`` output columns at a time and
    applies the epilogue to them."""
    epilogue = epilogue or Epilogue()
    n, c, h, w = (int(v) for v in data_shape)
    kh, kw = (int(v) for v in weight_shape[2:])
    sh, sw = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in padding)
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    blocks = -(-c // LANES)
    if not output_packed and c % LANES:
        raise ValueError(f"the vpdpbusd depthwise kernel writes NCHW only for whole 16-channel "
                         f"blocks, not {c} channels")
    groups = tap_groups(kw)
    needed = border_needed(padding, (kh, kw), (1, 1))
    shift = layout.code_shift(data_dtype)

    if input_packed:
        border = tuple(int(b) for b in (input_border or padding))
        if border[2] < needed[2] or border[3] < needed[3]:
            raise ValueError(f"a blocked input with border {border} is too narrow for the "
                             f"vpdpbusd depthwise kernel: it reads the border {needed}")
        offset_y, offset_x = layout.read_offset(border, padding)
        data = te.placeholder(layout.packed_shape(data_shape, border), "uint8", "data")
        stored = data
    else:
        offset_y = offset_x = 0
        data = te.placeholder((n, c, h, w), data_dtype, "data")

        def gather(i, b, y, x, lane):  # the stored (shifted) code of channel b * 16 + lane
            ch, row, col = b * LANES + lane, y - pt, x - pl
            inside = tvm.tirx.all(ch < c, row >= 0, row < h, col >= 0, col < w)
            value = data[i, te.min(ch, c - 1), te.min(te.max(row, 0), h - 1),
                         te.min(te.max(col, 0), w - 1)]
            if shift:
                value = (value.astype("int32") + shift).astype("uint8")
            return tvm.tirx.if_then_else(inside, value.astype("uint8"),
                                         tvm.tirx.const(shift, "uint8"))

        stored = te.compute(layout.packed_shape(data_shape, needed), gather, name="padded")
    weight = te.placeholder((blocks, kh, len(groups), LANES, GROUP), "int8", "weight")
    corrections = layout.correction_arguments(blocks * LANES, shift_correction)
    extra, sides = epilogue.placeholders()

    ry = te.reduce_axis((0, kh), "ry")
    rg = te.reduce_axis((0, len(groups)), "rg")
    rk = te.reduce_axis((0, GROUP), "rk")
    last_start = groups[-1]

    def start(g):  # tap_groups as an expression of the group axis
        return te.min(g * GROUP, last_start) if len(groups) > 1 else 0

    acc = te.compute(
        (n, blocks, oh, ow, LANES),
        lambda i, b, y, x, lane: te.sum(
            stored[i, b, offset_y + y * sh + ry, offset_x + x * sw + start(rg) + rk, lane]
            .astype("int32") * weight[b, ry, rg, lane, rk].astype("int32"),
            axis=[ry, rg, rk]),
        name="acc")

    def result(i, ch, y, x):
        value = layout.corrected(acc[i, ch // LANES, y, x, ch % LANES], corrections, ch)
        return epilogue.apply(value, (i, ch, y, x), extra, sides)

    if output_packed:
        out = layout.blocked_output(result, (n, c, oh, ow), epilogue.dtype)
    else:
        out = te.compute((n, c, oh, ow), result, name="out")
    func = te.create_prim_func([data, weight, *corrections, *extra, *sides, out])
    return _schedule(func, ow, input_packed, output_packed)


def _schedule(func: tvm.tirx.PrimFunc, out_width: int, input_packed: bool,
              output_packed: bool) -> tvm.tirx.PrimFunc:
    ensure_registered(INTRIN, _dot_functions)
    sch = Schedule(func)
    block = max(d for d in range(1, min(out_width, REGISTER_BLOCK) + 1) if out_width % d == 0)
    acc = sch.get_sblock("acc")
    i, b, y, x, lane, ry, rg, rk = sch.get_loops(acc)
    x_outer, x_inner = sch.split(x, [None, block])
    sch.reorder(i, b, y, x_outer, ry, rg, x_inner, lane, rk)
    write_back = sch.cache_write(acc, 0, "global")
    sch.reverse_compute_at(write_back, x_outer)
    sch.parallel(sch.fuse(i, b, y))
    init = sch.decompose_reduction(acc, ry)
    sch.tensorize(lane, INTRIN)
    sch.unroll(x_inner)
    sch.vectorize(sch.get_loops(write_back)[-1])
    sch.vectorize(sch.get_loops(init)[-1])
    if not input_packed:
        loops = sch.get_loops(sch.get_sblock("padded"))
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
    out = sch.get_sblock("out")
    if output_packed:
        sch.reverse_compute_at(out, x_outer)
        sch.vectorize(sch.get_loops(out)[-1])
    else:
        sch.reverse_compute_at(out, x_outer)
        loops = sch.get_loops(out)
        ch, x = loops[-2], loops[-1]
        sch.reorder(x, ch)
        sch.vectorize(ch)
    func = sch.mod["main"].without_attr("global_symbol")
    return func.with_attr("tirx.is_scheduled", True)
