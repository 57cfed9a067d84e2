"""Targets: what users write ('llvm', dicts, Target objects) as TVM 0.27 Target objects."""
from __future__ import annotations

from typing import Union

import tvm

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


def target_dict(target: tvm.target.Target) -> dict:
    """The target as a dict that ``tvm.target.Target`` accepts back (to derive variants)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(target.export()).items()}


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (``mcpu``): code built for it runs here. Code built
    for another vendor's CPU with the same vector features may not: LLVM uses SSE4a's
    ``insertq`` for ``znver4``, an illegal instruction on Intel's cores."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def host_target() -> dict:
    """An llvm target for this machine: its ``mcpu``, and AMX's features where the CPU and the
    kernel run AMX but LLVM's name for the CPU lacks them (a virtual machine may report an
    older model with the newer CPU's flags)."""
    from .cpu.amx import FEATURES, host_has_amx, target_has_amx

    target = {"kind": "llvm", "mcpu": host_cpu()}
    if host_has_amx() and not target_has_amx(tvm.target.Target(target)):
        target["mattr"] = ["+" + f for f in FEATURES]
    return target


def vnni_cpu() -> str:
    """An ``mcpu`` with AVX-512 VNNI to build the VNNI kernels for: this machine's own where it
    has VNNI (so the code also runs here), else ``znver4`` (compiled here, run elsewhere)."""
    from tvm.target import codegen

    host = host_cpu()
    has_vnni = codegen.target_has_features("avx512vnni", tvm.target.Target(
        {"kind": "llvm", "mcpu": host}))
    return host if has_vnni else "znver4"
