"""Runs whose policy replica's node dies mid-run, on a real multi-node Ray cluster on this machine
(tests/loopback_cluster.py): a 2-CPU head for the env workers and "GPU nodes" that each declare 1 GPU and no
CPU (a stand-in for a GPU machine, chosen by `[serving] gpus_per_replica = 1` as a real one would be).

1. restart: 1 replica, 2 GPU nodes. The replica's node dies; Ray restarts it on the other GPU node.
2. failover: 2 replicas on 2 GPU nodes (a third joined). One replica's node dies and no node has room
   for it: the runner gives it up (platform/replica_fleet._ReplicaWatch) and the clients send its requests to the
   other replica.

Run by tests/test_multinode_replicas.py in its own process. Prints one JSON line with what happened.

    python tests/multinode_replica.py OUT_DIR
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from loopback_cluster import add_node, loopback_cluster

import robofleet.platform.replica_fleet as replica_fleet
import robofleet.platform.runner as runner
from robofleet.platform.results import RunStore  # noqa: F401 - import before Ray starts workers
from robofleet.platform.spec import spec_from_dict

SPEC = {
    "seed": 5, "name": "replica-node",
    "env": {"family": "libero", "suite": "libero_goal", "tasks": [0], "trials": 4, "render_cameras": False,
            "max_steps": 16},
    # random actions drawn from each query's seed: equal rows mean every query was answered as undisturbed
    "policy": {"name": "random", "chunk_size": 4},
    "serving": {"replicas": 1, "gpus_per_replica": 1, "cpus_per_replica": 0, "max_batch": 2, "max_wait_ms": 5.0,
                "deterministic": True},
    "run": {"workers": 2, "max_attempts": 3},
}
KEY = ("episode_id", "success", "steps", "queries", "final_state", "error", "attempts")


def rows(out: Path) -> list[dict]:
    from robofleet.platform.results import read_rows

    return read_rows(out)


def replicas_alive() -> list[dict]:
    """The alive PolicyReplica actors: {"node": address, "restarts": n}."""
    import ray._private.state

    return [{"node": a["Address"]["IPAddress"], "restarts": a["NumRestarts"]}
            for a in ray._private.state.actors().values()
            if a["ActorClassName"] == "PolicyReplica" and a["State"] == "ALIVE"]


def disturbed(cluster, gpu_nodes: list, spec, out: Path) -> dict:
    """Run `spec` into `out` in a thread (Ray removes nodes only from the main thread); once 2 episodes are
    recorded, remove the node of one replica; watch the replicas until the run ends."""
    result: dict = {}

    def go() -> None:
        try:
            result["summary"] = runner.run(spec, out, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["failure"] = repr(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while len(rows(out)) < 2 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    before = replicas_alive()
    killed = before[0]["node"]
    events = {"killed": killed, "after_rows": len(rows(out)), "replicas_before": before}
    node = next(n for n in gpu_nodes if n.node_ip_address == killed)
    cluster.remove_node(node, allow_graceful=False)
    gpu_nodes.remove(node)
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        restarted = [r["node"] for r in replicas_alive() if r["restarts"] > 0]
        events["restarted_on"] = events.get("restarted_on") or (restarted[0] if restarted else None)
        time.sleep(0.2)
    thread.join(timeout=1)
    if "failure" in result or thread.is_alive():
        raise RuntimeError(f"the disturbed run failed: {result.get('failure', 'still running')}")
    events["replicas_after"] = result["summary"]["figures"]["replicas"]
    events["rows"] = [{k: r[k] for k in KEY} for r in rows(out)]
    return events


def main(root: Path) -> None:
    report: dict = {}
    with loopback_cluster(head_cpus=2) as cluster:
        gpu_nodes = [add_node(cluster, ip, num_cpus=0, num_gpus=1) for ip in ("127.0.0.3", "127.0.0.4")]
        spec = spec_from_dict(SPEC)
        runner.run(spec, root / "undisturbed", progress=False)
        report["undisturbed"] = [{k: r[k] for k in KEY} for r in rows(root / "undisturbed")]
        report["restart"] = disturbed(cluster, gpu_nodes, spec, root / "restart")
        gpu_nodes.append(add_node(cluster, "127.0.0.5", num_cpus=0, num_gpus=1))
        replica_fleet._ReplicaWatch.give_up_s = 5.0  # no node has room for it: no restart can come
        two = replace(spec, serving=replace(spec.serving, replicas=2))  # deterministic: the same episodes' rows
        report["failover"] = disturbed(cluster, gpu_nodes, two, root / "failover")
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
