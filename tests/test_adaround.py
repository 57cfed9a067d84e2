"""Adaptive weight rounding: the rectified-sigmoid math, lower layer error than nearest on the
calibration data, codes within [floor, ceil] and the int8 range, determinism, the same codes
in both realize modes, composition with bias correction and equalization, clear errors."""
import argparse

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_quant_ext as tq
from tvm_quant_ext import QConfig, passes, rounding
from tvm_quant_ext.config_flags import add_qconfig_arguments, qconfig_from_args
from tvm_quant_ext.passes.realize.plan import RealizeContext, collect_constants, plan_layers
from tvm_quant_ext.points import get_state

from taps import assert_integer_within_one_lsb
from graphs import single_conv, tiny_resnet

ITERATIONS = 150


def _data(shape, n, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) + offset).astype("float32") for _ in range(n)]


def _calibrated(mod, params, calib, config):
    prepared = passes.prepare(mod, params, config)
    return passes.calibrate(passes.annotate(prepared, config), calib, config)


def _plans(calibrated, config):
    ctx = RealizeContext(config, get_state(calibrated))
    collect_constants(calibrated, ctx)
    plan_layers(ctx)
    return ctx


@pytest.fixture(scope="module", params=[True, False], ids=["per_channel", "per_tensor"])
def rounded(request):
    mod, params = tiny_resnet()
    calib = _data((1, 3, 16, 16), 8, 0)
    config = QConfig(per_channel=request.param, weight_rounding="adaround",
                     adaround_iterations=ITERATIONS)
    calibrated = _calibrated(mod, params, calib, config)
    return calibrated, passes.round_weights(calibrated, calib, config), calib, config


# -- math ---------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.floats(0.0, 0.999))
def test_initial_logits_invert_the_rectified_sigmoid(fraction):
    assert abs(float(rounding.rectified_sigmoid(rounding.initial_logits(fraction))) - fraction) < 1e-9


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000), st.data())
def test_beta_is_off_in_warm_up_then_falls_from_20_to_2(iterations, data):
    i = data.draw(st.integers(0, iterations - 1))
    beta = rounding.beta_at(i, iterations)
    if i < rounding.WARMUP * iterations:
        assert beta is None
    else:
        assert rounding.BETA_END <= beta <= rounding.BETA_START
        if i + 1 < iterations:
            assert rounding.beta_at(i + 1, iterations) <= beta


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20), st.floats(2.0, 20.0))
def test_regularizer_vanishes_only_at_hard_decisions(h, beta):
    value = rounding.rounding_regularizer(h, beta)
    assert 0.0 <= value <= len(h) + 1e-9
    assert rounding.rounding_regularizer(np.round(h), beta) == 0.0
    assert rounding.rounding_regularizer([0.5], beta) == 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-300.0, 300.0), min_size=1, max_size=30), st.floats(0.01, 3.0),
       st.integers(0, 2**30))
def test_rounded_codes_stay_within_floor_ceil_and_the_range(weights, scale, seed):
    w = np.array(weights)
    up = np.random.default_rng(seed).integers(0, 2, w.shape)
    codes = rounding.rounded_codes(w, scale, up, 127)
    ratio = w / scale
    assert np.all(codes >= np.clip(np.floor(ratio), -127, 127))
    assert np.all(codes <= np.clip(np.ceil(ratio), -127, 127))
    assert np.all(np.abs(codes) <= 127)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=70))
def test_mask_packing_round_trips(bits):
    mask = np.array(bits)
    np.testing.assert_array_equal(rounding.unpack_mask(rounding.pack_mask(mask), mask.shape), mask)


# -- on a small conv net ----------------------------------------------------------------------------
def test_adaround_lowers_every_layer_output_error(rounded):
    _, out, _, _ = rounded
    rows = get_state(out).weight_rounding_rows
    assert [r["layer"] for r in rows] == ["stem", "block_conv1", "block_conv2", "fc"]
    for r in rows:
        assert r["mse_adaround"] < r["mse_nearest"], r
        assert r["snr_adaround_db"] > r["snr_nearest_db"], r
        assert 0 < r["codes_changed"] < r["weights"], r


def test_codes_within_floor_and_ceil(rounded):
    calibrated, out, _, config = rounded
    learned, nearest = _plans(out, config), _plans(calibrated, config)
    changed = 0
    for pid, plan in learned.plans.items():
        point = get_state(out).points[pid]
        scale = np.asarray(plan.weight_scale, np.float64)
        np.testing.assert_array_equal(scale, nearest.plans[pid].weight_scale)
        shape = [1] * plan.weight_codes.ndim
        shape[point.axis] = -1
        ratio = learned.weights[pid].astype(np.float64) / np.broadcast_to(
            scale, (plan.weight_codes.shape[point.axis],)).reshape(shape)
        assert np.all(plan.weight_codes >= np.floor(ratio)) and np.all(plan.weight_codes <= np.ceil(ratio))
        assert np.abs(plan.weight_codes).max() <= 127
        changed += int(np.sum(plan.weight_codes != nearest.plans[pid].weight_codes))
    assert changed > 0


