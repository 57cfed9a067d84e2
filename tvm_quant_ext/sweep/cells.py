"""The grid's cells and what a cell measures, in parts that add up exactly.

A cell is (model and data, QConfig); its key (``cell_key``) names it in the CSV, so a re-run
skips it. Its images may be evaluated in ranges, on different machines: each range gives
``Counts`` (top-1/top-5 hits, agreement with fp32, and the signal and noise energies of the
quantized logits against fp32 as exact integers), and counts add exactly, so the row computed
from the sum equals the row of one pass over all images, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..config import QConfig
from .data import DataSpec

MATCHED = "matched"  # weight scales follow the calibrator: power2 with power2, else max
# float64 values are integer multiples of 2^-1074: scaled by this they are integers, whose sums
# are exact and independent of order and grouping
_EXACT_SCALE = 2 ** 1074


def make_config(nbit_bias: int, calibrator: str, per_channel: bool, weight_scale: str = MATCHED,
                mode: str = "simulate") -> QConfig:
    """The study's configuration: ``calibrator`` for activations; weights power2 when the
    calibrator is power2 and max otherwise (``weight_scale='matched'``; any calibrator name,
    including "auto", is passed to QConfig as is). ``mode``: simulate or integer realize."""
    if weight_scale == MATCHED:
        weight_scale = "power2" if calibrator == "power2" else "max"
    return QConfig(nbit_bias=nbit_bias, nbit_activation=max(32, nbit_bias), calibrate_mode=calibrator,
                   weight_scale=weight_scale, per_channel=per_channel, mode=mode)


def validate_calibrators(names: Sequence[str]) -> List[str]:
    from calibrate import OBSERVERS

    from ..config import AUTO

    known = sorted(OBSERVERS) + [AUTO]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown calibrator(s) {unknown}; known: {known}")
    return list(names)


def grid_configs(nbit_bias: Sequence[int], calibrators: Sequence[str], granularities: Sequence[bool],
                 weight_scale: str = MATCHED, mode: str = "simulate") -> List[QConfig]:
    """The configs of one model's cells, in the CSV's order (every cell validated up front)."""
    calibrators = validate_calibrators(calibrators)
    return [make_config(bits, cal, pc, weight_scale, mode)
            for cal in calibrators for pc in granularities for bits in nbit_bias]


@dataclass(frozen=True)
class Cell:
    spec: DataSpec
    config: QConfig
    dataset: str

    @property
    def key(self) -> str:
        return cell_key(self.spec, self.dataset, self.config)


def cell_key(spec: DataSpec, dataset: str, config: QConfig) -> str:
    """A readable key that changes with anything that changes the cell's numbers."""
    c = config
    granularity = "per-channel" if c.per_channel else "per-tensor"
    return (f"{spec.model}/{dataset}:{spec.num_images}+{spec.calib_images}/b{spec.batch_size}/"
            f"{c.calibrate_mode}-{c.weight_scale}/{granularity}/bias{c.nbit_bias}/{c.mode}")


def exact(value: float) -> int:
    """``value`` (a float64) times 2^1074: an integer, exactly."""
    numerator, denominator = float(value).as_integer_ratio()
    return numerator * (_EXACT_SCALE // denominator)


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


@dataclass
class Counts:
    """What a range of images contributed to a cell; ``+`` adds ranges exactly."""

    n: int = 0
    fp32_top1: int = 0
    quant_top1: int = 0
    fp32_top5: int = 0
    quant_top5: int = 0
    agree: int = 0
    signal: int = 0   # sum of fp32 logits squared, as ``exact`` integers
    noise: int = 0    # sum of (fp32 - quantized)^2
    seconds: Dict[str, float] = field(default_factory=dict)  # compute time by stage (not exact)

    def __add__(self, other: "Counts") -> "Counts":
        seconds = dict(self.seconds)
        for stage, s in other.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + s
        return Counts(*(getattr(self, f) + getattr(other, f) for f in _COUNT_FIELDS), seconds=seconds)

    def snr_db(self) -> float:
        if self.noise == 0:
            return float("inf")
        if self.signal == 0:
            return float("-inf")
        return float(10.0 * np.log10(float(Fraction(self.signal, self.noise))))


_COUNT_FIELDS = ("n", "fp32_top1", "quant_top1", "fp32_top5", "quant_top5", "agree", "signal", "noise")


def count(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> Counts:
    """The counts of one range: ``logits`` quantized, ``reference`` fp32, one row per image.
    Each image's energies are summed on that image alone, so ranges cut anywhere agree."""
    logits = np.asarray(logits, np.float64)
    reference = np.asarray(reference, np.float64)
    signal = sum(exact(np.sum(row ** 2)) for row in reference)
    noise = sum(exact(np.sum((ref - q) ** 2)) for ref, q in zip(reference, logits))
    return Counts(len(labels), int(topk_hits(reference, labels, 1).sum()), int(topk_hits(logits, labels, 1).sum()),
                  int(topk_hits(reference, labels, 5).sum()), int(topk_hits(logits, labels, 5).sum()),
                  int(np.sum(logits.argmax(1) == reference.argmax(1))), signal, noise)


def row(cell: Cell, counts: Counts, calib_images: int) -> Dict[str, object]:
    """The cell's CSV row from its summed counts."""
    c, n = cell.config, max(counts.n, 1)
    seconds = {stage: round(counts.seconds.get(stage, 0.0), 1)
               for stage in ("calibrate_s", "quantize_s", "compile_s", "run_s")}
    return {
        "cell": cell.key, "model": cell.spec.model, "dataset": cell.dataset, "nbit_bias": c.nbit_bias,
        "calibrate_mode": c.calibrate_mode, "weight_scale": c.weight_scale,
        "per_channel": c.per_channel, "mode": c.mode,
        "fp32_top1": counts.fp32_top1 / n, "quant_top1": counts.quant_top1 / n,
        "fp32_top5": counts.fp32_top5 / n, "quant_top5": counts.quant_top5 / n,
        "agreement": counts.agree / n, "snr_db": round(counts.snr_db(), 4), "n_images": counts.n,
        "calib_images": calib_images, **seconds,
    }


def ranges(size: int, step: int, batch: int) -> List[Tuple[int, int]]:
    """[start, stop) ranges of at most ``step`` images covering ``size``, cut at multiples of
    ``batch`` (the model's batch is fixed: every batch is the same in every cutting) and
    leaving out a last partial batch, as one pass does."""
    usable = size // batch * batch
    step = max(batch, step // batch * batch)
    return [(start, min(start + step, usable)) for start in range(0, usable, step)]
