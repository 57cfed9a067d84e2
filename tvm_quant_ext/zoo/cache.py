"""The zoo's on-disk cache: optimized ONNX exports (per batch size) and preprocessed images,
under ``cache_dir`` (default ``$TVM_QUANT_EXT_CACHE`` or ``~/.cache/tvm_quant_ext``), keyed by a
fingerprint of the source files and ``_ZOO_VERSION``; the torch models' conversion to Relax
goes through the cached ONNX (:func:`cached_torch_relax`)."""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Optional, Sequence

import numpy as np

from ..files import atomic_write

# Bump when the conversion or the preprocessing changes (invalidates the cache).
_ZOO_VERSION = "4"


def cache_root(cache_dir: Optional[str] = None) -> str:
    """``cache_dir``, else ``$TVM_QUANT_EXT_CACHE``, else ``~/.cache/tvm_quant_ext`` (created)."""
    root = cache_dir or os.environ.get("TVM_QUANT_EXT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tvm_quant_ext"
    )
    os.makedirs(root, exist_ok=True)
    return root


def fingerprint(*paths: str) -> str:
    """10 hex digits from ``_ZOO_VERSION`` and the name, size and mtime of each path."""
    h = hashlib.sha1(_ZOO_VERSION.encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:10]


def save_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, w)


def cached_torch_relax(name: str, torch_model, weights_path: str, input_shape: Sequence[int],
                       root: str):
    """(mod, params, input name) of ``torch_model`` for ``input_shape``, from its optimized ONNX
    under ``root`` (``{name}_b{batch}_{fingerprint of weights_path}.onnx``), exported with
    ``frontend.torch.export_onnx`` on first use and imported with ``frontend.from_onnx``."""
    from ..frontend import from_onnx
    from ..frontend.torch import export_onnx

    onnx_path = os.path.join(root, f"{name}_b{input_shape[0]}_{fingerprint(weights_path)}.onnx")
    if not os.path.exists(onnx_path):
        export_onnx(torch_model, np.zeros(tuple(input_shape), np.float32), onnx_path)
    mod, params = from_onnx(onnx_path, module_names=[n for n, _ in torch_model.named_modules()])
    inputs = list(mod["main"].params)[:len(mod["main"].params) - len(params)]
    if len(inputs) != 1:
        raise RuntimeError(f"expected one data input, got {len(inputs)}")
    return mod, params, str(inputs[0].name)
