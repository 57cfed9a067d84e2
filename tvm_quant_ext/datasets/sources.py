"""Calibration and evaluation data from files: image folders, RecordIO, numpy arrays.

    data = load_data("calib/", preprocess)             # a folder of images (any layout below)
    data = load_data("val.rec", preprocess, limit=500) # ImageNet-style RecordIO + .idx, labeled
    data = load_data("batch.npz")                      # preprocessed arrays ("images", "labels")

=====================  ===========================================================
folder                 class sub-folders (labels: the folder names when all are
                       integers, else their sorted order); or images with a
                       ``labels.txt`` beside them (one class index per image, in
                       sorted file-name order, or ``<file> <index>`` lines); or
                       files named ``*_<index>.<ext>``; or any images (unlabeled)
``.rec``               indexed RecordIO (its ``.idx`` beside it), labels from the
                       record headers
``.npy``               one array of preprocessed inputs (N, ...), unlabeled
``.npz``               ``images`` (or ``x`` / ``data``, else the first array) and
                       optional ``labels`` (or ``y``)
=====================  ===========================================================

Images are preprocessed by the given callable (see ``preprocess.py``). Every unreadable file
is an error naming it; nothing is skipped silently.
"""
from __future__ import annotations

import glob
import io
import os
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_KEYS = ("images", "x", "data")
LABEL_KEYS = ("labels", "y")


class DataError(ValueError):
    """A data file or folder that cannot be read; the message names it."""


@dataclass
class LoadedData:
    images: np.ndarray               # (N, ...) model inputs
    labels: Optional[np.ndarray]     # int64 (N,), or None when unlabeled
    source: str


def open_image(source, name: str):
    """A decoded PIL image (``source``: a path or bytes) or a DataError naming ``name``."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()  # PIL decodes lazily: force it here, so a broken file fails here
        return image
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise DataError(f"{name}: not a readable image ({type(err).__name__}: {err})") from err


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def check_limit(limit: Optional[int], flag: str = "--limit") -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{flag} {limit!r}: expected a positive number of images")


def _open_records(path: str):
    import mxnet as mx

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such RecordIO file")
    idx = os.path.splitext(path)[0] + ".idx"
    if not os.path.exists(idx):
        raise FileNotFoundError(f"{path}: its index {idx} is missing (make one with im2rec's "
                                "--pass-through or mx.recordio.MXIndexedRecordIO)")
    try:
        return mx.recordio.MXIndexedRecordIO(idx, path, "r")
    except Exception as err:
        raise DataError(f"{path}: cannot open as RecordIO with {idx} ({err})") from err


def record_count(path: str) -> int:
    """How many records an indexed RecordIO file holds (read from its index only)."""
    record = _open_records(path)
    try:
        return len(record.keys)
    finally:
        record.close()


def read_records(path: str, stop: Optional[int] = None, start: int = 0) -> List[Tuple[object, int]]:
    """(PIL image, label) pairs of records ``start`` .. ``stop`` - 1 (in key order) of an indexed
    RecordIO file; only those records are read, so a sweep worker reads just its shard."""
    import mxnet as mx

    record = _open_records(path)
    out = []
    try:
        if not record.keys:
            raise DataError(f"{path}: no records")
        for key in sorted(record.keys)[start:stop]:
            try:
                header, payload = mx.recordio.unpack(record.read_idx(key))
                label = int(np.asarray(header.label).reshape(-1)[0])
            except Exception as err:  # a truncated or overwritten record
                raise DataError(f"{path}: record {key} is corrupt ({type(err).__name__}: "
                                f"{err}); re-pack the file with im2rec") from err
            out.append((open_image(payload, f"{path} record {key}"), label))
    finally:
        record.close()
    return out


def _labels_file(folder: str, files: List[str]) -> Optional[List[int]]:
    path = os.path.join(folder, "labels.txt")
    if not os.path.exists(path):
        return None
    lines = [ln.split() for ln in open(path, encoding="utf-8").read().splitlines() if ln.strip()]
    try:
        if all(len(parts) == 2 for parts in lines):
            by_name = {name: int(label) for name, label in lines}
            missing = [os.path.basename(f) for f in files if os.path.basename(f) not in by_name]
            if missing:
                raise DataError(f"{path}: no label for {missing[:3]}")
            return [by_name[os.path.basename(f)] for f in files]
        labels = [int(parts[0]) for parts in lines]
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: expected one class index per line, or '<file> <index>' "
                        f"lines ({err})") from err
    if len(labels) != len(files):
        raise DataError(f"{path}: {len(labels)} labels for {len(files)} images in {folder}")
    return labels


def list_folder(path: str) -> List[Tuple[str, Optional[int]]]:
    """(image file, label or None) pairs of a folder, in a fixed order (see the module doc)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such folder")
    subdirs = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    items: List[Tuple[str, Optional[int]]] = []
    if subdirs:
        numeric = all(d.isdigit() for d in subdirs)
        for index, d in enumerate(subdirs):
            label = int(d) if numeric else index
            items += [(f, label) for f in sorted(glob.glob(os.path.join(path, d, "*"))) if _is_image(f)]
        items.sort(key=lambda item: os.path.basename(item[0]))
    else:
        files = [f for f in sorted(glob.glob(os.path.join(path, "*"))) if _is_image(f)]
        labels = _labels_file(path, files)
        if labels is None:
            matches = [re.search(r"_(\d+)\.[A-Za-z]+$", os.path.basename(f)) for f in files]
            if files and all(matches):
                labels = [int(m.group(1)) for m in matches]
        items = list(zip(files, labels if labels is not None else [None] * len(files)))
    if not items:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return items


