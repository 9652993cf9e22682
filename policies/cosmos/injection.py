"""Latent frame injection: vectors (proprio, action chunk, value) in and out of latent frames.

A vector normalised to [-1, 1] with dataset min/max is flattened and tiled, repeated as often as
needed and truncated, over all C * h * w elements of one latent frame (16 * 28 * 28 = 12544 at
224 px), overwriting the frame. Reading it back averages the complete copies (an incomplete last
copy is ignored) and un-normalises: 0.5 (x + 1) (max - min) + min. The value frame is one scalar
tiled everywhere; it is read back as the mean of the whole frame. REFERENCE.md §2.
"""
from __future__ import annotations

import numpy as np
import torch


def normalize(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Env units -> [-1, 1]: 2 (x - min) / (max - min) - 1, per last-axis dimension.

    A dimension with max == min (constant in the data set) maps to 0 instead of dividing by zero.
    """
    span = high - low
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, 2.0 * (x - low) / safe - 1.0, 0.0)


def unnormalize(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """[-1, 1] -> env units: 0.5 (x + 1) (max - min) + min, per last-axis dimension."""
    return 0.5 * (x + 1.0) * (high - low) + low


def tile_into_frame(vectors: torch.Tensor, frame_shape: tuple[int, int, int]) -> torch.Tensor:
    """Fill latent frames with repeated copies of vectors.

    vectors: (B, n) values in [-1, 1] (a flattened action chunk is (B, K * d_act)).
    frame_shape: (C, h, w) of one latent frame.
    Returns (B, C, h, w): element j of the flattened frame is vectors[:, j % n].
    """
    batch, length = vectors.shape
    elements = frame_shape[0] * frame_shape[1] * frame_shape[2]
    if length > elements:
        raise ValueError(f"{length} values do not fit in a latent frame of {elements} elements {frame_shape}")
    repeats = -(-elements // length)
    return vectors.repeat(1, repeats)[:, :elements].reshape(batch, *frame_shape)


def average_copies(frames: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of `tile_into_frame`: the mean over the complete copies.

    frames: (B, C, h, w). Returns (B, length) float64; summing float32 copies in float64 is exact,
    so a frame written by `tile_into_frame` reads back bit-exactly.
    """
    flat = frames.reshape(frames.shape[0], -1)
    copies = flat.shape[1] // length
    if copies == 0:
        raise ValueError(f"a latent frame of {flat.shape[1]} elements holds no complete copy of {length} values")
    return flat[:, : copies * length].reshape(frames.shape[0], copies, length).double().mean(dim=1)


def read_value(frames: torch.Tensor) -> torch.Tensor:
    """Value frames (B, C, h, w) -> (B,) in [0, 1]: frame mean mapped (v + 1) / 2, clipped."""
    mean = frames.reshape(frames.shape[0], -1).mean(dim=1)
    return ((mean + 1.0) / 2.0).clamp(0.0, 1.0)
