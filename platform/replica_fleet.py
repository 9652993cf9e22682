"""A run's PolicyReplica actors: started and loaded, watched (one that Ray cannot bring back is given
up), and their serving figures collected at the end."""
from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from robofleet.platform.errors import RobofleetError
from robofleet.platform.spec import RunSpec

log = logging.getLogger(__name__)


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
    """Each replica's serving figures (PolicyReplica.stats); a replica that is gone (or does not answer
    within `timeout_s` seconds) is left out."""
    stats = []
    for i, replica in enumerate(replicas):
        try:
            stats.append(ray.get(replica.stats.remote(), timeout=timeout_s))
        except (RayActorError, GetTimeoutError) as exc:
            log.warning("policy replica %d is gone (%s): its figures are left out", i, type(exc).__name__)
    return stats
