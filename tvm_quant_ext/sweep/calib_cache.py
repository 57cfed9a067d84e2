"""Calibration results on disk, so a re-run or a second grid over the same model and data
calibrates nothing again. One ``.npz`` per (model, data slice, ``calibration_key``), written
atomically, holding plain arrays (``result_arrays``) and its own key, checked on reading."""
from __future__ import annotations

import hashlib
import os
from typing import Optional

import numpy as np

from ..config import QConfig
from ..files import atomic_write
from ..passes import CalibrationResult, calibration_key
from ..passes.calibration_shards import result_arrays, result_from_arrays
from ..zoo import cache_root
from .data import DataSpec, SweepPathError

# Bump when what a cached calibration means changes (observers, the sweep's data slicing).
CACHE_VERSION = "1"


def default_folder() -> str:
    return os.path.join(cache_root(), "calibration")


def prepare_folder(folder: str) -> str:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise SweepPathError(f"--calib-cache {folder}: cannot create it ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SweepPathError(f"--calib-cache {folder} is not writable by this user: pick another "
                             "folder, or pass --no-calib-cache")
    return folder


def _stamp(path: Optional[str]) -> str:
    """A file's identity without reading it all (a val.rec is gigabytes): path, size, mtime."""
    if not path:
        return "-"
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(spec: DataSpec, calib_range, config: QConfig, target) -> str:
    """Everything the calibration's numbers depend on, as one string."""
    index = os.path.splitext(spec.data)[0] + ".idx" if spec.data and spec.data.endswith(".rec") else None
    return "|".join([CACHE_VERSION, spec.model, _stamp(spec.params), _stamp(spec.data), _stamp(index),
                     f"calib {calib_range[0]}+{calib_range[1]} batch {spec.batch_size}", str(target),
                     repr(calibration_key(config))])


class CalibrationCache:
    """``get``/``put`` by ``cache_key``; ``folder`` None: nothing is kept."""

    def __init__(self, folder: Optional[str]):
        self.folder = prepare_folder(folder) if folder else None

    def path(self, model: str, key: str) -> str:
        return os.path.join(self.folder, f"{model}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz")

    def get(self, model: str, key: str) -> Optional[CalibrationResult]:
        if self.folder is None or not os.path.exists(self.path(model, key)):
            return None
        with np.load(self.path(model, key), allow_pickle=False) as f:
            if str(f["cache_key"]) != key:  # a hash collision, however unlikely, is a miss
                return None
            return result_from_arrays(f)

    def put(self, model: str, key: str, result: CalibrationResult) -> None:
        if self.folder is None:
            return
        arrays = {**result_arrays(result), "cache_key": np.array(key)}

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(self.path(model, key), write)
