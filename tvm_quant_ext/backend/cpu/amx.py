"""int8 conv2d on Intel AMX (``tdpbusd``) over the blocked layout of ``packed.py``.

An AMX tile is up to 16 rows of 64 bytes; ``tdpbusd`` adds the product of an unsigned-byte
tile A (rows x K) and a signed-byte tile B (K/4 rows of 16 columns x 4 bytes) into an int32
tile C (rows x 16), every 4 bytes of a row of A against one group of B. In the blocked layout
the 16 channels of a pixel are 16 contiguous bytes and the pixels of a row follow each other,
so a run of output pixels reading one 16-channel block through a kernel row's taps is an A
tile as it lies in memory: each row the 16 x ``kw`` bytes from the pixel its taps start at,
rows ``stride * 16`` bytes apart (K = 48 for a 3x3 conv, 16 for a 1x1; measured on one thread,
``tdpbusd`` does 2,500 G MAC/s at K = 48 and 800+ at K = 16, beside 750 G MAC/s for
``vpdpbusd`` on two).

The kernel keeps up to four C tiles (two runs of pixels x two 16-channel output blocks) in the
tile registers across the whole reduction (input blocks x kernel rows x kernel columns), each
A and B tile loaded once per step; then the tiles go to a small int32 buffer, and the layer's
epilogue (``epilogue.py``) runs on it vectorized over 16 channels, as in ``vnni.py``, writing
the blocked layout (or NCHW).

The tile registers are named by immediates: each tensorized step finds its C tile from where
its accumulator lies in the register block's buffer (``amx_tiles.py``), a constant once the
schedule's loops over tiles are unrolled. Each register block reads the thread's tile
configuration back (``sttilecfg``) and loads its own only where it differs.
An NCHW input of at most 4 channels (an image into the first conv) is packed first, as
``vnni.py`` packs, to pixels of one 4-channel group (``narrow``): a kernel row of up to 16 taps
is then one A row (28 bytes for a 7x7 stem, rows ``stride * 4`` bytes apart), where 16-channel
pixels would hold at most 4 taps and three quarters zeros.
Linux hands a process AMX state only after it asks (``arch_prctl(ARCH_REQ_XCOMP_PERM)``);
each kernel asks at every call (``_with_permission``), so exported libraries need nothing
of this package; ``request_permission`` asks from Python.
"""
from __future__ import annotations

import ctypes
import functools
import os
from typing import Sequence

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import Schedule

from . import packed as layout
from .amx_tiles import GROUP, LANES, intrinsics, tile_config  # noqa: F401 (tile_config: API)
from .epilogue import Epilogue
from .schedule import unroll_register_block

MAX_ROWS = 16                  # rows of a tile
MAX_ROW_TAPS = 4               # a kernel row's taps x 16 channels fill an A row of <= 64 bytes
ROW_BYTES = 64                 # an A row
MIN_PARALLEL_ROWS = 8          # a deep 1x1 conv splits its output blocks until this many tasks
FEATURES = ("amx-tile", "amx-int8")
_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158


def target_has_amx(target: tvm.target.Target) -> bool:
    if target.kind.name != "llvm":
        return False
    from tvm.target import codegen
    return all(bool(codegen.target_has_features(f, target)) for f in FEATURES)


def host_has_amx() -> bool:
    """Whether this machine's CPU and kernel run AMX int8 code (the CPU's flags, and Linux
    granting this process the tile state)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return {"amx_tile", "amx_int8"} <= set(flags) and request_permission()


@functools.lru_cache(maxsize=None)
def request_permission() -> bool:
    """Ask Linux for this process's AMX tile state (once; every thread then has it). Without it
    the first tile instruction kills the process (SIGILL). True when granted."""
    if os.uname().sysname != "Linux" or os.uname().machine != "x86_64":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def narrow(channels: int, input_packed: bool) -> bool:
    """Whether a conv's input is read as pixels of one 4-channel group: an NCHW input (not the
    blocked layout) of at most 4 channels, which the kernel packs itself."""
    return not input_packed and int(channels) <= GROUP


def pixel_bytes(channels: int, input_packed: bool) -> int:
    """What one input pixel takes in an A row: a 16-channel block, or a narrow input's group."""
    return GROUP if narrow(channels, input_packed) else layout.BLOCK


