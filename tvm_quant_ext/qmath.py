"""The arithmetic of quantization as plain numpy: rounding, fake-quant, the bias rules.

Everything the Relax passes emit is computed or mirrored here, so it is property-tested
apart from TVM (tests/test_qmath.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from calibrate.observers import qmax_for  # one definition of the symmetric integer range

# float64 cannot hold 2^63-1; the largest double below 2^63 keeps int64 casts exact.
_INT64_SAFE_MAX = float(2**63 - 1024)


class BiasOverflowError(ValueError):
    """A bias does not fit its integer width at scale s_in*s_w and the policy is 'error'."""


def bias_limit(nbit: int) -> float:
    """Largest |q| a symmetric signed nbit integer holds, as a float that casts exactly."""
    return min(float(2 ** (nbit - 1) - 1), _INT64_SAFE_MAX)


def activation_range(nbit: int, symmetric: bool = True):
    """(qmin, qmax) of activation codes: signed symmetric, or unsigned with a zero point."""
    if symmetric:
        qmax = qmax_for(nbit, True)
        return -qmax, qmax
    return 0, qmax_for(nbit, False)


def round_half_up(x):
    """Round to nearest, ties toward +inf: what a fixed-point multiply with rounding does."""
    return np.floor(np.asarray(x, np.float64) + 0.5)


def _broadcast_scale(scale, ndim: int, axis: Optional[int]):
    scale = np.asarray(scale, np.float64)
    if scale.ndim == 0 or axis is None:
        return scale
    shape = [1] * ndim
    shape[axis % ndim] = scale.shape[0]
    return scale.reshape(shape)


def quantize(x, scale, nbit: int, axis: Optional[int] = None, signed: bool = True) -> np.ndarray:
    """Integer codes clip(round_half_up(x / s), -qmax, qmax) as int64."""
    x = np.asarray(x, np.float64)
    qmax = qmax_for(nbit, signed)
    qmin = -qmax if signed else 0
    codes = np.clip(round_half_up(x / _broadcast_scale(scale, x.ndim, axis)), qmin, qmax)
    return codes.astype(np.int64)


def dequantize(codes, scale, axis: Optional[int] = None) -> np.ndarray:
    codes = np.asarray(codes)
    return codes.astype(np.float64) * _broadcast_scale(scale, codes.ndim, axis)


def fake_quant(x, scale, nbit: int, axis: Optional[int] = None, signed: bool = True) -> np.ndarray:
    return dequantize(quantize(x, scale, nbit, axis, signed), scale, axis)


def fake_quant_affine(x, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """(clip(round_half_up(x / s) + z, qmin, qmax) - z) * s: what an activation point does."""
    codes = np.clip(round_half_up(np.asarray(x, np.float64) / scale) + zero_point, qmin, qmax)
    return (codes - zero_point) * scale


def snr_db(reference, test) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` in dB (inf when equal)."""
    reference = np.asarray(reference, np.float64)
    noise = np.sum((reference - np.asarray(test, np.float64)) ** 2)
    signal = np.sum(reference**2)
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


@dataclass
class BiasAdjustment:
    """One change the bias rule made to a layer's channel, for the report."""

    layer: str
    channel: int
    action: str  # "adjusted" (weight scale raised), "zeroed" (tiny weights zeroed), "clipped"
    bias: float
    old_weight_scale: float
    new_weight_scale: float

    def to_dict(self):
        return dict(self.__dict__)


@dataclass
class BiasQuant:
    """Result of quantizing one layer's bias (and the weight scales it may have changed)."""

    weight_scale: np.ndarray        # (C,) final weight scale per output channel
    zeroed: np.ndarray              # (C,) bool: channel weights set to zero
    codes: np.ndarray               # (C,) int64 bias codes at scale ``scale``
    scale: np.ndarray               # (C,) scale of the codes (s_in*s_w, or relay's 8-bit scale)
    accumulator_value: np.ndarray   # (C,) float64 bias as it enters the accumulator
    adjustments: List[BiasAdjustment] = field(default_factory=list)


