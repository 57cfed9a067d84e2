"""The bench's own venv for OpenVINO and NNCF.

Their wheels pin numpy and friends newer than this project's numpy 1.23.5 (mxnet needs it), so
they live in a venv of their own, created on first use and reused afterwards. The OpenVINO
worker runs with that venv's python; nothing else does.

    python scripts/bench_workers/venv.py            # create (or check) it and print the versions
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Dict, Optional, Tuple

# pinned so two machines measure the same OpenVINO; numpy / onnx follow what these accept
PACKAGES = ("openvino==2026.4.1", "nncf==3.4.0", "onnx", "numpy")
PROBE = ("import json, numpy, openvino, nncf; print(json.dumps({'openvino': "
         "openvino.__version__.split('-')[0], "
         "'nncf': nncf.__version__, 'numpy': numpy.__version__}))")


def default_dir() -> str:
    root = os.environ.get("TVM_QUANT_EXT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tvm_quant_ext")
    return os.path.join(root, "bench-venv")


def python_of(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def probe(venv: str) -> Optional[Dict[str, str]]:
    """Versions of openvino / nncf / numpy in ``venv``, or None when it cannot import them."""
    py = python_of(venv)
    if not os.path.exists(py):
        return None
    done = subprocess.run([py, "-c", PROBE], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _base_python() -> Optional[str]:
    # a venv needs a real interpreter; this process may itself run inside another venv
    for name in ("python3.11", "python3"):
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure(venv: Optional[str] = None, log=print) -> Tuple[Optional[str], Dict[str, str], str]:
    """(python of the venv or None, versions, why not): creates the venv when it is missing or
    cannot import openvino and nncf; never raises, so a bench without OpenVINO still runs and
    its rows say why."""
    venv = venv or default_dir()
    versions = probe(venv)
    if versions:
        return python_of(venv), versions, ""
    base = _base_python()
    if base is None:
        return None, {}, "no python3.11 / python3 on PATH to create the OpenVINO venv"
    log(f"creating the OpenVINO bench venv at {venv} ({' '.join(PACKAGES)}); minutes, once")
    steps = [[base, "-m", "venv", venv],
             [python_of(venv), "-m", "pip", "install", "--quiet", *PACKAGES]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, {}, f"`{' '.join(cmd)}` failed: {' / '.join(tail)}"
    versions = probe(venv)
    if not versions:
        return None, {}, f"{venv} was created but cannot import openvino and nncf"
    return python_of(venv), versions, ""


if __name__ == "__main__":
    py, versions, why = ensure(sys.argv[1] if len(sys.argv) > 1 else None)
    print(json.dumps({"python": py, "versions": versions, "error": why}))
    sys.exit(0 if py else 1)
