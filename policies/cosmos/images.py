"""Prepared camera images (camera.py) <-> the pixel video the Wan VAE encodes and decodes (REFERENCE.md §2).

The pixel video has 1 + 4 (T - 1) frames for T latent frames: frame 0 is the blank frame (latent
frame 0 of the causal VAE), then each latent slot's image repeated 4x. Non-image slots hold black
placeholder frames, as in the reference.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from robofleet.policies.cosmos.config import VAE_TEMPORAL_FACTOR
from robofleet.policies.cosmos.layout import LatentLayout, SlotKind


def slot_frames(
    layout: LatentLayout,
    current: Sequence[Mapping[str, np.ndarray]],
    future: Sequence[Mapping[str, np.ndarray] | None],
    size: int,
    count: int | None = None,
) -> np.ndarray:
    """The one picture behind each of the first `count` (default: all T) latent frames, per request.

    current[b]: camera role -> prepared uint8 (size, size, 3) image of request b.
    future[b]: camera role -> prepared image for the future-image slots, or None to start them
        from copies of the current images (the reference's initialisation).
    Returns uint8 (B, count, size, size, 3); black for blank / proprio / action / value slots.
    """
    slots = layout.slots[: layout.num_frames if count is None else count]
    frames = np.zeros((len(current), len(slots), size, size, 3), dtype=np.uint8)
    for b, (now, later) in enumerate(zip(current, future)):
        for t, slot in enumerate(slots):
            if slot.kind is SlotKind.IMAGE:
                source = later if slot.future and later is not None else now
                frames[b, t] = source[str(slot.camera)]
    return frames


def frames_to_video(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Slot pictures -> the VAE's pixel video.

    frames: uint8 (B, T, H, W, 3) from `slot_frames`, on the target device.
    Returns (B, 3, 1 + 4 (T - 1), H, W) in [-1, 1]: frame 0 once, every later slot 4x.
    """
    video = frames.permute(0, 4, 1, 2, 3).to(dtype) / 127.5 - 1.0
    return torch.cat([video[:, :, :1], video[:, :, 1:].repeat_interleave(VAE_TEMPORAL_FACTOR, dim=2)], dim=2)


def pixel_frame(latent_index: int) -> int:
    """Index of the first pixel frame decoded from latent frame `latent_index` (the one the reference shows)."""
    return 0 if latent_index == 0 else (latent_index - 1) * VAE_TEMPORAL_FACTOR + 1


def video_to_uint8(video: torch.Tensor) -> np.ndarray:
    """Decoded frames (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3); truncates like the reference."""
    scaled = ((video.float() + 1.0) * 127.5).clamp(0, 255)
    return scaled.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
