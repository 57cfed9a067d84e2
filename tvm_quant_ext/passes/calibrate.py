"""calibrate: run the float model over the dataset and observe every activation point.

Observers stream (``calibrate`` package): one batch of activations is alive at a time.
Weights and biases need no data; realize quantizes them from their constants.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import tvm

from calibrate import CalibrationError, Observer, make_observer

from ..build import build
from ..config import QConfig, QKind
from ..points import collect_points, get_state, set_state


def iter_batches(dataset: Iterable, input_names, input_shapes):
    """Yield lists of arrays matching the model inputs from dicts or arrays.

    An item whose leading dimension is a multiple of the model's batch is split into
    model-sized batches.
    """
    for index, item in enumerate(dataset):
        if isinstance(item, dict):
            missing = [n for n in input_names if n not in item]
            if missing:
                raise ValueError(f"dataset item {index}: missing input(s) {missing}; "
                                 f"the model's inputs are {list(input_names)}")
            arrays = [np.asarray(item[n]) for n in input_names]
        else:
            if len(input_names) != 1:
                raise ValueError(f"dataset item {index}: an array was given but the model has "
                                 f"inputs {list(input_names)}; give a dict")
            arrays = [np.asarray(item)]
        for name, array, shape in zip(input_names, arrays, input_shapes):
            if array.shape == tuple(shape):
                continue
            if (array.ndim == len(shape) and array.shape[1:] == tuple(shape[1:])
                    and array.shape[0] % shape[0] == 0):
                continue
            if array.shape == tuple(shape[1:]) and shape[0] == 1:
                continue
            raise ValueError(f"dataset item {index}: input {name!r} has shape {array.shape}, "
                             f"the model expects {tuple(shape)}")
        arrays = [a.reshape(shape) if a.shape == tuple(shape[1:]) else a
                  for a, shape in zip(arrays, input_shapes)]
        n = arrays[0].shape[0] // input_shapes[0][0]
        step = input_shapes[0][0]
        for k in range(n):
            yield [a[k * step:(k + 1) * step] for a in arrays]


def run_calibration(mod: tvm.IRModule, dataset: Iterable, config: QConfig,
                    target="llvm") -> Dict[str, Observer]:
    """Observers (one per INPUT/ACTIVATION point) after running ``dataset`` through ``mod``."""
    if dataset is None:
        raise ValueError("calibration needs a dataset (an iterable of input dicts or arrays)")
    state = get_state(mod)
    observers: Dict[str, Observer] = {
        pid: make_observer(config.calibrate_mode, point=pid)
        for pid, p in state.points.items() if p.kind in (QKind.INPUT.value, QKind.ACTIVATION.value)
    }
    model = build(mod, target)

    def sink(point_id, array):
        observer = observers.get(point_id)
        if observer is not None:
            observer.observe(array)

    batches = 0
    with collect_points(sink):
        for arrays in iter_batches(dataset, model.input_names, model.input_shapes):
            for name, array in zip(model.input_names, arrays):
                if not np.all(np.isfinite(array)):
                    raise CalibrationError(f"calibration input {name!r} (batch {batches}) "
                                           "contains NaN or Inf")
            model(*arrays)
            batches += 1
    if batches == 0:
        raise CalibrationError("calibration dataset is empty: give at least one input batch")
    return observers


def attach_scales(mod: tvm.IRModule, observers: Dict[str, Observer], config: QConfig) -> tvm.IRModule:
    """Store one scale per activation point (from its observer) on the module."""
    state = get_state(mod)
    for pid in (p.id for p in state.points.values()
                if p.kind in (QKind.INPUT.value, QKind.ACTIVATION.value)):
        observer = observers.get(pid)
        if observer is None or observer.count == 0:
            raise CalibrationError(f"quantization point {pid!r} was never reached during "
                                   "calibration")
        scale, zero_point = observer.compute_qparams(config.nbit_input, config.activation_symmetric)
        state.activation_scales[pid] = float(scale)
        state.activation_zero_points[pid] = int(zero_point)
    state.calibration = {"calibrate_mode": config.calibrate_mode,
                         "batches": max((o.count for o in observers.values()), default=0)}
    return set_state(mod, state)


def calibrate(mod: tvm.IRModule, dataset: Iterable, config: Optional[QConfig] = None,
              target="llvm") -> tvm.IRModule:
    """Annotated module -> the same module carrying one scale per activation point."""
    config = config or QConfig()
    return attach_scales(mod, run_calibration(mod, dataset, config, target), config)


def Calibrate(dataset: Iterable, config: Optional[QConfig] = None):  # pylint: disable=invalid-name
    @tvm.transform.module_pass(opt_level=0, name="Calibrate")
    def _pass(mod, _ctx):
        return calibrate(mod, dataset, config)

    return _pass
