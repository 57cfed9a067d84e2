"""Evaluate quantized models against fp32 on real data: top-1, agreement, SNR per layer.

One pass over the evaluation images runs the fp32 model and every quantized configuration
on the same batch; layer SNRs compare tensors by point id (markers left in both modules),
accumulated as running sums so no activation outlives its batch. An integer-mode module's
taps are codes; they are dequantized with the point's scale and zero point before comparing.
When a config is evaluated in both modes (simulate and integer, same calibration), the row of
the integer one also carries the largest difference between the two at every point, in LSBs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .backend.build import build
from .config import QConfig
from .datasets import check_limit
from .points import collect_points, get_state
from .report import QuantReport, get_report
from .runner import QuantRunner, split_batches


@dataclass
class EvalRow:
    model: str
    nbit_bias: int
    calibrate_mode: str
    per_channel: bool
    fp32_top1: int           # correct top-1 among the labeled images
    quant_top1: int
    n_labeled: int
    n_images: int            # images compared with fp32 (labeled + unlabeled held-out)
    agreement: float         # fraction of images whose top-1 equals fp32's
    snr_db: float            # output SNR against fp32 over all evaluated images
    worst_layers: List[tuple] = field(default_factory=list)  # (point id, SNR dB), worst first
    layer_snr: Dict[str, float] = field(default_factory=dict)  # every point id -> SNR dB
    per_set: Dict[str, dict] = field(default_factory=dict)
    report: Optional[QuantReport] = None
    mode: str = "simulate"
    # integer rows evaluated next to simulate: max |integer - simulate| / scale over all points,
    # and at the last point (the final quantized activation before the output layer)
    lsb_vs_simulate: Optional[float] = None
    final_lsb_vs_simulate: Optional[float] = None
    layer_lsb_vs_simulate: Dict[str, float] = field(default_factory=dict)  # point id -> that max
    techniques: str = ""     # what the config adds over plain int8 (e.g. "uint8 activations, bias correction")
    fp32_top5: int = 0       # labels among the 5 largest logits (the labeled images)
    quant_top5: int = 0

    def json_row(self) -> dict:
        return {
            "model": self.model, "nbit_bias": self.nbit_bias,
            "calibrate_mode": self.calibrate_mode, "per_channel": self.per_channel,
            "fp32_top1": self.fp32_top1, "quant_top1": self.quant_top1,
            "fp32_top5": self.fp32_top5, "quant_top5": self.quant_top5,
            "n_labeled": self.n_labeled, "n_images": self.n_images,
            "agreement": round(self.agreement, 4), "snr_db": round(self.snr_db, 2),
            "worst_layers": [[name, round(snr, 2)] for name, snr in self.worst_layers],
            "per_set": self.per_set,
            "bias_adjustments": len(self.report.bias_adjustments) if self.report else 0,
            "mode": self.mode, "lsb_vs_simulate": self.lsb_vs_simulate,
            "final_lsb_vs_simulate": self.final_lsb_vs_simulate,
            "float_ops": [f["tensor"] for f in self.report.float_ops] if self.report else [],
        }


class _Sums:
    def __init__(self):
        self.signal: Dict[str, float] = {}
        self.noise: Dict[str, float] = {}

    def add(self, key, ref, test):
        ref = ref.astype(np.float64)
        self.signal[key] = self.signal.get(key, 0.0) + float(np.sum(ref**2))
        self.noise[key] = self.noise.get(key, 0.0) + float(np.sum((ref - test) ** 2))

    def snr(self, key) -> float:
        noise, signal = self.noise[key], self.signal[key]
        if noise == 0:
            return float("inf")
        return float(10 * np.log10(max(signal, 1e-300) / noise))


def _decoder(state):
    """Tapped tensors as real values: integer-mode taps are codes."""

    def decode(point_id, array):
        if np.issubdtype(array.dtype, np.integer):
            zero_point = state.activation_zero_points.get(point_id, 0)
            return (array.astype(np.float64) - zero_point) * state.activation_scales[point_id]
        return array

    return decode


def _run_tapped(model, batch, decode=lambda point_id, array: array):
    taps: Dict[str, np.ndarray] = {}

    def sink(point_id, array):
        taps[point_id] = decode(point_id, array)

    with collect_points(sink):
        out = model(batch)
    return (out[0] if isinstance(out, tuple) else out), taps


def evaluate(zoo_model, configs: Sequence[QConfig], target="llvm", progress: bool = True,
             log=print, eval_sets: Optional[Sequence[str]] = None,
             limit: Optional[int] = None, runner: Optional[QuantRunner] = None) -> List[EvalRow]:
    """Quantize ``zoo_model`` (a ``zoo.ZooModel``, or any model in that record) with each
    config and compare with fp32 on its eval sets (all of them, or those named in
    ``eval_sets``; at most ``limit`` images per set, in whole batches). ``runner``: a
    QuantRunner of the same model to share its calibration with (default: a new one)."""
    known = [s.name for s in zoo_model.eval_sets]
    unknown = sorted(set(eval_sets or ()) - set(known))
    if unknown:
        raise ValueError(f"{zoo_model.name}: unknown eval set(s) {unknown}; known: {known}")
    check_limit(limit)
    batch = zoo_model.batch_size
    evaluated = sum(len(s.images[:limit]) // batch for s in zoo_model.eval_sets
                    if eval_sets is None or s.name in eval_sets)
    if evaluated == 0:
        raise ValueError(f"{zoo_model.name}: no whole batch of {batch} image(s) to evaluate"
                         + (f" (--limit {limit} is below the batch size)" if limit else ""))
    if runner is None:
        runner = QuantRunner(zoo_model.mod, zoo_model.params, split_batches(zoo_model.calib, batch),
                             target, name=zoo_model.name, log=log)
    quantized = []
    for config in configs:
        realized = runner.quantized(config, tap=True)
        quantized.append((config, build(realized, target), get_report(realized),
                          get_state(realized)))
    fp32 = runner.tapped_float_model(configs[0])  # markers are identity taps
    # equalization rescales tensors per channel: layer SNRs compare against the float model
    # prepared the same way (the outputs are the same function either way)
    other_refs = {c.equalize: runner.tapped_float_model(c) for c in configs
                  if c.equalize != configs[0].equalize}

    n = len(quantized)
    correct_fp32, correct_q = 0, [0] * n
    top5_fp32, top5_q = 0, [0] * n
    agree = [0] * n
    labeled = total = 0
    out_sums = [_Sums() for _ in range(n)]
    layer_sums = [_Sums() for _ in range(n)]
    per_set = [dict() for _ in range(n)]
    partner = {k: j for k, (c, *_rest) in enumerate(quantized) for j, (d, *_r) in enumerate(quantized)
               if c.mode == "integer" and d.mode == "simulate" and c.replace(mode="simulate") == d}
    lsb = {k: {} for k in partner}
    sets = [(s.name, s.images[:limit], None if s.labels is None else s.labels[:limit])
            for s in zoo_model.eval_sets if eval_sets is None or s.name in eval_sets]
    bar = _progress_bar(sum(len(images) // batch * batch for _, images, _ in sets),
                        f"{zoo_model.name}: fp32 + {n} quantized", progress)
    for set_name, images, labels in sets:
        for start in range(0, len(images) - batch + 1, batch):
            bar.update(batch)
            x = images[start:start + batch]
            ref, ref_taps = _run_tapped(fp32, x)
            taps_by_prepare = {configs[0].equalize: ref_taps}
            for equalize, model in other_refs.items():
                taps_by_prepare[equalize] = _run_tapped(model, x)[1]
            ref_top = ref.reshape(batch, -1).argmax(axis=1)
            y = None if labels is None else labels[start:start + batch]
            if y is not None:
                correct_fp32 += int(np.sum(ref_top == y))
                top5_fp32 += top5_hits(ref, y)
                labeled += batch
            total += batch
            batch_taps = []
            for k, (config, model, _, state) in enumerate(quantized):
                out, taps = _run_tapped(model, x, _decoder(state))
                batch_taps.append(taps)
                top = out.reshape(batch, -1).argmax(axis=1)
                stats = per_set[k].setdefault(set_name, {"n": 0, "agree": 0, "fp32_top1": 0,
                                                         "quant_top1": 0})
                stats["n"] += batch
                stats["agree"] += int(np.sum(top == ref_top))
                agree[k] += int(np.sum(top == ref_top))
                if y is not None:
                    correct_q[k] += int(np.sum(top == y))
                    top5_q[k] += top5_hits(out, y)
                    stats["quant_top1"] += int(np.sum(top == y))
                    stats["fp32_top1"] += int(np.sum(ref_top == y))
                out_sums[k].add("out", ref, out)
                mine = taps_by_prepare[config.equalize]
                for pid, value in taps.items():
                    if pid in mine:
                        layer_sums[k].add(pid, mine[pid], value)
            for k, j in partner.items():
                state = quantized[k][3]
                for pid, value in batch_taps[k].items():
                    diff = np.max(np.abs(value - batch_taps[j][pid])) / state.activation_scales[pid]
                    lsb[k][pid] = max(lsb[k].get(pid, 0.0), float(diff))
    bar.close()
    rows = []
    for k, (config, _, report, _state) in enumerate(quantized):
        layers = sorted(((pid, layer_sums[k].snr(pid)) for pid in layer_sums[k].signal),
                        key=lambda item: item[1])
        rows.append(EvalRow(
            model=zoo_model.name, nbit_bias=config.nbit_bias, calibrate_mode=config.calibrate_mode,
            per_channel=config.per_channel, fp32_top1=correct_fp32, quant_top1=correct_q[k],
            fp32_top5=top5_fp32, quant_top5=top5_q[k],
            n_labeled=labeled, n_images=total, agreement=agree[k] / max(total, 1),
            snr_db=out_sums[k].snr("out"), worst_layers=layers[:3], layer_snr=dict(layers),
            per_set=per_set[k],
            report=report, mode=config.mode, techniques=techniques(config),
            lsb_vs_simulate=max(lsb[k].values(), default=None) if k in lsb else None,
            final_lsb_vs_simulate=list(lsb[k].values())[-1] if lsb.get(k) else None,
            layer_lsb_vs_simulate=dict(lsb.get(k, {}))))
    return rows


def top5_hits(logits: np.ndarray, labels: np.ndarray) -> int:
    """How many labels are among their row's 5 largest logits."""
    logits = logits.reshape(len(labels), -1)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    return int(np.sum(top == labels[:, None]))


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


