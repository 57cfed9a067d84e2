"""Integer realize on small graphs: integer == simulate (<= 1 LSB), integer == numpy, int-only IR."""
import numpy as np
import pytest
from tvm import relax

import tvm_quant_ext as tq
from tvm_quant_ext import QConfig, fixed_point, passes, qmath
from tvm_quant_ext.points import collect_points, get_state

from graphs import dense_op_dense, depthwise_block, mixed_ops, single_conv, tiny_resnet


def _calibrated(mod, params, shape, config, n=8, seed=0):
    rng = np.random.default_rng(seed)
    calib = [rng.standard_normal(shape).astype("float32") for _ in range(n)]
    return passes.calibrate(passes.annotate(passes.prepare(mod, params), config), calib, config)


def _run_tapped(model, x):
    taps = {}
    with collect_points(lambda pid, array: taps.__setitem__(pid, array)):
        out = model(x)
    return out, taps


def _single_conv():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((6, 3, 3, 3)).astype("float32")
    bias = rng.standard_normal(6).astype("float32")
    return single_conv(weight, bias, (1, 3, 10, 10), padding=(1, 0, 2, 1))


GRAPHS = {
    "single_conv": (_single_conv, (1, 3, 10, 10)),
    "tiny_resnet": (tiny_resnet, (1, 3, 16, 16)),
    "mixed_ops": (mixed_ops, (1, 3, 17, 17)),
    "depthwise_block": (depthwise_block, (1, 4, 9, 9)),
}
CONFIGS = {
    "int8 per-channel": QConfig(),
    "int8 per-tensor": QConfig(per_channel=False),
    "uint8 zero point": QConfig(activation_symmetric=False),
    "int16": QConfig(nbit_input=16, nbit_bias=32, nbit_activation=64),
}
# every graph per channel; the other configs on the graphs where they matter (zero points meet
# padding, pools and concat in mixed_ops/depthwise_block; per-tensor on the residual net)
CASES = [(g, "int8 per-channel") for g in sorted(GRAPHS)] + [
    ("mixed_ops", "uint8 zero point"), ("depthwise_block", "uint8 zero point"),
    ("tiny_resnet", "uint8 zero point"), ("tiny_resnet", "int8 per-tensor"),
    ("mixed_ops", "int16")]


@pytest.mark.parametrize("graph,config_name", CASES)
def test_integer_agrees_with_simulate_within_one_lsb(graph, config_name):
    make, shape = GRAPHS[graph]
    config = CONFIGS[config_name]
    calibrated = _calibrated(*make(), shape, config)
    simulated = tq.build(passes.realize(calibrated, config, tap=True))
    integer_mod = passes.realize(calibrated, config.replace(mode="integer"), tap=True)
    integer = tq.build(integer_mod)
    state = get_state(integer_mod)
    assert state.float_ops == []
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal(shape).astype("float32")
        sim_out, sim_taps = _run_tapped(simulated, x)
        int_out, int_taps = _run_tapped(integer, x)
        assert set(sim_taps) == set(int_taps)
        for pid, codes in int_taps.items():
            assert np.issubdtype(codes.dtype, np.integer), pid
            scale = state.activation_scales[pid]
            zero_point = state.activation_zero_points.get(pid, 0)
            lsb = np.abs((codes.astype(np.float64) - zero_point) * scale - sim_taps[pid]) / scale
            assert lsb.max() <= 1.0 + 1e-6, (pid, lsb.max())
        assert qmath.snr_db(sim_out, int_out) > 40


