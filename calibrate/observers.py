"""Streaming observers: one small class per calibration rule."""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Type

import numpy as np

from . import thresholds
from .histogram import PowerOfTwoHistogram
from .scales import qmax_for, range_to_qparams, threshold_to_scale


class CalibrationError(ValueError):
    """Bad calibration data (NaN/Inf, nothing observed); the message names the point."""


# Bump when the fields of ``state_dict`` change: a state saved by another version (a cache on
# disk, a worker running other code) is refused instead of being read wrongly.
STATE_VERSION = 1


class Observer:
    """Base class: tracks min and max (per channel along ``axis`` when given).

    Subclasses change only how a threshold becomes a scale, or which statistic they keep.
    """

    name = "base"
    reads_data = True  # False: the scale does not depend on the data (calibration may skip it)

    def __init__(self, point: str = "<unnamed>", axis: Optional[int] = None):
        self.point = point
        self.axis = axis
        self.min: Optional[np.ndarray] = None
        self.max: Optional[np.ndarray] = None
        self.count = 0  # number of batches observed

    # -- statistics ---------------------------------------------------------------------
    def _reduce(self, batch: np.ndarray):
        if self.axis is None:
            return np.asarray(batch.min(), np.float64), np.asarray(batch.max(), np.float64)
        axis = self.axis % batch.ndim
        moved = np.moveaxis(batch, axis, 0).reshape(batch.shape[axis], -1)
        return moved.min(axis=1).astype(np.float64), moved.max(axis=1).astype(np.float64)

    def observe(self, batch) -> None:
        batch = np.asarray(batch)
        if batch.size == 0:
            raise CalibrationError(f"quantization point {self.point!r}: empty tensor observed")
        if not np.all(np.isfinite(batch)):
            bad = "NaN" if np.isnan(batch).any() else "Inf"
            raise CalibrationError(
                f"quantization point {self.point!r}: calibration tensor contains {bad}; "
                "check the calibration data and the float model at this tensor")
        lo, hi = self._reduce(batch)
        if self.min is None:
            self.min, self.max = lo, hi
        else:
            if lo.shape != self.min.shape:
                raise CalibrationError(
                    f"quantization point {self.point!r}: channel count changed from "
                    f"{self.min.shape} to {lo.shape}")
            self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)
        self.count += 1

    def merge(self, other: "Observer") -> "Observer":
        """Combine statistics of the same point gathered elsewhere (exactly)."""
        if type(other) is not type(self) or other.axis != self.axis:
            raise CalibrationError(f"quantization point {self.point!r}: cannot merge "
                                   f"{type(other).__name__}(axis={other.axis}) into "
                                   f"{type(self).__name__}(axis={self.axis})")
        if other.min is not None:
            if self.min is None:
                self.min, self.max = other.min.copy(), other.max.copy()
            else:
                self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        self.count += other.count
        return self

    # -- state that travels (to another process, or a cache on disk) ------------------------
    def state_dict(self) -> Dict[str, object]:
        """The statistics as a plain dict of numpy arrays, ints and strings (no pickled
        objects), with ``version`` and ``type``; ``from_state_dict`` rebuilds the observer.
        Unset fields (no data yet, no axis) are left out."""
        state: Dict[str, object] = {"version": STATE_VERSION, "type": type(self).__name__,
                                    "point": self.point, "count": int(self.count)}
        if self.axis is not None:
            state["axis"] = int(self.axis)
        if self.min is not None:
            state["min"], state["max"] = np.array(self.min), np.array(self.max)
        state.update(self._extra_state())
        return state

    def _extra_state(self) -> Dict[str, object]:
        return {}

    def _load_extra_state(self, state: Dict[str, object]) -> None:
        pass

    @classmethod
    def _init_kwargs(cls, state: Dict[str, object]) -> Dict[str, object]:
        """Constructor arguments kept in the state (the histogram's bins, a percentile)."""
        return {}

    @classmethod
    def from_state_dict(cls, state: Dict[str, object]) -> "Observer":
        """The observer ``state_dict`` described. ``Observer.from_state_dict`` builds whichever
        type the state names; a subclass accepts only its own type."""
        version = int(state.get("version", -1))
        if version != STATE_VERSION:
            raise CalibrationError(f"observer state of version {version}, this code reads version "
                                   f"{STATE_VERSION}: recompute it (delete the cached file)")
        type_name = str(state["type"])
        target = STATE_TYPES.get(type_name)
        if target is None:
            raise CalibrationError(f"observer state of unknown type {type_name!r}; "
                                   f"known: {sorted(STATE_TYPES)}")
        if cls is not Observer and target is not cls:
            raise CalibrationError(f"observer state of point {str(state.get('point'))!r} is a "
                                   f"{type_name}'s, not a {cls.__name__}'s")
        axis = int(state["axis"]) if "axis" in state else None
        observer = target(point=str(state["point"]), axis=axis, **target._init_kwargs(state))
        observer.count = int(state["count"])
        if "min" in state:
            observer.min = np.array(state["min"], np.float64)
            observer.max = np.array(state["max"], np.float64)
        observer._load_extra_state(state)
        return observer

    def as_calibrator(self, name: str, **kwargs) -> "Observer":
        """An observer of calibrator ``name`` holding this one's statistics (no data is
        re-read): one histogram pass serves every calibrator, which is what ``auto`` needs."""
        other = make_observer(name, point=self.point, axis=self.axis, **kwargs)
        other.min, other.max, other.count = self.min, self.max, self.count
        if isinstance(other, HistogramObserver):
            if not isinstance(self, HistogramObserver):
                raise CalibrationError(f"quantization point {self.point!r}: calibrator {name!r} "
                                       f"needs a histogram, which {type(self).__name__} does not keep")
            other.histogram = self.histogram
        return other

    def _require_data(self) -> None:
        if self.min is None:
            raise CalibrationError(
                f"quantization point {self.point!r}: no calibration data observed "
                "(empty dataset, or the point is never reached)")

    # -- scales ---------------------------------------------------------------------------
    def absmax(self) -> np.ndarray:
        self._require_data()
        return np.maximum(np.abs(self.min), np.abs(self.max))

    def compute_threshold(self, nbit: int = 8, signed: bool = True) -> np.ndarray:
        """The clipping threshold T (per channel or scalar): values in [-T, T] are kept.
        ``nbit``/``signed`` matter to calibrators that trade clipping against resolution."""
        return self.absmax()

    def compute_scale(self, nbit: int, signed: bool = True) -> np.ndarray:
        return threshold_to_scale(self.compute_threshold(nbit, signed), nbit, signed)

    def compute_range(self, nbit: int = 8):
        """The clipping range (lo, hi) for asymmetric quantization; it always contains 0.

        Data that never goes negative (after a ReLU) gets (0, T) with T chosen for the
        unsigned grid; otherwise the symmetric threshold clips both sides of (min, max).
        """
        self._require_data()
        if np.all(self.min >= 0):
            return np.zeros_like(self.max), np.minimum(self.max, self.compute_threshold(nbit, False))
        threshold = self.compute_threshold(nbit, True)
        return np.maximum(np.minimum(self.min, 0.0), -threshold), np.minimum(np.maximum(self.max, 0.0), threshold)

    def compute_qparams(self, nbit: int, symmetric: bool = True):
        """(scale, zero_point): symmetric gives zero point 0 and signed codes; asymmetric maps
        the range (lo, hi) onto unsigned codes [0, 2^nbit - 1] with 0 exactly representable."""
        if symmetric:
            scale = self.compute_scale(nbit, signed=True)
            return scale, np.zeros(np.shape(scale), np.int64)
        lo, hi = self.compute_range(nbit)
        return range_to_qparams(lo, hi, nbit)


