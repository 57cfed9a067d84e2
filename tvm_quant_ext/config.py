"""QConfig: the knobs of post-training quantization, named after relay.quantize's.

Unknown keys are an error (relay silently ignored typos such as ``nbit_wieght``).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Sequence, Tuple

import numpy as np


class QKind(str, Enum):
    """What a quantization point quantizes; decides its bit width and scale rule."""

    INPUT = "INPUT"            # the model input, quantized once at the entry
    WEIGHT = "WEIGHT"          # a constant multiplied in a conv/matmul
    BIAS = "BIAS"              # the constant added to a conv/matmul output, at scale s_in*s_w
    ACTIVATION = "ACTIVATION"  # a computed tensor handed to the next quantized op


AUTO = "auto"  # calibrator choice per layer by measured error
BIAS_OVERFLOW_POLICIES = ("adjust", "zero_tiny", "clip", "error")
MODES = ("simulate", "integer")
UNSUPPORTED_OP_POLICIES = ("float", "error")
WEIGHT_ROUNDINGS = ("nearest", "adaround")


@dataclass(frozen=True)
class QConfig:
    """Quantization configuration.

    nbit_input: bits of the tensors passed between layers (and of the model input).
    nbit_weight: bits of conv/matmul weights.
    nbit_bias: bits of the bias. 16..64: codes at the accumulator scale s_in*s_w in that many
        bits. 8..15: relay.quantize's rule with that many bits: the bias is its own nbit-bit
        weight at its own (per-tensor) scale, shifted into the accumulator (8 reproduces
        relay.quantize; 9 is the bias study's 9-bit row).
    nbit_activation: bits of the accumulator (relay's name); the bias must fit in it.
    calibrate_mode: calibrator for INPUT/ACTIVATION points: "max", "power2", "percentile",
        "l2" (MSE), "kl" (entropy), "global_scale" (relay's default: every range is
        +-global_scale, no data needed), or "auto" (per layer, the data-driven one whose
        quantized tensor has the smallest squared error against fp32 on the calibration data).
    weight_scale: calibrator for WEIGHT points, the same names ("auto": per layer, the one
        with the smallest weight quantization error).
    calibrate_percentile: the percentile of |x| the "percentile" calibrator keeps.
    global_scale: the fixed range +-global_scale of the "global_scale" calibrator (relay's
        rule: scale = global_scale / 2^(b-1), not rounded to a power of two).
    layer_calibrate_mode / layer_weight_scale: per-layer overrides, {layer name: calibrator}.
        A layer name matches its weight/bias points and the activations named after it
        ("stem" matches "stem/relu"); an unknown name is an error.
    per_channel: weight (and so bias) scales per output channel.
    activation_symmetric: True: activations are signed codes in [-(2^(b-1)-1), 2^(b-1)-1]
        with zero point 0 (int8). False: unsigned codes in [0, 2^b-1] with a zero point
        (uint8); after a ReLU the zero point is 0 and the sign bit becomes resolution.
        Weights are always symmetric.
    bias_overflow: what to do when round(b / (s_in*s_w)) does not fit in nbit_bias:
        "adjust" raises that channel's weight scale until it fits (ONNX Runtime's rule),
        "zero_tiny" zeroes channels with max|w| < tiny_weight_threshold and keeps their bias
        exact (other overflowing channels are adjusted), "clip" saturates (the old failure),
        "error" raises.
    tiny_weight_threshold: max|w| under which "zero_tiny" zeroes a channel.
    skip_layers: layer names (not positions) kept in float.
    on_unsupported_op: "float" keeps ops with no rule in float and reports them; "error" raises.
    bias_correction: empirical bias correction: layer by layer in graph order, the
        per-channel mean of (quantized - float) layer output on the calibration data, with the
        layers before it already quantized and corrected, is subtracted from the layer's bias
        before the bias is quantized (passes/bias_correction.py; one pass over the data).
    equalize: cross-layer equalization in prepare: conv -> [ReLU | ReLU6] -> conv pairs
        (depthwise in the middle of a chain included) rescaled per channel so both layers'
        per-channel weight ranges match, then high-bias absorption where it is exact; the
        float function is unchanged (passes/prepare/equalize.py).
    precision_budget: fraction (0..1) of the model's layers (conv/dense) that may be raised to
        higher precision: floor(budget * layers) points, each an activation tensor (16-bit
        codes) or one layer's weights (15-bit codes, two int8 weights on CPU), the largest gain first (measured: output
        SNR gained by raising that point alone, on the first calibration images;
        passes/precision.py). 0: every point at nbit_input / nbit_weight.
    weight_rounding: "nearest" (round half up) or "adaround": per conv/dense layer, in graph
        order, each weight rounded up or down as learned on the calibration data to minimize
        the layer's output error against fp32, with the layers before it already quantized
        (Nagel et al. 2020; passes/adaround.py, math in rounding.py). Runs before the bias
        correction, which then measures the error that is left.
    adaround_iterations: Adam steps per layer for "adaround" (the paper used 10k-20k; 500
        keeps EfficientNet-Lite0 within minutes on 2 cores).
    mode: "simulate" (fake-quant in float that rounds and clips as integers would) or
        "integer" (int8/uint8/int16 codes between layers, int32/int64 accumulators,
        fixed-point requantize; same points and rounding rule, so it agrees with simulate
        within one LSB; see passes/realize/integer/).
    """

    nbit_input: int = 8
    nbit_weight: int = 8
    nbit_bias: int = 32
    nbit_activation: int = 32
    calibrate_mode: str = "max"
    weight_scale: str = "max"
    calibrate_percentile: float = 99.999
    global_scale: float = 8.0
    layer_calibrate_mode: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)
    layer_weight_scale: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)
    per_channel: bool = True
    activation_symmetric: bool = True
    bias_overflow: str = "adjust"
    tiny_weight_threshold: float = 1e-6
    skip_layers: Tuple[str, ...] = field(default_factory=tuple)
    on_unsupported_op: str = "float"
    bias_correction: bool = False
    equalize: bool = False
    precision_budget: float = 0.0
    weight_rounding: str = "nearest"
    adaround_iterations: int = 500
    mode: str = "simulate"

    def __post_init__(self):
        from calibrate import OBSERVERS  # the names the calibrate package implements

        _check_types(self)
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        for key in ("nbit_input", "nbit_weight"):
            value = getattr(self, key)
            if not isinstance(value, int) or not 2 <= value <= 16:
                raise ValueError(f"QConfig.{key}={value!r}: expected an int in [2, 16]")
        if not isinstance(self.nbit_bias, int) or not 8 <= self.nbit_bias <= 64:
            raise ValueError(f"QConfig.nbit_bias={self.nbit_bias!r}: expected an int in [8, 64] "
                             "(8..15: relay's own-scale rule, 16..64: accumulator scale s_in*s_w)")
        if self.nbit_activation not in (16, 32, 64):
            raise ValueError(
                f"QConfig.nbit_activation={self.nbit_activation!r}: the accumulator is 16, 32 or 64 bits")
        if self.nbit_bias > self.nbit_activation:
            raise ValueError(
                f"QConfig.nbit_bias={self.nbit_bias} does not fit the accumulator "
                f"nbit_activation={self.nbit_activation}; set nbit_activation={self.nbit_bias}")
        calibrators = sorted(OBSERVERS) + [AUTO]
        for key in ("calibrate_mode", "weight_scale"):
            _check_choice(key, getattr(self, key), calibrators)
        for key in ("layer_calibrate_mode", "layer_weight_scale"):
            overrides = getattr(self, key)
            pairs = sorted(dict(overrides).items() if isinstance(overrides, dict)
                           else ((str(k), str(v)) for k, v in overrides))
            for layer, name in pairs:
                _check_choice(f"{key}[{layer!r}]", name, calibrators)
            object.__setattr__(self, key, tuple(pairs))
        if not 0 < self.calibrate_percentile <= 100:
            raise ValueError(f"QConfig.calibrate_percentile={self.calibrate_percentile!r}: "
                             "expected a percentile in (0, 100]")
        if not (isinstance(self.global_scale, (int, float)) and math.isfinite(self.global_scale)
                and self.global_scale > 0):
            raise ValueError(f"QConfig.global_scale={self.global_scale!r}: expected a positive "
                             "finite range (relay's default is 8.0)")
        _check_choice("bias_overflow", self.bias_overflow, BIAS_OVERFLOW_POLICIES)
        _check_choice("on_unsupported_op", self.on_unsupported_op, UNSUPPORTED_OP_POLICIES)
        _check_choice("mode", self.mode, MODES)
        _check_choice("weight_rounding", self.weight_rounding, WEIGHT_ROUNDINGS)
        if not 1 <= self.adaround_iterations <= 1_000_000:
            raise ValueError(f"QConfig.adaround_iterations={self.adaround_iterations!r}: expected "
                             "a number of optimizer steps per layer in [1, 1000000]")
        if not 0 <= self.precision_budget <= 1:
            raise ValueError(f"QConfig.precision_budget={self.precision_budget!r}: expected a "
                             "fraction of the layers in [0, 1]")
        if self.precision_budget > 0 and self.nbit_input >= 16 and self.nbit_weight >= 15:
            raise ValueError(f"QConfig.precision_budget raises activations to 16 bits and weights "
                             f"to 15, but nbit_input={self.nbit_input} and "
                             f"nbit_weight={self.nbit_weight} already are")
        if not self.tiny_weight_threshold >= 0:
            raise ValueError(f"QConfig.tiny_weight_threshold={self.tiny_weight_threshold!r} must be >= 0")

    @classmethod
    def preset(cls, name: str, **changes) -> "QConfig":
        """A named configuration (``PRESETS``), with ``changes`` over it."""
        _check_choice("preset", name, sorted(PRESETS))
        return cls.from_dict({**PRESETS[name], **changes})

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "QConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown QConfig key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "QConfig":
        return QConfig.from_dict({**dataclasses.asdict(self), **changes})

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["skip_layers"] = list(self.skip_layers)
        out["layer_calibrate_mode"] = dict(self.layer_calibrate_mode)
        out["layer_weight_scale"] = dict(self.layer_weight_scale)
        return out


# Named configurations, chosen from the measurements in docs/accuracy.md:
# "fast": the defaults (one calibration pass, nothing data-driven after it);
# "accurate": asymmetric activations + bias correction, the best row on EfficientNet-Lite0
# (22.5 dB vs 18.6 for either alone's best and for ONNX Runtime, agreement 69/70) and on the
# MNIST CNN (47.8 vs 43.1 dB). Equalization is left out: with per-channel weights it lost
# 1.3 dB on Lite0 (it is for per-tensor weights); a precision budget of 0.05-0.3 moved Lite0 by
# 0.1-0.5 dB only (docs/accuracy.md, "Mixed precision"). weight_rounding="adaround" is left out
# for now: asym + adaround gave 24.71 dB on Lite0 and 48.71 on MNIST (above this preset's
# 22.47 / 47.80), but asym + adaround + bias correction fell to 44.00 on MNIST, the Fashion
# ResNets are unmeasured, and it quantizes ~20x slower (docs/accuracy.md, "Adaptive rounding").
PRESETS: Dict[str, Dict[str, Any]] = {
    "fast": {},
    "accurate": {"activation_symmetric": False, "bias_correction": True},
}


# field annotation -> the Python types its value may have (bool is an int subclass: an int field
# must not take True, and a bool field must not take "False", which is truthy)
# (numpy integers and floats are accepted and stored as Python ones)
_FIELD_TYPES = {"int": (numbers.Integral, int), "float": (numbers.Real, float),
                "bool": ((bool, np.bool_), bool), "str": (str, str)}


def _check_types(config: "QConfig") -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if str(f.type) not in _FIELD_TYPES:
            continue
        allowed, python_type = _FIELD_TYPES[str(f.type)]
        wrong_bool = isinstance(value, (bool, np.bool_)) and python_type is not bool
        if wrong_bool or not isinstance(value, allowed):
            raise TypeError(f"QConfig.{f.name}={value!r}: expected {str(f.type)}, got "
                            f"{type(value).__name__}")
        object.__setattr__(config, f.name, python_type(value))
    if isinstance(config.skip_layers, str):
        raise TypeError(f"QConfig.skip_layers={config.skip_layers!r}: expected a list of layer "
                        f"names, got one string; write skip_layers=[{config.skip_layers!r}]")
    bad = [name for name in config.skip_layers if not isinstance(name, str)]
    if bad:
        raise TypeError(f"QConfig.skip_layers: layer names are strings, got {bad[:3]} "
                        "(layers are named, never numbered)")


def _check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"QConfig.{key}={value!r}: expected one of {list(choices)}")
