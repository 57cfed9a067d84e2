"""The grid's driver: plan every cell, run calibration and evaluation as tasks (in this
process or on a Dask cluster, ``cluster.py``), and write each cell's row as soon as its last
image range is in.

Per model: a ``describe_task`` (on a worker: the model and data sizes), then per calibration
key either the disk cache's result or ``calibrate_task`` per shard of the calibration images
(merged here; ``auto`` adds a second round of ``auto_task``), then ``eval_task`` per cell and
image range. Results are kept by (cell, range): a task the scheduler re-runs after a worker
died replaces nothing and adds nothing twice. Cells found in ``done`` (rows of an earlier,
interrupted run) are not computed again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from ..passes import calibration_key
from ..passes.calibration_shards import finish_auto, merge_shards, needs_auto_pass, result_arrays
from .calib_cache import CalibrationCache, cache_key
from .cells import MATCHED, Cell, Counts, grid_configs, ranges, row
from .cluster import InProcess, default_shard
from .data import DataSpec, check_inputs, extent, dataset_name
from .worker import auto_task, calibrate_task, eval_task, process_cache


def describe_task(spec: DataSpec, target="llvm", cache=None):
    """(dataset name, evaluated images, (calibration images, offset)) of ``spec``."""
    model = (cache or process_cache(target)).model(spec)
    (n_eval, _), calib = extent(model, spec)
    return dataset_name(model, spec), n_eval, calib


@dataclass
class Calibration:
    """One calibration key of one model, and the cells waiting for it."""

    spec: DataSpec
    config: object
    key: str
    shards: list
    cells: List[Cell] = field(default_factory=list)
    parts: Dict[int, object] = field(default_factory=dict)
    seconds: float = 0.0
    result: object = None


class Driver:
    def __init__(self, tasks, configs, done, cache: CalibrationCache, target, shard_images,
                 on_row, bar):
        self.tasks, self.configs, self.done, self.cache = tasks, configs, done, cache
        self.target, self.shard_images, self.on_row, self.bar = target, shard_images, on_row, bar
        self.cells: Dict[str, List[Cell]] = {}        # model -> its cells, in grid order
        self.counts: Dict[str, Dict[int, Counts]] = {}  # cell key -> range index -> counts
        self.eval_ranges: Dict[str, list] = {}        # model -> image ranges
        self.rows: Dict[str, Dict] = {}
        self.calib_images: Dict[str, int] = {}

    def start(self, specs: Sequence[DataSpec]) -> None:
        for index, spec in enumerate(specs):
            # earlier models first: in one process a model is finished before the next loads
            base = -index * 1_000_000
            self.tasks.submit(describe_task, spec, self.target, tag=("describe", spec, base),
                              priority=base)

    def run(self) -> None:
        for tag, result in self.tasks.completed():
            getattr(self, "on_" + tag[0])(tag, result)

    def on_describe(self, tag, result) -> None:
        _, spec, priority = tag
        dataset, n_eval, (n_calib, _) = result
        cells = [Cell(spec, config, dataset) for config in self.configs]
        self.cells[spec.model] = cells
        self.calib_images[spec.model] = n_calib
        todo = [c for c in cells if c.key not in self.done]
        if not todo:
            return
        self.eval_ranges[spec.model] = ranges(n_eval, self.shard_images or default_shard(
            n_eval, self.tasks.workers, spec.batch_size), spec.batch_size)
        if not self.eval_ranges[spec.model]:
            raise ValueError(f"{spec.model}: {n_eval} image(s) is less than one batch of {spec.batch_size}")
        # the bar counts images of cells still to compute; it grows as models are described
        self.bar.total += len(todo) * sum(b - a for a, b in self.eval_ranges[spec.model])
        self.bar.refresh()
        calib_ranges = ranges(n_calib, -(-n_calib // self.tasks.workers), spec.batch_size)
        if not calib_ranges:
            raise ValueError(f"{spec.model}: {n_calib} calibration image(s) is less than one batch "
                             f"of {spec.batch_size}")
        groups: Dict[tuple, Calibration] = {}
        for cell in todo:
            key = calibration_key(cell.config)
            if key not in groups:
                groups[key] = Calibration(spec, cell.config, cache_key(spec, (result[2][1], n_calib),
                                                                       cell.config, self.target), calib_ranges)
            groups[key].cells.append(cell)
        for group in groups.values():
            group.result = self.cache.get(spec.model, group.key)
            if group.result is not None:
                self.evaluate(group, priority)
                continue
            for index, (start, stop) in enumerate(calib_ranges):
                self.tasks.submit(calibrate_task, spec, group.config, start, stop, self.target,
                                  tag=("calibrated", group, index, priority), priority=priority)

    def on_calibrated(self, tag, result) -> None:
        _, group, index, priority = tag
        group.parts[index], seconds = result
        group.seconds += seconds
        if len(group.parts) < len(group.shards):
            return
        group.result = merge_shards([group.parts[i] for i in range(len(group.shards))])
        group.parts = {}
        states = needs_auto_pass(group.result)
        if not states:
            return self.calibrated(group, priority)
        states = self.tasks.put(states)
        for i, (start, stop) in enumerate(group.shards):
            self.tasks.submit(auto_task, group.spec, group.config, start, stop, states, self.target,
                              tag=("auto", group, i, priority), priority=priority)

    def on_auto(self, tag, result) -> None:
        _, group, index, priority = tag
        group.parts[index], seconds = result
        group.seconds += seconds
        if len(group.parts) == len(group.shards):
            finish_auto(group.result, group.config, [group.parts[i] for i in range(len(group.shards))])
            self.calibrated(group, priority)

    def calibrated(self, group: Calibration, priority: int) -> None:
        self.cache.put(group.spec.model, group.key, group.result)
        self.evaluate(group, priority)

    def evaluate(self, group: Calibration, priority: int) -> None:
        arrays = self.tasks.put(result_arrays(group.result))
        order = self.cells[group.spec.model]
        for cell in group.cells:
            self.counts[cell.key] = {}
            # cells in grid order: a worker finishes one cell's ranges before the next cell's,
            # so it holds few built modules and rows arrive steadily
            cell_priority = priority - 1 - order.index(cell)
            for index, (start, stop) in enumerate(self.eval_ranges[cell.spec.model]):
                self.tasks.submit(eval_task, cell, start, stop, arrays, group.key, self.target,
                                  tag=("evaluated", cell, index, group.seconds), priority=cell_priority)

    def on_evaluated(self, tag, counts: Counts) -> None:
        _, cell, index, calibrate_s = tag
        mine = self.counts[cell.key]
        mine[index] = counts  # by range: a re-run task cannot count twice
        rng = self.eval_ranges[cell.spec.model][index]
        self.bar.update(rng[1] - rng[0])
        if len(mine) < len(self.eval_ranges[cell.spec.model]):
            return
        total = Counts(seconds={"calibrate_s": calibrate_s})
        for i in range(len(mine)):
            total = total + mine[i]
        del self.counts[cell.key]
        self.rows[cell.key] = row(cell, total, self.calib_images[cell.spec.model])
        if self.on_row:
            self.on_row(self.rows[cell.key])
        self.bar.set_postfix_str(f"{len(self.rows)} cell(s) done, last {cell.key}")


def sweep(models: Sequence[str], nbit_bias: Sequence[int], calibrators: Sequence[str],
          granularities: Sequence[bool], *, params: Optional[str] = None, data: Optional[str] = None,
          num_images: int = 3000, calib_images: int = 100, batch_size: int = 1,
          weight_scale: str = MATCHED, mode: str = "simulate", target="llvm", progress: bool = True,
          on_row: Optional[Callable[[Dict], None]] = None, tasks=None, shard_images: Optional[int] = None,
          calib_cache: Optional[str] = None, done: Optional[Dict[str, Dict]] = None) -> List[Dict[str, object]]:
    """Every cell of models x calibrators x granularities x nbit_bias, one row each, in that
    order. ``tasks``: where tasks run (``cluster.open_tasks``; default this process);
    ``done``: rows by cell key already measured (skipped, returned as they are);
    ``calib_cache``: a folder of cached calibrations (None: none)."""
    from tqdm import tqdm

    configs = grid_configs(nbit_bias, calibrators, granularities, weight_scale, mode)
    for name in models:  # every input checked before the first task
        check_inputs(name, params, data)
    specs = [DataSpec(name, os.path.abspath(params) if params else None,
                      os.path.abspath(data) if data else None, num_images, calib_images, batch_size)
             for name in models]
    done = dict(done or {})
    bar = tqdm(total=0, desc="sweep", unit="image", disable=not progress)
    driver = Driver(tasks or InProcess(target), configs, done, CalibrationCache(calib_cache), target,
                    shard_images, on_row, bar)
    driver.start(specs)
    try:
        driver.run()
    finally:
        bar.close()
    measured = {**done, **driver.rows}
    return [measured[c.key] for s in specs for c in driver.cells[s.model]]
