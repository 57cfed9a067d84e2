"""The bias-precision sweep: top-1/top-5/SNR over nbit_bias x calibrator x granularity x model.

    tvm-quant sweep --model resnet101_v2 --params resnet101_v2.params --data val.rec \\
        --num-images 3000 --nbit-bias 8 9 16 32 --calibrators power2 max --out docs/sweep
    tvm-quant sweep --model fashion_resnet_v2 --num-images 10000 --workers 2 ...
    tvm-quant sweep ... --scheduler tcp://host:8786      # an existing Dask cluster

In pipeline order: ``data.py`` (models and images from names and paths), ``cells.py`` (the
grid's cells, their keys and exactly-adding counts), ``worker.py`` (the tasks and what a worker
caches), ``calib_cache.py`` (calibrations on disk), ``cluster.py`` (in this process or on
Dask), ``grid.py`` (the driver), ``outputs.py`` (CSV row by row, table, plot), ``command.py``
(the command line). Calibration is sharded over workers and merged exactly
(``passes/calibration_shards.py``); a cell's images are split into ranges whose counts add
exactly, so a cluster's CSV equals a serial run's (all but the seconds columns).
"""
from ..zoo import imagenet_preprocess, read_folder, read_records
from .cells import MATCHED, Cell, Counts, cell_key, make_config, validate_calibrators
from .cluster import open_tasks
from .command import add_arguments, run_from_args
from .data import (GLUON_IMAGENET_MODELS, DataSpec, SweepData, SweepModel, SweepPathError, load_data,
                   load_model)
from .grid import sweep
from .outputs import (CSV_COLUMNS, TIME_COLUMNS, RowLog, markdown_table, plot, read_csv, write_csv,
                      write_outputs)
from .worker import CRASH_ONCE_ENV, fp32_logits, make_runner

__all__ = [
    "CRASH_ONCE_ENV", "CSV_COLUMNS", "Cell", "Counts", "DataSpec", "GLUON_IMAGENET_MODELS", "MATCHED",
    "RowLog", "SweepData", "SweepModel", "SweepPathError", "TIME_COLUMNS", "add_arguments", "cell_key",
    "fp32_logits", "imagenet_preprocess", "load_data", "load_model", "make_config", "make_runner",
    "markdown_table", "open_tasks", "plot", "read_csv", "read_folder", "read_records", "run_from_args",
    "sweep", "validate_calibrators", "write_csv", "write_outputs",
]
