"""Fused int8 layers (tvm_quant_ext.backend.cpu): conv2d/dense/depthwise + integer epilogue in one
kernel, bit-identical to the unfused graph."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import tvm
from tvm import relax

import tvm_quant_ext
from tvm_quant_ext.backend.build import lower
from tvm_quant_ext.backend.cpu.epilogue import Epilogue, Step, fold_into_first_add
from tvm_quant_ext.backend.cpu.fuse import fuse_int8_layers

from kernel_checks import (HOST, PACKED_TARGETS, VNNI_TARGET, assert_same_as_unfused,
                           call_tir_names, integer_quantized, kernel_calls, needs_vnni,
                           packed_isa, packed_kernel_tag, run_kernel,
                           shift_requantize, to_blocked)
from graphs import depthwise_block, residual_stack, tiny_resnet
from int8_graphs import int8_conv_block





def test_chain_becomes_one_kernel():
    # conv -> bias -> int64 requantize -> clip -> cast: one call_tir, no separate elementwise
    mod, _ = int8_conv_block(in_ch=8, out_ch=16, classes=7)
    fused = fuse_int8_layers(mod)
    names = call_tir_names(fused)
    assert names == ["conv2d_int8_vnni", "dense_int8_vnni"]
    ops = set()
    relax.analysis.post_order_visit(fused["main"], lambda e: ops.add(
        getattr(e.op, "name", None)) if isinstance(e, relax.Call) else None)
    assert not ops & {"relax.multiply", "relax.right_shift", "relax.clip", "relax.nn.conv2d",
                      "relax.matmul"}
    # the first kernel writes int8 (the epilogue's cast), not int32
    lowered = lower(mod, tvm.target.Target(VNNI_TARGET))
    conv = lowered["conv2d_int8_vnni"]
    assert str(conv.params[-1].dtype) == "int8"  # 0.27: params are buffer-typed
    # the int8 input's shift correction rides on the bias add: no argument of its own
    assert "correction" not in [p.name for p in conv.params], conv.params


def test_the_shift_correction_folds_into_an_int32_bias_add_with_its_wrapping():
    rng = np.random.default_rng(0)
    bias = rng.integers(-2**31, 2**31, (1, 8, 1, 1)).astype(np.int32)
    correction = rng.integers(-2**31, 2**31, 8).astype(np.int32)
    steps = [Step("relax.add", (bias,), "int32"), Step("relax.astype", (), "int8")]
    folded = fold_into_first_add(Epilogue(steps), -correction.astype(np.int64), 4)
    acc = rng.integers(-2**31, 2**31, (5, 8, 3, 3)).astype(np.int32)
    with np.errstate(over="ignore"):
        expected = (acc - correction.reshape(1, 8, 1, 1) + bias).astype(np.int8)
        got = (acc + folded.steps[0].operands[0]).astype(np.int8)
    np.testing.assert_array_equal(got, expected)
    assert folded.steps[1:] == steps[1:]
    # an int64 add (a bias the ranges kept wide) or a chain without an add keeps its correction
    wide = [Step("relax.add", (bias.astype(np.int64),), "int64")]
    assert fold_into_first_add(Epilogue(wide), correction, 4) is None
    assert fold_into_first_add(Epilogue(steps[1:]), correction, 4) is None


@pytest.mark.parametrize("symmetric", [True, False])
def test_depthwise_fused_equals_unfused(symmetric):
    # stride 2, TF "same" asymmetric padding, zero points (explicit pad) when asymmetric
    qmod = integer_quantized(depthwise_block(channels=6, size=11), (1, 6, 11, 11), symmetric)
    fused = fuse_int8_layers(qmod, vnni=False)
    assert "depthwise_conv2d_int8" in call_tir_names(fused)
    x = np.random.default_rng(3).standard_normal((1, 6, 11, 11)).astype("float32") * 2
    np.testing.assert_array_equal(tvm_quant_ext.build(qmod, "llvm")(x),
                                  tvm_quant_ext.build(qmod, "llvm", fuse=False)(x))


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_integer_realize_fused_is_bit_exact(target, symmetric):
    qmod = integer_quantized(tiny_resnet(), (1, 3, 16, 16), symmetric)
    x = np.random.default_rng(5).standard_normal((2, 1, 3, 16, 16)).astype("float32")
    fused = tvm_quant_ext.build(qmod, target)
    unfused = tvm_quant_ext.build(qmod, target, fuse=False)
    for image in x:
        np.testing.assert_array_equal(fused(image), unfused(image))


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("name", ["mnist_cnn", "efficientnet_lite0"])
def test_real_model_fused_equals_unfused(target, name):
    # every conv (VNNI and depthwise) and the classifier fused: the logits are bit-identical
    from tvm_quant_ext import zoo

    model = zoo.load(name, batch_size=1)
    calib = [model.calib[i:i + 1] for i in range(4)]
    qmod = tvm_quant_ext.quantize(model.mod, model.params, dataset=calib,
                                  config=tvm_quant_ext.QConfig(mode="integer"))
    lowered = lower(qmod, tvm.target.Target(target))
    assert not [n for n in call_tir_names(lowered) if "conv2d" in n and "int8" not in n]
    fused = tvm_quant_ext.build(qmod, target)
    unfused = tvm_quant_ext.build(qmod, target, fuse=False)
    for i in range(4, 9):
        image = model.calib[i:i + 1]
        np.testing.assert_array_equal(fused(image), unfused(image))


def _depthwise_reference(x, w, stride, padding, dil):
    pt, pl, pb, pr = padding
    k = w.shape[2]
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (xp.shape[2] - dil * (k - 1) - 1) // stride + 1
    ow = (xp.shape[3] - dil * (k - 1) - 1) // stride + 1
    ref = np.zeros((x.shape[0], x.shape[1], oh, ow), np.int64)
    for ky in range(k):
        for kx in range(k):
            y0, x0 = ky * dil, kx * dil
            ref += xp[:, :, y0:y0 + stride * oh:stride, x0:x0 + stride * ow:stride] \
                * w[None, :, 0, ky, kx, None, None].astype(np.int64)
    return ref


@pytest.mark.parametrize("data_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("case", [
    # (channels, size, kernel, stride, padding t/l/b/r, dilation)
    (5, 9, 3, 1, (1, 1, 1, 1), 1),
    (6, 11, 5, 2, (1, 1, 2, 2), 1),   # Lite0's TF "same" padding on a 5x5 stride-2 layer
    (3, 8, 3, 2, (0, 0, 1, 1), 1),
    (4, 7, 1, 1, (0, 0, 0, 0), 1),    # ResNet v2's pre-activation BN as a 1x1 depthwise conv
    (4, 10, 3, 1, (2, 2, 2, 2), 2),
])
def test_depthwise_kernel_matches_numpy(data_dtype, case):
    from tvm_quant_ext.backend.cpu.depthwise import depthwise_kernel

    c, size, k, stride, padding, dil = case
    rng = np.random.default_rng(7)
    lo, hi = (-128, 128) if data_dtype == "int8" else (0, 256)
    x = rng.integers(lo, hi, (2, c, size, size)).astype(data_dtype)
    w = rng.integers(-128, 128, (c, 1, k, k)).astype("int8")
    func = depthwise_kernel(x.shape, w.shape, data_dtype, (stride, stride), padding, (dil, dil))
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), "llvm")
    ref = _depthwise_reference(x, w, stride, padding, dil)
    out = tvm.runtime.tensor(np.zeros(ref.shape, "int32"))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize("data_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("input_packed,output_packed,output_padding", [
    (False, True, (0, 0, 0, 0)), (True, False, (0, 0, 0, 0)), (True, True, (0, 0, 0, 0)),
    (True, True, (1, 0, 2, 1)),       # a reader with (asymmetric) padding: the border written
])
@pytest.mark.parametrize("case", [
    # (channels, size, kernel, stride, padding t/l/b/r, dilation)
    (32, 9, 3, 1, (1, 1, 1, 1), 1),
    (20, 11, 5, 2, (1, 1, 2, 2), 1),  # a partial last block of channels; Lite0's 5x5 stride 2
    (16, 7, 3, 2, (0, 0, 1, 1), 1),
    (5, 6, 3, 1, (0, 0, 0, 0), 1),    # nothing to pad, one partial block
    (16, 10, 3, 1, (2, 2, 2, 2), 2),
])
def test_blocked_depthwise_matches_numpy(data_dtype, input_packed, output_packed,
                                         output_padding, case):
    # the blocked kernel in every layout combination it serves, with a requantizing epilogue
    from tvm_quant_ext.backend.cpu.depthwise import (depthwise_blocked_kernel,
                                                     depthwise_shift_correction,
                                                     pack_depthwise_weight)

    c, size, k, stride, padding, dil = case
    rng = np.random.default_rng(3)
    lo, hi = (-128, 128) if data_dtype == "int8" else (0, 256)
    x = rng.integers(lo, hi, (2, c, size, size)).astype(data_dtype)
    w = rng.integers(-128, 128, (c, 1, k, k)).astype("int8")
    bias = rng.integers(-3000, 3000, (1, c, 1, 1)).astype("int32")
    epilogue = shift_requantize(bias)
    func = depthwise_blocked_kernel(x.shape, w.shape, data_dtype, (stride, stride), padding,
                                    (dil, dil), epilogue=epilogue, input_packed=input_packed,
                                    output_packed=output_packed, output_padding=output_padding)
    ref = np.clip((_depthwise_reference(x, w, stride, padding, dil) + bias) >> 7, -128, 127)
    ref = ref.astype("int8")
    data = to_blocked(x, padding) if input_packed else x
    got = run_kernel(func, data, pack_depthwise_weight(w),
                      depthwise_shift_correction(w, data_dtype), bias)
    np.testing.assert_array_equal(got, to_blocked(ref, output_padding) if output_packed else ref)
    assert len(np.unique(ref)) > 10  # the epilogue neither saturates nor zeroes everything


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_conv_to_conv_stays_packed(target, symmetric):
    # a VNNI conv whose only reader is another VNNI conv hands over the blocked layout, not NCHW
    mod, params = tiny_resnet()
    qmod = integer_quantized((mod, params), (1, 3, 16, 16), symmetric=symmetric)
    names = call_tir_names(lower(qmod, tvm.target.Target(target)))
    assert f"conv2d_int8_{packed_kernel_tag(target)}_packed" in names
    fused = tvm_quant_ext.build(qmod, target)
    unfused = tvm_quant_ext.build(qmod, target, fuse=False)
    rng = np.random.default_rng(1)
    for _ in range(3):
        image = rng.standard_normal((1, 3, 16, 16)).astype("float32")
        np.testing.assert_array_equal(fused(image), unfused(image))


def _kernel_call(mod, name):
    """Kernel ``name``'s one ``call_tir`` in ``main``."""
    calls = [call for call in kernel_calls(mod) if call.args[0].name_hint == name]
    assert len(calls) == 1, (name, len(calls))
    return calls[0]


