"""prepare: stable layer names, bound params, BatchNorm folded, one canonical bias add.

``naming.py`` names every binding after its layer (the ids every later stage uses),
``bias.py`` folds per-channel affine ops into each layer's weights and one bias add
(``equalize.py`` then optionally rescales conv pairs, QConfig.equalize); between
them TVM's own passes bind the params, decompose BatchNorm for inference and fold constants.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tvm
from tvm import relax

from ...graph import GraphError
from ...points import STATE_ATTR
from ...config import QConfig
from .bias import CanonicalizeBias
from .equalize import EQUALIZE_ATTR, EqualizeLayers
from .naming import NameLayers


def _static_shape(param) -> Optional[tuple]:
    shape = getattr(param.ty, "shape", None)
    if shape is None:
        return None
    dims = []
    for dim in shape:
        if not isinstance(dim, tvm.tirx.IntImm):
            return None
        dims.append(int(dim))
    return tuple(dims)


def CheckInputs():  # pylint: disable=invalid-name
    """main must be a float model with static shapes: the quantizer reads every tensor's shape,
    and quantizing a quantized module would quantize its codes again."""

    @tvm.transform.module_pass(opt_level=0, name="CheckInputs")
    def _pass(mod, _ctx):
        if mod.attrs is not None and STATE_ATTR in mod.attrs:
            raise GraphError("this module is already quantized (it carries a quantization "
                             "report); quantize the float module it came from")
        for param in mod["main"].params:
            if isinstance(param.ty, relax.TensorType) and _static_shape(param) is None:
                raise GraphError(
                    f"input {param.name!r} has shape {param.ty.shape} with symbolic or unknown "
                    "dimensions; fix them at import (from_onnx(path, shape={"
                    f"{param.name!r}: (1, 3, 224, 224)}}), or tvm-quant --input-shape "
                    f"{param.name}=1,3,224,224)")
        return mod

    return _pass


def checked_params(mod: tvm.IRModule, params: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``params`` checked against main's parameters: every name must be one (a typo would bind
    nothing, silently) and every shape must match. float64 arrays for float32 parameters (numpy's
    default dtype) are cast to float32; any other dtype mismatch is an error."""
    by_name = {p.name: p for p in mod["main"].params}
    missing = sorted(set(params) - set(by_name))
    if missing:
        raise GraphError(f"params {missing[:5]} are not parameters of main "
                         f"(main takes {sorted(by_name)[:8]}...)")
    out = {}
    for name, value in params.items():
        value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        expected, dtype = _static_shape(by_name[name]), str(by_name[name].ty.dtype)
        if expected is not None and value.shape != expected:
            raise GraphError(f"param {name!r} has shape {value.shape}, main's parameter "
                             f"expects {expected}: the weights do not belong to this model")
        if str(value.dtype) != dtype:
            if not (value.dtype == np.float64 and dtype == "float32"):
                raise GraphError(f"param {name!r} is {value.dtype}, main's parameter is {dtype}")
            value = value.astype(np.float32)
        out[name] = value
    return out


def BindCheckedParams(params: Dict[str, np.ndarray]):  # pylint: disable=invalid-name
    """relax.transform.BindParams of :func:`checked_params`."""

    @tvm.transform.module_pass(opt_level=0, name="BindCheckedParams")
    def _pass(mod, _ctx):
        return relax.transform.BindParams("main", checked_params(mod, params))(mod)

    return _pass


def PrepareForQuantization(params: Optional[Dict[str, np.ndarray]] = None,  # pylint: disable=invalid-name
                           config: Optional[QConfig] = None):
    """The whole prepare stage as one pass: names, params, BatchNorm folding, bias canonical
    form, and cross-layer equalization when ``config.equalize``."""
    steps = [CheckInputs(), NameLayers]
    if params:
        steps.append(BindCheckedParams(params))
    steps += [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        CanonicalizeBias,
        relax.transform.FoldConstant(),
    ]
    if config is not None and config.equalize:
        steps.append(EqualizeLayers)
    return tvm.transform.Sequential(steps, name="PrepareForQuantization")


def prepare(mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]] = None,
            config: Optional[QConfig] = None) -> tvm.IRModule:
    return PrepareForQuantization(params, config)(mod)


__all__ = ["BindCheckedParams", "CanonicalizeBias", "CheckInputs", "EQUALIZE_ATTR",
           "EqualizeLayers", "NameLayers", "PrepareForQuantization", "checked_params", "prepare"]
