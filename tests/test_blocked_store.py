"""The blocked store's +128 folded into a chain's last int32 step (backend/cpu/blocked_store.py):
on every code of the step's domain the folded step gives the stored byte of the original's
code, and it refuses constants that would leave int32."""
import numpy as np
from hypothesis import given, settings, strategies as st

from tvm_quant_ext.backend.cpu.blocked_store import fold_store_shift
from tvm_quant_ext.backend.cpu.epilogue import EPILOGUE_OPS, Epilogue, Side, Step
from tvm_quant_ext.backend.cpu.int32_runs import INT32_AFFINE, INT32_PAIR_AFFINE

CODE = (-128, 127)
CHANNELS = 4


def _run(step, x, y=None):
    operands = [y] if y is not None else []
    operands += list(step.operands)
    return np.asarray(EPILOGUE_OPS[step.op].numpy(x, operands, step)).astype(step.dtype)


def _stored(code):
    return (code.astype(np.int32) + 128).astype(np.uint8)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-2**15, 2**15), min_size=CHANNELS, max_size=CHANNELS),
       st.lists(st.one_of(st.integers(-2**24, 2**24), st.integers(-2**31, 2**31 - 1)),
                min_size=CHANNELS, max_size=CHANNELS),
       st.integers(0, 24), st.integers(-128, 0), st.integers(0, 127))
def test_a_folded_affine_step_stores_the_same_bytes(a, b, s, lo, hi):
    shape = (1, CHANNELS, 1, 1)
    step = Step(INT32_AFFINE, (np.array(a, np.int32).reshape(shape),
                               np.array(b, np.int32).reshape(shape), np.array([s], np.int32)),
                "int8", (lo, hi), domain=(CODE,))
    folded = fold_store_shift(Epilogue([step]))
    x = np.arange(CODE[0], CODE[1] + 1).reshape(-1, 1, 1, 1)
    sums = x.astype(np.int64) * np.array(a).reshape(shape) + np.array(b).reshape(shape) + \
        (128 << s)
    fits = bool(np.all((sums >= -2**31) & (sums < 2**31)))
    assert (folded is not None) == fits
    if folded is not None:
        (last,) = folded.steps
        assert last.dtype == "uint8" and last.attrs == (lo + 128, hi + 128)
        np.testing.assert_array_equal(_run(last, x), _stored(_run(step, x)))


@settings(max_examples=200, deadline=None)
@given(st.integers(-2**14, 2**14), st.integers(-2**14, 2**14),
       st.one_of(st.integers(-2**22, 2**22), st.integers(-2**31, 2**31 - 1)),
       st.integers(0, 22), st.integers(-127, 0))
def test_a_folded_pair_step_stores_the_same_bytes(a, c, b, s, lo):
    side = Side(source=None, dtype="int8", chain=Epilogue([]))
    step = Step(INT32_PAIR_AFFINE, tuple(np.asarray(v, np.int32) for v in (a, c, b, s)), "int8",
                (lo, 127), side=side, domain=(CODE, CODE))
    folded = fold_store_shift(Epilogue([step]))
    x = np.arange(CODE[0], CODE[1] + 1, dtype=np.int64)[:, None]
    y = np.arange(CODE[0], CODE[1] + 1, dtype=np.int64)[None, :]
    if folded is None:  # only where some sum with the folded constant leaves int32
        total = x * a + y * c + b + (128 << s)
        assert total.min() < -2**31 or total.max() >= 2**31
        return
    (last,) = folded.steps
    np.testing.assert_array_equal(_run(last, x.astype(np.int8), y.astype(np.int8)),
                                  _stored(_run(step, x.astype(np.int8), y.astype(np.int8))))


def test_chains_that_do_not_end_in_an_int32_step_are_left_alone():
    clip = Step("relax.clip", (), "int32", (-127, 127))
    cast = Step("relax.astype", (), "int8")
    assert fold_store_shift(Epilogue([clip, cast])) is None
    assert fold_store_shift(Epilogue([])) is None
    no_domain = Step(INT32_AFFINE, (np.array([3], np.int32), np.array([1], np.int32),
                                    np.array([2], np.int32)), "int8", (-127, 127))
    assert fold_store_shift(Epilogue([no_domain])) is None
    uint8_codes = Step(INT32_AFFINE, no_domain.operands, "uint8", (0, 255), domain=(CODE,))
    assert fold_store_shift(Epilogue([uint8_codes])) is None
