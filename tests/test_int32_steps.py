"""Epilogue steps in int32 where the value's range makes it exact (backend/cpu/int32_steps.py):
the fixed-point identities behind it (property tests), chains rewritten and evaluated against
the originals (numpy rules, and compiled by TVM on extreme inputs), and real layers' ranges."""
from dataclasses import replace

import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from tvm import relax, te
from tvm.s_tir import Schedule

from tvm_quant_ext import fixed_point as fp
from tvm_quant_ext.backend.cpu.epilogue import EPILOGUE_OPS, Epilogue, Side, Step
from tvm_quant_ext.backend.cpu.int32_runs import (INT32_AFFINE, INT32_PAIR_AFFINE,
                                                  collapse_int32_runs)
from tvm_quant_ext.backend.cpu.int32_steps import Q31_HIGH, Q31_SPLIT, narrow_steps
from tvm_quant_ext.backend.cpu.layers import layer_output_range
from tvm_quant_ext.passes.realize.integer.elementwise import residual_common_scale

from kernel_checks import HOST

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
int32s = st.integers(INT32_MIN, INT32_MAX)
significands = st.integers(0, INT32_MAX)


def _q31(x, m0, r):
    rounding = np.int64(1) << np.int64(r - 1)
    return (np.asarray(x, np.int64) * np.int64(m0) + rounding) >> np.int64(r)


@settings(max_examples=300)
@given(st.lists(int32s, min_size=1, max_size=16), st.integers(INT32_MIN, INT32_MAX),
       st.integers(fp.HIGH_HALF_MIN_SHIFT, fp.HIGH_HALF_MAX_SHIFT))
def test_the_high_half_of_an_int32_product_gives_the_q31_multiply(xs, m0, r):
    xs = np.array(xs + [INT32_MIN, INT32_MAX, -1, 0, 1], np.int64)
    operands = fp.high_half_operands(m0, r)
    got = fp.multiply_high_half(xs, *operands)
    np.testing.assert_array_equal(got, _q31(xs, m0, r))
    assert all(o.dtype == np.int32 for o in operands)


def test_no_high_half_form_outside_its_shifts_or_for_a_wide_significand():
    assert fp.high_half_operands(2**30, 32) is None
    assert fp.high_half_operands(2**30, 63) is None
    assert fp.high_half_operands(2**31, 40) is None


@settings(max_examples=300)
@given(st.integers(-2**20, 2**20), st.integers(0, 2**12), significands, st.integers(1, 31))
def test_the_split_form_gives_the_q31_multiply_wherever_it_is_offered(lo, span, m0, r):
    hi = lo + span
    operands = fp.split_operands(m0, r, lo, hi)
    if operands is None:  # some term would leave int32: check that one does
        x = np.array([lo, hi], np.int64)
        high, low = m0 >> r, m0 - ((m0 >> r) << r)
        terms = np.concatenate([x * high, x * low + (1 << (r - 1)), _q31(x, m0, r)])
        assert terms.min() < INT32_MIN or terms.max() > INT32_MAX
        return
    xs = np.arange(lo, hi + 1, dtype=np.int64)
    np.testing.assert_array_equal(fp.multiply_split(xs, *operands), _q31(xs, m0, r))


def evaluate(steps, x, sides=()):
    """``steps`` on numpy ``x`` by their numpy rules (each side step takes the next array of
    ``sides`` through its own chain)."""
    sides = iter(sides)
    for step in steps:
        operands = [np.asarray(a) for a in step.operands]
        if step.side is not None:
            operands = [evaluate(step.side.chain.steps, next(sides))] + operands
        x = np.asarray(EPILOGUE_OPS[step.op].numpy(x, operands, step)).astype(step.dtype)
    return x


def _const(value, dtype="int64"):
    return np.asarray(value, dtype)


def _requantize(m0, r, channels=None):
    shape = (channels,) if channels else ()
    return [Step("relax.astype", (), "int64"),
            Step("relax.multiply", (np.broadcast_to(_const(m0), shape).copy(),), "int64"),
            Step("relax.add", (_const(1 << (r - 1)),), "int64"),
            Step("relax.right_shift", (_const(r),), "int64")]


