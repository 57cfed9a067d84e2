"""relay 0.19's qconfig keys, each with its rule: the QConfig fields it sets, or why it cannot.

``RELAY_DEFAULTS`` is relay 0.19's ``QConfig._node_defaults`` (python/tvm/relay/quantize/
quantize.py), key for key. ``KEY_RULES`` has one rule per key: ``rule(value, values)`` (``values``:
the whole relay config, for keys checked against others) returns the QConfig fields the key
sets. A value whose relay behaviour cannot be reproduced raises ``ValueError`` naming the key
and what to do; a value that runs but not exactly as relay ran it warns with
``RelayDifferenceWarning`` saying what differs. The two keys that depend on the model
(``skip_conv_layers``, ``skip_dense_layer``) are only checked here; ``layers.py`` turns them into
layer names.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple, Union

RELAY_DEFAULTS: Dict[str, Any] = {
    "nbit_input": 8,
    "nbit_weight": 8,
    "nbit_activation": 32,
    "dtype_input": "int8",
    "dtype_weight": "int8",
    "dtype_activation": "int32",
    "calibrate_mode": "global_scale",
    "global_scale": 8.0,
    "weight_scale": "power2",
    "skip_dense_layer": True,
    "skip_conv_layers": (0,),
    "do_simulation": False,
    "round_for_shift": True,
    "debug_enabled_ops": None,
    "rounding": "UPWARD",
    "calibrate_chunk_by": -1,
    "partition_conversions": "disabled",
}

# Keys of this project that relay did not have. relay's bias was its own 8-bit weight
# (nbit_bias=8 reproduces it); 32 bits at the accumulator scale is the default here.
EXTRA_DEFAULTS: Dict[str, Any] = {"nbit_bias": 32}

DEFAULTS: Dict[str, Any] = {**RELAY_DEFAULTS, **EXTRA_DEFAULTS}

# QConfig fields that are not relay keys but must be set to run as relay did
RELAY_BASE = {"per_channel": False}  # relay's weight scales were one per tensor


class RelayDifferenceWarning(UserWarning):
    """A relay qconfig key runs here, but not exactly as relay ran it (the message says how)."""


def refuse(key: str, value, why: str):
    raise ValueError(f"relay_quantize.qconfig({key}={value!r}): {why}")


def differ(key: str, value, what: str) -> None:
    warnings.warn(f"relay_quantize.qconfig({key}={value!r}): {what}", RelayDifferenceWarning,
                  stacklevel=6)  # the caller of qconfig(), through the rule and RelayQConfig


# relay's calibrate_mode -> this project's calibrator, and what differs from relay when it does
CALIBRATE_MODES = {"global_scale": "global_scale", "kl_divergence": "kl", "percentile": "percentile"}
WEIGHT_SCALES = {"power2": "power2", "max": "max"}
# relay divided every threshold T by 2^(b-1) (T itself landed on 128 and was clipped to 127);
# here max/kl/percentile divide by 2^(b-1)-1, so T is exact. power2 and global_scale match.
_BY_127 = ("relay divided the threshold by 2^(b-1) (128 at 8 bits, so the threshold itself was "
           "clipped to 127/128 of it); here it is divided by 127, so scales differ by 128/127")
DIFFERENCES = {
    ("calibrate_mode", "kl_divergence"):
        "the same entropy rule (255 quantized bins at 8 bits), but on a streaming 4096-bin "
        "histogram instead of relay's 8001 bins over all samples, so thresholds can differ by "
        "about a bin; " + _BY_127,
    ("calibrate_mode", "percentile"):
        "relay took the exact 0.99999 quantile of |x| over all samples; here the 99.999th "
        "percentile comes from a streaming histogram (exact within one bin); " + _BY_127,
    ("weight_scale", "max"): "relay's max weight scale: " + _BY_127,
}


def _choice(key: str, table: Dict[str, str], field: str, hint: str) -> Callable:
    def rule(value, values):
        if value not in table:
            refuse(key, value, f"relay's choices are {sorted(table)}; {hint}")
        if (key, value) in DIFFERENCES:
            differ(key, value, DIFFERENCES[key, value])
        return {field: table[value]}
    return rule


@dataclass(frozen=True)
class Fixed:
    """A key whose only value that can be reproduced is relay's default; ``why`` says why."""

    default: Any
    why: str
    choices: Tuple[Any, ...] = ()  # every value relay accepted, to tell a typo from the rest


def _flag(key: str, value) -> bool:
    if value not in (True, False):
        refuse(key, value, "expected True or False")
    return bool(value)


def _checked_flag(key: str) -> Callable:
    """A flag that the model's layers resolve (``layers.py``): only its type is checked here."""
    def rule(value, values):
        _flag(key, value)
        return {}
    return rule


def _skip_conv_layers(value, values):
    if value is not None:
        indices = list(value) if isinstance(value, (list, tuple)) else None
        if indices is None or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                      for i in indices):
            refuse("skip_conv_layers", value, "expected None or a list of conv2d indices "
                   "(0 = the first conv2d in graph order)")
    return {}


# dtype key -> (the nbit key it stores, storage width used here for those bits, what that
# storage is called in a warning)
DTYPE_KEYS = {
    "dtype_input": ("nbit_input", lambda nbit: 8 if nbit <= 8 else 16, "codes between layers"),
    "dtype_weight": ("nbit_weight", lambda nbit: 8 if nbit <= 8 else 16, "weight codes"),
    # int64 where a sum could overflow int32, whatever nbit_activation says
    "dtype_activation": ("nbit_activation", lambda nbit: 64 if nbit == 64 else 32, "accumulators"),
}