def test_adaround_is_deterministic(rounded):
    calibrated, out, calib, config = rounded
    again = passes.round_weights(calibrated, calib, config)
    assert get_state(again).weight_rounding == get_state(out).weight_rounding


@pytest.mark.parametrize("extra", [{}, {"bias_correction": True, "equalize": True,
                                        "activation_symmetric": False}])
def test_integer_mode_emits_the_same_codes_as_simulate(extra):
    mod, params = tiny_resnet()
    calib = _data((1, 3, 16, 16), 6, 0)
    config = QConfig(weight_rounding="adaround", adaround_iterations=ITERATIONS, **extra)
    calibrated = _calibrated(mod, params, calib, config)
    calibrated = passes.maybe_correct(passes.maybe_round(calibrated, calib, config), calib, config)
    assert get_state(calibrated).weight_rounding
    assert bool(get_state(calibrated).bias_corrections) == bool(extra)
    integer_config = config.replace(mode="integer")
    sim_plans, int_plans = _plans(calibrated, config), _plans(calibrated, integer_config)
    for pid, plan in sim_plans.plans.items():
        np.testing.assert_array_equal(int_plans.plans[pid].weight_codes, plan.weight_codes)
    assert_integer_within_one_lsb(calibrated, config, _data((1, 3, 16, 16), 3, 5))


def test_one_layer_model_output_error_drops_on_the_calibration_data():
    # measured on the compiled models, apart from the pass's own bookkeeping; 4-bit weights
    # so that weight rounding, not the input's quantization, is most of the error
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((6, 4, 3, 3)) / 6
    mod, params = single_conv(weight, rng.standard_normal(6) * 0.1, (1, 4, 8, 8), padding=(1, 1, 1, 1))
    calib = _data((1, 4, 8, 8), 8, 1, offset=0.3)
    ref = tq.build(passes.prepare(mod, params))
    errors = {}
    for name in ("nearest", "adaround"):
        config = QConfig(per_channel=False, nbit_weight=4, weight_rounding=name,
                         adaround_iterations=200)
        model = tq.build(tq.quantize(mod, params, calib, config))
        errors[name] = np.mean([np.mean((model(x) - ref(x)) ** 2) for x in calib])
    # the input's and output's quantization noise is common to both: a few per cent is the gain
    assert errors["adaround"] < 0.99 * errors["nearest"], errors


def test_report_rows_and_summary():
    mod, params = tiny_resnet()
    calib = _data((1, 3, 16, 16), 4, 0)
    q = tq.quantize(mod, params, calib, QConfig(weight_rounding="adaround", adaround_iterations=20))
    report = tq.get_report(q)
    assert len(report.weight_rounding) == 4 and "adaptive rounding: 4 layers" in report.summary()
    assert report.to_dict()["weight_rounding"] == report.weight_rounding
    assert tq.get_report(tq.quantize(mod, params, calib, QConfig())).weight_rounding == []


# -- configuration ------------------------------------------------------------------------------
def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match=r"weight_rounding='up'.*\['nearest', 'adaround'\]"):
        QConfig(weight_rounding="up")
    with pytest.raises(ValueError, match="adaround_iterations=0"):
        QConfig(adaround_iterations=0)
    with pytest.raises(TypeError, match="adaround_iterations"):
        QConfig(adaround_iterations=1.5)
    mod, params = tiny_resnet()
    config = QConfig(weight_rounding="adaround")
    calibrated = _calibrated(mod, params, _data((1, 3, 16, 16), 2, 0), config)
    with pytest.raises(ValueError, match="calibration dataset"):
        passes.round_weights(calibrated, None, config)
    with pytest.raises(ValueError, match="not an iterator"):
        passes.round_weights(calibrated, iter(_data((1, 3, 16, 16), 2, 0)), config)


def test_command_line_flags(capsys):
    parser = argparse.ArgumentParser()
    add_qconfig_arguments(parser)
    config = qconfig_from_args(parser.parse_args(["--weight-rounding", "adaround",
                                                  "--adaround-iterations", "200"]))
    assert (config.weight_rounding, config.adaround_iterations) == ("adaround", 200)
    assert qconfig_from_args(parser.parse_args([])).weight_rounding == "nearest"
    with pytest.raises(SystemExit):
        parser.parse_args(["--weight-rounding", "upward"])
    assert "invalid choice: 'upward'" in capsys.readouterr().err

