"""The layer ops: conv/matmul-like ops that multiply a tensor by a constant weight.

One entry per op says where its output channels are: on the weight (the axis per-channel
weight scales run along), on the output (the axis a bias and per-channel scales broadcast
along), and so which weight axes a layer reduces. prepare (naming, BatchNorm/bias folding),
annotate (WEIGHT/BIAS points), the integer realize (accumulator scales, zero-point
corrections) and the CPU kernels (``backend.cpu.fuse``) all read this one table, so an op is
a layer for all of them or for none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from tvm import relax

from .graph import registrar, shape_of


@dataclass(frozen=True)
class LayerOp:
    """How one layer op holds its channels; every function takes the op's call."""

    name: str
    # output-channel axis of the weight, None when the attributes name none (then the layer
    # stays float: there is no axis to scale per channel)
    weight_axis: Callable[[relax.Call], Optional[int]]
    # output-channel axis of the layer output (negative counts from the end)
    channel_axis: Callable[[relax.Call], int]
    weight_ndim: Optional[int] = None  # the only weight rank the op's quantization takes
    vector_bias: bool = False  # the bias is a plain (C,) vector (the channel axis is the last)

    def reduce_axes(self, call: relax.Call) -> Tuple[int, ...]:
        """The weight axes summed into one output channel: all but the output-channel axis."""
        axis = self.weight_axis(call)
        return tuple(i for i in range(len(shape_of(call.args[1]))) if i != axis)

    def bias_shape(self, call: relax.Call, out_ndim: int) -> List[int]:
        """The shape a per-output-channel vector takes to broadcast against the output."""
        if self.vector_bias:
            return [-1]
        axis = self.channel_axis(call) % out_ndim
        return [-1 if i == axis else 1 for i in range(out_ndim)]


LAYER_OPS: Dict[str, LayerOp] = {}
_register = registrar(LAYER_OPS, what="layer op")


def register_layer_op(layer: LayerOp) -> LayerOp:
    _register(layer.name)(layer)
    return layer


def _conv_weight_axis(call) -> Optional[int]:
    layout = str(call.attrs.kernel_layout)
    return layout.index("O") if "O" in layout else None


def _conv_channel_axis(call) -> int:
    return str(call.attrs.out_layout or call.attrs.data_layout).index("C")


register_layer_op(LayerOp("relax.nn.conv2d", _conv_weight_axis, _conv_channel_axis))
# x @ W with W (in, out): the weight's last axis is the output channel, as is the output's
register_layer_op(LayerOp("relax.matmul", lambda call: len(shape_of(call.args[1])) - 1,
                          lambda call: -1, weight_ndim=2, vector_bias=True))


def layer_op(call) -> Optional[LayerOp]:
    """The table entry of a call to a layer op, else None."""
    op = getattr(call, "op", None)
    name = getattr(op, "name", None) if isinstance(call, relax.Call) else None
    return LAYER_OPS.get(name)
