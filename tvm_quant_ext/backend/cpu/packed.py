"""The blocked activation layout int8 layers hand each other on CPU: ``N x C/16 x H x W x 16c``
uint8.

Sixteen channels of one pixel are one contiguous 16-byte vector, so a depthwise conv reads each
tap as one vector load whatever its stride, and a VNNI conv still finds the four channels it
reduces per ``vpdpbusd`` next to each other. Signed int8 codes are stored shifted by +128 (the
VNNI kernel multiplies unsigned bytes); the channels past the tensor's last, up to the next
multiple of 16, hold the shifted zero.
"""
from __future__ import annotations

from typing import Sequence, Tuple

BLOCK = 16  # channels per block: one AVX-512 vector of int32 lanes, one 16-byte load


def packed_shape(shape: Sequence[int]) -> Tuple[int, ...]:
    """NCHW -> the ``N x C/16 x H x W x 16c`` shape."""
    n, c, h, w = (int(v) for v in shape)
    return (n, -(-c // BLOCK), h, w, BLOCK)


def code_shift(dtype: str) -> int:
    """What is added to a code of ``dtype`` to store it as uint8."""
    if dtype not in ("int8", "uint8"):
        raise ValueError(f"the packed layout holds int8/uint8 codes, not {dtype}")
    return 128 if dtype == "int8" else 0
