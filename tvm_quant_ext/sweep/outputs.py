"""The sweep's outputs: ``<out>.csv`` (one row per cell, appended as each cell finishes, with
the cell's key so a re-run skips it), then ``<out>.md`` (a table) and ``<out>.png`` (top-1 vs
bias bits, one line per calibrator and granularity, fp32 dashed)."""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Sequence, Tuple

from ..files import atomic_write
from .data import SweepPathError

CSV_COLUMNS = ("cell", "model", "dataset", "nbit_bias", "calibrate_mode", "weight_scale", "per_channel",
               "mode", "fp32_top1", "quant_top1", "fp32_top5", "quant_top5", "agreement", "snr_db",
               "n_images", "calib_images", "calibrate_s", "quantize_s", "compile_s", "run_s")
# compute seconds: they differ between runs; everything else in a row is reproducible
TIME_COLUMNS = ("calibrate_s", "quantize_s", "compile_s", "run_s")


def prepare_output(out: str) -> str:
    """Create ``out``'s folder and check it can be written (before any work); ``out``.csv."""
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise SweepPathError(f"--out {out}: cannot create the folder {folder} ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SweepPathError(f"--out {out}: the folder {folder} is not writable by this user")
    for path in (out + ".csv", out + ".md", out + ".png"):
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            raise SweepPathError(f"--out {out}: {path} exists and is not readable and writable")
    return out + ".csv"


def format_row(row: Dict) -> Dict:
    return {k: (f"{v:.4f}" if isinstance(v, float) and k.endswith(("top1", "top5", "agreement")) else v)
            for k, v in row.items()}


def write_csv(rows: Sequence[Dict], path: str) -> None:
    """All ``rows`` at once (replacing ``path`` whole)."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow(format_row(row))

    atomic_write(path, write)


def read_csv(path: str) -> List[Dict[str, object]]:
    with open(path) as f:
        return list(csv.DictReader(f))


class RowLog:
    """``path`` as a log of finished cells: ``done`` holds the rows already there (by cell
    key); ``append`` adds one row and flushes it to disk before returning."""

    def __init__(self, path: str):
        self.path = path
        self.done: Dict[str, Dict] = {}
        if not os.path.exists(path):
            write_csv([], path)
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                raise SweepPathError(
                    f"{path} exists with other columns than this sweep writes (one from an older "
                    "version?): move it away, or choose another --out")
            rows = list(reader)
        complete = [r for r in rows if None not in r.values()]
        if len(complete) != len(rows):  # a run killed while writing its last line
            write_csv(complete, path)
        self.done = {r["cell"]: r for r in complete}

    def append(self, row: Dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=CSV_COLUMNS).writerow(format_row(row))
            f.flush()
            os.fsync(f.fileno())
        self.done[row["cell"]] = read_row(format_row(row))


def read_row(row: Dict) -> Dict[str, str]:
    """``row`` as reading it back from the CSV gives it (every value a string)."""
    return {k: str(row[k]) for k in CSV_COLUMNS}


def markdown_table(rows: Sequence[Dict]) -> str:
    lines = ["| model | data (images) | calibrator (weights) | granularity | bias bits | fp32 top-1 "
             "| quant top-1 | fp32 top-5 | quant top-5 | agreement with fp32 | output SNR (dB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pc = str(r["per_channel"]) in ("True", "true", "1")
        lines.append(
            f"| {r['model']} | {r['dataset']} ({r['n_images']}) | {r['calibrate_mode']} ({r['weight_scale']}) "
            f"| {'per-channel' if pc else 'per-tensor'} | {r['nbit_bias']} | "
            + " | ".join(f"{100 * float(r[k]):.2f}" for k in ("fp32_top1", "quant_top1", "fp32_top5",
                                                             "quant_top5", "agreement"))
            + f" | {float(r['snr_db']):.1f} |")
    return "\n".join(lines)


def plot(rows: Sequence[Dict], path: str) -> None:
    """Top-1 vs bias bits: a panel per model, a line per calibrator/granularity, fp32 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == name]
        series: Dict[str, List[Tuple[int, float]]] = {}
        for r in mine:
            pc = str(r["per_channel"]) in ("True", "true", "1")
            key = f"{r['calibrate_mode']}, {'per-channel' if pc else 'per-tensor'}"
            series.setdefault(key, []).append((int(r["nbit_bias"]), 100 * float(r["quant_top1"])))
        bits = sorted({int(r["nbit_bias"]) for r in mine})
        for key, points in series.items():
            points.sort()
            ax.plot([b for b, _ in points], [t for _, t in points], marker="o",
                    linestyle="-" if "per-channel" in key else ":", label=key)
        ax.axhline(100 * float(mine[0]["fp32_top1"]), color="k", linestyle="--", linewidth=1, label="fp32")
        ax.set_xscale("log", base=2)
        ax.set_xticks(bits)
        ax.set_xticklabels([str(b) for b in bits])
        ax.set_xlabel("bias bits")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{name} ({mine[0]['dataset']}, {mine[0]['n_images']} images)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: Sequence[Dict], out: str) -> List[str]:
    """``out``.csv (replaced whole, rows in ``rows``' order), ``out``.md and ``out``.png; the paths."""
    prepare_output(out)
    paths = [out + ".csv", out + ".md", out + ".png"]
    write_csv(rows, paths[0])
    rows = read_csv(paths[0])  # one formatting for the table and the plot
    def table(tmp):
        with open(tmp, "w") as f:
            f.write(markdown_table(rows) + "\n")

    atomic_write(paths[1], table)
    plot(rows, paths[2])
    return paths


def grid_order(done: Dict[str, Dict], keys: Sequence[str]) -> Tuple[List[Dict], List[str]]:
    """The rows of ``keys`` in that order, then rows of other cells found in the CSV (kept, not
    dropped); and the keys that have no row yet."""
    missing = [k for k in keys if k not in done]
    rows = [done[k] for k in keys if k in done] + [r for k, r in done.items() if k not in set(keys)]
    return rows, missing
