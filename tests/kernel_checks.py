"""What the fused-kernel tests share: the blocked layout written out plainly in numpy, one kernel
run on its own, a small graph quantized for the integer realize, and builds checked against
the unfused graph."""
import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.target import codegen

import tvm_quant_ext
from tvm_quant_ext.backend.target import host_cpu, vnni_cpu

# the host's own CPU where it has VNNI: znver4 code runs only on AMD's (SSE4a's insertq)
VNNI_TARGET = {"kind": "llvm", "mcpu": vnni_cpu()}
HOST = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})
needs_vnni = pytest.mark.skipif(not codegen.target_has_features("avx512vnni", HOST),
                                reason="host CPU has no AVX-512 VNNI")
# AVX2 without AVX-512: the packed kernels on vpmaddwd (haswell code runs on any AVX2 CPU)
AVX2_TARGET = {"kind": "llvm", "mcpu": "haswell"}
needs_avx2 = pytest.mark.skipif(not codegen.target_has_features("avx2", HOST),
                                reason="host CPU has no AVX2")
# the packed conv / dense kernels on each of their instruction sets, where this host runs it
PACKED_TARGETS = [pytest.param(VNNI_TARGET, id="vnni", marks=needs_vnni),
                  pytest.param(AVX2_TARGET, id="avx2", marks=needs_avx2)]


def packed_isa(target) -> str:
    """The instruction set the packed kernels built for ``target`` run on (``vnni.dot_isa``)."""
    from tvm_quant_ext.backend.cpu import vnni
    return vnni.dot_isa(tvm.target.Target(target))


def packed_kernel_tag(target) -> str:
    """What the packed conv kernels built for ``target`` are named after: "vnni" or "avx2"."""
    from tvm_quant_ext.backend.cpu import vnni
    return vnni.KERNEL_TAG[packed_isa(target)]


def kernel_calls(mod):
    """The ``call_tir`` calls of ``mod``'s ``main``, in order."""
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            calls.append(expr)
    relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def call_tir_names(mod):
    """The names of the kernels ``mod``'s ``main`` calls, in order."""
    return [call.args[0].name_hint for call in kernel_calls(mod)]


def to_blocked(codes: np.ndarray, padding=(0, 0, 0, 0)) -> np.ndarray:
    """NCHW int8/uint8 codes -> the blocked uint8 layout (signed codes + 128; the border of
    ``padding`` (top, left, bottom, right) and the padding channels the shifted zero), written
    out plainly in numpy."""
    n, c, h, w = codes.shape
    top, left, bottom, right = padding
    shift = 128 if codes.dtype == np.int8 else 0
    blocks = -(-c // 16)
    out = np.full((n, blocks * 16, h + top + bottom, w + left + right), shift, np.int64)
    out[:, :c, top:top + h, left:left + w] = codes.astype(np.int64) + shift
    return out.reshape(n, blocks, 16, *out.shape[2:]).transpose(0, 1, 3, 4, 2).astype("uint8")


def shift_requantize(bias):
    """The epilogue the kernel tests run: + bias, >> 7, clip to int8, cast: (x + bias) >> 7."""
    from tvm_quant_ext.backend.cpu.epilogue import Epilogue, Step

    return Epilogue([Step("relax.add", (bias,), "int32"),
                     Step("relax.right_shift", (np.array(7, "int32"),), "int32"),
                     Step("relax.clip", (), "int32", (-128, 127)),
                     Step("relax.astype", (), "int8")])


def run_kernel(func, *arrays, target=None):
    """``func`` compiled alone (for ``target``, default this host's CPU: kernels on no
    particular instruction set run on any) and run on ``arrays``."""
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      tvm.target.Target(target) if target else HOST)
    out = func.params[-1]
    result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)))
    lib.mod["main"](*[tvm.runtime.tensor(a) for a in arrays], result)
    return result.numpy()


def integer_quantized(graph, shape, symmetric=True, seed=0):
    """``graph`` (mod, params) through the integer realize, calibrated on 4 random batches."""
    mod, params = graph
    rng = np.random.default_rng(seed)
    calib = [rng.standard_normal(shape).astype("float32") for _ in range(4)]
    return tvm_quant_ext.quantize(mod, params, dataset=calib, config=tvm_quant_ext.QConfig(
        mode="integer", activation_symmetric=symmetric))


def assert_same_as_unfused(qmod, builds, shape, seed=2, images=3, target=None):
    """Each of ``builds`` (compiled models) gives the unfused build's logits (for ``target``,
    default the VNNI one), bit for bit, on random inputs twice the calibration's spread; and
    those logits are not all one value."""
    unfused = tvm_quant_ext.build(qmod, target or VNNI_TARGET, fuse=False)
    rng = np.random.default_rng(seed)
    for _ in range(images):
        image = rng.standard_normal(shape).astype("float32") * 2
        expected = unfused(image)
        for model in builds:
            np.testing.assert_array_equal(model(image), expected)
    assert len(np.unique(expected)) > 1