class MaxObserver(Observer):
    """Scale = max|x| / qmax: nothing clipped, resolution spent on the extremes."""

    name = "max"


class Power2Observer(Observer):
    """relay.quantize's default: threshold 2^ceil(log2 max|x|), scale threshold / 2^(b-1).

    Power-of-two scales make every rescale a shift. Like relay, a value equal to the threshold
    lands on 2^(b-1) and is clipped to 2^(b-1)-1.
    """

    name = "power2"

    def compute_threshold(self, nbit: int = 8, signed: bool = True) -> np.ndarray:
        raw = self.absmax()
        raw = np.where(raw > 0, raw, 1.0)
        return np.exp2(np.ceil(np.log2(raw)))

    def compute_scale(self, nbit: int, signed: bool = True) -> np.ndarray:
        levels = 2 ** (nbit - 1) if signed else 2**nbit
        return self.compute_threshold() / levels


class HistogramObserver(Observer):
    """Keeps a power-of-two-range histogram (``PowerOfTwoHistogram``) besides min/max:
    O(bins) memory per channel, exact merge. Subclasses pick the threshold from it.

    ``bins`` defaults to 4096 per tensor (the range is at most twice max|x|, so at least 2048
    bins cover the data, as in TensorRT) and 256 per channel (per-channel statistics are
    weights: a few hundred values per channel, so finer bins only add search time; with 8-bit
    codes that leaves KL no room to clip, which is right for weights).
    """

    PER_TENSOR_BINS = 4096
    PER_CHANNEL_BINS = 256

    def __init__(self, point: str = "<unnamed>", axis: Optional[int] = None,
                 bins: Optional[int] = None):
        super().__init__(point, axis)
        if bins is None:
            bins = self.PER_TENSOR_BINS if axis is None else self.PER_CHANNEL_BINS
        self.histogram = PowerOfTwoHistogram(bins, axis)

    def observe(self, batch) -> None:
        super().observe(batch)
        self.histogram.add(batch)

    def merge(self, other: "Observer") -> "Observer":
        super().merge(other)
        self.histogram.merge(other.histogram)
        return self

    @classmethod
    def _init_kwargs(cls, state):
        return {"bins": int(state["bins"])}

    def _extra_state(self):
        hist = self.histogram
        state = {"bins": int(hist.bins)}
        if hist.counts is not None:
            state["histogram_counts"] = hist.counts.copy()
            state["histogram_exponent"] = hist.exponent.copy()
        return state

    def _load_extra_state(self, state):
        if "histogram_counts" in state:
            self.histogram.counts = np.array(state["histogram_counts"], np.int64)
            self.histogram.exponent = np.array(state["histogram_exponent"], np.int64)

    def _channel_threshold(self, abs_counts, signed_counts, width, nbit, signed) -> float:
        raise NotImplementedError

    def compute_threshold(self, nbit: int = 8, signed: bool = True) -> np.ndarray:
        absmax = self.absmax()
        hist = self.histogram
        widths, abs_counts = hist.width(), hist.abs_counts()
        found = np.array([
            self._channel_threshold(abs_counts[c], hist.counts[c], widths[c], nbit, signed)
            for c in range(hist.channels)])
        # a threshold at a bin edge may pass the largest value seen: never clip above it
        found = np.minimum(found, np.atleast_1d(absmax))
        return found.reshape(np.shape(absmax))


