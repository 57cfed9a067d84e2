"""Where the sweep's tasks run: in this process (``InProcess``, one task after another, as a
plain run always did) or on a Dask cluster (``DaskTasks``): an existing one
(``--scheduler tcp://host:8786``) or a ``LocalCluster`` of N worker processes (``--workers N``).

Both offer the same three calls: ``submit(fn, *args, tag=, priority=)``, ``put(value)`` (a
value many tasks take, sent once to each worker) and ``completed()``, which yields
``(tag, result)`` as tasks finish and keeps going while the caller submits more. A worker that
dies mid-task (killed, out of memory) loses nothing: the scheduler runs its tasks again on
another worker.
"""
from __future__ import annotations

import heapq
import importlib.util
import itertools
import math
import os
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple

from .worker import WorkerCache

# A task may run once more than this after the worker running it died (Dask's default is 3).
ALLOWED_FAILURES = 3


class InProcess:
    """Tasks run here, highest priority first, then in submission order."""

    workers = 1
    dashboard = None

    def __init__(self, target="llvm"):
        self.cache = WorkerCache(target)  # ends with the sweep: nothing is kept between runs
        self.heap = []
        self.order = itertools.count()

    def submit(self, fn: Callable, *args, tag, priority: int = 0) -> None:
        heapq.heappush(self.heap, (-priority, next(self.order), fn, args, tag))

    def put(self, value):
        return value

    def completed(self) -> Iterator[Tuple[object, object]]:
        while self.heap:
            _, _, fn, args, tag = heapq.heappop(self.heap)
            yield tag, fn(*args, cache=self.cache)


class DaskTasks:
    """Tasks on a Dask cluster through ``client``; each worker keeps its own ``WorkerCache``."""

    def __init__(self, client):
        from distributed import as_completed

        self.client = client
        self.workers = max(1, len(client.scheduler_info()["workers"]))
        self.pending = as_completed([])
        self.tags = {}

    @property
    def dashboard(self) -> Optional[str]:
        if "dashboard" not in self.client.scheduler_info().get("services", {}):
            return None
        link = self.client.dashboard_link
        if importlib.util.find_spec("bokeh") is None:
            # the scheduler's web server runs, but its graphical pages need bokeh
            link += (" (plots need bokeh>=3.1 where the scheduler runs; without it "
                     + link.replace("/status", "/info/main/workers.html") + " lists the workers)")
        return link

    def submit(self, fn: Callable, *args, tag, priority: int = 0) -> None:
        future = self.client.submit(fn, *args, priority=priority, pure=False)
        self.tags[future.key] = tag
        self.pending.add(future)

    def put(self, value):
        # a copy on every worker, not one per task: tasks get a reference. Scattered to one
        # worker only, the value died with that worker and every task needing it was cancelled
        # ("lose scattered data, which can't be recovered") where a rerun was wanted
        return self.client.scatter([value], hash=False, broadcast=True)[0]

    def completed(self) -> Iterator[Tuple[object, object]]:
        for future in self.pending:
            tag = self.tags.pop(future.key)
            yield tag, future.result()  # a task's exception stops the sweep here


def default_shard(images: int, workers: int, batch: int, cap: int = 1000) -> int:
    """Images per evaluation task: about two tasks per worker and cell (so a slow or lost
    worker delays little), at most ``cap`` (a worker keeps a few ranges of images in memory)."""
    if workers <= 1:
        return max(images, batch)
    return max(batch, min(cap, math.ceil(images / (2 * workers))))


@contextmanager
def open_tasks(scheduler: Optional[str] = None, workers: Optional[int] = None, target="llvm",
               log: Callable[[str], None] = print, dashboard_address: str = ":8787"):
    """``InProcess`` without ``scheduler`` and ``workers``; else a Dask client (closed after)."""
    if scheduler and workers:
        raise ValueError("--scheduler and --workers: give one (an existing cluster, or a local one)")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: give at least 1")
    if not scheduler and not workers:
        yield InProcess(target)
        return
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        if workers:
            # one task per worker process; TVM's thread pool shares the cores between them
            threads = max(1, (os.cpu_count() or 1) // workers)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=dashboard_address,
                                   env={"TVM_NUM_THREADS": str(threads)})
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as err:
                raise ValueError(f"--scheduler {scheduler}: cannot connect ({err}); start one with "
                                 "`dask scheduler` and workers with `dask worker "
                                 f"{scheduler}`") from None
        try:
            tasks = DaskTasks(client)
            log(f"Dask scheduler {client.scheduler.address}, {tasks.workers} worker(s); dashboard: "
                + (tasks.dashboard or "none (the scheduler serves no web pages)"))
            yield tasks
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
