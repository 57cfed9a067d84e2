"""The vpdpbusd depthwise kernel (backend/cpu/depthwise_vnni.py): its tap groups and packed
weight, the kernel against numpy in every layout it serves, and a model's depthwise conv on it,
bit-identical to the unfused integer graph."""
import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st

import tvm_quant_ext
from graphs import conv_dw_conv
from kernel_checks import (VNNI_TARGET, call_tir_names, integer_quantized, needs_vnni,
                           run_kernel, shift_requantize, to_blocked)
from tvm_quant_ext.backend.build import lower
from tvm_quant_ext.backend.cpu import depthwise_vnni
from tvm_quant_ext.backend.cpu.depthwise import depthwise_shift_correction


def test_tap_groups_cover_each_row_once_without_reading_past_it():
    assert depthwise_vnni.tap_groups(3) == (0,)
    assert depthwise_vnni.tap_groups(4) == (0,)
    assert depthwise_vnni.tap_groups(5) == (0, 1)    # the last group overlaps the first
    assert depthwise_vnni.tap_groups(7) == (0, 3)
    assert depthwise_vnni.tap_groups(9) == (0, 4, 5)
    assert depthwise_vnni.border_needed((1, 1, 1, 1), (3, 3), (1, 1)) == (1, 1, 1, 2)
    assert depthwise_vnni.border_needed((2, 2, 2, 2), (5, 5), (1, 1)) == (2, 2, 2, 2)
    assert depthwise_vnni.border_needed((2, 2, 2, 2), (3, 3), (2, 2)) == (2, 2, 2, 2)


@settings(max_examples=40, deadline=None)
@given(kh=st.integers(1, 4), kw=st.integers(1, 11), channels=st.integers(1, 40),
       seed=st.integers(0, 2 ** 16))
def test_packed_weight_holds_every_tap_once(kh, kw, channels, seed):
    # summing the packed weights back onto the row columns they multiply gives the weight
    weight = np.random.default_rng(seed).integers(-128, 128, (channels, 1, kh, kw)).astype("int8")
    packed = depthwise_vnni.pack_weight(weight).astype(np.int64)  # (C/16, KH, groups, 16, 4)
    rebuilt = np.zeros((packed.shape[0] * 16, kh, max(kw, 4)), np.int64)
    for g, start in enumerate(depthwise_vnni.tap_groups(kw)):
        block = packed[:, :, g].transpose(0, 2, 1, 3).reshape(-1, kh, 4)
        rebuilt[:, :, start:start + 4] += block
    np.testing.assert_array_equal(rebuilt[:channels, :, :kw], weight[:, 0])
    assert not rebuilt[:, :, kw:].any() and not rebuilt[channels:].any()


def _reference(x, w, stride, padding):
    n, c, h, width = x.shape
    kh, kw = w.shape[2:]
    top, left, bottom, right = padding
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh, ow = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    out = np.zeros((n, c, oh, ow), np.int64)
    for ry in range(kh):
        for rx in range(kw):
            out += (xp[:, :, ry:ry + stride * (oh - 1) + 1:stride, rx:rx + stride * (ow - 1) + 1:stride]
                    * w[None, :, 0, ry, rx, None, None])
    return out


@needs_vnni
@pytest.mark.parametrize("data_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("input_packed,output_packed", [
    (False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("case", [
    # (channels, size, kernel (kh, kw), stride, padding t/l/b/r, extra input border t/l/b/r)
    (32, 9, (3, 3), 1, (1, 1, 1, 1), (0, 0, 0, 0)),   # one group per row, one column past it
    (20, 11, (5, 5), 2, (1, 1, 2, 2), (1, 0, 0, 2)),  # overlapping groups; Lite0's 5x5 stride 2
    (16, 7, (3, 3), 2, (0, 0, 1, 1), (0, 0, 0, 0)),
    (48, 10, (7, 7), 1, (3, 3, 3, 3), (0, 2, 1, 0)),
    (16, 6, (1, 1), 1, (0, 0, 0, 0), (0, 0, 0, 0)),   # reads three columns past the row
    (16, 8, (3, 5), 1, (1, 2, 1, 2), (0, 0, 0, 0)),
])
def test_kernel_matches_numpy(data_dtype, input_packed, output_packed, case):
    c, size, (kh, kw), stride, padding, extra = case
    if not output_packed and c % 16:
        pytest.skip("NCHW output only for whole channel blocks (layers.py sends the rest "
                    "to depthwise.py)")
    rng = np.random.default_rng(7)
    lo, hi = (-128, 128) if data_dtype == "int8" else (0, 256)
    x = rng.integers(lo, hi, (2, c, size, size)).astype(data_dtype)
    w = rng.integers(-128, 128, (c, 1, kh, kw)).astype("int8")
    bias = rng.integers(-3000, 3000, (1, c, 1, 1)).astype("int32")
    epilogue = shift_requantize(bias)
    border = tuple(a + b for a, b in zip(
        depthwise_vnni.border_needed(padding, (kh, kw), (1, 1)), extra))
    func = depthwise_vnni.depthwise_kernel(
        x.shape, w.shape, data_dtype, (stride, stride), padding, epilogue=epilogue,
        input_packed=input_packed, input_border=border, output_packed=output_packed)
    data = to_blocked(x, border) if input_packed else x
    got = run_kernel(func, data, depthwise_vnni.pack_weight(w),
                     depthwise_shift_correction(w, data_dtype), bias, target=VNNI_TARGET)
    ref = np.clip((_reference(x, w, stride, padding) + bias) >> 7, -128, 127).astype("int8")
    np.testing.assert_array_equal(got, to_blocked(ref) if output_packed else ref)
    assert len(np.unique(ref)) > 10  # the epilogue neither saturates nor zeroes everything


def test_too_narrow_a_border_is_refused():
    with pytest.raises(ValueError, match="too narrow"):
        depthwise_vnni.depthwise_kernel((1, 16, 8, 8), (16, 1, 3, 3), "uint8", (1, 1),
                                        (1, 1, 1, 1), input_packed=True,
                                        input_border=(1, 1, 1, 1))


def test_model_depthwise_runs_on_it_and_its_input_has_the_wider_border():
    # the expand conv writes the dw 3x3's padding plus the one column its row group reads past
    qmod = integer_quantized(conv_dw_conv(channels=32, size=10), (1, 3, 10, 10))
    lowered = lower(qmod, tvm.target.Target(VNNI_TARGET))
    names = call_tir_names(lowered)
    assert any(name.startswith("depthwise_conv2d_int8_vnni") for name in names), names
    shapes = {gv.name_hint: [int(d) for d in func.params[-1].shape]
              for gv, func in lowered.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}
    expand = next(name for name in names if name.startswith("conv2d_int8_vnni_packed"))
    assert shapes[expand] == [1, 2, 12, 13, 16]  # 10 + 1 + 1 rows, 10 + 1 + 2 columns


@needs_vnni
def test_model_with_it_is_bit_identical_to_unfused():
    qmod = integer_quantized(conv_dw_conv(channels=32, size=10), (1, 3, 10, 10))
    x = np.random.default_rng(4).standard_normal((3, 1, 3, 10, 10)).astype("float32")
    fused = tvm_quant_ext.build(qmod, VNNI_TARGET)
    unfused = tvm_quant_ext.build(qmod, VNNI_TARGET, fuse=False)
    for image in x:
        np.testing.assert_array_equal(fused(image), unfused(image))
