"""The passes end to end on small Relax graphs (LLVM CPU)."""
import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_quant_ext as tq
from tvm_quant_ext import QConfig, passes, qmath
from tvm_quant_ext.points import get_state
import calibrate
from calibrate import CalibrationError

from graphs import dense_op_dense, single_conv, tiny_resnet


def _quantize_single(weight, bias, x_calib, config, groups=1):
    mod, params = single_conv(weight, bias, x_calib.shape, groups=groups)
    qmod = tq.quantize(mod, params, dataset=[x_calib], config=config)
    return mod, params, qmod


def _reference(mod, params, x):
    bound = relax.transform.BindParams("main", params)(mod)
    return tq.build(bound)(x)


def test_onnxruntime_tiny_weight_case_clip_collapses_and_adjust_recovers():
    # ONNX Runtime's report: bias [5, -4.5], input scale 0.5, weight scale 7.843e-10.
    rng = np.random.default_rng(0)
    weight = (rng.uniform(-1, 1, (2, 1, 1, 1)) * 1e-7).astype("float32")
    weight[:, 0, 0, 0] = [1e-7, -1e-7]  # max|w| = 1e-7 -> weight scale 1e-7 / 127 = 7.87e-10
    bias = np.array([5.0, -4.5], "float32")
    x = rng.uniform(-63.5, 63.5, (1, 1, 4, 4)).astype("float32")
    x[0, 0, 0, 0] = 63.5  # input scale 63.5 / 127 = 0.5
    ref = _reference(*single_conv(weight, bias, x.shape), x)

    _, _, clipped = _quantize_single(weight, bias, x, QConfig(bias_overflow="clip"))
    out_clip = tq.build(clipped)(x)
    assert abs(out_clip[0, 0].mean()) < 1.0, "clip should reproduce the collapse"
    assert qmath.snr_db(ref, out_clip) < 5

    _, _, adjusted = _quantize_single(weight, bias, x, QConfig(bias_overflow="adjust"))
    out = tq.build(adjusted)(x)
    assert out[0, 0].min() >= 4.9
    assert qmath.snr_db(ref, out) >= 50
    report = tq.get_report(adjusted)
    assert report.point("data")["scale"] == pytest.approx(0.5)
    adj = report.bias_adjustments
    assert [(a["layer"], a["channel"], a["action"]) for a in adj] == [
        ("conv", 0, "adjusted"), ("conv", 1, "adjusted")]
    assert adj[0]["old_weight_scale"] == pytest.approx(1e-7 / 127, rel=1e-5)
    assert adj[0]["new_weight_scale"] == pytest.approx(5.0 / (0.5 * (2**31 - 1)), rel=1e-6)

    with pytest.raises(tq.BiasOverflowError, match="layer 'conv' channel 0"):
        _quantize_single(weight, bias, x, QConfig(bias_overflow="error"))


def test_samsung_one_case_16bit_activations_64bit_bias():
    # ONE: MobileNetV2 first conv, tiny weights, 16-bit activations: bias -1.2156529 came
    # back as -7e-9 after saturating. With a 64-bit bias it must survive.
    rng = np.random.default_rng(1)
    weight = (rng.uniform(-1, 1, (3, 3, 3, 3)) * 1e-11).astype("float32")
    bias = np.array([-1.2156529, 0.25, 0.8], "float32")
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype("float32")
    config = QConfig(nbit_input=16, nbit_bias=64, nbit_activation=64, bias_overflow="error")
    mod, params, qmod = _quantize_single(weight, bias, x, config)
    out = tq.build(qmod)(x)
    np.testing.assert_allclose(out[0, :, 0, 0], bias, atol=1e-4)
    assert tq.get_report(qmod).bias_adjustments == []
    # the same layer with a 32-bit bias does not fit: the error says where
    with pytest.raises(tq.BiasOverflowError, match="layer 'conv' channel 0"):
        _quantize_single(weight, bias, x, config.replace(nbit_bias=32, nbit_activation=32))