def _kernel_args(mod, name):
    """The shapes of the arguments of kernel ``name``'s one call in ``main``, data first."""
    return [tuple(int(d) for d in a.ty.shape) for a in _kernel_call(mod, name).args[1].fields]


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_residual_add_runs_in_the_conv_epilogue(target, symmetric):
    # both adds of residual_stack (identity and projection shortcut) are read inside the
    # kernel of the conv before them: no elementwise kernel between the convs, every block
    # input stays blocked (with the 3x3 reader's border) and the logits are bit-identical
    qmod = integer_quantized(residual_stack(), (1, 3, 12, 12), symmetric)
    lowered = lower(qmod, tvm.target.Target(target))
    names = call_tir_names(lowered)
    tag = packed_kernel_tag(target)
    convs = [n for n in names if tag in n]
    assert len(convs) == 7, names  # stem, 2 + 3 block convs, the dense layer
    between = names[names.index(convs[0]):names.index(convs[-2]) + 1]
    assert between == convs[:-1], names  # nothing but convs from the stem to the last block
    # each block input is one blocked tensor (20 channels -> 2 blocks) with the 3x3 reader's
    # border of 1, which the unpadded projection conv reads too (from inside the border), and
    # the identity block's second conv reads it as its side
    bordered = (1, 2, 14, 14, 16)
    inputs = [_kernel_args(lowered, n)[0] for n in convs[:-1]]
    assert inputs.count(bordered) == 3, inputs  # the two 3x3 convs and the projection
    assert _kernel_args(lowered, convs[2])[-1] == bordered
    # the projection block's last conv reads the projection's output (40 channels, 6x6),
    # blocked too; that output is the projection's 8-bit code (stored uint8), and its rescale
    # to the add's scale runs in the reader
    assert _kernel_args(lowered, convs[-2])[-1] == (1, 3, 6, 6, 16)
    assert str(_kernel_call(lowered, convs[-3]).ty.dtype) == "uint8"
    isa = packed_isa(target)
    assert_same_as_unfused(qmod, [
        tvm_quant_ext.build(qmod, target),
        tvm_quant_ext.build(fuse_int8_layers(qmod, sides=False, isa=isa), target),
        tvm_quant_ext.build(fuse_int8_layers(qmod, code_sides=False, isa=isa), target)],
        (1, 3, 12, 12), target=target)
    # without code sides the projection writes the rescaled value, its low 32 bits
    wide = lower(fuse_int8_layers(qmod, code_sides=False, isa=isa), tvm.target.Target(target))
    wide_convs = [n for n in call_tir_names(wide) if tag in n]
    assert str(_kernel_call(wide, wide_convs[-3]).ty.dtype) == "int32"


