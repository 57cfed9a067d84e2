"""A default CPU schedule for kernels nobody scheduled (no tuning record, no hand schedule).

Untuned, TVM's llvm lowering runs every PrimFunc as plain single-threaded loops. This gives
each such kernel the two things that cost nothing to decide: producers that are pure
elementwise are inlined into their consumer (FuseTIR leaves one block per fused op, each
writing a full intermediate buffer), the outer spatial loops of every remaining block run in
parallel, and the innermost loop of a block without reduction is vectorized. It is applied
to every unscheduled kernel of fp32 and int8 builds alike, after any tuning database, so
the fp32 / int8 comparison stays one of equal effort.

``unroll_register_block`` is the one step the hand kernels (``vnni.py``, ``amx.py``) share.
"""
from __future__ import annotations

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

VECTOR_LANES = 16     # inner split when the innermost spatial loop is long
MAX_VECTOR = 64       # innermost loops up to this extent are vectorized whole
MIN_PARALLEL = 4      # parallelize only when there are at least this many outer iterations
DATA_PAR = 0          # tirx.IterVar.DataPar
MAX_UNROLLED_VECTORS = 64  # a register block's epilogue up to this many vectors runs unrolled


def is_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    return func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False))


def unroll_register_block(sch: Schedule, block, outer: int) -> None:
    """Unroll the loops of ``block`` (a register block's vectorized epilogue) between its
    ``outer`` enclosing loops and its vectorized innermost one, when they run at most
    ``MAX_UNROLLED_VECTORS`` vectors.

    Unrolled, every vector's index is a constant, so LLVM keeps the block's values in
    registers. (Unrolling was first taken for the Q31 multiplies: measured on ResNet-50's 56x56
    block-end 1x1 conv, 0.19 against 0.23 ms on the Intel host. LLVM still hoists each
    per-channel constant's sign extension out of the enclosing loops and then widens the
    multiply to int64; ``high_half.py`` rewrites it so that no longer matters.)"""
    loops = sch.get_loops(block)[outer:-1]
    vectors = 1
    for loop in loops:
        vectors *= int(sch.get(loop).extent)
    if vectors <= MAX_UNROLLED_VECTORS:
        for loop in loops:
            sch.unroll(loop)


def default_cpu_schedule(mod: tvm.IRModule) -> tvm.IRModule:
    """Every unscheduled PrimFunc of ``mod`` with the default schedule (the rest unchanged)."""
    out = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and not is_scheduled(func):
            func = schedule_func(func)
        out[gv] = func
    return tvm.IRModule(out, attrs=mod.attrs)


def schedule_func(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    sch = Schedule(func)
    for block in _top_blocks(sch)[:-1]:  # the last block writes the output
        try:
            sch.compute_inline(block)
        except ScheduleError:  # a reduction or a non-injective producer stays
            pass
    for block in _top_blocks(sch):
        _parallel_vectorize(sch, block)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _top_blocks(sch: Schedule):
    root = sch.get_sblock("root") if _has_root(sch) else None
    return sch.get_child_blocks(root) if root is not None else []


def _has_root(sch: Schedule) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except (ScheduleError, ValueError):
        return False


def _parallel_vectorize(sch: Schedule, block) -> None:
    loops = sch.get_loops(block)
    iter_vars = sch.get(block).iter_vars
    if not loops or len(loops) != len(iter_vars):
        return  # not the plain one-loop-per-axis nest TE creates: leave it
    extents = [sch.get(loop).extent for loop in loops]
    if not all(isinstance(e, tvm.tirx.IntImm) for e in extents):
        return
    extents = [int(e) for e in extents]
    spatial = 0
    while spatial < len(iter_vars) and int(iter_vars[spatial].iter_type) == DATA_PAR:
        spatial += 1
    vector = None
    if spatial == len(loops) and extents[-1] > 1:  # no reduction: vectorize the innermost
        inner = loops[-1]
        if extents[-1] > MAX_VECTOR and extents[-1] % VECTOR_LANES == 0:
            _, inner = sch.split(inner, [None, VECTOR_LANES])
        vector = inner if extents[-1] <= MAX_VECTOR or extents[-1] % VECTOR_LANES == 0 else None
        spatial -= 1  # the innermost loop is not among the parallel ones
    # parallel: the fewest leading spatial loops with enough iterations (at most all but inner)
    count, work = 0, 1
    while count < spatial and work < MIN_PARALLEL:
        work *= extents[count]
        count += 1
    if count and work >= MIN_PARALLEL:
        fused = sch.fuse(*loops[:count]) if count > 1 else loops[0]
        sch.parallel(fused)
    if vector is not None:
        sch.vectorize(vector)
