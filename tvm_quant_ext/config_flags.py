"""QConfig on the command line: one flag per field, or a TOML / JSON file.

    tvm-quant quantize net.onnx --nbit-bias 16 --calibrate-mode l2 --per-channel false \\
        --skip-layers stem,head --layer-calibrate-mode stem=max --config base.toml

The flags are made from the QConfig fields, so a new field gets its flag without a change
here: ``--<field-with-dashes>``; booleans take ``true``/``false``; layer lists are comma
separated; per-layer maps are ``LAYER=NAME`` pairs. A flag given on the command line wins over
the same key in ``--config``; a key the file has that QConfig lacks is an error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Callable, Dict, Optional

from .config import (AUTO, BIAS_OVERFLOW_POLICIES, MODES, UNSUPPORTED_OP_POLICIES,
                     WEIGHT_ROUNDINGS, QConfig)

BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse_bool(text: str) -> bool:
    if text.lower() not in BOOL_WORDS:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return BOOL_WORDS[text.lower()]


def parse_names(text: str) -> tuple:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_pairs(text: str) -> Dict[str, str]:
    pairs = {}
    for item in parse_names(text):
        layer, sep, value = item.partition("=")
        if not sep or not layer or not value:
            raise argparse.ArgumentTypeError(f"expected LAYER=NAME pairs, got {item!r}")
        pairs[layer] = value
    return pairs


# a QConfig field's annotation -> the argparse type of its flag
FLAG_TYPES: Dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "str": str, "bool": parse_bool,
    "Tuple[str, ...]": parse_names, "Tuple[Tuple[str, str], ...]": parse_pairs,
}


def _metavar(flag_type) -> str:
    return {parse_bool: "true|false", parse_names: "LAYER,...", parse_pairs: "LAYER=NAME,...",
            int: "N", float: "X", str: "NAME"}[flag_type]


def _help(field: dataclasses.Field) -> str:
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    return f"QConfig.{field.name} (default {default!r})"


def field_choices() -> Dict[str, list]:
    """The fields whose values come from a fixed set (argparse lists them in --help)."""
    from calibrate import OBSERVERS

    calibrators = sorted(OBSERVERS) + [AUTO]
    return {"calibrate_mode": calibrators, "weight_scale": calibrators,
            "bias_overflow": list(BIAS_OVERFLOW_POLICIES),
            "on_unsupported_op": list(UNSUPPORTED_OP_POLICIES), "mode": list(MODES),
            "weight_rounding": list(WEIGHT_ROUNDINGS)}


def add_qconfig_arguments(parser: argparse.ArgumentParser,
                          extra_choices: Optional[Dict[str, list]] = None) -> None:
    """One flag per QConfig field; ``extra_choices``: values a command accepts beyond
    QConfig's own (eval's ``--mode both``)."""
    choices = field_choices()
    for key, values in (extra_choices or {}).items():
        choices[key] = choices[key] + list(values)
    group = parser.add_argument_group("quantization (QConfig fields; see QConfig's docstring)")
    group.add_argument("--config", metavar="FILE.toml|json",
                       help="QConfig keys from a file; flags given here override them")
    for field in dataclasses.fields(QConfig):
        flag_type = FLAG_TYPES.get(str(field.type))
        if flag_type is None:
            raise TypeError(f"QConfig.{field.name}: no command-line type for {field.type}; add one "
                            "to config_flags.FLAG_TYPES")
        extra = {"nargs": "?", "const": True} if flag_type is parse_bool else {}  # --per-channel
        group.add_argument("--" + field.name.replace("_", "-"), dest=f"qconfig_{field.name}",
                           type=flag_type, default=None, help=_help(field),
                           choices=choices.get(field.name),
                           metavar=None if field.name in choices else _metavar(flag_type), **extra)
    # the short spellings tvm-quant eval has always had
    group.add_argument("--per-tensor", dest="qconfig_per_channel", action="store_const",
                       const=False, help="= --per-channel false")
    group.add_argument("--asymmetric", dest="qconfig_activation_symmetric", action="store_const",
                       const=False, help="= --activation-symmetric false (uint8 + zero point)")
    group.add_argument("--percentile", dest="qconfig_calibrate_percentile", type=float,
                       help="= --calibrate-percentile")


def read_config_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as f:
                values = tomllib.load(f)
        elif path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        else:
            raise ValueError("expected a .toml or .json file")
    except ValueError as err:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ValueError(f"--config {path}: {err}") from err
    values = values.get("qconfig", values) if isinstance(values, dict) else values
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a table of QConfig keys")
    return values


def qconfig_from_args(args: argparse.Namespace) -> QConfig:
    values: Dict[str, Any] = read_config_file(args.config) if args.config else {}
    for field in dataclasses.fields(QConfig):
        given = getattr(args, f"qconfig_{field.name}")
        if given is not None:
            values[field.name] = given
    if "nbit_bias" in values and "nbit_activation" not in values:
        # a wide bias needs a wide accumulator: follow it, as tvm-quant eval does
        values["nbit_activation"] = 64 if values["nbit_bias"] > 32 else 32
    return QConfig.from_dict(values)


__all__ = ["FLAG_TYPES", "add_qconfig_arguments", "parse_bool", "qconfig_from_args",
           "read_config_file"]
