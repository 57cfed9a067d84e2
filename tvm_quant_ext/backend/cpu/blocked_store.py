"""The blocked store's +128 folded into the int32 step that ends a chain.

A kernel writing the blocked layout stores an int8 code as ``uint8(code + 128)``
(``packed.py``): after the chain's last clip to the code's range, a pack to bytes and an OR of
the sign bit. When the chain ends in an int32 step of ``int32_runs.py``,
``clip((x * a [+ y * c] + b) >> s, lo, hi)`` on codes, the shift can go into its constant:
``(v + 128 * 2^s) >> s`` is exactly ``(v >> s) + 128`` (an arithmetic shift floors), so

    clip((x * a [+ y * c] + b + 128 * 2^s) >> s, lo + 128, hi + 128)

is the stored byte itself, and with ``hi = 127`` the clip's top is 255, which the unsigned
saturating pack (``vpmovusdb``) does on its own. It holds wherever the sum with the new
constant still fits int32; ``fold_store_shift`` checks that on the codes the step was fitted on
(its ``domain``: the ends suffice, the sum is linear in each code) and otherwise leaves the
chain as it was. ``layers.py`` applies it to the VNNI / AVX2 conv kernels' blocked outputs.
Measured on one thread, all kernels each alone, with and without it in alternating runs:
ResNet-50 v2 b1 8.97 / 9.22 -> 8.59 / 8.99 ms (its block ends, whose chains end in the next
BatchNorm on a code), b8 73.9 -> 73.5; EfficientNet-Lite0 within the noise (its residual
adds' ends fold, 9 kernels, but they are few and small).
"""
from __future__ import annotations

from dataclasses import replace
from itertools import product
from typing import Optional

import numpy as np

from .epilogue import Epilogue
from .int32_runs import INT32_AFFINE, INT32_PAIR_AFFINE
from .int32_steps import INT32_RANGE
from .packed import code_shift

SHIFT = code_shift("int8")  # what the blocked layout adds to an int8 code


def _within_int32(*values) -> bool:
    return all(INT32_RANGE[0] <= int(np.min(v)) and int(np.max(v)) <= INT32_RANGE[1]
               for v in values)


def _flat(operand) -> np.ndarray:
    return np.asarray(operand, np.int64).reshape(-1)


def _folded_constant(step, b, s) -> Optional[np.ndarray]:
    """``b + 128 * 2^s`` per channel when every partial sum of the step stays in int32 on its
    domain (None otherwise)."""
    folded = b + (np.int64(SHIFT) << s)
    if step.op == INT32_AFFINE:
        (x_lo, x_hi), = step.domain
        a = _flat(step.operands[0])
        products = [x * a for x in (x_lo, x_hi)]
        sums = [p + folded for p in products]
        return folded if _within_int32(folded, *products, *sums) else None
    (x_lo, x_hi), (y_lo, y_hi) = step.domain
    a, c = _flat(step.operands[0]), _flat(step.operands[1])
    partial, total = [], []
    for x, y in product((x_lo, x_hi), (y_lo, y_hi)):  # the kernel's order: x*a + y*c, then + b
        partial += [x * a, y * c, x * a + y * c]
        total.append(x * a + y * c + folded)
    return folded if _within_int32(folded, *partial, *total) else None


def fold_store_shift(epilogue: Epilogue) -> Optional[Epilogue]:
    """``epilogue`` ending in the stored byte (``uint8``) of its int8 code instead of the code,
    for a kernel that writes it blocked with ``packed.blocked_output(..., result_stored=True)``;
    None where its last step is not an int32 step of ``int32_runs.py`` with room for the shift."""
    if not epilogue.steps:
        return None
    last = epilogue.steps[-1]
    if last.op not in (INT32_AFFINE, INT32_PAIR_AFFINE) or last.dtype != "int8" or \
            not last.domain:
        return None
    b_index = 1 if last.op == INT32_AFFINE else 2
    b, s = last.operands[b_index], last.operands[b_index + 1]
    if np.asarray(s).size > np.asarray(b).size:
        return None  # a per-channel shift would make a scalar constant per-channel: a new input
    folded = _folded_constant(last, _flat(b), _flat(s))
    if folded is None:
        return None
    lo, hi = last.attrs
    operands = list(last.operands)
    operands[b_index] = folded.astype(np.int32).reshape(np.asarray(b).shape)
    stored = replace(last, operands=tuple(operands), dtype="uint8",
                     attrs=(lo + SHIFT, hi + SHIFT))
    return Epilogue(epilogue.steps[:-1] + [stored])
