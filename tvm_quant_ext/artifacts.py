"""What ``tvm-quant quantize`` writes, and how to read it back.

    OUT.so          the compiled library: tvm.runtime.load_module + relax.VirtualMachine
    OUT.json        the quantization report: every point (id, kind, bits, scales, calibrator),
                    the bias fixes, the ops left in float, per-layer SNR on the calibration data
    OUT.relax.json  the quantized IRModule (tvm.ir.save_json): reload it with
                    load_quantized(), inspect it, or build it for another target

Plain TVM runs the library (no tvm_quant_ext needed)::

    import numpy as np, tvm
    from tvm import relax
    lib = tvm.runtime.load_module("OUT.so")
    vm = relax.VirtualMachine(lib, tvm.cpu())
    logits = vm["main"](tvm.runtime.tensor(np.zeros((1, 3, 224, 224), "float32"))).numpy()
"""
from __future__ import annotations

import json
import os
from typing import Dict

import tvm

from .files import atomic_write

SUFFIXES = {"library": ".so", "report": ".json", "module": ".relax.json"}


def artifact_paths(out: str) -> Dict[str, str]:
    """OUT -> {"library": OUT.so, "report": OUT.json, "module": OUT.relax.json}."""
    for suffix in SUFFIXES.values():
        if out.endswith(suffix):  # "-o net.so": the stem is meant
            out = out[: -len(suffix)]
    return {kind: out + suffix for kind, suffix in SUFFIXES.items()}


def check_output(out: str) -> Dict[str, str]:
    """The paths for ``out``, its folder created, checked writable before any work is done."""
    paths = artifact_paths(out)
    folder = os.path.dirname(os.path.abspath(paths["library"]))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise OSError(f"-o {out}: cannot create the folder {folder} ({err.strerror})") from err
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"-o {out}: the folder {folder} is not writable")
    return paths


def save_artifacts(out: str, module: tvm.IRModule, executable, report: dict) -> Dict[str, str]:
    """Write the library, the report and the module for ``out``; returns their paths."""
    paths = check_output(out)
    atomic_write(paths["library"], executable.export_library, suffix=".so")
    atomic_write(paths["report"], lambda tmp: _write_text(tmp, json.dumps(report, indent=1)))
    atomic_write(paths["module"], lambda tmp: _write_text(tmp, tvm.ir.save_json(module)))
    return paths


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def load_quantized(path: str) -> tvm.IRModule:
    """The quantized module saved as ``OUT.relax.json`` (``get_report`` works on it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such saved module")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return tvm.ir.load_json(text)
    except Exception as err:
        raise ValueError(f"{path}: not a module saved with tvm.ir.save_json ({err})") from err


__all__ = ["SUFFIXES", "artifact_paths", "check_output", "load_quantized", "save_artifacts"]