@pytest.mark.parametrize("target", PACKED_TARGETS)
@pytest.mark.parametrize("case", [
    # (in channels, mid channels, out channels, size, consumer kernel, padding, stride, dtype)
    (8, 20, 12, 9, 3, 1, 1, "int8"),     # mid channels not a multiple of 4 or 16
    (16, 32, 16, 8, 1, 0, 1, "int8"),    # no padding: the consumer reads the packed input
    (5, 16, 7, 6, 3, 1, 2, "uint8"),     # unsigned codes, stride 2
    (16, 48, 32, 7, 1, 0, 1, "uint8"),
    (8, 32, 16, 30, 3, 1, 1, "int8"),    # a plane large enough that the writer computes the border
    (8, 20, 16, 28, 3, 1, 2, "uint8"),   # ... with a partial channel block, stride 2
    (16, 32, 64, 7, 3, 1, 1, "int8"),    # an odd row: AVX2 blocks 1 column x 4 weight blocks
])
def test_packed_link_equals_nchw(target, case):
    from tvm_quant_ext.backend.cpu import vnni
    from tvm_quant_ext.backend.cpu.epilogue import Epilogue, Step
    from tvm_quant_ext.backend.cpu.packed import packed_shape, shift_correction

    c, mid, o, size, k, pad, stride, dtype = case
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)

    def requantize(to):
        low, high = (-128, 127) if to == "int8" else (lo, hi)
        return Epilogue([Step("relax.right_shift", (np.array(9, "int32"),), "int32"),
                         Step("relax.clip", (), "int32", (low, high)),
                         Step("relax.astype", (), to)])

    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, c, size, size)).astype("int8")
    w1 = rng.integers(-127, 128, (mid, c, 1, 1)).astype("int8")
    w2 = rng.integers(-127, 128, (o, mid, k, k)).astype("int8")
    isa = packed_isa(target)

    def run(func, *arrays):
        return run_kernel(func, *arrays, target=target)

    first = [vnni.pack_weight(w1, isa=isa), shift_correction(w1, "int8")]
    second = [vnni.pack_weight(w2, isa=isa), shift_correction(w2, dtype)]
    conv = dict(strides=(stride, stride), padding=(pad,) * 4, epilogue=requantize("int8"),
                isa=isa)
    y = run(vnni.conv2d_kernel(x.shape, w1.shape, "int8", epilogue=requantize(dtype), isa=isa),
            x, *first)
    expected = run(vnni.conv2d_kernel(y.shape, w2.shape, dtype, **conv), y, *second)
    packed = run(vnni.conv2d_kernel(x.shape, w1.shape, "int8", epilogue=requantize(dtype),
                                    output_packed=True, output_padding=(pad,) * 4, isa=isa),
                 x, *first)
    assert packed.shape == packed_shape(y.shape, (pad,) * 4)
    np.testing.assert_array_equal(packed, to_blocked(y, (pad,) * 4))  # the border written too
    got = run(vnni.conv2d_kernel(y.shape, w2.shape, dtype, input_packed=True, **conv),
              packed, vnni.pack_weight(w2, input_packed=True, isa=isa), second[1])
    np.testing.assert_array_equal(got, expected)
    assert np.abs(expected.astype(int)).max() > 0  # not all zeros


