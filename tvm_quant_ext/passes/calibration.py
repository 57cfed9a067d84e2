"""calibration: run the float model over the dataset and observe every activation point.

Observers stream (the top-level ``calibrate`` package): one batch of activations is alive at a
time. Each point's calibrator is ``QConfig.calibrate_mode`` or its layer's override
(``calibrators.py``); ``auto`` points keep a histogram, and a second pass measures every
calibrator's error on the real tensors. Weights and biases need no data; realize quantizes
them from their constants (``calibrators.weight_scale_for``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

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
# A calibration may also run in shards of the data, in other processes: ``new_observers`` +
# ``observe_dataset`` per shard, ``Observer.merge`` of their states, then for ``auto`` an
# ``auto_errors`` pass per shard and ``sum_auto_errors`` + ``choose_auto`` (calibration_shards.py).


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
        counts = {name: a.shape[0] // shape[0] for name, a, shape in zip(input_names, arrays, input_shapes)}
        if len(set(counts.values())) > 1:  # zip would drop the longer inputs' extra rows
            raise ValueError(f"dataset item {index}: the inputs hold different numbers of model "
                             f"batches {counts}; give every input the same number of rows")
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


def new_observers(mod: tvm.IRModule, config: QConfig) -> Tuple[Dict[str, str], Dict[str, Observer]]:
    """(calibrator name per INPUT/ACTIVATION point, an empty observer per point); an ``auto``
    point gets a histogram, from which every candidate calibrator is computed."""
    calibrators = assign_calibrators(get_state(mod), ACTIVATION_KINDS, config.calibrate_mode,
                                     config.layer_calibrate_mode, "layer_calibrate_mode")
    observers: Dict[str, Observer] = {
        pid: (HistogramObserver(point=pid) if name == AUTO
              else make_observer(name, point=pid, **observer_kwargs(name, config)))
        for pid, name in calibrators.items()
    }
    return calibrators, observers


def run_calibration(mod: tvm.IRModule, dataset: Iterable, config: QConfig,
                    target="llvm") -> CalibrationResult:
    """Run ``dataset`` through ``mod`` once, streaming every INPUT/ACTIVATION tensor into its
    observer; ``auto`` points then take a second pass that measures each calibrator's error.
    With no dataset, every point's calibrator must be one that reads no data (global_scale)."""
    calibrators, observers = new_observers(mod, config)
    if dataset is None:
        need_data = sorted({name for name in calibrators.values()
                            if name == AUTO or OBSERVERS[name].reads_data})
        if need_data:
            raise ValueError("calibration needs a dataset (an iterable of input dicts or arrays): "
                             f"calibrator(s) {need_data} read the data; only "
                             "calibrate_mode='global_scale' needs none")
        # like relay's global_scale, nothing is run: every range is fixed in advance
        return CalibrationResult(observers, calibrators)
    if AUTO in calibrators.values() and iter(dataset) is dataset:
        raise ValueError("calibrate_mode='auto' reads the calibration data twice: pass a list "
                         "(or another re-iterable), not an iterator or generator")
    model = build(mod, target)
    batches = observe_dataset(model, dataset, observers)
    result = CalibrationResult(observers, calibrators, batches=batches)
    auto = auto_points(result)
    if auto:
        errors = auto_errors(model, dataset, config, {pid: observers[pid] for pid in auto})
        choose_auto(result, config, sum_auto_errors([errors]))
    return result


def observe_dataset(model, dataset, observers: Dict[str, Observer]) -> int:
    """Stream ``dataset`` through the built annotated ``model`` into ``observers``; the
    number of batches."""
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


def auto_points(result: CalibrationResult) -> List[str]:
    return [pid for pid, name in result.calibrators.items() if name == AUTO]


def auto_errors(model, dataset, config: QConfig,
                observers: Dict[str, Observer]) -> Dict[str, Dict[str, np.ndarray]]:
    """``auto``'s second pass: quantize each point's real tensors with every calibrator's
    (scale, zero point) from its first-pass ``observers``; the squared error of each tensor,
    in data order (per point and calibrator). Kept per tensor, not summed, so that shards of
    the data give, in order, the very terms that one pass sums (``sum_auto_errors``)."""
    qmin, qmax = qmath.activation_range(config.nbit_input, config.activation_symmetric)
    candidates = {pid: candidate_qparams(observer, config, config.nbit_input,
                                          config.activation_symmetric)
                  for pid, observer in observers.items()}
    terms: Dict[str, Dict[str, list]] = {pid: {name: [] for name in c} for pid, c in candidates.items()}

    def sink(point_id, array):
        for name, (scale, zero_point) in candidates.get(point_id, {}).items():
            quantized = qmath.fake_quant_affine(array, scale, zero_point, qmin, qmax)
            terms[point_id][name].append(float(np.sum((array - quantized) ** 2, dtype=np.float64)))

    _run_dataset(model, dataset, sink)
    return {pid: {name: np.array(v, np.float64) for name, v in by_name.items()}
            for pid, by_name in terms.items()}


def sum_auto_errors(parts: Sequence[Dict[str, Dict[str, np.ndarray]]]) -> Dict[str, Dict[str, float]]:
    """Add the error terms of ``parts`` (the data's shards, in data order) one by one, in
    order: the float sum is the same whether the data was one pass or many shards."""
    totals: Dict[str, Dict[str, float]] = {}
    for part in parts:
        for pid, by_name in part.items():
            mine = totals.setdefault(pid, dict.fromkeys(by_name, 0.0))
            for name, values in by_name.items():
                total = mine[name]
                for value in values.tolist():
                    total += value
                mine[name] = total
    return totals


def choose_auto(result: CalibrationResult, config: QConfig, errors: Dict[str, Dict[str, float]]) -> None:
    """Give each auto point the calibrator of least summed squared error (``errors``)."""
    for pid, by_name in errors.items():
        best = least_error(by_name)
        result.observers[pid] = result.observers[pid].as_calibrator(best, **observer_kwargs(best, config))
        result.calibrators[pid] = best
        result.auto_errors[pid] = by_name


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
