"""An interpreter of annotated modules in torch: the float model and its quantization side by
side, on every calibration batch, one binding at a time.

Bias correction needs each layer's error with the layers before it already corrected. With
the compiled model that is one pass over the data per layer (49 passes on EfficientNet-Lite0).
Evaluating binding by binding over all batches instead, every earlier layer's correction is
known when a layer runs, so the whole correction is one pass of compute; the price is memory:
the values still to be read (one graph frontier) are held for every calibration batch.

One rule per op in ``INTERPRET_RULES`` (keyed by op name, like the other rule tables); a rule
takes the call and its evaluated arguments (tensors; tuples as lists; anything else -- shapes,
prim values -- as the Relax expression) and returns a tensor. Computation is float32: these
values feed statistics (means of errors), never codes that are emitted.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from .. import qmath
from ..config import QConfig, QKind
from ..graph import GraphError, bindings, const_value, is_const, op_name, registrar, shape_of
from ..points import QPoint, QuantState, get_state, parse_marker
from .calibration import iter_batches
from .realize.plan import RealizeContext, collect_constants

InterpretRule = Callable[[relax.Call, list, relax.Var], torch.Tensor]
INTERPRET_RULES: Dict[str, InterpretRule] = {}
register_interpret = registrar(INTERPRET_RULES, what="interpreter rule")
DTYPE = torch.float32


def _ints(values) -> List[int]:
    return [int(v) for v in values]


def _scalar(prim) -> float:
    return float(prim.value)


@register_interpret("relax.nn.conv2d")
def _conv2d(call, args, var):
    attrs = call.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout or attrs.data_layout))
    if layouts != ("NCHW", "OIHW", "NCHW"):
        raise GraphError(f"{var.name}: the interpreter runs NCHW/OIHW convs, not {layouts}")
    top, left, bottom, right = _ints(attrs.padding)
    x = F.pad(args[0], (left, right, top, bottom))
    return F.conv2d(x, args[1], stride=_ints(attrs.strides), dilation=_ints(attrs.dilation),
                    groups=int(attrs.groups))


for _name, _fn in {"relax.add": torch.add, "relax.subtract": torch.sub,
                   "relax.multiply": torch.mul, "relax.divide": torch.div,
                   "relax.minimum": torch.minimum, "relax.maximum": torch.maximum}.items():
    register_interpret(_name)(lambda call, args, var, fn=_fn: fn(args[0], args[1]))


@register_interpret("relax.matmul")
def _matmul(call, args, var):
    return torch.matmul(args[0], args[1])


@register_interpret("relax.clip")
def _clip(call, args, var):
    return torch.clamp(args[0], _scalar(call.args[1]), _scalar(call.args[2]))


@register_interpret("relax.nn.relu")
def _relu(call, args, var):
    return F.relu(args[0])


@register_interpret("relax.sigmoid")
def _sigmoid(call, args, var):
    return torch.sigmoid(args[0])


@register_interpret("relax.reshape", "relax.flatten", "relax.squeeze", "relax.expand_dims")
def _reshape(call, args, var):
    # every one of these keeps row-major order; the result's static shape says which view
    return args[0].reshape(shape_of(var))


@register_interpret("relax.permute_dims")
def _permute(call, args, var):
    axes = call.attrs.axes
    axes = list(reversed(range(args[0].ndim))) if axes is None else _ints(axes)
    return args[0].permute(*axes)


@register_interpret("relax.mean")
def _mean(call, args, var):
    axis = call.attrs.axis
    dims = list(range(args[0].ndim)) if axis is None else _ints(axis)
    return args[0].mean(dim=dims, keepdim=bool(call.attrs.keepdims))


@register_interpret("relax.concat")
def _concat(call, args, var):
    return torch.cat(args[0], dim=int(call.attrs.axis))


def _pool_layout(call, var):
    if str(call.attrs.layout) != "NCHW" or bool(call.attrs.ceil_mode):
        raise GraphError(f"{var.name}: the interpreter pools NCHW without ceil_mode")


@register_interpret("relax.nn.max_pool2d")
def _max_pool(call, args, var):
    _pool_layout(call, var)
    top, left, bottom, right = _ints(call.attrs.padding)
    x = F.pad(args[0], (left, right, top, bottom), value=-float("inf"))
    return F.max_pool2d(x, _ints(call.attrs.pool_size), _ints(call.attrs.strides),
                        dilation=_ints(call.attrs.dilation))


@register_interpret("relax.nn.avg_pool2d")
def _avg_pool(call, args, var):
    _pool_layout(call, var)
    top, left, bottom, right = _ints(call.attrs.padding)
    if (top, left) != (bottom, right) or _ints(call.attrs.dilation) != [1, 1]:
        raise GraphError(f"{var.name}: the interpreter averages with symmetric padding only")
    return F.avg_pool2d(args[0], _ints(call.attrs.pool_size), _ints(call.attrs.strides),
                        padding=(top, left), count_include_pad=bool(call.attrs.count_include_pad))


@register_interpret("relax.nn.adaptive_avg_pool2d")
def _adaptive_avg_pool(call, args, var):
    return F.adaptive_avg_pool2d(args[0], shape_of(var)[2:])


def fake_quant(x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """qmath.fake_quant_affine in torch: what an activation point does to its tensor."""
    codes = torch.clamp(torch.floor(x / scale + 0.5) + zero_point, qmin, qmax)
    return (codes - zero_point) * scale


class Batches(list):
    """A value with one tensor per calibration batch (a constant is one shared tensor; a
    tuple's fields are a plain list)."""


Value = object


class SideBySide:
    """Run an annotated, calibrated module on ``batches``: path 0 is the float model (markers
    are identities), path 1 its quantization (activations fake-quantized with their scales,
    weights and biases from ``constant``). Subclasses hook the bias adds (``bias_add``) and
    the layer ops reading a weight (``weight_layer``)."""

    def __init__(self, mod, state: QuantState, config: QConfig,
                 constant: Callable[[QPoint], np.ndarray]):
        self.func = mod["main"]
        self.state, self.config, self.constant = state, config, constant
        self.values: Dict[relax.Var, Tuple[Value, Value]] = {}
        self.float_points: set = set()  # activation/WEIGHT points left unquantized (sensitivity runs)
        self.bias_marker: Dict[relax.Var, QPoint] = {}
        self.weight_marker: Dict[relax.Var, QPoint] = {}

    # -- hooks ----------------------------------------------------------------------------
    def weight_layer(self, var, call, rule, point: QPoint, batches: int):
        """The float and quantized values of a layer op reading the WEIGHT ``point``
        (default: the op's rule on both paths)."""
        return tuple(self.apply(rule, call, var, k, batches) for k in (0, 1))

    def bias_add(self, var, point: QPoint, layer: Tuple[list, list], bias: Tuple[Value, Value]):
        """The float and quantized values of ``layer + bias`` (default: just the sums)."""
        return tuple(self.map2(torch.add, layer[k], bias[k]) for k in (0, 1))

    # -- evaluation -----------------------------------------------------------------------
    @staticmethod
    def map2(fn, a, b):
        if isinstance(a, Batches) or isinstance(b, Batches):
            n = len(a) if isinstance(a, Batches) else len(b)
            return Batches(fn(a[i] if isinstance(a, Batches) else a,
                              b[i] if isinstance(b, Batches) else b) for i in range(n))
        return fn(a, b)

    def arg(self, expr, path: int):
        if isinstance(expr, relax.Var):
            return self.values[expr][path]
        if is_const(expr):
            return torch.as_tensor(const_value(expr), dtype=DTYPE)
        if isinstance(expr, relax.Tuple):
            return [self.arg(f, path) for f in expr.fields]
        return expr

    def apply(self, rule, call, var, path: int, batches: int):
        args = [self.arg(a, path) for a in call.args]

        def at(a, i):
            if isinstance(a, Batches):
                return a[i]
            if isinstance(a, list):  # a tuple's fields
                return [at(f, i) for f in a]
            return a

        def batched(a):
            return isinstance(a, Batches) or (isinstance(a, list) and any(map(batched, a)))

        if not any(batched(a) for a in args):
            return rule(call, args, var)
        return Batches(rule(call, [at(a, i) for a in args], var) for i in range(batches))

    def run(self, dataset: Iterable) -> Tuple[list, list]:
        """Evaluate main over ``dataset``; the float and quantized outputs, one per batch."""
        params = [p for p in self.func.params]
        shapes = [shape_of(p) for p in params]
        inputs = list(iter_batches(dataset, [p.name for p in params], shapes))
        if not inputs:
            raise GraphError("the interpreter needs at least one input batch")
        for k, p in enumerate(params):
            batch = Batches(torch.as_tensor(np.asarray(b[k]), dtype=DTYPE) for b in inputs)
            self.values[p] = (batch, batch)
        last_use = _last_uses(self.func)
        with torch.no_grad():
            for index, binding in enumerate(bindings(self.func)):
                self.visit(binding.var, binding.value, len(inputs))
                for v in last_use.get(index, ()):
                    self.values.pop(v, None)
            out = self.func.body.body
            return self.arg(out, 0), self.arg(out, 1)

    def visit(self, var, value, batches: int):
        if isinstance(value, relax.Var):
            self.values[var] = self.values[value]
            return
        if isinstance(value, relax.Tuple):
            self.values[var] = tuple([self.arg(f, k) for f in value.fields] for k in (0, 1))
            return
        if isinstance(value, relax.TupleGetItem):
            source = self.values[value.tuple_value]
            self.values[var] = tuple(v[value.index] for v in source)
            return
        parsed = parse_marker(value)
        if parsed is not None:
            self.values[var] = self.marker(var, *parsed)
            return
        op = op_name(value)
        if op == "relax.add" and any(a in self.bias_marker for a in value.args):
            layer, bias = value.args if value.args[1] in self.bias_marker else value.args[::-1]
            self.values[var] = self.bias_add(var, self.bias_marker[bias], self.values[layer],
                                             self.values[bias])
            return
        rule = INTERPRET_RULES.get(op)
        if rule is None:
            raise GraphError(f"{var.name}: op {op or type(value).__name__} has no interpreter "
                             "rule (register one with passes.interpret.register_interpret)")
        weights = [self.weight_marker[a] for a in value.args if a in self.weight_marker]
        if weights:
            self.values[var] = self.weight_layer(var, value, rule, weights[0], batches)
            return
        self.values[var] = tuple(self.apply(rule, value, var, k, batches) for k in (0, 1))

    def marker(self, var, tensor, point_id: str, kind: str):
        point = self.state.points[point_id]
        float_value = self.arg(tensor, 0)
        if kind in (QKind.WEIGHT.value, QKind.BIAS.value):
            marked = self.bias_marker if kind == QKind.BIAS.value else self.weight_marker
            marked[var] = point
            if point_id in self.float_points:
                return float_value, float_value
            quant = torch.as_tensor(self.constant(point).reshape(tuple(float_value.shape)), dtype=DTYPE)
            return float_value, quant
        scale = self.state.activation_scales[point_id]
        zero_point = self.state.activation_zero_points.get(point_id, 0)
        quant = self.arg(tensor, 1)
        if point_id in self.float_points:
            return float_value, quant
        bits = self.state.activation_bits_of(point_id, self.config)
        qmin, qmax = qmath.activation_range(bits, self.config.activation_symmetric)
        fq = lambda x: fake_quant(x, scale, zero_point, qmin, qmax)  # noqa: E731
        return float_value, (Batches(map(fq, quant)) if isinstance(quant, Batches) else fq(quant))


def _reads(expr) -> List[relax.Var]:
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for a in expr.args for v in _reads(a)]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in _reads(f)]
    if isinstance(expr, relax.TupleGetItem):
        return _reads(expr.tuple_value)
    return []


