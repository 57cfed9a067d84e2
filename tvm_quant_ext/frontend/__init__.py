"""Model importers into Relax: the ones Relax lacks (MXNet) and the project's fixes of the ONNX
path (ONNX, and PyTorch through ONNX).

    mod, params = from_mxnet(net, {"data": (1, 3, 224, 224)})   # Gluon block or Symbol
    mod, params = from_onnx("model.onnx")                        # path or onnx.ModelProto
    mod, params = from_torch(torch_model, example_batch)         # torch -> ONNX -> Relax
    mod, params = from_torch(torch_model, example_batch, via="export")  # torch.export -> Relax
    mod, params = from_exported_program("model.pt2")             # torch.export program or file

Each returns a Relax module whose ``main`` takes the data input(s) and then every weight as a
parameter, and ``params`` (name -> numpy array) with exactly those weights.  ``from_onnx`` /
``from_torch`` / ``from_exported_program`` (modules ``.onnx`` / ``.torch`` / ``.exported``)
are imported on first use, so importing this package does not import onnx or torch.
"""
import importlib

from .mxnet import CONVERTERS, UnsupportedMXNetOpError, from_mxnet, register_converter

_LAZY = {
    "from_onnx": "onnx", "name_initializers": "onnx",
    "from_torch": "torch", "export_onnx": "torch",
    "from_exported_program": "exported", "load_exported_program": "exported",
}


def __getattr__(name):
    if name in ("onnx", "torch", "exported"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + ["exported", "onnx", "torch"])


__all__ = ["CONVERTERS", "UnsupportedMXNetOpError", "export_onnx", "from_exported_program",
           "from_mxnet", "from_onnx", "from_torch", "load_exported_program", "name_initializers",
           "register_converter"]
