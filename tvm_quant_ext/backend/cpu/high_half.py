"""The high half of int32 x int32 products, vectorized as x86 computes it best.

The epilogues' Q31 multiplies on int32 values (``int32_steps.py``) are
``int32((int64(x) * int64(m)) >> 32)``. LLVM turns that into two ``vpmuldq`` and one
``vpermt2d`` a vector (its ``MULHS`` lowering) only when it sees both sign extensions in the
same basic block. In a kernel the multiplier is a per-channel constant that does not change
along the output columns, so LLVM hoists its extension out of the loop, and the product is
then computed on two widened vectors of int64 and narrowed back: ten micro-ops a vector of
16, five of them lane crossings, in every conv's epilogue.

``rewrite_high_half`` rewrites that pattern, after vectorization, into the form LLVM lowers
well wherever the extensions are: both vectors read as int64 pairs, the even lanes' product
``((a << 32) >> 32) * ((b << 32) >> 32)``, the odd lanes' ``(a >> 32) * (b >> 32)``, each one
``vpmuldq``, and the two high halves put back in place with masks. The result is the same
integer (the full 64-bit product of two int32 values, then its upper 32 bits), so kernels stay
bit-identical; ``tests/test_high_half.py`` checks it on extreme values.

``tir_pipeline.py`` runs it after TVM's own lowering passes.
"""
from __future__ import annotations

from typing import Optional

import tvm_ffi
from tvm import tirx

from .int32_steps import INT32_RANGE


def _vector_type(expr) -> Optional[tuple]:
    """(element type, lanes) of a TIR expression's type, or None for a scalar."""
    element, _, lanes = str(expr.ty).rpartition("x")
    return (element, int(lanes)) if element and lanes.isdigit() else None


def _int32_operand(expr, lanes: int):
    """The int32 vector an int64 operand of the product was widened from, or None."""
    if isinstance(expr, tirx.Cast) and _vector_type(expr.value) == ("int32", lanes):
        return expr.value
    if isinstance(expr, tirx.Broadcast):
        value = expr.value
        if isinstance(value, tirx.IntImm) and INT32_RANGE[0] <= value.value <= INT32_RANGE[1]:
            return tirx.Broadcast(tirx.const(value.value, "int32"), lanes)
        if isinstance(value, tirx.Cast) and str(value.value.ty) == "int32":
            return tirx.Broadcast(value.value, lanes)
    return None


def high_half_product(a, b):
    """``int32((int64(a) * int64(b)) >> 32)`` for int32 vectors of an even number of lanes,
    as two even/odd 32 x 32 -> 64 products (``vpmuldq`` each on x86)."""
    lanes = _vector_type(a)[1]
    pairs = f"int64x{lanes // 2}"
    a64, b64 = tirx.reinterpret(pairs, a), tirx.reinterpret(pairs, b)

    def splat(value):
        return tirx.Broadcast(tirx.const(value, "int64"), lanes // 2)

    even = ((a64 << splat(32)) >> splat(32)) * ((b64 << splat(32)) >> splat(32))
    odd = (a64 >> splat(32)) * (b64 >> splat(32))
    # even lanes: the even product's high half moved down; odd lanes: the odd product's high
    # half, already in the upper 32 bits of its pair
    merged = ((even >> splat(32)) & splat(0xFFFFFFFF)) | (odd & splat(-(2 ** 32)))
    return tirx.reinterpret(f"int32x{lanes}", merged)


def as_high_half_product(expr):
    """The rewritten form of ``expr`` when it is the high half of an int32 product."""
    vector = _vector_type(expr)
    if vector is None or vector[0] != "int32" or vector[1] % 2 or vector[1] < 4:
        return None
    shift = expr.value
    if not isinstance(shift, tirx.RShift) or not isinstance(shift.a, tirx.Mul):
        return None
    amount = shift.b.value if isinstance(shift.b, tirx.Broadcast) else shift.b
    if not isinstance(amount, tirx.IntImm) or amount.value != 32:
        return None
    a = _int32_operand(shift.a.a, vector[1])
    b = _int32_operand(shift.a.b, vector[1])
    if a is None or b is None:
        return None
    return high_half_product(a, b)


def _rewrite_cast(expr, mutator):
    expr = mutator.default_mutate(expr)
    rewritten = as_high_half_product(expr)
    return expr if rewritten is None else rewritten


@tirx.transform.prim_func_pass(opt_level=0, name="tvm_quant_ext.HighHalfProduct")
def rewrite_high_half(func, _mod, _ctx):
    """Every vectorized ``int32((int64(a) * int64(b)) >> 32)`` as ``high_half_product``."""
    return func.with_body(tvm_ffi.structural_mutate(func.body, [(tirx.Cast, _rewrite_cast)]))
