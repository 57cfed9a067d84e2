"""tvm_quant_ext: post-training quantization for Apache TVM (Relax) with bias as its own kind.

    mod = tvm_quant_ext.quantize(mod, params, dataset=calib_batches, config=QConfig(nbit_bias=32))
    model = tvm_quant_ext.build(mod, target="llvm")
    logits = model(images)
    print(tvm_quant_ext.get_report(mod).summary())
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import tvm

from . import passes
from .backend import CompiledModel, build, make_target
from .config import QConfig, QKind
from .passes.annotate import UnsupportedOpError
from .qmath import BiasOverflowError
from .report import QuantReport, get_report

__version__ = "0.1.0"


def quantize_pipeline(params: Optional[Dict[str, np.ndarray]] = None,
                      dataset: Optional[Iterable] = None, config: Optional[QConfig] = None,
                      target="llvm") -> tvm.transform.Pass:
    """The whole quantizer as one ``tvm.transform.Sequential``; ``print`` it to see the stages."""
    config = config or QConfig()
    return tvm.transform.Sequential([
        passes.PrepareForQuantization(params, config),
        passes.Annotate(config),
        passes.Calibrate(dataset, config, target),
        passes.RaisePrecision(dataset, config),
        passes.RoundWeights(dataset, config),
        passes.CorrectBias(dataset, config),
        passes.Realize(config),
    ], name="Quantize")


def quantize(mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]] = None,
             dataset: Optional[Iterable] = None, config: Optional[QConfig] = None,
             target="llvm") -> tvm.IRModule:
    """prepare -> annotate -> calibrate -> realize, the way relay.quantize did.

    ``dataset``: an iterable of input dicts (by input name) or arrays (single-input models).
    The returned module computes the quantized model; ``get_report(mod)`` describes it.
    """
    return quantize_pipeline(params, dataset, config, target)(mod)


__all__ = [
    "BiasOverflowError", "CompiledModel", "QConfig", "QKind", "QuantReport",
    "UnsupportedOpError", "build", "get_report", "make_target", "passes", "quantize",
    "quantize_pipeline",
]
