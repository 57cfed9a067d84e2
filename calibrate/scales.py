"""From a threshold or a range to quantization parameters: the arithmetic every observer shares."""
from __future__ import annotations

import numpy as np


def qmax_for(nbit: int, signed: bool = True) -> int:
    """Largest quantized magnitude: symmetric signed uses [-(2^(b-1)-1), 2^(b-1)-1]."""
    return 2 ** (nbit - 1) - 1 if signed else 2**nbit - 1


def threshold_to_scale(threshold, nbit: int, signed: bool = True) -> np.ndarray:
    """Scale mapping threshold T onto the largest quantized value; all-zero data gives 1/qmax.

    A zero threshold would give scale 0 (division by zero downstream); any positive scale
    represents an all-zero tensor exactly, so use T=1.
    """
    threshold = np.asarray(threshold, np.float64)
    threshold = np.where(threshold > 0, threshold, 1.0)
    return threshold / qmax_for(nbit, signed)


def range_to_qparams(lo, hi, nbit: int):
    """Asymmetric (scale, zero_point) for the range [lo, hi] (lo <= 0 <= hi) on [0, 2^b-1].

    The zero point is rounded, so real 0 is exact (zero padding and ReLU stay exact); an
    empty range (all zeros) gets scale 1/qmax like the symmetric case.
    """
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    qmax = qmax_for(nbit, signed=False)
    width = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = width / qmax
    zero_point = np.clip(np.floor(-lo / scale + 0.5), 0, qmax).astype(np.int64)
    return scale, zero_point
