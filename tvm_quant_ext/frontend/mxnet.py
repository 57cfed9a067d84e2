"""MXNet symbol / Gluon HybridBlock -> Relax, straight from the symbol's JSON graph.

    mod, params = from_mxnet(net, shape={"data": (1, 3, 224, 224)})   # a Gluon HybridBlock
    mod, params = from_mxnet(sym, shape, arg_params=args, aux_params=auxs)   # a Symbol (+ .params)

Relay's signature (``relay.frontend.from_mxnet``).  ``main`` takes the inputs named in ``shape``
and then every weight as a parameter named like the MXNet parameter
("resnetv20_conv0_weight"), so ``relax.transform.BindParams("main", params)`` binds them and
the quantization passes name layers after them.  ``params`` holds exactly the weights ``main``
takes, as numpy arrays.

One converter per MXNet op, registered by op name in ``CONVERTERS``; an op without a converter
raises :class:`UnsupportedMXNetOpError` naming the op and the node.  The converters cover the
Gluon model zoo's ResNet v1/v2 and MobileNet v1/v2 and the usual arithmetic around them.

BatchNorm is emitted at inference (moving statistics; ``use_global_stats`` and the training
flag do not matter) as ``x * scale + shift`` with ``scale = gamma / sqrt(var + eps)`` and
``shift = beta - mean * scale`` computed from the parameters in the graph: once the params are
bound, FoldConstant turns them into two per-channel constants, which CanonicalizeBias folds
into a preceding conv/dense; a BatchNorm that follows no conv (ResNet v2's pre-activation BN)
stays a float multiply-add.  ``fix_gamma=True`` (Gluon's ``scale=False``) means gamma = 1 whatever
the stored gamma is.
"""
from __future__ import annotations

import ast
import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tvm
from tvm import relax, tirx

from ..graph import registrar


class UnsupportedMXNetOpError(NotImplementedError):
    """The symbol uses an MXNet op (or an op option) that has no converter."""


class _Node:
    """One MXNet graph node as the converters see it."""

    def __init__(self, name: str, op: str, attrs: Dict[str, str]):
        self.name = name
        self.op = op
        self.attrs = attrs

    def get(self, key: str, default=None):
        """Attribute ``key`` parsed from MXNet's string form ("(3, 3)", "True", "1e-05", "relu")."""
        if key not in self.attrs:
            return default
        text = self.attrs[key]
        if text in ("None", ""):
            return default
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return {"true": True, "false": False}.get(text.lower(), text)

    def unsupported(self, what: str) -> UnsupportedMXNetOpError:
        return UnsupportedMXNetOpError(f"MXNet op {self.op!r} (node {self.name!r}): {what} is not supported")


Converter = Callable[[relax.BlockBuilder, _Node, List[relax.Expr]], Union[relax.Expr, Sequence[relax.Expr]]]
CONVERTERS: Dict[str, Converter] = {}


# register_converter("Convolution", ...)(fn): fn(bb, node, inputs) -> expr | [exprs]
register_converter = registrar(CONVERTERS)


def _pair(value, n: int = 2) -> Tuple[int, ...]:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value * n if len(value) == 1 else value


def _shape(expr) -> Tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def _scalar(value: float, like) -> relax.Expr:
    return relax.const(np.asarray(value, dtype=str(like.ty.dtype)))


# --------------------------------------------------------------------------- #
# converters
# --------------------------------------------------------------------------- #
@register_converter("Convolution")
def _convolution(bb, node, inputs):
    kernel = _pair(node.get("kernel"))
    if len(kernel) != 2:
        raise node.unsupported(f"a {len(kernel)}-D kernel")
    if node.get("layout", "NCHW") != "NCHW":
        raise node.unsupported(f"layout {node.get('layout')}")
    out = bb.emit(relax.op.nn.conv2d(
        inputs[0], inputs[1], strides=_pair(node.get("stride", (1, 1))),
        padding=_pair(node.get("pad", (0, 0))), dilation=_pair(node.get("dilate", (1, 1))),
        groups=int(node.get("num_group", 1))))
    if node.get("no_bias", False):
        return out
    return relax.op.add(out, bb.emit(relax.op.reshape(inputs[2], (1, -1, 1, 1))))


