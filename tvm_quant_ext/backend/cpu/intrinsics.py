"""Tensor intrinsics registered on first use: parsing their TVMScript at import would slow
every import of the package."""
from __future__ import annotations

from typing import Callable, Set

from tvm.s_tir import TensorIntrin

_registered: Set[str] = set()


def ensure_registered(name: str, functions: Callable) -> None:
    """Register ``name`` with the (description, implementation) ``functions()`` returns, once."""
    if name not in _registered:
        TensorIntrin.register(name, *functions(), override=True)
        _registered.add(name)
