"""Rollout videos: the cameras side by side, streamed to an mp4 as the episode runs, with a caption
(instruction, step counter, outcome on a closing end card); for policies that predict future images,
the prediction of the chunk being executed beside the real frames. `VideoPolicy` says which
episodes keep a video (`--videos K`: the first K trials; `--videos failures:K`: failed ones)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robofleet.envs.contract import Observation
from robofleet.platform.errors import SpecError
from robofleet.platform.rollout_frames import caption_frame, compose_frame

FPS = 20  # LIBERO's control frequency: one video frame per env step plays at real time
END_CARD_FRAMES = FPS  # one second of the last frame with the outcome, so a viewer sees how it ended
RECORDING_DIR = "recording"  # videos/recording/: videos whose episode's outcome decides whether they stay


class RolloutVideo:
    """Appends one frame per observation (see platform/rollout_frames.compose_frame for the layout).

    The layout is fixed by the first frame: with a predicted-images column when that frame comes
    with a prediction, else the real cameras only, so a video never changes shape mid-episode.
    caption: a strip under the cameras with the instruction and the step counter (the first frame,
    after reset, is step 0; each later one is one env step); `close(outcome)` ends the video with
    an end card that shows the outcome.
    """

    def __init__(self, path: Path, caption: bool = True):
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio.get_writer(str(self.path), fps=FPS, codec="libx264", macro_block_size=1)
        self._with_predictions: bool | None = None
        self._caption = caption
        self._step = -1
        self._last: np.ndarray | None = None
        self._instruction = ""

    def add(self, obs: Observation, predicted: Mapping[str, np.ndarray] | None = None) -> None:
        """obs: the real frame; predicted: the current chunk's predicted future images, if any."""
        self._step += 1
        if not obs.images:
            return
        if self._with_predictions is None:
            self._with_predictions = predicted is not None
        frame = compose_frame(obs.images, predicted, with_prediction_column=self._with_predictions)
        self._last, self._instruction = frame, obs.instruction
        self._writer.append_data(caption_frame(frame, obs.instruction, self._step) if self._caption else frame)

    def close(self, outcome: str | None = None) -> None:
        """Finish the file; outcome ("success" / "failure" / "error") adds the end card first."""
        try:
            if outcome and self._caption and self._last is not None:
                card = caption_frame(self._last, self._instruction, self._step, outcome)
                for _ in range(END_CARD_FRAMES):
                    self._writer.append_data(card)
        finally:
            self._writer.close()


class PendingVideo(str):
    """A temporary recording path (videos/recording/NAME.mp4) whose episode's outcome decides
    whether it is kept at `final` (scheduler._row calls `settle`). Sent to a worker it is a plain str."""

    final: str
    policy: VideoPolicy

    def __new__(cls, temporary: str, final: str, policy: VideoPolicy) -> PendingVideo:
        self = super().__new__(cls, temporary)
        self.final, self.policy = final, policy
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (str, (str(self),))

    def settle(self, succeeded: bool, recorded: bool = True) -> str | None:
        """Keep the recording at `final` (returns that path) when its episode did not succeed and the
        task has fewer than `policy.failures` kept failure videos; else delete it (returns None).

        recorded: False when the worker never returned (it died): the file is incomplete.
        Kept failure videos are counted on disk (trials >= policy.first of the same task), so a
        resumed run keeps counting; with several workers, the first failures to finish are kept.
        """
        temporary, final = Path(self), Path(self.final)
        if not temporary.exists():
            return None
        limit = self.policy.failures
        if succeeded or not recorded or (limit is not None and _kept_failures(final, self.policy.first) >= limit):
            temporary.unlink()
            return None
        temporary.replace(final)
        return str(final)


def _kept_failures(final: Path, first: int) -> int:
    """Videos of `final`'s task already kept under the failures rule (trials >= first)."""
    match = re.fullmatch(r"(.*_task\d+)_trial\d+\.mp4", final.name)
    if match is None:
        return 0
    count = 0
    for path in final.parent.glob(f"{match.group(1)}_trial*.mp4"):
        trial = re.fullmatch(r".*_trial(\d+)\.mp4", path.name)
        count += bool(trial and int(trial.group(1)) >= first)
    return count


@dataclass(frozen=True)
class VideoPolicy:
    """Which episodes get a rollout video (`--videos`).

    first: the first K trials of every task (`--videos K`).
    failures: besides those, up to K videos per task of episodes that did not succeed (failed or
        raised): every later episode is recorded into videos/recording/ and kept only when it did
        not succeed and the task has fewer than K (`--videos failures:K`); None keeps every one
        (`--videos failures`). 0: none.
    `--videos 2,failures:3` combines both.
    """

    first: int = 0
    failures: int | None = 0

    def __post_init__(self) -> None:
        if isinstance(self.first, bool) or not isinstance(self.first, int) or self.first < 0:
            raise SpecError("--videos", f"{self.first!r}: the first K trials per task need an integer K >= 0")
        if self.failures is not None and (isinstance(self.failures, bool) or not isinstance(self.failures, int)
                                          or self.failures < 0):
            raise SpecError("--videos", f"failures:{self.failures!r}: give an integer K >= 0 failure videos per task")

    @classmethod
    def parse(cls, text: str) -> VideoPolicy:
        """`--videos` as given: "K", "failures", "failures:K", or "K,failures:K"."""
        first, failures = 0, 0
        for part in str(text).replace(" ", "").split(","):
            head, _, count = part.partition(":")
            try:
                if head == "failures":
                    failures = int(count) if count else None
                elif not count:
                    first = int(head)
                else:
                    raise ValueError(part)
            except ValueError:
                raise SpecError("--videos", f"{text!r}: give K (the first K trials per task), failures[:K] "
                                            "(videos of up to K failed episodes per task; all without K), "
                                            "or both as K,failures:K") from None
        return cls(first=first, failures=failures)

    @classmethod
    def of(cls, videos: int | VideoPolicy | None) -> VideoPolicy:
        """The policy of runner.run's `videos` argument (an int K: the first K trials)."""
        if isinstance(videos, VideoPolicy):
            return videos
        return cls(first=int(videos or 0))

    def __bool__(self) -> bool:
        return bool(self.first) or self.failures != 0

    def __str__(self) -> str:
        """The `--videos` text of this policy (what `robofleet submit` passes on)."""
        parts = [str(self.first)] if self.first or self.failures == 0 else []
        if self.failures != 0:
            parts.append("failures" if self.failures is None else f"failures:{self.failures}")
        return ",".join(parts)

    def path(self, videos_dir: Path, name: str, trial: int) -> str | None:
        """Where a worker records episode `name`'s video: its final path (trial < first), a
        PendingVideo (the failures rule decides once it ends), or None (no video)."""
        final = Path(videos_dir) / name
        if trial < self.first:
            return str(final)
        if self.failures != 0:
            return PendingVideo(str(Path(videos_dir) / RECORDING_DIR / name), str(final), self)
        return None
