"""Driver <-> worker protocol: one JSON object per line over the worker's stdin / stdout.

A worker holds one runtime session (one row of the table). Between requests it sleeps blocked
on ``stdin.readline()``, so while the driver times one worker the others compute nothing: that
is what keeps one runtime's thread pool from slowing another (TVM's workers keep spinning after
a call; ONNX Runtime timed in the same process as TVM read 8.0 ms instead of 3.1).

Requests: ``{"cmd": "load", "spec": {...}}`` -> ``{"ok": true, "info": {...}}``;
``{"cmd": "run", "runs": n, "warmup": k}`` -> ``{"ok": true, "ms": [n times]}``;
``{"cmd": "quit"}``. A failure answers ``{"ok": false, "error": "..."}``.

Stdlib only: the OpenVINO worker imports this under the bench venv's python.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

Runner = Callable[[], object]
Loader = Callable[[dict], Tuple[Runner, Dict[str, object]]]


def time_runs(run: Runner, runs: int, warmup: int) -> List[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def serve(load: Loader) -> None:
    """The worker's loop: answer requests until "quit" or end of input."""
    # libraries print to stdout (NNCF's progress bars, TVM's warnings): keep the real stdout for
    # the protocol and send everything else written to fd 1 to stderr (the worker's log)
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    run: Optional[Runner] = None

    def reply(**fields):
        channel.write(json.dumps(fields) + "\n")

    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.get("cmd")
        try:
            if cmd == "quit":
                break
            if cmd == "load":
                start = time.perf_counter()
                run, info = load(request["spec"])
                info["load_s"] = time.perf_counter() - start
                # first call (allocations, lazy compilation) and a few warm calls: the driver
                # sizes its blocks from the warm time
                info["first_ms"] = time_runs(run, 1, 0)[0]
                warm = time_runs(run, 2 if info["first_ms"] > 2000 else 5, 0)
                info["warm_ms"] = sorted(warm)[len(warm) // 2]
                reply(ok=True, info=info)
            elif cmd == "run":
                if run is None:
                    raise RuntimeError("'run' before a successful 'load'")
                reply(ok=True, ms=time_runs(run, int(request["runs"]), int(request["warmup"])))
            else:
                raise ValueError(f"unknown request {cmd!r}")
        except Exception as exc:  # the driver reports it in the row; the worker stays usable
            tail = traceback.format_exc().strip().splitlines()[-6:]
            print("\n".join(tail), file=sys.stderr, flush=True)
            reply(ok=False, error=f"{type(exc).__name__}: {exc}".strip()[:400])


class WorkerError(RuntimeError):
    """A worker failed, died or did not answer in time."""


class Worker:
    """One worker process (``python -m module``), its log file, and request / reply."""

    def __init__(self, python: str, module: str, env: Dict[str, str], cwd: str, log_path: str):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([python, "-m", module], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=cwd,
                                     text=True, bufsize=1)

    def log_tail(self, lines: int = 3) -> str:
        self.log.flush()
        with open(self.log_path) as f:
            tail = [line.strip() for line in f.read().strip().splitlines()[-lines:]]
        return " / ".join(tail)

    def call(self, timeout_s: float, **request) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"worker exited (rc {self.proc.poll()}): {self.log_tail()}")
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.close(kill=True)
            raise WorkerError(f"no answer to {request['cmd']!r} within {timeout_s:.0f} s "
                              f"(log {self.log_path})")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker exited (rc {self.proc.wait()}): {self.log_tail()}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerError(answer.get("error", "unknown error"))
        return answer

    def close(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                try:
                    self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                    self.proc.stdin.flush()
                except BrokenPipeError:
                    pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