def read_folder(path: str, stop: Optional[int] = None, start: int = 0
                ) -> List[Tuple[object, Optional[int]]]:
    """(PIL image, label or None) pairs ``start`` .. ``stop`` - 1 of :func:`list_folder`."""
    return [(open_image(f, f), label) for f, label in list_folder(path)[start:stop]]


def _read_arrays(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle a data file
    except Exception as err:
        raise DataError(f"{path}: not a readable numpy file ({type(err).__name__}: {err})") from err
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        if not loaded.files:
            raise DataError(f"{path}: the archive holds no arrays")
        key = next((k for k in ARRAY_KEYS if k in loaded.files), loaded.files[0])
        label_key = next((k for k in LABEL_KEYS if k in loaded.files), None)
        return loaded[key], (None if label_key is None else loaded[label_key])


def load_data(path: str, preprocess: Optional[Callable] = None, limit: Optional[int] = None,
              flag: str = "--calib") -> LoadedData:
    """The model inputs (and labels, if the source has them) at ``path`` (see the module doc)."""
    check_limit(limit)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    if path.endswith((".npy", ".npz")):
        images, labels = _read_arrays(path)
        images = images[:limit]
        if labels is not None:
            labels = np.asarray(labels)[:limit].astype(np.int64).reshape(-1)
            if len(labels) != len(images):
                raise DataError(f"{path}: {len(labels)} labels for {len(images)} inputs")
        if images.dtype.kind not in "fiu":
            raise DataError(f"{path}: inputs are {images.dtype}; expected numbers")
        return LoadedData(images, labels, path)
    if preprocess is None:
        raise ValueError(f"{flag} {path}: images need a preprocessing (--preprocess)")
    if path.endswith(".rec"):
        pairs = read_records(path, limit)
    elif os.path.isdir(path):
        pairs = read_folder(path, limit)
    else:
        raise DataError(f"{flag} {path}: expected an image folder, a .rec, a .npy or a .npz")
    images = np.stack([preprocess(image) for image, _ in pairs])
    labels = [label for _, label in pairs]
    has_labels = all(label is not None for label in labels)
    return LoadedData(images, np.asarray(labels, np.int64) if has_labels else None, path)


__all__ = ["DataError", "IMAGE_EXTENSIONS", "LoadedData", "check_limit", "list_folder",
           "load_data", "open_image", "read_folder", "read_records", "record_count"]
