"""CanonicalizeBias: per-channel affine ops after a layer folded into its weights and one bias.

After this pass a conv/matmul layer reads ``name = layer(x, W)`` and, when it has a bias,
``name/bias = add(name, b)`` with b a per-output-channel constant: a bias, a BatchNorm after a
conv (decomposed into multiply/add), or any run of per-channel add/subtract/multiply/divide by
constants is one weight scaling plus one add, whatever the importer emitted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tvm
from tvm import relax

from ...graph import (BindingRewriter, bindings, const_value, is_const, make_const, op_name,
                      shape_of, substitute, var_uses)
from ...layer_ops import layer_op


def _channel_vector(const, out_shape, channel_axis) -> Optional[np.ndarray]:
    """The per-output-channel vector of a broadcast constant, or None if it is not one."""
    value = const_value(const)
    channels = out_shape[channel_axis]
    if value.size == 1:
        return np.full(channels, value.reshape(()), np.float64)
    if value.ndim > len(out_shape):
        return None
    padded = (1,) * (len(out_shape) - value.ndim) + value.shape
    axis = channel_axis % len(out_shape)
    if all(d == 1 for i, d in enumerate(padded) if i != axis) and padded[axis] == channels:
        return value.reshape(-1).astype(np.float64)
    return None


@dataclass(frozen=True)
class AffineFold:
    """How a per-channel constant op folds into a layer's y = layer(x, W*s) + b."""

    fold: Callable[[np.ndarray, np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]
    commutative: bool  # the constant may stand first
    scaling: bool      # scales the tensor: may start a layer of its own (a standalone BN)
    divides: bool = False  # a zero in the constant cannot fold (it would be a division by 0)


# (scale, bias, vector) -> (scale, bias)
AFFINE_FOLDS: Dict[str, AffineFold] = {
    "relax.add": AffineFold(lambda s, b, v: (s, b + v), commutative=True, scaling=False),
    "relax.subtract": AffineFold(lambda s, b, v: (s, b - v), commutative=False, scaling=False),
    "relax.multiply": AffineFold(lambda s, b, v: (s * v, b * v), commutative=True, scaling=True),
    "relax.divide": AffineFold(lambda s, b, v: (s / v, b / v), commutative=False, scaling=True,
                               divides=True),
}


def _standalone_affine(x, const) -> Optional["_Chain"]:
    """A per-channel scaling of an NCHW tensor that no conv/matmul produced (a pre-activation
    BatchNorm: ResNet v2 applies BN to the residual sum, then ReLU, then the conv) as the start
    of a 1x1 depthwise conv layer. Its shift then becomes that layer's BIAS point, quantized
    at s_in*s_w like any bias, instead of a float op (relay quantized it as an 8-bit weight,
    the very error the bias study measured)."""
    if not isinstance(x, relax.Var) or len(shape_of(x)) != 4 or str(x.ty.dtype) != "float32":
        return None
    channels = shape_of(x)[1]
    if _channel_vector(const, shape_of(x), 1) is None or (const_value(const).size == 1 < channels):
        return None  # a scalar factor is not a per-channel affine (one channel aside)
    identity = make_const(np.ones((channels, 1, 1, 1)), "float32")
    return _Chain(None, relax.op.nn.conv2d(x, identity, groups=channels), channels)


def _sole_reader_ops(func: relax.Function, uses) -> Dict[relax.Var, str]:
    """var -> the op of the one binding that reads it (for variables read exactly once)."""
    readers: Dict[relax.Var, str] = {}
    for binding in bindings(func):
        value = binding.value
        for arg in getattr(value, "args", []):
            if isinstance(arg, relax.Var) and uses.get(arg, 0) == 1:
                readers[arg] = op_name(value)
    return readers


class _Chain:
    """A conv/matmul output with per-channel affine ops folded in: y = layer(x, W*s) + b."""

    def __init__(self, layer_var, layer_call, channels):
        self.layer_var = layer_var
        self.layer_call = layer_call
        self.scale = np.ones(channels)
        self.bias: Optional[np.ndarray] = None
        self.folded = 0

    def apply(self, op, vec):
        bias = np.zeros_like(self.scale) if self.bias is None else self.bias
        self.scale, self.bias = AFFINE_FOLDS[op].fold(self.scale, bias, vec)
        self.folded += 1


class _BiasCanonicalizer(BindingRewriter):
    """Fold per-channel affine ops after a conv/matmul into its weights and one bias add.

    Two phases so that each layer is emitted once, under its own name: ``analyse`` finds the
    chains conv -> (+c | -c | *c | /c)* whose intermediates are read once, ``visit`` drops the
    absorbed bindings and emits ``layer(x, W*s)`` then ``add(layer, b)`` at the chain's end.
    """

    def __init__(self):
        super().__init__()
        self.chains: Dict[relax.Var, _Chain] = {}   # chain end (original var) -> chain
        self.absorbed: set = set()

    def analyse(self, func):
        uses = var_uses(func)
        reader_op = _sole_reader_ops(func, uses)
        inputs = set(func.params)
        open_chain: Dict[relax.Var, _Chain] = {}
        for binding in bindings(func):
            var, value = binding.var, binding.value
            op = op_name(value)
            layer = layer_op(value)
            if layer is not None and is_const(value.args[1]) and layer.weight_axis(value) is not None:
                open_chain[var] = _Chain(var, value, shape_of(var)[layer.channel_axis(value)])
                continue
            affine = AFFINE_FOLDS.get(op)
            if affine is None or len(value.args) != 2:
                continue
            lhs, rhs = value.args
            if affine.commutative and is_const(lhs) and not is_const(rhs):
                lhs, rhs = rhs, lhs
            chain = open_chain.get(lhs) if isinstance(lhs, relax.Var) else None
            if chain is None or not is_const(rhs) or uses.get(lhs, 0) != 1:
                # not foldable into a layer (none, or its output is also read elsewhere): a
                # scaling starts a layer of its own, and so does a shift that a scaling reads
                # (a decomposed BatchNorm, (x - mean) * s + beta, on an activation: left as a
                # float subtract, it would put a dequantize / requantize pair before the layer;
                # the model's input normalization stays with the input point)
                reader = AFFINE_FOLDS.get(reader_op.get(var, ""))
                starts = affine.scaling or (reader is not None and reader.scaling
                                            and lhs not in inputs)
                chain = _standalone_affine(lhs, rhs) if starts and is_const(rhs) else None
                if chain is not None:  # a layer of its own: weights s, bias b
                    chain.layer_var = var
                    chain.apply(op, _channel_vector(rhs, shape_of(lhs), 1))
                    open_chain[var] = chain
                continue
            if shape_of(var) != shape_of(lhs):
                continue
            vec = _channel_vector(rhs, shape_of(lhs), layer_op(chain.layer_call).channel_axis(chain.layer_call))
            if vec is None or (affine.divides and np.any(vec == 0)):
                continue
            chain.apply(op, vec)
            self.absorbed.add(lhs)
            del open_chain[lhs]
            open_chain[var] = chain
        self.chains = {end: c for end, c in open_chain.items() if c.folded}
        for end, chain in self.chains.items():
            if end is not chain.layer_var:
                self.absorbed.add(chain.layer_var)

    def rewrite_function(self, func):
        self.analyse(func)
        return super().rewrite_function(func)

    def visit(self, var, value):
        if var in self.absorbed:
            return None
        chain = self.chains.get(var)
        if chain is None:
            return value
        layer = substitute(chain.layer_call, self.remap)
        table = layer_op(layer)
        weight = const_value(layer.args[1]).astype(np.float64)
        shape = [1] * weight.ndim
        shape[table.weight_axis(layer)] = -1
        weight = weight * chain.scale.reshape(shape)
        args = [layer.args[0], make_const(weight, layer.args[1].ty.dtype)] + list(layer.args[2:])
        new_layer = self.emit(relax.Call(layer.op, args, layer.attrs, list(layer.ty_args)),
                              chain.layer_var.name)
        bshape = table.bias_shape(layer, len(shape_of(var)))
        return self.emit(relax.op.add(new_layer, make_const(chain.bias.reshape(bshape))),
                         f"{chain.layer_var.name}/bias")


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeBias")
def CanonicalizeBias(mod: tvm.IRModule, _ctx=None) -> tvm.IRModule:  # pylint: disable=invalid-name
    """conv/matmul followed by per-channel add/subtract/multiply constants (a bias, a
    decomposed BatchNorm) becomes conv/matmul with scaled weights plus one bias add."""
    return _BiasCanonicalizer()(mod)
