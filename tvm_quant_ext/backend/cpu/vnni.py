"""int8 conv2d / dense on x86 AVX-512 VNNI (``vpdpbusd``), or on AVX2 without VNNI with the
16x4 block of ``avx2.py`` (``vpmaddwd``; ``isa=AVX2``).

``vpdpbusd`` multiplies 4 unsigned bytes by 4 signed bytes and adds the 4 products into an
int32 lane, 16 lanes at a time: one instruction does 64 multiply-adds where an fp32 FMA does 16.
It needs the 4 reduced input channels next to each other in memory, so plain NCHW/OIHW layouts
cannot use it (MetaSchedule reports "cannot be tensorized"). ``fuse.py`` rewrites every
int8 x int8 -> int32 ``conv2d`` (groups=1, NCHW/OIHW) and ``matmul`` with a constant weight into
a ``call_tir`` of one scheduled kernel that

1. packs the activation to ``NC[H][W]4c`` uint8 (padding included); a signed int8 activation is
   shifted by +128 into uint8 on the way, which the kernel undoes by subtracting
   ``128 * sum(w)`` per output channel (a compile-time constant), so the result is exact
   (an input in the blocked layout of ``packed.py`` comes shifted and padded: it is read as is);
2. accumulates ``acc[n, O/16, oh, ow, 16o]`` with the weight pre-packed at compile time to
   ``O/16 x C/4 x KH x KW x 16o x 4c``, the inner 16x4 block tensorized onto ``vpdpbusd``
   and ``ow`` register-blocked;
3. unpacks back to NCHW int32, or, fused (``fuse.fuse_int8_layers``), applies the layer's
   integer epilogue (bias, requantize, clip, cast) to each element and writes NCHW int8,
   vectorized over 16 output channels (``_schedule_unpack``), or the blocked layout.

The kernel's schedule is fixed (no tuning needed); it carries ``tirx.is_scheduled`` so later
schedule passes leave it alone.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from . import avx2
from . import packed as layout
from .epilogue import Epilogue
from .intrinsics import ensure_registered
from .schedule import unroll_register_block


LANES, GROUP = 16, 4  # int32 lanes per vpdpbusd, bytes reduced per lane
INTRIN = "tvm_quant_ext.dot_16x4_u8i8i32_vnni"
VNNI, AVX2 = "avx512vnni", "avx2"  # the instruction sets the kernel's 16x4 block runs on
# output columns x 16-channel weight blocks accumulated in registers per weight load: AVX2's
# 16 registers of 8 lanes hold 2 x 2 blocks of accumulators beside the weights
REGISTER_BLOCK = {VNNI: (8, 2), AVX2: (2, 2)}
KERNEL_TAG = {VNNI: "vnni", AVX2: "avx2"}  # what the kernels built on each are named after


def _dot_16x4_functions():
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    # TVM's own "dot_16x4_vnni" passes int32 vectors to llvm.x86.avx512.vpdpbusd.512; the LLVM
    # in apache-tvm 0.27 (LLVM >= 20) declares the operands as <64 x i8> and rejects that call.
    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    return desc, impl


def target_has_vnni(target: tvm.target.Target) -> bool:
    return dot_isa(target) == VNNI


def dot_isa(target: tvm.target.Target):
    """The instruction set the packed kernels run on for an llvm target: ``VNNI`` where it
    has avx512vnni, else ``AVX2`` (``avx2.py``) where it has avx2, else None."""
    if target.kind.name != "llvm":
        return None
    from tvm.target import codegen
    for isa in (VNNI, AVX2):
        if codegen.target_has_features(isa, target):
            return isa
    return None


def reduced_groups(channels: int, input_packed: bool = False) -> int:
    """How many 4-channel groups the kernel reduces over: the input's channels in fours, or,
    from the packed layout, all of its 16-channel blocks (the padding channels hold the shifted
    zero and meet zero weights)."""
    if input_packed:
        return -(-channels // layout.BLOCK) * (layout.BLOCK // GROUP)
    return -(-channels // GROUP)


def pack_weight(weight: np.ndarray, input_packed: bool = False, isa: str = VNNI) -> np.ndarray:
    """OIHW int8 -> O/16 x C/4 x KH x KW x 16 x 4 (zero padded to whole blocks; with
    ``input_packed`` the input channels padded to the packed layout's blocks); for ``AVX2``
    each 16 x 4 block as ``avx2.weight_block`` lays it out."""
    o, c, kh, kw = weight.shape
    ob, cb = -(-o // LANES), reduced_groups(c, input_packed)
    padded = np.zeros((ob * LANES, cb * GROUP, kh, kw), "int8")
    padded[:o, :c] = weight
    blocks = padded.reshape(ob, LANES, cb, GROUP, kh, kw).transpose(0, 2, 4, 5, 1, 3)
    return avx2.weight_block(blocks) if isa == AVX2 else np.ascontiguousarray(blocks)


def conv2d_kernel(data_shape: Sequence[int], weight_shape: Sequence[int], data_dtype: str,
                  strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), epilogue=None,
                  epilogue_index=None, input_packed: bool = False, input_border=None,
                  output_packed: bool = False, output_padding=(0, 0, 0, 0),
                  isa: str = VNNI, shift_correction: bool = True,
                  stored_output: bool = False) -> tvm.tirx.PrimFunc:
    """The scheduled packed conv2d on ``isa`` (``VNNI``, or ``AVX2``: ``avx2.py``): (data NCHW,
    packed weight, correction (unless not ``shift_correction``), *epilogue tensors, *side
    tensors) -> NCHW, int32 or, with an ``epilogue`` (``epilogue.Epilogue``), its dtype: the
    epilogue runs on each unpacked accumulator element (``epilogue_index`` maps the NCHW
    output index to the index the epilogue's constants broadcast against, e.g. (n, o) for a
    dense layer).

    Between two int8 layers the activation need not go back to NCHW: ``output_packed``
    writes the (int8 / uint8) epilogue result in the blocked layout of ``packed.py``, with a
    border of ``output_padding`` (the reader's padding), and ``input_packed`` takes such a
    tensor, bordered with this conv's ``padding`` or, when other readers pad more, with
    ``input_border``, as ``data`` (``data_shape`` still the unpadded NCHW shape): the reduction
    reads it as it is. Its weight then comes from ``pack_weight(w, input_packed=True)``.
    ``stored_output``: the (blocked) epilogue ends in the stored byte of an int8 code
    (``blocked_store.fold_store_shift``)."""
    epilogue = epilogue or Epilogue()
    code_dtype = "int8" if stored_output else epilogue.dtype  # what the blocked tensor holds
    epilogue_index = epilogue_index or (lambda *index: index)
    n, c, h, w = (int(v) for v in data_shape)
    o, _, kh, kw = (int(v) for v in weight_shape)
    sh, sw = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in padding)
    dh, dw = (int(v) for v in dilation)
    cb, ob = reduced_groups(c, input_packed), -(-o // LANES)
    hp, wp = h + pt + pb, w + pl + pr
    oh, ow = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
    shift = layout.code_shift(data_dtype)

    if input_packed:  # the writer laid out this conv's padding too
        border = tuple(input_border or padding)
        offset_y, offset_x = layout.read_offset(border, padding)
        data = te.placeholder(layout.packed_shape(data_shape, border), "uint8", "data")
    else:
        data = te.placeholder((n, c, h, w), data_dtype, "data")
    if isa == AVX2:
        weight = te.placeholder((ob, cb, kh, kw, avx2.PAIR, LANES, avx2.PAIR), avx2.WIDE_DTYPE,
                                "weight_packed")
    else:
        weight = te.placeholder((ob, cb, kh, kw, LANES, GROUP), "int8", "weight_packed")
    corrections = layout.correction_arguments(o, shift_correction)
    extra, sides = epilogue.placeholders()

    def pack(i, ci, y, x, j):
        ch = ci * GROUP + j
        inside = tvm.tirx.all(ch < c, y >= pt, y < h + pt, x >= pl, x < w + pl)
        value = data[i, te.min(ch, c - 1), y - pt, x - pl]
        if shift:
            value = (value.astype("int32") + shift).astype("uint8")
        return tvm.tirx.if_then_else(inside, value, tvm.tirx.const(shift, "uint8"))

    if input_packed:  # packed and padded already: the reduction reads the input itself
        packed = data
    else:
        packed = te.compute((n, cb, hp, wp, GROUP), pack, name="data_packed")

    if isa == AVX2:  # the activation widened once per task: vpmaddwd reads int16 pairs
        stored = packed
        packed = te.compute(stored.shape, lambda *index: stored(*index).astype(avx2.WIDE_DTYPE),
                            name="data_wide")

    def reduced(i, g, y, x, j):  # input channel 4 * g + j, from 16-channel or 4-channel blocks
        if input_packed:
            per_block = layout.BLOCK // GROUP
            return packed[i, g // per_block, y + offset_y, x + offset_x,
                          (g % per_block) * GROUP + j]
        return packed[i, g, y, x, j]

    rc = te.reduce_axis((0, cb), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    if isa == AVX2:  # the group's channels 2p + k, as the AVX2 block pairs them
        rp, rk = te.reduce_axis((0, avx2.PAIR), "rp"), te.reduce_axis((0, avx2.PAIR), "rk")
        group, channel = [rp, rk], rp * 2 + rk

        def weight_at(bo, ry, rx, lo):
            return weight[bo, rc, ry, rx, rp, lo, rk]
    else:
        rj = te.reduce_axis((0, GROUP), "rj")
        group, channel = [rj], rj

        def weight_at(bo, ry, rx, lo):
            return weight[bo, rc, ry, rx, lo, rj]
    acc = te.compute(
        (n, ob, oh, ow, LANES),
        lambda i, bo, y, x, lo: te.sum(
            reduced(i, rc, y * sh + ry * dh, x * sw + rx * dw, channel).astype("int32")
            * weight_at(bo, ry, rx, lo).astype("int32"), axis=[rc, ry, rx, *group]),
        name="acc")

    def result(i, oc, y, x):
        value = layout.corrected(acc[i, oc // LANES, y, x, oc % LANES], corrections, oc)
        return epilogue.apply(value, epilogue_index(i, oc, y, x), extra, sides)

    bordered = output_packed and any(int(v) for v in output_padding)
    if bordered:
        # the epilogue writes the interior after each register block (as without a border);
        # a copy into the bordered tensor then adds the border: one byte per element read and
        # written, where an epilogue over the whole output would read back full-size int32
        # accumulators (at batch 8 on Lite0's first expansion, 38 MB)
        inner = layout.blocked_output(result, (n, o, oh, ow), code_dtype, name="inner",
                                      result_stored=stored_output)
        out = layout.bordered_copy(inner, (n, o, oh, ow), code_dtype, output_padding)
    elif output_packed:
        out = layout.blocked_output(result, (n, o, oh, ow), code_dtype, output_padding,
                                    result_stored=stored_output)
    else:
        out = te.compute((n, o, oh, ow), result, name="out")
    func = te.create_prim_func([data, weight, *corrections, *extra, *sides, out])
    func = _schedule(func, ow, ob, input_packed, output_packed,
                     bordered=bordered, isa=isa).without_attr("global_symbol")
    if bordered:
        func = layout.fill_border(func, output_padding, code_dtype)
    return func.with_attr("tirx.is_scheduled", True)


def _schedule(func: tvm.tirx.PrimFunc, out_width: int, out_blocks: int,
              input_packed: bool = False, output_packed: bool = False,
              bordered: bool = False, isa: str = VNNI) -> tvm.tirx.PrimFunc:
    intrin = avx2.INTRIN if isa == AVX2 else INTRIN
    ensure_registered(intrin, avx2.dot_functions if isa == AVX2 else _dot_16x4_functions)
    sch = Schedule(func)
    block, weight_blocks = REGISTER_BLOCK[isa]
    while out_width % block:  # a whole number of register blocks keeps the tensorized loop clean
        block -= 1
    if block * weight_blocks < 4 and out_blocks % (4 // block) == 0:
        # an odd row (7x7, stride-2 planes) leaves AVX2 one column: fill the registers with
        # more weight blocks instead
        weight_blocks = 4 // block
    acc = sch.get_sblock("acc")
    i, bo, y, x, lo, rc, ry, rx, *group = sch.get_loops(acc)
    x_outer, x_inner = sch.split(x, [None, block])
    # two 16-channel weight blocks per step (when there are) reuse each activation load twice
    bo_outer, bo_inner = sch.split(
        bo, [None, weight_blocks if out_blocks % weight_blocks == 0 else 1])
    sch.reorder(i, bo_outer, y, x_outer, rc, ry, rx, bo_inner, x_inner, lo, *group)
    # accumulate one register block in a small buffer, written out once per block
    write_back = sch.cache_write(acc, 0, "global")
    sch.reverse_compute_at(write_back, x_outer)
    task = sch.fuse(i, bo_outer, y)
    sch.parallel(task)
    if isa == AVX2:
        wide = sch.get_sblock("data_wide")
        sch.compute_at(wide, task)
        sch.vectorize(sch.fuse(*sch.get_loops(wide)[-2:]))
    init = sch.decompose_reduction(acc, rc)
    sch.tensorize(lo, intrin)
    sch.unroll(x_inner)
    sch.unroll(bo_inner)
    sch.vectorize(sch.get_loops(write_back)[-1])
    # constant indices throughout, so LLVM keeps the block in registers (stack_buffers.py)
    unroll_register_block(sch, write_back, outer=2)
    sch.vectorize(sch.get_loops(init)[-1])

    if not input_packed:  # the NCHW input's pack stage
        loops = sch.get_loops(sch.get_sblock("data_packed"))
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
    out = sch.get_sblock("out")
    if bordered:
        _epilogue_after_block(sch, sch.get_sblock("inner"), x_outer)
        layout.bordered_interior(sch, out, x_outer)
    elif output_packed or out_blocks * LANES == _out_channels(sch, out):
        # the epilogue of each register block right after its accumulation: the int32
        # accumulators are then only a register block's worth of memory (buffers are
        # allocated where they are used), not the whole output's, written out and read back
        # (for a 1x1 conv over few channels that round trip took longer than the products)
        _epilogue_after_block(sch, out, x_outer)
    else:
        _schedule_unpack(sch, out)
    return sch.mod["main"]


def _epilogue_after_block(sch: Schedule, block, x_outer) -> None:
    # the epilogue of each register block right after it, vectorized, unrolled under the
    # parallel loop and x_outer
    sch.reverse_compute_at(block, x_outer)
    sch.vectorize(sch.get_loops(block)[-1])
    unroll_register_block(sch, block, outer=2)


def _out_channels(sch: Schedule, out) -> int:
    return int(sch.get(sch.get_loops(out)[1]).extent)


def _schedule_unpack(sch: Schedule, out) -> None:
    """The epilogue + unpack to NCHW, vectorized over 16 output channels where it can be.

    Vectorized over the output row instead, each lane would read the accumulator 64 bytes
    from its neighbour (a gather) and load each channel's epilogue constants separately; over
    the 16 channels of one accumulator vector the reads and the per-channel constants are
    contiguous, and only the (int8) stores are strided. Measured on EfficientNet-Lite0's
    convs: the 1x1 expansions over large planes take 30-45% less time, the rest within noise.
    """
    i, oc, y, x = sch.get_loops(out)
    if int(sch.get(oc).extent) % LANES:
        sch.parallel(sch.fuse(i, oc, y))
        sch.vectorize(x)
        return
    oc_block, lane = sch.split(oc, [None, LANES])
    sch.reorder(i, oc_block, y, x, lane)
    sch.parallel(sch.fuse(i, oc_block, y))
    sch.vectorize(lane)
