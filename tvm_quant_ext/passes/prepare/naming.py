"""NameLayers: every binding of ``main`` named after its layer, the names later ids derive from.

A conv/matmul binding is named after its weight parameter ("stem.weight" -> "stem"); any other
binding after the layer it descends from and its op ("stem/relu"). Scales are matched to
tensors by these names, never by position.
"""
from __future__ import annotations

from typing import Dict, Optional

import tvm
from tvm import relax

from ...graph import BindingRewriter, bindings, op_name, short_op
from ...layer_ops import LAYER_OPS
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
