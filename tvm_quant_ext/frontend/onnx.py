"""ONNX -> Relax: TVM's Relax ONNX importer plus the fixes the quantization passes rely on.

    mod, params = from_onnx("model.onnx")                        # a path or an onnx.ModelProto
    mod, params = from_onnx(model, shape={"input": (8, 3, 224, 224)})

Like :func:`tvm_quant_ext.frontend.from_mxnet`: ``main`` takes the data input(s) first and then
every weight as a parameter (``keep_params_in_input=True`` + ``relax.frontend.detach_params``),
so ``relax.transform.BindParams("main", params)`` binds them; ``params`` (name -> numpy array)
holds exactly the weights ``main`` takes.  No optimization pass is run on the module.

The fixes, applied to a copy of the model (the caller's ModelProto is left as it is):

* :func:`name_initializers`: Conv / Gemm / ConvTranspose / MatMul weights and biases are named
  after their layer (``"<layer>.weight"`` / ``"<layer>.bias"``), the layer taken from a given set
  of module names (a torch model's ``named_modules()``) or else from the node's scope name
  ("/_blocks.0/_depthwise_conv/Conv" -> ``_blocks.0._depthwise_conv``); small (<= 64 elements)
  or non-float initializers (Clip bounds, Reshape shapes) are inlined as ONNX ``Constant``
  nodes, so they become Relax constants and the only function parameters are the data inputs
  and the weights.
* Shape arithmetic where TVM's importer needs constants (a Pad computed from the input's
  shape) is folded by ONNX Runtime's basic optimizer first (:mod:`.onnx_fold`).
* ONNX ``Clip`` with constant bounds (ReLU6) is imported as ``R.clip(x, lo, hi)`` instead of
  the importer's default ``call_tir(maximum)`` / ``call_tir(minimum)`` pair (plus ``isnan`` /
  ``where`` guards), so activations stay recognisable Relax operators for the quantization
  passes.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from typing import TYPE_CHECKING, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import helper

from .onnx_fold import fold_with_onnxruntime, needs_folding

if TYPE_CHECKING:  # pragma: no cover
    import tvm

WEIGHT_OPS = ("Conv", "Gemm", "ConvTranspose", "MatMul")


# --------------------------------------------------------------------------- #
# initializer names
# --------------------------------------------------------------------------- #
def _layer_from_node_name(node_name: str, module_names: set) -> Optional[str]:
    """Map a TorchScript-exporter scope ("/_blocks.0/_depthwise_conv/Conv",
    "/blocks/blocks.0/blocks.0.0/conv_dw/Conv") to a torch module name."""
    comps = [c for c in node_name.strip("/").split("/")[:-1] if c]
    prefix = ""
    for comp in comps:
        cands = []
        if prefix:
            cands.append(prefix + "." + comp)
            last = prefix.split(".")[-1]
            if comp.startswith(last + "."):  # container child spelled "<parent>.<idx>"
                cands.append(prefix + comp[len(last):])
        cands.append(comp)
        hit = next((c for c in cands if c in module_names), None)
        if hit is None:
            return None
        prefix = hit
    return prefix or None


def _layer_from_scope(node_name: str) -> Optional[str]:
    """The module path spelled by a node's scope alone: "/blocks/blocks.0/blocks.0.0/conv_dw/Conv"
    -> "blocks.0.0.conv_dw" (a component "<previous>.<idx>" is a container child), "a/b/Conv2D"
    -> "a.b"."""
    prefix, prev = "", None
    for comp in (c for c in node_name.strip("/").split("/")[:-1] if c):
        if prev is not None and comp.startswith(prev + "."):
            prefix += comp[len(prev):]
        else:
            prefix = f"{prefix}.{comp}" if prefix else comp
        prev = comp
    return re.sub(r"[^A-Za-z0-9_.]", "_", prefix).strip(".") or None


def _sanitize(name: str) -> str:
    s = name[len("onnx::"):] if name.startswith("onnx::") else name
    s = re.sub(r"[^A-Za-z0-9_.]", "_", s).strip("_.") or "param"
    if not (s[0].isalpha() or s[0] == "_"):
        s = "p_" + s
    return s


def name_initializers(model: onnx.ModelProto, module_names: Optional[Iterable[str]] = None) -> None:
    """Rename / inline the initializers of ``model`` in place.

    Conv/Gemm/ConvTranspose/MatMul weights -> ``"<layer>.weight"`` / ``"<layer>.bias"``: ``layer``
    is the module of ``module_names`` that the node's scope names (TorchScript exporter scopes,
    "/_blocks.0/_depthwise_conv/Conv" -> ``_blocks.0._depthwise_conv``), else the module path
    the scope spells by itself, else ``"<op><index>"`` for a node without a scope.  Small (<= 64
    elements) or non-float initializers -> ``Constant`` nodes; any other initializer -> a
    sanitized unique name.  The kept initializers are ordered by first use, so ``main``'s
    parameters follow the graph.  Renaming a renamed model again keeps its names (barring
    clashes with other tensor names).
    """
    graph = model.graph
    module_names = {n for n in (module_names or ()) if n}
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    new_name: Dict[str, str] = {}
    # never reuse a tensor name that already exists in the graph
    used: set = {o for n in graph.node for o in n.output} | graph_inputs | {o.name for o in graph.output}

    def unique(base: str) -> str:
        cand, k = base, 1
        while cand in used:
            cand, k = f"{base}_{k}", k + 1
        used.add(cand)
        return cand

    # 1) weights of Conv / Gemm, in graph order (deterministic)
    for idx, node in enumerate(graph.node):
        if node.op_type not in WEIGHT_OPS:
            continue
        layer = (_layer_from_node_name(node.name, module_names) if module_names else None) \
            or _layer_from_scope(node.name) or f"{node.op_type.lower()}{idx}"
        for slot, suffix in ((1, "weight"), (2, "bias")):
            if len(node.input) > slot and node.input[slot] in inits and node.input[slot] not in new_name:
                new_name[node.input[slot]] = unique(f"{layer}.{suffix}")

    # 2) every other initializer: inline small / integer ones as Constant nodes
    const_nodes = []
    keep = []
    for t in graph.initializer:
        if t.name in new_name:
            keep.append(t)
            continue
        n_elem = int(np.prod(t.dims)) if len(t.dims) else 1
        is_float = t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
        if n_elem <= 64 or not is_float:
            const_nodes.append(
                helper.make_node("Constant", [], [t.name], name=f"zoo_const_{len(const_nodes)}", value=t)
            )
        else:
            new_name[t.name] = unique(_sanitize(t.name))
            keep.append(t)
    # order the kept initializers by first use, so main's parameters follow the graph
    first_use: Dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for x in node.input:
            first_use.setdefault(x, idx)
    keep.sort(key=lambda t: first_use.get(t.name, len(graph.node)))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # initializers listed as graph inputs (old IR) must follow
    for vi in list(graph.input):
        if vi.name in inits and vi.name not in new_name:
            graph.input.remove(vi)
    nodes = const_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)

    # 3) apply the renames everywhere
    for t in graph.initializer:
        t.name = new_name[t.name]
    for vi in list(graph.input) + list(graph.value_info):
        if vi.name in new_name:
            vi.name = new_name[vi.name]
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x in new_name:
                node.input[i] = new_name[x]


# --------------------------------------------------------------------------- #
# Clip with constant bounds -> R.clip
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _clip_as_relax_clip():
    """Temporarily make the Relax ONNX importer emit R.clip for constant-bound Clip."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    orig = of.Clip.__dict__["_impl_v13"]

    def _scalar(x):
        if x is None:
            return None
        if isinstance(x, relax.Var):
            return None
        val = getattr(x, "value", None)  # TVM 0.27 GenericConst
        if not hasattr(val, "numpy"):
            val = getattr(x, "data", None)  # older relax.Constant
        if not hasattr(val, "numpy"):
            return None
        arr = val.numpy()
        if arr.size != 1 or np.isnan(arr).any():
            return None
        return float(arr.reshape(()))

    def _impl_v13(cls, bb, inputs, attr, params):
        lo = _scalar(inputs[1]) if len(inputs) > 1 else None
        hi = _scalar(inputs[2]) if len(inputs) > 2 else None
        has_lo = len(inputs) > 1 and inputs[1] is not None
        has_hi = len(inputs) > 2 and inputs[2] is not None
        if (not has_lo or lo is not None) and (not has_hi or hi is not None) and (has_lo or has_hi):
            dtype = inputs[0].ty.dtype
            info = np.finfo(dtype) if "float" in str(dtype) else np.iinfo(dtype)
            lo = float(info.min) if lo is None else lo
            hi = float(info.max) if hi is None else hi
            if "float" in str(dtype):  # typed bounds (T.float32(6)) rather than float64
                from tvm import tirx

                return relax.op.clip(
                    inputs[0],
                    relax.prim_value(tirx.FloatImm(str(dtype), lo)),
                    relax.prim_value(tirx.FloatImm(str(dtype), hi)),
                )
            return relax.op.clip(inputs[0], int(lo), int(hi))
        return orig.__func__(cls, bb, inputs, attr, params)

    of.Clip._impl_v13 = classmethod(_impl_v13)
    try:
        yield
    finally:
        of.Clip._impl_v13 = orig


