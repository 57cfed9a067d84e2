"""realize: a calibrated module -> the quantized module, in one of two modes.

``plan.py`` decides every layer's constants (weight codes and scales, bias codes, overflow
fixes) once; ``QConfig.mode`` then picks the rewrite from ``REALIZERS``: ``simulate.py``
(fake-quant in float64) or ``integer/`` (int8 codes between layers, int32 accumulators,
fixed-point requantize). Both round the same way, so they agree within one LSB at every point.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import tvm
from tvm import relax

from ...config import QConfig
from ...points import get_state, set_state
from ...report import build_report
from .integer import realize_integer
from .plan import RealizeContext, collect_constants, plan_layers
from .simulate import REALIZE_RULES, realize_simulate, register_realize

# mode -> (module, context) -> (realized module, ops the rewrite left in float)
Realizer = Callable[[tvm.IRModule, RealizeContext], Tuple[tvm.IRModule, List[Dict[str, str]]]]
REALIZERS: Dict[str, Realizer] = {"simulate": realize_simulate, "integer": realize_integer}


def realize(mod: tvm.IRModule, config: Optional[QConfig] = None, tap: bool = False) -> tvm.IRModule:
    """Calibrated module -> quantized module (markers replaced), with its report.

    ``tap=True`` keeps a marker after every activation quantization so an evaluation can
    read the quantized tensors by point id (see ``tvm_quant_ext.evaluate``).
    """
    config = config or QConfig()
    state = get_state(mod)
    ctx = RealizeContext(config, state, tap=tap)
    collect_constants(mod, ctx)
    adjustments = plan_layers(ctx)
    out, float_ops = REALIZERS[config.mode](mod, ctx)
    state.float_ops = list(state.float_ops) + float_ops
    out = relax.transform.FoldConstant()(out)
    state.report = build_report(config, state, ctx.plans, adjustments)
    return set_state(out, state)


def Realize(config: Optional[QConfig] = None, tap: bool = False):  # pylint: disable=invalid-name
    """realize as a tvm.transform pass."""

    @tvm.transform.module_pass(opt_level=0, name="Realize")
    def _pass(mod, _ctx):
        return realize(mod, config, tap)

    return _pass


__all__ = ["REALIZERS", "REALIZE_RULES", "Realize", "RealizeContext", "plan_layers", "realize",
           "register_realize"]
