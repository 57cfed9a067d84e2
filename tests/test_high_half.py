"""The high half of int32 products as even/odd products (backend/cpu/high_half.py): the rewrite
fires on the epilogues' pattern, leaves other shifts alone, and computes the same integers as
numpy on extreme values, on AVX-512 (16 lanes a register) and AVX2 (8)."""
import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from tvm import te, tirx
from tvm.s_tir import Schedule
from tvm.tirx import compilation_pipeline

from tvm_quant_ext.backend.cpu import high_half
from tvm_quant_ext.backend.cpu.tir_pipeline import PIPELINE

from kernel_checks import HOST, needs_avx2

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
ROWS, CHANNELS = 8, 16
EXTREMES = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX]
int32s = st.integers(INT32_MIN, INT32_MAX)


def _high_half(x, m, shift=32):
    return tvm.tirx.Cast("int32", (tvm.tirx.Cast("int64", x) * tvm.tirx.Cast("int64", m))
                         >> tvm.tirx.const(shift, "int64"))


def _module(multiplier=None, shift=32):
    """out[row, c] = the high half of x[row, c] * m[c] (or * the constant ``multiplier``),
    channels vectorized, rows a loop: the per-channel multiplier stays the same along it, as in
    a conv's epilogue, so LLVM hoists its extension out of the loop."""
    x = te.placeholder((ROWS, CHANNELS), "int32", name="x")
    m = te.placeholder((CHANNELS,), "int32", name="m")
    if multiplier is None:
        out = te.compute(x.shape, lambda r, c: _high_half(x[r, c], m[c], shift), name="out")
    else:
        out = te.compute(x.shape, lambda r, c: _high_half(
            x[r, c], tvm.tirx.const(multiplier, "int32"), shift), name="out")
    sch = Schedule(te.create_prim_func([x, m, out]))
    _, channel = sch.get_loops(sch.get_sblock("out"))
    sch.vectorize(channel)
    return tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")})


def _rewritten(mod, target) -> bool:
    """Whether lowering ``mod`` with the pipeline reads int32 vectors as int64 pairs."""
    lower, _, _ = compilation_pipeline.get_tir_pipeline(PIPELINE)
    target = tvm.target.Target(target)
    text = lower(tvm.tirx.transform.BindTarget(target.with_host(target))(mod)).script()
    return 'T.reinterpret("int64x' in text


def _run(lib, x, m):
    out = tvm.runtime.tensor(np.zeros(x.shape, "int32"))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(m), out)
    return out.numpy()


def _expected(x, m, shift=32):
    return ((x.astype(np.int64) * np.asarray(m, np.int64)) >> shift).astype(np.int32)


TARGETS = [pytest.param(HOST, id="host"),
           pytest.param({"kind": "llvm", "mcpu": "haswell"}, id="avx2", marks=needs_avx2)]


@pytest.fixture(scope="module", params=TARGETS)
def per_channel_lib(request):
    mod = _module()
    assert _rewritten(mod, request.param)
    return tvm.compile(mod, request.param, tir_pipeline=PIPELINE)


@settings(max_examples=60, deadline=None)
@given(st.lists(int32s, min_size=ROWS * CHANNELS, max_size=ROWS * CHANNELS),
       st.lists(int32s, min_size=CHANNELS, max_size=CHANNELS))
def test_the_rewritten_high_half_equals_the_int64_product(per_channel_lib, xs, ms):
    x = np.array(xs, np.int32).reshape(ROWS, CHANNELS)
    x[0, :len(EXTREMES)] = EXTREMES
    x[1, -len(EXTREMES):] = EXTREMES
    m = np.array(ms, np.int32)
    m[:3] = [INT32_MIN, INT32_MAX, -1]
    np.testing.assert_array_equal(_run(per_channel_lib, x, m), _expected(x, m))


@pytest.mark.parametrize("multiplier", [INT32_MIN, -1_234_567_891, 1_518_500_250, INT32_MAX])
def test_a_constant_multiplier_is_rewritten_too(multiplier):
    mod = _module(multiplier)
    assert _rewritten(mod, HOST)
    lib = tvm.compile(mod, HOST, tir_pipeline=PIPELINE)
    rng = np.random.default_rng(0)
    x = rng.integers(INT32_MIN, INT32_MAX, (ROWS, CHANNELS), dtype=np.int64).astype(np.int32)
    x[0, :len(EXTREMES)] = EXTREMES
    got = _run(lib, x, np.zeros(CHANNELS, np.int32))
    np.testing.assert_array_equal(got, _expected(x, multiplier))


def test_other_shifts_are_left_as_they_are():
    mod = _module(shift=31)
    assert not _rewritten(mod, HOST)
    lib = tvm.compile(mod, HOST, tir_pipeline=PIPELINE)
    x = np.array(EXTREMES * (ROWS * CHANNELS // len(EXTREMES) + 1),
                 np.int32)[:ROWS * CHANNELS].reshape(ROWS, CHANNELS)
    m = np.full(CHANNELS, INT32_MAX, np.int32)
    np.testing.assert_array_equal(_run(lib, x, m), _expected(x, m, 31))


def test_a_scalar_high_half_is_left_as_it_is():
    x = tirx.Var("x", "int32")
    assert high_half.as_high_half_product(_high_half(x, x)) is None
