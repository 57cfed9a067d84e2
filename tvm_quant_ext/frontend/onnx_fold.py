"""Shape arithmetic folded away before TVM imports an ONNX model.

Exporters often leave a layer's padding as a computation on the input's shape (TorchScript's
"same" padding of EfficientNet-Lite: Shape -> Gather -> ... -> Pad); TVM's ONNX importer
refuses it ("Dynamic pads are not supported yet"). With the input shape fixed, ONNX Runtime's
basic graph optimizations (``ORT_ENABLE_BASIC``: constant folding, redundant nodes, Conv+Pad
and Conv+BatchNorm fusion) turn it into constants; the model computes the same function.
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, Optional, Sequence

import onnx

# op -> the inputs TVM's importer needs as constants
CONSTANT_INPUTS = {"Pad": (1, 2)}


def constant_names(graph: onnx.GraphProto) -> set:
    names = {t.name for t in graph.initializer}
    return names | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def needs_folding(model: onnx.ModelProto) -> bool:
    """Whether a node takes computed values where TVM's importer needs constants."""
    constants = constant_names(model.graph)
    for node in model.graph.node:
        for slot in CONSTANT_INPUTS.get(node.op_type, ()):
            if len(node.input) > slot and node.input[slot] and node.input[slot] not in constants:
                return True
    return False


def fix_input_shapes(model: onnx.ModelProto, shape: Optional[Dict[str, Sequence[int]]]) -> None:
    """Write ``shape`` into the graph inputs (in place), so shape arithmetic can fold."""
    for value in model.graph.input:
        if shape and value.name in shape:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shape[value.name]):
                dim.Clear()
                dim.dim_value = int(size)


def fold_with_onnxruntime(model: onnx.ModelProto,
                          shape: Optional[Dict[str, Sequence[int]]] = None) -> onnx.ModelProto:
    """``model`` (a copy, its inputs fixed to ``shape``) through ONNX Runtime's basic optimizer."""
    import onnxruntime as ort

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    fix_input_shapes(proto, shape)
    with tempfile.TemporaryDirectory() as td:
        raw, folded = os.path.join(td, "raw.onnx"), os.path.join(td, "folded.onnx")
        onnx.save(proto, raw)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = folded
        ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
        return onnx.load(folded)


__all__ = ["CONSTANT_INPUTS", "fix_input_shapes", "fold_with_onnxruntime", "needs_folding"]
