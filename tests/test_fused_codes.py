"""Kernels on codes: the max pool kernel (blocked or NCHW, with its epilogue) and the epilogue
runs rewritten in int32, each bit-identical to the graph it replaces."""
import numpy as np
import pytest
import tvm

import tvm_quant_ext
from tvm_quant_ext.backend.build import lower
from tvm_quant_ext.backend.cpu.epilogue import Epilogue, Step
from tvm_quant_ext.backend.cpu.fuse import fuse_int8_layers
from tvm_quant_ext.backend.cpu.pointwise import depthwise_1x1_as_multiply
from tvm_quant_ext.backend.cpu.pool import max_pool_kernel
from tvm_quant_ext.graph import is_const

from kernel_checks import (PACKED_TARGETS, VNNI_TARGET, assert_same_as_unfused, call_tir_names,
                           integer_quantized, kernel_calls, needs_vnni, packed_isa, packed_kernel_tag,
                           run_kernel, to_blocked)
from graphs import tiny_resnet


def _max_pool_reference(x, pool, stride, padding):
    """NCHW max pool in numpy, padded with the type's smallest value."""
    n, c, h, w = x.shape
    pt, pl, pb, pr = padding
    low = np.iinfo(x.dtype).min
    padded = np.full((n, c, h + pt + pb, w + pl + pr), low, x.dtype)
    padded[:, :, pt:pt + h, pl:pl + w] = x
    oh = (h + pt + pb - pool) // stride + 1
    ow = (w + pl + pr - pool) // stride + 1
    out = np.full((n, c, oh, ow), low, x.dtype)
    for ry in range(pool):
        for rx in range(pool):
            out = np.maximum(out, padded[:, :, ry:ry + stride * oh:stride,
                                         rx:rx + stride * ow:stride])
    return out


def _requantize_epilogue(channels):
    # a per-channel int32 multiply-add on the pooled code, then shift and clip: the shape of
    # the BatchNorm a ResNet v2 applies after its stem's pool
    rng = np.random.default_rng(3)
    w = rng.integers(1, 40, (1, channels, 1, 1)).astype("int32")
    b = rng.integers(-500, 500, (1, channels, 1, 1)).astype("int32")
    steps = [Step("relax.astype", (), "int32"), Step("relax.multiply", (w,), "int32"),
             Step("relax.add", (b,), "int32"),
             Step("relax.right_shift", (np.array(4, "int32"),), "int32"),
             Step("relax.clip", (), "int32", (0, 127)), Step("relax.astype", (), "int8")]

    def reference(codes):
        value = (codes.astype(np.int32) * w + b) >> 4
        return np.clip(value, 0, 127).astype("int8")
    return Epilogue(steps), [w, b], reference


