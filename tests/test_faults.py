"""Faults: a SIGKILLed env worker mid-episode costs a retry, never a lost or doubled episode."""
from __future__ import annotations

import csv
import os
import signal
import threading
import time

import psutil

from robofleet.platform.runner import run
from robofleet.platform.spec import spec_from_dict
from tests.conftest import small_spec

IDENTITY = ("episode_id", "success", "steps", "queries", "final_state", "error")


def read_rows(path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def env_worker_processes() -> list[psutil.Process]:
    """EnvWorker processes of this test's own Ray cluster (descendants of this process), never others'."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith("ray::EnvWorker"):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_sigkilled_worker_mid_episode_is_replaced_and_the_episode_retried(ray_cluster, tmp_path):
    spec = spec_from_dict(small_spec(env={**small_spec()["env"], "trials": 3, "max_steps": 60},
                                     run={"workers": 1, "max_attempts": 2}))
    undisturbed = run(spec, tmp_path / "calm", progress=False)
    assert undisturbed["overall"]["errors"] == 0

    out = tmp_path / "killed"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run(spec, out, progress=False)))
    thread.start()
    deadline = time.time() + 240
    while len(read_rows(out / "episodes.csv")) < 1 and time.time() < deadline:
        time.sleep(0.2)
    victims = [p for p in env_worker_processes() if p.is_running()]
    assert victims, "the env worker is running the second episode"
    for proc in victims:
        os.kill(proc.pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()

    rows = read_rows(out / "episodes.csv")
    assert len(rows) == 3 and len({r["episode_id"] for r in rows}) == 3, "every episode exactly once"
    assert sorted(r["attempts"] for r in rows) == ["1", "1", "2"]
    calm = sorted(tuple(r[k] for k in IDENTITY) for r in read_rows(tmp_path / "calm" / "episodes.csv"))
    assert sorted(tuple(r[k] for k in IDENTITY) for r in rows) == calm, "the retried episode ran from its start"
    assert result["overall"]["errors"] == 0


def test_a_worker_that_keeps_dying_is_recorded_as_an_error_with_its_cause(ray_cluster, tmp_path):
    spec = spec_from_dict(small_spec(env={**small_spec()["env"], "trials": 1, "max_steps": 600},
                                     run={"workers": 1, "max_attempts": 1}))
    out = tmp_path / "dead"
    thread = threading.Thread(target=lambda: run(spec, out, progress=False))
    thread.start()
    deadline = time.time() + 120
    killed = False
    while not killed and time.time() < deadline:
        for proc in env_worker_processes():
            if proc.cpu_times().user > 8.0:  # past imports (~3 s) and set-up: inside the episode
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
        time.sleep(0.2)
    thread.join(timeout=300)
    rows = read_rows(out / "episodes.csv")
    assert killed and len(rows) == 1
    assert rows[0]["success"] == "0" and rows[0]["error"].startswith("worker died 1 times")
