"""Calibration statistics and calibrators, usable without TVM (numpy only).

An observer watches batches of one quantization point (``observe``), combines with an
observer of the same point from another worker (``merge``, exact), and returns the scale
(``compute_scale``) or asymmetric (scale, zero point) (``compute_qparams``). Memory is O(bins)
(or O(channels x bins)) per point whatever the number of images.

Calibrators: ``max``, ``power2`` (relay.quantize's default), ``percentile``, ``l2`` (MSE) and
``kl`` (entropy), all in ``OBSERVERS``. ``state_dict()`` / ``Observer.from_state_dict`` carry an
observer's statistics (plain arrays, versioned) to another process or a file.
"""
from .histogram import PowerOfTwoHistogram
from .observers import (
    OBSERVERS,
    STATE_TYPES,
    STATE_VERSION,
    CalibrationError,
    HistogramObserver,
    KLObserver,
    L2Observer,
    MaxObserver,
    Observer,
    PercentileObserver,
    Power2Observer,
    make_observer,
    range_to_qparams,
    threshold_to_scale,
)

__all__ = [
    "OBSERVERS",
    "STATE_TYPES",
    "STATE_VERSION",
    "CalibrationError",
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