def _side(channels, chain, dtype="int8"):
    var = relax.Var("branch", relax.TensorType((channels,), dtype))
    return Side(var, dtype, Epilogue(chain))


def _block_end(channels=32):
    """A ResNet block's last conv as the realize writes it: the conv's requantize to a code,
    both branches rescaled to the sum's scale, the sum cast to int32, requantized to a code."""
    rng = np.random.default_rng(0)
    m0 = rng.integers(2**30, 2**31, channels)
    return [
        *_requantize(m0, 39, channels)[0:1],
        Step("relax.add", (rng.integers(-2**20, 2**20, channels).astype(np.int64),), "int64"),
        *_requantize(m0, 39, channels)[1:],
        Step("relax.clip", (), "int64", (-127, 127)), Step("relax.astype", (), "int8"),
        *_requantize(1130778447, 13),
        Step("relax.add", (), "int64", side=_side(channels, _requantize(1379046539, 14))),
        Step("relax.astype", (), "int32"),
        *_requantize(1082711735, 50),
        Step("relax.clip", (), "int64", (-127, 127)), Step("relax.astype", (), "int8")]


def _inputs(lo, hi, n, seed=1):
    rng = np.random.default_rng(seed)
    ends = np.array([lo, hi, lo + 1, hi - 1, 0, -1, 1], np.int64).clip(lo, hi)
    return np.concatenate([ends, rng.integers(lo, hi + 1, n - ends.size)]).astype(np.int32)


def test_a_block_end_runs_in_int32_and_gives_the_same_codes():
    channels = 32
    steps = _block_end(channels)
    in_range = (-2**24, 2**24)
    narrowed = narrow_steps(Epilogue(steps), "int32", in_range).steps
    assert [s.op for s in narrowed].count(Q31_HIGH) == 2
    assert [s.op for s in narrowed].count(Q31_SPLIT) == 1  # the conv's code rescaled
    assert all(s.dtype != "int64" for s in narrowed)
    side_chain = next(s for s in narrowed if s.side is not None).side.chain.steps  # the shortcut
    assert [s.op for s in side_chain] == [Q31_SPLIT]
    x = _inputs(*in_range, 4096).reshape(-1, channels)
    side = _inputs(-128, 127, 4096, seed=2).astype(np.int8).reshape(-1, channels)
    np.testing.assert_array_equal(evaluate(narrowed, x, [side]), evaluate(steps, x, [side]))


def test_a_sum_cast_to_int32_wraps_in_int32_like_the_int64_sum():
    # a projection's int32 low bits added to the other branch: the realize casts the int64 sum
    # to int32 right away, so the sum may wrap; in int32 it wraps the same way
    steps = [Step("relax.astype", (), "int64"),
             Step("relax.add", (), "int64", side=_side(8, [Step("relax.astype", (), "int64")],
                                                       "int32")),
             Step("relax.astype", (), "int32"), *_requantize(1082711735, 40),
             Step("relax.clip", (), "int64", (-127, 127)), Step("relax.astype", (), "int8")]
    narrowed = narrow_steps(Epilogue(steps), "int32").steps
    assert all(s.dtype != "int64" for s in narrowed)
    x = _inputs(INT32_MIN, INT32_MAX, 4096).reshape(-1, 8)
    side = _inputs(INT32_MIN, INT32_MAX, 4096, seed=3).reshape(-1, 8)
    np.testing.assert_array_equal(evaluate(narrowed, x, [side]), evaluate(steps, x, [side]))


def test_steps_that_need_64_bits_stay_int64():
    # the layer's bias-added value may leave int32, and a 2^20 multiply of a wide value does
    steps = [Step("relax.astype", (), "int64"), Step("relax.add", (_const(2**31),), "int64"),
             Step("relax.multiply", (_const(2**20),), "int64"),
             Step("relax.right_shift", (_const(24),), "int64")]
    narrowed = narrow_steps(Epilogue(steps), "int32").steps
    assert narrowed[-1].dtype == "int64" and narrowed[-1].op == "relax.right_shift"
    x = _inputs(INT32_MIN, INT32_MAX, 512)
    np.testing.assert_array_equal(evaluate(narrowed, x), evaluate(steps, x))


