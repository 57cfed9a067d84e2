"""Empirical bias correction: each layer's mean output error, measured with every layer before
it already quantized and corrected, subtracted from its bias before the bias is quantized.

Quantizing weights and activations shifts the mean of a layer's output per channel (a
rounding error that does not average out over the channel's inputs, the clipping of ReLU6,
a ReLU after noise keeping the positive part of it). Per output channel c of layer L:

    correction[c] = mean over data and positions of (quantized L output - float L output)

with the layers before L quantized *and already corrected* (the quantity of Nagel et al.
2019; NNCF's default). The float bias minus the correction is then quantized at s_in*s_w in
``nbit_bias`` bits, where it survives (an 8-bit bias would round it away). The means are
running sums over the calibration batches. ``interpret.SideBySide`` evaluates the float and
the quantized model one binding at a time over all batches, so the whole graph-ordered
correction costs one pass of compute, not one pass over the data per layer. The correction
changes only the layer plans' biases, so simulate and integer realize both carry it.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
import tvm

from ..config import QConfig
from ..points import QPoint, set_state
from .interpret import Batches, SideBySide, data_stage_pass, walk_calibration_data, output_point
from .realize.plan import (RealizeContext, plan_constant, plan_layer,
                           weight_calibrators)


def channel_mean(diffs, channel_axis: int) -> np.ndarray:
    """Per-channel mean of a list of arrays (running sums in float64 over the list)."""
    total, count = None, 0
    for d in diffs:
        d = np.asarray(d, np.float64)
        axis = channel_axis % d.ndim
        moved = np.moveaxis(d, axis, 0).reshape(d.shape[axis], -1)
        total = moved.sum(axis=1) if total is None else total + moved.sum(axis=1)
        count += moved.shape[1]
    return total / max(count, 1)


class _Correcting(SideBySide):
    def __init__(self, mod, ctx: RealizeContext):
        self.ctx = ctx
        self.calibrators = weight_calibrators(ctx)
        for pid in self.calibrators:
            ctx.plans[pid] = plan_layer(ctx, pid, self.calibrators[pid])
        super().__init__(mod, ctx.state, ctx.config, self.constant_of)
        self.rows = []

    def constant_of(self, point: QPoint) -> np.ndarray:
        return plan_constant(self.ctx.plans, point)

    def bias_add(self, var, point: QPoint, layer, bias):
        float_out = self.map2(torch.add, layer[0], bias[0])
        quant_out = self.map2(torch.add, layer[1], bias[1])
        diffs = (q - f for q, f in zip(_batches(quant_out), _batches(float_out)))
        correction = channel_mean((d.numpy() for d in diffs), point.channel_axis)
        plan = self.ctx.plans[point.weight_point]
        old_codes, old_weights = plan.bias.codes, plan.weight_codes
        self.state.bias_corrections[point.id] = correction.tolist()
        plan = self.ctx.plans[point.weight_point] = plan_layer(
            self.ctx, point.weight_point, self.calibrators[point.weight_point])
        out_point = output_point(self.func, var, self.state)
        lsb = self.state.activation_scales.get(out_point) if out_point else None
        self.rows.append({
            "layer": point.layer, "channels": int(correction.size),
            "channels_corrected": int(np.sum(plan.bias.codes != old_codes)),
            "mean_abs_correction": float(np.mean(np.abs(correction))),
            "output_point": out_point,
            "mean_abs_correction_lsb": None if lsb is None else float(np.mean(np.abs(correction)) / lsb),
            "max_abs_correction_lsb": None if lsb is None else float(np.max(np.abs(correction)) / lsb),
            # the corrected bias moved an overflow fix (bias_overflow="adjust"): the weight
            # codes changed after this layer's error was measured with the old ones
            "weights_replanned": bool(not np.array_equal(old_weights, plan.weight_codes)),
        })
        shape = tuple(bias[1].shape)
        new_bias = torch.as_tensor(plan.bias.accumulator_value.reshape(shape), dtype=bias[1].dtype)
        return float_out, self.map2(torch.add, layer[1], new_bias)


def _batches(value):
    return value if isinstance(value, Batches) else [value]


def correct_biases(mod: tvm.IRModule, dataset: Iterable, config: QConfig) -> tvm.IRModule:
    """A calibrated module -> the same module carrying a bias correction per layer
    (``QuantState.bias_corrections``, read by the layer plan) and its report rows."""
    def reset(state):
        state.bias_corrections, state.bias_correction_rows = {}, []

    state, walker = walk_calibration_data(mod, dataset, config, _Correcting, "bias_correction",
                                          reset)
    state.bias_correction_rows = walker.rows
    return set_state(mod, state)


def correction_key(config: QConfig) -> tuple:
    """The QConfig fields that decide a bias correction, beyond the calibration's: everything
    that fixes the weight codes and the bias quantization (not the realize mode)."""
    return (config.nbit_weight, config.weight_scale, config.layer_weight_scale,
            config.per_channel, config.nbit_bias, config.nbit_activation, config.bias_overflow,
            config.tiny_weight_threshold)


def maybe_correct(mod: tvm.IRModule, dataset: Optional[Iterable], config: QConfig) -> tvm.IRModule:
    """``correct_biases`` when ``config.bias_correction``, else ``mod`` unchanged."""
    return correct_biases(mod, dataset, config) if config.bias_correction else mod


def CorrectBias(dataset: Optional[Iterable], config: Optional[QConfig] = None):  # pylint: disable=invalid-name
    """Bias correction as a tvm.transform pass (identity unless ``config.bias_correction``)."""
    return data_stage_pass("CorrectBias", maybe_correct, dataset, config)
