"""Property tests of the fixed-point requantize, and its match with TVM's own lowering."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from tvm_quant_ext import fixed_point as fp
from tvm_quant_ext import qmath

multipliers = st.floats(1e-12, 1e4, allow_nan=False, allow_infinity=False)
accumulators = arrays(np.int64, st.integers(1, 32), elements=st.integers(-(2**31), 2**31 - 1))


def _exact_round(acc, multiplier):
    """round_half_up(acc * M) with exact rational arithmetic."""
    from fractions import Fraction
    m = Fraction(float(multiplier))
    return np.array([int(np.floor(Fraction(int(a)) * m + Fraction(1, 2))) for a in acc], np.int64)


@given(multipliers)
def test_quantize_multiplier_is_q31(multiplier):
    m0, shift = fp.quantize_multiplier(multiplier)
    assert 2**30 <= int(m0) < 2**31
    value = int(m0) * 2.0 ** (int(shift) - 31)
    assert abs(value - multiplier) <= multiplier * 2.0**-31


@settings(max_examples=200)
@given(accumulators, multipliers)
def test_requantize_within_one_of_exact_rounding(acc, multiplier):
    # the Q31 significand is off by <= 2^-31 relative: within 1 while |acc * M| <= 2^30
    # (any result that fits an int32 code with room to spare)
    acc = acc[np.abs(acc * multiplier) <= 2.0**30]
    m0, shift = fp.quantize_multiplier(multiplier)
    got = fp.requantize(acc, m0, shift)
    assert np.all(np.abs(got - _exact_round(acc, multiplier)) <= 1)


@given(accumulators, st.integers(-40, 20))
def test_power_of_two_multipliers_are_exact(acc, exponent):
    m0, shift = fp.quantize_multiplier(2.0**exponent)
    assert int(m0) == 2**30
    np.testing.assert_array_equal(fp.requantize(acc, m0, shift), _exact_round(acc, 2.0**exponent))


def test_ties_round_toward_plus_infinity():
    m0, shift = fp.quantize_multiplier(0.5)
    assert list(fp.requantize([-3, -1, 1, 3], m0, shift)) == [-1, 0, 1, 2]
    assert list(qmath.round_half_up([-1.5, -0.5, 0.5, 1.5])) == [-1, 0, 1, 2]  # simulate's rule


def test_requantize_clips_with_zero_point_and_per_axis():
    m0, shift = fp.quantize_multiplier(np.array([0.5, 0.25]))
    acc = np.array([[100, 100], [-100, -100], [600, 600]])
    got = fp.requantize_per_axis(acc, m0, shift, axis=1, zero_point=128, qmin=0, qmax=255)
    np.testing.assert_array_equal(got, [[178, 153], [78, 103], [255, 255]])


@settings(max_examples=200)
@given(accumulators, multipliers, st.sampled_from([2.0**31, 2.0**40, 2.0**50]))
def test_int64_form_matches_q31_or_stays_within_one(acc, multiplier, bound):
    assume(multiplier * bound < 2.0**60)  # else the result itself does not fit 64 bits
    acc = np.clip(acc, -bound, bound).astype(np.int64)
    form = fp.fixed_point(multiplier, bound)
    assert np.all((form.rshift >= 1) & (form.rshift <= 62))
    assert np.all(np.abs(bound * form.m0.astype(np.float64)) < 2.0**62)
    got = form.apply(acc)
    if bound <= 2.0**31:  # int32 accumulators: bit-identical to the Q31 requantize
        m0, shift = fp.quantize_multiplier(multiplier)
        np.testing.assert_array_equal(got, fp.requantize(acc, m0, shift))
    small = np.abs(acc * multiplier) <= 2.0**30 / 2 ** max(np.log2(bound) - 31, 0)
    assert np.all(np.abs(got - _exact_round(acc, multiplier))[small] <= 1)


def test_tiny_and_large_multipliers():
    acc = np.array([-(2**31), -1, 0, 1, 2**31 - 1])
    tiny = fp.fixed_point(1e-15, 2**31)
    np.testing.assert_array_equal(tiny.apply(acc), 0)
    big = fp.fixed_point(2.0**35, 2**20)
    np.testing.assert_array_equal(big.apply(np.array([-3, 5])), [-3 * 2**35, 5 * 2**35])
    with pytest.raises(ValueError, match="finite"):
        fp.quantize_multiplier(np.nan)


def test_matches_tvm_topi_fixed_point_multiply():
    """The rule above is TVM's: compile topi.fixed_point_multiply and compare bit for bit."""
    import tvm
    from tvm import te, topi

    rng = np.random.default_rng(0)
    acc = np.concatenate([np.arange(-64, 64), rng.integers(-(2**31), 2**31, 256)]).astype("int32")
    x = te.placeholder(acc.shape, "int32", name="x")
    for multiplier in (0.5, 0.125, 0.3, 0.7071, 1.0 / 3, 1e-3, 2.5):
        m0, shift = fp.quantize_multiplier(multiplier)
        y = topi.fixed_point_multiply(x, int(m0), int(shift))
        func = tvm.compile(te.create_prim_func([x, y]), target="llvm")
        out = tvm.runtime.tensor(np.zeros_like(acc))
        func(tvm.runtime.tensor(acc), out)
        expect = fp.requantize(acc, m0, shift)
        in_range = (expect >= -(2**31)) & (expect < 2**31)  # TVM casts its result to int32
        np.testing.assert_array_equal(out.numpy()[in_range], expect[in_range])
