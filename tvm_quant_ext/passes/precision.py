"""Measured mixed precision: the quantization points whose rounding costs the output most are
raised, as many as ``QConfig.precision_budget`` allows. Two kinds of point compete: an
INPUT/ACTIVATION point (16-bit codes between layers) and a WEIGHT point (one layer's weights as
15-bit codes: int16 within +-16383, which the CPU backend splits into two int8 weights,
backend/cpu/wide_weights.py, so the layer stays on the int8 kernels). The budget is a fraction
of the model's layers (conv/dense, one WEIGHT point each), rounded down; each raised point
counts as one layer.

Gain of a point = the output SNR gained by raising that point alone while every other point
stays quantized -- a gain over the all-quantized model, not a loss against the float one. It is
measured with the torch interpreter (``interpret.SideBySide``) on the first calibration images
(at least ``SENSITIVITY_IMAGES`` of them, at least ``SENSITIVITY_BATCHES`` batches), the raised
point taken as float (16-bit codes are 2^8 times finer than 8-bit ones, 15-bit weights 2^7:
their noise is 42-48 dB below the 8-bit noise): one run per point, so the cost grows with the
number of points, not with the data. Gains depend only on the calibration, so one measurement
serves every budget (``gain_cache``).
The points are taken in order of their single gains (gains are not additive); the chosen set is
then measured together once more, and that cumulative SNR is in the report beside each point's
single gain.

A raised activation point keeps its calibrated range at 16 bits (``qmath.widen_qparams``); a
raised WEIGHT point gets its weight calibrator's scale for 15-bit codes (the layer plan reads
``QuantState.weight_bits``) and its bias is still quantized at s_in*s_w. Integer mode then
accumulates in int64 where int32 could overflow, as with ``nbit_input=16`` everywhere.
Adaptive rounding leaves a raised layer at round-to-nearest: at 15 bits there is little to learn.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional

import numpy as np
import tvm

from .. import qmath
from ..config import QConfig, QKind
from ..points import get_state, set_state
from .calibration import ACTIVATION_KINDS
from .interpret import SideBySide, data_stage_pass, require_reiterable
from .realize.plan import RealizeContext, collect_constants, plan_constant, plan_layers

RAISED_BITS = 16
RAISED_WEIGHT_BITS = 15
SENSITIVITY_IMAGES = 8
SENSITIVITY_BATCHES = 2


def _snr(outputs) -> float:
    float_out, quant_out = outputs
    signal = sum(float((f.double() ** 2).sum()) for f in float_out)
    noise = sum(float(((f.double() - q.double()) ** 2).sum()) for f, q in zip(float_out, quant_out))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def measure_gains(mod: tvm.IRModule, sample: list, config: QConfig) -> Dict[str, object]:
    """{"base": SNR dB with every point quantized, "gains": point id -> SNR gained by raising that
    point alone, "walker": the interpreter (reused for the cumulative measurement)}."""
    state = get_state(mod)
    ctx = RealizeContext(config, state)
    collect_constants(mod, ctx)
    plan_layers(ctx)
    walker = SideBySide(mod, state, config, lambda point: plan_constant(ctx.plans, point))
    base = _snr(walker.run(sample))
    gains = {}
    for pid in candidate_points(state, config):
        walker.float_points = {pid}
        gains[pid] = _snr(walker.run(sample)) - base
    walker.float_points = set()
    return {"base": base, "gains": gains, "walker": walker}


def _layer_points(state) -> List[str]:
    return [pid for pid, p in state.points.items() if p.kind == QKind.WEIGHT.value]


def candidate_points(state, config: QConfig) -> List[str]:
    """The points a budget may raise: activation points below 16 bits, then WEIGHT points
    below 15 bits."""
    activations = [pid for pid, p in state.points.items() if p.kind in ACTIVATION_KINDS]
    return ((activations if config.nbit_input < RAISED_BITS else [])
            + (_layer_points(state) if config.nbit_weight < RAISED_WEIGHT_BITS else []))


def _first_images(dataset: Iterable) -> list:
    """The first batches of ``dataset``: SENSITIVITY_BATCHES of them, more while they hold
    fewer than SENSITIVITY_IMAGES images."""
    sample, images = [], 0
    for item in dataset:
        if len(sample) >= SENSITIVITY_BATCHES and images >= SENSITIVITY_IMAGES:
            break
        sample.append(item)
        first = next(iter(item.values())) if isinstance(item, dict) else item
        images += int(np.shape(first)[0]) if np.ndim(first) else 1
    return sample


def raise_precision(mod: tvm.IRModule, dataset: Iterable, config: QConfig,
                    gain_cache: Optional[dict] = None) -> tvm.IRModule:
    """A calibrated module -> the same module with its most sensitive points raised
    (``QuantState.activation_bits`` with 16-bit scales, ``QuantState.weight_bits`` at 15), the
    measurement in ``QuantState.precision``. ``gain_cache``: a dict shared by calls on the same
    calibrated module (filled on the first call), so that several budgets cost one measurement."""
    require_reiterable(dataset, "precision_budget")
    state = get_state(mod)
    state.activation_bits, state.weight_bits = {}, {}
    layers = len(_layer_points(state))
    budget = int(math.floor(config.precision_budget * layers + 1e-9))
    sample = _first_images(dataset)
    cache = gain_cache if gain_cache is not None else {}
    if "gains" not in cache:
        cache.update(measure_gains(mod, sample, config))
    base, gains = cache["base"], cache["gains"]
    chosen = [pid for pid in sorted(gains, key=lambda p: -gains[p])[:budget] if gains[pid] > 0]
    together = None
    if chosen:
        walker = cache["walker"]
        walker.float_points = set(chosen)
        together = _snr(walker.run(sample))
        walker.float_points = set()
    for pid in chosen:
        if state.points[pid].kind == QKind.WEIGHT.value:
            state.weight_bits[pid] = RAISED_WEIGHT_BITS
            continue
        scale, zero_point = qmath.widen_qparams(
            state.activation_scales[pid], state.activation_zero_points.get(pid, 0),
            config.nbit_input, RAISED_BITS, config.activation_symmetric)
        state.activation_scales[pid] = scale
        state.activation_zero_points[pid] = zero_point
        state.activation_bits[pid] = RAISED_BITS
    state.precision = {"budget": config.precision_budget, "layers": layers,
                       "candidates": len(gains),
                       "raised": [[pid, state.weight_bits.get(pid, state.activation_bits.get(pid)),
                                   round(gains[pid], 3)] for pid in chosen],
                       "snr_all_quantized_db": round(base, 3),
                       "snr_raised_db": None if together is None else round(together, 3),
                       "measured_batches": len(sample),
                       "gain_db": {pid: round(g, 3) for pid, g in gains.items()}}
    return set_state(mod, state)


def precision_key(config: QConfig) -> tuple:
    return (config.precision_budget,)


def maybe_raise(mod: tvm.IRModule, dataset: Optional[Iterable], config: QConfig,
                gain_cache: Optional[dict] = None) -> tvm.IRModule:
    """``raise_precision`` when ``config.precision_budget`` > 0, else ``mod`` unchanged."""
    if config.precision_budget <= 0:
        return mod
    return raise_precision(mod, dataset, config, gain_cache)


def RaisePrecision(dataset: Optional[Iterable], config: Optional[QConfig] = None):  # pylint: disable=invalid-name
    """raise_precision as a tvm.transform pass (identity unless a precision budget is set)."""
    return data_stage_pass("RaisePrecision", maybe_raise, dataset, config)