def _random_chain(draw):
    """A chain of the realize's kinds of steps with random constants, dtypes kept consistent."""
    steps, dtype = [], "int32"
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["q31", "add", "multiply", "shift", "clip", "cast"]))
        if kind == "cast":
            dtype = draw(st.sampled_from(["int64", "int32", "int8"]))
            steps.append(Step("relax.astype", (), dtype))
        elif dtype == "int8":
            steps.append(Step("relax.astype", (), "int64"))
            dtype = "int64"
        elif kind == "q31":
            if dtype != "int64":
                steps.append(Step("relax.astype", (), "int64"))
                dtype = "int64"
            r = draw(st.integers(1, 62))
            steps += _requantize(draw(st.integers(0, 2**31 - 1)), r)[1:]
        elif kind == "add":
            bits = draw(st.integers(0, 40 if dtype == "int64" else 30))
            steps.append(Step("relax.add", (_const(draw(st.integers(-2**bits, 2**bits)), dtype),),
                              dtype))
        elif kind == "multiply":
            bits = draw(st.integers(0, 20 if dtype == "int64" else 10))
            steps.append(Step("relax.multiply", (_const(draw(st.integers(-2**bits, 2**bits)),
                                                        dtype),), dtype))
        elif kind == "shift":
            steps.append(Step("relax.right_shift", (_const(draw(st.integers(
                0, 40 if dtype == "int64" else 31)), dtype),), dtype))
        else:
            lo = draw(st.integers(-2**20, 2**20))
            steps.append(Step("relax.clip", (), dtype, (lo, lo + draw(st.integers(0, 2**21)))))
    return steps


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from([(INT32_MIN, INT32_MAX), (-2**20, 2**20), (-128, 127)]))
def test_any_chain_gives_the_same_values_after_the_rewrite(data, in_range):
    steps = _random_chain(data.draw)
    narrowed = narrow_steps(Epilogue(steps), "int32", in_range)
    x = _inputs(*in_range, 256)
    with np.errstate(over="ignore"):  # the original int64 chain may wrap: so must the rewrite
        np.testing.assert_array_equal(evaluate(narrowed.steps, x), evaluate(steps, x))
    assert narrowed.dtype == Epilogue(steps).dtype


def _compiled(epilogue: Epilogue, n: int):
    """The epilogue over a 1-D int32 input of ``n`` (its per-channel constants along it),
    vectorized and compiled for this machine's CPU."""
    x = te.placeholder((n,), "int32", "x")
    extra, sides = epilogue.placeholders()
    out = te.compute((n,), lambda i: epilogue.apply(x[i], (i,), extra, sides), name="out")
    sch = Schedule(te.create_prim_func([x, *extra, *sides, out]))
    outer, inner = sch.split(sch.get_loops(sch.get_sblock("out"))[0], [None, 16])
    sch.vectorize(inner)
    lib = tvm.compile(sch.mod, HOST)

    def run(values, side_values=()):
        result = tvm.runtime.tensor(np.zeros(n, epilogue.dtype))
        lib(*[tvm.runtime.tensor(a) for a in
              (values, *epilogue.tensor_operands(), *side_values)], result)
        return result.numpy()
    run.assembly = lib.mod.inspect_source("s")
    return run


@pytest.mark.parametrize("chain", ["block_end", "wrapping_sum"])
def test_the_compiled_rewrite_gives_the_graphs_values_on_extreme_inputs(chain):
    # TVM's simplifier takes int32 arithmetic as never overflowing; the rewritten kernel must
    # still wrap where the graph's int32 values do, and round where its int64 values do
    n = 64
    if chain == "block_end":
        steps, in_range = _block_end(n), (-2**24, 2**24)
        side_range, side_dtype = (-128, 127), "int8"
    else:
        steps = [Step("relax.add", (), "int32", side=_side(n, [], "int32")),
                 *_requantize(1082711735, 40), Step("relax.clip", (), "int64", (-127, 127)),
                 Step("relax.astype", (), "int8")]
        in_range = side_range = (INT32_MIN, INT32_MAX)
        side_dtype = "int32"
    narrowed = narrow_steps(Epilogue(steps), "int32", in_range)
    run = _compiled(narrowed, n)
    for seed in range(4):
        x = _inputs(*in_range, n, seed=seed)
        side = _inputs(*side_range, n, seed=seed + 10).astype(side_dtype)
        np.testing.assert_array_equal(run(x, [side]), evaluate(steps, x, [side]))


