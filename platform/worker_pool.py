"""A run's EnvWorker actors: started with the spec's resources and set up, replaced when one dies,
grown when a node joins, closed at the end."""
from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from robofleet.platform.errors import RobofleetError
from robofleet.platform.spec import RunSpec

log = logging.getLogger(__name__)


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
