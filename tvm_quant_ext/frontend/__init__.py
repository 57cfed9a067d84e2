"""Model importers into Relax that Relax itself lacks."""
from .mxnet import CONVERTERS, UnsupportedMXNetOpError, from_mxnet, register_converter

__all__ = ["CONVERTERS", "UnsupportedMXNetOpError", "from_mxnet", "register_converter"]