def test_a_conv_output_range_comes_from_its_weights():
    weight = np.zeros((2, 3, 1, 1), np.int8)
    weight[0] = np.array([127, -128, 5]).reshape(3, 1, 1)
    weight[1] = np.array([-1, -1, -1]).reshape(3, 1, 1)
    data = relax.Var("x", relax.TensorType((1, 3, 4, 4), "int8"))
    conv = relax.op.nn.conv2d(data, relax.const(weight), out_dtype="int32")
    call = relax.BlockBuilder().normalize(conv)
    # channel 0: 127 * [-128, 127] + -128 * [-128, 127] + 5 * [-128, 127]; channel 1: -3 * ...
    lo, hi = layer_output_range(call)
    np.testing.assert_array_equal(lo, [127 * -128 + -128 * 127 + 5 * -128, -3 * 127])
    np.testing.assert_array_equal(hi, [127 * 127 + -128 * -128 + 5 * 127, 3 * 128])
    uint8 = relax.Var("u", relax.TensorType((1, 3, 4, 4), "uint8"))
    call = relax.BlockBuilder().normalize(
        relax.op.nn.conv2d(uint8, relax.const(weight), out_dtype="int32"))
    lo, hi = layer_output_range(call)
    np.testing.assert_array_equal(lo, [-128 * 255, -3 * 255])
    np.testing.assert_array_equal(hi, [132 * 255, 0])


def test_ranges_are_per_channel():
    # a channel whose weights are all but zero may carry a bias near -2^31 (its ReLU output is
    # always 0): taken over all channels at once, acc + bias would leave int32 and nothing
    # could narrow; per channel each sum fits
    channels = 4
    bias = np.array([[-2**31 + 3, 100, -100, 7]], np.int64)
    m0 = np.full((1, channels), 1 << 30, np.int64)
    steps = [Step("relax.astype", (), "int64"), Step("relax.add", (bias,), "int64"),
             Step("relax.multiply", (m0,), "int64"), Step("relax.add", (_const(1 << 37),), "int64"),
             Step("relax.right_shift", (_const(38),), "int64"),
             Step("relax.clip", (), "int64", (0, 127)), Step("relax.astype", (), "int8")]
    lo = np.array([0, -2**24, -2**24, -2**24])
    hi = np.array([2, 2**24, 2**24, 2**24])
    narrowed = narrow_steps(Epilogue(steps), "int32", (lo, hi), ndim=2).steps
    assert all(s.dtype != "int64" for s in narrowed), narrowed
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(lo[c], hi[c] + 1, 512) for c in range(channels)], 1)
    x[0], x[1] = lo, hi
    x = x.astype(np.int32)
    np.testing.assert_array_equal(evaluate(narrowed, x), evaluate(steps, x))


def _dead_channel_chain(r):
    bias = np.array([[-2**31 + 3, 100]], np.int64)
    m0 = np.full((1, 2), 1 << 30, np.int64)
    return [Step("relax.astype", (), "int64"), Step("relax.add", (bias,), "int64"),
            Step("relax.multiply", (m0,), "int64"),
            Step("relax.add", (_const(1 << (r - 1)),), "int64"),
            Step("relax.right_shift", (_const(r),), "int64"),
            Step("relax.clip", (), "int64", (0, 127)), Step("relax.astype", (), "int8")]


@pytest.mark.parametrize("clip_lo, rshift, constant", [(0, 57, True), (-2**40, 38, False)])
def test_a_channel_with_a_constant_output_gets_a_bias_that_fits_int32(clip_lo, rshift, constant):
    # the first channel's bias near -2^31 plus its values [-1000, 1000] leaves int32. Clipped
    # at 0 its output is 0 for all of them; moved up by 1000 the sum fits and the output is
    # still 0, so the layer narrows. Unclipped, at 2^-38, its output varies: no move
    steps = _dead_channel_chain(r=rshift)
    steps[5] = replace(steps[5], attrs=(clip_lo, 127))
    lo, hi = np.array([-1000, -2**20]), np.array([1000, 2**20])
    narrowed = narrow_steps(Epilogue(steps), "int32", (lo, hi), ndim=2).steps
    assert all(s.dtype != "int64" for s in narrowed) == constant, narrowed
    x = np.stack([np.arange(-1000, 1001), np.linspace(-2**20, 2**20, 2001).astype(int)], 1)
    x = x.astype(np.int32)
    np.testing.assert_array_equal(evaluate(narrowed, x), evaluate(steps, x))


