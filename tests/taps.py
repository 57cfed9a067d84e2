"""Integer mode against simulate, point by point: the check the accuracy-technique tests share."""
import numpy as np

import tvm_quant_ext as tq
from tvm_quant_ext import passes
from tvm_quant_ext.points import collect_points, get_state


def taps(model, x):
    """Every quantization point's value on input ``x`` (a build of a ``tap=True`` realize)."""
    found = {}
    with collect_points(lambda pid, array: found.__setitem__(pid, array)):
        model(x)
    return found


def assert_integer_within_one_lsb(calibrated, config, inputs):
    """Realize ``calibrated`` both ways: no float op in the integer module, and every point's
    integer code within one LSB of simulate's value on each input."""
    simulated = tq.build(passes.realize(calibrated, config.replace(mode="simulate"), tap=True))
    integer_mod = passes.realize(calibrated, config.replace(mode="integer"), tap=True)
    state = get_state(integer_mod)
    assert state.float_ops == []
    integer = tq.build(integer_mod)
    for x in inputs:
        sim, ints = taps(simulated, x), taps(integer, x)
        for pid, codes in ints.items():
            scale = state.activation_scales[pid]
            real = (codes.astype(np.float64) - state.activation_zero_points.get(pid, 0)) * scale
            assert np.abs(real - sim[pid]).max() / scale <= 1.0 + 1e-6, pid
