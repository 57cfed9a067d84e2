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


CODES = np.arange(-128, 128, dtype=np.int64)
clip_ranges = st.tuples(st.integers(-128, 0), st.integers(1, 127))


@settings(max_examples=200)
@given(st.lists(st.integers(-(2**15), 2**15), min_size=1, max_size=8),
       st.integers(-(2**20), 2**20), st.integers(0, 8), clip_ranges)
def test_an_int32_affine_function_of_codes_is_found_again(a, b, s, bounds):
    # a function that has the int32 form is found, whatever its channels' multipliers
    lo, hi = bounds
    a = np.array(a, np.int64)
    target = np.clip((CODES[:, None] * a + b) >> s, lo, hi)
    fit = fp.fit_int32_affine(CODES, target, lo, hi, a / 2.0**s)
    assert fit is not None
    np.testing.assert_array_equal(fit.apply(CODES), target)


@settings(max_examples=200)
@given(st.lists(st.floats(2.0**-8, 8.0), min_size=1, max_size=8),
       st.integers(-(2**12), 2**12), st.integers(-(2**16), 2**16), clip_ranges)
def test_an_int32_affine_fit_of_a_q31_requantize_holds_in_int32(multipliers, weight, bias,
                                                                bounds):
    # a BatchNorm on a code (code * weight + bias), then a Q31 requantize in int64 and a clip:
    # where a fit is returned, the int32 arithmetic itself (wrapping numpy int32, not the
    # int64 ``apply``) reproduces every code's output, so no term can have overflowed
    lo, hi = bounds
    m0, shift = fp.quantize_multiplier(np.array(multipliers))
    r = (31 - shift).astype(np.int64)
    wide = CODES[:, None] * weight + bias
    target = np.clip((wide * m0 + (np.int64(1) << (r - 1))) >> r, lo, hi)
    fit = fp.fit_int32_affine(CODES, target, lo, hi, weight * m0 / np.exp2(r))
    assume(fit is not None)
    x = CODES.astype(np.int32)[:, None]
    with np.errstate(over="ignore"):
        int32 = (x * fit.a.astype(np.int32) + fit.b.astype(np.int32)) >> fit.s.astype(np.int32)
    np.testing.assert_array_equal(np.clip(int32, lo, hi), target)



@settings(max_examples=100, deadline=None)
@given(st.integers(-(2**15), 2**15), st.integers(-(2**15), 2**15), st.integers(-(2**20), 2**20),
       st.integers(0, 12), clip_ranges)
def test_an_int32_affine_function_of_two_codes_is_found_again(a, c, b, s, bounds):
    # a function of a pair of codes that has the int32 form is found, and the int32 arithmetic
    # itself (wrapping numpy int32) gives it on every pair
    lo, hi = bounds
    target = fp.Int32PairAffine(a, c, b, s, lo, hi).apply(CODES, CODES)
    fit = fp.fit_int32_pair_affine(CODES, CODES, target, lo, hi, a / 2.0**s, c / 2.0**s)
    assert fit is not None
    x, y = CODES.astype(np.int32)[:, None], CODES.astype(np.int32)[None, :]
    with np.errstate(over="ignore"):
        int32 = (x * np.int32(fit.a) + y * np.int32(fit.c) + np.int32(fit.b)) >> np.int32(fit.s)
    np.testing.assert_array_equal(np.clip(int32, lo, hi), target)

def test_a_q31_batchnorm_on_codes_has_an_int32_form():
    # the case the backend rewrites: realistic BatchNorm scales on int8 codes all fit
    rng = np.random.default_rng(0)
    weight = rng.integers(1, 2**10, 256)
    bias = rng.integers(-(2**16), 2**16, 256)
    m0, shift = fp.quantize_multiplier(rng.uniform(0.1, 4, 256) / weight)
    r = (31 - shift).astype(np.int64)
    wide = CODES[:, None] * weight + bias
    target = np.clip((wide * m0 + (np.int64(1) << (r - 1))) >> r, 0, 127)
    fit = fp.fit_int32_affine(CODES, target, 0, 127, weight * m0 / np.exp2(r))
    assert fit is not None and fit.s.size == 1  # one shift shared by every channel
    np.testing.assert_array_equal(fit.apply(CODES), target)
