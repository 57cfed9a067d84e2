"""relay.quantize (TVM <= 0.19) on Relax: a script changes its imports, nothing else.

    from tvm_quant_ext import relay_quantize            # was: from tvm.relay import quantize
    from tvm_quant_ext.relay_quantize import relay      # was: from tvm import relay

    mod, params = relay.frontend.from_mxnet(block, {"data": (1, 3, 224, 224)})
    with relay.quantize.qconfig(calibrate_mode="kl_divergence", weight_scale="max"):
        mod = relay.quantize.quantize(mod, params, dataset=calibrate_dataset())
    model = tvm_quant_ext.build(mod, target="llvm")      # relay.build has no stand-in

``qconfig`` takes every key relay 0.19's QConfig had, with relay's defaults (global_scale 8.0
activations, power2 per-tensor weights, the first conv2d and every dense layer in float, an
integer result); ``quantize`` maps the current one to a ``QConfig`` (``to_qconfig``) and runs
``tvm_quant_ext.quantize``. Keys relay had whose behaviour cannot be reproduced raise a
ValueError saying why; keys that run differently warn with ``RelayDifferenceWarning`` (filter
it to silence them). The full table: docs/relay_migration.md.

One key is added: ``nbit_bias``, default 32 (the bias at the accumulator scale s_in*s_w).
relay's own rule, the bias as its own 8-bit weight shifted into the accumulator, is
``nbit_bias=8``.
"""
from __future__ import annotations

import sys
from typing import Dict, Iterable, Optional

import numpy as np
import tvm

from .. import passes, quantize_pipeline
from ..config import QConfig
from ..frontend import from_mxnet
from .keys import DEFAULTS, KEY_RULES, RELAY_DEFAULTS, RelayDifferenceWarning
from .layers import relay_layers, skipped_layers
from .scope import RelayQConfig, current_qconfig, qconfig


def to_qconfig(mod: tvm.IRModule, relay_config: Optional[RelayQConfig] = None) -> QConfig:
    """The QConfig a relay config means on ``mod`` (default: the current one): its fields, plus
    the layers ``skip_conv_layers`` / ``skip_dense_layer`` select as ``skip_layers``."""
    cfg = relay_config or current_qconfig()
    return cfg.config.replace(skip_layers=skipped_layers(mod, cfg.skip_conv_layers,
                                                         cfg.skip_dense_layer))


def prerequisite_optimize(mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]] = None) -> tvm.IRModule:
    """relay's prerequisite_optimize: bind params, fold BatchNorm and constants, one bias add per
    layer (this project's prepare stage; ``quantize`` runs it itself). Pass ``quantize`` the
    original module: once weights are constants, layers are numbered (``conv2d_3``), not named."""
    return passes.prepare(mod, params)


def quantize(mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]] = None,
             dataset: Optional[Iterable] = None) -> tvm.IRModule:
    """relay.quantize.quantize under the current qconfig. ``dataset``: an iterable of input
    dicts (``{"data": array}``); none is needed for calibrate_mode="global_scale"."""
    return quantize_pipeline(params, dataset, to_qconfig(mod))(mod)


class RelayNamespace:
    """What a relay.quantize script reaches through ``relay``: ``relay.quantize`` (this module)
    and ``relay.frontend.from_mxnet``; any other name says where it went."""

    def __init__(self, path: str, **members):
        self.__dict__.update(members, path=path)

    def __getattr__(self, name):
        raise AttributeError(
            f"{self.path}.{name} is not part of the relay.quantize drop-in (Relay is gone from "
            "TVM 0.27): build and run with tvm_quant_ext.build(mod, target), import models with "
            "tvm_quant_ext.frontend or tvm.relax.frontend")


relay = RelayNamespace("relay", quantize=sys.modules[__name__],
                       frontend=RelayNamespace("relay.frontend", from_mxnet=from_mxnet))

__all__ = [
    "DEFAULTS", "KEY_RULES", "RELAY_DEFAULTS", "RelayDifferenceWarning", "RelayNamespace",
    "RelayQConfig", "current_qconfig", "from_mxnet", "prerequisite_optimize", "qconfig",
    "quantize", "relay", "relay_layers", "to_qconfig",
]
