"""Calibration in shards of the data, in other processes, equal bit for bit to one pass.

Each shard observes its images (``observe_shard``) and returns plain observer states; the
driver merges them in data order (``merge_shards``): min/max merge exactly and the power-of-two
histograms re-bin exactly, so every scale equals the serial one. ``auto`` needs a second pass
over the data with the merged histograms: ``auto_shard`` per shard, then ``finish_auto`` adds
the per-tensor error terms in data order, the same float additions one pass makes.

``result_arrays`` / ``result_from_arrays`` turn a ``CalibrationResult`` into a flat dict of
numpy arrays (for ``np.savez``, no pickle) and back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from calibrate import CalibrationError, Observer

from ..config import QConfig
from .calibration import (CalibrationResult, auto_errors, auto_points, choose_auto, new_observers,
                          observe_dataset, sum_auto_errors)


@dataclass
class ShardStatistics:
    """What one shard of the calibration data observed: observer state per point."""

    states: Dict[str, dict]
    calibrators: Dict[str, str]
    batches: int


def observe_shard(model, mod, dataset, config: QConfig) -> ShardStatistics:
    """Observe ``dataset`` (this shard's batches) with ``model``, the built annotated ``mod``."""
    calibrators, observers = new_observers(mod, config)
    batches = observe_dataset(model, dataset, observers)
    return ShardStatistics({pid: o.state_dict() for pid, o in observers.items()}, calibrators, batches)


def merge_shards(shards: Sequence[ShardStatistics]) -> CalibrationResult:
    """One calibration result from the shards (in data order; ``auto`` points still hold
    their histograms: see ``needs_auto_pass``)."""
    if not shards:
        raise CalibrationError("no calibration shards to merge: give at least one batch")
    first = shards[0]
    for index, shard in enumerate(shards[1:], 1):
        if shard.calibrators != first.calibrators:
            raise CalibrationError(f"calibration shard {index} observed other points or "
                                   "calibrators than shard 0: were they run on the same model "
                                   "and QConfig?")
    observers = {pid: Observer.from_state_dict(state) for pid, state in first.states.items()}
    for shard in shards[1:]:
        for pid, state in shard.states.items():
            observers[pid].merge(Observer.from_state_dict(state))
    return CalibrationResult(observers, dict(first.calibrators),
                             batches=sum(s.batches for s in shards))


def needs_auto_pass(result: CalibrationResult) -> Dict[str, dict]:
    """The states the ``auto`` second pass needs (the merged histograms of auto points that
    have not chosen yet); empty when there is nothing left to choose."""
    return {pid: result.observers[pid].state_dict() for pid in auto_points(result)
            if pid not in result.auto_errors}


def auto_shard(model, dataset, config: QConfig, states: Dict[str, dict]) -> Dict[str, Dict[str, np.ndarray]]:
    """The ``auto`` error terms of this shard, from the merged first-pass ``states``."""
    return auto_errors(model, dataset, config,
                       {pid: Observer.from_state_dict(state) for pid, state in states.items()})


def finish_auto(result: CalibrationResult, config: QConfig,
                parts: Sequence[Dict[str, Dict[str, np.ndarray]]]) -> CalibrationResult:
    """Pick each auto point's calibrator from the shards' error terms (in data order)."""
    choose_auto(result, config, sum_auto_errors(parts))
    return result


# --------------------------------------------------------------------------- #
# flat arrays (a file, or a message to a worker)
# --------------------------------------------------------------------------- #
def result_arrays(result: CalibrationResult) -> Dict[str, np.ndarray]:
    """``result`` as {name: array}: observer ``i``'s state fields as ``obs{i}.<field>``, its
    calibrator as ``obs{i}.calibrator``, auto's errors as ``obs{i}.auto_names/auto_values``."""
    arrays: Dict[str, np.ndarray] = {"batches": np.array(result.batches), "points": np.array(len(result.observers))}
    for index, (pid, observer) in enumerate(result.observers.items()):
        for field, value in observer.state_dict().items():
            arrays[f"obs{index}.{field}"] = np.array(value)
        arrays[f"obs{index}.calibrator"] = np.array(result.calibrators[pid])
        if pid in result.auto_errors:
            names = list(result.auto_errors[pid])
            arrays[f"obs{index}.auto_names"] = np.array(names)
            arrays[f"obs{index}.auto_values"] = np.array([result.auto_errors[pid][n] for n in names], np.float64)
    return arrays


def result_from_arrays(arrays) -> CalibrationResult:
    """The ``CalibrationResult`` that ``result_arrays`` flattened (``arrays``: a dict or an
    ``np.load`` of a ``.npz``)."""
    fields: Dict[int, dict] = {}
    for key in arrays.keys():
        if key.startswith("obs"):
            index, field = key[3:].split(".", 1)
            fields.setdefault(int(index), {})[field] = arrays[key]
    if len(fields) != int(arrays["points"]):
        raise CalibrationError(f"calibration arrays hold {len(fields)} of {int(arrays['points'])} points")
    result = CalibrationResult({}, {}, batches=int(arrays["batches"]))
    for index in sorted(fields):
        state = dict(fields[index])
        calibrator = str(state.pop("calibrator"))
        names, values = state.pop("auto_names", None), state.pop("auto_values", None)
        observer = Observer.from_state_dict(state)
        result.observers[observer.point] = observer
        result.calibrators[observer.point] = calibrator
        if names is not None:
            result.auto_errors[observer.point] = {str(n): float(v) for n, v in zip(names, values)}
    return result
