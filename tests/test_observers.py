"""Observers in the calibrate package (numpy only)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from calibrate import (AUTO_CANDIDATES, OBSERVERS, CalibrationError, GlobalScaleObserver,
                       MaxObserver, Power2Observer, make_observer)

values = st.floats(-1e4, 1e4, allow_nan=False, width=32)
batches = arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=values)


@given(batches, st.sampled_from(["max", "power2"]), st.integers(2, 16))
def test_scale_positive_and_finite(batch, name, nbit):
    obs = make_observer(name, point="p")
    obs.observe(batch)
    scale = obs.compute_scale(nbit)
    assert np.all(scale > 0) and np.all(np.isfinite(scale))


def test_all_zero_tensor_gets_a_usable_scale():
    for name in ("max", "power2"):
        obs = make_observer(name, point="zeros")
        obs.observe(np.zeros((3, 3), np.float32))
        assert obs.compute_scale(8) > 0


@given(batches, batches)
def test_merge_equals_sequential_observe(a, b):
    one = MaxObserver("p")
    one.observe(a)
    one.observe(b)
    left, right = MaxObserver("p"), MaxObserver("p")
    left.observe(a)
    right.observe(b)
    left.merge(right)
    assert np.array_equal(left.compute_scale(8), one.compute_scale(8))


@given(arrays(np.float32, (3, 5), elements=values))
def test_per_channel_equals_per_tensor_per_channel(batch):
    per_channel = MaxObserver("p", axis=0)
    per_channel.observe(batch)
    for c in range(3):
        single = MaxObserver("p")
        single.observe(batch[c])
        assert per_channel.compute_scale(8)[c] == single.compute_scale(8)


@given(st.floats(1e-6, 1e6))
def test_power2_threshold_is_power_of_two_and_covers_max(m):
    obs = Power2Observer("p")
    obs.observe(np.array([m, -m / 2], np.float64))
    t = float(obs.compute_threshold())
    assert t >= m * (1 - 1e-12) and np.log2(t) == np.round(np.log2(t))
    assert obs.compute_scale(8) == t / 128


def test_nan_and_inf_name_the_point():
    obs = MaxObserver("block1.conv/relu")
    with pytest.raises(CalibrationError, match="block1.conv/relu.*NaN"):
        obs.observe(np.array([1.0, np.nan]))
    with pytest.raises(CalibrationError, match="block1.conv/relu.*Inf"):
        obs.observe(np.array([np.inf]))


def test_no_data_and_unknown_name():
    with pytest.raises(CalibrationError, match="no calibration data"):
        MaxObserver("p").compute_scale(8)
    with pytest.raises(ValueError, match="unknown calibrator 'kl2'"):
        make_observer("kl2", point="p")


# -- state that travels between processes and to disk ---------------------------------------
state_types = st.sampled_from(sorted(OBSERVERS) + ["histogram"])
channel_batches = arrays(np.float32, st.tuples(st.integers(1, 3), st.just(4), st.integers(1, 5)),
                         elements=values)


def _observer(kind, axis):
    from calibrate import HistogramObserver

    if kind == "histogram":  # auto's holder: not a calibrator, but its state travels too
        return HistogramObserver("p", axis=axis)
    return make_observer(kind, point="p", axis=axis)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key
    assert type(a) is type(b)


@given(state_types, st.sampled_from([None, 1]), st.lists(channel_batches, min_size=0, max_size=3),
       st.lists(channel_batches, min_size=1, max_size=3))
def test_state_round_trip_and_merge_after_round_trip(kind, axis, left_batches, right_batches):
    from calibrate import Observer

    left, right, serial = _observer(kind, axis), _observer(kind, axis), _observer(kind, axis)
    for batch in left_batches:
        left.observe(batch)
        serial.observe(batch)
    for batch in right_batches:
        right.observe(batch)
        serial.observe(batch)
    back = Observer.from_state_dict(left.state_dict())
    _same(back, left)
    # a state passed through another process, merged there, equals observing it all in one
    merged = back.merge(type(right).from_state_dict(right.state_dict()))
    _same(merged, serial)
    for nbit in (8, 16) if kind != "histogram" else ():  # the holder picks no threshold itself
        assert np.array_equal(merged.compute_scale(nbit), serial.compute_scale(nbit))


def test_state_refuses_other_versions_and_types():
    from calibrate import KLObserver, Observer, STATE_VERSION

    obs = MaxObserver("conv1/relu")
    obs.observe(np.ones(3, np.float32))
    state = obs.state_dict()
    with pytest.raises(CalibrationError, match=f"version {STATE_VERSION + 1}.*reads version {STATE_VERSION}"):
        Observer.from_state_dict({**state, "version": STATE_VERSION + 1})
    with pytest.raises(CalibrationError, match="'conv1/relu' is a MaxObserver's, not a KLObserver's"):
        KLObserver.from_state_dict(state)
    with pytest.raises(CalibrationError, match="unknown type 'Nope'"):
        Observer.from_state_dict({**state, "type": "Nope"})
    percentile = make_observer("percentile", point="p", percentile=99.0)
    assert Observer.from_state_dict(percentile.state_dict()).percentile == 99.0


@given(batches, st.floats(1e-3, 1e3), st.integers(2, 16), st.sampled_from([None, 0]))
def test_global_scale_range_is_fixed_whatever_the_data(batch, global_scale, nbit, axis):
    """relay's rule: threshold = global_scale as given (no power-of-two rounding), scale =
    threshold / 2^(b-1); the data changes nothing, and nothing need be observed."""
    expected = global_scale / 2 ** (nbit - 1)
    unobserved = make_observer("global_scale", point="p", global_scale=global_scale)
    assert unobserved.compute_scale(nbit) == pytest.approx(expected, rel=1e-12)
    obs = make_observer("global_scale", point="p", axis=axis, global_scale=global_scale)
    obs.observe(batch)
    scale = obs.compute_scale(nbit)
    assert np.shape(scale) == (() if axis is None else (batch.shape[0],))
    np.testing.assert_allclose(scale, expected, rtol=1e-12)
    lo, hi = obs.compute_range(nbit)
    np.testing.assert_allclose(hi, global_scale)
    np.testing.assert_allclose(lo, 0.0 if batch.min() >= 0 else -global_scale)


def test_global_scale_matches_relay_default_and_rejects_bad_ranges():
    obs = GlobalScaleObserver("conv1/relu")  # relay's default global_scale=8.0
    obs.observe(np.array([-100.0, 0.5, 3.0]))  # a value past the range is clipped, not widened
    scale, zero_point = obs.compute_qparams(8, symmetric=True)
    assert scale == 8.0 / 128 and zero_point == 0  # relay: dom_scale = 8 / 2^7, clip +-127
    assert not GlobalScaleObserver.reads_data and "global_scale" not in AUTO_CANDIDATES
    assert set(AUTO_CANDIDATES) == set(OBSERVERS) - {"global_scale"}
    for bad in (0.0, -8.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="conv1/relu.*global_scale"):
            GlobalScaleObserver("conv1/relu", global_scale=bad)
