"""PyTorch -> ONNX -> Relax, through the TorchScript ONNX exporter and ONNX Runtime.

    mod, params = from_torch(model, example)            # example: numpy array or torch tensor
    export_onnx(model, example, "model.onnx")            # only the ONNX file (then from_onnx)

:func:`export_onnx`: ``torch.onnx.export`` (opset 17, TorchScript exporter (``dynamo=False``),
constant folding, the batch fixed by ``example``, input ``"input"``, output ``"logits"``) ->
one ONNX Runtime session with ``ORT_ENABLE_BASIC`` and ``optimized_model_filepath`` (folds the
dynamic Pad / shape sub-graphs and any BatchNorm into the convs) -> initializers named after
the torch module names (:func:`tvm_quant_ext.frontend.onnx.name_initializers`) ->
``onnx.checker`` -> written atomically.  :func:`from_torch` = that, into a temporary file, then
:func:`tvm_quant_ext.frontend.onnx.from_onnx`: ``main(input, *weights)``.

Conv weights of a model with BatchNorm are the BatchNorm-*folded* weights, so
``params["conv.weight"]`` differs from ``model.state_dict()["conv.weight"]``; the names are the
torch module names all the same.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import TYPE_CHECKING, Dict, Iterable, Tuple

import numpy as np
import onnx
import torch

from ..files import atomic_write
from .onnx import from_onnx, name_initializers
from .onnx_fold import fold_with_onnxruntime

if TYPE_CHECKING:  # pragma: no cover
    import tvm


def _module_names(module) -> Iterable[str]:
    return [n for n, _ in module.named_modules() if n]


def _example_tensor(example) -> "torch.Tensor":
    return example if isinstance(example, torch.Tensor) else torch.from_numpy(np.asarray(example))


def export_onnx(module, example, path: str) -> None:
    """Write ``module`` (eval mode) as an optimized ONNX file at ``path`` for inputs like ``example``."""
    with tempfile.TemporaryDirectory() as td:
        raw = os.path.join(td, "raw.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (_example_tensor(example),),
                raw,
                opset_version=17,
                dynamo=False,
                do_constant_folding=True,
                input_names=["input"],
                output_names=["logits"],
            )
        model = fold_with_onnxruntime(onnx.load(raw))
    name_initializers(model, _module_names(module))
    onnx.checker.check_model(model)
    atomic_write(path, lambda tmp: onnx.save(model, tmp))


FROM_TORCH_ROUTES = ("onnx", "export")


def from_torch(module, example_inputs, via: str = "onnx") -> Tuple[tvm.IRModule, Dict[str, np.ndarray]]:
    """``module`` (a torch ``nn.Module`` in eval mode) -> ``(mod, params)``, the batch fixed by
    ``example_inputs`` (one array / tensor, or a 1-tuple of it).

    ``via="onnx"``: :func:`export_onnx` then TVM's ONNX importer (BatchNorm folded into the
    convs by ONNX Runtime's basic optimizations). ``via="export"``: ``torch.export.export``
    then TVM's ``from_exported_program`` (:mod:`.exported`; BatchNorm kept, folded by the
    quantizer's prepare). Either way the weights carry the torch module names."""
    if via not in FROM_TORCH_ROUTES:
        raise ValueError(f"from_torch(via={via!r}): expected one of {FROM_TORCH_ROUTES}")
    if isinstance(example_inputs, (tuple, list)):
        if len(example_inputs) != 1:
            raise ValueError(f"from_torch takes one example input, got {len(example_inputs)}")
        example_inputs = example_inputs[0]
    if via == "export":
        from .exported import from_exported_program

        program = torch.export.export(module.eval(), (_example_tensor(example_inputs),))
        return from_exported_program(program)
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "model.onnx")
        export_onnx(module, example_inputs, path)
        return from_onnx(path, module_names=_module_names(module))


__all__ = ["FROM_TORCH_ROUTES", "export_onnx", "from_torch"]
