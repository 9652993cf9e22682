"""The scheduling loop of one run: one episode per idle env worker, a dead worker's episode retried on
a new one, each finished episode's row (and video) recorded durably before the next is scheduled.

"Dead" is planners/retry.is_infrastructure_failure, the rule the planners retry by: the worker's actor,
node, raylet or result object is gone (RayActorError, NodeDiedError, ObjectLostError,
WorkerCrashedError, ...). An exception of the episode's own code is the episode's `error` (the episode
loop records it); one that escapes EnvWorker.run (a RayTaskError) is not retried and stops the run."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from robofleet.planners.retry import is_infrastructure_failure
from robofleet.platform.episode_loop import utc_now
from robofleet.platform.episodes import EpisodeSpec
from robofleet.platform.errors import RobofleetError
from robofleet.platform.replica_fleet import _ReplicaWatch
from robofleet.platform.results import RunStore
from robofleet.platform.rollout_video import PendingVideo, VideoPolicy
from robofleet.platform.spec import RunSpec
from robofleet.platform.worker_pool import _WorkerPool

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    worker: Any
    worker_index: int
    episode: EpisodeSpec
    attempt: int
    video: str | None


def _video_path(store: RunStore, spec: RunSpec, episode: EpisodeSpec, videos: int | VideoPolicy) -> str | None:
    """Where the worker records this episode's video (None: no video); a PendingVideo is kept or
    deleted by _row once the episode's outcome is known."""
    name = f"{episode.suite}_task{episode.task_id:02d}_trial{episode.trial:03d}.mp4"
    return VideoPolicy.of(videos).path(store.root / "videos", name, episode.trial)


def _schedule(spec: RunSpec, store: RunStore, todo: list[EpisodeSpec], already: int, total: int,
              videos: int, progress: bool, replicas: list[Any], n_workers: int) -> tuple[list[dict[str, Any]], float]:
    """Run `todo` over `n_workers` workers; returns the workers' package versions and the seconds from
    the first episode scheduled to the last one recorded (start-up excluded)."""
    pool = _WorkerPool(spec, n_workers, replicas)
    watch = _ReplicaWatch(replicas)
    first_submit = time.perf_counter()  # after workers and replicas are up: the steady-state clock
    queue = list(reversed(todo))  # pop() from the end keeps the planned order
    in_flight: dict[Any, _InFlight] = {}
    successes = 0
    bar = tqdm(total=total, initial=already, desc=spec.name or spec.env.suite, unit="ep", disable=not progress)

    attempts: dict[str, int] = {}  # episode_id -> the attempt it is queued for (after a worker died)
    last_grow = 0.0

    def submit(index: int, episode: EpisodeSpec, attempt: int) -> None:
        worker = pool.workers[index]
        video = _video_path(store, spec, episode, videos)
        in_flight[worker.run.remote(episode, video)] = _InFlight(worker, index, episode, attempt, video)

    def submit_next(index: int) -> None:
        episode = queue.pop()
        submit(index, episode, attempts.pop(episode.episode_id, 1))

    try:
        for index in range(n_workers):
            if queue:
                submit_next(index)
        while in_flight or queue:
            if queue and (not in_flight or time.monotonic() - last_grow > 2.0) and pool.empty_slots():
                last_grow = time.monotonic()
                for index in pool.grow():  # a node joined: its CPUs take episodes too
                    if queue:
                        submit_next(index)
            if not in_flight:
                raise RobofleetError(f"no env worker is left to run the {len(queue)} remaining episodes (the cluster "
                                     "lost the nodes they ran on); the finished ones are recorded: re-run the "
                                     "same command to resume")
            watch.check()
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=watch.every_s if replicas else None)
            if not ready:
                continue
            [ref] = ready
            job = in_flight.pop(ref)
            try:
                row = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised
                if not is_infrastructure_failure(exc):
                    raise
                log.warning("worker %d died during %s (attempt %d): %s: %s", job.worker_index, job.episode.episode_id,
                            job.attempt, type(exc).__name__, exc)
                alive = pool.replace(job.worker_index)
                if job.attempt < spec.run.max_attempts:
                    if alive:
                        submit(job.worker_index, job.episode, job.attempt + 1)
                    else:  # another worker takes it
                        attempts[job.episode.episode_id] = job.attempt + 1
                        queue.append(job.episode)
                    continue
                row = {"success": 0, "steps": 0, "queries": 0, "error": f"worker died {job.attempt} times: {exc}"}
            store.append(_row(spec, store.root, job, row))  # durable before anything else is scheduled
            successes += int(row["success"])
            bar.update(1)
            bar.set_postfix(success=f"{successes}/{bar.n - already}")
            if queue and pool.workers[job.worker_index] is not None:
                submit_next(job.worker_index)
    finally:
        bar.close()
        pool.close()
    return pool.worker_packages, time.perf_counter() - first_submit


def _row(spec: RunSpec, store_root: Path, job: _InFlight, result: dict[str, Any]) -> dict[str, Any]:
    """The episodes.csv row of a finished episode (or of one whose workers all died: no "video" key
    in `result`, ended now). A PendingVideo is kept or deleted here (VideoPolicy's failures rule)."""
    e = job.episode
    video = job.video
    if isinstance(video, PendingVideo):
        video = video.settle(succeeded=bool(int(result.get("success", 0))), recorded="video" in result)
    return {
        **e.to_dict(),
        "task": result.get("task", ""),
        "policy": spec.policy.name,
        "planner": spec.planner.name,
        "attempts": job.attempt,
        "reset_mode": spec.env.reset,
        "ended_at": utc_now(),
        **{k: v for k, v in result.items() if k != "task"},
        "video": str(Path(video).relative_to(store_root)) if video else "",
    }
