"""prepare: stable layer names, bound params, BatchNorm folded, one canonical bias add.

``naming.py`` names every binding after its layer (the ids every later stage uses),
``bias.py`` folds per-channel affine ops into each layer's weights and one bias add; between
them TVM's own passes bind the params, decompose BatchNorm for inference and fold constants.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tvm
from tvm import relax

from ...graph import GraphError
from .bias import CanonicalizeBias
from .naming import NameLayers


def CheckParams(params: Dict[str, np.ndarray]):  # pylint: disable=invalid-name
    """Every given param must be a parameter of main (a typo would bind nothing, silently)."""

    @tvm.transform.module_pass(opt_level=0, name="CheckParams")
    def _pass(mod, _ctx):
        names = {p.name for p in mod["main"].params}
        missing = sorted(set(params) - names)
        if missing:
            raise GraphError(f"params {missing[:5]} are not parameters of main "
                             f"(main takes {sorted(names)[:8]}...)")
        return mod

    return _pass


def PrepareForQuantization(params: Optional[Dict[str, np.ndarray]] = None):  # pylint: disable=invalid-name
    """The whole prepare stage as one pass: names, params, BatchNorm folding, bias canonical form."""
    steps = [NameLayers]
    if params:
        steps = [CheckParams(params), NameLayers,
                 relax.transform.BindParams("main", {k: np.asarray(v) for k, v in params.items()})]
    steps += [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
        CanonicalizeBias,
        relax.transform.FoldConstant(),
    ]
    return tvm.transform.Sequential(steps, name="PrepareForQuantization")


def prepare(mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]] = None) -> tvm.IRModule:
    return PrepareForQuantization(params)(mod)
