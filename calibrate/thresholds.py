"""Clipping thresholds from a histogram: percentile, L2 (MSE) and KL divergence (entropy).

Plain numpy on one channel's counts; ``calibrate.observers`` applies them per channel.
Symmetric layouts: ``abs_counts[j]`` counts |x| in [j*w, (j+1)*w); ``signed counts`` are the
full histogram over [-R, R) (even number of bins, zero on the edge between the two halves).
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import numpy as np


def percentile_threshold(abs_counts: np.ndarray, width: float, percentile: float) -> float:
    """The ``percentile``-th percentile of |x|, the way ``np.percentile`` computes it: the
    values of ranks floor(r) and ceil(r), r = p/100*(n-1), interpolated; each value is placed
    inside its bin by its rank among the bin's values (so the result is within a bin width)."""
    counts = np.asarray(abs_counts, np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    cumulative = np.cumsum(counts)

    def value_of_rank(k: float) -> float:
        j = min(int(np.searchsorted(cumulative, k, side="right")), len(counts) - 1)
        before = cumulative[j - 1] if j > 0 else 0.0
        return (j + min((k - before + 0.5) / max(counts[j], 1.0), 1.0)) * width

    rank = percentile / 100.0 * (total - 1)
    low, high = value_of_rank(np.floor(rank)), value_of_rank(np.ceil(rank))
    return float(low + (rank - np.floor(rank)) * (high - low))


def _coarse_to_fine(radii: np.ndarray, score, max_evaluations: Optional[int],
                    refine: int = 3) -> int:
    """The radius (bin count) with the smallest score: every ``stride``-th radius first, then
    every radius within one stride of the ``refine`` best, so about ``max_evaluations`` +
    ``refine`` * 2 * stride scores are computed whatever the number of bins (None: all of
    them; scores can be noisy, hence several refined minima). Ties go to the smaller radius."""
    stride = 1 if max_evaluations is None else max(1, len(radii) // max_evaluations)
    coarse = np.unique(np.append(radii[::stride], radii[-1]))
    coarse_scores = score(coarse)
    if stride == 1:
        return int(coarse[int(np.argmin(coarse_scores))])
    near = np.zeros(len(radii), bool)
    for best in coarse[np.argsort(coarse_scores, kind="stable")[:refine]]:
        near |= (radii >= best - stride) & (radii <= best + stride)
    fine = radii[near]
    return int(fine[int(np.argmin(score(fine)))])


def l2_errors(abs_counts: np.ndarray, width: float, qmax: int, radii: np.ndarray) -> np.ndarray:
    """Expected squared quantization error (up to a constant) for thresholds T = r * width.

    Each bin's values sit at the bin centre c and cost (c - Q_T(c))^2, Q_T the rounding to
    the grid T/qmax clipped at T: rounding and clipping error in one formula, exact for the
    spike of zeros after a ReLU (c ~ w/2 rounds to 0) that a uniform-noise model overcharges.
    """
    counts = np.asarray(abs_counts, np.float64)
    nonzero = np.flatnonzero(counts)
    centres = (nonzero + 0.5) * width
    weights = counts[nonzero]
    errors = np.empty(len(radii))
    for start in range(0, len(radii), 64):  # bounded memory: 64 candidates x used bins
        step = (radii[start:start + 64, None] * width) / qmax
        codes = np.minimum(np.floor(centres[None, :] / step + 0.5), qmax)
        errors[start:start + 64] = ((centres[None, :] - codes * step) ** 2) @ weights
    return errors


def l2_threshold(abs_counts: np.ndarray, width: float, qmax: int,
                 max_evaluations: Optional[int] = 256) -> float:
    """The threshold minimizing the expected quantization error (rounding plus clipping)."""
    counts = np.asarray(abs_counts, np.float64)
    if counts.sum() == 0:
        return 0.0
    used = int(np.flatnonzero(counts)[-1]) + 1  # thresholds past the data only lose resolution
    radii = np.arange(1, used + 1)
    best = _coarse_to_fine(radii, lambda r: l2_errors(counts, width, qmax, r), max_evaluations)
    return float(best * width)


def _smooth(p: np.ndarray, eps: float = 1e-4):
    """Replace zeros by eps and take that mass off the non-zero entries (TensorRT/MXNet);
    None when the distribution cannot be smoothed."""
    zeros = p == 0
    n_zeros = int(zeros.sum())
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0:
        return None
    eps1 = eps * n_zeros / n_nonzeros
    if eps1 >= 1.0:
        return None
    return p + np.where(zeros, eps, -eps1)


def kl_divergence(window: np.ndarray, left: float, right: float, num_quantized_bins: int) -> float:
    """KL(P || Q) for one candidate window of the histogram.

    P: the window with the outliers on each side added to its end bins. Q: the window merged
    into ``num_quantized_bins`` bins (the last one takes the remainder), each spread evenly
    over the window's non-empty bins.
    """
    window = np.asarray(window, np.float64)
    size = window.size
    p = window.copy()
    p[0] += left
    p[-1] += right
    merged = size // num_quantized_bins
    body = num_quantized_bins * merged
    quantized = window[:body].reshape(num_quantized_bins, merged).sum(axis=1)
    quantized[-1] += window[body:].sum()
    nonzero = window != 0
    norm = nonzero[:body].reshape(num_quantized_bins, merged).sum(axis=1)
    norm[-1] += nonzero[body:].sum()
    per_bin = np.divide(quantized, norm, out=np.zeros_like(quantized), where=norm > 0)
    q = np.concatenate([np.repeat(per_bin, merged), np.full(size - body, per_bin[-1])])
    q = np.where(p != 0, q, 0.0)
    p, q = _smooth(p), _smooth(q)
    if p is None or q is None:
        return float("inf")
    p /= p.sum()
    q /= q.sum()
    return float(np.sum(p * np.log(p / q)))


def kl_search(counts: np.ndarray, windows: Iterable[Tuple[int, int, float]],
              num_quantized_bins: int) -> Tuple[float, float]:
    """(threshold, divergence) of the window with the smallest KL divergence; ties go to the
    first (narrowest) window, as in MXNet."""
    counts = np.asarray(counts, np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    total = cumulative[-1]
    best = (float("nan"), float("inf"))
    for start, stop, threshold in windows:
        divergence = kl_divergence(counts[start:stop], cumulative[start], total - cumulative[stop],
                                   num_quantized_bins)
        if divergence < best[1]:
            best = (float(threshold), divergence)
    return best


def kl_threshold(signed_counts: np.ndarray, width: float, num_quantized_bins: int,
                 max_evaluations: Optional[int] = None) -> float:
    """KL threshold over a symmetric histogram of an even number of bins centred on 0.

    ``num_quantized_bins`` is the number of quantization levels across [-T, T]: 2*qmax + 1,
    i.e. 255 for int8 and 511 for uint8 (whose negative half is empty), derived from the bit
    width, never a fixed 255 (relay.quantize's bug for non-8-bit).

    Windows are searched coarse to fine (``_coarse_to_fine``); ``max_evaluations=None``
    tries every window, as MXNet does.
    """
    counts = np.asarray(signed_counts, np.float64)
    half = counts.size // 2
    if counts.sum() == 0:
        return 0.0
    first = -(-num_quantized_bins // 2)  # a window has at least as many bins as levels
    if first > half:
        # fewer histogram bins than quantization levels: no clipping can beat the max
        return float(half * width)

    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    total = cumulative[-1]

    def divergences(radii):
        return np.array([kl_divergence(counts[half - i:half + i], cumulative[half - i],
                                       total - cumulative[half + i], num_quantized_bins)
                         for i in radii])

    nonzero = np.flatnonzero(counts)
    reach = max(half - int(nonzero[0]), int(nonzero[-1]) + 1 - half)  # wider windows add only empty bins
    radii = np.arange(first, max(first, reach) + 1)
    return float(_coarse_to_fine(radii, divergences, max_evaluations) * width)
