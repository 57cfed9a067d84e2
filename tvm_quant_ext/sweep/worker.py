"""The sweep's tasks, run by a Dask worker (or in this process): each gets names, paths,
configs and image ranges, loads the model and its images itself, and returns small results
(observer states, error terms, ``Counts``).

What tasks of one worker share lives in its ``WorkerCache``: the model, its runner (prepared
and annotated graphs), built modules by cell, fp32 logits and images by range, each bounded
(least recently used goes first), so a worker that gets many ranges of one cell builds it once.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ..backend.build import build
from ..config import QConfig
from ..passes import annotation_key
from ..passes.calibration_shards import ShardStatistics, auto_shard, observe_shard, result_from_arrays
from ..runner import QuantRunner, split_batches
from .cells import Cell, Counts, count
from .data import CALIB, EVAL, DataSpec, SweepModel, load_images, load_model

# Fault injection for the tests: when set to a file path, the first evaluation task to
# start (over all processes: the file is created exclusively) kills its process mid-cell.
CRASH_ONCE_ENV = "TVM_QUANT_EXT_SWEEP_CRASH_ONCE"


class Bounded:
    """A dict that keeps its ``limit`` most recently used entries."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: "OrderedDict[object, object]" = OrderedDict()

    def get(self, key, make: Callable[[], object]):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        self.items[key] = value
        while len(self.items) > self.limit:
            self.items.popitem(last=False)
        return value


class WorkerCache:
    """What one process keeps between tasks (keys hold everything the value depends on)."""

    def __init__(self, target="llvm"):
        self.target = target
        self.models = Bounded(2)
        self.runners = Bounded(2)
        self.annotated_builds = Bounded(2)
        self.compiled = Bounded(2)
        self.references = Bounded(64)
        self.images = Bounded(8)

    @staticmethod
    def _model_key(spec: DataSpec) -> tuple:
        return (spec.model, spec.params, spec.batch_size)

    def model(self, spec: DataSpec) -> SweepModel:
        return self.models.get(self._model_key(spec), lambda: load_model(spec.model, spec.batch_size, spec.params))

    def runner(self, spec: DataSpec) -> QuantRunner:
        def make():
            model = self.model(spec)
            # calibration comes from the driver (use_calibration): the runner reads no data
            return QuantRunner(model.mod, model.params, None, self.target, name=model.name)

        return self.runners.get(self._model_key(spec), make)

    def batches(self, spec: DataSpec, part: str, start: int, stop: int):
        """(model-sized batches, labels) of images ``start`` .. ``stop`` - 1 of ``part``."""
        def make():
            images, labels = load_images(self.model(spec), spec, part, start, stop)
            return split_batches(images, spec.batch_size), labels

        return self.images.get((spec, part, start, stop), make)

    def annotated_model(self, spec: DataSpec, config: QConfig):
        """(annotated module, its float build) for calibration."""
        runner = self.runner(spec)

        def make():
            annotated = runner.annotated(config)
            return annotated, build(annotated, self.target)

        return self.annotated_builds.get((self._model_key(spec), annotation_key(config)), make)

    def reference(self, spec: DataSpec, start: int, stop: int) -> np.ndarray:
        """The float model's logits on evaluated images ``start`` .. ``stop`` - 1."""
        def make():
            model = self.runners.get(("float",) + self._model_key(spec),
                                     lambda: self.runner(spec).float_model())
            batches, _ = self.batches(spec, EVAL, start, stop)
            return run(model, batches, spec.batch_size)

        return self.references.get((spec, start, stop), make)


def run(model, batches, batch: int) -> np.ndarray:
    outs = [np.asarray(model(x)).reshape(batch, -1) for x in batches]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


_PROCESS_CACHE: Dict[str, WorkerCache] = {}


def process_cache(target) -> WorkerCache:
    """This process's cache (a Dask worker keeps it between tasks)."""
    key = str(target)
    if key not in _PROCESS_CACHE:
        _PROCESS_CACHE[key] = WorkerCache(target)
    return _PROCESS_CACHE[key]


def calibrate_task(spec: DataSpec, config: QConfig, start: int, stop: int, target="llvm",
                   cache: Optional[WorkerCache] = None) -> Tuple[ShardStatistics, float]:
    """Observe calibration images ``start`` .. ``stop`` - 1: (observer states, seconds)."""
    cache = cache or process_cache(target)
    began = time.time()
    annotated, model = cache.annotated_model(spec, config)
    batches, _ = cache.batches(spec, CALIB, start, stop)
    return observe_shard(model, annotated, batches, config), time.time() - began


def auto_task(spec: DataSpec, config: QConfig, start: int, stop: int, states: Dict[str, dict],
              target="llvm", cache: Optional[WorkerCache] = None):
    """``auto``'s second pass over calibration images ``start`` .. ``stop`` - 1: (error terms,
    seconds)."""
    cache = cache or process_cache(target)
    began = time.time()
    _, model = cache.annotated_model(spec, config)
    batches, _ = cache.batches(spec, CALIB, start, stop)
    return auto_shard(model, batches, config, states), time.time() - began


def eval_task(cell: Cell, start: int, stop: int, calibration: Dict[str, np.ndarray], calibration_id: str,
              target="llvm", cache: Optional[WorkerCache] = None) -> Counts:
    """Evaluate ``cell`` on images ``start`` .. ``stop`` - 1; ``calibration``: its merged
    calibration as arrays (``calibration_id`` names it for the build cache)."""
    cache = cache or process_cache(target)
    seconds: Dict[str, float] = {}

    def make():
        runner = cache.runner(cell.spec)
        runner.use_calibration(cell.config, result_from_arrays(calibration))
        began = time.time()
        realized = runner.quantized(cell.config)
        seconds["quantize_s"] = time.time() - began
        began = time.time()
        compiled = build(realized, target)
        seconds["compile_s"] = time.time() - began
        return compiled

    compiled = cache.compiled.get((cell, calibration_id), make)
    reference = cache.reference(cell.spec, start, stop)
    batches, labels = cache.batches(cell.spec, EVAL, start, stop)
    began = time.time()
    logits = run(compiled, batches, cell.spec.batch_size)
    seconds["run_s"] = time.time() - began
    _maybe_crash()
    counts = count(logits, reference, labels)
    counts.seconds = seconds
    return counts


def _maybe_crash() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(70)  # as a killed worker: no exception, no result, the process is gone


def make_runner(model: SweepModel, data, target="llvm") -> QuantRunner:
    """A runner of ``model`` calibrating on ``data.calib`` (a ``SweepData`` in memory)."""
    return QuantRunner(model.mod, model.params, split_batches(data.calib, model.batch_size),
                       target, name=model.name)


def fp32_logits(runner: QuantRunner, data, batch: int) -> np.ndarray:
    """The float model's outputs on ``data.images``."""
    return run(runner.float_model(), split_batches(data.images, batch), batch)
