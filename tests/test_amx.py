"""The AMX conv kernel (backend/cpu/amx.py): its packed weight and tile configuration, its code
(compiled on any machine), the kernel against numpy in the layouts it serves, and a model's
convs on it, bit-identical to the unfused integer graph (where this machine runs AMX)."""
import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st

import tvm_quant_ext
from graphs import residual_stack
from kernel_checks import (VNNI_TARGET, assert_same_as_unfused, call_tir_names,
                           integer_quantized, run_kernel, shift_requantize, to_blocked)
from tvm_quant_ext.backend.build import lower
from tvm_quant_ext.backend.cpu import amx, packed

AMX_TARGET = {**VNNI_TARGET, "mattr": ["+amx-tile", "+amx-int8"]}
needs_amx = pytest.mark.skipif(not amx.host_has_amx(), reason="this machine does not run AMX")


@settings(max_examples=30, deadline=None)
@given(o=st.integers(1, 40), c=st.integers(1, 40), kh=st.integers(1, 3), kw=st.integers(1, 4),
       seed=st.integers(0, 2 ** 16))
def test_packed_weight_is_each_kernel_row_s_b_tile(o, c, kh, kw, seed):
    weight = np.random.default_rng(seed).integers(-128, 128, (o, c, kh, kw)).astype("int8")
    got = amx.pack_weight(weight)  # (O/16, KH, C/16, KW, 4, 16, 4)
    deep = amx.deep_blocks(weight.shape)
    if deep:  # a 1x1 conv over several blocks: a 1 x deep window, tap t of virtual block q
        # holding input block q * deep + t
        virtual = np.zeros((o, -(-c // (16 * deep)) * 16, 1, deep), "int8")
        for ch in range(c):
            block, lane = divmod(ch, 16)
            virtual[:, block // deep * 16 + lane, 0, block % deep] = weight[:, ch, 0, 0]
        weight, c, kw = virtual, virtual.shape[1], deep
    # the B tile of (output block, kernel row, input block): tap-major rows of 16 x 4 bytes,
    # as an A row holds the row's taps (tap after tap, 16 channels each)
    tile = got[0, kh - 1, 0].reshape(kw * 4, 16, 4)
    channels = min(c, 16)
    for tap in range(kw):
        for ch in range(channels):
            np.testing.assert_array_equal(tile[tap * 4 + ch // 4, :min(o, 16), ch % 4],
                                          weight[:16, ch, kh - 1, tap])
    full = got.transpose(0, 5, 2, 4, 6, 1, 3).reshape(got.shape[0] * 16, -1, kh, kw)
    np.testing.assert_array_equal(full[:o, :c], weight)
    assert not full[o:].any() and not full[:, c:].any()


def test_tile_rows_divide_the_row_and_the_configuration_matches_them():
    assert [amx.tile_rows(w) for w in (56, 28, 14, 7, 112, 13, 1)] == [14, 14, 14, 7, 16, 13, 1]
    cfg = amx.tile_config(14, taps=3).view(np.uint8)
    assert cfg[0] == 1 and list(cfg[48:56]) == [14] * 6 + [12, 12]
    assert list(cfg[16:32].view(np.uint16)) == [64] * 4 + [48] * 2 + [64] * 2
    assert not cfg[1:16].any() and not cfg[32:48].any() and not cfg[56:].any()


def test_kernel_compiles_to_tile_instructions_on_any_machine():
    func = amx.conv2d_kernel((1, 32, 8, 8), (32, 32, 3, 3), "uint8", (1, 1), (1, 1, 1, 1),
                             output_packed=True)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      tvm.target.Target(AMX_TARGET))
    asm = lib.mod.inspect_source("asm")
    for instruction in ("ldtilecfg", "tilezero", "tileloadd", "tdpbusd", "tilestored"):
        assert instruction in asm, instruction


def test_per_channel_q31_multiply_is_llvm_s_multiply_high():
    # the register block's epilogue unrolled (schedule.unroll_register_block) keeps each
    # per-channel multiplier's sign extension beside its Q31 multiply: LLVM's multiply-high,
    # two vpmuldq and a vpermt2d a vector, not two 8-lane int64 halves narrowed by vpmovqd
    # (a 56-wide row: register blocks of 2 x 28 pixels, a loop LLVM does not unroll itself)
    from tvm_quant_ext.backend.cpu.epilogue import Epilogue, Step
    from tvm_quant_ext.backend.cpu.int32_steps import Q31_HIGH

    m0 = np.random.default_rng(0).integers(2 ** 30, 2 ** 31 - 1, (1, 32, 1, 1)).astype("int32")
    epilogue = Epilogue([Step(Q31_HIGH, (m0, np.array(8, "int32"), np.array(4, "int32")), "int32"),
                         Step("relax.clip", (), "int32", (-128, 127)),
                         Step("relax.astype", (), "int8")])
    func = amx.conv2d_kernel((1, 64, 56, 56), (32, 64, 1, 1), "uint8", epilogue=epilogue,
                             output_packed=True)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      tvm.target.Target(AMX_TARGET))
    asm = lib.mod.inspect_source("asm")
    assert "vpermt2d" in asm and "vpmovqd" not in asm


def test_wider_rows_are_refused():
    assert not amx.takes((5, 5), (1, 1)) and not amx.takes((3, 3), (2, 2))
    with pytest.raises(ValueError, match="at most 4 taps"):
        amx.conv2d_kernel((1, 16, 9, 9), (16, 16, 5, 5), "uint8", (1, 1), (2, 2, 2, 2))


def test_target_without_amx_is_refused_when_asked_for():
    mod, _ = residual_stack()
    with pytest.raises(ValueError, match="amx-tile"):
        lower(mod, tvm.target.Target(VNNI_TARGET), amx=True)


def _reference(blocked, weight, channels, stride, out_hw):
    # the conv over the bordered blocked input as it lies (its border is the padding)
    n = blocked.shape[0]
    x = blocked.transpose(0, 1, 4, 2, 3).reshape(n, -1, *blocked.shape[2:4])[:, :channels]
    x = x.astype(np.int64)
    k = weight.shape[2]
    oh, ow = out_hw
    out = 0
    for ry in range(k):
        for rx in range(k):
            window = x[:, :, ry:ry + stride * (oh - 1) + 1:stride, rx:rx + stride * (ow - 1) + 1:stride]
            out = out + np.einsum("nchw,oc->nohw", window, weight[:, :, ry, rx].astype(np.int64))
    return out


@needs_amx
@pytest.mark.parametrize("n,c,size,o,k,stride,pad,border,out_packed", [
    (1, 32, 14, 32, 1, 1, 0, (0, 0, 0, 0), True),     # 14 rows a tile, two runs of pixels
    (1, 20, 9, 24, 3, 1, 1, (0, 0, 0, 0), True),      # partial blocks in and out, 9 rows
    (2, 48, 13, 64, 3, 2, 1, (1, 1, 1, 1), True),     # stride 2, batch 2, a bordered output
    (1, 64, 16, 48, 1, 1, 0, (0, 0, 0, 0), False),    # NCHW out, three output blocks
    (1, 16, 7, 16, 3, 1, 1, (0, 0, 0, 0), False),     # one output block, one run of pixels
    (1, 32, 10, 16, 4, 1, 2, (0, 0, 0, 0), True),     # a 4x4 window: 64-byte A rows
    (1, 80, 14, 32, 1, 1, 0, (1, 1, 1, 1), True),     # 1x1 deep rows, a partial deep block
    (2, 64, 14, 48, 1, 2, 0, (0, 0, 0, 0), True),     # 1x1 stride 2 deep, batch 2
    (1, 128, 7, 256, 1, 1, 0, (0, 0, 0, 0), False),   # 1x1 at 7x7: output blocks split
    (3, 64, 7, 80, 3, 1, 1, (1, 1, 1, 1), True),      # batch 3, output blocks outermost
])
def test_kernel_matches_numpy(n, c, size, o, k, stride, pad, border, out_packed):
    if n == 3:  # the case is there for the other loop order
        assert amx.weights_outer(n, (c, size, size), (o, c, k, k))
    rng = np.random.default_rng(c * size + o)
    padding = (pad,) * 4
    blocked = rng.integers(0, 256, packed.packed_shape((n, c, size, size), padding)).astype("uint8")
    weight = rng.integers(-128, 128, (o, c, k, k)).astype("int8")
    bias = rng.integers(-2000, 2000, o).astype("int32")
    correction = rng.integers(-500, 500, o).astype("int32")
    out_hw = ((size + 2 * pad - k) // stride + 1,) * 2
    func = amx.conv2d_kernel((n, c, size, size), weight.shape, "uint8", (stride, stride),
                             padding, epilogue=shift_requantize(bias[None, :, None, None]),
                             output_packed=out_packed, output_padding=border)
    got = run_kernel(func, blocked, amx.pack_weight(weight), correction,
                     bias[None, :, None, None], target=AMX_TARGET)
    acc = _reference(blocked, weight, c, stride, out_hw) - correction[None, :, None, None]
    ref = np.clip((acc + bias[None, :, None, None]) >> 7, -128, 127).astype("int8")
    np.testing.assert_array_equal(got, to_blocked(ref, border) if out_packed else ref)
    assert len(np.unique(ref)) > 10


@needs_amx
@pytest.mark.parametrize("n,c,size,o,k,stride,pad,dtype,out_packed", [
    (1, 3, 22, 64, 7, 2, 3, "int8", True),     # a 7x7 stem: 28-byte A rows, 8 bytes apart
    (2, 3, 17, 32, 3, 2, 1, "uint8", True),    # a 3x3 stem, batch 2, odd plane
    (1, 1, 9, 24, 3, 1, 1, "int8", False),     # one channel, a partial output block, NCHW
    (1, 4, 8, 16, 5, 1, 2, "uint8", True),     # four channels: the group full
])
def test_narrow_nchw_input_matches_numpy(n, c, size, o, k, stride, pad, dtype, out_packed):
    rng = np.random.default_rng(c * size + o)
    low, high = (-128, 128) if dtype == "int8" else (0, 256)
    data = rng.integers(low, high, (n, c, size, size)).astype(dtype)
    weight = rng.integers(-128, 128, (o, c, k, k)).astype("int8")
    bias = rng.integers(-2000, 2000, o).astype("int32")
    correction = packed.shift_correction(weight, dtype)
    assert amx.takes((k, k), (1, 1), c, input_packed=False)
    func = amx.conv2d_kernel((n, c, size, size), weight.shape, dtype, (stride, stride),
                             (pad,) * 4, epilogue=shift_requantize(bias[None, :, None, None]),
                             output_packed=out_packed, input_packed=False)
    got = run_kernel(func, data, amx.pack_weight(weight, input_packed=False), correction,
                     bias[None, :, None, None], target=AMX_TARGET)
    padded = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_hw = ((size + 2 * pad - k) // stride + 1,) * 2
    acc = _reference(to_blocked(padded.astype(dtype)), weight, c, stride, out_hw)
    acc = acc - packed.shift_correction(weight, dtype)[None, :, None, None]
    ref = np.clip((acc + bias[None, :, None, None]) >> 7, -128, 127).astype("int8")
    np.testing.assert_array_equal(got, to_blocked(ref) if out_packed else ref)
    assert len(np.unique(ref)) > 10


def test_wider_narrow_inputs_and_rows_are_refused():
    assert not amx.takes((3, 3), (1, 1), 5, input_packed=False)  # NCHW of more than 4 channels
    assert not amx.takes((17, 17), (1, 1), 3, input_packed=False)  # 68-byte rows
    assert amx.takes((16, 16), (1, 1), 4, input_packed=False)


def test_model_convs_run_on_it_the_stem_too():
    qmod = integer_quantized(residual_stack(), (1, 3, 12, 12))
    names = call_tir_names(lower(qmod, tvm.target.Target(AMX_TARGET)))
    # five convs over the blocked layout and the stem over the 3-channel NCHW image
    assert sum(name.startswith("conv2d_int8_amx") for name in names) == 6, names
    assert not any(name.startswith("conv2d_int8_vnni") for name in names)


@needs_amx
@pytest.mark.parametrize("symmetric", [True, False])
def test_model_on_it_is_bit_identical_to_unfused(symmetric):
    qmod = integer_quantized(residual_stack(), (1, 3, 12, 12), symmetric)
    assert_same_as_unfused(qmod, [tvm_quant_ext.build(qmod, AMX_TARGET)], (1, 3, 12, 12))


def test_host_target_adds_amx_where_the_machine_runs_it():
    from argparse import Namespace

    from tvm_quant_ext.backend.target import host_target
    from tvm_quant_ext.cli.model_commands import target_of

    target = host_target()
    plain = tvm.target.Target({"kind": "llvm", "mcpu": target["mcpu"]})
    assert ("mattr" in target) == (amx.host_has_amx() and not amx.target_has_amx(plain))
    if amx.host_has_amx():
        assert amx.target_has_amx(tvm.target.Target(target))
    assert target_of(Namespace(target="llvm", mcpu="host", arch=None)) == target


@needs_amx
def test_exported_kernel_asks_for_the_tile_state_itself(tmp_path):
    # a fresh process that never called request_permission: the kernel asks Linux itself
    import subprocess
    import sys

    rng = np.random.default_rng(3)
    blocked = rng.integers(0, 256, packed.packed_shape((1, 32, 8, 8))).astype("uint8")
    weight = rng.integers(-128, 128, (16, 32, 1, 1)).astype("int8")
    func = amx.conv2d_kernel((1, 32, 8, 8), weight.shape, "uint8")
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      tvm.target.Target(AMX_TARGET))
    lib.export_library(str(tmp_path / "kernel.so"))
    np.save(tmp_path / "data.npy", blocked)
    np.save(tmp_path / "weight.npy", amx.pack_weight(weight))
    script = f"""
import numpy as np, tvm
lib = tvm.runtime.load_module({str(tmp_path / "kernel.so")!r})
args = [tvm.runtime.tensor(np.load({str(tmp_path / "data.npy")!r})),
        tvm.runtime.tensor(np.load({str(tmp_path / "weight.npy")!r})),
        tvm.runtime.tensor(np.zeros(16, "int32")), tvm.runtime.tensor(np.zeros((1, 16, 8, 8), "int32"))]
lib["main"](*args)
np.save({str(tmp_path / "out.npy")!r}, args[-1].numpy())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = _reference(blocked, weight, 32, 1, (8, 8))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_batched_conv_reads_each_weight_block_once_where_weights_outweigh_the_input():
    # ResNet-50 v2 at batch 8: its 3x3 convs at 7x7 (2.4 MB of weights) go output blocks
    # first; its 1x1 1024 -> 2048 projection (2 MB against 1.6 MB of input), a 1x1 conv with
    # weights far above its input and any batch 1 keep images outermost
    assert amx.weights_outer(8, (512, 7, 7), (512, 512, 3, 3))
    assert not amx.weights_outer(8, (1024, 14, 14), (2048, 1024, 1, 1))
    assert not amx.weights_outer(8, (192, 7, 7), (1152, 192, 1, 1))
    assert not amx.weights_outer(1, (512, 7, 7), (512, 512, 3, 3))
