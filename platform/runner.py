"""The driver of one run: expand episodes, skip finished ones, schedule the rest over EnvWorker
actors, record each finished episode durably before scheduling the next, write the reports.

    run(spec, out_dir)  ->  summary dict (also out_dir/summary.json and report.md)

Its parts, in the order run() uses them: preflight.py (the policy's files; whether replicas and
workers fit the cluster), replica_fleet.py (PolicyReplica actors: start, watch, figures),
scheduler.py (the episode loop over worker_pool.py's EnvWorker actors, one durable row per episode),
report_files.py (the reports).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from robofleet.platform import replica_fleet
from robofleet.platform.cluster import connect
from robofleet.platform.episode_loop import utc_now
from robofleet.platform.episodes import expand_episodes
from robofleet.platform.errors import RobofleetError
from robofleet.platform.fingerprint import fingerprint
from robofleet.platform.node_check import check_nodes
from robofleet.platform.preflight import check_resources, check_videos, validate_before_ray
from robofleet.platform.report_files import Invocation, write_run_report
from robofleet.platform.results import RunStore
from robofleet.platform.rollout_video import VideoPolicy
from robofleet.platform.scheduler import _schedule
from robofleet.platform.spec import RunSpec, with_workers

log = logging.getLogger(__name__)


def run(spec: RunSpec, out_dir: str | Path, workers: int | None = None, address: str | None = None,
        videos: int | VideoPolicy = 0, progress: bool = True, command: str | None = None,
        validated: bool = False) -> dict[str, Any]:
    """Run (or resume) every episode of `spec` into `out_dir`; returns the summary.

    videos: which episodes get an mp4 (an int K: the first K trials per task; a VideoPolicy, e.g.
        VideoPolicy.parse("failures:2"): platform/rollout_video.py).
    command: the command line that started this run (shown in summary.json and the reports).
    validated: the caller has run check_videos and validate_before_ray on this spec (a sweep checks all
        its points before the first starts), so they are not run again.
    """
    if workers is not None:
        spec = with_workers(spec, workers, "workers")
    if not validated:
        check_videos(spec, videos)
        validate_before_ray(spec)  # before the run directory is claimed: a fixed spec must not be refused there
    fresh = not (Path(out_dir) / "spec.toml").exists()
    store = RunStore(out_dir, spec)
    episodes = expand_episodes(spec)
    done = store.finished_ids()
    todo = [e for e in episodes if e.episode_id not in done]
    log.info("%d episodes, %d already recorded, %d to run", len(episodes), len(episodes) - len(todo), len(todo))

    started = time.perf_counter()
    started_at = utc_now()
    worker_packages: list[dict[str, Any]] = []
    serving: list[dict[str, Any]] = []
    episodes_wall_s = None
    if todo:
        started_cluster = connect(address)
        replicas: list[Any] = []
        try:
            wanted = min(spec.run.workers, len(todo))
            try:
                n_workers = check_resources(spec, wanted)
                check_nodes(spec)  # what the other nodes lack (LIBERO assets, the rs15 venv), before any worker starts
            except RobofleetError:
                if fresh and not done:  # nothing ran: the fixed spec (fewer replicas, ...) may claim the directory
                    (store.root / "spec.toml").unlink(missing_ok=True)
                raise
            if n_workers < wanted:  # spec.toml and the figures record the workers that ran, not an impossible count
                spec = replace(spec, run=replace(spec.run, workers=n_workers))
                store = RunStore(out_dir, spec)
            replicas = replica_fleet.start_replicas(spec) if spec.serving.replicas else []
            worker_packages, episodes_wall_s = _schedule(spec, store, todo, len(episodes) - len(todo),
                                                         len(episodes), videos, progress, replicas, n_workers)
            serving = replica_fleet.replica_stats(replicas)
        finally:
            for r in replicas:
                ray.kill(r)
            if started_cluster:
                ray.shutdown()
    invocation = Invocation(ran=len(todo), wall_s=time.perf_counter() - started, episodes_wall_s=episodes_wall_s,
                            worker_packages=worker_packages, serving=serving, fingerprint=run_fingerprint(spec),
                            command=command, started_at=started_at, ended_at=utc_now())
    return write_run_report(store.root, invocation)


def run_fingerprint(spec: RunSpec) -> dict[str, Any]:
    """The driver's fingerprint, with the LIBERO asset tree's check for LIBERO runs (`assets`:
    envs/libero_assets.AssetsRecord; "original" = every upstream file byte for byte)."""
    fp = fingerprint()
    if spec.env.family == "libero":
        from robofleet.envs.libero_assets import current_assets_record

        fp["assets"] = dict(current_assets_record())
    return fp
