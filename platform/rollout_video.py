"""Rollout videos: the cameras side by side, streamed to an mp4 as the episode runs; for policies
that predict future images, the prediction of the chunk being executed beside the real frames."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.platform.rollout_frames import compose_frame

FPS = 20  # LIBERO's control frequency: one video frame per env step plays at real time


class RolloutVideo:
    """Appends one frame per observation (see platform/rollout_frames.compose_frame for the layout).

    The layout is fixed by the first frame: with a predicted-images column when that frame comes
    with a prediction, else the real cameras only, so a video never changes shape mid-episode.
    """

    def __init__(self, path: Path):
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio.get_writer(str(self.path), fps=FPS, codec="libx264", macro_block_size=1)
        self._with_predictions: bool | None = None

    def add(self, obs: Observation, predicted: Mapping[str, np.ndarray] | None = None) -> None:
        """obs: the real frame; predicted: the current chunk's predicted future images, if any."""
        if not obs.images:
            return
        if self._with_predictions is None:
            self._with_predictions = predicted is not None
        self._writer.append_data(compose_frame(obs.images, predicted, with_prediction_column=self._with_predictions))

    def close(self) -> None:
        self._writer.close()
