"""The blocked activation layout int8 layers hand each other on CPU: ``N x C/16 x H x W x 16c``
uint8, with the reader's zero padding already in place (and the same blocks of a wider
integer, which only an epilogue reads: a residual add's other branch).

Sixteen channels of one pixel are one contiguous 16-byte vector, so a depthwise conv reads each
tap as one vector load whatever its stride, and a VNNI conv still finds the four channels it
reduces per ``vpdpbusd`` next to each other. Signed int8 codes are stored shifted by +128 (the
VNNI kernel multiplies unsigned bytes); the channels past the tensor's last, up to the next
multiple of 16, hold the shifted zero. The writer also writes the border the reading conv pads
with (code 0, shifted), so the reader takes its taps from the tensor as it is: no padded copy
of its input.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tvm
from tvm import te

BLOCK = 16  # channels per block: one AVX-512 vector of int32 lanes, one 16-byte load


def packed_shape(shape: Sequence[int], padding: Sequence[int] = (0, 0, 0, 0)) -> Tuple[int, ...]:
    """NCHW -> the ``N x C/16 x H x W x 16c`` shape, with a border of ``padding`` (top, left,
    bottom, right) rows and columns."""
    n, c, h, w = (int(v) for v in shape)
    top, left, bottom, right = (int(v) for v in padding)
    return (n, -(-c // BLOCK), h + top + bottom, w + left + right, BLOCK)


def read_offset(border: Sequence[int], padding: Sequence[int]) -> Tuple[int, int]:
    """Where a conv with ``padding`` finds its padded plane's origin in a blocked tensor with
    ``border``: (rows, columns) into it. A tensor with several readers has the widest border
    any of them pads with, so a reader may find more border than it pads with, never less."""
    if any(int(b) < int(p) for b, p in zip(border, padding)):
        raise ValueError(f"a blocked input with border {tuple(border)} cannot be read by a conv "
                         f"padding {tuple(padding)}: the writer must lay out at least that much")
    return int(border[0]) - int(padding[0]), int(border[1]) - int(padding[1])


def widest_border(paddings) -> Tuple[int, int, int, int]:
    """The border that serves every reader's (top, left, bottom, right) ``paddings``."""
    return tuple(max(int(p[k]) for p in paddings) for k in range(4)) if paddings else (0,) * 4


def code_shift(dtype: str) -> int:
    """What is added to a code of ``dtype`` to store it as uint8."""
    if dtype not in ("int8", "uint8"):
        raise ValueError(f"the packed layout holds int8/uint8 codes, not {dtype}")
    return 128 if dtype == "int8" else 0


def shift_correction(weight: np.ndarray, data_dtype: str) -> np.ndarray:
    """What the +128 shift of signed codes adds to each output channel's sum of products
    ((out channels, ...) int8 weights; 0 for uint8 codes), int32: kernels that multiply the
    stored (shifted) values subtract it."""
    sums = weight.astype(np.int64).reshape(weight.shape[0], -1).sum(axis=1)
    return (code_shift(data_dtype) * sums).astype("int32")


def correction_arguments(size: int, present: bool) -> List[te.Tensor]:
    """A kernel's ``shift_correction`` argument (int32, ``size`` channels) as a list: empty where
    the layer's epilogue carries it in its bias add (``epilogue.fold_into_first_add``)."""
    return [te.placeholder((size,), "int32", "correction")] if present else []


def corrected(value, corrections: List[te.Tensor], channel):
    """An accumulator of shifted codes, less its channel's correction where the kernel takes
    one (``correction_arguments``)."""
    return value - corrections[0][channel] if corrections else value


def stored_dtype(dtype: str) -> str:
    """How a ``dtype`` value is stored blocked: int8 / uint8 codes as uint8 (a conv reads
    them); a wider integer, which only a fused epilogue reads (a residual add's other branch at
    its accumulator scale), as itself."""
    if dtype in ("int8", "uint8"):
        return "uint8"
    if dtype not in ("int16", "uint16", "int32", "int64"):
        raise ValueError(f"the blocked layout holds integers, not {dtype}")
    return dtype


def _stored_shift(dtype: str) -> int:
    return code_shift(dtype) if dtype in ("int8", "uint8") else 0


