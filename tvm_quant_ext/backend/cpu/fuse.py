"""Fused int8 layers for CPU: a conv2d / dense / depthwise conv2d and its integer epilogue in
one scheduled kernel.

Left alone, an int8 conv becomes one kernel writing an int32 tensor and the realize's
requantize chain a second, single-threaded int64 kernel reading it back.
``fuse_int8_layers`` matches such chains: a layer call (``LAYER_KERNELS``, keyed by op: the
layer ops of ``layer_ops.LAYER_OPS`` and the max pool, which has no weight) followed by any run of elementwise integer ops with
constant second operands (``epilogue.EPILOGUE_OPS``), each intermediate used once, and replaces
the chain's last binding by one ``call_tir`` whose kernel computes the accumulator and applies
the chain (``epilogue.Epilogue``) to each accumulator element before writing the (int8)
result. A residual add joins the chain too: its other operand, back to the tensor it is
computed from, is a ``Side`` the kernel reads at the same element, so the add, its rescales and
the requantize (and a BatchNorm after it) run in the epilogue of the conv before the add. The
tests check the fused build is bit-identical to the unfused graph.

The layer kernels and their rules are in ``layers.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple


import tvm
from tvm import relax

from ...graph import bindings, is_const, op_name, shape_of, var_uses
from . import packed
from .epilogue import (EPILOGUE_OPS, INTEGER_DTYPES, RING_OPS, Epilogue, Side, Step, step_of,
                       wraps_before_use)
from .int32_runs import collapse_int32_runs
from .int32_steps import narrow_steps
from .layers import (LAYER_KERNELS, FuseOptions, border_read, layer_macs, layer_output_range,
                     layer_window, links_packed)
from .vnni import VNNI

OPAQUE = 8  # relax.analysis' OpPatternKind.kOpaque
MACS_ATTR = "tvm_quant_ext.macs"  # a fused layer kernel's multiply-accumulates per call
WINDOW_ATTR = "tvm_quant_ext.window"  # a fused conv kernel's window, "KHxKW"


# -- the rewrite ------------------------------------------------------------------------------
@dataclass
class _Chain:
    layer: relax.Call
    epilogue: Epilogue


# ops whose two operands may swap, so the layer's chain can be either one
COMMUTATIVE = ("relax.add", "relax.multiply", "relax.maximum", "relax.minimum")


def _find_chains(func: relax.Function, options: FuseOptions) -> Dict[relax.Var, _Chain]:
    """Chain ends: var -> (layer call, epilogue), for every maximal layer + epilogue chain.

    A binary step whose other operand is a tensor of the layer's shape (a residual add) joins
    the chain as a ``Side``: that operand's own run of constant steps, back to the variable it
    starts from, is read inside the kernel (the steps then go unused and are dropped)."""
    uses = var_uses(func)
    values = {b.var: b.value for b in bindings(func)}
    chains: Dict[relax.Var, _Chain] = {}
    absorbed = set()

    def side_of(expr, shape, dtype) -> Optional[Side]:
        if not isinstance(expr, relax.Var) or shape_of(expr) != shape:
            return None
        steps = []
        # walk back over steps used only here; a chain end stays a tensor of its own
        while uses.get(expr, 0) == 1 and expr not in chains:
            value = values.get(expr)
            if op_name(value) not in EPILOGUE_OPS or not isinstance(value.args[0], relax.Var):
                break
            step = step_of(value, list(shape))
            if step is None or shape_of(value.args[0]) != shape:
                break
            steps.append(step)
            expr = value.args[0]
        source_dtype = str(expr.ty.dtype)
        value_dtype = steps[0].dtype if steps else source_dtype  # steps run backwards here
        if source_dtype not in INTEGER_DTYPES or value_dtype != dtype:
            return None
        return Side(expr, source_dtype, Epilogue(steps[::-1]))

    def with_side(expr, main, other) -> Optional[_Chain]:
        inner = parse(main)
        if inner is None:
            return None
        shape = shape_of(inner.layer)
        dtype = str(expr.ty.dtype)
        if shape_of(expr) != shape or dtype not in INTEGER_DTYPES:
            return None
        side = side_of(other, shape, dtype)
        if side is None or any(s.side is not None for s in side.chain.steps):
            return None
        step = Step(op_name(expr), (), dtype, side=side)
        return _Chain(inner.layer, Epilogue(inner.epilogue.steps + [step]))

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
        if len(expr.args) == 2 and not is_const(expr.args[1]):
            if not options.sides:
                return None
            before = set(absorbed)
            chain = with_side(expr, expr.args[0], expr.args[1])
            if chain is None and name in COMMUTATIVE:
                absorbed.intersection_update(before)
                chain = with_side(expr, expr.args[1], expr.args[0])
            return chain
        inner = parse(expr.args[0])
        if inner is None:
            return None
        step = step_of(expr, [int(s) for s in inner.layer.ty.shape])
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


def _packed_links(func: relax.Function, chains: Dict[relax.Var, _Chain],
                  options: FuseOptions) -> Dict[relax.Var, Tuple[int, int, int, int]]:
    """Chain ends whose output can stay packed, each with its border: made by a VNNI or
    depthwise conv chain and read only by such chains, as their layer's input (then an int8 /
    uint8 epilogue result) or as a side tensor of the epilogue (then any integer). The border
    is the widest padding of the convs that read it; each reader starts where its own padding
    does."""
    if not (options.vnni and options.epilogue and options.packed_links):
        return {}
    uses = var_uses(func)
    borders: Dict[relax.Var, list] = {}  # var -> per packed read: a conv's padding, or None
    for chain in chains.values():
        if not links_packed(chain.layer, options):
            continue
        data = chain.layer.args[0]
        borders.setdefault(data, []).append(border_read(chain.layer))
        for side in chain.epilogue.sides():
            borders.setdefault(side.source, []).append(None)
    links = {}
    for var, reads in borders.items():
        producer = chains.get(var)
        if (producer is None or len(reads) != uses.get(var, 0)
                or not links_packed(producer.layer, options)):
            continue
        paddings = [r for r in reads if r is not None]
        dtype = producer.epilogue.dtype or str(producer.layer.ty.dtype)
        if dtype in ("int8", "uint8") or (not paddings and dtype in INTEGER_DTYPES):
            links[var] = packed.widest_border(paddings)
    return links


def _narrow_sides(chains: Dict[relax.Var, _Chain],
                  links: Dict[relax.Var, Tuple[int, int, int, int]]) -> Dict[relax.Var, _Chain]:
    """Int64 side tensors written as int32 where only their low 32 bits can matter.

    The realize adds a residual branch at the accumulator scale in int64 (a projection conv's
    accumulator + bias, added to the other conv's) and casts the sum to int32 right after. Modulo
    2^32 the sum depends only on each operand's low 32 bits, so the branch's kernel can write
    them and the reader sign-extends them again: half the bytes of a full-size tensor written
    and read back, and the same result. Applies to a linked (blocked) chain end read only as
    sides whose reading chains add it and cast to 32 bits before any other op."""
    readers: Dict[relax.Var, List[bool]] = {}
    for chain in chains.values():
        steps = chain.epilogue.steps
        for k, step in enumerate(steps):
            if step.side is not None:
                ok = (step.op in RING_OPS and wraps_before_use(step.side.chain.steps + [
                    Step("relax.astype", (), "int32")]) and wraps_before_use(steps[k:]))
                readers.setdefault(step.side.source, []).append(ok)
    narrow = {v for v, oks in readers.items() if v in links and all(oks)
              and chains[v].epilogue.dtype == "int64"}
    if not narrow:
        return chains
    out = {}
    for var, chain in chains.items():
        steps = []
        for step in chain.epilogue.steps:
            if step.side is not None and step.side.source in narrow:
                widen = Step("relax.astype", (), "int64")
                step = replace(step, side=replace(step.side, dtype="int32", chain=Epilogue(
                    [widen] + step.side.chain.steps)))
            steps.append(step)
        if var in narrow:
            steps.append(Step("relax.astype", (), "int32"))
        out[var] = _Chain(chain.layer, Epilogue(steps))
    return out


CODE_DTYPES = ("int8", "uint8")  # what a side may travel as


def _code_sides(chains: Dict[relax.Var, _Chain],
                links: Dict[relax.Var, Tuple[int, int, int, int]],
                uses: Dict[relax.Var, int]) -> Dict[relax.Var, _Chain]:
    """Side tensors written as the code they are computed from.

    The realize requantizes a projection shortcut to an 8-bit code and then rescales that code
    to the residual add's scale in int64 (multiply, add, shift); fused as one chain, the
    projection's kernel writes the rescaled value (int32, four bytes an element) and the block's
    last conv reads it back. The rescale is elementwise on the code, so the reading kernel can
    apply it to the code as well: the writer stops at its last 8-bit step and the steps
    after it move to the front of each reader's side chain: a quarter of the bytes written and
    read, the same values, and a side of two codes for ``int32_runs``' pair step. Applies to a
    linked (blocked) chain end read only as sides."""
    side_reads: Dict[relax.Var, int] = {}
    for chain in chains.values():
        for side in chain.epilogue.sides():
            side_reads[side.source] = side_reads.get(side.source, 0) + 1
    tails = {}
    for var, count in side_reads.items():
        producer = chains.get(var)
        if producer is None or var not in links or count != uses.get(var, 0):
            continue
        steps = producer.epilogue.steps
        narrow = [k for k, s in enumerate(steps) if s.dtype in CODE_DTYPES]
        if not narrow or narrow[-1] == len(steps) - 1 or \
                any(s.side is not None for s in steps[narrow[-1]:]):
            continue
        tails[var] = narrow[-1] + 1
    if not tails:
        return chains
    out = {}
    for var, chain in chains.items():
        steps = list(chain.epilogue.steps)
        if var in tails:
            steps = steps[:tails[var]]
        for k, step in enumerate(steps):
            source = step.side.source if step.side is not None else None
            if source in tails:
                cut = chains[source].epilogue.steps
                steps[k] = replace(step, side=replace(
                    step.side, dtype=cut[tails[source] - 1].dtype,
                    chain=Epilogue(cut[tails[source]:] + step.side.chain.steps)))
        out[var] = _Chain(chain.layer, Epilogue(steps))
    return out


@relax.expr_functor.mutator
class _FuseLayers(relax.PyExprMutator):
    def __init__(self, mod, options: FuseOptions):
        super().__init__(mod)
        self.options = options
        self.ends: Dict[relax.Var, _Chain] = {}
        self.links: Dict[relax.Var, Tuple] = {}  # chain ends that go out packed -> border
        self.packed: Dict[relax.Var, relax.Var] = {}  # such an end -> its packed tensor
        self.rewritten = 0

    def visit_var_binding_(self, binding):
        chain = self.ends.get(binding.var)
        kernel = None
        if chain is not None:
            rule = LAYER_KERNELS[op_name(chain.layer)]
            data = chain.layer.args[0]
            options = replace(self.options, input_packed=data in self.packed,
                              input_border=self.links.get(data, (0, 0, 0, 0)),
                              output_packed=binding.var in self.links,
                              output_padding=self.links.get(binding.var, (0, 0, 0, 0)))
            epilogue = chain.epilogue.with_blocked_sides(
                {v: self.links[v] for v in self.packed})
            kernel = rule(chain.layer, epilogue, options)
        if kernel is None:
            return super().visit_var_binding_(binding)
        # opaque to FuseOps: a scheduled kernel must not be merged into its neighbours
        func = kernel.func.with_attr("op_pattern", OPAQUE).with_attr(
            MACS_ATTR, layer_macs(chain.layer)).with_attr(WINDOW_ATTR, layer_window(chain.layer))
        gv = self.builder_.add_func(func, kernel.name)
        if options.input_packed:
            data = self.packed[chain.layer.args[0]]
        else:
            data = self.visit_expr(chain.layer.args[0])
        if kernel.reshape_to is not None:
            data = self.builder_.emit(relax.op.reshape(data, [*data.ty.shape, 1, 1]))
        epilogue = kernel.epilogue or epilogue
        dtype = kernel.out_dtype or epilogue.dtype or "int32"
        consts = [relax.const(a, str(a.dtype))
                  for a in kernel.consts + epilogue.tensor_operands()]
        sides = [self.packed[s.source] if s.blocked is not None else self.visit_expr(s.source)
                 for s in epilogue.sides()]
        value = relax.call_tir(gv, [data] + consts + sides,
                               relax.TensorType(kernel.out_shape, dtype))
        self.rewritten += 1
        if options.output_packed:  # its readers take the packed tensor; the NCHW var goes
            self.packed[binding.var] = self.builder_.emit(value, "packed")
            return
        if kernel.reshape_to is not None:
            value = relax.op.reshape(self.builder_.emit(value), list(kernel.reshape_to))
        # the layer's output variable keeps its identity (dataflow or output var)
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(value)))


def pack_int8_layers(mod: tvm.IRModule, isa: str = VNNI) -> tvm.IRModule:
    """Rewrite int8 conv2d/matmul layers of every Relax function onto the VNNI kernel, with no
    epilogue (int32 out): the unfused form."""
    return fuse_int8_layers(mod, vnni=True, depthwise=False, epilogue=False, pools=False,
                            isa=isa)


def fuse_int8_layers(mod: tvm.IRModule, vnni: bool = True, depthwise: bool = True,
                     epilogue: bool = True, packed_links: bool = True,
                     sides: bool = True, int32_runs: bool = True,
                     pools: bool = True, int32_steps: bool = True,
                     amx: bool = False, isa: str = VNNI,
                     code_sides: bool = True) -> tvm.IRModule:
    """Every int8 layer a kernel in ``LAYER_KERNELS`` takes, with the elementwise integer chain
    that follows it (unless ``epilogue=False``), becomes one scheduled ``call_tir``; a VNNI or
    depthwise conv whose readers are all such convs (or their epilogues) hands them the blocked
    layout of ``packed.py`` (``packed_links``); a residual add's other branch is read inside the
    kernel of the layer before it (``sides``); runs of epilogue steps on a code become one
    int32 step where that is exact (``int32_runs``, ``int32_runs.py``); max pools on codes
    run with their epilogue too (``pools``, ``pool.py``); int64 steps run in int32 where the
    value's range makes that exact (``int32_steps``, ``int32_steps.py``); a side tensor computed
    from an 8-bit code travels as that code, its rescale run by the reader (``code_sides``,
    ``_code_sides``); a conv with a blocked input, or an NCHW one of at most 4 channels,
    runs on AMX tiles (``amx``, ``amx.py``; only with ``vnni``). ``isa``: the instruction
    set of the packed conv / dense kernels, ``"avx512vnni"`` or ``"avx2"`` (``vnni.dot_isa``)."""
    options = FuseOptions(vnni=vnni, amx=vnni and amx, depthwise=depthwise, epilogue=epilogue,
                          packed_links=packed_links, sides=sides, pools=pools, isa=isa)
    mod = relax.transform.FoldConstant()(mod)  # weights may arrive as permute_dims(const)
    rewriter = _FuseLayers(mod, options)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.ends = _find_chains(func, options)
            rewriter.links = _packed_links(func, rewriter.ends, options)
            if code_sides:
                rewriter.ends = _code_sides(rewriter.ends, rewriter.links, var_uses(func))
            rewriter.ends = _narrow_sides(rewriter.ends, rewriter.links)
            if int32_runs:
                rewriter.ends = {v: _Chain(c.layer, collapse_int32_runs(
                    c.epilogue, shape_of(c.layer), str(c.layer.ty.dtype)))
                    for v, c in rewriter.ends.items()}
            if int32_steps:
                rewriter.ends = {v: _Chain(c.layer, narrow_steps(
                    c.epilogue, str(c.layer.ty.dtype), layer_output_range(c.layer),
                    len(shape_of(c.layer))))
                    for v, c in rewriter.ends.items()}
            rewriter.packed = {}
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.finalize())
