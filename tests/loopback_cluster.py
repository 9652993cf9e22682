"""A multi-node Ray cluster on this machine for the multi-node scripts (ray.cluster_utils.Cluster: one raylet
per node, each with its own resources), on loopback addresses only and in a temp dir of its own.

Every node gets its own 127.0.0.x address: Ray would otherwise give each node the host's interface address,
so the tests' traffic (and a killed node's) would leave loopback. The temp dir (RAY_TMPDIR) keeps the
cluster's address file away from /tmp/ray, where `address="auto"` of other people's Ray would find it.

    with loopback_cluster(head_cpus=1) as cluster:
        node = add_node(cluster, "127.0.0.3", num_cpus=2)
        ...
        cluster.remove_node(node, allow_graceful=False)   # the node dies with every process on it
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

HEAD_IP = "127.0.0.2"
# node deaths detected within ~2 s (Ray's default health checks take ~30 s)
FAST_HEALTH = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 500,
               "health_check_failure_threshold": 3}


@contextlib.contextmanager
def loopback_cluster(head_cpus: int, **head_args) -> Iterator["ray.cluster_utils.Cluster"]:  # noqa: F821
    """A Cluster whose head (`head_cpus` CPUs) is on 127.0.0.2, this process connected to it as the driver;
    shut down, with every node, on exit."""
    temp = Path(tempfile.mkdtemp(prefix="rfc-", dir="/tmp"))  # short: Unix socket paths < 107 bytes
    (temp / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(temp)
    import ray
    from ray.cluster_utils import Cluster

    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": head_cpus, "node_ip_address": HEAD_IP, "temp_dir": str(temp / "ray"),
            "include_dashboard": False, "_system_config": FAST_HEALTH, **head_args})
        ray.init(address=cluster.address, _node_ip_address=HEAD_IP)
        yield cluster
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def add_node(cluster, node_ip: str, **node_args):
    """A node on loopback address `node_ip` (127.0.0.3, ...) with `node_args` (num_cpus, num_gpus, resources)."""
    node = cluster.add_node(node_ip_address=node_ip, **node_args)
    cluster.wait_for_nodes()
    return node
