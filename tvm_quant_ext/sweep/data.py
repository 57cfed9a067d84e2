"""The sweep's models and data, loadable from names and paths alone (what a worker gets).

Models: the Gluon model zoo's ``resnet{18,34,50,101,152}_v{1,2}`` (weights from a local
``--params`` file; nothing is downloaded), imported with ``from_mxnet``; or any
``tvm_quant_ext.zoo`` model. Data: an ImageNet-style RecordIO ``.rec`` (with its ``.idx``;
labels from the record headers), or an image folder (one sub-folder per class, named by the
class index or sorted into indices, or flat files named ``*_<label>.<ext>``); default: the zoo
model's own labeled eval set. Gluon ImageNet models get the standard preprocessing: RGB, short
side to 256, centre crop 224, /255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
Calibration uses the ``calib_images`` images that follow the evaluated slice (with a data path;
a set too small for that calibrates on its start) or the zoo model's calibration images.

A :class:`DataSpec` names both; :func:`extent` says how many images each part has, and
:func:`load_images` reads just one range of one part, so a worker reads only its shard.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .. import zoo
from ..zoo import folder_items, imagenet_preprocess, read_folder, read_records, record_count

GLUON_IMAGENET_MODELS = tuple(f"resnet{d}_v{v}" for v in (1, 2) for d in (18, 34, 50, 101, 152))
EVAL, CALIB = "eval", "calib"


class SweepPathError(ValueError):
    """An input or output path of the sweep is missing or unusable; raised before any work."""


@dataclass
class SweepModel:
    name: str
    mod: object                       # Relax module, main(input, *weights)
    params: Dict[str, np.ndarray]
    batch_size: int
    preprocess: Callable              # PIL image -> float32 (C, H, W)
    default_data: Optional["SweepData"] = None  # the zoo model's labeled eval set
    default_calib: Optional[np.ndarray] = None


@dataclass
class SweepData:
    name: str
    images: np.ndarray                # preprocessed float32 (N, C, H, W)
    labels: np.ndarray                # int64 (N,)
    calib: np.ndarray                 # preprocessed calibration images


@dataclass(frozen=True)
class DataSpec:
    """Everything a worker needs to load the model and its images itself: names, paths and
    sizes (paths absolute, so a worker started in another folder finds them)."""

    model: str
    params: Optional[str]
    data: Optional[str]
    num_images: int
    calib_images: int
    batch_size: int

    @property
    def dataset(self) -> str:
        """The data's name in the CSV."""
        if self.data is None:
            return ""  # filled from the zoo model's eval set (see ``dataset_name``)
        return os.path.basename(self.data.rstrip("/"))


def check_inputs(model: str, params: Optional[str], data: Optional[str]) -> None:
    """Fail now, naming the path, when an input cannot be read (before any model is built)."""
    if model in GLUON_IMAGENET_MODELS and not params:
        raise ValueError(f"model {model!r} needs --params: a local Gluon .params file "
                         "(nothing is downloaded)")
    if model not in GLUON_IMAGENET_MODELS and model not in zoo.MODELS:
        raise ValueError(f"unknown model {model!r}; choose a Gluon ImageNet ResNet "
                         f"({', '.join(GLUON_IMAGENET_MODELS)}) or a zoo model ({', '.join(zoo.MODELS)})")
    if params and model in zoo.MODELS:
        raise ValueError(f"zoo model {model!r} brings its own weights; drop --params")
    paths = [("--params", params)] if params else []
    if data:
        if not (os.path.isdir(data) or data.endswith(".rec")):
            raise SweepPathError(f"--data {data}: expected a .rec file or an image folder")
        paths.append(("--data", data))
        if data.endswith(".rec"):
            paths.append(("--data's index", os.path.splitext(data)[0] + ".idx"))
    for flag, path in paths:
        if not os.path.exists(path):
            raise SweepPathError(f"{flag} {path} does not exist")
        if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
            raise SweepPathError(f"{flag} {path} is not readable by this user: fix its permissions")


