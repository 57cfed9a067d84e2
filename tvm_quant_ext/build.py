"""Compile a Relax module and call it with numpy arrays."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import tvm
from tvm import relax

TargetLike = Union[str, dict, tvm.target.Target]


def make_target(target: TargetLike) -> tvm.target.Target:
    """'llvm' / 'cuda' names, dicts ({"kind": "llvm", "mcpu": ...}) or Target objects."""
    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str):
        if " " in target or "-" in target:
            raise ValueError(f"target {target!r}: TVM 0.27 takes targets as dicts, e.g. "
                             "{'kind': 'llvm', 'mcpu': 'znver4'}; pass a dict")
        target = {"kind": target}
    return tvm.target.Target(target)


class CompiledModel:
    """A compiled Relax ``main``: call it with numpy arrays (positional or by input name)."""

    def __init__(self, executable, device, input_names: Sequence[str], input_shapes, input_dtypes):
        self.executable = executable
        self.device = device
        self.vm = relax.VirtualMachine(executable, device)
        self.input_names = list(input_names)
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.input_dtypes = list(input_dtypes)

    def __call__(self, *arrays, **named):
        if named:
            if arrays:
                raise TypeError("pass inputs either positionally or by name, not both")
            missing = [n for n in self.input_names if n not in named]
            if missing:
                raise TypeError(f"missing model input(s) {missing}; inputs are {self.input_names}")
            arrays = [named[n] for n in self.input_names]
        if len(arrays) != len(self.input_names):
            raise TypeError(f"model takes {len(self.input_names)} input(s) {self.input_names}, "
                            f"got {len(arrays)}")
        tensors = []
        for name, shape, dtype, array in zip(self.input_names, self.input_shapes,
                                             self.input_dtypes, arrays):
            array = np.ascontiguousarray(array, dtype=dtype)
            if array.shape != shape:
                raise ValueError(f"input {name!r}: shape {array.shape}, model expects {shape}")
            tensors.append(tvm.runtime.tensor(array, self.device))
        out = self.vm["main"](*tensors)
        return _to_numpy(out)


def _to_numpy(out):
    if hasattr(out, "numpy"):
        return out.numpy()
    return tuple(_to_numpy(o) for o in out)


def build(mod: tvm.IRModule, target: TargetLike = "llvm", device=None) -> CompiledModel:
    """Compile ``mod`` (its ``main``) for ``target`` and return a callable model."""
    tgt = make_target(target)
    main = mod["main"]
    names = [p.name for p in main.params]
    shapes = [tuple(int(d) for d in p.ty.shape) for p in main.params]
    dtypes = [str(p.ty.dtype) for p in main.params]
    with tgt:
        lowered = relax.get_pipeline("zero")(mod)
    executable = tvm.compile(lowered, tgt)
    if device is None:
        device = tvm.cpu(0) if tgt.kind.name == "llvm" else tvm.device(tgt.kind.name, 0)
    return CompiledModel(executable, device, names, shapes, dtypes)