def test_1x1_depthwise_becomes_a_fused_multiply():
    # a pre-activation BN's 1x1 depthwise conv merges with the elementwise ops around it
    rng = np.random.default_rng(0)
    channels, shape = 8, (2, 8, 6, 5)
    weight = rng.integers(-127, 128, (channels, 1, 1, 1)).astype("int8")
    bias = rng.integers(-3000, 3000, (1, channels, 1, 1)).astype("int32")
    op = relax.op
    data = relax.Var("data", relax.TensorType(shape, "int8"))
    other = relax.Var("other", relax.TensorType(shape, "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [data, other]):
        with bb.dataflow():
            total = bb.emit(op.astype(op.clip(op.add(op.astype(data, "int32"),
                                                     op.astype(other, "int32")), -128, 127),
                                      "int8"))
            y = bb.emit(op.nn.conv2d(total, relax.const(weight), groups=channels,
                                     out_dtype="int32"))
            y = bb.emit(op.right_shift(op.add(y, relax.const(bias)), relax.const(6, "int32")))
            out = bb.emit_output(op.astype(op.clip(y, 0, 127), "int8"))
        bb.emit_func_output(out)
    mod = bb.get()
    names = call_tir_names(lower(mod, HOST))
    assert len(names) == 1 and "depthwise" not in names[0], names
    a = rng.integers(-128, 128, shape).astype("int8")
    b = rng.integers(-128, 128, shape).astype("int8")
    total = np.clip(a.astype(np.int64) + b, -128, 127)
    expected = np.clip((total * weight.reshape(1, -1, 1, 1) + bias) >> 6, 0, 127).astype("int8")
    for fuse in (True, False):
        np.testing.assert_array_equal(tvm_quant_ext.build(mod, HOST, fuse=fuse)(a, b),
                                      expected)


def _with_raised_weights(graph, shape, symmetric):
    """The integer module of ``graph`` with every layer's weights raised to 15-bit codes."""
    from tvm_quant_ext import QConfig, passes
    from tvm_quant_ext.points import get_state, set_state
    mod, params = graph
    config = QConfig(mode="integer", activation_symmetric=symmetric)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal(shape).astype("float32") for _ in range(4)]
    calibrated = passes.calibrate(passes.annotate(passes.prepare(mod, params, config), config),
                                  calib, config)
    state = get_state(calibrated)
    state.weight_bits = {pid: 15 for pid, p in state.points.items() if p.kind == "WEIGHT"}
    return passes.realize(set_state(calibrated, state), config)


@pytest.mark.parametrize("graph,shape,target", [
    # 3x3 convs and a dense layer, on the packed kernels
    *[pytest.param("tiny_resnet", (1, 3, 16, 16), p.values[0], marks=p.marks, id=p.id)
      for p in PACKED_TARGETS],
    ("depthwise_block", (1, 6, 11, 11), "llvm"),       # depthwise, stride 2, asymmetric padding
])
@pytest.mark.parametrize("symmetric", [True, False])
def test_15_bit_weights_run_as_two_int8_layers_bit_exactly(graph, shape, target, symmetric):
    from tvm_quant_ext.backend.cpu.wide_weights import split_wide_weights
    maker = {"tiny_resnet": tiny_resnet, "depthwise_block": lambda: depthwise_block(channels=6, size=11)}
    qmod = _with_raised_weights(maker[graph](), shape, symmetric)

    def weight_dtypes(mod):
        return [str(b.value.args[1].ty.dtype) for b in tvm_quant_ext.graph.bindings(mod["main"])
                if getattr(getattr(b.value, "op", None), "name", "") in ("relax.nn.conv2d", "relax.matmul")]
    layers = weight_dtypes(qmod)
    assert layers and set(layers) == {"int16"}
    assert weight_dtypes(split_wide_weights(qmod)) == ["int8"] * (2 * len(layers))
    if target != "llvm":  # every layer on the packed kernel
        kernels = call_tir_names(lower(qmod, tvm.target.Target(target)))
        tag = packed_kernel_tag(target)
        assert sum(f"int8_{tag}" in n for n in kernels) == 2 * len(layers), kernels
    fused = tvm_quant_ext.build(qmod, target)
    unfused = tvm_quant_ext.build(qmod, target, fuse=False)
    for image in np.random.default_rng(5).standard_normal((3,) + shape).astype("float32") * 2:
        np.testing.assert_array_equal(fused(image), unfused(image))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-32768, 32639), min_size=1, max_size=64))
