"""Adaptive rounding of the weights (``QConfig(weight_rounding="adaround")``): per conv/dense
layer, in graph order, each weight code rounded up or down as learned on the calibration data
(the math and the optimizer are in ``rounding.py``).

The float and the quantized model run side by side in the torch interpreter
(``interpret.SideBySide``, the machinery of the bias correction), one binding at a time over
all calibration batches. When a layer op reading a WEIGHT point is reached, its float input
(float model) and its quantized input (every earlier layer quantized and already rounded
adaptively: the paper's asymmetric reconstruction) are known for every batch. ``ROW_RULES``
(one per layer op) turns both into the same sampled rows (conv: input patches at
``POOL_ROWS`` random output positions over all batches; matmul: input vectors) and computes
the layer on rows; the rounding is optimized against the float layer's output (before the
bias) on those rows. The weight scale is the layer plan's (the weight calibrator's, raised by
the bias-overflow rule when it had to be), so the bias is still quantized at s_in*s_w and the
overflow rules still apply. The learned round-up bits go on the state
(``QuantState.weight_rounding``), read by the layer plan, so simulate and integer realize
emit the same codes; a bias correction after it measures the error that is left.

Each layer's report row gives its output error (before the bias, quantized input, on all
calibration batches) with round-to-nearest and with the learned rounding.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import tvm

from .. import rounding
from ..config import QConfig
from ..graph import GraphError, op_name, registrar, shape_of
from ..points import QPoint, set_state
from ..qmath import qmax_for
from .interpret import Batches, SideBySide, data_stage_pass, walk_calibration_data
from .realize.plan import (RealizeContext, plan_constant, plan_layer,
                           weight_calibrators)

POOL_ROWS = 4096  # sampled rows (input patches / vectors) per layer, over all batches
SEED = 0

# op -> (rows of one input batch, sampled with the generator, at most n of them;
#        the layer on rows (rows, weight in its layout) -> outputs, one row each)
RowRule = Tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]
ROW_RULES: Dict[str, RowRule] = {}
register_rows = registrar(ROW_RULES, what="adaround row rule")


def _ints(values):
    return [int(v) for v in values]


def _sample(rows: torch.Tensor, generator: torch.Generator, n: int) -> torch.Tensor:
    if rows.shape[0] <= n:
        return rows
    return rows[torch.randperm(rows.shape[0], generator=generator)[:n]]


def _conv_rows(call, x, generator, n):
    attrs = call.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout))
    if layouts != ("NCHW", "OIHW"):
        raise GraphError(f"adaround takes NCHW/OIHW convs, not {layouts}")
    kernel = tuple(int(d) for d in shape_of(call.args[1])[2:])
    top, left, bottom, right = _ints(attrs.padding)
    patches = F.unfold(F.pad(x, (left, right, top, bottom)), kernel,
                       dilation=_ints(attrs.dilation), stride=_ints(attrs.strides))
    groups = int(attrs.groups)
    batch, width, positions = patches.shape
    rows = patches.reshape(batch, groups, width // groups, positions).permute(0, 3, 1, 2)
    return _sample(rows.reshape(batch * positions, groups, width // groups), generator, n)


def _conv_on_rows(call, rows, weight):
    groups = rows.shape[1]
    matrix = weight.reshape(groups, weight.shape[0] // groups, -1)
    return torch.einsum("sgk,gok->sgo", rows, matrix)


register_rows("relax.nn.conv2d")((_conv_rows, _conv_on_rows))
register_rows("relax.matmul")((lambda call, x, generator, n: _sample(x.reshape(-1, x.shape[-1]), generator, n),
                               lambda call, rows, weight: rows @ weight))


def _batches(value):
    return value if isinstance(value, Batches) else [value]


def _sum_squares(values) -> float:
    return sum(float((v.double() ** 2).sum()) for v in values)


def _snr_db(signal: float, noise: float) -> float:
    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf


class _Rounding(SideBySide):
    def __init__(self, mod, ctx: RealizeContext):
        self.ctx = ctx
        self.calibrators = weight_calibrators(ctx)
        for pid in self.calibrators:
            ctx.plans[pid] = plan_layer(ctx, pid, self.calibrators[pid])
        super().__init__(mod, ctx.state, ctx.config, lambda point: plan_constant(ctx.plans, point))
        self.rows = []

    def weight_layer(self, var, call, rule, point: QPoint, batches: int):
        if point.id in self.state.weight_bits:  # raised (15 bits): nearest is within 2^-7 LSB
            return super().weight_layer(var, call, rule, point, batches)
        op = op_name(call)
        if op not in ROW_RULES:
            raise GraphError(f"{point.layer}: adaround has no row rule for {op} (register one "
                             "with passes.adaround.register_rows), or use weight_rounding='nearest'")
        if call.args[1] not in self.weight_marker:
            raise GraphError(f"{point.layer}: adaround expects the weight as the op's second argument")
        take_rows, on_rows = ROW_RULES[op]
        weight_var = call.args[1]
        w_float, w_nearest = self.values[weight_var]
        x_float, x_quant = (_batches(self.arg(call.args[0], k)) for k in (0, 1))
        per_batch = -(-POOL_ROWS // len(x_float))
        rows = {}
        for k, xs in ((0, x_float), (1, x_quant)):
            # one generator per path, seeded alike: both paths sample the same positions
            generator = torch.Generator().manual_seed(SEED + len(self.rows))
            rows[k] = torch.cat([take_rows(call, x, generator, per_batch) for x in xs])
        target = on_rows(call, rows[0], w_float)
        plan = self.ctx.plans[point.id]
        weight = w_float.double().numpy()
        shape = [1] * weight.ndim
        shape[point.axis] = weight.shape[point.axis]
        scale = np.broadcast_to(np.asarray(plan.weight_scale, np.float64), (shape[point.axis],))
        with torch.enable_grad():
            up = rounding.optimize_rounding(
                weight, scale.reshape(shape), qmax_for(self.config.nbit_weight, True), rows[1],
                target, lambda r, w: on_rows(call, r, w), self.config.adaround_iterations,
                seed=SEED + len(self.rows))
        self.state.weight_rounding[point.id] = {"scale": [float(s) for s in scale],
                                                "up": rounding.pack_mask(up)}
        new_plan = self.ctx.plans[point.id] = plan_layer(self.ctx, point.id,
                                                         self.calibrators[point.id])
        w_new = torch.as_tensor(plan_constant(self.ctx.plans, point).reshape(tuple(w_float.shape)),
                                dtype=w_float.dtype)
        float_out = self.apply(rule, call, var, 0, batches)
        nearest_out = self.apply(rule, call, var, 1, batches)
        self.values[weight_var] = (w_float, w_new)
        quant_out = self.apply(rule, call, var, 1, batches)
        signal = _sum_squares(_batches(float_out))
        noise = {name: _sum_squares(q - f for q, f in zip(_batches(out), _batches(float_out)))
                 for name, out in (("nearest", nearest_out), ("adaround", quant_out))}
        count = sum(f.numel() for f in _batches(float_out))
        self.rows.append({
            "layer": point.layer, "weight_point": point.id, "weights": int(weight.size),
            "codes_changed": int(np.sum(new_plan.weight_codes != plan.weight_codes)),
            "rows": int(rows[1].shape[0]), "iterations": self.config.adaround_iterations,
            "mse_nearest": noise["nearest"] / count, "mse_adaround": noise["adaround"] / count,
            "snr_nearest_db": _snr_db(signal, noise["nearest"]),
            "snr_adaround_db": _snr_db(signal, noise["adaround"]),
        })
        return float_out, quant_out


def round_weights(mod: tvm.IRModule, dataset: Iterable, config: QConfig) -> tvm.IRModule:
    """A calibrated module -> the same module carrying every layer's learned weight rounding
    (``QuantState.weight_rounding``, read by the layer plan) and its report rows."""
    def reset(state):
        state.weight_rounding, state.weight_rounding_rows = {}, []

    state, walker = walk_calibration_data(mod, dataset, config, _Rounding,
                                          "weight_rounding='adaround'", reset)
    state.weight_rounding_rows = walker.rows
    return set_state(mod, state)


def rounding_key(config: QConfig) -> tuple:
    """The QConfig fields that decide the learned rounding beyond the calibration's and the
    bias correction's (``correction_key`` covers the weight codes and the bias)."""
    return (config.weight_rounding, config.adaround_iterations)


def maybe_round(mod: tvm.IRModule, dataset: Optional[Iterable], config: QConfig) -> tvm.IRModule:
    """``round_weights`` when ``config.weight_rounding == "adaround"``, else ``mod`` unchanged."""
    return round_weights(mod, dataset, config) if config.weight_rounding == "adaround" else mod


def RoundWeights(dataset: Optional[Iterable], config: Optional[QConfig] = None):  # pylint: disable=invalid-name
    """Adaptive weight rounding as a tvm.transform pass (identity unless
    ``config.weight_rounding == "adaround"``)."""
    return data_stage_pass("RoundWeights", maybe_round, dataset, config)
