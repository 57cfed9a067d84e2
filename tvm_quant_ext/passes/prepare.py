"""prepare: stable layer names, bound params, BatchNorm folded, one canonical bias add.

After this pass a conv/matmul layer reads ``name = conv2d(x, W)`` (the binding named after
the layer, from its weight parameter's name) and, when it has one, ``name/add = add(name, b)``
with b a per-output-channel constant. Every later id derives from these names, so scales are
matched to tensors by name, never by position.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tvm
from tvm import relax

from ..graph import (BindingRewriter, GraphError, bindings, const_value, is_const, make_const,
                     op_name, shape_of, short_op, substitute, var_uses)

LAYER_OPS = ("relax.nn.conv2d", "relax.matmul", "relax.nn.conv1d")
# Ops a weight passes through between the parameter and the conv/matmul (transposes from
# importers); naming looks through them.
_WEIGHT_VIEW_OPS = ("relax.permute_dims", "relax.reshape", "relax.astype")


def _layer_name_from_param(name: str) -> str:
    for suffix in (".weight", "_weight", ":weight"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class _Namer(BindingRewriter):
    def __init__(self):
        super().__init__()
        self.definitions: Dict[relax.Var, relax.Expr] = {}
        self.root: Dict[relax.Var, str] = {}
        self.used: Dict[str, int] = {}
        self.layer_count: Dict[str, int] = {}

    def _unique(self, name: str) -> str:
        n = self.used.get(name, 0)
        self.used[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def _weight_param(self, expr) -> Optional[relax.Var]:
        while isinstance(expr, relax.Var) and expr in self.definitions:
            value = self.definitions[expr]
            if op_name(value) not in _WEIGHT_VIEW_OPS:
                return None
            expr = value.args[0]
        if isinstance(expr, relax.Var) and expr in self.func.params:
            return expr
        return None

    def _root_of(self, value) -> str:
        args = list(value.args) if isinstance(value, relax.Call) else [value]
        if isinstance(value, relax.Tuple):
            args = list(value.fields)
        if isinstance(value, relax.TupleGetItem):
            args = [value.tuple_value]
        for arg in args:
            if isinstance(arg, relax.Tuple) and len(arg.fields):
                arg = arg.fields[0]
            if isinstance(arg, relax.Var):
                if arg in self.root:
                    return self.root[arg]
                if arg in self.func.params:
                    return arg.name
        return "const"

    def rewrite_function(self, func):
        self.definitions = {b.var: b.value for b in bindings(func)}
        return super().rewrite_function(func)

    def visit(self, var, value):
        op = op_name(value)
        name = None
        if op in LAYER_OPS:
            param = self._weight_param(self._original_arg(var, 1))
            if param is not None:
                name = self._unique(_layer_name_from_param(param.name))
            else:  # weights already bound: no name to keep, number the layers of this op
                k = self.layer_count.get(op, 0)
                self.layer_count[op] = k + 1
                name = self._unique(f"{short_op(op)}_{k}")
        if name is None:
            label = short_op(op) if op else type(value).__name__.lower()
            name = self._unique(f"{self._root_of(value)}/{label}")
        new_var = self.emit(value, name)
        self.root[new_var] = name if op in LAYER_OPS else name.rsplit("/", 1)[0]
        return new_var

    def _original_arg(self, var, index):
        return self.definitions[var].args[index]


@tvm.transform.module_pass(opt_level=0, name="NameLayers")
def NameLayers(mod: tvm.IRModule, _ctx=None) -> tvm.IRModule:  # pylint: disable=invalid-name
    """Name every binding of main after its layer (weight parameter name) or its root layer.

    Run before BindParams: once weights are constants their names are gone.
    """
    return _Namer()(mod)


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


def _channel_axis(call) -> Optional[int]:
    op = op_name(call)
    if op == "relax.nn.conv2d":
        if call.attrs.kernel_layout != "OIHW":
            return None
        return str(call.attrs.out_layout or call.attrs.data_layout).index("C")
    if op == "relax.matmul":
        return -1
    return None


_AFFINE_OPS = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


_SCALING_OPS = ("relax.multiply", "relax.divide")


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
        if op == "relax.multiply":
            self.scale, bias = self.scale * vec, bias * vec
        elif op == "relax.divide":
            self.scale, bias = self.scale / vec, bias / vec
        elif op == "relax.subtract":
            bias = bias - vec
        else:
            bias = bias + vec
        self.bias = bias
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
        open_chain: Dict[relax.Var, _Chain] = {}
        for binding in bindings(func):
            var, value = binding.var, binding.value
            op = op_name(value)
            axis = _channel_axis(value)
            if axis is not None and is_const(value.args[1]):
                open_chain[var] = _Chain(var, value, shape_of(var)[axis])
                continue
            if op not in _AFFINE_OPS or len(value.args) != 2:
                continue
            lhs, rhs = value.args
            if op in ("relax.add", "relax.multiply") and is_const(lhs) and not is_const(rhs):
                lhs, rhs = rhs, lhs
            chain = open_chain.get(lhs) if isinstance(lhs, relax.Var) else None
            if chain is None or not is_const(rhs) or uses.get(lhs, 0) != 1:
                # not foldable into a layer (none, or its output is also read elsewhere)
                chain = _standalone_affine(lhs, rhs) if op in _SCALING_OPS and is_const(rhs) else None
                if chain is not None:  # a layer of its own: weights s, bias b
                    chain.layer_var = var
                    chain.apply(op, _channel_vector(rhs, shape_of(lhs), 1))
                    open_chain[var] = chain
                continue
            if shape_of(var) != shape_of(lhs):
                continue
            vec = _channel_vector(rhs, shape_of(lhs), _channel_axis(chain.layer_call))
            if vec is None or (op == "relax.divide" and np.any(vec == 0)):
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
        weight = const_value(layer.args[1]).astype(np.float64)
        w_axis = 0 if op_name(layer) == "relax.nn.conv2d" else weight.ndim - 1
        shape = [1] * weight.ndim
        shape[w_axis] = -1
        weight = weight * chain.scale.reshape(shape)
        args = [layer.args[0], make_const(weight, layer.args[1].ty.dtype)] + list(layer.args[2:])
        new_layer = self.emit(relax.Call(layer.op, args, layer.attrs, list(layer.ty_args)),
                              chain.layer_var.name)
        out_shape = shape_of(var)
        axis = _channel_axis(layer) % len(out_shape)
        bshape = [-1] if op_name(layer) == "relax.matmul" else [
            -1 if i == axis else 1 for i in range(len(out_shape))]
        return self.emit(relax.op.add(new_layer, make_const(chain.bias.reshape(bshape))),
                         f"{chain.layer_var.name}/bias")


@tvm.transform.module_pass(opt_level=0, name="CanonicalizeBias")
def CanonicalizeBias(mod: tvm.IRModule, _ctx=None) -> tvm.IRModule:  # pylint: disable=invalid-name
    """conv/matmul followed by per-channel add/subtract/multiply constants (a bias, a
    decomposed BatchNorm) becomes conv/matmul with scaled weights plus one bias add."""
    return _BiasCanonicalizer()(mod)


def PrepareForQuantization(params: Optional[Dict[str, np.ndarray]] = None):  # pylint: disable=invalid-name
    """The whole prepare stage as one pass: names, params, BatchNorm folding, bias canonical form."""
    steps = [NameLayers]
    if params:
        steps.append(relax.transform.BindParams("main", {k: np.asarray(v) for k, v in params.items()}))
    steps += [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        CanonicalizeBias,
        relax.transform.FoldConstant(),
    ]
    return tvm.transform.Sequential(steps, name="PrepareForQuantization")


def prepare(mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]] = None) -> tvm.IRModule:
    main = mod["main"]
    if params:
        names = {p.name for p in main.params}
        missing = sorted(set(params) - names)
        if missing:
            raise GraphError(f"params {missing[:5]} are not parameters of main "
                             f"(main takes {sorted(names)[:8]}...)")
    return PrepareForQuantization(params)(mod)