def quantize_bias(
    bias,
    input_scale: float,
    weight_scale,
    weight_absmax,
    *,
    nbit_bias: int,
    nbit_accumulator: int = 32,
    policy: str = "adjust",
    per_channel: bool = True,
    tiny_weight_threshold: float = 1e-6,
    relay8_scale_mode: str = "max",
    layer: str = "<layer>",
) -> BiasQuant:
    """Quantize a conv/matmul bias as its own kind.

    nbit_bias >= 16: codes round(b / (s_in*s_w)) per channel, in nbit_bias bits.
    8 <= nbit_bias <= 15: the relay.quantize way with nbit_bias bits: a code at the bias's own
    per-tensor scale (max or power-of-two of max|b|), shifted into the accumulator
    (s_in*s_w grid, ``nbit_accumulator`` bits).

    When the codes do not fit (tiny s_in*s_w), ``policy`` decides: "adjust" raises the weight
    scale of the channel (all channels when per-tensor) until they fit; "zero_tiny" zeroes the
    weights of channels with max|w| < tiny_weight_threshold (and raises their scale, keeping the
    bias exact), adjusting any other overflowing channel; "clip" saturates; "error" raises.
    """
    bias = np.asarray(bias, np.float64).reshape(-1)
    channels = bias.shape[0]
    weight_scale = np.broadcast_to(np.asarray(weight_scale, np.float64), (channels,)).copy()
    weight_absmax = np.broadcast_to(np.asarray(weight_absmax, np.float64), (channels,))
    if not (np.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"layer {layer!r}: input scale {input_scale!r} must be positive and finite")
    if not np.all(np.isfinite(bias)):
        raise ValueError(f"layer {layer!r}: bias contains NaN/Inf")

    if not 8 <= nbit_bias <= 64:
        raise ValueError(f"layer {layer!r}: nbit_bias={nbit_bias} is outside [8, 64]")
    if nbit_bias < 16:
        # relay.quantize: bias is an nbit_bias-bit WEIGHT with its own (per-tensor) scale.
        threshold = float(np.max(np.abs(bias))) or 1.0
        if relay8_scale_mode == "power2":
            own_scale = 2.0 ** np.ceil(np.log2(threshold)) / 2 ** (nbit_bias - 1)
        else:
            own_scale = threshold / qmax_for(nbit_bias)
        target = dequantize(quantize(bias, own_scale, nbit_bias), own_scale)  # what survives
        limit_bits = nbit_accumulator
    else:
        target = bias
        limit_bits = nbit_bias
    limit = bias_limit(limit_bits)

    zeroed = np.zeros(channels, bool)
    adjustments: List[BiasAdjustment] = []
    acc_scale = input_scale * weight_scale
    needed = np.abs(target) / acc_scale
    overflow = needed > limit
    if overflow.any():
        if policy == "error":
            c = int(np.argmax(overflow))
            raise BiasOverflowError(
                f"layer {layer!r} channel {c}: bias {target[c]:.6g} needs |code| {needed[c]:.3g} > "
                f"{limit:.3g} ({limit_bits}-bit) at scale s_in*s_w = {acc_scale[c]:.3g}; use "
                "bias_overflow='adjust' or 'zero_tiny', or a wider nbit_bias")
        if policy == "clip":
            for c in np.flatnonzero(overflow):
                adjustments.append(BiasAdjustment(layer, int(c), "clipped", float(bias[c]),
                                                  float(weight_scale[c]), float(weight_scale[c])))
        elif policy in ("adjust", "zero_tiny"):
            # The smallest weight scale at which |b| fits, nudged up so rounding stays inside.
            required = np.abs(target) / (input_scale * limit) * (1.0 + 1e-9)
            if policy == "zero_tiny":
                zeroed = overflow & (weight_absmax < tiny_weight_threshold)
            old = weight_scale.copy()
            if per_channel:
                new = np.where(overflow, np.maximum(old, required), old)
            else:
                new = np.full(channels, max(float(old.max()), float(required.max())))
            for c in range(channels):
                if overflow[c] or new[c] != old[c]:
                    action = "zeroed" if zeroed[c] else "adjusted"
                    adjustments.append(BiasAdjustment(layer, c, action, float(bias[c]),
                                                      float(old[c]), float(new[c])))
            weight_scale = new
            acc_scale = input_scale * weight_scale
        else:
            raise ValueError(f"unknown bias_overflow policy {policy!r}")

    codes = np.clip(round_half_up(target / acc_scale), -limit, limit).astype(np.int64)
    return BiasQuant(
        weight_scale=weight_scale,
        zeroed=zeroed,
        codes=codes,
        scale=acc_scale,
        accumulator_value=codes.astype(np.float64) * acc_scale,
        adjustments=adjustments,
    )


def widen_qparams(scale: float, zero_point: int, nbit_from: int, nbit_to: int,
                  symmetric: bool = True):
    """(scale, zero point) at ``nbit_to`` bits covering the real range that (scale, zero_point)
    covers at ``nbit_from`` bits: a point raised to 16 bits keeps its calibrated range and gets
    2^(nbit_to - nbit_from) times finer steps. A zero point of 0 stays 0 (real 0 stays exact)."""
    lo, hi = activation_range(nbit_from, symmetric)
    new_lo, new_hi = activation_range(nbit_to, symmetric)
    real_lo, real_hi = (lo - zero_point) * scale, (hi - zero_point) * scale
    if symmetric:
        return float(scale * hi / new_hi), 0
    new_scale = (real_hi - real_lo) / (new_hi - new_lo)
    if zero_point == 0:
        return float(new_scale), 0
    new_zero = int(np.clip(round_half_up(new_lo - real_lo / new_scale), new_lo, new_hi))
    return float(new_scale), new_zero