# --------------------------------------------------------------------------- #
# the importer
# --------------------------------------------------------------------------- #
def _var_name(var) -> str:
    """Relax Var name (``.name`` in TVM 0.27, ``.name_hint`` in older releases)."""
    n = getattr(var, "name", None)
    return str(n if n is not None else var.name_hint)


def from_onnx(model: Union[str, onnx.ModelProto], shape: Optional[Dict[str, Sequence[int]]] = None,
              module_names: Optional[Iterable[str]] = None) -> Tuple[tvm.IRModule, Dict[str, np.ndarray]]:
    """An ONNX model (file path or ``onnx.ModelProto``) -> ``(mod, params)``.

    ``shape``: optional input name -> shape, passed to the importer's ``shape_dict`` (e.g. to fix
    a dynamic batch dimension).  ``module_names``: layer names for :func:`name_initializers`
    (a torch model's module names; default: the node scopes).
    """
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        proto = onnx.load(model)
    if needs_folding(proto):  # shape arithmetic TVM's importer cannot take (onnx_fold.py)
        proto = fold_with_onnxruntime(proto, shape)
    name_initializers(proto, module_names)
    shape_dict = None if shape is None else {k: list(v) for k, v in shape.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _clip_as_relax_clip():
            mod = relax_from_onnx(proto, shape_dict=shape_dict, keep_params_in_input=True)
    mod, detached = relax.frontend.detach_params(mod)
    plist = detached.get("main", [])
    fparams = list(mod["main"].params)
    n_in = len(fparams) - len(plist)
    params: Dict[str, np.ndarray] = {}
    for var, val in zip(fparams[n_in:], plist):
        name = _var_name(var)
        if name in params:
            raise RuntimeError(f"duplicate Relax parameter name {name!r}")
        params[name] = val.numpy() if hasattr(val, "numpy") else np.asarray(val)
    return mod, params


__all__ = ["from_onnx", "name_initializers"]
