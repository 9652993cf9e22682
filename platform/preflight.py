"""Checks made before a run's actors start: the policy's files and the output directory before Ray
starts, and whether the spec's replicas and env workers fit the cluster once it is connected."""
from __future__ import annotations

import logging
from typing import Any

import ray

from robofleet.platform.errors import SpecError
from robofleet.platform.spec import RunSpec

log = logging.getLogger(__name__)


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
        if not s.replicas:  # the worker alone is too big: say so, not what replicas would leave
            raise SpecError("run.cpus_per_worker", f"an env worker needs {spec.run.cpus_per_worker:g} CPUs; the "
                                                   f"cluster has {cpus:g} (lower run.cpus_per_worker or add nodes)")
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


def check_videos(spec: RunSpec, videos: Any) -> None:
    """--videos needs the spec's cameras rendered."""
    if videos and not spec.env.render_cameras:
        raise SpecError("--videos", "needs cameras: set env.render_cameras = true or drop --videos")


def validate_before_ray(spec: RunSpec) -> None:
    """What can only be checked where the driver runs, before Ray starts: the policy's files
    (checkpoints, statistics, embeddings: present, readable, matching; policies/registry.py)."""
    from robofleet.platform.policy_context import validate_spec_policy

    validate_spec_policy(spec, check_files=True)
