"""A run over a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: one raylet per
node, each with its own CPUs, on loopback addresses: tests/loopback_cluster.py), undisturbed and with a
node killed mid-run and another joining.

Run by tests/test_multinode.py in its own process (the Ray cluster of the other tests must not be
joined). Prints one JSON line with what happened.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import ray
from loopback_cluster import add_node, loopback_cluster

from robofleet.platform.results import RunStore  # noqa: F401 - import before Ray starts workers
from robofleet.platform.runner import run
from robofleet.platform.spec import spec_from_dict

SPEC = {
    "seed": 3, "name": "multinode",
    "env": {"family": "libero", "suite": "libero_object", "tasks": [0, 1], "trials": 6, "render_cameras": False,
            "max_steps": 60},
    "policy": {"name": "zero", "chunk_size": 8},
    "run": {"workers": 3, "max_attempts": 3},
}


def rows(out: Path) -> list[dict]:
    from robofleet.platform.results import read_rows

    return read_rows(out)


def main(root: Path) -> None:
    spec = spec_from_dict(SPEC)
    report: dict = {}
    with loopback_cluster(head_cpus=1) as cluster:  # node deaths detected within ~2 s
        doomed = add_node(cluster, "127.0.0.3", num_cpus=2)
        report["nodes_at_start"] = len([n for n in ray.nodes() if n["Alive"]])
        run(spec, root / "undisturbed", progress=False)
        # disturbed: the 2-CPU node dies once 2 episodes are recorded; a new 2-CPU node joins later.
        # The run goes on in a thread: Ray starts nodes only from the main thread (signal handlers).
        events: dict = {}
        failure: list = []

        def sweep() -> None:
            try:
                run(spec, root / "disturbed", progress=False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failure.append(repr(exc))

        thread = threading.Thread(target=sweep, daemon=True)
        thread.start()
        while len(rows(root / "disturbed")) < 2:
            time.sleep(0.2)
        events["killed_after_rows"] = len(rows(root / "disturbed"))
        cluster.remove_node(doomed, allow_graceful=False)
        time.sleep(4)
        events["joined_after_rows"] = len(rows(root / "disturbed"))
        add_node(cluster, "127.0.0.4", num_cpus=2)
        events["cpus_after_join"] = ray.cluster_resources().get("CPU")
        thread.join(timeout=900)
        if failure or thread.is_alive():
            raise RuntimeError(f"the disturbed run failed: {failure or 'still running'}")
        report["events"] = events
    key = ("episode_id", "success", "steps", "final_state", "error")
    report["undisturbed"] = [{k: r[k] for k in (*key, "attempts", "worker")} for r in rows(root / "undisturbed")]
    report["disturbed"] = [{k: r[k] for k in (*key, "attempts", "worker")} for r in rows(root / "disturbed")]
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