def _dtype(key: str) -> Callable:
    nbit_key, storage, what = DTYPE_KEYS[key]

    def rule(value, values):
        match = re.fullmatch(r"(u?)int(8|16|32|64)", str(value))
        if match is None:
            refuse(key, value, "expected an integer type: int8, int16, int32 or int64")
        unsigned, width, nbit = match.group(1) == "u", int(match.group(2)), values[nbit_key]
        changes = {}
        if unsigned and key != "dtype_input":
            refuse(key, value, f"{what} are signed (as in relay's realize); use "
                               f"'int{width}'")
        if unsigned:
            changes["activation_symmetric"] = False
            differ(key, value, "relay cast its signed codes to the unsigned type; here an "
                               "unsigned input type means asymmetric codes 0..2^b-1 with a zero "
                               "point (QConfig.activation_symmetric=False)")
        if width < nbit and key != "dtype_activation":
            refuse(key, value, f"{nbit_key}={nbit} bits do not fit in {value}")
        if not values["do_simulation"] and width != storage(nbit):
            # simulation never stores codes, in relay or here: only integer mode has a dtype
            here = f"{'u' if unsigned else ''}int{storage(nbit)}"
            if key == "dtype_activation":
                differ(key, value, f"relay accumulated in {value} (clipped to {nbit} bits); here "
                                   f"{what} are {here} (int64 where a sum could overflow int32), "
                                   "so nothing wraps around")
            else:
                differ(key, value, f"relay stored {nbit}-bit {what} as {value}; here they are "
                                   f"{here} (the narrowest type that holds {nbit} bits); the "
                                   "values are the same")
        return changes
    return rule


def _nbit_bias(value, values):
    # 32 unless the accumulator is narrower (nbit_activation=16): the bias must fit in it
    if "nbit_bias" not in values.given and isinstance(values["nbit_activation"], int):
        value = min(value, values["nbit_activation"])
    return {"nbit_bias": value}


def _chunk_by(value, values):
    if not isinstance(value, int) or (value != -1 and value <= 0):
        refuse("calibrate_chunk_by", value, "expected -1 or a positive number of outputs")
    if value != -1:
        differ("calibrate_chunk_by", value, "no effect: relay used it to bound memory; here "
                                            "calibration streams each batch into O(bins) "
                                            "observers, so memory never grows with the data")
    return {}


# relay key -> rule(value, values) -> QConfig fields, or Fixed(relay's default, why no other)
KEY_RULES: Dict[str, Union[Callable, Fixed]] = {
    "nbit_input": lambda v, c: {"nbit_input": v},
    "nbit_weight": lambda v, c: {"nbit_weight": v},
    "nbit_activation": lambda v, c: {"nbit_activation": v},
    "dtype_input": _dtype("dtype_input"),
    "dtype_weight": _dtype("dtype_weight"),
    "dtype_activation": _dtype("dtype_activation"),
    "calibrate_mode": _choice("calibrate_mode", CALIBRATE_MODES, "calibrate_mode",
                              "this project's max, l2 and auto are QConfig(calibrate_mode=...) "
                              "through tvm_quant_ext.quantize"),
    "global_scale": lambda v, c: {"global_scale": v},
    "weight_scale": _choice("weight_scale", WEIGHT_SCALES, "weight_scale",
                            "other weight calibrators are QConfig(weight_scale=...) through "
                            "tvm_quant_ext.quantize"),
    "skip_dense_layer": _checked_flag("skip_dense_layer"),
    "skip_conv_layers": _skip_conv_layers,
    "do_simulation": lambda v, c: {"mode": "simulate" if _flag("do_simulation", v) else "integer"},
    "round_for_shift": Fixed(True, "requantize always rounds half up (relay's round_for_shift="
                                   "True); truncating shifts are not implemented"),
    "debug_enabled_ops": Fixed(None, "quantizing only some op types is not supported (a partial "
                                     "set changes where tensors are requantized); keep layers in "
                                     "float with skip_conv_layers / skip_dense_layer, or by name "
                                     "with QConfig.skip_layers through tvm_quant_ext.quantize"),
    "rounding": Fixed("UPWARD", "fixed-point multiplies round half up (relay's 'UPWARD'); "
                                "'TONEAREST' is not implemented", ("UPWARD", "TONEAREST")),
    "calibrate_chunk_by": _chunk_by,
    "partition_conversions": Fixed("disabled", "the quantized module stays one main function; "
                                               "to check that nothing is left in float, use "
                                               "do_simulation=False and read "
                                               "tvm_quant_ext.get_report(mod).float_ops",
                                   ("disabled", "enabled", "fully_integral")),
    "nbit_bias": _nbit_bias,
}

class RelayValues(dict):
    """A full relay config (every key) and the keys the user gave (``given``)."""

    def __init__(self, values: Dict[str, Any], given=()):
        super().__init__(values)
        self.given = frozenset(given)


def qconfig_fields(values: RelayValues) -> Dict[str, Any]:
    """The QConfig fields a relay config sets (everything but the model's layer names)."""
    fields = dict(RELAY_BASE)
    for key, rule in KEY_RULES.items():
        value = values[key]
        if isinstance(rule, Fixed):
            if rule.choices and value not in rule.choices:
                refuse(key, value, f"relay's choices are {list(rule.choices)}")
            if value != rule.default:
                refuse(key, value, f"not supported: {rule.why} (relay's default is "
                                   f"{rule.default!r})")
            continue
        fields.update(rule(value, values))
    return fields
