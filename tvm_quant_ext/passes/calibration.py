"""calibration: run the float model over the dataset and observe every activation point.

Observers stream (the top-level ``calibrate`` package): one batch of activations is alive at a
time. Each point's calibrator is ``QConfig.calibrate_mode`` or its layer's override
(``calibrators.py``); ``auto`` points keep a histogram, and a second pass measures every
calibrator's error on the real tensors. Weights and biases need no data; realize quantizes
them from their constants (``calibrators.weight_scale_for``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional

import numpy as np
import tvm

from calibrate import OBSERVERS, CalibrationError, HistogramObserver, Observer, make_observer

from .. import qmath
from ..backend.build import build
from ..config import AUTO, QConfig, QKind
from ..points import collect_points, get_state, set_state
from .annotate import annotation_key
from .calibrators import assign_calibrators, candidate_qparams, least_error, observer_kwargs

ACTIVATION_KINDS = (QKind.INPUT.value, QKind.ACTIVATION.value)


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


@dataclass
class CalibrationResult:
    """What a calibration run learned: one observer per INPUT/ACTIVATION point (already the
    chosen calibrator's), the calibrator name per point, and for ``auto`` the measured error
    of every candidate."""

    observers: Dict[str, Observer]
    calibrators: Dict[str, str]
    auto_errors: Dict[str, Dict[str, float]] = field(default_factory=dict)
    batches: int = 0


def calibration_key(config: QConfig) -> tuple:
    """The QConfig fields that decide what calibration observes (and annotate's point
    placement): configs with equal keys can share one ``run_calibration`` result."""
    return annotation_key(config) + (
        config.calibrate_mode, config.layer_calibrate_mode, config.calibrate_percentile,
        config.global_scale, config.nbit_input, config.activation_symmetric)


def run_calibration(mod: tvm.IRModule, dataset: Iterable, config: QConfig,
                    target="llvm") -> CalibrationResult:
    """Run ``dataset`` through ``mod`` once, streaming every INPUT/ACTIVATION tensor into its
    observer; ``auto`` points then take a second pass that measures each calibrator's error.
    With no dataset, every point's calibrator must be one that reads no data (global_scale)."""
    state = get_state(mod)
    calibrators = assign_calibrators(state, ACTIVATION_KINDS, config.calibrate_mode,
                                     config.layer_calibrate_mode, "layer_calibrate_mode")
    if dataset is None:
        need_data = sorted({name for name in calibrators.values()
                            if name == AUTO or OBSERVERS[name].reads_data})
        if need_data:
            raise ValueError("calibration needs a dataset (an iterable of input dicts or arrays): "
                             f"calibrator(s) {need_data} read the data; only "
                             "calibrate_mode='global_scale' needs none")
        # like relay's global_scale, nothing is run: every range is fixed in advance
        return CalibrationResult({pid: make_observer(name, point=pid, **observer_kwargs(name, config))
                                  for pid, name in calibrators.items()}, calibrators)
    if AUTO in calibrators.values() and iter(dataset) is dataset:
        raise ValueError("calibrate_mode='auto' reads the calibration data twice: pass a list "
                         "(or another re-iterable), not an iterator or generator")
    observers: Dict[str, Observer] = {
        # auto keeps a histogram: every candidate calibrator is computed from it
        pid: (HistogramObserver(point=pid) if name == AUTO
              else make_observer(name, point=pid, **observer_kwargs(name, config)))
        for pid, name in calibrators.items()
    }
    model = build(mod, target)
    batches = _stream(model, dataset, observers)
    result = CalibrationResult(observers, calibrators, batches=batches)
    auto = [pid for pid, name in calibrators.items() if name == AUTO]
    if auto:
        _choose_auto(model, dataset, config, result, auto)
    return result


def _stream(model, dataset, observers: Dict[str, Observer]) -> int:
    def sink(point_id, array):
        observer = observers.get(point_id)
        if observer is not None:
            observer.observe(array)

    return _run_dataset(model, dataset, sink)


def _run_dataset(model, dataset, sink) -> int:
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
    return batches


def _choose_auto(model, dataset, config: QConfig, result: CalibrationResult, points) -> None:
    """Second pass: quantize each auto point's real tensors with every calibrator's (scale,
    zero point) and keep the calibrator with the smallest summed squared error."""
    qmin, qmax = qmath.activation_range(config.nbit_input, config.activation_symmetric)
    candidates = {pid: candidate_qparams(result.observers[pid], config, config.nbit_input,
                                          config.activation_symmetric) for pid in points}
    errors = {pid: dict.fromkeys(candidates[pid], 0.0) for pid in points}

    def sink(point_id, array):
        for name, (scale, zero_point) in candidates.get(point_id, {}).items():
            quantized = qmath.fake_quant_affine(array, scale, zero_point, qmin, qmax)
            errors[point_id][name] += float(np.sum((array - quantized) ** 2, dtype=np.float64))

    _run_dataset(model, dataset, sink)
    for pid in points:
        best = least_error(errors[pid])
        result.observers[pid] = result.observers[pid].as_calibrator(best, **observer_kwargs(best, config))
        result.calibrators[pid] = best
        result.auto_errors[pid] = errors[pid]


def attach_scales(mod: tvm.IRModule, result: CalibrationResult, config: QConfig) -> tvm.IRModule:
    """Store each activation point's (scale, zero point), from its observer, on the module."""
    state = get_state(mod)
    for pid in (p.id for p in state.points.values() if p.kind in ACTIVATION_KINDS):
        observer = result.observers.get(pid)
        if observer is None or (observer.count == 0 and observer.reads_data):
            raise CalibrationError(f"quantization point {pid!r} was never reached during "
                                   "calibration")
        scale, zero_point = observer.compute_qparams(config.nbit_input, config.activation_symmetric)
        state.activation_scales[pid] = float(scale)
        state.activation_zero_points[pid] = int(zero_point)
    state.calibration = {"calibrate_mode": config.calibrate_mode, "batches": result.batches,
                         "calibrators": dict(result.calibrators),
                         "auto_errors": result.auto_errors}
    return set_state(mod, state)


def calibrate(mod: tvm.IRModule, dataset: Iterable, config: Optional[QConfig] = None,
              target="llvm") -> tvm.IRModule:
    """Annotated module -> the same module carrying one scale per activation point."""
    config = config or QConfig()
    return attach_scales(mod, run_calibration(mod, dataset, config, target), config)


def Calibrate(dataset: Iterable, config: Optional[QConfig] = None,  # pylint: disable=invalid-name
              target="llvm"):
    """calibrate as a tvm.transform pass (the float model built for ``target``)."""

    @tvm.transform.module_pass(opt_level=0, name="Calibrate")
    def _pass(mod, _ctx):
        return calibrate(mod, dataset, config, target)

    return _pass
