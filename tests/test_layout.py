"""The layout's promises, read from the source: no import circle between the project's files,
no file past the size where it starts to hold two jobs, no private name used across modules,
and every registry refusing a second rule for the same key."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tvm_quant_ext", "calibrate")
MAX_LINES = 400


def _module_files():
    """{dotted module name: path} of every .py file of the project's packages."""
    found = {}
    for package in PACKAGES:
        for folder, _dirs, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].endswith("__init__.py")


def _imports(module: str):
    """(imported project module, names taken from it) for every import statement of
    ``module``, at any depth (imports inside functions count: they run too)."""
    tree = ast.parse(open(MODULES[module]).read())
    package = module if _is_package(module) else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in MODULES:
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            others = [n for n in names if f"{target}.{n}" not in MODULES]
            for sub in submodules:
                yield sub, []
            if others:
                yield target, others


def _graph():
    return {m: sorted({t for t, _ in _imports(m) if t != m}) for m in MODULES}


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_walk_sees_the_pipeline():
    graph = _graph()
    # a walk that found nothing would pass the circle check vacuously
    assert "tvm_quant_ext.passes.realize.plan" in graph["tvm_quant_ext.passes.realize.simulate"]
    assert "tvm_quant_ext.backend.cpu.epilogue" in graph["tvm_quant_ext.backend.cpu.vnni"]
    assert "tvm_quant_ext.passes.realize.integer.layers" in graph[
        "tvm_quant_ext.passes.realize.integer"]


def test_cycle_finder_finds_a_planted_circle():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_no_file_is_too_long():
    long = {m: n for m, path in MODULES.items()
            if (n := sum(1 for _ in open(path))) > MAX_LINES}
    assert long == {}, f"files over {MAX_LINES} lines (split them by job): {long}"


def _private_uses(path: str):
    """Private names (``_x``, not dunders) one file takes from another project module, by
    ``from m import _x`` or ``m._x`` on an imported project module."""
    tree = ast.parse(open(path).read())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    aliases[alias.asname or alias.name] = full
                elif node.module in MODULES and alias.name.startswith("_") \
                        and not alias.name.startswith("__"):
                    yield f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            yield f"{aliases[node.value.id]}.{node.attr}"


def test_no_private_name_crosses_a_module():
    files = list(MODULES.values())
    for folder in ("scripts", "tests"):
        files += [os.path.join(ROOT, folder, f) for f in os.listdir(os.path.join(ROOT, folder))
                  if f.endswith(".py")]
    found = {os.path.relpath(p, ROOT): uses for p in files if (uses := sorted(set(_private_uses(p))))}
    assert found == {}
    # relative imports of private names between the package's own modules
    relative = {}
    for module in MODULES:
        for target, names in _imports(module):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != module:
                relative.setdefault(module, []).append((target, private))
    assert relative == {}


def test_a_rule_registered_twice_is_an_error():
    from tvm_quant_ext.graph import DuplicateRuleError
    from tvm_quant_ext.passes import register_annotate, register_integer, register_realize
    from tvm_quant_ext.config import QKind

    for register, key in ((register_annotate, "relax.nn.conv2d"), (register_integer, "relax.add"),
                          (register_realize, QKind.BIAS)):
        with pytest.raises(DuplicateRuleError, match="already registered"):
            register(key)(lambda *args: None)


def test_every_layer_op_is_one_table_entry_for_every_stage():
    from tvm_quant_ext.backend.cpu.layers import LAYER_KERNELS, register_layer
    from tvm_quant_ext.layer_ops import LAYER_OPS
    from tvm_quant_ext.passes import ANNOTATE_RULES, INTEGER_RULES

    for op in LAYER_OPS:
        assert op in ANNOTATE_RULES and op in INTEGER_RULES and op in LAYER_KERNELS
    with pytest.raises(ValueError, match="not a layer op"):
        register_layer("relax.nn.conv1d")


def test_quantize_is_one_sequential_of_the_stages():
    import tvm_quant_ext

    text = str(tvm_quant_ext.quantize_pipeline())
    stages = ["PrepareForQuantization", "NameLayers", "CanonicalizeBias", "Annotate",
              "Calibrate", "Realize"]
    positions = [text.index(f'name="{stage}"') for stage in stages]
    assert positions == sorted(positions)