class PercentileObserver(HistogramObserver):
    """Threshold = the given percentile of |x| (default 99.999): drops rare outliers."""

    name = "percentile"

    def __init__(self, point: str = "<unnamed>", axis: Optional[int] = None,
                 bins: Optional[int] = None, percentile: float = 99.999):
        if not 0 < percentile <= 100:
            raise ValueError(f"point {point!r}: percentile={percentile!r} must be in (0, 100]")
        super().__init__(point, axis, bins)
        self.percentile = percentile

    @classmethod
    def _init_kwargs(cls, state):
        return {"bins": int(state["bins"]), "percentile": float(state["percentile"])}

    def _extra_state(self):
        return {**super()._extra_state(), "percentile": float(self.percentile)}

    def _channel_threshold(self, abs_counts, signed_counts, width, nbit, signed):
        return thresholds.percentile_threshold(abs_counts, width, self.percentile)


class L2Observer(HistogramObserver):
    """Threshold minimizing the expected squared quantization error (rounding + clipping)."""

    name = "l2"

    def _channel_threshold(self, abs_counts, signed_counts, width, nbit, signed):
        return thresholds.l2_threshold(abs_counts, width, qmax_for(nbit, signed))


class KLObserver(HistogramObserver):
    """TensorRT/MXNet entropy calibration: the threshold whose quantized distribution is
    closest (KL divergence) to the observed one, with 2*qmax+1 quantized bins for ``nbit``."""

    name = "kl"

    def _channel_threshold(self, abs_counts, signed_counts, width, nbit, signed):
        return thresholds.kl_threshold(signed_counts, width, 2 * qmax_for(nbit, signed) + 1)


