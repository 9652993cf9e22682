"""Rollout videos: both cameras side by side, streamed to an mp4 as the episode runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robofleet.envs.contract import Observation

FPS = 20  # LIBERO's control frequency: one video frame per env step plays at real time


class RolloutVideo:
    """Appends one frame per observation: cameras concatenated left to right, (H, W*n_cams, 3) uint8."""

    def __init__(self, path: Path):
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio.get_writer(str(self.path), fps=FPS, codec="libx264", macro_block_size=1)

    def add(self, obs: Observation) -> None:
        if obs.images:
            self._writer.append_data(np.concatenate([obs.images[k] for k in sorted(obs.images)], axis=1))

    def close(self) -> None:
        self._writer.close()
