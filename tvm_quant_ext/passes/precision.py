"""Measured mixed precision: the activation points whose quantization costs the output most are
raised to 16-bit codes, as many as ``QConfig.precision_budget`` (a fraction of the points) allows.

Sensitivity of a point = the output SNR gained when every point is quantized except that one
(all weights int8), measured with the torch interpreter (``interpret.SideBySide``) on the first
``SENSITIVITY_BATCHES`` calibration batches: one run per point, so the cost grows with the
number of points, not with the data. The raised points keep their calibrated range at 16 bits
(``qmath.widen_qparams``); int16 codes then feed int32/int64 accumulators (integer mode) exactly
as with ``nbit_input=16`` everywhere. Gains are measured one point at a time and are not
additive; the points are taken in order of their single gains.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterable, Optional

import tvm

from .. import qmath
from ..config import QConfig
from ..points import get_state, set_state
from .calibration import ACTIVATION_KINDS
from .interpret import SideBySide
from .realize.plan import RealizeContext, collect_constants, plan_constant, plan_layers

RAISED_BITS = 16
SENSITIVITY_BATCHES = 8


def _snr(outputs) -> float:
    float_out, quant_out = outputs
    signal = sum(float((f.double() ** 2).sum()) for f in float_out)
    noise = sum(float(((f.double() - q.double()) ** 2).sum()) for f, q in zip(float_out, quant_out))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def raise_precision(mod: tvm.IRModule, dataset: Iterable, config: QConfig) -> tvm.IRModule:
    """A calibrated module -> the same module with its most sensitive activation points at
    16 bits (``QuantState.activation_bits``, with 16-bit scales), the measurement in
    ``QuantState.precision``."""
    if dataset is None or iter(dataset) is dataset:
        raise ValueError("precision_budget measures on the calibration data after calibration "
                         "has read it: pass a list (or another re-iterable)")
    state = get_state(mod)
    state.activation_bits = {}
    points = [pid for pid, p in state.points.items() if p.kind in ACTIVATION_KINDS]
    budget = int(math.floor(config.precision_budget * len(points) + 1e-9))
    ctx = RealizeContext(config, state)
    collect_constants(mod, ctx)
    plan_layers(ctx)
    sample = list(itertools.islice(iter(dataset), SENSITIVITY_BATCHES))
    walker = SideBySide(mod, state, config, lambda point: plan_constant(ctx.plans, point))
    base = _snr(walker.run(sample))
    gains = {}
    for pid in points:
        walker.float_points = {pid}
        gains[pid] = _snr(walker.run(sample)) - base
    chosen = [pid for pid in sorted(points, key=lambda p: -gains[p])[:budget] if gains[pid] > 0]
    for pid in chosen:
        scale, zero_point = qmath.widen_qparams(
            state.activation_scales[pid], state.activation_zero_points.get(pid, 0),
            config.nbit_input, RAISED_BITS, config.activation_symmetric)
        state.activation_scales[pid] = scale
        state.activation_zero_points[pid] = zero_point
        state.activation_bits[pid] = RAISED_BITS
    state.precision = {"budget": config.precision_budget, "points": len(points),
                       "raised": [[pid, RAISED_BITS, round(gains[pid], 3)] for pid in chosen],
                       "snr_all_quantized_db": round(base, 3), "measured_batches": len(sample),
                       "gain_db": {pid: round(g, 3) for pid, g in gains.items()}}
    return set_state(mod, state)


def precision_key(config: QConfig) -> tuple:
    return (config.precision_budget,)


def maybe_raise(mod: tvm.IRModule, dataset: Optional[Iterable], config: QConfig) -> tvm.IRModule:
    """``raise_precision`` when ``config.precision_budget`` > 0, else ``mod`` unchanged."""
    return raise_precision(mod, dataset, config) if config.precision_budget > 0 else mod


def RaisePrecision(dataset: Optional[Iterable], config: Optional[QConfig] = None):  # pylint: disable=invalid-name
    """raise_precision as a tvm.transform pass (identity unless a precision budget is set)."""
    config = config or QConfig()

    @tvm.transform.module_pass(opt_level=0, name="RaisePrecision")
    def _pass(mod, _ctx):
        return maybe_raise(mod, dataset, config)

    return _pass
