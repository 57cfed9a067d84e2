"""Calibration statistics and calibrators, usable without TVM (numpy only).

An observer watches batches of one quantization point (``observe``), combines with an
observer of the same point from another worker (``merge``, exact), and returns the scale
(``compute_scale``) or asymmetric (scale, zero point) (``compute_qparams``). Memory is O(bins)
(or O(channels x bins)) per point whatever the number of images.

Calibrators: ``max``, ``power2`` (relay.quantize's default weight scale), ``percentile``, ``l2``
(MSE), ``kl`` (entropy) and ``global_scale`` (relay.quantize's default activation range, fixed
+-global_scale, no data needed), all in ``OBSERVERS``; ``AUTO_CANDIDATES`` are those that read
the data. ``state_dict()`` / ``Observer.from_state_dict`` carry an observer's statistics (plain
arrays, versioned) to another process or a file.
"""
from .histogram import PowerOfTwoHistogram
from .scales import range_to_qparams, threshold_to_scale
from .observers import (
    AUTO_CANDIDATES,
    OBSERVERS,
    STATE_TYPES,
    STATE_VERSION,
    CalibrationError,
    GlobalScaleObserver,
    HistogramObserver,
    KLObserver,
    L2Observer,
    MaxObserver,
    Observer,
    PercentileObserver,
    Power2Observer,
    make_observer,
)

__all__ = [
    "AUTO_CANDIDATES",
    "OBSERVERS",
    "STATE_TYPES",
    "STATE_VERSION",
    "CalibrationError",
    "GlobalScaleObserver",
    "HistogramObserver",
    "KLObserver",
    "L2Observer",
    "MaxObserver",
    "Observer",
    "PercentileObserver",
    "Power2Observer",
    "PowerOfTwoHistogram",
    "make_observer",
    "range_to_qparams",
    "threshold_to_scale",
]
