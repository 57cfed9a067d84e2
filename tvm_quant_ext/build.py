"""Compile a Relax module and call it with numpy arrays."""
from __future__ import annotations

import os
import tempfile
from typing import Optional, Sequence, Union

import numpy as np
import tvm
from tvm import relax

from .cpu_schedule import default_cpu_schedule
from .fused import fuse_int8_layers
from .vnni import pack_int8_layers, target_has_vnni

TargetLike = Union[str, dict, tvm.target.Target]
MEASURE_TIMEOUT_S = 300      # MetaSchedule build / run timeout per candidate batch
EVOLUTIONARY_MIN_TRIALS = 32  # below this, tuning samples traces (ReplayTrace) instead


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


def build(mod: tvm.IRModule, target: TargetLike = "llvm", device=None, *, tune_trials: int = 0,
          tuning_db: Optional[str] = None, vnni: Optional[bool] = None,
          fuse: bool = True) -> CompiledModel:
    """Compile ``mod`` (its ``main``) for ``target`` and return a callable model.

    ``tune_trials``: MetaSchedule trials per tuning task (0: no tuning). Records go to the JSON
    database in the directory ``tuning_db`` (created; a temporary one when not given).
    ``tuning_db`` with ``tune_trials=0`` applies an existing database without tuning: tune once
    per target offline, build from the database afterwards. Functions the database does not
    cover keep the default (untuned) schedule.
    ``vnni``: run int8 conv2d/matmul on the AVX-512 VNNI kernel (``tvm_quant_ext.vnni``);
    default: when the llvm target has the feature (e.g. ``{"kind": "llvm", "mcpu": "znver4"}``).
    ``fuse`` (llvm targets): each int8 layer with its integer epilogue (bias, requantize,
    clip, cast) becomes one scheduled kernel (``tvm_quant_ext.fused``): conv2d/dense on VNNI
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
                                fuse=fuse)
    if device is None:
        device = tvm.cpu(0) if tgt.kind.name == "llvm" else tvm.device(tgt.kind.name, 0)
    return CompiledModel(executable, device, names, shapes, dtypes)


def compile_module(mod: tvm.IRModule, target: TargetLike, *, tune_trials: int = 0,
                   tuning_db: Optional[str] = None, vnni: Optional[bool] = None,
                   fuse: bool = True):
    """``build`` without the callable wrapper: the executable (``export_library``-able)."""
    tgt = make_target(target)
    lowered = lower(mod, tgt, vnni=vnni, fuse=fuse)
    if tgt.kind.name == "cuda":
        lowered = gpu_schedule(lowered, tgt)
    else:
        if tune_trials > 0 or tuning_db is not None:
            lowered = tune(lowered, tgt, tune_trials, tuning_db)
        lowered = default_cpu_schedule(lowered)  # what neither tuning nor a kernel scheduled
    return tvm.compile(lowered, tgt)


def lower(mod: tvm.IRModule, target: tvm.target.Target, *, vnni: Optional[bool] = None,
          fuse: bool = True) -> tvm.IRModule:
    """The fused int8 kernels (llvm), then the "zero" pipeline (legalize, fold, fuse)."""
    tgt = make_target(target)
    if vnni is None:
        vnni = target_has_vnni(tgt)
    if fuse and tgt.kind.name == "llvm":
        mod = fuse_int8_layers(mod, vnni=vnni)
    elif vnni:
        mod = pack_int8_layers(mod)
    with tgt:
        return relax.get_pipeline("zero")(mod)  # legalize, fold, fuse


def tune(lowered: tvm.IRModule, target: tvm.target.Target, trials_per_task: int,
         tuning_db: Optional[str]) -> tvm.IRModule:
    """Tune the fused TIR functions of ``lowered`` (when trials_per_task > 0) into the JSON
    database at ``tuning_db`` and apply what the database holds."""
    from tvm.s_tir import meta_schedule as ms

    if tuning_db is None:
        tuning_db = tempfile.mkdtemp(prefix="tvm_quant_ext_tune_")
    os.makedirs(tuning_db, exist_ok=True)
    if tune_target_needs_cores(target):
        target = tvm.target.Target({**_export(target), "num-cores": os.cpu_count() or 1})
    if trials_per_task > 0:
        extracted = [t for t in ms.relax_integration.extract_tasks(lowered, target)
                     if not _is_scheduled(t.dispatched[0])]
        if extracted:
            # With a few trials per task the evolutionary search's fixed cost (populations of
            # 2048 candidates scored by an XGBoost model) is minutes per task on 2 cores and
            # buys nothing; sampling traces from the design space is what small budgets need.
            evolutionary = trials_per_task >= EVOLUTIONARY_MIN_TRIALS
            strategy = "evolutionary" if evolutionary else "replay-trace"
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted, work_dir=tuning_db, strategy=strategy)
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=tuning_db,
                           max_trials_global=trials_per_task * len(contexts),
                           max_trials_per_task=trials_per_task,
                           num_trials_per_iter=min(64, trials_per_task),
                           cost_model="xgb" if evolutionary else "random",  # xgb: pip extra "tune"
                           # worker processes import TVM; on a loaded 2-core box that alone
                           # exceeds the 30 s default and every candidate "fails to build"
                           builder=ms.builder.LocalBuilder(f_build=build_candidate,
                                                           timeout_sec=MEASURE_TIMEOUT_S),
                           runner=ms.runner.LocalRunner(timeout_sec=MEASURE_TIMEOUT_S))
    database = ms.database.JSONDatabase(work_dir=tuning_db)
    with target, database:
        return relax.transform.MetaScheduleApplyDatabase()(lowered)


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params=None):
    """MetaSchedule's default candidate build minus its ``import tvm.s_tir.tensor_intrin``:
    the builder starts fresh worker processes for every batch of candidates, and that import
    parses every target's intrinsics (25 s idle, 80+ s on a loaded 2-core box) in each worker.
    Candidates arrive already tensorized, so the registry is not needed to compile them."""
    from tvm.driver import build as tir_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tir_build(mod, target=target)


def _is_scheduled(mod: tvm.IRModule) -> bool:
    """Hand-scheduled kernels (the VNNI conv) carry tirx.is_scheduled; MetaSchedule's own check
    looks at the module's attributes, not the function's, and would try to tune them."""
    return any(bool(f.attrs.get("tirx.is_scheduled", False)) for f in mod.functions.values()
               if f.attrs is not None)


def tune_target_needs_cores(target: tvm.target.Target) -> bool:
    return target.kind.name == "llvm" and "num-cores" not in _export(target)


def _export(target: tvm.target.Target) -> dict:
    """The target as a dict that ``tvm.target.Target`` accepts back."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(target.export()).items()}


def gpu_schedule(lowered: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """dlight's default GPU schedules. They are chosen under an sm_61 view of the target: on
    sm >= 70 ``gpu.Matmul`` picks a WMMA schedule for int8 matmul/conv that fails to lower
    (GetWmmaFragmentSize in inject_software_pipeline); the sm_61 choice is a dp4a-friendly
    SIMT schedule that compiles for every later arch."""
    from tvm.s_tir import dlight as dl

    schedule_target = tvm.target.Target({**_export(target), "arch": "sm_61"})
    with schedule_target:
        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                   dl.gpu.GeneralReduction(), dl.gpu.Fallback())(lowered)
