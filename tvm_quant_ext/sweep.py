"""The bias-precision sweep: top-1/top-5 over nbit_bias x calibrator x granularity x model.

    tvm-quant sweep --model resnet101_v2 --params resnet101_v2.params --data val.rec \\
        --num-images 3000 --nbit-bias 8 9 16 32 --calibrators power2 max --out docs/sweep
    tvm-quant sweep --model fashion_resnet_v2 --num-images 10000 ...

A grid cell is :func:`run_cell` (runner, config, data slice) -> row. One ``QuantRunner`` per
model serves its cells: the fp32 logits are computed once per model and the calibration
statistics once per calibration key, and both end with the model's part of the grid.

Models: the Gluon model zoo's ``resnet{18,34,50,101,152}_v{1,2}`` (weights from a local
``--params`` file; nothing is downloaded), imported with ``from_mxnet``; or any
``tvm_quant_ext.zoo`` model.  Data (``--data``): an ImageNet-style RecordIO ``.rec`` (with its
``.idx``; labels from the record headers), or an image folder (one sub-folder per class, named
by the class index or sorted into indices, or flat files named ``*_<label>.<ext>``); default:
the zoo model's own labeled eval set.  Gluon ImageNet models get the standard preprocessing:
RGB, short side to 256, centre crop 224, /255, mean (0.485, 0.456, 0.406), std (0.229, 0.224,
0.225).  Calibration uses the ``--calib-images`` images that follow the evaluated slice (with
``--data``) or the zoo model's calibration images.

Outputs: ``<out>.csv`` (one row per cell), ``<out>.md`` (a table) and ``<out>.png`` (top-1 vs
bias bits, one line per calibrator and granularity, fp32 dashed).
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backend.build import build
from .config import MODES, QConfig
from .runner import QuantRunner, split_batches
from . import zoo
from .zoo import imagenet_preprocess, read_folder, read_records

GLUON_IMAGENET_MODELS = tuple(f"resnet{d}_v{v}" for v in (1, 2) for d in (18, 34, 50, 101, 152))
CSV_COLUMNS = ("model", "dataset", "nbit_bias", "calibrate_mode", "weight_scale", "per_channel", "mode",
               "fp32_top1", "quant_top1", "fp32_top5", "quant_top5", "agreement", "n_images",
               "calib_images", "quantize_s", "compile_s", "run_s")


# --------------------------------------------------------------------------- #
# models and data
# --------------------------------------------------------------------------- #
@dataclass
class SweepModel:
    name: str
    mod: object                       # Relax module, main(input, *weights)
    params: Dict[str, np.ndarray]
    batch_size: int
    preprocess: Callable              # PIL image -> float32 (C, H, W)
    default_data: Optional["SweepData"] = None  # the zoo model's labeled eval set
    default_calib: Optional[np.ndarray] = None


@dataclass
class SweepData:
    name: str
    images: np.ndarray                # preprocessed float32 (N, C, H, W)
    labels: np.ndarray                # int64 (N,)
    calib: np.ndarray                 # preprocessed calibration images


def load_model(name: str, batch_size: int, params: Optional[str] = None) -> SweepModel:
    """A Gluon ImageNet ResNet (weights from ``params``) or a tvm_quant_ext zoo model."""
    if name in GLUON_IMAGENET_MODELS:
        if not params:
            raise ValueError(f"model {name!r} needs --params: a local Gluon .params file "
                             "(nothing is downloaded)")
        if not os.path.exists(params):
            raise FileNotFoundError(f"--params {params} does not exist")
        from mxnet.gluon.model_zoo import vision

        from .frontend import from_mxnet

        net = vision.get_model(name, pretrained=False)
        net.load_parameters(params)
        mod, weights = from_mxnet(net, {"data": (batch_size, 3, 224, 224)})
        return SweepModel(name, mod, weights, batch_size, imagenet_preprocess)
    if name in zoo.MODELS:
        if params:
            raise ValueError(f"zoo model {name!r} brings its own weights; drop --params")
        zm = zoo.load(name, batch_size=batch_size)
        labeled = [s for s in zm.eval_sets if s.labels is not None]
        default = SweepData(labeled[0].name, labeled[0].images, labeled[0].labels, zm.calib) if labeled else None
        return SweepModel(name, zm.mod, zm.params, batch_size, zm.preprocess, default, zm.calib)
    raise ValueError(f"unknown model {name!r}; choose a Gluon ImageNet ResNet "
                     f"({', '.join(GLUON_IMAGENET_MODELS)}) or a zoo model ({', '.join(zoo.MODELS)})")


def load_data(model: SweepModel, data: Optional[str], num_images: int, calib_images: int) -> SweepData:
    """The evaluated slice (first ``num_images``) and the calibration images."""
    if data is None:
        if model.default_data is None:
            raise ValueError(f"model {model.name!r} has no labeled data of its own; pass --data")
        d = model.default_data
        return SweepData(d.name, d.images[:num_images], d.labels[:num_images], d.calib[:calib_images])
    reader = read_records if data.endswith(".rec") else read_folder
    if not (os.path.isdir(data) or data.endswith(".rec")):
        raise ValueError(f"--data {data}: expected a .rec file or an image folder")
    pairs = reader(data, num_images + calib_images)
    evaluated, rest = pairs[:num_images], pairs[num_images:]
    # a small set has no images left after the evaluated slice: calibrate on its start
    calib = (rest or pairs)[:calib_images]
    images = np.stack([model.preprocess(img) for img, _ in evaluated])
    return SweepData(os.path.basename(data.rstrip("/")), images,
                     np.array([label for _, label in evaluated], np.int64),
                     np.stack([model.preprocess(img) for img, _ in calib]))


# --------------------------------------------------------------------------- #
# one cell
# --------------------------------------------------------------------------- #
MATCHED = "matched"  # weight scales follow the calibrator: power2 with power2, else max


def make_config(nbit_bias: int, calibrator: str, per_channel: bool, weight_scale: str = MATCHED,
                mode: str = "simulate") -> QConfig:
    """The study's configuration: ``calibrator`` for activations; weights power2 when the
    calibrator is power2 and max otherwise (``weight_scale='matched'``; any calibrator name,
    including "auto", is passed to QConfig as is). ``mode``: simulate or integer realize."""
    if weight_scale == MATCHED:
        weight_scale = "power2" if calibrator == "power2" else "max"
    return QConfig(nbit_bias=nbit_bias, nbit_activation=max(32, nbit_bias), calibrate_mode=calibrator,
                   weight_scale=weight_scale, per_channel=per_channel, mode=mode)


def _run(compiled, images: np.ndarray, batch: int) -> np.ndarray:
    outs = [np.asarray(compiled(x)).reshape(batch, -1) for x in split_batches(images, batch)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return int(np.sum(np.any(top == labels[:, None], axis=1)))


def make_runner(model: SweepModel, data: SweepData, target="llvm") -> QuantRunner:
    """The model's runner, calibrating on ``data.calib``: cells of one model share it."""
    return QuantRunner(model.mod, model.params, split_batches(data.calib, model.batch_size),
                       target, name=model.name)


