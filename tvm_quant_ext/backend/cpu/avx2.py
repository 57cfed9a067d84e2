"""The packed conv kernel's 16x4 dot product on AVX2 without VNNI (``vpmaddwd``), exactly.

``vpdpbusd`` (``vnni.py``) adds 4 uint8 x int8 products per int32 lane. Without it, x86's
byte multiply ``vpmaddubsw`` adds pairs of products into int16 with saturation (255 * 127 * 2
> 32767), the loss ONNX Runtime answers with 7-bit weights (``reduce_range``). ``vpmaddwd``
multiplies int16 pairs and adds each pair into an int32 lane, which cannot overflow on 8-bit
values: the weight is stored widened to int16 at build time, the kernel widens its input rows
to int16 once per task (``vnni.conv2d_kernel``), so the 4 activation channels of a group are
two broadcast int16 pairs, and one 16x4 block is 4 ``vpmaddwd`` on 256-bit registers (16
multiply-adds each, as many as ``vpmaddubsw`` gives before its own widening step).

The weight block is laid out ``2 x 16o x 2i`` (input channels ``2p + k``): each 256-bit load
holds the (channel pair p) weights of 8 output channels, lane o beside its pair.
"""
from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

LANES, GROUP, PAIR = 16, 4, 2
INTRIN = "tvm_quant_ext.dot_16x4_u8i16i32_avx2"
WIDE_DTYPE = "int16"  # both vpmaddwd operands: the weight and the widened activation


def weight_block(block: np.ndarray) -> np.ndarray:
    """(..., 16o, 4i) int8 weight blocks -> (..., 2p, 16o, 2k) int16 (input channel 2p + k)."""
    lead = block.shape[:-2]
    return np.ascontiguousarray(
        block.reshape(*lead, LANES, PAIR, PAIR).swapaxes(-3, -2).astype(WIDE_DTYPE))


def dot_functions():
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "int16", offset_factor=1),
             B: T.Buffer((2, 16, 2), "int16", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:2, 0:16, 0:2])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for p in T.serial(0, 2):
                    for k in T.serial(0, 2):
                        with T.sblock("update"):
                            vi, vp, vk = T.axis.remap("SRR", [i, p, k])
                            C[vi] = C[vi] + T.cast(A[vp * 2 + vk], "int32") * T.cast(
                                B[vp, vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "int16", offset_factor=1),
             B: T.Buffer((2, 16, 2), "int16", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:2, 0:16, 0:2])
            T.writes(C[0:16])
            for half in T.unroll(2):
                C[T.ramp(half * 8, 1, 8)] = (
                    C.vload([half * 8], dtype="int32x8")
                    + T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                        T.reinterpret(T.broadcast(T.reinterpret(
                            A.vload([0], "int16x2"), dtype="int32"), 8), dtype="int16x16"),
                        B.vload([0, half * 8, 0], dtype="int16x16"), dtype="int32x8")
                    + T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                        T.reinterpret(T.broadcast(T.reinterpret(
                            A.vload([2], "int16x2"), dtype="int32"), 8), dtype="int16x16"),
                        B.vload([1, half * 8, 0], dtype="int16x16"), dtype="int32x8"))

    return desc, impl
