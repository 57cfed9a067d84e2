"""Property tests of the quantization arithmetic, apart from TVM."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from tvm_quant_ext import qmath

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@given(arrays(np.float32, st.integers(1, 64), elements=finite), st.integers(2, 16))
def test_fake_quant_error_is_half_a_step_inside_range(x, nbit):
    threshold = float(np.max(np.abs(x))) or 1.0
    scale = threshold / qmath.qmax_for(nbit)
    err = np.abs(qmath.fake_quant(x, scale, nbit) - x.astype(np.float64))
    assert np.all(err <= scale / 2 * (1 + 1e-9))


@given(arrays(np.float64, st.integers(1, 32), elements=st.floats(-1e3, 1e3)), st.integers(2, 16))
def test_codes_stay_in_symmetric_range(x, nbit):
    codes = qmath.quantize(x, 1e-3, nbit)
    assert codes.max(initial=0) <= qmath.qmax_for(nbit)
    assert codes.min(initial=0) >= -qmath.qmax_for(nbit)


def test_round_half_up_is_fixed_point_rounding():
    assert list(qmath.round_half_up([-1.5, -0.5, 0.5, 1.5, 2.49])) == [-1, 0, 1, 2, 2]


bias_vectors = arrays(np.float64, st.integers(1, 8), elements=st.floats(-100, 100))


@settings(max_examples=200)
@given(bias_vectors, st.floats(1e-6, 10), st.floats(1e-14, 1e-1), st.sampled_from([16, 32, 64]),
       st.booleans())
def test_adjust_always_fits_and_keeps_bias(bias, s_in, s_w, nbit, per_channel):
    quant = qmath.quantize_bias(bias, s_in, s_w, np.full(bias.shape, s_w * 127), nbit_bias=nbit,
                                nbit_accumulator=64, policy="adjust", per_channel=per_channel)
    limit = qmath.bias_limit(nbit)
    assert np.all(np.abs(quant.codes) <= limit)
    assert np.all(quant.weight_scale >= s_w)  # adjust only ever raises weight scales
    # the bias survives to within half a step of its (possibly raised) accumulator scale
    assert np.all(np.abs(quant.accumulator_value - bias) <= quant.scale / 2 * (1 + 1e-6) + 1e-12)
    changed = quant.weight_scale != s_w
    assert {a.channel for a in quant.adjustments} == set(np.flatnonzero(changed)) or not per_channel


def test_overflow_policies_on_onnxruntime_case():
    bias, s_in, s_w = np.array([5.0, -4.5]), 0.5, np.array([7.843e-10, 7.843e-10])
    common = dict(nbit_bias=32, weight_absmax=s_w * 127)
    clipped = qmath.quantize_bias(bias, s_in, s_w, policy="clip", **common)
    assert abs(clipped.accumulator_value[0]) < 1.0  # the collapse ONNX Runtime users saw
    assert [a.action for a in clipped.adjustments] == ["clipped", "clipped"]
    adjusted = qmath.quantize_bias(bias, s_in, s_w, policy="adjust", **common)
    np.testing.assert_allclose(adjusted.accumulator_value, bias, rtol=1e-6)
    assert [a.action for a in adjusted.adjustments] == ["adjusted", "adjusted"]
    zeroed = qmath.quantize_bias(bias, s_in, s_w, policy="zero_tiny", tiny_weight_threshold=1e-6,
                                 **common)
    assert zeroed.zeroed.all() and [a.action for a in zeroed.adjustments] == ["zeroed"] * 2
    np.testing.assert_allclose(zeroed.accumulator_value, bias, rtol=1e-6)
    with pytest.raises(qmath.BiasOverflowError, match="layer '<layer>' channel 0"):
        qmath.quantize_bias(bias, s_in, s_w, policy="error", **common)


def test_relay_8bit_bias_keeps_8_significant_bits():
    bias = np.array([3.0, 0.0123, -1.5])
    quant = qmath.quantize_bias(bias, 0.05, np.full(3, 0.01), np.full(3, 1.27), nbit_bias=8)
    own_scale = 3.0 / 127
    assert abs(quant.accumulator_value[1] - bias[1]) > 0.01  # below 1 LSB of the 8-bit scale
    assert np.all(np.abs(quant.accumulator_value - bias) <= own_scale / 2 + 0.0005 / 2)
    wide = qmath.quantize_bias(bias, 0.05, np.full(3, 0.01), np.full(3, 1.27), nbit_bias=32)
    assert np.all(np.abs(wide.accumulator_value - bias) <= 0.0005 / 2 + 1e-12)


@settings(max_examples=200)
@given(bias_vectors, st.integers(8, 15), st.sampled_from(["max", "power2"]))
def test_relay_rule_error_is_half_a_step_of_the_own_scale(bias, nbit, mode):
    """8..15 bits: the bias keeps nbit bits at its own per-tensor scale, then lands on the
    accumulator grid; one more bit halves the bound."""
    s_in, s_w = 0.05, 0.01
    quant = qmath.quantize_bias(bias, s_in, np.full(bias.shape, s_w), np.full(bias.shape, 1.27),
                                nbit_bias=nbit, relay8_scale_mode=mode)
    threshold = float(np.max(np.abs(bias))) or 1.0
    if mode == "power2":
        own_scale = 2.0 ** np.ceil(np.log2(threshold)) / 2 ** (nbit - 1)
    else:
        own_scale = threshold / qmath.qmax_for(nbit)
    assert own_scale <= 2 * threshold / 2 ** (nbit - 1) * (1 + 1e-12)
    err = np.abs(quant.accumulator_value - bias)
    acc_step = s_in * s_w
    in_range = np.abs(bias) <= qmath.qmax_for(nbit) * own_scale
    assert np.all(err[in_range] <= (own_scale + acc_step) / 2 * (1 + 1e-9))
    # power2 can put max|b| one step past the largest code (2^k needs code 2^(nbit-1)): clipped
    assert np.all(err <= own_scale + acc_step / 2 * (1 + 1e-9))
    assert not quant.adjustments  # the shifted code always fits a 32-bit accumulator here


@pytest.mark.parametrize("nbit", [7, 65])
def test_bias_bits_outside_8_to_64_are_rejected(nbit):
    with pytest.raises(ValueError, match=f"nbit_bias={nbit}"):
        qmath.quantize_bias(np.ones(2), 0.1, np.full(2, 0.1), np.full(2, 1.0), nbit_bias=nbit)


def test_snr():
    assert qmath.snr_db([1.0, 1.0], [1.0, 1.0]) == float("inf")
    assert qmath.snr_db([1.0, 0.0], [1.1, 0.0]) == pytest.approx(20.0)
