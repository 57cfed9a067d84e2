"""Compile a Relax module for a target and call it with numpy arrays."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tvm
from tvm import relax

from .cpu.tir_pipeline import PIPELINE as CPU_TIR_PIPELINE
from .cpu.fuse import fuse_int8_layers, pack_int8_layers
from .cpu.pointwise import depthwise_1x1_as_multiply
from .cpu.schedule import default_cpu_schedule
from .cpu.wide_weights import split_wide_weights
from .cpu.amx import target_has_amx
from .cpu.vnni import VNNI, dot_isa
from .cuda import gpu_schedule
from .target import TargetLike, make_target
from .tune import tune


class NoDeviceError(RuntimeError):
    """The model was compiled for a device this machine does not have."""


class CompiledModel:
    """A compiled Relax ``main``: call it with numpy arrays (positional or by input name).

    The virtual machine is made on the first call, so a model compiled for a device this
    machine lacks (CUDA on a CPU-only box) can still be exported with :meth:`export_library`.
    """

    def __init__(self, executable, device, input_names: Sequence[str], input_shapes, input_dtypes):
        self.executable = executable
        self.device = device
        self._vm = None
        self.input_names = list(input_names)
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.input_dtypes = list(input_dtypes)

    def _require_device(self) -> None:
        if not self.device.exist:
            kind = str(self.device).split(":")[0]  # "cuda:0" -> "cuda"
            raise NoDeviceError(
                f"no {kind} device on this machine: the model is compiled for {kind}; "
                "save it with export_library(path) and run it where that device is")

    @property
    def vm(self) -> relax.VirtualMachine:
        if self._vm is None:
            self._require_device()
            self._vm = relax.VirtualMachine(self.executable, self.device)
        return self._vm

    def export_library(self, path: str) -> None:
        """Write the compiled module as a shared library (``tvm.runtime.load_module`` reads it)."""
        self.executable.export_library(path)

    def __call__(self, *arrays, **named):
        self._require_device()
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


def build(mod: tvm.IRModule, target: TargetLike = "llvm", device=None, *, tune_trials: int = 0,
          tuning_db: Optional[str] = None, vnni: Optional[bool] = None,
          amx: Optional[bool] = None, fuse: bool = True) -> CompiledModel:
    """Compile ``mod`` (its ``main``) for ``target`` and return a callable model.

    ``tune_trials``: MetaSchedule trials per tuning task (0: no tuning). Records go to the JSON
    database in the directory ``tuning_db`` (created; a temporary one when not given).
    ``tuning_db`` with ``tune_trials=0`` applies an existing database without tuning: tune once
    per target offline, build from the database afterwards. Functions the database does not
    cover keep the default (untuned) schedule.
    ``vnni``: run int8 conv2d/matmul on the packed kernel of ``backend.cpu.vnni``, on AVX-512
    VNNI where the llvm target has it (e.g. ``{"kind": "llvm", "mcpu": "znver4"}``), else on
    AVX2's ``vpmaddwd`` (``backend.cpu.avx2``, e.g. ``"mcpu": "haswell"``); default: when the
    target has either (``False``: TVM's legalized loops).
    ``amx``: a conv2d whose input comes from another int8 layer runs on Intel AMX tiles
    (``backend.cpu.amx``); default: when the target has amx-tile and amx-int8 (``"mcpu":
    "sapphirerapids"``, or ``"mattr": ["+amx-tile", "+amx-int8"]``; ``target.host_target()``
    adds them on a machine that runs AMX).
    ``fuse`` (llvm targets): each int8 layer with its integer epilogue (bias, requantize,
    clip, cast) becomes one scheduled kernel (``backend.cpu.fuse``): conv2d/dense on VNNI
    when ``vnni``, depthwise conv2d always; ``fuse=False`` keeps the unfused graph (the VNNI
    kernel then writes int32 and the epilogue runs as separate kernels).
    CUDA targets get dlight's default GPU schedules.
    """
    tgt = make_target(target)
    main = mod["main"]
    names = [p.name for p in main.params]
    shapes = [tuple(int(d) for d in p.ty.shape) for p in main.params]
    dtypes = [str(p.ty.dtype) for p in main.params]
    executable = compile_module(mod, tgt, tune_trials=tune_trials, tuning_db=tuning_db, vnni=vnni,
                                amx=amx, fuse=fuse)
    if device is None:
        device = tvm.cpu(0) if tgt.kind.name == "llvm" else tvm.device(tgt.kind.name, 0)
    return CompiledModel(executable, device, names, shapes, dtypes)


def compile_module(mod: tvm.IRModule, target: TargetLike, *, tune_trials: int = 0,
                   tuning_db: Optional[str] = None, vnni: Optional[bool] = None,
                   amx: Optional[bool] = None, fuse: bool = True):
    """``build`` without the callable wrapper: the executable (``export_library``-able)."""
    tgt = make_target(target)
    lowered = lower(mod, tgt, vnni=vnni, amx=amx, fuse=fuse)
    if tgt.kind.name == "cuda":
        return tvm.compile(gpu_schedule(lowered, tgt), tgt)
    if tune_trials > 0 or tuning_db is not None:
        lowered = tune(lowered, tgt, tune_trials, tuning_db)
    lowered = default_cpu_schedule(lowered)  # what neither tuning nor a kernel scheduled
    return tvm.compile(lowered, tgt, tir_pipeline=CPU_TIR_PIPELINE)


def lower(mod: tvm.IRModule, target: tvm.target.Target, *, vnni: Optional[bool] = None,
          amx: Optional[bool] = None, fuse: bool = True) -> tvm.IRModule:
    """The fused int8 kernels (llvm), then the "zero" pipeline (legalize, fold, fuse)."""
    tgt = make_target(target)
    isa = dot_isa(tgt)
    if vnni is None:
        vnni = isa is not None
    if amx is None:
        amx = target_has_amx(tgt)
    elif amx and not target_has_amx(tgt):
        raise ValueError(f"amx=True, but the target {tgt} lacks amx-tile / amx-int8: add "
                         "\"mattr\": [\"+amx-tile\", \"+amx-int8\"] or an mcpu with them")
    if fuse and tgt.kind.name == "llvm":
        mod = fuse_int8_layers(depthwise_1x1_as_multiply(split_wide_weights(mod)), vnni=vnni,
                               amx=amx, isa=isa or VNNI)
    elif vnni:
        mod = pack_int8_layers(mod, isa or VNNI)
    with tgt:
        return relax.get_pipeline("zero")(mod)  # legalize, fold, fuse