def test_split_codes_are_int8_and_sum_back(codes):
    from tvm_quant_ext.backend.cpu.wide_weights import split_codes
    weight = np.array(codes, np.int16)
    hi, lo = split_codes(weight)
    assert hi.dtype == lo.dtype == np.int8
    np.testing.assert_array_equal(256 * hi.astype(np.int64) + lo, weight)
    assert split_codes(np.array([32767], np.int16)) is None  # hi would be 128


def test_only_wrapping_steps_let_a_side_travel_as_int32():
    # add / subtract / multiply commute with reducing modulo 2^32; a shift, clip or max before
    # the cast to 32 bits does not, so such a side keeps its int64
    from tvm_quant_ext.backend.cpu.epilogue import Step
    from tvm_quant_ext.backend.cpu.fuse import wraps_before_use

    m = np.array(3, "int64")
    cast32 = Step("relax.astype", (), "int32")
    assert wraps_before_use([Step("relax.add", (m,), "int64"),
                             Step("relax.multiply", (m,), "int64"), cast32])
    assert not wraps_before_use([Step("relax.right_shift", (m,), "int64"), cast32])
    assert not wraps_before_use([Step("relax.clip", (), "int64", (-5, 5)), cast32])
    assert not wraps_before_use([Step("relax.maximum", (m,), "int64"), cast32])
    assert not wraps_before_use([Step("relax.add", (m,), "int64")])  # never narrowed
    assert not wraps_before_use([Step("relax.astype", (), "int64")])


@settings(max_examples=300, deadline=None)
@given(st.integers(-2**62, 2**62), st.integers(-2**62, 2**62), st.integers(-2**31, 2**31 - 1))
def test_a_sum_cast_to_int32_needs_only_the_low_32_bits_of_a_term(main, side, factor):
    # what lets a projection's int64 output travel as int32: the side's low 32 bits,
    # sign-extended again, give the same int32 after add / multiply and the cast
    def low32(v):
        return np.array(v, np.int64).astype(np.int32)

    with np.errstate(over="ignore"):
        full = low32((np.int64(main) + np.int64(side)) * np.int64(factor))
        narrowed = low32((np.int64(main) + low32(side).astype(np.int64)) * np.int64(factor))
    assert full == narrowed