def test_depthwise_tiny_channel_per_channel_beats_per_tensor():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((4, 1, 3, 3)).astype("float32")
    weight[2] *= 1e-3  # one nearly dead channel
    bias = np.array([0.1, -0.2, 0.003, 0.05], "float32")
    x = rng.standard_normal((1, 4, 10, 10)).astype("float32")
    ref = _reference(*single_conv(weight, bias, x.shape, groups=4), x)
    snr = {}
    for per_channel in (True, False):
        _, _, qmod = _quantize_single(weight, bias, x, QConfig(per_channel=per_channel), groups=4)
        out = tq.build(qmod)(x)
        snr[per_channel] = qmath.snr_db(ref[0, 2] - bias[2], out[0, 2] - bias[2])
        scales = tq.get_report(qmod).point("conv.weight")["scale"]
        assert isinstance(scales, list) == per_channel
    assert snr[True] > 25
    assert snr[True] > snr[False] + 20


def test_kinds_on_small_resnet():
    mod, params = tiny_resnet()
    annotated = passes.annotate(passes.prepare(mod, params), QConfig())
    points = get_state(annotated).points
    kinds = {pid: p.kind for pid, p in points.items()}
    assert kinds["data"] == "INPUT"
    for layer in ("stem", "block_conv1", "block_conv2", "fc"):
        assert kinds[f"{layer}.weight"] == "WEIGHT"
        assert kinds[f"{layer}.bias"] == "BIAS"  # stem's bias is the folded BatchNorm shift
    assert points["fc.bias"].input_point == "stem/mean"
    assert points["block_conv2.bias"].weight_point == "block_conv2.weight"
    # the residual add reads two 8-bit tensors and is no BIAS: the conv branch through an
    # ACTIVATION point, the shortcut through max pool, which keeps its input point's grid
    from tvm_quant_ext.points import parse_marker
    values = {b.var.name: b.value for b in annotated["main"].body.blocks[0].bindings}
    shortcut, branch = values["stem/add"].args
    assert parse_marker(values[branch.name])[1:] == ("block_conv2/bias", "ACTIVATION")
    assert parse_marker(values[values[shortcut.name].args[0].name])[1:] == ("stem/relu", "ACTIVATION")
    assert sorted(kinds.values()).count("BIAS") == 4
    assert all(p.layer != "stem/add" for p in points.values() if p.kind == "BIAS")


def test_prepare_keeps_float_results_and_folds_batchnorm():
    mod, params = tiny_resnet()
    prepared = passes.prepare(mod, params)
    ops = [b.value.op.name for b in prepared["main"].body.blocks[0].bindings
           if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]
    assert "relax.nn.batch_norm" not in ops and ops.count("relax.nn.conv2d") == 3
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype("float32")
    np.testing.assert_allclose(tq.build(prepared)(x), _reference(mod, params, x), rtol=1e-4, atol=1e-5)


def test_simulate_matches_numpy_reference():
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((3, 2, 1, 1)).astype("float32")
    bias = rng.standard_normal(3).astype("float32")
    x = rng.standard_normal((1, 2, 5, 5)).astype("float32")
    _, _, qmod = _quantize_single(weight, bias, x, QConfig())
    report = tq.get_report(qmod)
    s_in = report.point("data")["scale"]
    s_w = np.array(report.point("conv.weight")["scale"])
    xq = qmath.fake_quant(x, s_in, 8)
    wq = qmath.fake_quant(weight, s_w, 8, axis=0)
    bq = qmath.quantize_bias(bias, s_in, s_w, np.abs(weight).reshape(3, -1).max(1), nbit_bias=32)
    expect = np.einsum("oc,nchw->nohw", wq[:, :, 0, 0], xq) + bq.accumulator_value.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(tq.build(qmod)(x), expect, rtol=1e-5, atol=1e-5)


