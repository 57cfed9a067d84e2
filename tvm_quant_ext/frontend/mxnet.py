"""MXNet symbol / Gluon HybridBlock -> Relax, straight from the symbol's JSON graph.

    mod, params = from_mxnet(net, shape={"data": (1, 3, 224, 224)})   # a Gluon HybridBlock
    mod, params = from_mxnet(sym, shape, arg_params=args, aux_params=auxs)   # a Symbol (+ .params)

Relay's signature (``relay.frontend.from_mxnet``).  ``main`` takes the inputs named in ``shape``
and then every weight as a parameter named like the MXNet parameter
("resnetv20_conv0_weight"), so ``relax.transform.BindParams("main", params)`` binds them and
the quantization passes name layers after them.  ``params`` holds exactly the weights ``main``
takes, as numpy arrays.

Each node is converted by its op's converter (``mxnet_ops.CONVERTERS``); an op without one
raises :class:`UnsupportedMXNetOpError` naming the op and the node.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

import numpy as np
import tvm
from tvm import relax

from .mxnet_ops import CONVERTERS, MXNetNode, UnsupportedMXNetOpError, register_converter


def _gluon_to_symbol(block, shape: Dict[str, Tuple[int, ...]], dtype: str):
    """A HybridBlock's symbol and parameters (a dummy forward finishes deferred initialization)."""
    import mxnet as mx

    dummies = [mx.nd.zeros(s, dtype=dtype) for s in shape.values()]
    block.hybridize()
    block(*dummies)
    inputs = [mx.sym.var(name) for name in shape]
    sym = block(*inputs)
    if isinstance(sym, (list, tuple)):
        sym = mx.sym.Group(list(sym))
    params = {p.name: p.data().asnumpy() for p in block.collect_params().values()}
    return sym, params


def _to_numpy(value) -> np.ndarray:
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)


def from_mxnet(symbol, shape: Optional[Dict[str, Tuple[int, ...]]] = None, dtype="float32",
               arg_params=None, aux_params=None) -> Tuple[tvm.IRModule, Dict[str, np.ndarray]]:
    """Convert an MXNet model to a Relax module whose ``main`` takes the inputs, then the weights.

    symbol: ``mx.sym.Symbol``, its JSON string, or a Gluon ``HybridBlock`` (its parameters are
        then taken from the block; arg_params/aux_params must be None).
    shape: input name -> shape (static).  dtype: input dtype, a string or a dict per input.
    arg_params / aux_params: name -> NDArray or numpy array (the two halves of a ``.params``
        file saved by ``mx.model.save_checkpoint``).
    Returns (mod, params) with ``params`` = exactly the weights ``main`` takes.
    """
    shape = dict(shape or {"data": (1, 3, 224, 224)})
    import mxnet as mx  # only the converter needs mxnet

    if isinstance(symbol, mx.gluon.HybridBlock):
        if arg_params or aux_params:
            raise ValueError("from_mxnet: a Gluon block carries its own parameters; "
                             "do not pass arg_params/aux_params with it")
        symbol, weights = _gluon_to_symbol(symbol, shape, dtype if isinstance(dtype, str) else "float32")
    elif isinstance(symbol, mx.gluon.Block):
        raise TypeError("from_mxnet: a Gluon Block must be a HybridBlock to be exported as a symbol")
    else:
        weights = {}
        for source in (arg_params or {}, aux_params or {}):
            weights.update({k: _to_numpy(v) for k, v in source.items()})
    graph = json.loads(symbol if isinstance(symbol, str) else symbol.tojson())
    return _convert_graph(graph, shape, dtype, weights)


def _convert_graph(graph, shape, dtype, weights):
    nodes = graph["nodes"]
    input_dtype = (lambda n: dtype[n]) if isinstance(dtype, dict) else (lambda n: dtype)
    missing_inputs = [n for n in shape if not any(x["op"] == "null" and x["name"] == n for x in nodes)]
    if missing_inputs:
        raise ValueError(f"from_mxnet: shape names input(s) {missing_inputs} that the symbol does not have")

    # function parameters: inputs first (in the order of ``shape``), then weights in graph order
    input_vars = {n: relax.Var(n, relax.TensorType(tuple(s), input_dtype(n))) for n, s in shape.items()}
    weight_vars: Dict[str, relax.Var] = {}
    for node in nodes:
        name = node["name"]
        if node["op"] != "null" or name in input_vars:
            continue
        if name not in weights:
            if name.endswith("_label"):  # SoftmaxOutput's label: unused at inference
                continue
            raise ValueError(f"from_mxnet: no value for variable {name!r}: pass it in arg_params/"
                             f"aux_params, or its shape in `shape` if it is an input")
        value = weights[name]
        weight_vars[name] = relax.Var(name, relax.TensorType(value.shape, str(value.dtype)))

    bb = relax.BlockBuilder()
    with bb.function("main", list(input_vars.values()) + list(weight_vars.values())):
        with bb.dataflow():
            outputs: List[Optional[List[relax.Expr]]] = []
            for node in nodes:
                op, name = node["op"], node["name"]
                if op == "null":
                    var = input_vars.get(name, weight_vars.get(name))
                    outputs.append(None if var is None else [var])
                    continue
                converter = CONVERTERS.get(op)
                if converter is None:
                    raise UnsupportedMXNetOpError(
                        f"MXNet op {op!r} (node {name!r}) has no converter; add one with "
                        "tvm_quant_ext.frontend.mxnet.register_converter")
                args = []
                for src, index, *_ in node["inputs"]:
                    produced = outputs[src]
                    args.append(None if produced is None else produced[index])
                attrs = {k: str(v) for k, v in (node.get("attrs") or node.get("param") or {}).items()}
                result = converter(bb, MXNetNode(name, op, attrs), args)
                result = list(result) if isinstance(result, (list, tuple)) else [result]
                outputs.append([r if isinstance(r, relax.Var) else bb.emit(r) for r in result])
            heads = [outputs[src][index] for src, index, *_ in graph["heads"]]
            out = bb.emit_output(heads[0] if len(heads) == 1 else relax.Tuple(heads))
        bb.emit_func_output(out)
    mod = bb.get()
    # weights no op reads (a fix_gamma BatchNorm's gamma) are dropped from main
    main = mod["main"]
    used = {v.name for v in relax.analysis.free_vars(main.body)}
    kept = [p for p in main.params if p.name in used or p.name in input_vars]
    if len(kept) != len(main.params):
        mod["main"] = relax.Function(kept, main.body, main.ret_ty, main.is_pure, main.attrs)
    params = {k: np.ascontiguousarray(weights[k]) for k in weight_vars if k in used}
    return mod, params


__all__ = ["CONVERTERS", "UnsupportedMXNetOpError", "from_mxnet", "register_converter"]