def takes(window, dilation, channels: int = layout.BLOCK, input_packed: bool = True) -> bool:
    """Whether the AMX kernel takes a conv (groups=1) of this window, dilation and input:
    dilation 1, a blocked input or a ``narrow`` one, a kernel row's taps within one A row
    (at most 64 bytes: 4 taps of 16 channels, 16 of a narrow input's 4)."""
    if not (input_packed or narrow(channels, input_packed)):
        return False
    return (all(int(d) == 1 for d in dilation)
            and int(window[1]) * pixel_bytes(channels, input_packed) <= ROW_BYTES)


def deep_blocks(weight_shape: Sequence[int]) -> int:
    """Input blocks one A row of a 1x1 conv holds (0: not a 1x1 conv over several blocks).

    A 1x1 conv's A row in the blocked layout is one pixel's 16 channels (K = 16), and a
    ``tdpbusd`` costs the same whatever its K: such a conv gets a third of a 3x3 conv's rate.
    The kernel copies each input row into a deep layout first, up to four blocks of a pixel in
    one 64-byte row, and runs the conv as a 1 x ``deep_blocks`` window of stride
    ``deep_blocks`` over it (the A row of those taps is the pixel's 64 channels)."""
    o, c, kh, kw = (int(v) for v in weight_shape)
    blocks = -(-c // layout.BLOCK)
    return min(MAX_ROW_TAPS, blocks) if kh == kw == 1 and blocks > 1 else 0


def _deep_weight(weight: np.ndarray, taps: int) -> np.ndarray:
    # OI11 -> the 1 x taps window over the deep row: tap t of virtual block q holds the
    # channels of block q * taps + t (zero past the last)
    o, c = weight.shape[:2]
    virtual = -(-c // (layout.BLOCK * taps))
    padded = np.zeros((o, virtual * taps * layout.BLOCK), "int8")
    padded[:, :c] = weight[:, :, 0, 0]
    return np.ascontiguousarray(padded.reshape(o, virtual, taps, layout.BLOCK)
                                .transpose(0, 1, 3, 2).reshape(o, virtual * layout.BLOCK, 1, taps))


def pack_weight(weight: np.ndarray, input_packed: bool = True) -> np.ndarray:
    """OIHW int8 -> O/16 x KH x C/16 x KW x 4 x 16 x 4: for each kernel row and input block,
    the row's taps' four groups are one B tile (KW * 256 contiguous bytes), in the order an A
    row holds them (tap after tap, 16 channels each); channels zero padded to whole blocks.
    A 1x1 conv over several blocks: the weight of its deep form (``deep_blocks``). A ``narrow``
    input (NCHW, not ``input_packed``): O/16 x KH x 1 x KW x 1 x 16 x 4, a tap's one group."""
    block = pixel_bytes(weight.shape[1], input_packed)
    taps = deep_blocks(weight.shape) if block == layout.BLOCK else 0
    if taps:
        weight = _deep_weight(weight, taps)
    o, c, kh, kw = weight.shape
    ob, blocks = -(-o // LANES), -(-c // block)
    padded = np.zeros((ob * LANES, blocks * block, kh, kw), "int8")
    padded[:o, :c] = weight
    per_block = block // GROUP
    return np.ascontiguousarray(padded.reshape(ob, LANES, blocks, per_block, GROUP, kh, kw)
                                .transpose(0, 5, 2, 6, 3, 1, 4))


def tile_rows(out_width: int) -> int:
    """Rows of an A / C tile: the most output pixels of a row, up to 16, that divide it."""
    return max(r for r in range(1, MAX_ROWS + 1) if out_width % r == 0)


def conv2d_kernel(data_shape: Sequence[int], weight_shape: Sequence[int], data_dtype: str,
                  strides=(1, 1), padding=(0, 0, 0, 0), epilogue=None, input_border=None,
                  output_packed: bool = False, output_padding=(0, 0, 0, 0),
                  shift_correction: bool = True, input_packed: bool = True) -> tvm.tirx.PrimFunc:
    """The scheduled AMX conv2d: (data, ``pack_weight``'s weight, correction (unless not
    ``shift_correction``), *epilogue tensors, *side tensors) -> the epilogue's output, NCHW or
    (with ``output_packed``) blocked with a border of ``output_padding``. As
    ``vnni.conv2d_kernel``: ``data_shape`` is the unpadded NCHW shape; the data is in the
    blocked layout, bordered with ``padding`` or ``input_border``, or, not ``input_packed``,
    an NCHW ``data_dtype`` tensor of at most 4 channels (``narrow``); dilation 1."""
    epilogue = epilogue or Epilogue()
    n, c, h, w = (int(v) for v in data_shape)
    o, _, kh, kw = (int(v) for v in weight_shape)
    if not (input_packed or narrow(c, input_packed)):
        raise ValueError(f"an NCHW input of {c} channels: the AMX kernel takes a blocked input "
                         f"or an NCHW one of at most {GROUP} channels (amx.takes)")
    block = pixel_bytes(c, input_packed)
    if kw * block > ROW_BYTES:
        raise ValueError(f"a {kh}x{kw} window: the AMX kernel takes rows of at most "
                         f"{ROW_BYTES // block} taps over {block}-channel pixels (amx.takes)")
    sh, sw = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in padding)
    blocks, ob = -(-c // block), -(-o // LANES)
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    if input_packed:
        border = tuple(input_border or padding)
        offset_y, offset_x = layout.read_offset(border, padding)
        data = te.placeholder(layout.packed_shape(data_shape, border), "uint8", "data")
        source = data
    else:
        data = te.placeholder((n, c, h, w), data_dtype, "data")
        source, offset_y, offset_x = _narrow_pixels(data, padding), 0, 0
    deep = deep_blocks(weight_shape) if input_packed else 0
    if deep:  # the conv as a 1 x deep window of stride deep over the rows' deep copy
        source = _deep_rows(data, blocks, deep, (oh, ow), (sh, sw), (offset_y, offset_x))
        blocks, kw, sh, sw, offset_y, offset_x = -(-blocks // deep), deep, 1, deep, 0, 0
    weight = te.placeholder((ob, kh, blocks, kw, block // GROUP, LANES, GROUP), "int8",
                            "weight_packed")
    corrections = layout.correction_arguments(o, shift_correction)
    extra, sides = epilogue.placeholders()

    rb = te.reduce_axis((0, blocks), "rb")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    # one axis over a pixel's channels (its groups of 4 from it): a narrow input's single
    # group would otherwise leave a unit loop that the tensor intrinsic's block does not have
    rk = te.reduce_axis((0, block), "rk")
    acc = te.compute(
        (n, ob, oh, ow, LANES),
        lambda i, bo, y, x, lo: te.sum(
            source[i, rb, y * sh + ry + offset_y, x * sw + rx + offset_x,
                   rk].astype("int32")
            * weight[bo, ry, rb, rx, rk // GROUP, lo, rk % GROUP].astype("int32"),
            axis=[rb, ry, rx, rk]),
        name="acc")

    def result(i, oc, y, x):
        value = layout.corrected(acc[i, oc // LANES, y, x, oc % LANES], corrections, oc)
        return epilogue.apply(value, (i, oc, y, x), extra, sides)

    bordered = output_packed and any(int(v) for v in output_padding)
    if bordered:  # as vnni.py: the interior into the bordered output after each register block
        inner = layout.blocked_output(result, (n, o, oh, ow), epilogue.dtype, name="inner")
        out = layout.bordered_copy(inner, (n, o, oh, ow), epilogue.dtype, output_padding)
    elif output_packed:
        out = layout.blocked_output(result, (n, o, oh, ow), epilogue.dtype)
    else:
        out = te.compute((n, o, oh, ow), result, name="out")
    func = te.create_prim_func([data, weight, *corrections, *extra, *sides, out])
    func = _schedule(func, (oh, ow), ob, sw, kw, bordered, deep=bool(deep),
                     weights_outer=weights_outer(n, (c, h, w), weight_shape), channels=block)
    if bordered:
        func = layout.fill_border(func, output_padding, epilogue.dtype)
    return _with_permission(func).without_attr("global_symbol").with_attr(
        "tirx.is_scheduled", True)


def _narrow_pixels(data: te.Tensor, padding) -> te.Tensor:
    """NCHW codes -> (n, 1, h + pads, w + pads, 4) uint8: each pixel's channels, shifted as
    the blocked layout stores them, the padding and the channels past the last holding the
    shifted zero."""
    n, c, h, w = (int(v) for v in data.shape)
    pt, pl, pb, pr = (int(v) for v in padding)
    shift = layout.code_shift(str(data.dtype))

    def pack(i, _, y, x, j):
        inside = tvm.tirx.all(j < c, y >= pt, y < h + pt, x >= pl, x < w + pl)
        value = data[i, te.min(j, c - 1), y - pt, x - pl]
        if shift:
            value = (value.astype("int32") + shift).astype("uint8")
        return tvm.tirx.if_then_else(inside, value, tvm.tirx.const(shift, "uint8"))
    return te.compute((n, 1, h + pt + pb, w + pl + pr, GROUP), pack, name="narrow")


def _deep_rows(data: te.Tensor, blocks: int, deep: int, out_hw, strides, offset) -> te.Tensor:
    """(n, blocks / deep, oh, ow * deep, 16): pixel ``x * deep + t`` of a row holds block
    ``q * deep + t`` of output pixel x's input pixel, so the deep blocks of a pixel are one
    contiguous 64-byte A row. Past the last block it repeats the last: the weight is zero
    there (``pack_weight``), so what those bytes hold adds nothing."""
    n = int(data.shape[0])
    (oh, ow), (sh, sw), (oy, ox) = out_hw, strides, offset

    def read(i, q, y, xt, j):
        block = tvm.tirx.min(q * deep + xt % deep, blocks - 1)
        return data[i, block, y * sh + oy, xt // deep * sw + ox, j]
    return te.compute((n, -(-blocks // deep), oh, ow * deep, layout.BLOCK), read, name="deep")


def _extent(sch: Schedule, block, axis: int) -> int:
    return int(sch.get(block).iter_vars[axis].dom.extent)


def _with_permission(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    # every call first asks Linux for the tile state (a no-op once granted, well under a
    # microsecond): a library exported with these kernels then runs in any process, not
    # only in one where request_permission ran
    ask = tvm.tirx.Evaluate(tvm.tirx.call_extern(
        "int64", "syscall", tvm.tirx.const(_SYS_ARCH_PRCTL, "int64"),
        tvm.tirx.const(_ARCH_REQ_XCOMP_PERM, "int64"), tvm.tirx.const(_XFEATURE_XTILEDATA, "int64")))
    return func.with_body(tvm.tirx.SeqStmt([ask, func.body]))


def weights_outer(batch: int, image_chw, weight_shape) -> bool:
    """Whether a batched conv's tasks run output blocks outermost (each output block's weights
    read once for the whole batch) rather than images (each image reads all the weights): for
    a conv with a window wider than 1x1 whose weights are at least twice the batch's input.
    Measured at batch 8 on one thread: ResNet-50's 3x3 convs at 7x7 (2.4 MB of weights)
    1.80 -> 1.44 ms; its 1x1 1024 -> 2048 of stride 2 (2 MB against 1.6 MB of input) 2.67 ->
    2.88; Lite0's 1x1 convs at 7x7 (weights 1.6-2.9x the input) no change above the profile's
    run-to-run noise (3%). So 1x1 convs keep images outermost."""
    window = int(np.prod(weight_shape[2:]))
    return batch > 1 and window > 1 and \
        int(np.prod(weight_shape)) >= 2 * batch * int(np.prod(image_chw))


def _schedule(func, out_hw, out_blocks: int, stride: int, taps: int,
              bordered: bool, deep: bool = False, weights_outer: bool = False,
              channels: int = layout.BLOCK) -> tvm.tirx.PrimFunc:
    out_height, out_width = out_hw
    rows = tile_rows(out_width)
    tiles_x = 2 if (out_width // rows) % 2 == 0 else 1
    # a row that is one run (14x14 planes): the second run of pixels is the next row's
    runs_y = 2 if tiles_x == 1 and out_height % 2 == 0 else 1
    # the deep copy in its own storage scope: TVM's storage rewrite would otherwise hand its
    # memory, dead after the reduction, to the int32 accumulators, and the tile store's
    # typed pointer into a uint8 buffer fails to lower
    zero, update, store = intrinsics(rows, stride, taps, tiles_x * runs_y,
                                     "local" if deep else "global", channels)
    sch = Schedule(func)
    acc = sch.get_sblock("acc")
    i, bo, y, x, lo, rb, ry, rx, rk = sch.get_loops(acc)
    x_outer, x_mid, x_tile = sch.split(x, [None, tiles_x, rows])
    y, y_mid = sch.split(y, [None, runs_y])
    # four C tiles a register block: two pixel runs x two output blocks, or, for a 1x1 conv
    # whose row is one run (7x7 planes), four output blocks taking turns with the two B tiles
    # (measured: 2048 -> 512 at 7x7 0.072 against 0.084 ms; a 3x3 conv's 12-row B tiles stall
    # on the turns, 0.318 against 0.090 ms for 512 -> 512)
    per_block = 4 // tiles_x if taps == 1 else 2
    while out_blocks % per_block:
        per_block //= 2
    bo_outer, bo_inner = sch.split(bo, [None, per_block])
    serial = []
    if deep:  # each task copies its row once: its output blocks run serially after the copy
        tasks = _extent(sch, acc, 0) * (out_height // runs_y)
        groups = out_blocks // per_block
        split = next(d for d in range(1, groups + 1)
                     if groups % d == 0 and (tasks * d >= MIN_PARALLEL_ROWS or d == groups))
        bo_outer, bo_serial = sch.split(bo_outer, [split, None])
        serial = [bo_serial]
    if taps == 1:  # (a unit loop inside the tensorized region would not match its description)
        sch.reorder(i, bo_outer, y, *serial, x_outer, rb, ry, rx, bo_inner, y_mid, x_mid,
                    x_tile, lo, rk)
    else:
        sch.reorder(i, bo_outer, y, *serial, x_outer, rb, ry, bo_inner, y_mid, x_mid, x_tile,
                    lo, rx, rk)
    # the tiles' register block: its accumulators lie tile after tile (amx_tiles reads them so)
    write_back = sch.cache_write(acc, 0, "global")
    sch.reverse_compute_at(write_back, x_outer)
    if weights_outer and not deep:
        sch.reorder(bo_outer, i)
        task = sch.fuse(bo_outer, i, y)
    else:
        task = sch.fuse(i, bo_outer, y)
    sch.parallel(task)
    if channels != layout.BLOCK:  # a narrow input's pack, before the conv, over its rows
        loops = sch.get_loops(sch.get_sblock("narrow"))
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
    if deep:
        copy = sch.get_sblock("deep")
        sch.compute_at(copy, task)
        sch.set_scope(copy, 0, "local")
        sch.vectorize(sch.get_loops(copy)[-1])
    epilogue = sch.get_sblock("inner" if bordered else "out")
    sch.reverse_compute_at(epilogue, x_outer)
    loops = sch.get_loops(epilogue)
    if len(sch.get(epilogue).iter_vars) == 4 and out_blocks * LANES == _extent(sch, epilogue, 1):
        # NCHW out: vectorized over 16 channels, whose accumulators and constants are
        # contiguous (over a row, each lane would read its accumulator 64 bytes from its
        # neighbour's); only the stores are strided
        block_loop, lane = sch.split(loops[-2], [None, LANES])
        sch.reorder(block_loop, loops[-1], lane)
        sch.vectorize(lane)
    else:
        sch.vectorize(loops[-1])
    outer = 2 + len(serial)  # the parallel loop, the serial output blocks, x_outer
    unroll_register_block(sch, epilogue, outer=outer)
    if bordered:
        layout.bordered_interior(sch, sch.get_sblock("out"), x_outer)
    init = sch.decompose_reduction(acc, rb)
    init_loops = sch.get_loops(init)
    wb_loops = sch.get_loops(write_back)
    wb_mid, wb_tile = sch.split(wb_loops[-2], [tiles_x, rows])
    # every loop over tiles unrolled: each tile's number then folds to the immediate the
    # tile instructions take
    tile_loops = init_loops[outer:-2] + sch.get_loops(write_back)[outer:-2]
    for loop in [bo_inner, y_mid, x_mid] + tile_loops:
        sch.unroll(loop)
    sch.tensorize(x_tile, update)
    sch.tensorize(init_loops[-2], zero)
    sch.tensorize(wb_tile, store)
    return sch.mod["main"]
