"""Which calibrator each point gets, and the calibrator choices that need no data.

``QConfig.calibrate_mode`` / ``weight_scale`` or a layer's override name the calibrator of each
point (``assign_calibrators``); ``auto`` compares every calibrator by its measured error and
keeps the least (ties to the simplest). Weights are constants, so their scales are computed
here from the weight itself (``weight_scale_for``), for realize's layer plan.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from calibrate import AUTO_CANDIDATES, Observer, make_observer

from .. import qmath
from ..config import AUTO, QConfig
from ..graph import binding_name
from ..points import QuantState

# Calibrators that take options from the QConfig: name -> QConfig -> observer keyword arguments
OBSERVER_OPTIONS: Dict[str, Callable[[QConfig], dict]] = {
    "percentile": lambda config: {"percentile": config.calibrate_percentile},
    "global_scale": lambda config: {"global_scale": config.global_scale},
}


def observer_kwargs(name: str, config: QConfig) -> dict:
    options = OBSERVER_OPTIONS.get(name)
    return options(config) if options else {}


def assign_calibrators(state: QuantState, kinds, default: str,
                       overrides: Tuple[Tuple[str, str], ...], option: str) -> Dict[str, str]:
    """Calibrator name per point of ``kinds``: the per-layer override whose layer name matches
    (the layer itself, or an activation named after it, "stem" -> "stem/relu"), else ``default``."""
    by_layer = {binding_name(name): calibrator for name, calibrator in overrides}
    chosen, used = {}, set()
    for pid, point in state.points.items():
        if point.kind not in kinds:
            continue
        chosen[pid] = default
        for layer, calibrator in by_layer.items():
            if point.layer == layer or point.layer.startswith(layer + "/"):
                chosen[pid] = calibrator
                used.add(layer)
    unknown = sorted(set(by_layer) - used)
    if unknown:
        layers = sorted({p.layer for p in state.points.values() if p.kind in kinds})
        raise ValueError(f"QConfig.{option} names {unknown}, which match no quantized layer; "
                         f"layers: {layers}")
    return chosen


def candidate_qparams(observer: Observer, config: QConfig, nbit: int, symmetric: bool):
    return {name: observer.as_calibrator(name, **observer_kwargs(name, config))
            .compute_qparams(nbit, symmetric) for name in AUTO_CANDIDATES}


def least_error(errors: Dict[str, float]) -> str:
    """The calibrator with the smallest error; a tie goes to the simplest, in AUTO_CANDIDATES'
    order (max before power2, percentile, l2, kl): e.g. KL that keeps the whole range *is* max."""
    order = list(AUTO_CANDIDATES)
    return min(errors, key=lambda name: (errors[name], order.index(name)))


def weight_scale_for(config: QConfig, point, weight: np.ndarray, calibrator: str,
                     nbit: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """Weight scale (per output channel when ``per_channel``) from ``calibrator`` for ``nbit``-bit
    codes (default ``config.nbit_weight``); ``auto`` tries every calibrator on the weight itself
    and keeps the smallest quantization error."""
    nbit = config.nbit_weight if nbit is None else nbit
    axis = point.axis if config.per_channel else None
    holder_name = "kl" if calibrator == AUTO else calibrator  # auto needs the histogram
    observer = make_observer(holder_name, point=point.id, axis=axis, **observer_kwargs(holder_name, config))
    observer.observe(weight)
    if calibrator == AUTO:
        errors = {}
        for name, (scale, _) in candidate_qparams(observer, config, nbit, True).items():
            quantized = qmath.fake_quant(weight, scale, nbit, axis=axis)
            errors[name] = float(np.sum((weight - quantized) ** 2))
        calibrator = least_error(errors)
        observer = observer.as_calibrator(calibrator, **observer_kwargs(calibrator, config))
    scale = np.asarray(observer.compute_scale(nbit), np.float64)
    return np.broadcast_to(scale, (weight.shape[point.axis],)).copy(), calibrator