@pytest.mark.parametrize("case", [
    # (channels, size, pool, stride, padding, dtype, input packed, output packed, border)
    (64, 14, 3, 2, (1, 1, 1, 1), "int8", True, True, (0, 0, 0, 0)),  # ResNet's stem pool
    (20, 9, 3, 2, (1, 1, 1, 1), "uint8", True, False, (1, 1, 1, 1)),  # a wider border skipped
    (8, 8, 2, 2, (0, 0, 0, 0), "int8", False, True, (1, 1, 1, 1)),   # writes its reader's border
    (5, 7, 3, 1, (1, 0, 2, 1), "uint8", False, False, (0, 0, 0, 0)),  # NCHW, asymmetric padding
])
@pytest.mark.parametrize("with_epilogue", [False, True])
def test_max_pool_kernel_matches_numpy(case, with_epilogue):
    c, size, pool, stride, padding, dtype, input_packed, output_packed, border = case
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, c, size, size)).astype(dtype)
    x[0, :, :2, :2] = info.min  # windows whose real inputs are all the smallest code
    expected = _max_pool_reference(x, pool, stride, padding)
    epilogue, consts = None, []
    if with_epilogue:
        epilogue, consts, reference = _requantize_epilogue(c)
        expected = reference(expected)
    out_padding = border if output_packed else (0, 0, 0, 0)
    in_border = border if input_packed else (0, 0, 0, 0)
    func = max_pool_kernel(x.shape, expected.shape, dtype, (pool, pool), (stride, stride),
                           padding, epilogue=epilogue, input_packed=input_packed,
                           input_border=in_border, output_packed=output_packed,
                           output_padding=out_padding)
    data = to_blocked(x, in_border) if input_packed else x
    got = run_kernel(func, data, *consts)
    np.testing.assert_array_equal(got, to_blocked(expected, out_padding) if output_packed
                                  else expected)


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_stem_max_pool_runs_blocked_between_the_convs(target, symmetric):
    # tiny_resnet's stem: conv + BN + ReLU, a max pool, the block's convs. The pool reads the
    # stem's blocked output and writes the block's (no NCHW tensor between them), and the
    # logits are bit-identical to the unfused graph and to TVM's own pool
    qmod = integer_quantized(tiny_resnet(), (1, 3, 16, 16), symmetric)
    lowered = lower(qmod, tvm.target.Target(target))
    names = call_tir_names(lowered)
    pools = [n for n in names if n.startswith("max_pool2d_int8")]
    assert pools == ["max_pool2d_int8_packed"], names
    stem = names.index(pools[0]) - 1
    tag = packed_kernel_tag(target)
    assert names[stem].startswith(f"conv2d_int8_{tag}_packed"), names
    assert names[stem + 2].startswith(f"conv2d_int8_{tag}"), names
    isa = packed_isa(target)
    assert_same_as_unfused(qmod, [
        tvm_quant_ext.build(qmod, target),
        tvm_quant_ext.build(fuse_int8_layers(qmod, pools=False, isa=isa), target)],
        (1, 3, 16, 16), target=target)


def _int64_kernel_constants(mod) -> int:
    """How many int64 constant tensors the fused kernels of ``main`` take."""
    return sum(is_const(a) and str(a.ty.dtype) == "int64"
               for call in kernel_calls(mod) for a in call.args[1].fields)


@needs_vnni
def test_batchnorm_after_a_residual_add_runs_in_int32_bit_exactly():
    # ResNet v2 (the trained Fashion-MNIST zoo model): each block's last conv requantizes the
    # residual sum to a code and applies the next block's BatchNorm and ReLU to it. That run
    # becomes one int32 step (fewer int64 constants in the kernels), and the logits stay
    # identical to the unfused graph and to the kernels without the rewrite
    from tvm_quant_ext import zoo

    model = zoo.load("fashion_resnet_v2", batch_size=1)
    qmod = tvm_quant_ext.quantize(model.mod, model.params, dataset=[
        model.calib[i:i + 1] for i in range(4)], config=tvm_quant_ext.QConfig(mode="integer"))
    target = tvm.target.Target(VNNI_TARGET)
    bn_as_multiply = depthwise_1x1_as_multiply(qmod)  # as lower does, so the BN joins the add
    with_runs = _int64_kernel_constants(fuse_int8_layers(bn_as_multiply, int32_steps=False))
    no_runs = fuse_int8_layers(bn_as_multiply, int32_runs=False, int32_steps=False)
    assert with_runs < _int64_kernel_constants(no_runs), with_runs
    # and with the wide steps in int32 too (int32_steps.py) no kernel takes an int64 constant
    assert _int64_kernel_constants(fuse_int8_layers(bn_as_multiply)) == 0
    fused = tvm_quant_ext.build(qmod, target)
    no_runs = tvm_quant_ext.build(no_runs, target)
    unfused = tvm_quant_ext.build(qmod, target, fuse=False)
    for i in range(4, 12):
        image = model.calib[i:i + 1]
        expected = unfused(image)
        np.testing.assert_array_equal(fused(image), expected)
        np.testing.assert_array_equal(no_runs(image), expected)