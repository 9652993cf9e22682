"""Video frames that show a policy's predicted future beside what really happened.

For a world-model policy (Prediction.future_images), each video frame is

    +---------------------+---------------------+
    | real cam A | cam B  | predicted A | B     |    real: the observation now
    +---------------------+---------------------+    predicted: what the policy imagined for
                                                      the end of the chunk it is executing

with a coloured bar over the predicted half. Without a prediction the right half is grey, so a
video's layout never changes mid-episode.

The seam: platform/rollout_video.RolloutVideo.add(obs) writes the real cameras side by side; to show
predictions it calls `compose_frame(obs.images, prediction.future_images)` instead (the episode
loop, platform/episode_loop.py, passes the latest decision's prediction). The report links videos from the
`video` column of episodes.csv either way.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

PREDICTED_BAR = np.array([0, 118, 255], dtype=np.uint8)  # blue: the imagined half
REAL_BAR = np.array([40, 167, 69], dtype=np.uint8)        # green: the real half
BAR_ROWS = 4


def _row(images: Mapping[str, np.ndarray], cameras: list[str], height: int, width: int) -> np.ndarray:
    """Cameras left to right, each (height, width, 3) uint8 (missing or mis-sized ones grey)."""
    tiles = []
    for name in cameras:
        image = images.get(name)
        if image is None:
            tiles.append(np.full((height, width, 3), 96, dtype=np.uint8))
            continue
        image = np.asarray(image)
        if image.shape[:2] != (height, width):
            image = _resize_nearest(image, height, width)
        tiles.append(image.astype(np.uint8, copy=False))
    return np.concatenate(tiles, axis=1)


def _resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize (predictions may come at the model's resolution)."""
    rows = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    cols = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[rows][:, cols]


def compose_frame(real: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray] | None = None,
                  with_prediction_column: bool = True) -> np.ndarray:
    """One video frame: real cameras (sorted by name) left, the predicted ones right.

    real: camera name -> uint8 (H, W, 3) upright image (Observation.images).
    predicted: camera name -> uint8 (h, w, 3) predicted image (Prediction.future_images), resized to
        (H, W); None or missing cameras are grey.
    with_prediction_column: False gives the real cameras only (today's RolloutVideo layout).
    Returns uint8 (H + 4, W * n_cams * 2, 3) (or (H, W * n_cams, 3) without the prediction column).
    """
    if not real:
        raise ValueError("compose_frame needs at least one real camera image")
    cameras = sorted(real)
    height, width = np.asarray(real[cameras[0]]).shape[:2]
    real_row = _row(real, cameras, height, width)
    if not with_prediction_column:
        return real_row
    predicted_row = _row(predicted or {}, cameras, height, width)
    bar = np.empty((BAR_ROWS, real_row.shape[1] * 2, 3), dtype=np.uint8)
    bar[:, : real_row.shape[1]] = REAL_BAR
    bar[:, real_row.shape[1]:] = PREDICTED_BAR
    return np.concatenate([bar, np.concatenate([real_row, predicted_row], axis=1)], axis=0)
