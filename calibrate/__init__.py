"""Calibration statistics and calibrators, usable without TVM (numpy only).

An observer watches batches of one quantization point (``observe``), combines with an
observer of the same point from another worker (``merge``), and returns the scale
(``compute_scale``). Memory is O(1) (or O(channels)) per point whatever the number of images.
"""
from .observers import (
    OBSERVERS,
    CalibrationError,
    MaxObserver,
    Observer,
    Power2Observer,
    make_observer,
)

__all__ = [
    "OBSERVERS",
    "CalibrationError",
    "MaxObserver",
    "Observer",
    "Power2Observer",
    "make_observer",
]
