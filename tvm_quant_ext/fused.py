"""Fused int8 layers for CPU: conv2d / dense / depthwise conv2d plus their integer epilogue in
one scheduled kernel.

The integer realize emits each layer as a chain of Relax bindings::

    acc = conv2d(codes, w, out_dtype="int32")           # or matmul
    acc = add(astype(acc, "int64"), bias)               # the bias, int32 or int64
    y   = astype(clip(right_shift(add(multiply(astype(acc, "int64"), M0), 2^(r-1)), r)
                      [+ zero_point], lo, hi), "int8")  # requantize (fixed_point.py)

Left alone, the conv becomes one kernel writing an int32 tensor and the chain a second,
single-threaded int64 kernel reading it back. ``fuse_int8_layers`` matches such chains: a
layer call (``LAYER_KERNELS``, keyed by op) followed by any run of elementwise integer ops with
constant second operands (``EPILOGUE_OPS``, keyed by op), each intermediate used once, and
replaces the chain's last binding by one ``call_tir`` whose kernel computes the accumulator and
applies the same ops, in the same dtypes and the same order, to each accumulator element before
writing the (int8) result. Because the epilogue is the graph's own arithmetic (no re-derived
formula), the fused kernel is bit-identical to the unfused graph by construction; the tests
check it anyway.

Layer kernels:
* conv2d groups=1 and dense (matmul with a constant 2-D weight), int8/uint8 x int8 -> int32:
  the VNNI kernel (``vnni.conv2d_kernel``), when the target has avx512vnni;
* depthwise conv2d (groups == in channels == out channels, any kernel size, strides,
  dilation, asymmetric padding; the realize's average pools are such convs too):
  ``depthwise_kernel`` below, int32 accumulation, parallel over channels, vectorized along a
  row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tvm
from tvm import relax, te
from tvm.s_tir import Schedule

from .graph import const_value, is_const, op_name, registrar

OPAQUE = 8  # relax.analysis' OpPatternKind.kOpaque
INTEGER_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "int64")


# -- the epilogue -----------------------------------------------------------------------------
@dataclass
class Step:
    """One elementwise op of the chain: ``op`` applied to (running value, *operands)."""

    op: str
    operands: Tuple[np.ndarray, ...]  # constant operands (numpy, the op's dtype)
    dtype: str                        # result dtype
    attrs: Tuple = ()                 # clip bounds


# EPILOGUE_OPS[op](value, operands, step) -> value; operands are TE expressions already
# indexed at the element (scalars or placeholders read at the broadcast index)
EpilogueOp = Callable[[object, List[object], Step], object]
EPILOGUE_OPS: Dict[str, EpilogueOp] = {}
register_epilogue = registrar(EPILOGUE_OPS)


@register_epilogue("relax.add")
def _add(x, operands, step):
    return x + operands[0]


@register_epilogue("relax.subtract")
def _subtract(x, operands, step):
    return x - operands[0]


@register_epilogue("relax.multiply")
def _multiply(x, operands, step):
    return x * operands[0]


@register_epilogue("relax.right_shift")
def _right_shift(x, operands, step):
    return x >> operands[0]  # arithmetic for signed types, as topi.right_shift


@register_epilogue("relax.maximum")
def _maximum(x, operands, step):
    return te.max(x, operands[0])


@register_epilogue("relax.minimum")
def _minimum(x, operands, step):
    return te.min(x, operands[0])


@register_epilogue("relax.clip")
def _clip(x, operands, step):
    lo, hi = step.attrs  # topi.clip: max(min(x, hi), lo) in the value's dtype
    return te.max(te.min(x, tvm.tirx.const(hi, step.dtype)), tvm.tirx.const(lo, step.dtype))


@register_epilogue("relax.astype")
def _astype(x, operands, step):
    return x.astype(step.dtype)


@dataclass
class Epilogue:
    """The chain after the layer, applied per output element inside the kernel."""

    steps: List[Step] = field(default_factory=list)

    @property
    def dtype(self) -> Optional[str]:
        return self.steps[-1].dtype if self.steps else None

    def tensor_operands(self) -> List[np.ndarray]:
        """Operands that are not scalars: they become kernel arguments, in this order."""
        return [a for s in self.steps for a in s.operands if a.size > 1]

    def apply(self, value, index: Sequence, placeholders: Sequence[te.Tensor]):
        """``value`` (the accumulator at output ``index``) through every step."""
        tensors = iter(placeholders)
        for step in self.steps:
            operands = []
            for a in step.operands:
                if a.size == 1:
                    operands.append(tvm.tirx.const(a.reshape(-1)[0].item(), str(a.dtype)))
                else:
                    t = next(tensors)
                    # numpy broadcasting: right-aligned, size-1 dims read index 0
                    tail = index[len(index) - a.ndim:]
                    operands.append(t[tuple(0 if d == 1 else i for d, i in zip(a.shape, tail))])
            value = EPILOGUE_OPS[step.op](value, operands, step)
        return value


def _step_of(call: relax.Call, layer_shape) -> Optional[Step]:
    """The call as an epilogue step on its first argument, or None when it is not one."""
    name = op_name(call)
    if name not in EPILOGUE_OPS:
        return None
    dtype = str(call.ty.dtype)
    if dtype not in INTEGER_DTYPES or tuple(int(d) for d in call.ty.shape) != tuple(layer_shape):
        return None  # float math (dequantize) stays outside; so does a broadcast to a new shape
    if name == "relax.clip":
        return Step(name, (), dtype, (int(call.args[1].value), int(call.args[2].value)))
    if name == "relax.astype":
        return Step(name, (), dtype)
    operands = call.args[1:]
    if not all(is_const(a) for a in operands):
        return None
    values = tuple(const_value(a) for a in operands)
    if any(v.ndim > len(layer_shape) for v in values):
        return None
    return Step(name, values, dtype)


# -- layer kernels ----------------------------------------------------------------------------
@dataclass
class LayerKernel:
    """How to call one fused kernel: its PrimFunc, the constants it takes after the data, and
    the output it writes (``reshape_to``: the layer's own shape when the kernel's differs)."""

    func: tvm.tirx.PrimFunc
    name: str
    consts: List[np.ndarray]
    out_shape: Tuple[int, ...]
    reshape_to: Optional[Tuple[int, ...]] = None


# LAYER_KERNELS[op](call, epilogue, options) -> LayerKernel, or None when this call (dtypes,
# groups, layout, target features) is not one the op's kernels take
LayerRule = Callable[[relax.Call, Epilogue, "FuseOptions"], Optional[LayerKernel]]
LAYER_KERNELS: Dict[str, LayerRule] = {}
register_layer = registrar(LAYER_KERNELS)


@dataclass(frozen=True)
class FuseOptions:
    vnni: bool = True        # conv2d groups=1 / dense on vpdpbusd
    depthwise: bool = True   # depthwise conv2d kernel
    epilogue: bool = True    # fuse the elementwise chain (False: bare layers, int32 out)


def _int8_operands(call) -> Optional[Tuple[str, np.ndarray]]:
    data, weight = call.args[0], call.args[1]
    data_dtype = str(data.ty.dtype)
    if data_dtype not in ("int8", "uint8") or not is_const(weight):
        return None
    if str(weight.ty.dtype) != "int8" or str(call.ty.dtype) != "int32":
        return None
    return data_dtype, const_value(weight)


def _nchw(attrs) -> bool:
    return (str(attrs.data_layout) == "NCHW" and str(attrs.kernel_layout) == "OIHW"
            and str(attrs.out_layout or attrs.data_layout) == "NCHW")


@register_layer("relax.nn.conv2d")
def _conv2d_kernel(call, epilogue: Epilogue, options: FuseOptions) -> Optional[LayerKernel]:
    from . import vnni

    operands = _int8_operands(call)
    if operands is None or not _nchw(call.attrs):
        return None
    data_dtype, weight = operands
    a = call.attrs
    data_shape = [int(s) for s in call.args[0].ty.shape]
    groups = int(a.groups)
    out_shape = tuple(int(s) for s in call.ty.shape)
    if groups == 1 and options.vnni:
        func = vnni.conv2d_kernel(data_shape, weight.shape, data_dtype, a.strides, a.padding,
                                  a.dilation, epilogue=epilogue)
        consts = [vnni.pack_weight(weight), vnni.shift_correction(weight, data_dtype)]
        return LayerKernel(func, "conv2d_int8_vnni", consts, out_shape)
    if groups == data_shape[1] == weight.shape[0] and weight.shape[1] == 1 and options.depthwise:
        func = depthwise_kernel(data_shape, weight.shape, data_dtype, a.strides, a.padding,
                                a.dilation, epilogue=epilogue)
        return LayerKernel(func, "depthwise_conv2d_int8", [weight], out_shape)
    return None


@register_layer("relax.matmul")
def _dense_kernel(call, epilogue: Epilogue, options: FuseOptions) -> Optional[LayerKernel]:
    from . import vnni

    operands = _int8_operands(call)
    if operands is None or not options.vnni:
        return None
    data_dtype, weight = operands
    if weight.ndim != 2 or len(call.args[0].ty.shape) != 2:  # (N, K) x (K, M) only
        return None
    rows, k = (int(s) for s in call.args[0].ty.shape)
    weight = np.ascontiguousarray(weight.T)[:, :, None, None]
    # the kernel computes (rows, M, 1, 1); the epilogue indexes the layer's (rows, M)
    func = vnni.conv2d_kernel((rows, k, 1, 1), weight.shape, data_dtype, epilogue=epilogue,
                              epilogue_index=lambda i, oc, y, x: (i, oc))
    consts = [vnni.pack_weight(weight), vnni.shift_correction(weight, data_dtype)]
    return LayerKernel(func, "dense_int8_vnni", consts, (rows, weight.shape[0], 1, 1),
                       reshape_to=(rows, weight.shape[0]))


def depthwise_kernel(data_shape, weight_shape, data_dtype: str, strides=(1, 1),
                     padding=(0, 0, 0, 0), dilation=(1, 1),
                     epilogue: Optional[Epilogue] = None) -> tvm.tirx.PrimFunc:
    """Depthwise conv2d (C, 1, KH, KW) int8 on NCHW int8/uint8, int32 accumulation, then the
    epilogue: (data, weight, *epilogue tensors) -> NCHW (epilogue dtype, else int32).

    Schedule: one parallel task per (image, channel): the channel's zero-padded plane is copied
    to a small int32 buffer, then each output row (taps and epilogue) is computed vectorized."""
    epilogue = epilogue or Epilogue()
    n, c, h, w = (int(v) for v in data_shape)
    _, _, kh, kw = (int(v) for v in weight_shape)
    sh, sw = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in padding)
    dh, dw = (int(v) for v in dilation)
    hp, wp = h + pt + pb, w + pl + pr
    oh, ow = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1

    data = te.placeholder((n, c, h, w), data_dtype, "data")
    weight = te.placeholder((c, 1, kh, kw), "int8", "weight")
    extra = [te.placeholder(a.shape, str(a.dtype), f"epilogue{i}")
             for i, a in enumerate(epilogue.tensor_operands())]
    # the padded plane split into ``sw`` column phases, ``padded[.., y, p, q]`` = column
    # ``q * sw + p``: with stride 2 the taps of a row of outputs then read contiguous memory
    wq = -(-wp // sw)

    def pad(i, ch, y, p, q):
        x = q * sw + p
        inside = tvm.tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl)
        return tvm.tirx.if_then_else(inside, data[i, ch, y - pt, te.min(x, w + pl - 1) - pl]
                                     .astype("int32"), tvm.tirx.const(0, "int32"))

    padded = te.compute((n, c, hp, sw, wq), pad, name="padded")

    def accumulate(i, ch, y, x):
        # the taps spelled out (kh * kw terms) rather than a reduce axis: the output block
        # stays a plain spatial block, so its row can be vectorized with the epilogue
        terms = [padded[i, ch, y * sh + ry * dh, (rx * dw) % sw, x + (rx * dw) // sw]
                 * weight[ch, 0, ry, rx].astype("int32") for ry in range(kh) for rx in range(kw)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    out = te.compute((n, c, oh, ow),
                     lambda *index: epilogue.apply(accumulate(*index), index, extra), name="out")
    func = te.create_prim_func([data, weight, *extra, out])

    sch = Schedule(func)
    out_block, pad_block = sch.get_sblock("out"), sch.get_sblock("padded")
    i, ch, y, x = sch.get_loops(out_block)
    channel = sch.fuse(i, ch)
    sch.parallel(channel)
    sch.compute_at(pad_block, channel)
    sch.vectorize(x)
    sch.vectorize(sch.get_loops(pad_block)[-1])
    func = sch.mod["main"].without_attr("global_symbol")
    return func.with_attr("tirx.is_scheduled", True)


# -- the rewrite ------------------------------------------------------------------------------
@dataclass
class _Chain:
    layer: relax.Call
    epilogue: Epilogue


def _find_chains(func: relax.Function, options: FuseOptions) -> Dict[relax.Var, _Chain]:
    """Chain ends: var -> (layer call, epilogue), for every maximal layer + epilogue chain."""
    from .graph import bindings, var_uses

    uses = var_uses(func)
    chains: Dict[relax.Var, _Chain] = {}
    absorbed = set()

    def parse(expr) -> Optional[_Chain]:
        if isinstance(expr, relax.Var):
            if uses.get(expr, 0) == 1 and expr in chains:
                absorbed.add(expr)
                return chains[expr]
            return None
        name = op_name(expr)
        if name in LAYER_KERNELS and not (isinstance(expr.args[0], relax.Call)):
            return _Chain(expr, Epilogue())
        if not options.epilogue or name not in EPILOGUE_OPS:
            return None
        inner = parse(expr.args[0])
        if inner is None:
            return None
        step = _step_of(expr, [int(s) for s in inner.layer.ty.shape])
        if step is None:
            return None
        return _Chain(inner.layer, Epilogue(inner.epilogue.steps + [step]))

    for binding in bindings(func):
        before = set(absorbed)
        chain = parse(binding.value)
        if chain is None:  # a failed parse absorbs nothing
            absorbed.intersection_update(before)
            continue
        chains[binding.var] = chain
    return {v: c for v, c in chains.items() if v not in absorbed}


@relax.expr_functor.mutator
class _FuseLayers(relax.PyExprMutator):
    def __init__(self, mod, options: FuseOptions):
        super().__init__(mod)
        self.options = options
        self.ends: Dict[relax.Var, _Chain] = {}
        self.rewritten = 0

    def visit_var_binding_(self, binding):
        chain = self.ends.get(binding.var)
        kernel = None
        if chain is not None:
            rule = LAYER_KERNELS[op_name(chain.layer)]
            kernel = rule(chain.layer, chain.epilogue, self.options)
        if kernel is None:
            return super().visit_var_binding_(binding)
        # opaque to FuseOps: a scheduled kernel must not be merged into its neighbours
        gv = self.builder_.add_func(kernel.func.with_attr("op_pattern", OPAQUE), kernel.name)
        data = self.visit_expr(chain.layer.args[0])
        if kernel.reshape_to is not None:
            data = self.builder_.emit(relax.op.reshape(data, [*data.ty.shape, 1, 1]))
        dtype = chain.epilogue.dtype or "int32"
        consts = [relax.const(a, str(a.dtype))
                  for a in kernel.consts + chain.epilogue.tensor_operands()]
        value = relax.call_tir(gv, [data] + consts, relax.TensorType(kernel.out_shape, dtype))
        if kernel.reshape_to is not None:
            value = relax.op.reshape(self.builder_.emit(value), list(kernel.reshape_to))
        self.rewritten += 1
        # the layer's output variable keeps its identity (dataflow or output var)
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(value)))


def fuse_int8_layers(mod: tvm.IRModule, vnni: bool = True, depthwise: bool = True,
                     epilogue: bool = True) -> tvm.IRModule:
    """Every int8 layer a kernel in ``LAYER_KERNELS`` takes, with the elementwise integer chain
    that follows it (unless ``epilogue=False``), becomes one scheduled ``call_tir``."""
    options = FuseOptions(vnni=vnni, depthwise=depthwise, epilogue=epilogue)
    mod = relax.transform.FoldConstant()(mod)  # weights may arrive as permute_dims(const)
    rewriter = _FuseLayers(mod, options)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.ends = _find_chains(func, options)
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.finalize())