def fp32_logits(runner: QuantRunner, data: SweepData, batch: int) -> np.ndarray:
    """The float model's outputs on the evaluated slice."""
    return _run(runner.float_model(), data.images, batch)


def run_cell(runner: QuantRunner, config: QConfig, data: SweepData, reference: np.ndarray,
             batch: int) -> Dict[str, object]:
    """Quantize the runner's model with ``config`` (calibrated on ``data.calib``, shared by
    cells with the same calibration key), run the evaluated slice, compare with the labels
    and with the fp32 ``reference`` logits; one CSV row."""
    start = time.time()
    realized = runner.quantized(config)
    quantize_s = time.time() - start
    start = time.time()
    compiled = build(realized, runner.target)
    compile_s = time.time() - start
    start = time.time()
    logits = _run(compiled, data.images, batch)
    run_s = time.time() - start
    labels = data.labels[:len(logits)]
    n = len(labels)
    return {
        "model": runner.name, "dataset": data.name, "nbit_bias": config.nbit_bias,
        "calibrate_mode": config.calibrate_mode, "weight_scale": config.weight_scale,
        "per_channel": config.per_channel, "mode": config.mode,
        "fp32_top1": _topk_correct(reference, labels, 1) / n,
        "quant_top1": _topk_correct(logits, labels, 1) / n,
        "fp32_top5": _topk_correct(reference, labels, 5) / n,
        "quant_top5": _topk_correct(logits, labels, 5) / n,
        "agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
        "n_images": n, "calib_images": len(data.calib),
        "quantize_s": round(quantize_s, 1), "compile_s": round(compile_s, 1), "run_s": round(run_s, 1),
    }


# --------------------------------------------------------------------------- #
# the grid and its outputs
# --------------------------------------------------------------------------- #
def validate_calibrators(names: Sequence[str]) -> List[str]:
    from calibrate import OBSERVERS

    from .config import AUTO

    known = sorted(OBSERVERS) + [AUTO]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown calibrator(s) {unknown}; known: {known}")
    return list(names)


