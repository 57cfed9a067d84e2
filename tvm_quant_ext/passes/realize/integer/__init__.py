"""realize (integer): int8 codes between layers, int32 accumulators, fixed-point requantize.

Starts from the same calibrated module and layer plan as simulate (same points, weight codes
and scales, bias codes, overflow fixes) and computes the same function in integers:

* INPUT points quantize the float input once (the same float ops as simulate, then a cast);
* conv2d / matmul multiply int8 (uint8 with a zero point; int16 when ``nbit_input=16``) codes
  by int8 weight codes into an int32 accumulator (int64 for 16-bit activations, a 64-bit
  accumulator, or a layer whose bias could overflow int32) at scale ``s_x * s_w``; the BIAS is
  added in the accumulator type (``layers.py``);
* an ACTIVATION point requantizes with a fixed-point multiplier (``fixed_point``: Q31, round
  half up, per channel when the scale is) in int64 and clips to the code range (``markers.py``);
* ReLU / ReLU6 are applied exactly on codes, residual adds rescale both operands to a common
  scale (``elementwise.py``); max pool runs on codes, average pools and means sum codes
  (``pooling.py``); reshapes, transposes and concat move codes with their scales (``layout.py``);
* the outputs are dequantized once; ops with no integer rule get dequantized inputs, run in
  float, and are listed in the report's ``float_ops``.

A quantized value flows as a ``QValue`` (``qvalue.py``); the walk is ``realizer.py``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import tvm

from ..plan import RealizeContext
# the rule files register themselves in the realizer's tables when imported
from . import elementwise, layers, layout, markers, pooling  # noqa: F401  pylint: disable=unused-import
from .qvalue import NoIntegerRule, QValue
from .realizer import INTEGER_RULES, MARKER_RULES, IntegerRealizer, register_integer, register_marker


def realize_integer(mod: tvm.IRModule, ctx: RealizeContext) -> Tuple[tvm.IRModule, List[Dict[str, str]]]:
    """The calibrated module's ``main`` in integer arithmetic; returns (module, float ops)."""
    realizer = IntegerRealizer(ctx)
    return realizer(mod), realizer.float_ops


__all__ = ["INTEGER_RULES", "MARKER_RULES", "IntegerRealizer", "NoIntegerRule", "QValue",
           "realize_integer", "register_integer", "register_marker"]