def test_bad_inputs_name_what_is_wrong():
    mod, params = tiny_resnet()
    x = np.ones((1, 3, 16, 16), "float32")
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(CalibrationError, match="'data'.*NaN"):
        tq.quantize(mod, params, dataset=[bad])
    with pytest.raises(CalibrationError, match="empty"):
        tq.quantize(mod, params, dataset=[])
    with pytest.raises(TypeError, match="nbit_wieght"):
        QConfig(nbit_wieght=8)
    with pytest.raises(TypeError, match="calib_mode"):
        QConfig.from_dict({"calib_mode": "max"})
    for bits in (7, 65):
        with pytest.raises(ValueError, match=f"nbit_bias={bits}"):
            QConfig(nbit_bias=bits)
    with pytest.raises(ValueError, match="skip_layers.*'stemm'"):
        tq.quantize(mod, params, dataset=[x], config=QConfig(skip_layers=("stemm",)))
    with pytest.raises(ValueError, match="input 'data'.*shape"):
        tq.quantize(mod, params, dataset=[np.ones((1, 3, 8, 8), "float32")])


def test_unsupported_op_float_or_error():
    mod, params = dense_op_dense(relax.op.sigmoid)
    x = np.linspace(-1, 1, 4, dtype="float32").reshape(1, 4)
    qmod = tq.quantize(mod, params, dataset=[x])
    float_ops = tq.get_report(qmod).float_ops
    assert [(f["op"], f["tensor"]) for f in float_ops] == [("relax.sigmoid", "fc/sigmoid")]
    with pytest.raises(tq.UnsupportedOpError, match="relax.sigmoid.*'fc/sigmoid'"):
        tq.quantize(mod, params, dataset=[x], config=QConfig(on_unsupported_op="error"))


def test_skip_layers_by_name_keeps_layer_float():
    mod, params = tiny_resnet()
    x = np.random.default_rng(5).standard_normal((2, 1, 3, 16, 16)).astype("float32")
    qmod = tq.quantize(mod, params, dataset=list(x),
                       config=QConfig(skip_layers=("stem", "block.conv2")))  # torch-style name
    report = tq.get_report(qmod)
    assert not any(p["layer"] in ("stem", "block_conv2") and p["kind"] == "WEIGHT"
                   for p in report.points)
    assert {"tensor": "stem", "op": "relax.nn.conv2d", "reason": "in QConfig.skip_layers"} in report.float_ops
    assert "block_conv1.weight" in {p["id"] for p in report.points}


def test_every_rule_on_a_mixed_graph():
    from graphs import mixed_ops

    mod, params = mixed_ops()
    rng = np.random.default_rng(6)
    calib = [rng.standard_normal((1, 3, 17, 17)).astype("float32") for _ in range(8)]
    qmod = tq.quantize(mod, params, dataset=calib)
    report = tq.get_report(qmod)
    assert report.float_ops == []
    kinds = {p["id"]: p["kind"] for p in report.points}
    assert kinds["a.bias"] == "BIAS" and kinds["dw.weight"] == "WEIGHT" and kinds["fc.bias"] == "BIAS"
    assert "dw.bias" not in kinds and "b.bias" not in kinds  # no bias, no BIAS point
    x = rng.standard_normal((1, 3, 17, 17)).astype("float32")
    assert qmath.snr_db(_reference(mod, params, x), tq.build(qmod)(x)) > 25


def test_already_bound_weights_get_numbered_layer_names():
    mod, params = tiny_resnet()
    bound = relax.transform.BindParams("main", params)(mod)
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype("float32")
    report = tq.get_report(tq.quantize(bound, dataset=[x]))
    ids = {p["id"] for p in report.points}
    assert {"conv2d_0.weight", "conv2d_2.bias", "matmul_0.bias"} <= ids


# -- calibrators through the pipeline ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["max", "power2", "percentile", "l2", "kl", "auto"])
def test_every_calibrator_runs_end_to_end(mode):
    mod, params = tiny_resnet()
    data = [np.random.default_rng(k).normal(size=(1, 3, 16, 16)).astype("float32") for k in range(4)]
    config = QConfig(calibrate_mode=mode, weight_scale=mode)
    qmod = tq.quantize(mod, params, dataset=data, config=config)
    report = tq.get_report(qmod)
    chosen = {row["calibrator"] for row in report.points if row["kind"] in ("ACTIVATION", "WEIGHT")}
    assert chosen <= set(calibrate.OBSERVERS)  # auto resolves to a real calibrator per layer
    if mode != "auto":
        assert chosen == {mode}
    out = tq.build(qmod)(data[0])
    ref = tq.build(tq.passes.prepare(mod, params))(data[0])
    assert qmath.snr_db(ref, out) > 15


