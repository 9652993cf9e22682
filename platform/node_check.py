"""What a node needs to run a spec's env workers, checked on every other node before any worker starts.

Env workers run where Ray places them, and each node has its own filesystem: the LIBERO asset tree
(`robofleet setup-libero`), the robosuite-1.5 venv (`envs/families.py`, the same path on every node)
must exist on each node that may run them. Robofleet checks, it does not ship them: the asset tree is
~1 GB and the venv ~1.7 GB, too large for a Ray runtime_env upload per job. A missing venv is worse
than an error: Ray retries starting the worker process forever and the run hangs. So before the first
worker starts, one zero-CPU task per node (pinned there) looks for the pieces in the job's Python and
reports what is missing; the run then stops with every such node named, the missing piece and the fix.

    check_nodes(spec)   # after connecting, before replicas and env workers start

The driver's own node is not probed: the driver checked its filesystem already (envs/families.py), and
an embedded cluster has no other node, so single-machine runs pay nothing.
"""
from __future__ import annotations

import os
from typing import Any

import ray
from ray.exceptions import TaskUnschedulableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from robofleet.platform.errors import RobofleetError

# How long a node may take to run its check: it starts one worker process there, in the job's runtime
# env (a job's working dir is downloaded to the node first).
PROBE_TIMEOUT_S = 120.0


class NodeSetupError(RobofleetError):
    """A node of the cluster lacks something the spec's env workers need there."""


@ray.remote(num_cpus=0)
def _missing_on_this_node(family: str, worker_python: str | None) -> list[str]:
    """What this node lacks for `family`'s env workers: one line per piece, with the fix."""
    missing = []
    if worker_python is not None and not os.access(worker_python, os.X_OK):
        missing.append(f"the {family} workers' Python {worker_python} does not exist here: build the venv on this "
                       "node at the same path (`bash setup.sh` in the same checkout), or set ROBOFLEET_RS15_VENV on "
                       "the driver to a path that holds it on every node")
    if family == "libero":
        from robofleet.envs.libero_setup import LiberoSetupError, check_assets

        try:
            check_assets()
        except LiberoSetupError as exc:
            missing.append(f"{exc} (on this node)")
    return missing


def worker_nodes(cpus_per_worker: float) -> list[dict[str, Any]]:
    """The alive nodes other than the driver's that have room for an env worker (its CPUs)."""
    here = ray.get_runtime_context().get_node_id()
    return [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here
            and n.get("Resources", {}).get("CPU", 0.0) >= cpus_per_worker]


def check_nodes(spec: Any, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """NodeSetupError naming each node that lacks a piece the spec's env workers need, and the fix.

    spec: the RunSpec (env.family and run.cpus_per_worker are read).
    """
    from robofleet.envs.families import worker_runtime_env

    runtime_env = worker_runtime_env(spec.env.family) or {}
    nodes = worker_nodes(spec.run.cpus_per_worker)
    if not nodes:
        return
    probes = [_missing_on_this_node.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        spec.env.family, runtime_env.get("py_executable")) for n in nodes]
    ready, pending = ray.wait(probes, num_returns=len(probes), timeout=timeout_s)
    problems = []
    for node, probe in zip(nodes, probes):
        where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        if probe in pending:
            ray.cancel(probe, force=True)
            problems.append(f"{where} did not answer within {timeout_s:.0f} s: can it start this job's Python "
                            "(robofleet installed at the driver's path)? See its raylet.out")
            continue
        try:
            missing = ray.get(probe)
        except TaskUnschedulableError:  # the node left since ray.nodes(): it runs no worker either
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. robofleet does not import there: say so, with the cause
            missing = [f"the check itself failed there: {str(exc).strip().splitlines()[-1]}"]
        problems += [f"{where}: {line}" for line in missing]
    if problems:
        raise NodeSetupError(f"{len(problems)} problem(s) before any {spec.env.family} env worker starts:\n  "
                             + "\n  ".join(problems))
