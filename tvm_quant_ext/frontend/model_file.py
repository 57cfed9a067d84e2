"""A model file -> ``(mod, params)``, by its kind: what ``tvm-quant quantize MODEL`` reads.

    mod, params = load_model_file("net.onnx", input_shapes={"input": (1, 3, 224, 224)})
    mod, params = load_model_file("resnet-symbol.json", params_path="resnet-0000.params",
                                  input_shapes={"data": (1, 3, 224, 224)})
    mod, params = load_model_file("net.pt2")                   # torch.export.save output

``input_shapes`` fixes dynamic dimensions (ONNX ``batch``-style dims); an MXNet symbol has no
shapes of its own, so it needs them. A dimension left symbolic is an error that says which
input and which flag to give.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

Shapes = Optional[Dict[str, Sequence[int]]]


class ModelFileError(ValueError):
    """A model file that cannot be read or imported; the message names it."""


def _onnx_input_dims(model) -> Dict[str, List[object]]:
    inits = {t.name for t in model.graph.initializer}
    dims = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        shape = value.type.tensor_type.shape
        dims[value.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                            else (d.dim_param or "?") for d in shape.dim]
    return dims


def _check_shapes_cover(path: str, dims: Dict[str, List[object]], input_shapes: Shapes) -> None:
    given = dict(input_shapes or {})
    unknown = sorted(set(given) - set(dims))
    if unknown:
        raise ModelFileError(f"{path}: --input-shape names {unknown}, but the model's inputs are "
                             f"{sorted(dims)}")
    for name, shape in dims.items():
        if name in given:
            if len(given[name]) != len(shape):
                raise ModelFileError(f"{path}: --input-shape {name}={','.join(map(str, given[name]))} "
                                     f"has {len(given[name])} dimensions, the input has {len(shape)} "
                                     f"({shape})")
            continue
        symbolic = [d for d in shape if not isinstance(d, int)]
        if symbolic:
            example = ",".join(str(d) if isinstance(d, int) else "1" for d in shape)
            raise ModelFileError(f"{path}: input {name!r} has symbolic dimension(s) {symbolic} "
                                 f"(shape {shape}); fix them with --input-shape {name}={example}")


def load_onnx(path: str, params_path: Optional[str], input_shapes: Shapes):
    import onnx

    from .onnx import from_onnx

    if params_path:
        raise ModelFileError(f"{path}: an ONNX file holds its weights; drop --params")
    try:
        model = onnx.load(path)
    except Exception as err:
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from err
    _check_shapes_cover(path, _onnx_input_dims(model), input_shapes)
    return from_onnx(model, shape=input_shapes)


def load_mxnet(path: str, params_path: Optional[str], input_shapes: Shapes):
    import mxnet as mx

    from .mxnet import from_mxnet

    if not params_path:
        raise ModelFileError(f"{path}: an MXNet symbol needs its weights: --params "
                             f"{path[:-len('-symbol.json')]}-0000.params")
    if not os.path.isfile(params_path):
        raise FileNotFoundError(f"--params {params_path}: no such file")
    try:
        symbol = mx.sym.load(path)
    except Exception as err:
        raise ModelFileError(f"{path}: not an MXNet symbol file ({err})") from err
    try:
        saved = mx.nd.load(params_path)
    except Exception as err:  # a truncated or foreign file
        raise ModelFileError(f"--params {params_path}: not a readable MXNet .params file "
                             f"({type(err).__name__}: {str(err).splitlines()[0]})") from err
    if not isinstance(saved, dict) or not saved:
        raise ModelFileError(f"--params {params_path}: holds no named arrays")
    arg_params = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith("arg:")}
    aux_params = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith("aux:")}
    if not arg_params and not aux_params:  # a Gluon save_parameters file: bare names
        arg_params = dict(saved)
    inputs = [n for n in symbol.list_arguments() if n not in arg_params and n not in aux_params
              and not n.endswith("label")]
    missing = [n for n in inputs if n not in (input_shapes or {})]
    if missing:
        raise ModelFileError(f"{path}: an MXNet symbol has no input shapes; give --input-shape "
                             + " ".join(f"{n}=1,3,224,224" for n in missing)
                             + f" (the symbol's inputs: {inputs}); if a weight is listed, "
                             f"--params {params_path} lacks it")
    _check_param_shapes(symbol, arg_params, aux_params, input_shapes, params_path)
    return from_mxnet(symbol, {n: tuple(input_shapes[n]) for n in inputs}, arg_params=arg_params,
                      aux_params=aux_params)


def _check_param_shapes(symbol, arg_params, aux_params, input_shapes, params_path) -> None:
    """A .params of another architecture: name the first weight whose shape differs."""
    try:
        arg_shapes, _, aux_shapes = symbol.infer_shape(**{k: tuple(v) for k, v in input_shapes.items()})
    except Exception as err:
        raise ModelFileError(f"the symbol's shapes cannot be inferred from --input-shape "
                             f"{input_shapes} ({str(err).splitlines()[0]})") from err
    expected = dict(zip(symbol.list_arguments(), arg_shapes))
    expected.update(zip(symbol.list_auxiliary_states(), aux_shapes))
    for name, value in list(arg_params.items()) + list(aux_params.items()):
        if name in expected and tuple(value.shape) != tuple(expected[name]):
            raise ModelFileError(f"--params {params_path}: {name!r} has shape {tuple(value.shape)}, "
                                 f"the symbol needs {tuple(expected[name])}: the weights belong "
                                 "to another architecture or input size")


def load_exported(path: str, params_path: Optional[str], input_shapes: Shapes):
    from .exported import from_exported_program

    if params_path:
        raise ModelFileError(f"{path}: a torch.export program holds its weights; drop --params")
    if input_shapes:
        raise ModelFileError(f"{path}: a torch.export program's shapes are fixed when it is "
                             "exported; export it with the shape you want instead of "
                             "--input-shape")
    return from_exported_program(path)


# how a file name ends -> its importer (path, params path, input shapes) -> (mod, params)
MODEL_FORMATS: Dict[str, Callable] = {
    ".onnx": load_onnx,
    "-symbol.json": load_mxnet,
    ".pt2": load_exported,
}


def load_model_file(path: str, params_path: Optional[str] = None,
                    input_shapes: Shapes = None) -> Tuple[object, Dict[str, np.ndarray]]:
    """The model in ``path`` (an ``.onnx``, an MXNet ``-symbol.json`` with ``params_path``, or a
    ``torch.export`` ``.pt2``) as ``(mod, params)``: ``main(inputs..., weights...)``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    loader = next((fn for suffix, fn in MODEL_FORMATS.items() if path.endswith(suffix)), None)
    if loader is None:
        raise ModelFileError(f"{path}: unknown model kind; expected a file ending in "
                             f"{', '.join(MODEL_FORMATS)}")
    return loader(path, params_path, input_shapes)


__all__ = ["MODEL_FORMATS", "ModelFileError", "load_model_file"]