@register_converter("BatchNorm")
def _batch_norm(bb, node, inputs):
    data, gamma, beta, mean, var = inputs
    axis = int(node.get("axis", 1)) % len(_shape(data))
    eps = float(node.get("eps", 1e-3))  # MXNet's default eps is 1e-3 (Gluon writes 1e-5)
    inv_std = bb.emit(relax.op.rsqrt(bb.emit(relax.op.add(var, _scalar(eps, var)))))
    scale = inv_std if node.get("fix_gamma", True) else bb.emit(relax.op.multiply(gamma, inv_std))
    shift = bb.emit(relax.op.subtract(beta, bb.emit(relax.op.multiply(mean, scale))))
    bshape = [-1 if i == axis else 1 for i in range(len(_shape(data)))]
    scale = bb.emit(relax.op.reshape(scale, bshape))
    shift = bb.emit(relax.op.reshape(shift, bshape))
    out = relax.op.add(bb.emit(relax.op.multiply(data, scale)), shift)
    # outputs 1 and 2 (mean, var) exist only for output_mean_var; at inference they are the stats
    return [out, mean, var]


_ACTIVATIONS = {
    "relu": relax.op.nn.relu,
    "sigmoid": relax.op.sigmoid,
    "tanh": relax.op.tanh,
    "softrelu": relax.op.nn.softplus,
}