def _last_uses(func) -> Dict[int, List[relax.Var]]:
    """binding index -> the variables last read there (freed after it; outputs are kept)."""
    last: Dict[relax.Var, int] = {}
    for index, binding in enumerate(bindings(func)):
        for v in _reads(binding.value):
            last[v] = index
    outputs = set(_reads(func.body.body))
    out: Dict[int, List[relax.Var]] = {}
    for v, index in last.items():
        if v not in outputs:
            out.setdefault(index, []).append(v)
    return out


def consumers(func) -> Dict[relax.Var, List[relax.VarBinding]]:
    """variable -> the bindings that read it directly."""
    found: Dict[relax.Var, List[relax.VarBinding]] = {}
    for binding in bindings(func):
        value = binding.value
        args = list(value.args) if isinstance(value, relax.Call) else [value]
        for a in args:
            for v in (a.fields if isinstance(a, relax.Tuple) else [a]):
                if isinstance(v, relax.Var):
                    found.setdefault(v, []).append(binding)
    return found


def output_point(func, var, state: QuantState) -> Optional[str]:
    """The ACTIVATION point that next quantizes ``var``, through single-consumer activation
    functions (ReLU, ReLU6, per-channel clip bounds); None if it is never requantized."""
    uses = consumers(func)
    passthrough = ("relax.nn.relu", "relax.clip", "relax.minimum", "relax.maximum")
    while True:
        found = uses.get(var, [])
        for binding in found:
            parsed = parse_marker(binding.value)
            if parsed is not None and parsed[2] == QKind.ACTIVATION.value:
                return parsed[1]
        if len(found) != 1 or op_name(found[0].value) not in passthrough:
            return None
        var = found[0].var


