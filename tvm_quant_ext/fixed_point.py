"""Fixed-point requantize as plain numpy: the arithmetic integer realize emits, exactly.

A real multiplier ``M > 0`` (e.g. ``s_x * s_w / s_y``) is held as ``M0 * 2^(shift - 31)`` with
``M0`` an int32 Q31 significand in ``[2^30, 2^31)`` (gemmlowp/TFLite style, as TVM's old
``qnn`` did with ``frexp``). Applying it to an integer accumulator is

    y = (acc * M0 + 2^(r - 1)) >> r,    r = 31 - shift    (64-bit product, arithmetic shift)

which is TVM's ``tirx.q_multiply_shift`` / ``topi.fixed_point_multiply`` lowering: round to
nearest, **ties toward +inf** (``floor(acc * M + 1/2)``), the same rule as ``qmath.round_half_up``
that simulate uses (gemmlowp's ``RoundingDivideByPOT`` breaks ties away from zero instead;
that differs only on exact ties of negative values). tests/test_fixed_point.py checks these
functions against ``topi.fixed_point_multiply`` compiled by TVM.

``FixedPoint`` is the form that is safe to emit in int64: it carries the right shift ``r``
directly, lowers the multiplier's precision when the accumulator could be so wide that
``acc * M0`` would overflow 64 bits, and turns a multiplier too small to ever reach 1/2 into 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .qmath import round_half_up

Q = 31                 # fractional bits of the multiplier significand
_PRODUCT_LIMIT = 2**62  # |acc * M0| stays below this, so adding 2^(r-1) <= 2^61 cannot overflow


def quantize_multiplier(multiplier) -> Tuple[np.ndarray, np.ndarray]:
    """(M0, shift) with ``multiplier = M0 * 2^(shift - 31)`` and ``M0`` in ``[2^30, 2^31)``.

    Works elementwise on arrays (per-channel multipliers). M >= 1 gives shift >= 1; tiny M a
    very negative shift. M == 0 gives (0, 0). Relative error of the Q31 significand <= 2^-31.
    """
    m = np.asarray(multiplier, np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"fixed-point multiplier must be finite and >= 0, got {m}")
    significand, exponent = np.frexp(m)              # m = significand * 2^exponent, sig in [0.5, 1)
    m0 = round_half_up(significand * 2.0**Q).astype(np.int64)
    carry = m0 == 2**Q                                # significand rounded up to 1.0
    m0 = np.where(carry, 2 ** (Q - 1), m0)
    shift = np.where(carry, exponent + 1, exponent).astype(np.int64)
    shift = np.where(m0 == 0, 0, shift)
    return m0, shift


def multiply_by_quantized_multiplier(acc, m0, shift) -> np.ndarray:
    """``round_half_up(acc * M0 * 2^(shift-31))`` in exact integer arithmetic (TVM's rule).

    ``acc``, ``m0``, ``shift`` broadcast (per-axis multipliers: reshape them onto the axis).
    Computed with Python integers, so any magnitude is exact.
    """
    acc = np.asarray(acc)
    m0, shift = np.broadcast_arrays(np.asarray(m0, np.int64), np.asarray(shift, np.int64))
    a, m, s = np.broadcast_arrays(acc.astype(object), m0.astype(object), shift.astype(object))
    out = np.empty(a.shape, object)
    for index in np.ndindex(a.shape):
        r = Q - int(s[index])
        product = int(a[index]) * int(m[index])
        out[index] = (product << -r) if r <= 0 else (product + (1 << (r - 1))) >> r
    return out.astype(np.int64)


def requantize(acc, m0, shift, zero_point: int = 0, qmin: Optional[int] = None,
               qmax: Optional[int] = None) -> np.ndarray:
    """Output codes ``clip(round_half_up(acc * M) + zero_point, qmin, qmax)``."""
    y = multiply_by_quantized_multiplier(acc, m0, shift) + int(zero_point)
    if qmin is not None or qmax is not None:
        y = np.clip(y, qmin, qmax)
    return y


def requantize_per_axis(acc, m0, shift, axis: int, zero_point: int = 0,
                        qmin: Optional[int] = None, qmax: Optional[int] = None) -> np.ndarray:
    """``requantize`` with one (M0, shift) per index of ``axis`` (per-channel weights)."""
    acc = np.asarray(acc)
    shape = [1] * acc.ndim
    shape[axis % acc.ndim] = -1
    return requantize(acc, np.reshape(m0, shape), np.reshape(shift, shape), zero_point, qmin, qmax)


@dataclass
class FixedPoint:
    """A multiplier ready for int64 code: ``y = (acc * m0 + 2^(rshift-1)) >> rshift``.

    ``m0`` and ``rshift`` are int64 arrays (broadcastable to the accumulator) with
    ``1 <= rshift <= 62`` and ``|acc| * m0 < 2^62`` for every |acc| <= the bound it was made for.
    """

    m0: np.ndarray
    rshift: np.ndarray

    @property
    def value(self) -> np.ndarray:
        return self.m0.astype(np.float64) * np.exp2(-self.rshift.astype(np.float64))

    def apply(self, acc) -> np.ndarray:
        """The emitted arithmetic, in numpy int64 (exact under the bound)."""
        acc = np.asarray(acc, np.int64)
        return (acc * self.m0 + (np.int64(1) << (self.rshift - 1))) >> self.rshift


def fixed_point(multiplier, acc_bound: float) -> FixedPoint:
    """The int64-safe fixed-point form of ``multiplier`` for accumulators with |acc| <= acc_bound.

    Q31 (bit-identical to ``requantize``) whenever ``acc_bound * M0 < 2^62``, i.e. any int32
    accumulator. Wider accumulators (16-bit activations, int64 bias) drop just enough low
    bits of M0 (rounded half up). A multiplier whose largest product stays below 1/2 becomes 0:
    every output rounds to 0 anyway.
    """
    m0, shift = quantize_multiplier(multiplier)
    rshift = Q - shift
    bound = max(float(acc_bound), 1.0)
    # drop the fewest low bits of M0 (rounded half up) that make the product fit
    bound_int = int(np.ceil(bound))
    m0 = np.array(m0, np.int64)
    rshift = np.array(rshift, np.int64)
    for index in np.ndindex(m0.shape):
        significand, excess = int(m0[index]), 0
        while bound_int * significand >= _PRODUCT_LIMIT:
            excess += 1
            significand = (int(m0[index]) + (1 << (excess - 1))) >> excess
        m0[index], rshift[index] = significand, rshift[index] - excess
    # M >= 2^30 (rshift < 1): scale M0 up so the shift is at least 1 (exact)
    up = np.maximum(1 - rshift, 0)
    if np.any(up > 0):
        if np.any(bound * m0 * np.exp2(up) >= _PRODUCT_LIMIT):
            raise ValueError(f"fixed-point multiplier {multiplier} is too large for accumulators "
                             f"up to {acc_bound:.3g}")
        m0 = m0 << up
        rshift = rshift + up
    # never reaching 1/2: |acc * m0| < 2^62 <= 2^(rshift-1) when rshift > 62
    never = rshift > 62
    m0 = np.where(never | (m0 == 0), 0, m0).astype(np.int64)
    rshift = np.where(never | (m0 == 0), 1, rshift).astype(np.int64)
    return FixedPoint(m0, rshift)


def codes_dtype(nbit: int, signed: bool) -> str:
    """Storage type of nbit codes: int8/uint8 up to 8 bits, int16/uint16 up to 16."""
    if nbit > 16:
        raise ValueError(f"{nbit}-bit codes: at most 16 bits are supported")
    width = 8 if nbit <= 8 else 16
    return f"{'' if signed else 'u'}int{width}"


INT32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Int32Affine:
    """``clip((x * a + b) >> s, lo, hi)`` computed in int32, per channel (``a``, ``b``, ``s``:
    one entry a channel; ``s`` a single value when every channel shares it)."""

    a: np.ndarray
    b: np.ndarray
    s: np.ndarray
    lo: int
    hi: int

    def apply(self, x) -> np.ndarray:
        """``x`` (n values) -> (n, channels), in int64 numpy (the int32 arithmetic: no term of
        it leaves int32 for the values it was fitted on)."""
        x = np.asarray(x, np.int64)[:, None]
        return np.clip((x * self.a + self.b) >> self.s, self.lo, self.hi)


def _bias_interval(target, product, unit: int, inner_lo, inner_hi, axis=None):
    """(lowest, highest) ``b`` with ``(product + b) >> s`` equal to every ``target`` (``unit =
    2^s``): a target above ``lo`` bounds it from below, one below ``hi`` from above (reduced
    over ``axis``; empty where lowest > highest)."""
    lower = np.where(inner_lo, target * unit - product, np.iinfo(np.int64).min).max(axis=axis)
    upper = np.where(inner_hi, (target + 1) * unit - 1 - product,
                     np.iinfo(np.int64).max).min(axis=axis)
    return lower, upper


def fit_int32_affine(xs, target, lo: int, hi: int, slope) -> Optional[Int32Affine]:
    """An ``Int32Affine`` equal to ``target`` at every ``xs``, or None when there is none near
    ``slope``.

    ``target[i, c]`` is what a chain of integer steps gives channel ``c`` for input ``xs[i]``,
    already clipped to ``[lo, hi]``: a requantize of int8 codes, say, in int64 with a Q31
    multiplier. Where ``x`` takes few values (a code) that chain is a clipped affine function of
    ``x`` on them, and usually one with an int32 multiplier: ``s`` fractional bits are enough once
    no ``x`` lies closer to a rounding step than the error of rounding ``slope * 2^s``. For each
    ``s`` (0..30) and ``a`` next to ``slope[c] * 2^s`` the ``b`` that reproduce every target form
    an interval (a target strictly inside ``(lo, hi)`` bounds ``x * a + b`` on both sides, one at
    ``lo`` or ``hi`` on one side only), so the search is exact, not sampled. The smallest ``s``
    that fits every channel is used; failing one, each channel's own smallest. Every term stays
    within int32 for the ``xs``."""
    xs = np.asarray(xs, np.int64)
    target = np.asarray(target, np.int64)
    slope = np.asarray(slope, np.float64).reshape(-1)
    channels = target.shape[1]
    x = xs[:, None]
    inner_lo, inner_hi = target > lo, target < hi
    found = {}  # s -> (a, b, fits) per channel
    for s in range(31):
        unit = np.int64(1) << s
        best_a = np.zeros(channels, np.int64)
        best_b = np.zeros(channels, np.int64)
        fits = np.zeros(channels, bool)
        if np.any(np.abs(slope) * unit * np.abs(xs).max() > 2 * INT32_LIMIT):
            break  # larger s only makes x * a larger
        centre = np.round(slope * float(unit)).astype(np.int64)
        for step in (0, -1, 1):
            a = centre + step
            ax = x * a
            lower, upper = _bias_interval(target, ax, unit, inner_lo, inner_hi, axis=0)
            b = np.clip(0, lower, upper)
            terms = np.maximum(np.abs(ax), np.abs(ax + b)).max(axis=0)
            ok = (lower <= upper) & (terms <= INT32_LIMIT) & ~fits
            best_a, best_b = np.where(ok, a, best_a), np.where(ok, b, best_b)
            fits |= ok
        found[s] = (best_a, best_b, fits)
        if fits.all():
            return _checked(Int32Affine(best_a, best_b, np.array(s, np.int64), lo, hi), xs, target)
    a = np.zeros(channels, np.int64)
    b = np.zeros(channels, np.int64)
    shifts = np.full(channels, -1, np.int64)
    for s, (sa, sb, fits) in found.items():
        take = fits & (shifts < 0)
        a, b, shifts = np.where(take, sa, a), np.where(take, sb, b), np.where(take, s, shifts)
    if np.any(shifts < 0):
        return None
    return _checked(Int32Affine(a, b, shifts, lo, hi), xs, target)


def _checked(fit: Int32Affine, xs, target) -> Optional[Int32Affine]:
    # the interval construction is exact; this re-check keeps a mistake in it from ever
    # becoming a kernel that differs from the graph
    return fit if np.array_equal(fit.apply(xs), target) else None


@dataclass(frozen=True)
class Int32PairAffine:
    """``clip((x * a + y * c + b) >> s, lo, hi)`` of two codes ``x`` and ``y`` computed in
    int32, one set of constants for every channel."""

    a: int
    c: int
    b: int
    s: int
    lo: int
    hi: int

    def apply(self, xs, ys) -> np.ndarray:
        """(len(xs), len(ys)) values, in int64 numpy."""
        x = np.asarray(xs, np.int64)[:, None]
        y = np.asarray(ys, np.int64)[None, :]
        return np.clip((x * self.a + y * self.c + self.b) >> self.s, self.lo, self.hi)


def fit_int32_pair_affine(xs, ys, target, lo: int, hi: int, slope_x: float,
                          slope_y: float) -> Optional[Int32PairAffine]:
    """An ``Int32PairAffine`` equal to ``target[i, j]`` at every ``(xs[i], ys[j])``, or None
    when there is none near the slopes.

    ``target`` is what a chain of integer steps gives two codes, already clipped to ``[lo,
    hi]``: a residual add (each code rescaled to the sum's scale by a Q31 multiply, the sum
    requantized to a code). On codes that chain, three roundings deep, is usually one clipped
    affine function of the pair: as in ``fit_int32_affine``, for each ``s`` and each ``a``,
    ``c`` next to ``slope * 2^s`` the ``b`` that reproduce every target form an interval, so
    the search is exact; the smallest ``s`` whose terms stay within int32 is used."""
    x = np.asarray(xs, np.int64)[:, None]
    y = np.asarray(ys, np.int64)[None, :]
    target = np.asarray(target, np.int64)
    inner_lo, inner_hi = target > lo, target < hi
    span_x, span_y = int(np.abs(x).max()), int(np.abs(y).max())
    for s in range(31):
        unit = 1 << s
        centre_a, centre_c = round(slope_x * unit), round(slope_y * unit)
        if (abs(centre_a) - 1) * span_x + (abs(centre_c) - 1) * span_y > 2 * INT32_LIMIT:
            break  # larger s only makes the terms larger
        for a in (centre_a, centre_a - 1, centre_a + 1):
            for c in (centre_c, centre_c - 1, centre_c + 1):
                lower, upper = (int(e) for e in _bias_interval(
                    target, x * a + y * c, unit, inner_lo, inner_hi))
                if lower > upper:
                    continue
                b = min(max(0, lower), upper)
                terms = abs(a) * span_x + abs(c) * span_y + abs(b)  # every partial sum
                if terms <= INT32_LIMIT:
                    fit = Int32PairAffine(a, c, b, s, lo, hi)
                    # the intervals are exact; the re-check keeps a mistake in them from ever
                    # becoming a kernel that differs from the graph
                    return fit if np.array_equal(fit.apply(xs, ys), target) else None
    return None


HIGH_HALF_MIN_SHIFT = 33  # (x * M0 + 2^(r-1)) >> r from the product's high 32 bits: r >= 33
HIGH_HALF_MAX_SHIFT = 62  # and 2^(r-33) <= 2^29, so the rounding add stays within int32


def high_half_operands(m0, rshift) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(M0, round, k)`` as int32 for ``multiply_high_half``, or None when the Q31 multiply
    ``(x * M0 + 2^(r-1)) >> r`` has no such form (``M0`` outside int32, ``r`` outside
    [33, 62]). ``round = 2^(r-33)``, ``k = r - 32``; shapes as given."""
    m0, rshift = np.asarray(m0, np.int64), np.asarray(rshift, np.int64)
    if np.any(m0 < -INT32_LIMIT - 1) or np.any(m0 > INT32_LIMIT):
        return None
    if np.any(rshift < HIGH_HALF_MIN_SHIFT) or np.any(rshift > HIGH_HALF_MAX_SHIFT):
        return None
    return (m0.astype(np.int32), (np.int64(1) << (rshift - 33)).astype(np.int32),
            (rshift - 32).astype(np.int32))


def multiply_high_half(x, m0, rounding, k) -> np.ndarray:
    """``(hi(x * M0) + round) >> k`` in int32, ``hi`` the high 32 bits of the 64-bit product
    of two int32 values (``high_half_operands``' terms).

    It equals the Q31 multiply ``(x * M0 + 2^(r-1)) >> r`` for every int32 ``x``: with
    ``x * M0 = hi * 2^32 + lo``, ``0 <= lo < 2^32``, ``(x * M0 + 2^(r-1)) / 2^r`` is
    ``(hi + 2^(r-33) + lo / 2^32) / 2^(r-32)``, and the floor of (an integer + a fraction in
    [0, 1)) / 2^j is the floor of the integer / 2^j. ``|hi| <= 2^30`` and ``round <= 2^29``, so
    every term is an int32 (on AVX-512: 16 lanes a vector, ``vpmuldq`` for the products, where
    the 64-bit form holds 8 and multiplies a per-channel constant with ``vpmullq``)."""
    x = np.asarray(x, np.int64)
    high = (x * np.asarray(m0, np.int64)) >> 32
    return ((high + np.asarray(rounding, np.int64)) >> np.asarray(k, np.int64)).astype(np.int32)


def split_operands(m0, rshift, x_lo: int, x_hi: int) -> Optional[Tuple[np.ndarray, ...]]:
    """``(Mh, Ml, round, r)`` as int32 for ``multiply_split``, or None when for some ``x`` in
    ``[x_lo, x_hi]`` one of its terms would leave int32 (or ``r`` is outside [1, 31]).
    ``M0 = Mh * 2^r + Ml`` with ``0 <= Ml < 2^r``; ``round = 2^(r-1)``."""
    m0, rshift = np.asarray(m0, np.int64), np.asarray(rshift, np.int64)
    if np.any(rshift < 1) or np.any(rshift > 31):
        return None
    high = m0 >> rshift
    low = m0 - (high << rshift)
    rounding = np.left_shift(np.int64(1), rshift - 1)
    ends = np.array([x_lo, x_hi], np.int64).reshape((2,) + (1,) * m0.ndim)
    terms = [ends * high, ends * low + rounding, ends * high + ((ends * low + rounding) >> rshift)]
    if any(np.any(t < -INT32_LIMIT - 1) or np.any(t > INT32_LIMIT) for t in terms):
        return None
    return tuple(v.astype(np.int32) for v in np.broadcast_arrays(high, low, rounding, rshift))


def multiply_split(x, high, low, rounding, rshift) -> np.ndarray:
    """``x * Mh + ((x * Ml + round) >> r)``: the Q31 multiply ``(x * M0 + 2^(r-1)) >> r`` in
    int32 terms for an ``x`` narrow enough (``split_operands``). Exact for any integers: ``x *
    M0 + 2^(r-1) = x * Mh * 2^r + (x * Ml + 2^(r-1))``, and the first term is a multiple of
    ``2^r``. Cheaper than ``multiply_high_half`` where it applies (a code's rescale)."""
    x = np.asarray(x, np.int64)
    high, low, rounding, rshift = (np.asarray(v, np.int64) for v in (high, low, rounding, rshift))
    return (x * high + ((x * low + rounding) >> rshift)).astype(np.int32)
