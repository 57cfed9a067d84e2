"""Image preprocessing by preset: PIL image -> float32 array laid out for the model input.

    pre = make_preprocess("imagenet")                         # resize 256, crop 224, mean/std
    pre = make_preprocess("lite", size=280)                   # (x - 127) / 128 at 280 x 280
    pre = make_preprocess("none", layout="NHWC", channels=1)  # raw pixel values, grayscale
    x = pre(PIL.Image.open("cat.jpg"))                        # (3, 224, 224) float32

Every preset is: RGB (or BGR, or grayscale when the model takes one channel), short side
resized to ``resize`` (default ``round(size / 0.875)``, the usual 224 -> 256), centre crop
``size`` x ``size``, ``(pixel - mean) / std`` with mean and std in pixel units (0..255), then
the model's layout (``NCHW``: channels first; ``NHWC``: channels last).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

LAYOUTS = ("NCHW", "NHWC")
RESAMPLING = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """One preprocessing recipe; call it with a PIL image."""

    size: int = 224
    resize: Optional[int] = None           # short side before the crop; None: size / 0.875
    mean: Tuple[float, ...] = (0.0,)      # pixel units, one value or one per channel
    std: Tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    bgr: bool = False
    channels: int = 3                     # 1: grayscale
    resample: str = "bilinear"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout {self.layout!r}: expected one of {LAYOUTS}")
        if self.resample not in RESAMPLING:
            raise ValueError(f"resample {self.resample!r}: expected one of {RESAMPLING}")
        if self.channels not in (1, 3):
            raise ValueError(f"the model input has {self.channels} channels; image presets "
                             "make 1 (grayscale) or 3 (RGB); give preprocessed arrays (.npy/.npz)")
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"--size {self.size!r}: expected a positive int")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) not in (1, self.channels):
                raise ValueError(f"--{key} {list(values)}: give 1 value or {self.channels} "
                                 "(one per channel)")
        if any(s == 0 for s in self.std):
            raise ValueError(f"--std {list(self.std)}: must not be 0")

    @property
    def short_side(self) -> int:
        return self.resize if self.resize is not None else int(round(self.size / 0.875))

    def __call__(self, image) -> np.ndarray:
        from PIL import Image

        image = image.convert("L" if self.channels == 1 else "RGB")
        w, h = image.size
        scale = self.short_side / min(w, h)
        new = (max(self.size, round(w * scale)), max(self.size, round(h * scale)))
        if new != (w, h):
            image = image.resize(new, getattr(Image, self.resample.upper()))
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        x = np.asarray(image.crop((left, top, left + self.size, top + self.size)), np.float32)
        x = x.reshape(self.size, self.size, self.channels)
        if self.bgr:
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)


PRESETS: Dict[str, Preprocess] = {
    # torchvision / Gluon ImageNet evaluation: /255, then the ImageNet mean and std
    "imagenet": Preprocess(size=224, resize=256, mean=(123.675, 116.28, 103.53),
                           std=(58.395, 57.12, 57.375)),
    # Inception / TF-slim: 299 crop, pixels to [-1, 1]
    "inception": Preprocess(size=299, resize=342, mean=(127.5,), std=(127.5,)),
    # EfficientNet-Lite / TFLite-style: (x - 127) / 128
    "lite": Preprocess(size=224, resize=256, mean=(127.0,), std=(128.0,), resample="bicubic"),
    # pixels as they are (0..255), only resized and cropped
    "none": Preprocess(),
}


def make_preprocess(preset: str = "imagenet", *, size: Optional[int] = None,
                    resize: Optional[int] = None, mean: Optional[Sequence[float]] = None,
                    std: Optional[Sequence[float]] = None, layout: Optional[str] = None,
                    bgr: Optional[bool] = None, channels: Optional[int] = None) -> Preprocess:
    """A preset with any of its fields overridden (None keeps the preset's value). A new
    ``size`` without ``resize`` keeps the preset's crop ratio."""
    if preset not in PRESETS:
        raise ValueError(f"--preprocess {preset!r}: expected one of {sorted(PRESETS)}")
    base = PRESETS[preset]
    changes = {k: v for k, v in dict(size=size, layout=layout, bgr=bgr,
                                     channels=channels).items() if v is not None}
    if mean is not None:
        changes["mean"] = tuple(float(m) for m in mean)
    if std is not None:
        changes["std"] = tuple(float(s) for s in std)
    if resize is not None:
        changes["resize"] = resize
    elif size is not None and base.resize is not None:
        changes["resize"] = int(round(size * base.resize / base.size))
    return replace(base, **changes)


def preprocess_for_input(preset: str, input_shape: Sequence[int], **overrides) -> Preprocess:
    """``make_preprocess`` with size, channels and layout read from a model input's shape
    (N, C, H, W) or (N, H, W, C), unless given."""
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ValueError(f"the model input has shape {shape}: image presets make 4-d "
                         "(N, C, H, W) batches; give preprocessed arrays (.npy/.npz) instead")
    layout = overrides.pop("layout", None) or ("NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3)
                                               else "NCHW")
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if h != w:
        raise ValueError(f"the model input is {h} x {w}: image presets crop squares; give "
                         "preprocessed arrays (.npy/.npz) instead")
    size = overrides.pop("size", None) or h
    if size != h:
        raise ValueError(f"--size {size} does not match the model input's {h} x {w}")
    return make_preprocess(preset, size=size, layout=layout,
                           channels=overrides.pop("channels", None) or c, **overrides)


__all__ = ["LAYOUTS", "PRESETS", "Preprocess", "make_preprocess", "preprocess_for_input"]
