"""MXNet op converters: one function per MXNet op, registered by op name in ``CONVERTERS``.

A converter gets the block builder, the node (``MXNetNode``: name, op, attributes parsed from
MXNet's string form) and its inputs as Relax expressions, and returns the Relax expression(s)
of its outputs. An op option a converter does not handle raises
:class:`UnsupportedMXNetOpError` naming the op and the node. They cover the Gluon model zoo's
ResNet v1/v2 and MobileNet v1/v2 and the usual arithmetic around them.

BatchNorm is emitted at inference (moving statistics; ``use_global_stats`` and the training
flag do not matter) as ``x * scale + shift`` with ``scale = gamma / sqrt(var + eps)`` and
``shift = beta - mean * scale`` computed from the parameters in the graph: once the params are
bound, FoldConstant turns them into two per-channel constants, which CanonicalizeBias folds
into a preceding conv/dense; a BatchNorm that follows no conv (ResNet v2's pre-activation BN)
becomes a 1x1 depthwise layer there, so its shift is quantized as a bias.  ``fix_gamma=True`` (Gluon's ``scale=False``) means gamma = 1 whatever
the stored gamma is.
"""
from __future__ import annotations

import ast
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
from tvm import relax, tirx

from ..graph import registrar


class UnsupportedMXNetOpError(NotImplementedError):
    """The symbol uses an MXNet op (or an op option) that has no converter."""


class MXNetNode:
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


Converter = Callable[[relax.BlockBuilder, MXNetNode, List[relax.Expr]], Union[relax.Expr, Sequence[relax.Expr]]]
CONVERTERS: Dict[str, Converter] = {}


# register_converter("Convolution", ...)(fn): fn(bb, node, inputs) -> expr | [exprs]
register_converter = registrar(CONVERTERS, what="MXNet converter")


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


@register_converter("_contrib_AdaptiveAvgPooling2D")
def _adaptive_avg_pool(bb, node, inputs):
    # GluonCV's squeeze-excite blocks pool with this op; output_size is one int or (h, w)
    size = _pair(node.get("output_size", 1))
    return relax.op.nn.adaptive_avg_pool2d(inputs[0], size)


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
