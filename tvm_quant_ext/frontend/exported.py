"""torch.export -> Relax: TVM's ``from_exported_program`` with the weights named after the torch
parameters.

    mod, params = from_exported_program(torch.export.export(model, (example,)))
    mod, params = from_exported_program("model.pt2")            # a torch.export.save file

TVM's importer names each weight after its placeholder (``p_conv1_weight``); here the
parameters of ``main`` take the torch parameter names instead (``conv1.weight``), the names
the layers are reported under.  As with the other frontends, ``main`` takes the data input(s)
first and then every weight, and ``params`` holds exactly those weights.  Buffers (BatchNorm
running statistics) stay bound constants, as TVM's importer leaves them.  A single output is
returned as a tensor, not a 1-tuple.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import tvm


class ExportedProgramError(ValueError):
    """A torch.export program (or file) that cannot be imported; the message says why."""


def load_exported_program(path: str) -> "torch.export.ExportedProgram":
    """``torch.export.load`` with an error that names the file when it is not a program."""
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such torch.export file")
    try:
        return torch.export.load(path)
    except Exception as err:  # torch raises many types for a file that is not a .pt2 archive
        raise ExportedProgramError(
            f"{path}: not a torch.export program ({type(err).__name__}: {err}); write one with "
            "torch.export.save(torch.export.export(model, (example,)), path)") from err


def from_exported_program(program: Union[str, "torch.export.ExportedProgram"]
                          ) -> Tuple["tvm.IRModule", Dict[str, np.ndarray]]:
    """A ``torch.export.ExportedProgram`` (or the path of a saved one) -> ``(mod, params)``."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program as relax_from_exported_program

    if isinstance(program, (str, os.PathLike)):
        program = load_exported_program(os.fspath(program))
    mod = relax_from_exported_program(program, keep_params_as_input=True,
                                      unwrap_unit_return_tuple=True)
    torch_names = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
                   if spec.target}
    func = mod["main"]
    n_inputs = int(func.attrs["num_input"])
    renamed = {p: relax.Var(torch_names.get(p.name, p.name), p.ty) for p in func.params[n_inputs:]}
    # bind_params swaps each weight parameter for its renamed Var throughout the body; the
    # renamed Vars then become the parameters again, in the same order
    body = func.bind_params(renamed).body
    mod["main"] = relax.Function(list(func.params[:n_inputs]) + list(renamed.values()), body,
                                 func.ret_ty, attrs=func.attrs)
    mod, detached = relax.frontend.detach_params(mod)
    weights = list(mod["main"].params[n_inputs:])
    values = detached.get("main", [])
    if len(weights) != len(values):
        raise ExportedProgramError(f"the importer returned {len(values)} weight values for "
                                   f"{len(weights)} weight parameters of main")
    return mod, {str(var.name): value.numpy() for var, value in zip(weights, values)}


__all__ = ["ExportedProgramError", "from_exported_program", "load_exported_program"]
