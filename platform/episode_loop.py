"""The episode loop. It runs inside an EnvWorker; the driver only schedules and records.

reset (init state + wait steps, the scene drawn from the protocol's scene seed) -> loop
{ decide(obs, the protocol's query seed) -> execute open_loop_steps actions of the chunk (which ones:
platform/protocol.py), rendering the cameras on the last of them only } until success or the step
limit. Exceptions become the episode's `error` (with traceback), never a
silent failure.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from robofleet.envs.contract import Env
from robofleet.platform.rollout_video import RolloutVideo
from robofleet.planners.contract import Planner
from robofleet.platform.episodes import EpisodeSpec
from robofleet.platform.protocol import executed_actions

log = logging.getLogger(__name__)


def run_episode(
    env: Env,
    planner: Planner,
    episode: EpisodeSpec,
    open_loop_steps: int | None = None,
    video_path: Path | None = None,
    render_every_step: bool = False,
) -> dict[str, Any]:
    """Run one episode; returns the result fields of its row (see platform/results.py).

    `final_state` is a short hash of the simulator state at the end: equal hashes across runs
    mean bit-identical physics (the reproducibility check that worker counts do not matter).

    open_loop_steps: how many actions of each predicted chunk to execute before asking again
        (None = the whole chunk): the first ones, or under the reference protocol on LIBERO the
        last ones, as the reference's `deque(maxlen=k)` keeps them.
    render_every_step: render the cameras on every step. By default only the steps whose
        observation is read are rendered: the last step of each executed chunk (the next decision's
        input), and every step when a video is recorded. The physics is the same either way.
    """
    state = _EpisodeState(started_at=utc_now(), start=time.perf_counter())
    video = None
    try:
        video = RolloutVideo(video_path) if video_path is not None else None
        t = time.perf_counter()
        planner.reset()
        obs = env.reset(episode.task_id, episode.trial, episode.scene_seed)
        state.timings["reset_s"] = time.perf_counter() - t
        first_frame = obs  # written with the first decision's prediction, which fixes the video layout
        while state.steps < env.max_steps and not state.success:
            decision = _decide(planner, obs, episode, state)
            executed = executed_actions(episode.protocol, episode.family, _checked_chunk(decision), open_loop_steps)
            predicted = decision.prediction.future_images
            if video and first_frame is not None:
                video.add(first_frame, predicted)
                first_frame = None
            obs = _execute(env, obs, executed, predicted, video, render_every_step, state)
        state.final_state = hashlib.sha256(env.get_state().tobytes()).hexdigest()[:16]
    except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded error with its cause
        state.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        log.warning("episode %s failed: %s", episode.episode_id, exc)
    finally:
        if video:
            video.close(outcome="error" if state.error else "success" if state.success else "failure")
    return state.row(video_path)


@dataclass
class _EpisodeState:
    """What one episode has done so far; `row` turns it into the result fields."""

    started_at: str
    start: float  # perf_counter at the start
    steps: int = 0
    queries: int = 0
    success: bool = False
    error: str = ""
    final_state: str = ""
    plan_stats: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("reset_s", "policy_s", "env_s", "queue_s", "model_s", "remote_s"), 0.0))

    def row(self, video_path: Path | None) -> dict[str, Any]:
        return {
            "success": int(self.success),
            "steps": self.steps,
            "queries": self.queries,
            "error": self.error,
            "final_state": self.final_state,
            "wall_s": time.perf_counter() - self.start,
            **self.timings,
            "video": str(video_path) if video_path is not None else "",
            "plan_stats": json.dumps(self.plan_stats) if self.plan_stats else "",
            "started_at": self.started_at,
            "ended_at": utc_now(),
        }


def _decide(planner: Planner, obs: Any, episode: EpisodeSpec, state: _EpisodeState) -> Any:
    """One query of the planner, seeded by its index in the episode; its latencies and stats recorded."""
    t = time.perf_counter()
    decision = planner.decide(obs, episode.decision_seed(state.queries))
    state.timings["policy_s"] += time.perf_counter() - t
    state.queries += 1
    for key in ("queue_s", "model_s", "remote_s"):  # set by replicas and remote policies
        state.timings[key] += float(decision.prediction.stats.get(key, 0.0))
    if len(decision.stats) > 1:  # more than a latency: a planner's choice worth keeping
        state.plan_stats.append(dict(decision.stats))
    return decision


def _checked_chunk(decision: Any) -> np.ndarray:
    """The decision's action chunk (K, d_act); ValueError for any other shape."""
    chunk = np.asarray(decision.prediction.actions)
    if chunk.ndim != 2 or len(chunk) == 0:
        raise ValueError(f"policy returned an action chunk of shape {chunk.shape}; expected (K>=1, d_act)")
    return chunk


def _execute(env: Env, obs: Any, executed: np.ndarray, predicted: Any, video: Any, render_every_step: bool,
             state: _EpisodeState) -> Any:
    """Step `executed` (n, d_act) from `obs` until success or max_steps; returns the last observation.
    Cameras are rendered on the chunk's last step (the next decision's input), or on every step when
    asked or filmed."""
    t = time.perf_counter()
    n = len(executed)
    for index, action in enumerate(executed):
        looked_at = render_every_step or video is not None or index == n - 1
        result = env.step(action, render=looked_at)
        state.steps += 1
        obs = result.obs
        if video:
            video.add(obs, predicted)
        if result.success:
            state.success = True
            break
        if state.steps >= env.max_steps:
            break
    state.timings["env_s"] += time.perf_counter() - t
    return obs


def utc_now() -> str:
    """The wall-clock time as ISO-8601 UTC with milliseconds ("2025-01-31T12:00:00.123Z")."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