@pytest.mark.parametrize("widest", [2**15 - 1, 2**15])
def test_a_per_channel_code_multiplier_of_15_bits_is_a_16_bit_multiply(widest):
    # A ResNet v2 block end's BatchNorm on its code (int32_runs' affine step) multiplies by a
    # per-channel int32 loaded from memory: LLVM knows nothing of its range and uses vpmulld
    # (two micro-ops) unless the kernel shows the multiplier fits 15 bits; then vpmaddwd (or
    # vpdpwssd, with the add). A multiplier of 16 bits keeps the 32-bit multiply. Same values
    n = 64
    a = np.linspace(0, widest, n).astype(np.int32)
    b = np.arange(n, dtype=np.int32) * 1000 - 30000
    affine = Step(INT32_AFFINE, (a, b, np.asarray(13, np.int32)), "int32", (0, 127))
    steps = [Step("relax.clip", (), "int32", (-127, 127)), affine]
    run = _compiled(Epilogue(steps), n)
    x = _inputs(-300, 300, n)
    np.testing.assert_array_equal(run(x), evaluate(steps, x))
    assert ("pmaddwd" in run.assembly or "vpdpwssd" in run.assembly) == (widest < 2**15)


def _rescale(multiplier, bound):
    """The realize's Q31 multiply of a value (``IntegerRealizer.fixed_point_multiply``)."""
    form = fp.fixed_point(multiplier, bound)
    r = int(np.asarray(form.rshift).reshape(()))
    return [Step("relax.astype", (), "int64"),
            Step("relax.multiply", (_const(int(np.asarray(form.m0).reshape(()))),), "int64"),
            Step("relax.add", (_const(1 << (r - 1)),), "int64"),
            Step("relax.right_shift", (_const(r),), "int64")]


def _residual_add(scale_x, scale_y, scale_out, channels):
    """A residual add of two int8 codes as the realize writes it (each rescaled to the common
    scale, the int32 sum requantized to an int8 code)."""
    common = residual_common_scale([scale_x, scale_y], [8, 8])
    return [*_rescale(scale_x / common, 128),
            Step("relax.add", (), "int64", side=_side(channels, _rescale(scale_y / common, 128))),
            Step("relax.astype", (), "int32"),
            *_rescale(common / scale_out, 2**29),
            Step("relax.clip", (), "int64", (-127, 127)),
            Step("relax.astype", (), "int8")]


def test_a_residual_add_of_two_codes_is_one_int32_affine_step_on_every_pair():
    # three roundings deep (each branch's rescale, the sum's requantize), on two 8-bit codes
    # the realize's residual add is one clipped int32 affine function of the pair; the fit is
    # checked on all 65,536 pairs, here by the numpy rules and by the compiled kernel
    rng = np.random.default_rng(0)
    x, y = (g.reshape(-1) for g in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    x, y = x.astype(np.int8), y.astype(np.int8)
    for trial in range(12):
        scale_x, scale_y, scale_out = np.exp(rng.uniform(-3, 3, 3)) * 0.05
        steps = _residual_add(scale_x, scale_y, scale_out, x.size)
        collapsed = collapse_int32_runs(Epilogue(steps), (1, x.size), "int8")
        assert [s.op for s in collapsed.steps][:1] == [INT32_PAIR_AFFINE], collapsed.steps
        expected = evaluate(steps, x, [y])
        np.testing.assert_array_equal(evaluate(collapsed.steps, x, [y]), expected)
        if trial < 3:
            kernel = narrow_steps(collapsed, "int32", (-128, 127), ndim=2)
            np.testing.assert_array_equal(_compiled(kernel, x.size)(x.astype(np.int32), [y]),
                                          expected)
