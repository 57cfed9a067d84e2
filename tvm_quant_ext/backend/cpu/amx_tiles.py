"""The AMX tile intrinsics of ``amx.py``'s conv kernel: the tile configuration and the three
tensor intrinsics a register block is made of (zero its C tiles, one reduction step, store them
to the block's buffer), each naming its tiles by immediates derived from where the step's
accumulator lies (``_tile_of``).

Tiles: C 0-3 (rows x 16 int32), A 4-5 (rows x ``channels`` x ``taps`` uint8), B 6-7
(``channels`` / 4 x ``taps`` rows of 16 x 4 int8). ``channels`` is what a pixel of the input
holds: a 16-channel block of the blocked layout, or a 4-channel group of a narrow input
(``amx.narrow``).
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from . import packed as layout
from .intrinsics import ensure_registered

LANES, GROUP = 16, 4           # output channels per C tile column set, bytes per B group
C_TILES, A_TILES, B_TILES = (0, 1, 2, 3), (4, 5), (6, 7)


def tile_config(rows: int, taps: int = 1, channels: int = layout.BLOCK) -> np.ndarray:
    """The 64-byte ``ldtilecfg`` operand as 8 int64 words: palette 1; C tiles rows x 64 bytes,
    A tiles rows x (``channels`` x ``taps``) bytes, B tiles (``channels`` / 4 x ``taps``) x 64
    bytes."""
    cfg = np.zeros(64, np.uint8)
    cfg[0] = 1
    for t in range(8):
        if t in C_TILES:
            shape = (rows, 64)
        elif t in A_TILES:
            shape = (rows, channels * taps)
        else:
            shape = (channels // GROUP * taps, 64)
        cfg[48 + t], cfg[16 + 2 * t] = shape
    return cfg.view(np.int64)


def _tile_of(c_buffer, rows: int):
    # the C tile of an accumulator region: its place in the register block's buffer, which
    # the schedule lays out tile after tile (bo_inner, run of pixels, rows, 16)
    return tvm.tirx.floormod(tvm.tirx.floordiv(c_buffer.elem_offset, rows * LANES), 4)


def _x_run(c_buffer, rows: int, tiles_x: int):
    return tvm.tirx.floormod(_tile_of(c_buffer, rows), tiles_x)


def _out_block(c_buffer, rows: int, tiles_x: int):
    return tvm.tirx.floordiv(_tile_of(c_buffer, rows), tiles_x)


def _a_tile(c_buffer, rows: int, tiles_x: int):
    return (A_TILES[0] + _x_run(c_buffer, rows, tiles_x)).astype("uint8")


def _b_tile(c_buffer, rows: int, tiles_x: int):
    # four output blocks of one pixel run take turns with the two B tiles
    return (B_TILES[0] + tvm.tirx.floormod(_out_block(c_buffer, rows, tiles_x), 2)).astype("uint8")


def _intrin(name: str, *args):
    return T.evaluate(T.call_llvm_intrin("void", name, *args))


def _functions(rows: int, stride: int, taps: int, tiles_x: int, a_scope: str, channels: int):
    """(zero, update, store) tensor intrinsics for tiles of ``rows`` rows, an input read
    every ``stride`` pixels, ``taps`` taps of a kernel row per A row, ``tiles_x`` runs of
    pixels per register block, A read from a buffer of storage scope ``a_scope`` whose pixels
    hold ``channels`` channels."""
    span = (rows - 1) * stride + taps
    groups = channels // GROUP
    # the words of the configuration that vary:
    config = [int(v) for v in tile_config(rows, taps, channels).view(np.int32)]
    assert not any(config[k] for k in (1, 2, 3, 8, 9, 10, 11, 14, 15))  # 0, 4-7, 12, 13

    @T.prim_func(s_tir=True)
    def zero_desc(c: T.handle) -> None:
        C = T.match_buffer(c, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:rows, 0:LANES])
            for x, o in T.grid(rows, LANES):
                with T.sblock("zero"):
                    vx, vo = T.axis.remap("SS", [x, o])
                    C[vx, vo] = 0

    @T.prim_func(s_tir=True)
    def zero_impl(c: T.handle) -> None:
        C = T.match_buffer(c, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:rows, 0:LANES])
            # (the tile's number is written out where used: a name assigned in TVMScript is a
            # variable in memory, which no later pass folds to the immediate)
            if _tile_of(C, rows) == 0:  # the block's first tile: the configuration in place?
                # ldtilecfg takes ~60 ns (a dozen tdpbusd), reading it back ~5: load it only
                # when this thread's differs (its first block, or another kernel's shapes)
                # (int32 words: the normalizer of a tensor intrinsic's indices takes int64
                # constants for int32 ones)
                cfg = T.decl_buffer((16,), "int32", scope="local")
                _intrin("llvm.x86.sttilecfg", cfg.access_ptr("w"))
                if (cfg[0] != config[0] or cfg[4] != config[4] or cfg[5] != config[5]
                        or cfg[6] != config[6] or cfg[7] != config[7] or cfg[12] != config[12]
                        or cfg[13] != config[13]):
                    for k in T.unroll(16):
                        cfg[k] = 0
                    cfg[0] = config[0]
                    cfg[4] = config[4]
                    cfg[5] = config[5]
                    cfg[6] = config[6]
                    cfg[7] = config[7]
                    cfg[12] = config[12]
                    cfg[13] = config[13]
                    _intrin("llvm.x86.ldtilecfg", cfg.access_ptr("r"))
            _intrin("llvm.x86.tilezero", T.Cast("uint8", _tile_of(C, rows)))

    @T.prim_func(s_tir=True)
    def update_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (span, channels), "uint8", offset_factor=1,
                           strides=[T.int32(), 1], scope=a_scope)
        B = T.match_buffer(b, (taps, groups, LANES, GROUP), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), 1])
        C = T.match_buffer(c, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:LANES], A[0:span, 0:channels],
                    B[0:taps, 0:groups, 0:LANES, 0:GROUP])
            T.writes(C[0:rows, 0:LANES])
            for x, o, t, k in T.grid(rows, LANES, taps, channels):
                with T.sblock("update"):
                    vx, vo, vt, vk = T.axis.remap("SSRR", [x, o, t, k])
                    C[vx, vo] = C[vx, vo] \
                        + T.cast(A[vx * stride + vt, vk], "int32") \
                        * T.cast(B[vt, vk // GROUP, vo, vk % GROUP], "int32")

    # a 1-wide window: the block has no loop over taps
    @T.prim_func(s_tir=True)
    def update_desc_one_tap(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (span, channels), "uint8", offset_factor=1,
                           strides=[T.int32(), 1], scope=a_scope)
        B = T.match_buffer(b, (taps, groups, LANES, GROUP), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), 1])
        C = T.match_buffer(c, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:LANES], A[0:span, 0:channels],
                    B[0:taps, 0:groups, 0:LANES, 0:GROUP])
            T.writes(C[0:rows, 0:LANES])
            for x, o, k in T.grid(rows, LANES, channels):
                with T.sblock("update"):
                    vx, vo, vk = T.axis.remap("SSR", [x, o, k])
                    C[vx, vo] = C[vx, vo] + T.cast(A[vx * stride, vk], "int32") \
                        * T.cast(B[0, vk // GROUP, vo, vk % GROUP], "int32")

    if taps == 1:
        update_desc = update_desc_one_tap

    @T.prim_func(s_tir=True)
    def update_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (span, channels), "uint8", offset_factor=1,
                           strides=[T.int32(), 1], scope=a_scope)
        B = T.match_buffer(b, (taps, groups, LANES, GROUP), "int8", offset_factor=1,
                           strides=[T.int32(), T.int32(), T.int32(), 1])
        C = T.match_buffer(c, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:LANES], A[0:span, 0:channels],
                    B[0:taps, 0:groups, 0:LANES, 0:GROUP])
            T.writes(C[0:rows, 0:LANES])
            # each A tile is loaded at the first output block, each B tile at the first run
            # of pixels: the block's loop over tiles runs output blocks outside pixel runs.
            # An A row is ``taps`` neighbouring pixels' channels, contiguous in the blocked
            # layout (a pixel is ``channels`` bytes); a B tile's rows are 64 bytes apart
            if _out_block(C, rows, tiles_x) == 0:
                _intrin("llvm.x86.tileloadd64", _a_tile(C, rows, tiles_x), A.access_ptr("r"),
                        T.Cast("int64", A.strides[0] * stride))
            if _x_run(C, rows, tiles_x) == 0:
                _intrin("llvm.x86.tileloadd64", _b_tile(C, rows, tiles_x), B.access_ptr("r"),
                        T.Cast("int64", B.strides[1]))
            _intrin("llvm.x86.tdpbusd", T.Cast("uint8", _tile_of(C, rows)),
                    _a_tile(C, rows, tiles_x), _b_tile(C, rows, tiles_x))

    @T.prim_func(s_tir=True)
    def store_desc(c: T.handle, d: T.handle) -> None:
        C = T.match_buffer(c, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        D = T.match_buffer(d, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:LANES])
            T.writes(D[0:rows, 0:LANES])
            for x, o in T.grid(rows, LANES):
                with T.sblock("store"):
                    vx, vo = T.axis.remap("SS", [x, o])
                    D[vx, vo] = C[vx, vo]

    @T.prim_func(s_tir=True)
    def store_impl(c: T.handle, d: T.handle) -> None:
        C = T.match_buffer(c, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        D = T.match_buffer(d, (rows, LANES), "int32", offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:LANES])
            T.writes(D[0:rows, 0:LANES])
            _intrin("llvm.x86.tilestored64", T.Cast("uint8", _tile_of(C, rows)),
                    D.access_ptr("w"), T.Cast("int64", D.strides[0] * 4))

    return (zero_desc, zero_impl), (update_desc, update_impl), (store_desc, store_impl)


def intrinsics(rows: int, stride: int, taps: int, tiles_x: int, a_scope: str = "global",
               channels: int = layout.BLOCK):
    """The names of the (zero, update, store) tensor intrinsics, registered on first use."""
    names = [f"tvm_quant_ext.amx_{part}_r{rows}_s{stride}_k{taps}_t{tiles_x}_{a_scope}"
             f"_c{channels}" for part in ("zero", "update", "store")]
    for k, name in enumerate(names):
        ensure_registered(name, lambda k=k: _functions(rows, stride, taps, tiles_x, a_scope,
                                                       channels)[k])
    return names
