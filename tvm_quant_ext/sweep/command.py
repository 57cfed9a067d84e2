"""``tvm-quant sweep``'s options and its run: every path checked (and the output folder made)
before the first task, the CSV appended cell by cell and re-read on a re-run, so an
interrupted grid resumes where it stopped."""
from __future__ import annotations

import os

from ..config import MODES
from .calib_cache import default_folder, prepare_folder
from .cells import MATCHED
from .cluster import open_tasks
from .data import GLUON_IMAGENET_MODELS, check_inputs
from .grid import sweep
from .outputs import RowLog, grid_order, markdown_table, prepare_output, read_csv, write_outputs


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
                        help="output prefix: writes OUT.csv (row by row; a re-run skips the cells "
                             "in it), OUT.md, OUT.png; the folder is created")
    parser.add_argument("--mode", default="simulate", choices=MODES,
                        help="simulate (fake-quant in float64) or integer realize (int8 between "
                             "layers); the two agree within one LSB")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the tasks on an existing Dask cluster (tcp://host:8786)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="start a Dask LocalCluster of N worker processes on this machine")
    parser.add_argument("--shard-images", type=int, metavar="N",
                        help="images per evaluation task (default: all of a cell in one process; "
                             "on a cluster about two tasks per worker and cell, at most 1000)")
    parser.add_argument("--calib-cache", metavar="DIR",
                        help="folder of cached calibrations (default: $TVM_QUANT_EXT_CACHE/"
                             "calibration or ~/.cache/tvm_quant_ext/calibration)")
    parser.add_argument("--no-calib-cache", action="store_true", help="calibrate afresh, cache nothing")
    parser.add_argument("--no-progress", action="store_true")


def run_from_args(args) -> int:
    # every path first: a typo should cost nothing, not the first cell's compute
    for name in args.model:
        check_inputs(name, args.params, args.data)
    csv_path = prepare_output(args.out)
    calib_cache = None if args.no_calib_cache else prepare_folder(args.calib_cache or default_folder())
    if args.shard_images is not None and args.shard_images < 1:
        raise ValueError(f"--shard-images {args.shard_images}: give at least 1")
    log = RowLog(csv_path)  # rows of an earlier run of this --out are kept and skipped
    if log.done:
        print(f"{csv_path}: {len(log.done)} cell(s) already measured; computing the rest")
    with open_tasks(args.scheduler, args.workers) as tasks:
        rows = sweep(args.model, args.nbit_bias, args.calibrators,
                     [g == "per-channel" for g in args.granularity], params=args.params, data=args.data,
                     num_images=args.num_images, calib_images=args.calib_images,
                     batch_size=args.batch_size, weight_scale=args.weight_scale, mode=args.mode,
                     progress=not args.no_progress, on_row=log.append, tasks=tasks,
                     shard_images=args.shard_images, calib_cache=calib_cache, done=log.done)
    # the CSV again, whole, in grid order (rows were appended as cells finished)
    ordered, _ = grid_order(log.done, [r["cell"] for r in rows])
    paths = write_outputs(ordered, args.out)
    print(markdown_table(read_csv(paths[0])))
    print("wrote " + ", ".join(paths))
    return 0
