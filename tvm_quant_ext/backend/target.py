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
