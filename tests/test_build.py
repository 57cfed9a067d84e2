"""build(): the packed int8 kernels (VNNI, AVX2), MetaSchedule tuning database, CUDA
compilation."""
import os
import shutil

import numpy as np
import pytest
import tvm

import tvm_quant_ext
from tvm_quant_ext.backend.build import compile_module, lower

from int8_graphs import int8_conv_block
from kernel_checks import (AVX2_TARGET, PACKED_TARGETS, VNNI_TARGET, call_tir_names,
                           packed_kernel_tag)


def _inputs(dtype, shape, seed=1):
    lo, hi = (-128, 128) if dtype == "int8" else (0, 256)
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(dtype)


def _modules(executable, kind):
    def walk(mod):
        yield mod
        for sub in mod.imports:
            yield from walk(sub)
    return [m for m in walk(executable.mod) if m.kind == kind]


def _llvm_asm(executable) -> str:
    return "".join(m.inspect_source("asm") for m in _modules(executable, "llvm"))


def test_vnni_kernel_emits_vpdpbusd():
    # compiling for a VNNI target works on any x86 host; only running needs the feature
    mod, _ = int8_conv_block(in_ch=8, out_ch=16)
    asm = _llvm_asm(compile_module(mod, VNNI_TARGET))
    assert "vpdpbusd" in asm
    assert "vpdpbusd" not in _llvm_asm(compile_module(mod, VNNI_TARGET, vnni=False))


def test_avx2_target_gets_the_packed_kernel_on_vpmaddwd():
    # a CPU with AVX2 but no VNNI runs the same packed kernel, its 16x4 block on vpmaddwd
    mod, _ = int8_conv_block(in_ch=8, out_ch=16, classes=7)
    names = call_tir_names(lower(mod, tvm.target.Target(AVX2_TARGET)))
    assert "conv2d_int8_avx2" in names and "dense_int8_avx2" in names, names
    asm = _llvm_asm(compile_module(mod, AVX2_TARGET))
    assert "vpmaddwd" in asm and "vpdpbusd" not in asm
    names = call_tir_names(lower(mod, tvm.target.Target(AVX2_TARGET), vnni=False))
    assert not [n for n in names if "avx2" in n], names


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("data_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("shape", [
    # (batch, in_ch, out_ch, size, padding, strides): channels not multiples of 4/16, asymmetric
    # padding, stride 2, batch > 1
    (1, 8, 16, 10, (1, 1, 1, 1), (1, 1)),
    (2, 5, 20, 9, (0, 0, 1, 1), (2, 2)),
])
def test_packed_kernel_matches_reference(target, data_dtype, shape):
    batch, cin, cout, size, padding, strides = shape
    mod, reference = int8_conv_block(batch=batch, in_ch=cin, out_ch=cout, size=size,
                                     data_dtype=data_dtype, padding=padding, strides=strides,
                                     classes=7)
    x = _inputs(data_dtype, (batch, cin, size, size))
    for fuse in (True, False):  # the layer fused with its integer epilogue, and the bare kernel
        np.testing.assert_array_equal(tvm_quant_ext.build(mod, target, fuse=fuse)(x), reference(x))
    np.testing.assert_array_equal(tvm_quant_ext.build(mod, "llvm")(x), reference(x))


def test_tuning_database_is_written_then_reused(tmp_path):
    mod, reference = int8_conv_block(in_ch=4, out_ch=8, size=6)
    x = _inputs("int8", (1, 4, 6, 6))
    db = str(tmp_path / "db")
    tuned = tvm_quant_ext.build(mod, "llvm", tune_trials=1, tuning_db=db)
    np.testing.assert_array_equal(tuned(x), reference(x))
    records = os.path.join(db, "database_tuning_record.json")
    with open(records) as f:
        assert len(f.read().splitlines()) > 0
    # applying the database alone (the CI path) must not tune again: no new records
    before = os.path.getsize(records)
    reused = tvm_quant_ext.build(mod, "llvm", tuning_db=db)
    np.testing.assert_array_equal(reused(x), reference(x))
    assert os.path.getsize(records) == before


nvcc_missing = shutil.which("nvcc") is None


@pytest.mark.skipif(nvcc_missing, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_compiles_and_exports(arch, tmp_path):
    from tvm.support import nvcc

    mod, _ = int8_conv_block(in_ch=64, out_ch=64, size=8, classes=10)  # every extent > 64: WMMA trap
    target = {"kind": "cuda", "arch": arch}
    executable = compile_module(mod, target)
    cuda = _modules(executable, "cuda")
    assert cuda, "no CUDA module in the build"
    with tvm.target.Target(target):  # the kernels really compile for the arch (no GPU needed)
        cubin = nvcc.compile_cuda(cuda[0].inspect_source(""), target_format="cubin", arch=arch,
                                  compiler="nvcc")
    assert len(cubin) > 0
    path = str(tmp_path / f"model_{arch}.so")
    executable.export_library(path)
    assert os.path.getsize(path) > 0


@pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA GPU")
def test_cuda_runs_on_gpu():
    mod, reference = int8_conv_block(in_ch=64, out_ch=64, size=8, classes=10)
    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    model = tvm_quant_ext.build(mod, {"kind": "cuda", "arch": arch})
    x = _inputs("int8", (1, 64, 8, 8))
    np.testing.assert_array_equal(model(x), reference(x))


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_integer_realize_on_packed_kernels_is_bit_exact(target, symmetric):
    # what the integer realize emits (int8, or uint8 with zero points and explicit pads) runs
    # on the VNNI kernel with the same integers as the default build
    from graphs import tiny_resnet

    mod, params = tiny_resnet()
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 16, 16)).astype("float32") for _ in range(4)]
    qmod = tvm_quant_ext.quantize(mod, params, dataset=calib, config=tvm_quant_ext.QConfig(
        mode="integer", activation_symmetric=symmetric))
    asm = _llvm_asm(compile_module(qmod, target))
    assert {"vnni": "vpdpbusd", "avx2": "vpmaddwd"}[packed_kernel_tag(target)] in asm
    x = rng.standard_normal((1, 3, 16, 16)).astype("float32")
    np.testing.assert_array_equal(tvm_quant_ext.build(qmod, target)(x),
                                  tvm_quant_ext.build(qmod, "llvm")(x))
