"""Adaptive rounding of weights (AdaRound; Nagel et al. 2020, "Up or Down? Adaptive Rounding
for Post-Training Quantization"): the math, apart from any graph.

A weight w at scale s gets the code ``floor(w/s) + h(V)``, h the rectified sigmoid
``clip(sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0, 1)``. V starts where h equals the fractional
part of w/s (so the first step is nearest-like) and is optimized with Adam to minimize

    mean over rows of sum over outputs (X_f W^T - X_q W~^T)^2  +  LAMBDA * sum(1 - |2h - 1|^beta)

(rows: sampled input patches of the layer; X_f from the float model, X_q from the model with
every earlier layer quantized -- the paper's asymmetric reconstruction). The regularizer is off
for the first WARMUP of the iterations, then beta falls linearly from BETA_START to BETA_END,
pushing h to 0 or 1; at the end h is rounded to {0, 1}. Where w/s is an integer the code is
w/s (never moved up: codes stay within [floor, ceil] of w/s), and codes are clipped to the
signed range. LAMBDA follows the published implementations' loss normalization (sum over
outputs, mean over rows); the learning rate is 10x theirs because the iteration budget is
10-20x smaller.
"""
from __future__ import annotations

import base64
from typing import Callable, Optional

import numpy as np
import torch

ZETA, GAMMA = 1.1, -0.1
LAMBDA = 0.01
WARMUP = 0.2
BETA_START, BETA_END = 20.0, 2.0
LEARNING_RATE = 1e-2
BATCH_ROWS = 512


def rectified_sigmoid(v) -> np.ndarray:
    """h(V) = clip(sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0, 1)."""
    v = np.asarray(v, np.float64)
    return np.clip(1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_logits(fraction) -> np.ndarray:
    """V with h(V) = fraction, for fractions in [0, 1)."""
    p = (np.asarray(fraction, np.float64) - GAMMA) / (ZETA - GAMMA)
    return np.log(p / (1.0 - p))


def beta_at(iteration: int, iterations: int) -> Optional[float]:
    """The regularizer's beta at ``iteration`` of ``iterations``: None during the warm-up
    (no regularizer), then linear from BETA_START down to BETA_END."""
    warm = WARMUP * iterations
    if iteration < warm:
        return None
    progress = (iteration - warm) / max(iterations - warm, 1.0)
    return BETA_END + (BETA_START - BETA_END) * max(0.0, 1.0 - progress)


def rounding_regularizer(h, beta: float) -> float:
    """sum(1 - |2h - 1|^beta): 0 when every h is 0 or 1, largest at h = 1/2."""
    h = np.asarray(h, np.float64)
    return float(np.sum(1.0 - np.abs(2.0 * h - 1.0) ** beta))


def rounded_codes(weight, scale, up, qmax: int) -> np.ndarray:
    """Codes clip(floor(w/s) + up, -qmax, qmax) as int64, with ``up`` (0/1) ignored where w/s
    is an integer; ``scale`` broadcasts against ``weight``."""
    ratio = np.asarray(weight, np.float64) / np.asarray(scale, np.float64)
    floor = np.floor(ratio)
    up = np.where(ratio > floor, np.asarray(up, np.int64), 0)
    return np.clip(floor + up, -qmax, qmax).astype(np.int64)


def pack_mask(mask) -> str:
    """A 0/1 array as base64 of its packed bits (the state is JSON)."""
    return base64.b64encode(np.packbits(np.asarray(mask, bool).reshape(-1))).decode("ascii")


def unpack_mask(text: str, shape) -> np.ndarray:
    size = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:size]
    return bits.astype(np.int64).reshape(shape)


def optimize_rounding(weight: np.ndarray, scale: np.ndarray, qmax: int,
                      quant_rows: torch.Tensor, target: torch.Tensor,
                      layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      iterations: int, seed: int = 0) -> np.ndarray:
    """The 0/1 rounding-up decision of every weight (shape of ``weight``).

    ``scale`` broadcasts against ``weight``; ``layer(rows, w)`` is the layer on a batch of
    rows with weight ``w`` (weight layout), ``target`` the float layer's output on the same
    rows (``quant_rows`` are the quantized model's inputs at the same positions)."""
    generator = torch.Generator().manual_seed(seed)
    ratio = np.asarray(weight, np.float64) / scale
    floor = np.floor(ratio)
    movable = torch.as_tensor(ratio > floor)
    floor_t = torch.as_tensor(floor, dtype=torch.float32)
    scale_t = torch.as_tensor(np.broadcast_to(scale, weight.shape).copy(), dtype=torch.float32)
    v = torch.nn.Parameter(torch.as_tensor(initial_logits(ratio - floor), dtype=torch.float32))
    optimizer = torch.optim.Adam([v], lr=LEARNING_RATE)
    rows = quant_rows.shape[0]

    def h_of(v):
        soft = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
        return torch.where(movable, soft, torch.zeros_like(soft))

    for iteration in range(iterations):
        index = torch.randint(rows, (min(BATCH_ROWS, rows),), generator=generator)
        h = h_of(v)
        w = torch.clamp(floor_t + h, -qmax, qmax) * scale_t
        out = layer(quant_rows[index], w)
        loss = (out - target[index]).pow(2).flatten(1).sum(1).mean()
        beta = beta_at(iteration, iterations)
        if beta is not None:
            loss = loss + LAMBDA * (1.0 - (2.0 * h[movable] - 1.0).abs().pow(beta)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (h_of(v) >= 0.5).numpy().astype(np.int64)
