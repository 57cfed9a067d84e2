"""The TIR pipeline CPU modules are compiled with: TVM's default lowering, then this project's
rewrites of what LLVM would otherwise compile badly (``high_half.py``: the Q31 multiplies'
high halves; ``stack_buffers.py``: register blocks on the stack). Registered with TVM under
``PIPELINE``; ``backend.build`` and ``scripts/profile_kernels.py`` pass that name to
``tvm.compile``."""
from __future__ import annotations

import tvm
from tvm.tirx import compilation_pipeline

from .high_half import rewrite_high_half
from .stack_buffers import small_buffers_on_stack

PIPELINE = "tvm_quant_ext_cpu"


def _pipeline():
    lower, finalize_host, finalize_device = compilation_pipeline.get_tir_pipeline("s_tir")
    rewrites = tvm.transform.Sequential([lower, rewrite_high_half, small_buffers_on_stack])
    return rewrites, finalize_host, finalize_device


compilation_pipeline.register_tir_pipeline(PIPELINE, _pipeline)
