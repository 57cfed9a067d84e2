"""The quantization passes on Relax, one folder or file per stage, in pipeline order:

``prepare/`` (names, params, BatchNorm, bias) -> ``annotate.py`` (quantization points) ->
``calibration.py`` (observers over the dataset; calibrator choice in ``calibrators.py``) ->
``adaround.py`` (optional: learned weight rounding) ->
``bias_correction.py`` (optional: per-layer mean output error out of the biases) ->
``realize/`` (the layer plan, then simulate or integer).
"""
import tvm_ffi

from calibrate import CalibrationError

from ..graph import DuplicateRuleError, GraphError
from ..qmath import BiasOverflowError
from .annotate import (ANNOTATE_RULES, Annotate, UnsupportedOpError, annotate, annotation_key,
                       register_annotate)
from .calibration import (Calibrate, CalibrationResult, attach_scales, calibrate, calibration_key,
                          iter_batches, run_calibration)
from .adaround import RoundWeights, maybe_round, round_weights, rounding_key
from .bias_correction import CorrectBias, correct_biases, correction_key, maybe_correct
from .precision import RaisePrecision, maybe_raise, precision_key, raise_precision
from .prepare import CanonicalizeBias, NameLayers, PrepareForQuantization, prepare
from .realize import REALIZE_RULES, REALIZERS, Realize, realize, register_realize
from .realize.integer import INTEGER_RULES, register_integer

# The passes run inside tvm.transform's FFI: an exception raised there comes back to the caller
# as a RuntimeError unless its class is registered, so a user would no longer catch
# BiasOverflowError or GraphError by type.
for _error in (BiasOverflowError, CalibrationError, DuplicateRuleError, GraphError,
               UnsupportedOpError):
    tvm_ffi.register_error(_error)

__all__ = [
    "ANNOTATE_RULES", "Annotate", "CorrectBias", "correct_biases", "correction_key",
    "maybe_correct", "RoundWeights", "maybe_round", "round_weights", "rounding_key", "RaisePrecision", "maybe_raise", "precision_key", "raise_precision", "annotation_key", "Calibrate", "CalibrationResult", "CanonicalizeBias",
    "INTEGER_RULES", "NameLayers", "PrepareForQuantization", "REALIZERS", "REALIZE_RULES",
    "Realize", "UnsupportedOpError", "annotate", "attach_scales", "calibrate",
    "calibration_key", "iter_batches", "prepare", "realize", "register_annotate",
    "register_integer", "register_realize", "run_calibration",
]
