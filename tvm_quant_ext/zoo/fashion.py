"""``fashion_resnet_v2`` and ``fashion_resnet_v2_deep``: Gluon model zoo ``ResNetV2``
(BasicBlockV2, thumbnail stem, widths 16/16/32/64, 2/2/2 blocks; ``_deep``: 8/8/8 blocks)
trained here on Fashion-MNIST by scripts/train_fashion_resnet_v2.py, which writes
``tvm_quant_ext/models/<name>.params`` and ``<name>.json`` (architecture, normalization, fp32
accuracy); both are committed.  Imported with ``frontend.from_mxnet`` (input ``"data"``).

Calibration / evaluation: ``calib`` = the first 500 training images; ``eval_sets`` =
``"fashion_mnist_test_10k"`` (all 10k labeled test images).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from .base import EvalSet, ZooModel
from .data import fashion_mnist, fashion_normalize, fashion_preprocess

FASHION_MODELS = ("fashion_resnet_v2", "fashion_resnet_v2_deep")
MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
# mxnet.gluon.model_zoo.vision.resnet.ResNetV2 arguments of the committed model
FASHION_RESNET_V2_ARCH = {"block": "BasicBlockV2", "layers": [2, 2, 2], "channels": [16, 16, 32, 64],
                          "classes": 10, "thumbnail": True}


def fashion_model_info(name: str) -> Dict[str, Any]:
    """The JSON written beside a Fashion model's .params: architecture, training, fp32 accuracy."""
    path = os.path.join(MODELS_DIR, name + ".json")
    if name not in FASHION_MODELS or not os.path.exists(path):
        raise ValueError(f"no Fashion-MNIST model {name!r} (known: {FASHION_MODELS}; files in {MODELS_DIR})")
    with open(path) as f:
        return json.load(f)


def fashion_resnet_v2_block(arch: Optional[dict] = None):
    """The (uninitialized) Gluon ResNetV2 of ``arch`` (default FASHION_RESNET_V2_ARCH)."""
    from mxnet.gluon.model_zoo.vision import resnet

    arch = {key: (arch or FASHION_RESNET_V2_ARCH)[key] for key in FASHION_RESNET_V2_ARCH}
    block = getattr(resnet, arch.pop("block"))
    return resnet.ResNetV2(block, arch.pop("layers"), arch.pop("channels"), **arch)


def load(name: str, batch_size: int, root: Optional[str] = None, calib_images: int = 500) -> ZooModel:
    """The ZooModel of Fashion model ``name`` for ``batch_size`` (nothing is cached: ``root`` unused)."""
    from ..frontend import from_mxnet

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