def test_auto_picks_the_smallest_measured_error_per_point():
    mod, params = tiny_resnet()
    data = [np.random.default_rng(k).normal(size=(1, 3, 16, 16)).astype("float32") for k in range(3)]
    annotated = tq.passes.annotate(tq.passes.prepare(mod, params), QConfig(calibrate_mode="auto"))
    result = tq.passes.run_calibration(annotated, data, QConfig(calibrate_mode="auto"))
    assert result.auto_errors and set(result.auto_errors) == set(result.calibrators)
    for pid, errors in result.auto_errors.items():
        assert set(errors) == set(calibrate.AUTO_CANDIDATES)
        assert errors[result.calibrators[pid]] == min(errors.values())
    with pytest.raises(ValueError, match="re-iterable"):
        tq.passes.run_calibration(annotated, iter(data), QConfig(calibrate_mode="auto"))


def test_per_layer_calibrator_overrides_and_unknown_layer():
    mod, params = tiny_resnet()
    data = [np.random.default_rng(k).normal(size=(1, 3, 16, 16)).astype("float32") for k in range(2)]
    config = QConfig(calibrate_mode="max", layer_calibrate_mode={"stem": "kl"},
                     layer_weight_scale={"fc": "l2"})
    report = tq.get_report(tq.quantize(mod, params, dataset=data, config=config))
    assert report.point("stem/relu")["calibrator"] == "kl"
    assert report.point("block_conv1/relu")["calibrator"] == "max"
    assert report.point("fc.weight")["calibrator"] == "l2"
    assert report.point("stem.weight")["calibrator"] == "max"
    with pytest.raises(ValueError, match=r"layer_calibrate_mode names \['nope'\].*layers"):
        tq.quantize(mod, params, dataset=data, config=QConfig(layer_calibrate_mode={"nope": "kl"}))


def test_asymmetric_activations_use_unsigned_codes_with_zero_point():
    mod, params = tiny_resnet()
    data = [np.random.default_rng(k).normal(size=(1, 3, 16, 16)).astype("float32") for k in range(3)]
    sym = tq.quantize(mod, params, dataset=data, config=QConfig())
    asym = tq.quantize(mod, params, dataset=data, config=QConfig(activation_symmetric=False))
    rep_s, rep_a = tq.get_report(sym), tq.get_report(asym)
    # after a ReLU: zero point 0 and (max calibration) half the step of the signed grid
    assert rep_a.point("stem/relu")["zero_point"] == 0
    assert rep_a.point("stem/relu")["scale"] == pytest.approx(rep_s.point("stem/relu")["scale"] * 127 / 255)
    # the input has negative values: a zero point in the middle of [0, 255]
    assert 0 < rep_a.point("data")["zero_point"] < 255
    ref = tq.build(tq.passes.prepare(mod, params))(data[0])
    assert qmath.snr_db(ref, tq.build(asym)(data[0])) >= qmath.snr_db(ref, tq.build(sym)(data[0])) - 1.0


def test_global_scale_needs_no_dataset_and_others_do():
    mod, params = tiny_resnet()
    qmod = tq.quantize(mod, params, config=QConfig(calibrate_mode="global_scale", global_scale=4.0))
    rows = [r for r in tq.get_report(qmod).points if r["kind"] in ("INPUT", "ACTIVATION")]
    assert rows and all(r["calibrator"] == "global_scale" and r["scale"] == 4.0 / 128 for r in rows)
    with pytest.raises(ValueError, match=r"needs a dataset.*\['max'\]"):
        tq.quantize(mod, params, config=QConfig(calibrate_mode="max"))
