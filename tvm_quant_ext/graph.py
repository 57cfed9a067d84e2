"""Small helpers over Relax functions: op names, constants, binding-by-binding rebuilds."""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import tvm
from tvm import relax

GenericConst = tvm.ir.expr.GenericConst


class GraphError(ValueError):
    """The graph has a structure the quantizer cannot handle; the message says where."""


def op_name(expr) -> Optional[str]:
    """'relax.nn.conv2d' for a call to that op, else None."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def short_op(name: str) -> str:
    return name.split(".")[-1]


def is_const(expr) -> bool:
    return isinstance(expr, GenericConst)


def const_value(expr) -> np.ndarray:
    return expr.value.numpy()


def make_const(value: np.ndarray, dtype: str = "float32"):
    dtype = str(dtype)
    return relax.const(np.ascontiguousarray(value).astype(dtype), dtype)


def shape_of(expr) -> Tuple[int, ...]:
    return tuple(int(s) for s in expr.ty.shape)


def bindings(func: relax.Function) -> Iterator[relax.VarBinding]:
    for block in func.body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise GraphError(f"binding of {binding.var.name!r} is a {type(binding).__name__}; "
                                 "only plain variable bindings are supported")
            yield binding


def var_uses(func: relax.Function) -> Dict[relax.Var, int]:
    """How many times each variable is read (binding values and the function result)."""
    counts: Dict[relax.Var, int] = {}

    def count(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1
        elif isinstance(expr, relax.Call):
            for arg in expr.args:
                count(arg)
        elif isinstance(expr, relax.Tuple):
            for field in expr.fields:
                count(field)
        elif isinstance(expr, relax.TupleGetItem):
            count(expr.tuple_value)

    for binding in bindings(func):
        count(binding.value)
    count(func.body.body)
    return counts


def substitute(expr, remap: Dict[relax.Var, relax.Expr]):
    """Replace variables in a binding value (calls, tuples, tuple items) by ``remap``."""
    if isinstance(expr, relax.Var):
        return remap.get(expr, expr)
    if isinstance(expr, relax.Call):
        args = [substitute(a, remap) for a in expr.args]
        return relax.Call(expr.op, args, expr.attrs, list(expr.ty_args))
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([substitute(f, remap) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(substitute(expr.tuple_value, remap), expr.index)
    return expr


class BindingRewriter:
    """Rebuild one function binding by binding inside a single dataflow block.

    ``visit(var, value)`` gets each original binding with its value's variables already
    remapped, and returns the expression to bind (it may emit helper bindings first through
    ``self.bb``), or None to drop a binding nothing reads any more. The new variable keeps the original's name: names are the stable ids.
    """

    def __init__(self, func_name: str = "main"):
        self.func_name = func_name
        self.bb: Optional[relax.BlockBuilder] = None
        self.remap: Dict[relax.Var, relax.Expr] = {}
        self.func: Optional[relax.Function] = None

    def visit(self, var: relax.Var, value):
        return value

    def bound(self, old_var: relax.Var, new_var: relax.Var) -> None:
        """Hook: ``old_var``'s binding now lives on as ``new_var``."""

    def output(self, result):
        """Hook: the function's result expression (already remapped) before it is returned."""
        return result

    def emit(self, value, name: str) -> relax.Var:
        return self.bb.emit(value, name_hint=name)

    def rewrite_function(self, func: relax.Function) -> relax.Function:
        self.func = func
        self.bb = relax.BlockBuilder()
        attrs = {k: v for k, v in func.attrs.items()} if func.attrs is not None else None
        with self.bb.function(self.func_name, list(func.params), attrs=attrs):
            with self.bb.dataflow():
                for binding in bindings(func):
                    value = substitute(binding.value, self.remap)
                    new_value = self.visit(binding.var, value)
                    if new_value is None:  # the binding was absorbed into another one
                        continue
                    if not isinstance(new_value, relax.Var):
                        new_value = self.emit(new_value, binding.var.name)
                    self.remap[binding.var] = new_value
                    self.bound(binding.var, new_value)
                result = self.output(substitute(func.body.body, self.remap))
                out = self.bb.emit_output(result)
            self.bb.emit_func_output(out)
        return self.bb.get()[self.func_name]

    def __call__(self, mod: tvm.IRModule) -> tvm.IRModule:
        if self.func_name not in [gv.name_hint for gv in mod.get_global_vars()]:
            raise GraphError(f"module has no function {self.func_name!r}")
        new_func = self.rewrite_function(mod[self.func_name])
        out = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != self.func_name},
                           attrs=mod.attrs)
        out[self.func_name] = new_func
        return out


def module_attr(mod: tvm.IRModule, key: str, default=None):
    if mod.attrs is None or key not in mod.attrs:
        return default
    return mod.attrs[key]


class DuplicateRuleError(ValueError):
    """A second rule was registered for a key that already has one."""


def registrar(table: dict, key=lambda k: k, what: str = "rule"):
    """``register(*keys)``: a decorator filing a function in ``table`` under each key (one op,
    one rule; the pattern of Relay's register_annotate_function and Relax's register_legalize).
    A key registered twice is an error: two rules for one op would silently shadow each other."""

    def register(*keys):
        def wrap(fn):
            for k in keys:
                k = key(k)
                if k in table:
                    raise DuplicateRuleError(
                        f"{what} for {k!r} is already registered ({_rule_name(table[k])}); "
                        "unregister it first (del the table entry) to replace it")
                table[k] = fn
            return fn

        return wrap

    return register


def _rule_name(rule) -> str:
    fn = getattr(rule, "__wrapped__", rule)
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(rule)


def binding_name(name: str) -> str:
    """A layer name as a Relax binding name: the block builder turns '.' into '_', so the torch
    name "_blocks.0._depthwise_conv" and "_blocks_0__depthwise_conv" name the same layer."""
    return name.replace(".", "_")
