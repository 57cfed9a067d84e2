"""relay's layer-selecting keys as layer names: ``skip_conv_layers`` (conv2d indices) and
``skip_dense_layer`` (every dense layer), resolved on the model the names belong to.

relay counted conv2d calls while annotating, operands before their users, left to right; here
the order is the binding order of ``main``, the importer's topological order, which is the same
walk (in a Gluon ResNet v1 block the shortcut conv comes before the body convs in both, since
the residual add reads the shortcut first). The names are the ones the quantizer gives the
layers (``NameLayers``: after the weight parameter), so they are valid ``skip_layers``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import tvm

from ..graph import bindings, op_name, shape_of
from ..passes.prepare import NameLayers

# relay op kind -> does this Relax binding value compute one? (dense = matmul by a 2-D weight;
# relay's nn.batch_matmul, a 3-D matmul here, was never a dense layer)
RELAY_LAYER_KINDS = {
    "conv2d": lambda value: op_name(value) == "relax.nn.conv2d",
    "dense": lambda value: op_name(value) == "relax.matmul" and len(shape_of(value.args[1])) == 2,
}


def relay_layers(mod: tvm.IRModule) -> Dict[str, List[str]]:
    """Layer names per relay op kind ("conv2d", "dense"), in graph order."""
    found: Dict[str, List[str]] = {kind: [] for kind in RELAY_LAYER_KINDS}
    for binding in bindings(NameLayers(mod)["main"]):
        for kind, matches in RELAY_LAYER_KINDS.items():
            if matches(binding.value):
                found[kind].append(binding.var.name)
    return found


def skipped_layers(mod: tvm.IRModule, skip_conv_layers, skip_dense_layer: bool) -> Tuple[str, ...]:
    """The layer names relay's two skip keys select on ``mod``; an index past the last conv2d is
    an error here (relay ignored it silently, which hid typos)."""
    layers = relay_layers(mod)
    convs = layers["conv2d"]
    names = []
    for index in skip_conv_layers or ():
        if index >= len(convs):
            raise ValueError(f"relay_quantize: skip_conv_layers={list(skip_conv_layers)} names conv2d "
                             f"index {index}, but the model has {len(convs)} conv2d layer(s): "
                             f"{convs[:6]}{'...' if len(convs) > 6 else ''}")
        names.append(convs[index])
    if skip_dense_layer:
        names += layers["dense"]
    return tuple(dict.fromkeys(names))
