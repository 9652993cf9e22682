"""Beyond one Ray node: env workers on several raylets, a node killed mid-run, a node joining (real Ray
nodes on this machine through ray.cluster_utils.Cluster; real LIBERO physics)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    done = subprocess.run([sys.executable, str(REPO / "tests" / "multinode_sweep.py"), str(root)], cwd=REPO,
                          env={**os.environ, "MUJOCO_GL": "egl", "RAY_DEDUP_LOGS": "0"},
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_env_workers_spread_over_the_nodes(multinode):
    assert multinode["nodes_at_start"] == 2
    # 3 workers of 1 CPU on a 1-CPU head and a 2-CPU node: both nodes ran episodes
    assert {r["worker"] for r in multinode["undisturbed"]} == {"0", "1", "2"}


@pytest.mark.slow
def test_a_dead_nodes_episodes_are_rerun_elsewhere_each_recorded_once_with_the_same_results(multinode):
    undisturbed = {r["episode_id"]: r for r in multinode["undisturbed"]}
    disturbed = multinode["disturbed"]
    assert len(disturbed) == len(undisturbed) == 12
    assert len({r["episode_id"] for r in disturbed}) == 12  # each exactly once
    for row in disturbed:
        same = undisturbed[row["episode_id"]]
        assert row["error"] == "" and (row["success"], row["steps"], row["final_state"]) == (
            same["success"], same["steps"], same["final_state"])
    assert any(int(r["attempts"]) > 1 for r in disturbed), "the node died while episodes ran on it"


@pytest.mark.slow
def test_a_node_that_joins_mid_run_gets_work(multinode):
    events = multinode["events"]
    after_join = multinode["disturbed"][events["joined_after_rows"]:]
    # between the kill and the join only the 1-CPU head's worker runs; the new node's CPUs refill the
    # dead node's slots, so episodes recorded after the join come from more than one worker
    assert len({r["worker"] for r in after_join}) >= 2, (events, after_join)