@register_converter("Activation")
def _activation(bb, node, inputs):
    act = node.get("act_type")
    if act not in _ACTIVATIONS:
        raise node.unsupported(f"act_type={act!r} (known: {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[act](inputs[0])


@register_converter("relu")
def _relu(bb, node, inputs):
    return relax.op.nn.relu(inputs[0])


@register_converter("sigmoid")
def _sigmoid(bb, node, inputs):
    return relax.op.sigmoid(inputs[0])


@register_converter("tanh")
def _tanh(bb, node, inputs):
    return relax.op.tanh(inputs[0])


@register_converter("LeakyReLU")
def _leaky_relu(bb, node, inputs):
    act = node.get("act_type", "leaky")
    if act != "leaky":
        raise node.unsupported(f"act_type={act!r}")
    return relax.op.nn.leakyrelu(inputs[0], float(node.get("slope", 0.25)))


@register_converter("Pooling")
def _pooling(bb, node, inputs):
    data = inputs[0]
    pool_type = node.get("pool_type", "max")
    if node.get("layout", "NCHW") not in ("NCHW", None):
        raise node.unsupported(f"layout {node.get('layout')}")
    if pool_type not in ("max", "avg"):
        raise node.unsupported(f"pool_type={pool_type!r}")
    if node.get("global_pool", False):
        if pool_type == "avg":
            return relax.op.nn.adaptive_avg_pool2d(data, (1, 1))
        return relax.op.max(data, axis=[2, 3], keepdims=True)
    kernel = _pair(node.get("kernel"))
    if len(kernel) != 2:
        raise node.unsupported(f"a {len(kernel)}-D window")
    convention = node.get("pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise node.unsupported(f"pooling_convention={convention!r}")
    common = dict(pool_size=kernel, strides=_pair(node.get("stride", (1, 1))),
                  padding=_pair(node.get("pad", (0, 0))), ceil_mode=convention == "full")
    if pool_type == "max":
        return relax.op.nn.max_pool2d(data, **common)
    # MXNet counts the zero padding in the average unless told not to
    return relax.op.nn.avg_pool2d(data, count_include_pad=bool(node.get("count_include_pad", True)), **common)


def _flatten(data):
    shape = _shape(data)
    return relax.op.reshape(data, (shape[0], int(np.prod(shape[1:]))))


@register_converter("Flatten", "flatten")
def _flatten_op(bb, node, inputs):
    return _flatten(inputs[0])


@register_converter("FullyConnected")
def _fully_connected(bb, node, inputs):
    data = inputs[0]
    if node.get("flatten", True) and len(_shape(data)) > 2:
        data = bb.emit(_flatten(data))
    out = relax.op.matmul(data, bb.emit(relax.op.permute_dims(inputs[1])))
    if node.get("no_bias", False):
        return out
    return relax.op.add(bb.emit(out), inputs[2])


def _binary(op):
    def convert(bb, node, inputs):
        return op(inputs[0], inputs[1])

    return convert


for _names, _op in (
    (("elemwise_add", "_Plus", "_plus", "_add", "broadcast_add", "broadcast_plus"), relax.op.add),
    (("elemwise_sub", "_Minus", "_minus", "_sub", "broadcast_sub", "broadcast_minus"), relax.op.subtract),
    (("elemwise_mul", "_Mul", "_mul", "broadcast_mul"), relax.op.multiply),
    (("elemwise_div", "_Div", "_div", "broadcast_div"), relax.op.divide),
    (("_maximum", "broadcast_maximum"), relax.op.maximum),
    (("_minimum", "broadcast_minimum"), relax.op.minimum),
):
    register_converter(*_names)(_binary(_op))


def _with_scalar(op, reverse: bool = False):
    def convert(bb, node, inputs):
        scalar = _scalar(float(node.get("scalar")), inputs[0])
        return op(scalar, inputs[0]) if reverse else op(inputs[0], scalar)

    return convert


for _name, _op, _reverse in (
    ("_plus_scalar", relax.op.add, False), ("_PlusScalar", relax.op.add, False),
    ("_minus_scalar", relax.op.subtract, False), ("_MinusScalar", relax.op.subtract, False),
    ("_rminus_scalar", relax.op.subtract, True), ("_RMinusScalar", relax.op.subtract, True),
    ("_mul_scalar", relax.op.multiply, False), ("_MulScalar", relax.op.multiply, False),
    ("_div_scalar", relax.op.divide, False), ("_DivScalar", relax.op.divide, False),
    ("_rdiv_scalar", relax.op.divide, True), ("_RDivScalar", relax.op.divide, True),
):
    register_converter(_name)(_with_scalar(_op, _reverse))


@register_converter("Concat", "concat")
def _concat(bb, node, inputs):
    return relax.op.concat(list(inputs), axis=int(node.get("dim", 1)))


@register_converter("clip")
def _clip(bb, node, inputs):
    dtype = str(inputs[0].ty.dtype)
    lo, hi = float(node.get("a_min")), float(node.get("a_max"))
    # typed bounds, as the annotate rule for relax.clip (ReLU6) expects
    return relax.op.clip(inputs[0], relax.prim_value(tirx.FloatImm(dtype, lo)),
                         relax.prim_value(tirx.FloatImm(dtype, hi)))


@register_converter("Dropout")
def _dropout(bb, node, inputs):
    return inputs[0]  # identity at inference


@register_converter("softmax", "SoftmaxActivation")
def _softmax(bb, node, inputs):
    if node.op == "SoftmaxActivation":
        axis = 1 if node.get("mode", "instance") == "channel" else -1
        data = inputs[0] if axis == 1 else _flatten(inputs[0])
        return relax.op.nn.softmax(bb.emit(data) if axis == -1 else data, axis=axis)
    return relax.op.nn.softmax(inputs[0], axis=int(node.get("axis", -1)))


@register_converter("SoftmaxOutput")
def _softmax_output(bb, node, inputs):
    # inference: the label input is ignored; without multi_output the input is flattened to 2-D
    data = inputs[0]
    if node.get("multi_output", False):
        return relax.op.nn.softmax(data, axis=1)
    if len(_shape(data)) > 2:
        data = bb.emit(_flatten(data))
    return relax.op.nn.softmax(data, axis=-1)


@register_converter("Reshape", "reshape")
def _reshape(bb, node, inputs):
    data = inputs[0]
    in_shape = _shape(data)
    if node.get("reverse", False):
        raise node.unsupported("reverse=True")
    new_shape = []
    for i, dim in enumerate(_pair(node.get("shape"), 1)):
        if dim == 0:  # MXNet: copy this dimension from the input
            new_shape.append(in_shape[i])
        elif dim >= -1:
            new_shape.append(dim)
        else:
            raise node.unsupported(f"the special shape code {dim} in shape={node.attrs.get('shape')}")
    return relax.op.reshape(data, new_shape)


# --------------------------------------------------------------------------- #
# the graph walk
# --------------------------------------------------------------------------- #
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
                result = converter(bb, _Node(name, op, attrs), args)
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
