"""CUDA: dlight's default GPU schedules for every kernel of a lowered module."""
from __future__ import annotations

import tvm

from .target import target_dict


def gpu_schedule(lowered: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """dlight's default GPU schedules. They are chosen under an sm_61 view of the target: on
    sm >= 70 ``gpu.Matmul`` picks a WMMA schedule for int8 matmul/conv that fails to lower
    (GetWmmaFragmentSize in inject_software_pipeline); the sm_61 choice is a dp4a-friendly
    SIMT schedule that compiles for every later arch."""
    from tvm.s_tir import dlight as dl

    schedule_target = tvm.target.Target({**target_dict(target), "arch": "sm_61"})
    with schedule_target:
        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                   dl.gpu.GeneralReduction(), dl.gpu.Fallback())(lowered)
