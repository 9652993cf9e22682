"""A policy replica's node dies mid-run (real Ray nodes on this machine on loopback addresses; replicas on nodes
that declare a GPU; real LIBERO physics). With room on another GPU node Ray restarts the replica there; with
none, the runner gives the replica up and the clients fail over to the other one. Either way every episode
is recorded once and the rows equal an undisturbed run's (deterministic serving)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAME = ("success", "steps", "queries", "final_state")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replica_nodes_died(tmp_path_factory):
    root = tmp_path_factory.mktemp("replica-node")
    done = subprocess.run([sys.executable, str(REPO / "tests" / "multinode_replica.py"), str(root)], cwd=REPO,
                          env={**os.environ, "MUJOCO_GL": "egl", "RAY_DEDUP_LOGS": "0"},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_rows_as_undisturbed(report: dict, case: str) -> None:
    undisturbed = {r["episode_id"]: r for r in report["undisturbed"]}
    rows = report[case]["rows"]
    assert len(rows) == len(undisturbed) == 4
    assert len({r["episode_id"] for r in rows}) == 4  # each exactly once
    for row in rows:
        assert row["error"] == "", row["error"]
        assert {k: row[k] for k in SAME} == {k: undisturbed[row["episode_id"]][k] for k in SAME}
    # the env workers were on the head, which lived: no episode needed a second attempt
    assert all(r["attempts"] == "1" for r in rows)


def test_a_replica_whose_node_died_is_restarted_on_another_gpu_node(replica_nodes_died):
    case = replica_nodes_died["restart"]
    assert case["killed"] in ("127.0.0.3", "127.0.0.4") and case["after_rows"] >= 2
    assert case["restarted_on"] in ("127.0.0.3", "127.0.0.4") and case["restarted_on"] != case["killed"]
    [replica] = case["replicas_after"]
    assert replica["restarted"] is True and replica["requests"] > 0, "the restarted replica answered the rest"


def test_the_run_survives_a_replica_restart_on_another_node_with_the_undisturbed_rows(replica_nodes_died):
    assert_rows_as_undisturbed(replica_nodes_died, "restart")


def test_a_replica_that_cannot_restart_is_given_up_and_its_requests_go_to_the_other(replica_nodes_died):
    case = replica_nodes_died["failover"]
    assert sorted(r["node"] for r in case["replicas_before"]) == ["127.0.0.4", "127.0.0.5"] or \
        sorted(r["node"] for r in case["replicas_before"]) == ["127.0.0.3", "127.0.0.5"]
    assert case["restarted_on"] is None, "no node had room for it"
    [survivor] = case["replicas_after"]  # the given-up replica's figures are gone with it
    assert survivor["restarted"] is False and survivor["requests"] > 0


def test_the_run_survives_a_replica_given_up_with_the_undisturbed_rows(replica_nodes_died):
    assert_rows_as_undisturbed(replica_nodes_died, "failover")
