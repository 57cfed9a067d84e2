"""QuantRunner: one float model through prepare, annotate, calibrate, realize and build, with
every stage that configs can share computed once.

Evaluations and sweeps quantize one model under many QConfigs. Configs that annotate alike
(``annotation_key``) share one annotated module; configs that also observe alike
(``calibration_key``) share one calibration run, the expensive stage. The caches live on the
runner, so they end with it: nothing is kept between models or between runs.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tvm
from tvm import relax

from . import passes
from .backend.build import CompiledModel, build
from .config import QConfig


def split_batches(images: np.ndarray, batch: int) -> List[np.ndarray]:
    """Whole batches of ``batch`` images (a last partial batch is left out: the model's batch
    dimension is fixed)."""
    usable = len(images) // batch * batch
    return [images[i:i + batch] for i in range(0, usable, batch)]


class ProgressBatches:
    """Batches that show a progress bar (on stderr) each time they are read: calibration reads
    them once, ``auto`` twice."""

    def __init__(self, batches: Sequence, desc: str):
        self.batches, self.desc = batches, desc

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        from tqdm import tqdm

        yield from tqdm(self.batches, desc=self.desc, unit="batch", file=sys.stderr)


class QuantRunner:
    """Quantize and compile ``mod`` (with ``params``) under any number of QConfigs.

    ``calib``: the calibration dataset (a list of input batches or dicts, as ``quantize``
    takes). ``log``: called with a line when a calibration run starts. ``progress``: a
    progress bar over the calibration batches.
    """

    def __init__(self, mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]],
                 calib: Sequence, target="llvm", name: str = "model",
                 log: Optional[Callable[[str], None]] = None, progress: bool = False):
        self.progress = progress
        self.mod = mod
        self.params = params
        self.calib = calib
        self.target = target
        self.name = name
        self.log = log
        self._prepared: Dict[bool, tvm.IRModule] = {}
        self._corrected: Dict[tuple, tvm.IRModule] = {}
        # precision gains depend on everything but the budget, bias correction (applied after
        # the raise) and the realize mode: one measurement per such config serves every budget
        self._gains: Dict[str, dict] = {}
        self._rounded: Dict[tuple, tvm.IRModule] = {}
        self._annotated: Dict[tuple, tvm.IRModule] = {}
        self._calibrated: Dict[tuple, passes.CalibrationResult] = {}

    @property
    def prepared(self) -> tvm.IRModule:
        return self.prepared_for(QConfig())

    def prepared_for(self, config: QConfig) -> tvm.IRModule:
        """The prepared module (equalized when ``config.equalize``)."""
        if config.equalize not in self._prepared:
            self._prepared[config.equalize] = passes.prepare(self.mod, self.params, config)
        return self._prepared[config.equalize]

    def annotated(self, config: QConfig) -> tvm.IRModule:
        key = passes.annotation_key(config)
        if key not in self._annotated:
            self._annotated[key] = passes.annotate(self.prepared_for(config), config)
        return self._annotated[key]

    def calibration(self, config: QConfig) -> "passes.CalibrationResult":
        key = passes.calibration_key(config)
        if key not in self._calibrated:
            if self.log is not None:
                self.log(f"[{self.name}] calibrating ({config.calibrate_mode}) on "
                         f"{sum(len(b) for b in self.calib)} images")
            calib = ProgressBatches(self.calib, f"calibrating {self.name}") if self.progress else self.calib
            self._calibrated[key] = passes.run_calibration(self.annotated(config), calib,
                                                           config, self.target)
        return self._calibrated[key]

    def use_calibration(self, config: QConfig, result: "passes.CalibrationResult") -> None:
        """Take ``result`` (computed elsewhere: in shards, or read from a cache) as the
        calibration of every config with ``config``'s calibration key."""
        self._calibrated[passes.calibration_key(config)] = result

    def quantized(self, config: QConfig, tap: bool = False) -> tvm.IRModule:
        """The realized module (``tap``: markers kept after every activation, for evaluation)."""
        return passes.realize(self.calibrated(config), config, tap=tap)

    def calibrated(self, config: QConfig) -> tvm.IRModule:
        """The annotated module with its scales (and its raised points, learned rounding and
        bias correction, computed once per calibration and ``correction_key``)."""
        calibrated = passes.attach_scales(self.annotated(config), self.calibration(config), config)
        if not (config.bias_correction or config.precision_budget > 0
                or config.weight_rounding != "nearest"):
            return calibrated
        # the raised points and the learned rounding do not depend on the bias correction
        # after them: shared by the configs that differ only in it
        rounded_key = passes.calibration_key(config) + passes.correction_key(config) + \
            passes.precision_key(config) + passes.rounding_key(config)
        key = rounded_key + (config.bias_correction,)
        if key not in self._corrected:
            gains_key = repr(sorted(config.replace(precision_budget=0.0, bias_correction=False,
                                                   mode="simulate").to_dict().items()))
            if rounded_key not in self._rounded:
                raised = passes.maybe_raise(calibrated, self.calib, config,
                                            self._gains.setdefault(gains_key, {}))
                self._rounded[rounded_key] = passes.maybe_round(raised, self.calib, config)
            self._corrected[key] = passes.maybe_correct(self._rounded[rounded_key], self.calib, config)
        return self._corrected[key]

    def compiled(self, config: QConfig, tap: bool = False) -> CompiledModel:
        return build(self.quantized(config, tap=tap), self.target)

    def float_model(self) -> CompiledModel:
        """The float model as given, params bound."""
        bound = relax.transform.BindParams("main", self.params)(self.mod) if self.params else self.mod
        return build(bound, self.target)

    def tapped_float_model(self, config: QConfig) -> CompiledModel:
        """The prepared float model with ``config``'s markers left in: identities that let an
        evaluation read each float tensor under the id of its quantization point."""
        return build(self.annotated(config), self.target)