def _conv_nchw(x, w, stride, groups):
    """Integer conv (already padded input), int64, for the reference."""
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    per_group = o // groups
    for oc in range(o):
        g = oc // per_group
        xs = x[:, g * ci:(g + 1) * ci]
        for i in range(oh):
            for j in range(ow):
                window = xs[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                out[:, oc, i, j] = np.einsum("nchw,chw->n", window, w[oc])
    return out


@pytest.mark.parametrize("symmetric", [True, False])
def test_integer_matches_numpy_reference(symmetric):
    """depthwise (asymmetric padding, stride 2) + bias -> relu point -> 1x1 conv + bias, rebuilt
    from qmath/fixed_point: the relu codes must match bit for bit."""
    mod, params = depthwise_block()
    config = QConfig(activation_symmetric=symmetric, mode="integer")
    qmod = passes.realize(_calibrated(mod, params, (1, 4, 9, 9), config), config, tap=True)
    state, report = get_state(qmod), tq.get_report(qmod)
    x = np.random.default_rng(2).standard_normal((1, 4, 9, 9)).astype("float32")
    out, taps = _run_tapped(tq.build(qmod), x)

    qmin, qmax = qmath.activation_range(8, symmetric)
    s_x, z_x = state.activation_scales["data"], state.activation_zero_points.get("data", 0)
    x_codes = np.clip(qmath.round_half_up(x.astype(np.float64) / s_x) + z_x, qmin, qmax).astype(np.int64)
    np.testing.assert_array_equal(taps["data"], x_codes)

    def layer(codes, zero_point, s_in, name, stride, groups, padding):
        w = params[f"{name}.weight"].astype(np.float64)
        s_w = np.broadcast_to(np.asarray(report.point(f"{name}.weight")["scale"]), (w.shape[0],))
        w_codes = qmath.quantize(w, s_w, 8, axis=0)
        b_codes = qmath.quantize_bias(params[f"{name}.bias"], s_in, s_w,
                                      np.abs(w).reshape(w.shape[0], -1).max(1), nbit_bias=32).codes
        top, left, bottom, right = padding
        padded = np.pad(codes, [(0, 0), (0, 0), (top, bottom), (left, right)], constant_values=zero_point)
        acc = _conv_nchw(padded - zero_point, w_codes, stride, groups) + b_codes.reshape(1, -1, 1, 1)
        return acc, s_in * s_w

    acc, acc_scale = layer(x_codes, z_x, s_x, "dw", 2, 4, (0, 0, 1, 1))
    s_r, z_r = state.activation_scales["dw/relu"], state.activation_zero_points.get("dw/relu", 0)
    m0, shift = fixed_point.quantize_multiplier(acc_scale / s_r)
    relu_codes = fixed_point.requantize_per_axis(acc, m0, shift, axis=1, zero_point=z_r,
                                                 qmin=max(qmin, z_r), qmax=qmax)
    np.testing.assert_array_equal(taps["dw/relu"], relu_codes)
    acc2, acc2_scale = layer(relu_codes, z_r, s_r, "pw", 1, 1, (0, 0, 0, 0))
    np.testing.assert_allclose(out, acc2 * acc2_scale.reshape(1, -1, 1, 1), rtol=1e-6, atol=1e-6)


def test_integer_main_is_integer_between_input_and_output():
    """conv/relu/max pool/residual add/mean/dense: after the input quantize every binding is an
    integer tensor until the output dequantize."""
    mod, params = tiny_resnet()
    config = QConfig(mode="integer")
    qmod = passes.realize(_calibrated(mod, params, (1, 3, 16, 16), config), config)
    dtypes = [str(b.var.ty.dtype) for b in qmod["main"].body.blocks[0].bindings]
    kinds = "".join("f" if d.startswith("float") else "i" for d in dtypes)
    assert kinds.strip("f") == "i" * kinds.strip("f").count("i"), kinds  # f* i+ f*
    first_int, last_int = kinds.index("i"), kinds.rindex("i")
    assert set(kinds[first_int:last_int + 1]) == {"i"}
    assert kinds.count("i") > 4 * kinds.count("f")  # f: the input quantize, output dequantize
    assert {"int8", "int32"} <= set(dtypes)
    ops = {b.value.op.name for b in qmod["main"].body.blocks[0].bindings
           if isinstance(b.value, relax.Call) and hasattr(b.value.op, "name")}
    assert "relax.nn.conv2d" in ops and "relax.right_shift" in ops
    assert tq.get_report(qmod).float_ops == []


def test_op_without_integer_rule_runs_in_float_and_is_reported():
    mod, params = dense_op_dense(relax.op.nn.silu)
    x = np.linspace(-1, 1, 4, dtype="float32").reshape(1, 4)
    sim = tq.quantize(mod, params, dataset=[x])
    integer = tq.quantize(mod, params, dataset=[x], config=QConfig(mode="integer"))
    assert [f["op"] for f in tq.get_report(integer).float_ops] == ["relax.nn.silu"]
    np.testing.assert_allclose(tq.build(integer)(x), tq.build(sim)(x), rtol=1e-5, atol=1e-5)


def test_wide_bias_survives_in_int64_accumulator():
    # Samsung ONE's case (tiny weights, 16-bit activations, 64-bit bias) in integer arithmetic
    rng = np.random.default_rng(1)
    weight = (rng.uniform(-1, 1, (3, 3, 3, 3)) * 1e-11).astype("float32")
    bias = np.array([-1.2156529, 0.25, 0.8], "float32")
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype("float32")
    mod, params = single_conv(weight, bias, x.shape)
    config = QConfig(nbit_input=16, nbit_bias=64, nbit_activation=64, bias_overflow="error",
                     mode="integer")
    qmod = tq.quantize(mod, params, dataset=[x], config=config)
    dtypes = {str(b.var.ty.dtype) for b in qmod["main"].body.blocks[0].bindings}
    assert {"int16", "int64"} <= dtypes
    np.testing.assert_allclose(tq.build(qmod)(x)[0, :, 0, 0], bias, atol=1e-4)


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="nvcc not installed")
def test_integer_module_compiles_to_cuda():
    """dlight GPU schedules, CUDA C, then nvcc to an sm_90 cubin (no GPU needed)."""
    import tvm
    from tvm.s_tir import dlight as dl
    from tvm.support import nvcc

    mod, params = mixed_ops()
    config = QConfig(activation_symmetric=False, mode="integer")
    qmod = passes.realize(_calibrated(mod, params, (1, 3, 17, 17), config, n=2), config)
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    with target:
        lowered = relax.get_pipeline("zero")(qmod)
        lowered = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                          dl.gpu.GeneralReduction(), dl.gpu.Fallback())(lowered)
        executable = tvm.compile(lowered, target)
        modules, cuda = [executable.mod], []
        while modules:
            module = modules.pop()
            modules += list(module.imports)
            cuda += [module] if getattr(module, "kind", "") == "cuda" else []
        (cuda,) = cuda
        source = cuda.inspect_source("")
        assert "signed char" in source or "unsigned char" in source  # 8-bit codes on the GPU
        cubin = nvcc.compile_cuda(source, target_format="cubin", arch="sm_90", compiler="nvcc")
    assert len(cubin) > 1000
