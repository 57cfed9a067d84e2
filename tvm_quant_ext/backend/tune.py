"""MetaSchedule tuning into a reusable JSON database, and applying a database to a build.

Tuning is offline work (a proper tune is hours on 2 cores): tune once per target into a
database directory, then build from it with ``tune_trials=0``.
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional

import tvm
from tvm import relax

from .cpu.schedule import is_scheduled
from .target import target_dict

MEASURE_TIMEOUT_S = 300      # MetaSchedule build / run timeout per candidate batch
EVOLUTIONARY_MIN_TRIALS = 32  # below this, tuning samples traces (ReplayTrace) instead


def tune(lowered: tvm.IRModule, target: tvm.target.Target, trials_per_task: int,
         tuning_db: Optional[str]) -> tvm.IRModule:
    """Tune the fused TIR functions of ``lowered`` (when trials_per_task > 0) into the JSON
    database at ``tuning_db`` and apply what the database holds."""
    from tvm.s_tir import meta_schedule as ms

    if tuning_db is None:
        tuning_db = tempfile.mkdtemp(prefix="tvm_quant_ext_tune_")
    os.makedirs(tuning_db, exist_ok=True)
    if tune_target_needs_cores(target):
        target = tvm.target.Target({**target_dict(target), "num-cores": os.cpu_count() or 1})
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
    return any(is_scheduled(f) for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


def tune_target_needs_cores(target: tvm.target.Target) -> bool:
    return target.kind.name == "llvm" and "num-cores" not in target_dict(target)
