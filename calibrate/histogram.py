"""A streaming histogram whose range grows by powers of two, so re-binning and merging are exact.

The range of a channel is [-R, R) with R = 2^k the smallest power of two strictly above
max|x| seen so far, split into ``bins`` equal bins (``bins`` divisible by 4). A value lands in
bin ``floor(x / w) + bins/2`` with w = 2R/bins, a power of two, so x / w is exact in float64.
When data outgrows R the range doubles (d times) and bin i moves to
``(i + bins/2 * (2^d - 1)) // 2^d``: the same bin the value would have been put in directly.
Hence observing a then b, and merging a's histogram with b's, give identical counts, and
memory is O(bins) per channel whatever the number of images (ONNX Runtime's percentile and
entropy calibrators keep every activation instead).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

# exponent of a channel that has only seen zeros (zeros land in the centre bin at any
# range); far below float32 values, yet 2^-1000 / bins stays a normal float64
_ZERO_EXPONENT = -1000


def _exponent_above(absmax: np.ndarray) -> np.ndarray:
    """k with 2^(k-1) <= m < 2^k (frexp is exact), or _ZERO_EXPONENT for m == 0."""
    _, exponent = np.frexp(absmax)
    return np.where(absmax > 0, exponent, _ZERO_EXPONENT).astype(np.int64)


class PowerOfTwoHistogram:
    """Counts of x per bin, per channel along ``axis`` (or one histogram when axis is None)."""

    def __init__(self, bins: int = 2048, axis: Optional[int] = None):
        if bins < 8 or bins % 4:
            raise ValueError(f"histogram bins={bins}: expected a multiple of 4, at least 8")
        self.bins = bins
        self.axis = axis
        self.counts: Optional[np.ndarray] = None    # (channels, bins) int64
        self.exponent: Optional[np.ndarray] = None  # (channels,) int64: R = 2^exponent

    @property
    def channels(self) -> int:
        return 0 if self.counts is None else self.counts.shape[0]

    def width(self) -> np.ndarray:
        """Bin width per channel (float64, a power of two)."""
        return np.ldexp(2.0 / self.bins, self.exponent)

    def _rows(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float64)
        if self.axis is None:
            return batch.reshape(1, -1)
        axis = self.axis % batch.ndim
        return np.moveaxis(batch, axis, 0).reshape(batch.shape[axis], -1)

    def _grow(self, exponent: np.ndarray) -> None:
        """Re-bin every channel whose range must double (exactly: bins merge in groups)."""
        half = self.bins // 2
        for c in np.flatnonzero(exponent > self.exponent):
            # beyond bins-fold growth every value is in the two centre bins; capping keeps
            # the arithmetic in int64 and changes nothing
            steps = min(int(exponent[c] - self.exponent[c]), self.bins.bit_length())
            factor = 1 << steps
            target = (np.arange(self.bins, dtype=np.int64) + half * (factor - 1)) // factor
            self.counts[c] = np.bincount(target, weights=self.counts[c], minlength=self.bins
                                         ).astype(np.int64)
            self.exponent[c] = exponent[c]

    def add(self, batch) -> None:
        rows = self._rows(batch)
        exponent = _exponent_above(np.abs(rows).max(axis=1))
        if self.counts is None:
            self.counts = np.zeros((rows.shape[0], self.bins), np.int64)
            self.exponent = exponent
        else:
            self._grow(exponent)
        width = self.width()[:, None]
        index = np.floor(rows / width).astype(np.int64) + self.bins // 2
        index += (np.arange(rows.shape[0], dtype=np.int64) * self.bins)[:, None]
        self.counts += np.bincount(index.ravel(), minlength=self.counts.size).reshape(self.counts.shape)

    def merge(self, other: "PowerOfTwoHistogram") -> None:
        if other.bins != self.bins or other.axis != self.axis:
            raise ValueError(f"cannot merge a histogram of {other.bins} bins (axis {other.axis}) "
                             f"into one of {self.bins} bins (axis {self.axis})")
        if other.counts is None:
            return
        if self.counts is None:
            self.counts, self.exponent = other.counts.copy(), other.exponent.copy()
            return
        if other.channels != self.channels:
            raise ValueError(f"cannot merge histograms of {other.channels} and {self.channels} channels")
        common = np.maximum(self.exponent, other.exponent)
        self._grow(common)
        incoming = PowerOfTwoHistogram(self.bins, self.axis)
        incoming.counts, incoming.exponent = other.counts.copy(), other.exponent.copy()
        incoming._grow(common)
        self.counts += incoming.counts

    def abs_counts(self) -> np.ndarray:
        """(channels, bins/2) counts of |x|: bin j holds |x| in about [j*w, (j+1)*w)."""
        half = self.bins // 2
        return self.counts[:, half:] + self.counts[:, half - 1::-1]

    def positive_only(self) -> np.ndarray:
        """(channels,) True where no negative value was seen."""
        return self.counts[:, : self.bins // 2].sum(axis=1) == 0