def load_model(name: str, batch_size: int, params: Optional[str] = None) -> SweepModel:
    """A Gluon ImageNet ResNet (weights from ``params``) or a tvm_quant_ext zoo model."""
    check_inputs(name, params, None)
    if name in GLUON_IMAGENET_MODELS:
        from mxnet.gluon.model_zoo import vision

        from ..frontend import from_mxnet

        net = vision.get_model(name, pretrained=False)
        try:
            net.load_parameters(params)
        except Exception as err:  # MXNet's own message names neither the file nor the fix
            raise ValueError(f"--params {params}: not the weights of a Gluon {name} "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); a "
                             "truncated file, or the weights of another architecture") from err
        mod, weights = from_mxnet(net, {"data": (batch_size, 3, 224, 224)})
        return SweepModel(name, mod, weights, batch_size, imagenet_preprocess)
    zm = zoo.load(name, batch_size=batch_size)
    labeled = [s for s in zm.eval_sets if s.labels is not None]
    default = SweepData(labeled[0].name, labeled[0].images, labeled[0].labels, zm.calib) if labeled else None
    return SweepModel(name, zm.mod, zm.params, batch_size, zm.preprocess, default, zm.calib)


def load_data(model: SweepModel, data: Optional[str], num_images: int, calib_images: int) -> SweepData:
    """The evaluated slice (first ``num_images``) and the calibration images, all in memory."""
    spec = DataSpec(model.name, None, data, num_images, calib_images, model.batch_size)
    (n_eval, _), (n_calib, _) = extent(model, spec)
    images, labels = load_images(model, spec, EVAL, 0, n_eval)
    calib, _ = load_images(model, spec, CALIB, 0, n_calib)
    return SweepData(dataset_name(model, spec), images, labels, calib)


def dataset_name(model: SweepModel, spec: DataSpec) -> str:
    if spec.data is None:
        if model.default_data is None:
            raise ValueError(f"model {model.name!r} has no labeled data of its own; pass --data")
        return model.default_data.name
    return spec.dataset


def _source_size(data: str) -> int:
    return record_count(data) if data.endswith(".rec") else len(folder_items(data))


def extent(model: SweepModel, spec: DataSpec) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """((evaluated images, offset), (calibration images, offset)) in the data's order."""
    if spec.data is None:
        dataset_name(model, spec)  # the error when the zoo model has no labeled set
        n_eval = min(spec.num_images, len(model.default_data.images))
        return (n_eval, 0), (min(spec.calib_images, len(model.default_calib)), 0)
    total = _source_size(spec.data)
    n_eval = min(spec.num_images, total)
    # a small set has no images left after the evaluated slice: calibrate on its start
    offset = n_eval if total > n_eval else 0
    return (n_eval, 0), (min(spec.calib_images, total - offset), offset)


def load_images(model: SweepModel, spec: DataSpec, part: str, start: int,
                stop: int) -> Tuple[np.ndarray, np.ndarray]:
    """Preprocessed images ``start`` .. ``stop`` - 1 of ``part`` (EVAL or CALIB) and their
    labels; only those images are read from the data."""
    (n_eval, eval_offset), (n_calib, calib_offset) = extent(model, spec)
    size, offset = (n_eval, eval_offset) if part == EVAL else (n_calib, calib_offset)
    if not 0 <= start <= stop <= size:
        raise ValueError(f"{spec.model}: {part} images {start}..{stop} outside the {size} there are")
    if spec.data is None:
        if part == EVAL:
            d = model.default_data
            return d.images[start:stop], np.asarray(d.labels[start:stop], np.int64)
        return model.default_calib[start:stop], np.zeros(stop - start, np.int64)
    reader = read_records if spec.data.endswith(".rec") else read_folder
    pairs = reader(spec.data, offset + stop, offset + start)
    if not pairs:
        return np.zeros((0,), np.float32), np.zeros(0, np.int64)
    return (np.stack([model.preprocess(img) for img, _ in pairs]),
            np.array([label for _, label in pairs], np.int64))