class GlobalScaleObserver(Observer):
    """relay.quantize's default calibration (``calibrate_mode="global_scale"``): every tensor's
    range is +-global_scale whatever the data, so calibration needs no dataset.

    The scale follows relay's ``_global_scale``: threshold = global_scale as given (not rounded
    to a power of two), scale = threshold / 2^(b-1), clipped to +-(2^(b-1)-1) like ``power2``
    (relay's default 8.0 gives 1/16 at 8 bits). Asymmetric (unsigned) quantization keeps the
    fixed threshold: the range is (0, T) when the data seen never goes negative (after a ReLU),
    else (-T, T); with no data observed it is (-T, T).
    """

    name = "global_scale"
    reads_data = False

    def __init__(self, point: str = "<unnamed>", axis: Optional[int] = None,
                 global_scale: float = 8.0):
        if not (np.isfinite(global_scale) and global_scale > 0):
            raise ValueError(f"point {point!r}: global_scale={global_scale!r} must be a positive "
                             "finite range (relay's default is 8.0)")
        super().__init__(point, axis)
        self.global_scale = float(global_scale)

    @classmethod
    def _init_kwargs(cls, state: Dict[str, object]) -> Dict[str, object]:
        return {"global_scale": float(state["global_scale"])}

    def _extra_state(self) -> Dict[str, object]:
        return {"global_scale": float(self.global_scale)}

    def compute_threshold(self, nbit: int = 8, signed: bool = True) -> np.ndarray:
        # one value per channel once channels are known, else a scalar (callers broadcast)
        return np.full(np.shape(self.min) if self.min is not None else (), self.global_scale)

    def compute_scale(self, nbit: int, signed: bool = True) -> np.ndarray:
        levels = 2 ** (nbit - 1) if signed else 2**nbit
        return self.compute_threshold() / levels

    def compute_range(self, nbit: int = 8):
        threshold = self.compute_threshold()
        nonnegative = self.min is not None and bool(np.all(self.min >= 0))
        return (np.zeros_like(threshold) if nonnegative else -threshold), threshold


OBSERVERS: Dict[str, Type[Observer]] = {
    cls.name: cls
    for cls in (MaxObserver, Power2Observer, PercentileObserver, L2Observer, KLObserver,
                GlobalScaleObserver)
}
# The calibrators ``auto`` compares: those whose scale comes from the data (global_scale's is
# fixed in advance, so measuring its error would only rank a setting against the data).
AUTO_CANDIDATES: Tuple[str, ...] = tuple(name for name, cls in OBSERVERS.items() if cls.reads_data)


# Every observer type a state may name: the calibrators and auto's holder, HistogramObserver
STATE_TYPES: Dict[str, Type[Observer]] = {
    cls.__name__: cls for cls in (*OBSERVERS.values(), HistogramObserver)
}


def make_observer(name: str, point: str = "<unnamed>", axis: Optional[int] = None, **kwargs) -> Observer:
    try:
        cls = OBSERVERS[name]
    except KeyError:
        raise ValueError(f"unknown calibrator {name!r} for point {point!r}; "
                         f"known: {sorted(OBSERVERS)}") from None
    return cls(point=point, axis=axis, **kwargs)
