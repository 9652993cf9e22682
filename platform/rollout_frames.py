"""Video frames that show a policy's predicted future beside what really happened.

For a world-model policy (Prediction.future_images), each video frame is

    +---------------------+---------------------+
    | real cam A | cam B  | predicted A | B     |    real: the observation now
    +---------------------+---------------------+    predicted: what the policy imagined for
                                                      the end of the chunk it is executing

with a coloured bar over the predicted half. Without a prediction the right half is grey, so a
video's layout never changes mid-episode.

Under the cameras, a caption (`caption_frame`): the task's instruction, the step counter and, on the
end card the video closes with, the episode's outcome (success / failure / error).

The seam: platform/rollout_video.RolloutVideo.add(obs) writes the real cameras side by side; to show
predictions it calls `compose_frame(obs.images, prediction.future_images)` instead (the episode
loop, platform/episode_loop.py, passes the latest decision's prediction). The report links videos from the
`video` column of episodes.csv either way.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np

PREDICTED_BAR = np.array([0, 118, 255], dtype=np.uint8)  # blue: the imagined half
REAL_BAR = np.array([40, 167, 69], dtype=np.uint8)        # green: the real half
BAR_ROWS = 4
CAPTION_ROWS = 30  # two lines of text under the cameras
CAPTION_BACKGROUND = (24, 24, 24)
OUTCOME_COLOURS = {"success": (40, 167, 69), "failure": (207, 34, 46), "error": (191, 135, 0), "": (160, 160, 160)}


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


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)  # FreeType's scalable default font
    except (ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, width: int) -> str:
    """`text` cut (with an ellipsis) to fit `width` pixels."""
    font = _font()
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def caption_frame(frame: np.ndarray, instruction: str, step: int, outcome: str = "") -> np.ndarray:
    """`frame` with a caption strip under it: the instruction, then "step N" and the outcome.

    frame: uint8 (H, W, 3) (compose_frame's output). step: env steps taken so far (0: after reset).
    outcome: "" while the episode runs; "success" / "failure" / "error" on the end card, which also
        colours the strip's left edge and the outcome text.
    Returns uint8 (H + CAPTION_ROWS, W, 3); the same shape for every frame of a video.
    """
    from PIL import Image, ImageDraw

    height, width = frame.shape[:2]
    strip = Image.new("RGB", (width, CAPTION_ROWS), CAPTION_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    colour = OUTCOME_COLOURS.get(outcome, OUTCOME_COLOURS[""])
    draw.rectangle([0, 0, 3, CAPTION_ROWS - 1], fill=colour)
    draw.text((6, 2), _fit(draw, instruction, width - 8), fill=(235, 235, 235), font=_font())
    status = f"step {step}"
    draw.text((6, 16), status, fill=(235, 235, 235), font=_font())
    if outcome:
        x = 6 + int(draw.textlength(status + "   ", font=_font()))
        draw.text((x, 16), _fit(draw, outcome.upper(), max(width - x - 2, 0)), fill=colour, font=_font())
    return np.concatenate([np.asarray(frame, dtype=np.uint8), np.asarray(strip, dtype=np.uint8)], axis=0)
