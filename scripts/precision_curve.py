"""Mixed precision on a zoo model: budget -> points raised, output SNR in simulate and integer
mode, and integer-vs-simulate agreement per point, in one run.

    python scripts/precision_curve.py [--model efficientnet_lite0] [--budgets 0 0.05 0.1 0.2 0.3]
                                      [--integer 0.1] [--limit N] [--out docs/precision_curve.json]

Protocol: the one of scripts/accuracy_table.py (zoo calibration images, zoo eval sets,
aggregate output SNR against fp32). Base config: asymmetric activations + bias correction
(``QConfig.preset("accurate")``), ``precision_budget`` varied; one gain measurement serves every
budget (the runner caches it). For the ``--integer`` budgets the integer build is evaluated next
to its simulate twin: per point, max |integer - simulate| in 8-bit LSB (a 16-bit point's own
LSB is 2^8 times finer, so its difference is divided by its 16-bit/8-bit scale ratio).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tvm_quant_ext import QConfig, zoo
from tvm_quant_ext.evaluate import evaluate
from tvm_quant_ext.runner import QuantRunner, split_batches

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0", choices=sorted(zoo.MODELS))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--integer", type=float, nargs="*", default=[0.1])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "docs" / "precision_curve.json"))
    args = parser.parse_args(argv)

    def log(*a):
        print(*a, file=sys.stderr, flush=True)

    model = zoo.load(args.model)
    runner = QuantRunner(model.mod, model.params, split_batches(model.calib, model.batch_size),
                         name=args.model, log=log)
    base = QConfig.preset("accurate")
    configs = [base.replace(precision_budget=b) for b in args.budgets]
    configs += [base.replace(precision_budget=b, mode="integer") for b in args.integer]
    seconds = []
    for config in configs:
        start = time.time()
        runner.quantized(config)
        seconds.append(time.time() - start)
        log(f"budget {config.precision_budget} {config.mode}: {seconds[-1]:.1f} s")
    rows = evaluate(model, configs, limit=args.limit, runner=runner, progress=False, log=log)
    out = []
    for config, row, s in zip(configs, rows, seconds):
        precision = row.report.precision or {}
        raised = precision.get("raised", [])
        record = {"budget": config.precision_budget, "mode": config.mode,
                  "layers": precision.get("layers"), "raised": raised,
                  "snr_all_quantized_measure_db": precision.get("snr_all_quantized_db"),
                  "snr_raised_measure_db": precision.get("snr_raised_db"),
                  "measured_batches": precision.get("measured_batches"),
                  "snr_db": row.snr_db, "agree": round(row.agreement * row.n_images),
                  "n": row.n_images, "top1": row.quant_top1, "n_labeled": row.n_labeled,
                  "worst_layers": row.worst_layers, "quantize_s": s}
        if row.layer_lsb_vs_simulate:
            bits = {pid: b for pid, b, _g in raised}
            lsb8 = {pid: v / (2 ** (bits[pid] - 8) if pid in bits else 1)
                    for pid, v in row.layer_lsb_vs_simulate.items()}
            worst = sorted(lsb8.items(), key=lambda kv: -kv[1])[:8]
            record.update(lsb_vs_simulate_own=row.lsb_vs_simulate,
                          lsb8_worst=[[p, round(v, 3), bits.get(p, 8)] for p, v in worst],
                          lsb8_max_raised=max((lsb8[p] for p in bits if p in lsb8), default=None),
                          lsb8_max_8bit=max((v for p, v in lsb8.items() if p not in bits), default=None))
        out.append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "worst_layers"}), flush=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "rows": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