def read_code(tensor: te.Tensor, index: Sequence, dtype: str,
              padding: Sequence[int] = (0, 0, 0, 0)):
    """The ``dtype`` value at NCHW ``index`` of a blocked ``tensor`` with a border of
    ``padding``: the stored element, unshifted."""
    i, c, y, x = index
    stored = tensor[i, c // BLOCK, y + int(padding[0]), x + int(padding[1]), c % BLOCK]
    shift = _stored_shift(dtype)
    if shift:
        return (stored.astype("int32") - shift).astype(dtype)
    return stored.astype(dtype)


def _with_border(shape: Sequence[int], dtype: str, padding: Sequence[int], value: Callable,
                 name: str, padding_channels: bool) -> te.Tensor:
    """The bordered blocked tensor whose element inside the border is ``value(i, b, row, col,
    lane)`` (row and column clamped into the NCHW plane) and the shifted zero elsewhere: on
    the border and, with ``padding_channels``, on the channels past the last."""
    n, c, h, w = (int(v) for v in shape)
    top, left, bottom, right = (int(v) for v in padding)
    shift = _stored_shift(dtype)

    def element(i, b, y, x, lane):
        row, col = y - top, x - left
        # only the tests that can fail: a condition the kernel's loops make always true still
        # costs its compare and select in every vector of the epilogue
        inside = [test for test, needed in ((row >= 0, top), (row < h, bottom), (col >= 0, left),
                                            (col < w, right)) if needed]
        if padding_channels and c % BLOCK:
            inside.insert(0, b * BLOCK + lane < c)
        # each side clamped only where there is a border: a clamp that cannot bind (max(row, 0)
        # with no top border) still defeats the region analysis ``bordered_interior`` needs
        if top:
            row = te.max(row, 0)
        if bottom:
            row = te.min(row, h - 1)
        if left:
            col = te.max(col, 0)
        if right:
            col = te.min(col, w - 1)
        if not inside:
            return value(i, b, row, col, lane)
        return tvm.tirx.if_then_else(tvm.tirx.all(*inside), value(i, b, row, col, lane),
                                     tvm.tirx.const(shift, stored_dtype(dtype)))

    return te.compute(packed_shape(shape, padding), element, name=name)


def blocked_output(result: Callable, shape: Sequence[int], dtype: Optional[str],
                   padding: Sequence[int] = (0, 0, 0, 0), name: str = "out",
                   result_stored: bool = False) -> te.Tensor:
    """The blocked tensor of ``result(n, c, y, x)`` (a ``dtype`` value of the NCHW ``shape``),
    stored as ``stored_dtype(dtype)``: int8 codes shifted to uint8, with the border of
    ``padding`` and the padding channels holding the shifted zero. ``result_stored``:
    ``result`` gives the stored byte already (``blocked_store.fold_store_shift``)."""
    channels = int(shape[1])
    dtype = dtype or "int32"
    store, shift = stored_dtype(dtype), (0 if result_stored else _stored_shift(dtype))

    def stored(i, b, row, col, lane):
        channel = b * BLOCK + lane
        if channels % BLOCK:  # the padding channels read the last one's value (then discarded)
            channel = te.min(channel, channels - 1)
        value = result(i, channel, row, col)
        if shift:
            value = value.astype("int32") + shift
        return value.astype(store)

    return _with_border(shape, dtype, padding, stored, name, padding_channels=True)


def bordered_copy(inner: te.Tensor, shape: Sequence[int], dtype: Optional[str],
                  padding: Sequence[int], name: str = "out") -> te.Tensor:
    """``inner`` (the blocked tensor of the NCHW ``shape``, no border) with the border of
    ``padding`` around it, holding the shifted zero."""
    return _with_border(shape, dtype or "int32", padding,
                        lambda i, b, row, col, lane: inner[i, b, row, col, lane], name,
                        padding_channels=False)


def fill_border(func: tvm.tirx.PrimFunc, padding: Sequence[int],
                dtype: Optional[str]) -> tvm.tirx.PrimFunc:
    """``func`` that also writes the shifted zero on the border of ``padding`` of its last
    argument (the blocked tensor of ``dtype`` values), before its own body: for a kernel that
    writes the interior straight into the bordered output (``bordered_interior``). Vectorized
    over a block's 16 channels; the rows in parallel."""
    tirx = tvm.tirx
    out = func.params[-1]  # TVM 0.27: PrimFunc params are the buffers
    n, blocks, height, width, lanes = (int(d) for d in out.shape)
    top, left, bottom, right = (int(v) for v in padding)
    zero = tirx.const(_stored_shift(dtype or "int32"), str(out.dtype))

    def loop(name, extent, body, kind=tirx.ForKind.SERIAL):
        var = tirx.Var(name, "int32")
        return tirx.For(var, 0, extent, kind, body(var))

    def run(i, b, y, x0, count):  # ``count`` pixels of row y from column x0
        return loop("x", count, lambda x: loop("lane", lanes, lambda lane: tirx.BufferStore(
            out, zero, [i, b, y, x + x0, lane]), tirx.ForKind.VECTORIZED))

    def row(i, b, y):  # a border row whole; an interior row its left and right columns
        inside = tirx.all(y >= top, y < height - bottom)
        edges = ([run(i, b, y, 0, left)] if left else []) + \
            ([run(i, b, y, width - right, right)] if right else [])
        if not edges:
            return tirx.IfThenElse(tirx.Not(inside), run(i, b, y, 0, width), None)
        sides = edges[0] if len(edges) == 1 else tirx.SeqStmt(edges)  # (TVM refuses a 1-long one)
        return tirx.IfThenElse(inside, sides, run(i, b, y, 0, width))

    rows = loop("i_b_y", n * blocks * height, lambda v: row(
        v // (blocks * height), v // height % blocks, v % height), tirx.ForKind.PARALLEL)
    return func.with_body(tirx.SeqStmt([rows, func.body]))


def bordered_interior(sch, block, loop) -> None:
    """``bordered_copy``'s block computed after each register block under ``loop``: TVM then
    keeps only its iterations that read the block's interior (the border's are dropped), so
    each register block writes its pixels into the bordered output while they are in cache;
    ``fill_border`` writes the border. (As one copy after the whole output it took 40-70% of
    a bordered 1x1 conv's time on 28x28-112x112 planes.)"""
    sch.reverse_compute_at(block, loop)
    sch.vectorize(sch.get_loops(block)[-1])