def techniques(config: QConfig) -> str:
    """The accuracy techniques a config turns on, for a table's config column."""
    parts = [("uint8 activations", not config.activation_symmetric),
             ("equalize", config.equalize), ("bias correction", config.bias_correction),
             (f"16-bit budget {config.precision_budget:g}", config.precision_budget > 0)]
    return ", ".join(name for name, on in parts if on)


def format_table(rows: Sequence[EvalRow]) -> str:
    head = ("| model | config | fp32 top-1 | quant top-1 | fp32 / quant top-5 | agreement with fp32 "
            "| output SNR (dB) | worst layers by SNR (dB) |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        config = (f"int8 {'per-channel' if r.per_channel else 'per-tensor'}, {r.calibrate_mode}, "
                  f"{r.nbit_bias}-bit bias{', ' + r.techniques if r.techniques else ''}"
                  f"{', integer' if r.mode == 'integer' else ''}")
        worst = ", ".join(f"{name} {snr:.1f}" for name, snr in r.worst_layers)
        labeled = max(r.n_labeled, 1)
        lines.append(
            f"| {r.model} | {config} | {r.fp32_top1}/{r.n_labeled} ({100 * r.fp32_top1 / labeled:.2f}%) "
            f"| {r.quant_top1}/{r.n_labeled} ({100 * r.quant_top1 / labeled:.2f}%) "
            f"| {100 * r.fp32_top5 / labeled:.1f}% / {100 * r.quant_top5 / labeled:.1f}% "
            f"| {round(r.agreement * r.n_images)}/{r.n_images} ({100 * r.agreement:.1f}%) "
            f"| {r.snr_db:.1f} | {worst} |")
    return "\n".join(lines)