def sweep(models: Sequence[str], nbit_bias: Sequence[int], calibrators: Sequence[str],
          granularities: Sequence[bool], *, params: Optional[str] = None, data: Optional[str] = None,
          num_images: int = 3000, calib_images: int = 100, batch_size: int = 1,
          weight_scale: str = MATCHED, mode: str = "simulate", target="llvm", progress: bool = True,
          on_row: Optional[Callable[[Dict], None]] = None) -> List[Dict[str, object]]:
    """Every cell of models x calibrators x granularities x nbit_bias, one row each."""
    from tqdm import tqdm

    calibrators = validate_calibrators(calibrators)
    configs = [make_config(bits, cal, pc, weight_scale, mode)  # validates every cell before any work
               for cal in calibrators for pc in granularities for bits in nbit_bias]
    rows = []
    bar = tqdm(total=len(models) * len(configs), desc="sweep", unit="cell", disable=not progress)
    for name in models:
        model = load_model(name, batch_size, params)
        dataset = load_data(model, data, num_images, calib_images)
        if len(dataset.images) < batch_size:
            raise ValueError(f"{name}: {len(dataset.images)} image(s) is less than one batch of {batch_size}")
        runner = make_runner(model, dataset, target)
        reference = fp32_logits(runner, dataset, batch_size)
        for config in configs:
            bar.set_postfix_str(f"{name} {config.calibrate_mode} "
                                f"{'per-channel' if config.per_channel else 'per-tensor'} {config.nbit_bias}b")
            row = run_cell(runner, config, dataset, reference, batch_size)
            rows.append(row)
            if on_row:
                on_row(row)
            bar.update(1)
    bar.close()
    return rows


def write_csv(rows: Sequence[Dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k.endswith(("top1", "top5", "agreement"))
                                 else v) for k, v in row.items()})


def read_csv(path: str) -> List[Dict[str, object]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def markdown_table(rows: Sequence[Dict]) -> str:
    lines = ["| model | data (images) | calibrator (weights) | granularity | bias bits | fp32 top-1 "
             "| quant top-1 | fp32 top-5 | quant top-5 | agreement with fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pc = str(r["per_channel"]) in ("True", "true", "1")
        lines.append(
            f"| {r['model']} | {r['dataset']} ({r['n_images']}) | {r['calibrate_mode']} ({r['weight_scale']}) "
            f"| {'per-channel' if pc else 'per-tensor'} | {r['nbit_bias']} | "
            + " | ".join(f"{100 * float(r[k]):.2f}" for k in ("fp32_top1", "quant_top1", "fp32_top5",
                                                             "quant_top5", "agreement")) + " |")
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
    """``out``.csv, ``out``.md and ``out``.png; returns the paths."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    paths = [out + ".csv", out + ".md", out + ".png"]
    write_csv(rows, paths[0])
    rows = read_csv(paths[0])  # one formatting for the table and the plot
    with open(paths[1], "w") as f:
        f.write(markdown_table(rows) + "\n")
    plot(rows, paths[2])
    return paths


def add_arguments(parser) -> None:
    """The sweep's options (shared by ``tvm-quant sweep`` and scripts/imagenet_sweep.py)."""
    parser.add_argument("--model", nargs="+", required=True,
                        help=f"Gluon ImageNet ResNets ({GLUON_IMAGENET_MODELS[0]} ... "
                             f"{GLUON_IMAGENET_MODELS[-1]}) or zoo model names")
    parser.add_argument("--params", help="local Gluon .params file for a Gluon ImageNet model")
    parser.add_argument("--data", help="ImageNet-style .rec (+ .idx) or image folder; default: the "
                                       "zoo model's labeled eval set")
    parser.add_argument("--num-images", type=int, default=3000, help="evaluate the first N images")
    parser.add_argument("--calib-images", type=int, default=100, help="calibration images")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--nbit-bias", type=int, nargs="+", default=[8, 9, 16, 32])
    parser.add_argument("--calibrators", nargs="+", default=["power2"],
                        help="activation calibrators (names in calibrate.OBSERVERS, or auto)")
    parser.add_argument("--weight-scale", default=MATCHED,
                        help="weight calibrator; 'matched' (default): power2 with the power2 "
                             "calibrator, else max")
    parser.add_argument("--granularity", nargs="+", default=["per-tensor", "per-channel"],
                        choices=["per-tensor", "per-channel"])
    parser.add_argument("--out", default=os.path.join("docs", "bias_sweep"),
                        help="output prefix: writes OUT.csv, OUT.md, OUT.png")
    parser.add_argument("--mode", default="simulate", choices=MODES,
                        help="simulate (fake-quant in float64) or integer realize (int8 between "
                             "layers); the two agree within one LSB")
    parser.add_argument("--no-progress", action="store_true")


def run_from_args(args) -> int:
    partial = args.out + ".partial.csv"
    done: List[Dict] = []

    def checkpoint(row):  # a long sweep keeps what it measured if it is stopped
        done.append(row)
        write_csv(done, partial)

    rows = sweep(args.model, args.nbit_bias, args.calibrators,
                 [g == "per-channel" for g in args.granularity], params=args.params, data=args.data,
                 num_images=args.num_images, calib_images=args.calib_images,
                 batch_size=args.batch_size, weight_scale=args.weight_scale, mode=args.mode,
                 progress=not args.no_progress, on_row=checkpoint)
    paths = write_outputs(rows, args.out)
    if os.path.exists(partial):
        os.remove(partial)
    print(markdown_table(read_csv(paths[0])))
    print("wrote " + ", ".join(paths))
    return 0