def require_reiterable(dataset, what: str) -> None:
    """``what`` reads the calibration data again after calibration: refuse what cannot be."""
    if dataset is None:
        raise ValueError(f"{what} needs the calibration dataset")
    if iter(dataset) is dataset:
        raise ValueError(f"{what} reads the calibration data after calibration has: pass a list "
                         "(or another re-iterable), not an iterator or generator")


def data_stage_pass(name: str, stage, dataset: Optional[Iterable],
                    config: Optional[QConfig] = None):
    """``stage(mod, dataset, config)`` (a ``maybe_*`` step after calibration, the identity when
    its QConfig field is off) as a tvm.transform module pass called ``name``."""
    config = config or QConfig()

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        return stage(mod, dataset, config)

    return _pass


def walk_calibration_data(mod, dataset, config: QConfig, walker_type, what: str,
                          reset: Callable[[QuantState], None]):
    """Run a ``SideBySide`` walker (``walker_type(mod, ctx)``) over the calibration data again,
    after calibration: ``reset`` clears the state fields the walk fills (the layer plan reads
    them as they grow). Returns (state, walker); the caller stores the walker's rows."""
    require_reiterable(dataset, what)
    state = get_state(mod)
    reset(state)
    ctx = RealizeContext(config, state)
    collect_constants(mod, ctx)
    walker = walker_type(mod, ctx)
    walker.run(dataset)
    return state, walker
