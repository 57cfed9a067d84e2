"""How many threads TVM's CPU thread pool gets: one per physical core unless the user says.

TVM sizes its pool as ``std::thread::hardware_concurrency() / 2`` on x86, assuming two
hyperthreads per core. On a machine with one thread per core (most cloud VMs, this project's
CI box) every compiled model then runs on half the cores: on 2 cores an int8 3x3 conv ran at
216 G MAC/s instead of 450. The pool reads ``TVM_NUM_THREADS`` when it is first used (the first
parallel kernel), not when ``tvm`` is imported, so setting it at import of this package is
early enough; a value the user set is left alone. ``runtime.config_threadpool`` does not
change the size of an existing pool in apache-tvm 0.27, so there is no later knob.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

ENV = "TVM_NUM_THREADS"


def physical_cores(cpus: Optional[Iterable[int]] = None) -> int:
    """Distinct physical cores among ``cpus`` (default: the CPUs this process may run on)."""
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    cores = set()
    for cpu in cpus:
        path = f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        try:
            with open(path) as f:
                cores.add(f.read().strip())
        except OSError:  # no sysfs topology (containers, non-Linux): count logical CPUs
            return max(1, len(cpus))
    return max(1, len(cores))


def default_thread_count() -> int:
    """What the pool will use: ``TVM_NUM_THREADS`` when set, else one thread per physical core."""
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"{ENV}={value!r} is not a whole number of threads") from None
        if count < 1:
            raise ValueError(f"{ENV}={value!r}: the thread count must be at least 1")
        return count
    return physical_cores()


def use_physical_cores() -> int:
    """Set ``TVM_NUM_THREADS`` to one thread per physical core when the user has not set it;
    return the count the pool will use."""
    count = default_thread_count()
    os.environ.setdefault(ENV, str(count))
    return count
