"""The int8 build for x86 CPUs without AVX-512 VNNI (generic x86-64, haswell's AVX2) gives the
same integers as the reference builds, on inputs where any 16-bit intermediate would overflow.

``vpmaddubsw`` (the pre-VNNI u8 x s8 instruction) adds two products into a *saturating* int16:
255 * 127 + 255 * 127 = 64770 > 32767. ONNX Runtime documents the resulting wrong results on
such CPUs and answers with ``reduce_range`` (7-bit weights); this project's int8 path must
instead stay exact, with int32 accumulation whatever instructions LLVM picks for the target.
"""
import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.target import codegen

import tvm_quant_ext

from graphs import tiny_resnet
from kernel_checks import HOST, VNNI_TARGET

NO_VNNI_TARGETS = [{"kind": "llvm", "mcpu": "x86-64"}, {"kind": "llvm", "mcpu": "haswell"}]
HOST_HAS_VNNI = bool(codegen.target_has_features("avx512vnni", HOST))


def _extreme_layers(data_dtype: str, in_ch: int = 8, out_ch: int = 16, size: int = 6):
    """conv2d 3x3 and dense, int8 weights x uint8 / int8 data -> int32, the accumulators as the
    outputs (no requantize or clip that could hide a wrong sum). Weights at the extremes:
    output channels alternate all +127 and all -128, then one channel of mixed signs."""
    w = np.where((np.arange(out_ch) % 2 == 0)[:, None, None, None], 127, -128)
    w = np.broadcast_to(w, (out_ch, in_ch, 3, 3)).astype("int8").copy()
    w[-1] = np.where(np.arange(in_ch * 9).reshape(in_ch, 3, 3) % 3 == 0, -128, 127)
    fc = w.reshape(out_ch, -1)[:, :in_ch * size].copy()  # dense weight (out_ch, in_ch * size)
    data = relax.Var("data", relax.TensorType((1, in_ch, size, size), data_dtype))
    op = relax.op
    bb = relax.BlockBuilder()
    with bb.function("main", [data]):
        with bb.dataflow():
            conv = bb.emit(op.nn.conv2d(data, relax.const(w, "int8"), padding=[1, 1, 1, 1],
                                        out_dtype="int32"))
            rows = bb.emit(op.reshape(data, [in_ch, size * size]))
            rows = bb.emit(op.strided_slice(rows, axes=[1], begin=[0], end=[size]))
            dense = bb.emit(op.matmul(op.reshape(rows, [1, in_ch * size]),
                                      op.permute_dims(relax.const(fc, "int8")), out_dtype="int32"))
            out = bb.emit_output(relax.Tuple([conv, dense]))
        bb.emit_func_output(out)

    def reference(x):
        xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        acc = np.zeros((1, out_ch, size, size), np.int64)
        for ky in range(3):
            for kx in range(3):
                acc += np.einsum("nchw,oc->nohw", xp[:, :, ky:ky + size, kx:kx + size],
                                 w[:, :, ky, kx].astype(np.int64))
        flat = x.reshape(in_ch, size * size)[:, :size].reshape(1, -1).astype(np.int64)
        return acc, flat @ fc.T.astype(np.int64)

    reference.dense_weight = fc
    return bb.get(), reference


def _saturating_pair_sums(x, w):
    """x (1, K) @ w.T (K, O) the way vpmaddubsw + vpmaddwd sum: adjacent products added into a
    saturating int16, then the pairs summed in int32."""
    products = x * w  # (O, K)
    pairs = np.clip(products[:, 0::2] + products[:, 1::2], -32768, 32767)
    return pairs.sum(axis=1)[None, :]


@pytest.mark.parametrize("target", NO_VNNI_TARGETS, ids=lambda t: t["mcpu"])
@pytest.mark.parametrize("data_dtype", ["uint8", "int8"])
def test_int8_layers_do_not_saturate_int16(target, data_dtype):
    mod, reference = _extreme_layers(data_dtype)
    # uint8 255 x int8 127 pairs (64770), int8 -128 x -128 pairs (32768): both overflow int16
    x = np.full((1, 8, 6, 6), 255 if data_dtype == "uint8" else -128, data_dtype)
    x[..., ::5] = 0 if data_dtype == "uint8" else 127  # not one constant: vary the sums
    conv_ref, dense_ref = reference(x)
    # the test can fail: a vpmaddubsw-style sum (int16-saturated pairs) gives other numbers here
    fc = reference.dense_weight.astype(np.int64)
    flat = x.reshape(8, 36)[:, :6].reshape(1, -1).astype(np.int64)
    assert not np.array_equal(_saturating_pair_sums(flat, fc), dense_ref)
    for fuse in (True, False):
        conv, dense = tvm_quant_ext.build(mod, target, fuse=fuse)(x)
        np.testing.assert_array_equal(conv, conv_ref)
        np.testing.assert_array_equal(dense, dense_ref)
    if HOST_HAS_VNNI:  # and the VNNI kernel (the reference the int8 speed is measured on) agrees
        conv, dense = tvm_quant_ext.build(mod, VNNI_TARGET)(x)
        np.testing.assert_array_equal(conv, conv_ref)
        np.testing.assert_array_equal(dense, dense_ref)


@pytest.mark.parametrize("target", NO_VNNI_TARGETS, ids=lambda t: t["mcpu"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_integer_realize_without_vnni_is_bit_exact(target, symmetric):
    # the integer realize (int8, or uint8 with zero points), inputs far past the calibrated
    # range so the quantized input and activations sit at their limits (255 / 127 / -128) and
    # meet per-channel weights that reach +-127
    mod, params = tiny_resnet()
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 16, 16)).astype("float32") for _ in range(4)]
    qmod = tvm_quant_ext.quantize(mod, params, dataset=calib, config=tvm_quant_ext.QConfig(
        mode="integer", activation_symmetric=symmetric))
    x = (rng.standard_normal((1, 3, 16, 16)) * 40).astype("float32")
    got = tvm_quant_ext.build(qmod, target)(x)
    np.testing.assert_array_equal(got, tvm_quant_ext.build(qmod, "llvm")(x))
    if HOST_HAS_VNNI:
        np.testing.assert_array_equal(got, tvm_quant_ext.build(qmod, VNNI_TARGET)(x))
