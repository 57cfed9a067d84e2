"""Small local buffers on the stack (backend/cpu/stack_buffers.py): a 1 KB register block
leaves TVM's workspace for an alloca, a large one stays in it, and the results are the same."""
import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from tvm_quant_ext.backend.cpu import stack_buffers
from tvm_quant_ext.backend.cpu.tir_pipeline import PIPELINE

from kernel_checks import HOST


def _kernel(vectors: int):
    """out = 3 * x + 1 through a local buffer of ``vectors`` int32x16 vectors a task."""
    total = 4 * vectors

    @T.prim_func(s_tir=True)
    def kernel(x: T.Buffer((total, 16), "int32"), out: T.Buffer((total, 16), "int32")):
        for task in T.parallel(4):
            block = T.sblock_alloc_buffer((vectors, 16), "int32")
            for v in T.serial(vectors):
                for lane in T.vectorized(16):
                    block[v, lane] = x[task * vectors + v, lane] * 3
            for v in T.serial(vectors):
                for lane in T.vectorized(16):
                    out[task * vectors + v, lane] = block[v, lane] + 1

    return tvm.IRModule({"main": kernel.with_attr("global_symbol", "main")})


@pytest.mark.parametrize("vectors, on_stack", [(16, True), (64, True), (128, False)])
def test_small_buffers_go_on_the_stack_and_compute_the_same(vectors, on_stack):
    assert (16 * 4 * vectors <= stack_buffers.MAX_STACK_BYTES) == on_stack
    mod = _kernel(vectors)
    ours = tvm.compile(mod, HOST, tir_pipeline=PIPELINE)
    stock = tvm.compile(mod, HOST)
    ll_ours, ll_stock = (lib.mod.inspect_source("ll") for lib in (ours, stock))
    assert "AllocWorkspace" in ll_stock  # TVM's own lowering: 1 KB and up in the workspace
    assert ("AllocWorkspace" in ll_ours) != on_stack
    x = np.arange(4 * vectors * 16, dtype=np.int32).reshape(4 * vectors, 16) - 1000
    for lib in (ours, stock):
        out = tvm.runtime.tensor(np.zeros_like(x))
        lib["main"](tvm.runtime.tensor(x), out)
        np.testing.assert_array_equal(out.numpy(), 3 * x + 1)


def test_a_buffer_of_unknown_size_has_no_byte_count():
    n = tvm.tirx.Var("n", "int32")
    assert stack_buffers.buffer_bytes(tvm.tirx.decl_buffer((n, 16), "int32")) == 0
    assert stack_buffers.buffer_bytes(tvm.tirx.decl_buffer((4, 16), "int32x16")) == 4096
