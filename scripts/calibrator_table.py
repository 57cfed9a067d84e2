"""Accuracy of every calibrator x per-tensor/per-channel x nbit_bias {8, 32} on the zoo models.

    python scripts/calibrator_table.py [--models mnist_cnn efficientnet_lite0] [--limit N]

One evaluation pass per model runs fp32 and every configuration on the same images
(tvm_quant_ext.evaluate). Weights use max scales throughout, so the rows differ only in the
activation calibrator. Writes docs/calibrators.md (the table) and docs/calibrators.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from calibrate import AUTO_CANDIDATES

from tvm_quant_ext import QConfig, zoo
from tvm_quant_ext.config import AUTO
from tvm_quant_ext.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent
CALIBRATORS = ["max", "power2", "percentile", "l2", "kl", AUTO]


def table(rows, model: str) -> str:
    by_key = {(r.calibrate_mode, r.per_channel, r.nbit_bias): r for r in rows}
    sets = list(rows[0].per_set)
    first = rows[0]
    head = [f"**{model}**: fp32 top-1 {first.fp32_top1}/{first.n_labeled}; "
            f"{first.n_images} images compared with fp32 ({', '.join(sets)})", "",
            "| calibrator | weights | 8-bit bias: top-1 / agreement / SNR | "
            "32-bit bias: top-1 / agreement / SNR |", "|---|---|---|---|"]
    for mode in CALIBRATORS:
        for per_channel in (False, True):
            cells = []
            for bias in (8, 32):
                r = by_key[(mode, per_channel, bias)]
                cells.append(f"{r.quant_top1}/{r.n_labeled} / {round(r.agreement * r.n_images)}/"
                             f"{r.n_images} / {r.snr_db:.1f} dB")
            head.append(f"| {mode} | {'per-channel' if per_channel else 'per-tensor'} | "
                        + " | ".join(cells) + " |")
    return "\n".join(head)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mnist_cnn", "efficientnet_lite0"],
                        choices=sorted(zoo.MODELS))
    parser.add_argument("--limit", type=int, default=None, help="at most N images per eval set")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    # global_scale is left out: its range is a fixed setting, not measured on the data
    assert set(CALIBRATORS) == set(AUTO_CANDIDATES) | {AUTO}, "table must cover every calibrator"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections, records = [], []
    for name in args.models:
        start = time.time()
        model = zoo.load(name)  # at the entry's default batch
        configs = [QConfig(calibrate_mode=mode, per_channel=per_channel, nbit_bias=bias)
                   for mode in CALIBRATORS for per_channel in (False, True) for bias in (8, 32)]
        rows = evaluate(model, configs, eval_sets=zoo.MODELS[name].eval_sets, limit=args.limit,
                        log=lambda *a: print(*a, file=sys.stderr))
        sections.append(table(rows, name) + f"\n\n({time.time() - start:.0f} s on 2 cores)")
        records += [r.json_row() for r in rows]
        print(sections[-1], flush=True)
    (out / "calibrators.md").write_text("\n\n".join(sections) + "\n")
    (out / "calibrators.json").write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
