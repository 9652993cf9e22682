"""The driver of one run: expand episodes, skip finished ones, schedule the rest over EnvWorker
actors, record each finished episode durably before scheduling the next, write the reports.

    run(spec, out_dir)  ->  summary dict (also out_dir/summary.json and report.md)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from tqdm import tqdm

from robofleet.platform.cluster import connect
from robofleet.platform.episodes import EpisodeSpec, expand_episodes
from robofleet.platform.errors import RobofleetError, SpecError
from robofleet.platform.fingerprint import fingerprint
from robofleet.platform.node_check import check_nodes
from robofleet.platform.report_files import Invocation, write_run_report
from robofleet.platform.episode_loop import utc_now
from robofleet.platform.results import RunStore
from robofleet.platform.rollout_video import PendingVideo, VideoPolicy
from robofleet.platform.spec import RunSpec

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    worker: Any
    worker_index: int
    episode: EpisodeSpec
    attempt: int
    video: str | None


def _unwrap(exc: RayTaskError) -> BaseException:
    """The exception a worker raised, re-raised as itself on the driver when it is ours. On a cluster of
    several nodes its message names the node (what a node lacks: LIBERO assets, the robosuite-1.5
    venv, a checkpoint, surfaces at the workers' setup, before any episode is scheduled)."""
    cause = getattr(exc, "cause", None)
    if not isinstance(cause, RobofleetError):
        return exc
    if cause.args and isinstance(cause.args[0], str) and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        cause.args = (f"{cause.args[0]} [on node {getattr(exc, 'ip', '?')}]", *cause.args[1:])
    return cause


def check_resources(spec: RunSpec, n_workers: int) -> int:
    """Fail early (instead of waiting forever) when replicas + workers cannot fit the cluster.

    Returns how many env workers to start: `n_workers`, or as many as the cluster's free CPUs hold
    (workers are all set up before the first episode, so more would wait forever; per-episode
    results do not depend on the worker count).
    """
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    s = spec.serving
    replica_gpus = s.replicas * (s.gpus_per_replica if s.gpus_per_replica is not None else (1.0 if gpus else 0.0))
    if replica_gpus > gpus:
        raise SpecError("serving.replicas", f"{s.replicas} replicas need {replica_gpus:g} GPUs; the cluster has {gpus:g} "
                        "(lower serving.replicas or serving.gpus_per_replica, 0 for CPU replicas, or add GPU nodes)")
    free = cpus - s.replicas * s.cpus_per_replica
    if free < spec.run.cpus_per_worker:
        raise SpecError(
            "serving.cpus_per_replica",
            f"{s.replicas} replicas x {s.cpus_per_replica:g} CPUs leave {max(free, 0):g} of the cluster's {cpus:g} CPUs; "
            f"an env worker needs {spec.run.cpus_per_worker:g} (lower serving.cpus_per_replica or run.cpus_per_worker)")
    if n_workers < 1:
        raise SpecError("run.workers", f"{n_workers} env workers: give an integer >= 1")
    if free < n_workers * spec.run.cpus_per_worker:
        fit = int(free // spec.run.cpus_per_worker)
        log.warning("only %d of %d env workers fit (%g CPUs free for workers at %g each): starting %d",
                    fit, n_workers, free, spec.run.cpus_per_worker, fit)
        return fit
    return n_workers


def validate_before_ray(spec: RunSpec) -> None:
    """What can only be checked where the driver runs, before Ray starts: the policy's files
    (checkpoints, statistics, embeddings: present, readable, matching; policies/registry.py)."""
    from robofleet.platform.policy_context import validate_spec_policy

    validate_spec_policy(spec, check_files=True)


def check_writable(directory: str | Path, what: str = "--out") -> None:
    """RunDirError unless `directory` can be created and written (checked before Ray starts)."""
    from robofleet.platform.results import RunDirError

    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{what} {path}: cannot write there ({exc.strerror}); choose another directory") from exc


def start_replicas(spec: RunSpec) -> list[Any]:
    """The spec's PolicyReplicas, loaded (errors raised here, before any episode starts)."""
    from robofleet.policies.replica import PolicyReplica

    serving = spec.serving
    gpus = serving.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    replicas = [
        PolicyReplica.options(num_gpus=gpus, num_cpus=serving.cpus_per_replica, max_restarts=2,
                              max_task_retries=2).remote(
            spec.policy.name, spec.policy.options, spec.env.family, max_batch=serving.max_batch,
            max_wait_s=serving.max_wait_ms / 1000, fixed_batch=serving.fixed_batch if serving.deterministic else None,
            replica_index=i)
        for i in range(serving.replicas)
    ]
    try:
        facts = ray.get([r.ready.remote() for r in replicas])
    except (RayTaskError, RayActorError) as exc:
        cause = getattr(exc, "cause", None) or getattr(exc, "error_msg", None)
        if isinstance(cause, RobofleetError):
            raise cause from None
        raise
    for f in facts:
        log.info("policy replica %d ready in %.1f s (CUDA_VISIBLE_DEVICES=%s)", f["replica"], f["load_s"],
                 f["cuda_visible_devices"])
    return replicas


class _ReplicaWatch:
    """Gives up a replica that Ray cannot bring back, so that clients fail over to the others.

    A replica whose node died is restarted by Ray on another node with room; with no room (its GPU
    node gone, the other GPUs taken) it stays RESTARTING, and the calls sent to it wait for ever:
    ReplicaClient fails over only when a call fails. A replica that has not answered a ping for
    `give_up_s` while another one answers is ended for good (`ray.kill(no_restart=True)`); its pending
    and later calls then fail, and each client resends them to the next replica (same seeds: the same
    results in deterministic mode). One replica alone is never given up (a node may join).
    """

    give_up_s = 120.0  # longer than a replica's restart (a process death: start + model load on the same node)
    every_s = 1.0

    def __init__(self, replicas: list[Any]):
        self.replicas = replicas
        now = time.monotonic()
        self._ping: dict[int, tuple[Any, float]] = {}  # replica index -> (ping in flight, sent at)
        self._answered = {i: now for i in range(len(replicas))}
        self.given_up: set[int] = set()
        self._last = 0.0

    def check(self) -> None:
        now = time.monotonic()
        if len(self.replicas) - len(self.given_up) < 2 or now - self._last < self.every_s:
            return
        self._last = now
        for i, replica in enumerate(self.replicas):
            if i in self.given_up:
                continue
            ping = self._ping.get(i)
            if ping is not None and ray.wait([ping[0]], timeout=0)[0]:
                self._answered[i], ping = now, None
            if ping is None:
                self._ping[i] = (replica.ready.remote(), now)
        for i, replica in enumerate(self.replicas):
            others = [j for j in self._answered if j != i and j not in self.given_up]
            if (i not in self.given_up and now - self._answered[i] > self.give_up_s
                    and any(now - self._answered[j] < self.give_up_s for j in others)):
                log.warning("policy replica %d has not answered for %.0f s (its node died and no node has room for "
                            "it?): giving it up, its requests go to the other replicas", i, now - self._answered[i])
                ray.kill(replica, no_restart=True)
                self.given_up.add(i)


def replica_stats(replicas: list[Any], timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Each replica's serving figures (PolicyReplica.stats); a replica that is gone is left out."""
    stats = []
    for i, replica in enumerate(replicas):
        try:
            stats.append(ray.get(replica.stats.remote(), timeout=timeout_s))
        except (RayActorError, GetTimeoutError) as exc:
            log.warning("policy replica %d is gone (%s): its figures are left out", i, type(exc).__name__)
    return stats


class _WorkerPool:
    """EnvWorker actors: started with the spec's resources, replaced when one dies."""

    start_timeout_s = 60.0  # a replacement worker that cannot start by then: the cluster has no room

    def __init__(self, spec: RunSpec, n: int, replicas: list[Any] | None = None):
        from robofleet.envs.families import worker_runtime_env
        from robofleet.platform.env_worker import EnvWorker

        # The family's Python environment (robosuite 1.5 / RoboCasa workers: their own venv).
        runtime_env = worker_runtime_env(spec.env.family)
        self._cls = EnvWorker.options(num_cpus=spec.run.cpus_per_worker, max_restarts=0,
                                      **({"runtime_env": runtime_env} if runtime_env else {}))
        self.spec = spec
        self.replicas = replicas
        self.worker_packages: list[dict[str, Any]] = []
        self.workers: list[Any] = []  # None: an empty slot (its worker died and no replacement fit)
        # With GPUs in the cluster, env workers render with EGL on them, spread round-robin.
        self._gpus = int(ray.cluster_resources().get("GPU", 0))
        for i in range(n):
            self.workers.append(self._cls.remote(spec, i, replicas, self._egl_device(i)))
        self._setup(self.workers)

    def _setup(self, workers: list[Any], timeout_s: float | None = None) -> None:
        """Build every worker's simulator and policy; GetTimeoutError when they cannot start in time."""
        try:
            facts = ray.get([w.setup.remote() for w in workers], timeout=timeout_s)
        except RayTaskError as exc:
            raise _unwrap(exc) from None
        for f in facts:
            if f["packages"] not in self.worker_packages:
                self.worker_packages.append(f["packages"])

    def _egl_device(self, index: int) -> int | None:
        return index % self._gpus if self._gpus else None

    def replace(self, index: int) -> bool:
        """A new worker in slot `index` (the old one died, e.g. with its node). False when none starts
        within `start_timeout_s` (the cluster shrank): the slot is then empty until `grow` fills it."""
        try:
            ray.kill(self.workers[index])
        except Exception:  # noqa: BLE001 - it is already dead
            pass
        self.workers[index] = None
        if not self._room():
            log.warning("no room for a new env worker in slot %d (the cluster shrank): continuing with fewer", index)
            return False
        return self._start(index)

    def _start(self, index: int) -> bool:
        worker = self._cls.remote(self.spec, index, self.replicas, self._egl_device(index))
        try:
            self._setup([worker], timeout_s=self.start_timeout_s)
        except (GetTimeoutError, RayActorError) as exc:
            log.warning("no env worker could start in slot %d within %.0f s (%s): continuing with fewer",
                        index, self.start_timeout_s, type(exc).__name__)
            ray.kill(worker)
            return False
        self.workers[index] = worker
        return True

    def _room(self) -> bool:
        """The cluster has a worker's CPUs free now."""
        return ray.available_resources().get("CPU", 0.0) >= self.spec.run.cpus_per_worker

    def empty_slots(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if w is None]

    def grow(self) -> list[int]:
        """Fill empty slots while the cluster has a worker's CPUs free (a node joined); the new slots."""
        started = []
        for index in self.empty_slots():
            if not self._room():
                break
            if self._start(index):
                started.append(index)
        return started

    def close(self, timeout_s: float = 10.0) -> None:
        """Let every worker close its simulator (EGL context, MuJoCo model), then end the actors."""
        alive = [w for w in self.workers if w is not None]
        try:
            ray.get([w.close.remote() for w in alive], timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a dead or stuck worker is killed below anyway
            log.debug("closing env workers: %s", exc)
        for w in alive:
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001
                pass


def run(spec: RunSpec, out_dir: str | Path, workers: int | None = None, address: str | None = None,
        videos: int | VideoPolicy = 0, progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Run (or resume) every episode of `spec` into `out_dir`; returns the summary.

    videos: which episodes get an mp4 (an int K: the first K trials per task; a VideoPolicy, e.g.
        VideoPolicy.parse("failures:2"): platform/rollout_video.py).
    command: the command line that started this run (shown in summary.json and the reports).
    """
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise SpecError("workers", f"{workers!r} env workers: give an integer >= 1")
        spec = replace(spec, run=replace(spec.run, workers=workers))
    if videos and not spec.env.render_cameras:
        raise SpecError("--videos", "needs cameras: set env.render_cameras = true or drop --videos")
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
            replicas = start_replicas(spec) if spec.serving.replicas else []
            worker_packages, episodes_wall_s = _schedule(spec, store, todo, len(episodes) - len(todo),
                                                         len(episodes), videos, progress, replicas, n_workers)
            serving = replica_stats(replicas)
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
            except RayActorError as exc:
                log.warning("worker %d died during %s (attempt %d): %s", job.worker_index, job.episode.episode_id, job.attempt, exc)
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
